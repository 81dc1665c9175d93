//! Start-up does not grow with the audit stream's history: keymint reads
//! the segments its head's watermark points to (here the head alone), and a
//! transition lost to a crash between its status write and its append is
//! still appended exactly once.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ConfigMap;
use keymint::apikey::{ApiKey, Phase};
use keymint::audit::store::{self, Marks, newest_of};
use keymint::audit::stream::{DATA_ENTRIES, LABEL_AUDIT};
use keymint::audit::{self, Action, Draft, Entry, Head, append_lines, chain_all};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, wait_for_phase};

/// Sealed segments of history written before keymint starts.
const HISTORY: u64 = 40;
const ENTRIES_PER_SEGMENT: u64 = 50;

/// A day-old Minted entry for history key `i`, `i` seconds into the day.
fn old_draft(i: u64, day_ago: Timestamp) -> Draft {
    Draft {
        time: day_ago + SignedDuration::from_secs(i as i64),
        action: Action::Minted,
        namespace: "history".into(),
        name: format!("old-{i}"),
        uid: format!("history-uid-{i}"),
        transition: 1,
        project: "payments".into(),
        owner: "alice@example.com".into(),
        key_id: Some(format!("km_history{i:08}")),
        reason: "Minted".into(),
        message: format!("key km_history{i:08} minted into Secret old-{i}"),
        instance: "keymint-old".into(),
        pruned_through: None,
    }
}

/// Writes `HISTORY` sealed segments of day-old entries, marked as keymint
/// marks them (the last write came 20 s after the newest entry, with
/// nothing pending).
async fn write_history(config_maps: &Api<ConfigMap>) {
    let day_ago = Timestamp::now() - SignedDuration::from_hours(24);
    let mut head = Head::genesis();
    for n in 0..HISTORY {
        let drafts: Vec<Draft> = (0..ENTRIES_PER_SEGMENT)
            .map(|i| old_draft(n * ENTRIES_PER_SEGMENT + i, day_ago))
            .collect();
        let (entries, next) = chain_all(&head, &drafts);
        let newest = newest_of(&entries).expect("times");
        let marks = Marks {
            newest: Some(newest),
            watermark: Some(newest + SignedDuration::from_secs(5)),
        };
        let content = append_lines("", &entries);
        let name = store::segment_name(n + 1);
        let cm = store::configmap(&name, None, &head, &content, true, marks);
        config_maps
            .create(&PostParams::default(), &cm)
            .await
            .expect("create a history segment");
        head = next;
    }
}

/// The stream's segments, oldest first, as (name, content), and the
/// ConfigMaps.
async fn segments(config_maps: &Api<ConfigMap>) -> (Vec<(String, String)>, Vec<ConfigMap>) {
    let params = ListParams::default().labels(&format!("{LABEL_AUDIT}=segment"));
    let mut list = config_maps
        .list(&params)
        .await
        .expect("list segments")
        .items;
    list.sort_by_key(|cm| cm.name_any());
    let pairs = list
        .iter()
        .map(|cm| (cm.name_any(), store::content_of(cm).to_string()))
        .collect();
    (pairs, list)
}

/// The verified chain's entries.
fn verified(segments: &[(String, String)]) -> Vec<Entry> {
    let summary = audit::verify(segments).expect("the stream verifies");
    assert_eq!(
        summary.entries,
        (HISTORY * ENTRIES_PER_SEGMENT) as usize + 1
    );
    segments
        .iter()
        .flat_map(|(_, c)| audit::parse_segment(c).expect("parses"))
        .collect()
}

/// Waits until the stream holds an entry of ApiKey `uid`.
async fn wait_for_entry_of(config_maps: &Api<ConfigMap>, uid: &str) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (pairs, _) = segments(config_maps).await;
        let found = pairs.iter().any(|(_, content)| {
            audit::parse_segment(content).is_ok_and(|es| es.iter().any(|e| e.uid == uid))
        });
        if found {
            return pairs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no entry of {uid} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many segments the operator logged reading at start-up.
fn segments_read(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("audit stream opened"))?;
    let (_, rest) = line.split_once("segments_read=")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn wait_for_open(operator: &Operator) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(n) = segments_read(&operator.log()) {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator opened the audit stream within 30 s:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_long_stream_costs_start_up_only_its_head_and_a_lost_append_is_caught_up_once() {
    let ns = TestNamespace::new("audit-history").await;
    let config_maps: Api<ConfigMap> = ns.api();
    let api: Api<ApiKey> = ns.api();
    write_history(&config_maps).await;

    let mut operator = Operator::start(&ns.name, &["--expiry-warning", "0s"]);
    assert_eq!(
        wait_for_open(&operator).await,
        1,
        "a watermarked head: only it is read, not the {HISTORY} segments of history"
    );
    let key = api_key("fresh", "payments", "bob@example.com");
    api.create(&PostParams::default(), &key)
        .await
        .expect("create");
    let key = wait_for_phase(&api, "fresh", Phase::Active, Duration::from_secs(30)).await;
    let uid = key.uid().expect("uid");
    let pairs = wait_for_entry_of(&config_maps, &uid).await;
    let before = verified(&pairs);
    let minted = before.last().expect("an entry").clone();
    assert_eq!(
        (minted.uid.as_str(), minted.action),
        (uid.as_str(), Action::Minted)
    );
    operator.kill();

    // The crash: the append never happened, the status write did. The
    // head's watermark is left as keymint wrote it, while the transition
    // was pending: no later than it.
    let (_, maps) = segments(&config_maps).await;
    let mut head = maps.last().expect("a head").clone();
    assert_eq!(head.name_any(), store::segment_name(HISTORY + 1));
    let watermark: Timestamp = head.annotations()["keymint.dev/watermark"]
        .parse()
        .expect("a watermark");
    let made_at = minted.timestamp().expect("time");
    assert!(
        watermark <= made_at,
        "the watermark {watermark} vouches for nothing after the pending transition ({made_at})"
    );
    let status = key.status.clone().expect("status");
    assert!(
        status
            .last_transitions
            .iter()
            .any(|r| r.number == minted.transition && r.action.as_str() == minted.action.as_str()),
        "the status holds the transition: {:?}",
        status.last_transitions
    );
    let content = store::content_of(&head).to_string();
    let kept: String = content
        .lines()
        .filter(|l| !l.contains(&uid))
        .map(|l| format!("{l}\n"))
        .collect();
    head.data
        .as_mut()
        .expect("data")
        .insert(DATA_ENTRIES.to_string(), kept);
    config_maps
        .replace(&head.name_any(), &PostParams::default(), &head)
        .await
        .expect("rewrite the head segment");

    // Restart: the head alone is read, and the lost entry comes back once.
    let operator = Operator::start(&ns.name, &["--expiry-warning", "0s"]);
    assert_eq!(wait_for_open(&operator).await, 1, "only the head is read");
    let pairs = wait_for_entry_of(&config_maps, &uid).await;
    let after = verified(&pairs);
    let own: Vec<&Entry> = after.iter().filter(|e| e.uid == uid).collect();
    assert_eq!(own.len(), 1, "appended exactly once: {own:?}");
    assert_eq!(
        (own[0].transition, own[0].action, own[0].time.as_str()),
        (minted.transition, minted.action, minted.time.as_str()),
        "read as it would have on time"
    );
    // The catch-up is done: another few verifications add nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (settled, _) = segments(&config_maps).await;
    assert_eq!(settled, pairs, "the stream is unchanged");
    drop(operator);
    ns.delete().await;
}
