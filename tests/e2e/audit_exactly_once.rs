//! The audit stream records every lifecycle transition exactly once: none
//! lost when the operator is SIGKILLed at any moment, none duplicated by
//! retries, restarts or a second operator. A deletion is in the stream
//! before the ApiKey goes, and no entry ever holds key material.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keymint::apikey::{ApiKey, Phase};
use keymint::audit::stream::{DATA_ENTRIES, LABEL_AUDIT};
use keymint::audit::{self, Action, Anchor, Entry};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::support::operator::Operator;
use crate::support::watch_from_here;
use crate::support::{TestNamespace, api_key, wait_for_phase};

/// No expiring-soon entries: a key with an expiry stays plainly Active
/// until it expires.
const NO_WARNING: [&str; 2] = ["--expiry-warning", "0s"];

// ---------------------------------------------------------------------------
// Reading the stream

/// The stream's segments in `namespace`, oldest first, as (name, content):
/// one list, so one consistent snapshot.
async fn read_segments(client: &Client, namespace: &str) -> Vec<(String, String)> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let list = config_maps
        .list(&ListParams::default().labels(&format!("{LABEL_AUDIT}=segment")))
        .await
        .expect("list the audit segments");
    let mut segments: Vec<(String, String)> = list
        .items
        .into_iter()
        .map(|cm| {
            let content = cm
                .data
                .as_ref()
                .and_then(|d| d.get(DATA_ENTRIES))
                .cloned()
                .unwrap_or_default();
            (cm.name_any(), content)
        })
        .collect();
    segments.sort();
    segments
}

/// All entries, in stream order.
fn parse(segments: &[(String, String)]) -> Vec<Entry> {
    segments
        .iter()
        .flat_map(|(name, content)| {
            audit::parse_segment(content)
                .unwrap_or_else(|e| panic!("audit segment {name} does not parse: {e}"))
        })
        .collect()
}

/// The entries of a stream whose chain verifies: one chain from genesis,
/// seq 1..n without gaps.
fn verified(segments: &[(String, String)]) -> Vec<Entry> {
    let summary = audit::verify(segments)
        .unwrap_or_else(|finding| panic!("the audit stream does not verify: {finding}"));
    let entries = parse(segments);
    if !entries.is_empty() {
        assert_eq!(
            summary.anchor,
            Anchor::Genesis,
            "the stream starts at entry 1"
        );
    }
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=entries.len() as u64).collect();
    assert_eq!(seqs, expected, "one chain: seq 1..n across the segments");
    assert_eq!(summary.entries, entries.len());
    entries
}

fn show(entry: &Entry) -> String {
    format!(
        "seq {} #{} {} {} (by {})",
        entry.seq, entry.transition, entry.action, entry.name, entry.instance
    )
}

/// Entries that share a dedup key (uid, transition) or a (uid, action).
fn duplicates(entries: &[Entry]) -> Vec<String> {
    let mut by_key: BTreeMap<(String, u64), Vec<&Entry>> = BTreeMap::new();
    let mut by_action: BTreeMap<(String, Action), Vec<&Entry>> = BTreeMap::new();
    for entry in entries {
        by_key.entry(entry.dedup_key()).or_default().push(entry);
        by_action
            .entry((entry.uid.clone(), entry.action))
            .or_default()
            .push(entry);
    }
    let mut problems = Vec::new();
    for ((uid, transition), same) in by_key.iter().filter(|(_, v)| v.len() > 1) {
        let shown: Vec<String> = same.iter().map(|e| show(e)).collect();
        problems.push(format!(
            "dedup key ({uid}, {transition}) appears {} times: {}",
            same.len(),
            shown.join("; ")
        ));
    }
    for ((uid, action), same) in by_action.iter().filter(|(_, v)| v.len() > 1) {
        let shown: Vec<String> = same.iter().map(|e| show(e)).collect();
        problems.push(format!(
            "{action} of {uid} appears {} times: {}",
            same.len(),
            shown.join("; ")
        ));
    }
    problems
}

/// What the stream must hold for one ApiKey.
struct Expected {
    name: String,
    project: String,
    owner: String,
    /// Exactly these, numbered 1, 2, ... in this order.
    actions: Vec<Action>,
}

/// How the stream differs from the transitions that happened: each ApiKey
/// UID has exactly its expected actions, numbered 1..n in stream order,
/// naming the right ApiKey; nothing else is in the stream.
fn differences(entries: &[Entry], expected: &BTreeMap<String, Expected>) -> Vec<String> {
    let mut problems = duplicates(entries);
    let mut by_uid: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in entries {
        by_uid.entry(entry.uid.as_str()).or_default().push(entry);
    }
    for (uid, want) in expected {
        let got = by_uid.remove(uid.as_str()).unwrap_or_default();
        let actions: Vec<Action> = got.iter().map(|e| e.action).collect();
        let numbers: Vec<u64> = got.iter().map(|e| e.transition).collect();
        let wanted_numbers: Vec<u64> = (1..=want.actions.len() as u64).collect();
        if actions != want.actions || numbers != wanted_numbers {
            let shown: Vec<String> = got.iter().map(|e| show(e)).collect();
            problems.push(format!(
                "{} ({uid}): expected {:?} numbered {wanted_numbers:?}, the stream has [{}]",
                want.name,
                want.actions,
                shown.join("; ")
            ));
        }
        for entry in got {
            if (&entry.name, &entry.project, &entry.owner)
                != (&want.name, &want.project, &want.owner)
            {
                problems.push(format!(
                    "{}: names {}/{}/{} instead of {}/{}/{}",
                    show(entry),
                    entry.name,
                    entry.project,
                    entry.owner,
                    want.name,
                    want.project,
                    want.owner
                ));
            }
        }
    }
    for (uid, got) in by_uid {
        let shown: Vec<String> = got.iter().map(|e| show(e)).collect();
        problems.push(format!(
            "entries for an unknown uid {uid:?}: {}",
            shown.join("; ")
        ));
    }
    problems
}

fn assert_no_differences(entries: &[Entry], expected: &BTreeMap<String, Expected>) {
    let problems = differences(entries, expected);
    assert!(
        problems.is_empty(),
        "the audit stream ({} entries) does not match the transitions that happened:\n  {}",
        entries.len(),
        problems.join("\n  ")
    );
}

/// Waits (up to `timeout`) until every expected action is in the stream;
/// returns the last snapshot either way, for the exact comparison.
async fn wait_for_entries(
    ns: &TestNamespace,
    expected: &BTreeMap<String, Expected>,
    timeout: Duration,
) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let segments = read_segments(&ns.client, &ns.name).await;
        let present: BTreeSet<(String, Action)> = parse(&segments)
            .into_iter()
            .map(|e| (e.uid, e.action))
            .collect();
        let complete = expected.iter().all(|(uid, want)| {
            want.actions
                .iter()
                .all(|a| present.contains(&(uid.clone(), *a)))
        });
        if complete || tokio::time::Instant::now() >= deadline {
            return segments;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// What happened, observed from outside

/// What keymint minted, from a watch on Secrets that runs for the whole
/// test: which ApiKey UIDs really had a key (a Secret of theirs existed)
/// with which key id, and the keys themselves, to look for in the stream.
/// Not `Debug`: the keys must not end up in test output.
#[derive(Default)]
struct Minted {
    /// ApiKey UID -> key id of its Secret.
    key_ids: BTreeMap<String, String>,
    keys: BTreeSet<String>,
}

/// Starts recording; returns once the watch has listed, so no Secret
/// created afterwards is missed.
async fn record_minted(secrets: Api<Secret>) -> Arc<Mutex<Minted>> {
    let minted: Arc<Mutex<Minted>> = Arc::default();
    let sink = minted.clone();
    watch_from_here(secrets, watcher::Config::default(), move |event| {
        let (watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = event else {
            return;
        };
        if s.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            != Some("keymint")
        {
            return;
        }
        let mut minted = sink.lock().expect("lock");
        let key_id = s
            .annotations()
            .get("keymint.dev/key-id")
            .cloned()
            .unwrap_or_default();
        for owner in s.owner_references() {
            if owner.controller == Some(true) {
                minted.key_ids.insert(owner.uid.clone(), key_id.clone());
            }
        }
        if let Some(key) = s.data.as_ref().and_then(|d| d.get("api-key")) {
            minted
                .keys
                .insert(String::from_utf8_lossy(&key.0).into_owned());
        }
    })
    .await;
    minted
}

/// No segment holds a key, the body of one (without its `kmk_` prefix), or
/// anything with the key prefix at all.
fn assert_no_key_material(segments: &[(String, String)], minted: &Minted) {
    assert!(!minted.keys.is_empty(), "keys were minted and recorded");
    for (name, content) in segments {
        assert!(
            !content.contains(keymint::apikey::key::PREFIX),
            "audit segment {name} holds text with the key prefix"
        );
        for key in &minted.keys {
            let body = key
                .strip_prefix(keymint::apikey::key::PREFIX)
                .unwrap_or(key);
            // Not printed: the message only says that it happened.
            assert!(
                !content.contains(body),
                "audit segment {name} holds the key material of a minted key"
            );
        }
    }
}

/// Minted entries carry the key id of the Secret keymint created.
fn assert_key_ids(entries: &[Entry], minted: &Minted) {
    for entry in entries {
        if let Some(key_id) = &entry.key_id {
            assert_eq!(
                minted.key_ids.get(&entry.uid),
                Some(key_id),
                "{}: key id of its Secret",
                show(entry)
            );
        } else {
            assert_ne!(
                entry.action,
                Action::Minted,
                "{}: a minted entry names its key",
                show(entry)
            );
        }
    }
}

fn phase(key: &ApiKey) -> Option<Phase> {
    key.status.as_ref().and_then(|s| s.phase)
}

/// Lines of `log` that say the reconcile of `name` finished.
fn reconciled(log: &str, namespace: &str, name: &str) -> bool {
    let needle = format!("/{name}.{namespace}");
    log.lines()
        .any(|l| l.contains("reconciled") && l.contains(&needle))
}

// ---------------------------------------------------------------------------

/// What a churn key is for; its name starts with it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Created and left alone: minted.
    Kept,
    /// Expires a few seconds after creation: minted, expired.
    Expiring,
    /// Deleted once Active: minted, deleted.
    Deleted,
}

impl Kind {
    fn of_index(i: usize) -> Kind {
        match i % 3 {
            0 => Kind::Kept,
            1 => Kind::Expiring,
            _ => Kind::Deleted,
        }
    }

    fn of_name(name: &str) -> Kind {
        if name.starts_with("expiring-") {
            Kind::Expiring
        } else if name.starts_with("deleted-") {
            Kind::Deleted
        } else {
            Kind::Kept
        }
    }

    fn name(self, i: usize) -> String {
        let prefix = match self {
            Kind::Kept => "kept",
            Kind::Expiring => "expiring",
            Kind::Deleted => "deleted",
        };
        format!("{prefix}-{i:03}")
    }
}

#[tokio::test]
async fn sigkill_during_churn_loses_and_duplicates_no_audit_entry() {
    const KEYS: usize = 200;
    const OWNERS: usize = 10; // 20 keys each: the quota (25) never rejects
    // Expiring keys expire 5 to 8 s after creation, while the kills go on.
    const EXPIRY_LEAD_MS: i64 = 5000;
    let ns = TestNamespace::new("audit-churn").await;
    let api: Api<ApiKey> = ns.api();
    let minted = record_minted(ns.api()).await;
    // Small segments, so that rollovers are among the moments of a kill.
    let flags = [
        NO_WARNING[0],
        NO_WARNING[1],
        "--audit-segment-bytes",
        "8192",
    ];

    // ApiKey name -> (UID, owner), recorded at creation: deleted ones vanish.
    let created: Arc<Mutex<BTreeMap<String, (String, String)>>> = Arc::default();
    let last_expiry = Arc::new(Mutex::new(Timestamp::now()));
    let creator = {
        let api = api.clone();
        let created = created.clone();
        let last_expiry = last_expiry.clone();
        tokio::spawn(async move {
            for i in 0..KEYS {
                let kind = Kind::of_index(i);
                let owner = format!("user-{}@example.com", i % OWNERS);
                let mut key = api_key(&kind.name(i), "churn", &owner);
                if kind == Kind::Expiring {
                    let spread = (i % 7) as i64 * 500;
                    let lead = SignedDuration::from_millis(EXPIRY_LEAD_MS + spread);
                    let at = Timestamp::now() + lead;
                    key.spec.expires_at = Some(Time(at));
                    *last_expiry.lock().expect("lock") = at;
                }
                let key = api
                    .create(&PostParams::default(), &key)
                    .await
                    .expect("create");
                created
                    .lock()
                    .expect("lock")
                    .insert(key.name_any(), (key.uid().expect("uid"), owner));
            }
        })
    };
    // Deletes each "deleted-" key once it is Active.
    let deleter = {
        let api = api.clone();
        tokio::spawn(async move {
            let wanted = (0..KEYS)
                .filter(|i| Kind::of_index(*i) == Kind::Deleted)
                .count();
            let mut deleted = BTreeSet::new();
            while deleted.len() < wanted {
                for key in api.list(&ListParams::default()).await.expect("list").items {
                    let name = key.name_any();
                    if Kind::of_name(&name) == Kind::Deleted
                        && phase(&key) == Some(Phase::Active)
                        && !deleted.contains(&name)
                    {
                        api.delete(&name, &DeleteParams::default())
                            .await
                            .expect("delete");
                        deleted.insert(name);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let mut kills = 0;
    for _ in 0..60 {
        let mut operator = Operator::start(&ns.name, &flags);
        let lifetime = 200 + rand::random::<u64>() % 1300;
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        operator.kill();
        kills += 1;
        let last = *last_expiry.lock().expect("lock");
        let expiries_passed =
            creator.is_finished() && Timestamp::now() > last + SignedDuration::from_secs(2);
        if kills >= 12 && expiries_passed && deleter.is_finished() {
            break;
        }
    }
    // One operator settles everything, undisturbed.
    let operator = Operator::start(&ns.name, &flags);
    creator.await.expect("creator");
    tokio::time::timeout(Duration::from_secs(60), deleter)
        .await
        .expect("every key to delete became Active")
        .expect("deleter");
    let created = created.lock().expect("lock").clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let keys = api.list(&ListParams::default()).await.expect("list").items;
        let unsettled: Vec<String> = keys
            .iter()
            .filter(|k| match Kind::of_name(&k.name_any()) {
                Kind::Kept => phase(k) != Some(Phase::Active),
                Kind::Expiring => phase(k) != Some(Phase::Expired),
                Kind::Deleted => true,
            })
            .map(|k| format!("{} ({:?})", k.name_any(), phase(k)))
            .collect();
        let remaining = (0..KEYS)
            .filter(|i| Kind::of_index(*i) != Kind::Deleted)
            .count();
        if unsettled.is_empty() && keys.len() == remaining {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled within 60 s: {} ApiKeys, unsettled: {unsettled:?}",
            keys.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // What happened: minted if a Secret of its own ever existed (the watch
    // saw it), then expired or deleted by kind.
    let expected: BTreeMap<String, Expected> = {
        let minted = minted.lock().expect("lock");
        created
            .iter()
            .map(|(name, (uid, owner))| {
                let kind = Kind::of_name(name);
                let mut actions = Vec::new();
                if minted.key_ids.contains_key(uid) {
                    actions.push(Action::Minted);
                } else {
                    assert_eq!(kind, Kind::Expiring, "{name} was Active: it had a Secret");
                }
                match kind {
                    Kind::Kept => {}
                    Kind::Expiring => actions.push(Action::Expired),
                    Kind::Deleted => actions.push(Action::Deleted),
                }
                let want = Expected {
                    name: name.clone(),
                    project: "churn".into(),
                    owner: owner.clone(),
                    actions,
                };
                (uid.clone(), want)
            })
            .collect()
    };
    let expired_after_minting = expected
        .values()
        .filter(|e| e.actions == [Action::Minted, Action::Expired])
        .count();
    wait_for_entries(&ns, &expected, Duration::from_secs(30)).await;
    // Long enough for every Active key to be re-verified (2 s) once more:
    // a late duplicate would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let segments = read_segments(&ns.client, &ns.name).await;
    let entries = verified(&segments);
    eprintln!(
        "{kills} kills; {} entries in {} segments; {expired_after_minting} keys expired after minting",
        entries.len(),
        segments.len()
    );
    assert_no_differences(&entries, &expected);
    {
        let minted = minted.lock().expect("lock");
        assert_key_ids(&entries, &minted);
        assert_no_key_material(&segments, &minted);
    }
    assert!(kills >= 12, "the operator was killed {kills} times");
    assert!(segments.len() > 1, "the stream rolled over");
    drop(operator);
    ns.delete().await;
}

#[tokio::test]
async fn the_deleted_entry_is_durable_before_the_api_key_goes() {
    const KEYS: usize = 6;
    let ns = TestNamespace::new("audit-durable").await;
    let api: Api<ApiKey> = ns.api();
    let _operator = Operator::start(&ns.name, &NO_WARNING);
    for i in 0..KEYS {
        let key = api_key(&format!("key-{i}"), "payments", "alice@example.com");
        api.create(&PostParams::default(), &key)
            .await
            .expect("create");
    }
    let mut uids = BTreeMap::new();
    for i in 0..KEYS {
        let name = format!("key-{i}");
        let key = wait_for_phase(&api, &name, Phase::Active, Duration::from_secs(30)).await;
        uids.insert(name, key.uid().expect("uid"));
    }

    // At the moment the watch reports a deletion, read the stream.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    {
        let api = api.clone();
        let client = ns.client.clone();
        let namespace = ns.name.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Delete(key)) => {
                        let segments = read_segments(&client, &namespace).await;
                        let _ = tx.send((key.name_any(), segments));
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("the ApiKey watch lists within 30 s")
        .expect("watch task alive");

    for (name, uid) in &uids {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        let (gone, segments) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{name} was not deleted within 30 s"))
            .expect("watch task alive");
        assert_eq!(&gone, name);
        let entries = verified(&segments);
        let own: Vec<&Entry> = entries.iter().filter(|e| &e.uid == uid).collect();
        let actions: Vec<(u64, Action)> = own.iter().map(|e| (e.transition, e.action)).collect();
        assert_eq!(
            actions,
            [(1, Action::Minted), (2, Action::Deleted)],
            "{name}: the stream as the watch reported the ApiKey gone"
        );
        let deleted = own[1];
        assert_eq!(
            (deleted.name.as_str(), deleted.reason.as_str()),
            (name.as_str(), "Deleted")
        );
        assert!(deleted.message.contains("deleted"), "{}", deleted.message);
    }
    let entries = verified(&read_segments(&ns.client, &ns.name).await);
    let problems = duplicates(&entries);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(entries.len(), KEYS * 2);
    ns.delete().await;
}

#[tokio::test]
async fn an_audit_append_lost_to_a_crash_is_caught_up_after_restart() {
    const KEYS: usize = 16;
    // All but entry 1: among them are transitions made before entry 1's
    // (their reconciles started first and appended later), as after any
    // crash with reconciles in flight.
    const LOST: usize = KEYS - 1;
    let ns = TestNamespace::new("audit-catchup").await;
    let api: Api<ApiKey> = ns.api();
    let config_maps: Api<ConfigMap> = ns.api();
    // All created before the operator starts, so their first reconciles
    // run side by side, as after a restart with a backlog.
    for i in 0..KEYS {
        let key = api_key(
            &format!("key-{i:02}"),
            "payments",
            &format!("user-{}@example.com", i % 2),
        );
        api.create(&PostParams::default(), &key)
            .await
            .expect("create");
    }
    let mut operator = Operator::start(&ns.name, &NO_WARNING);
    let mut keys = BTreeMap::new();
    for i in 0..KEYS {
        let name = format!("key-{i:02}");
        let key = wait_for_phase(&api, &name, Phase::Active, Duration::from_secs(30)).await;
        keys.insert(key.uid().expect("uid"), key);
    }
    let expected: BTreeMap<String, Expected> = keys
        .iter()
        .map(|(uid, key)| {
            let want = Expected {
                name: key.name_any(),
                project: key.spec.project.clone(),
                owner: key.spec.owner.clone(),
                actions: vec![Action::Minted],
            };
            (uid.clone(), want)
        })
        .collect();
    let segments = wait_for_entries(&ns, &expected, Duration::from_secs(20)).await;
    let before = verified(&segments);
    assert_no_differences(&before, &expected);
    operator.kill();

    // The crash: the last entries never reached the stream, but the status
    // writes that made them did (their lastTransitions still hold them).
    let (head_name, _) = segments.last().expect("a segment").clone();
    let mut head = config_maps.get(&head_name).await.expect("head segment");
    let content = head.data.as_ref().expect("data")[DATA_ENTRIES].clone();
    let lines: Vec<&str> = content.lines().collect();
    assert!(lines.len() > LOST, "{} entries in the head", lines.len());
    let kept: String = lines[..lines.len() - LOST]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let lost: Vec<Entry> = before[before.len() - LOST..].to_vec();
    for entry in &lost {
        let key = api.get(&entry.name).await.expect("get ApiKey");
        let status = key.status.expect("status");
        assert!(
            status
                .last_transitions
                .iter()
                .any(|r| r.number == entry.transition && r.action.as_str() == entry.action.as_str()),
            "{}: status.lastTransitions holds it: {:?}",
            show(entry),
            status.last_transitions
        );
    }
    head.data
        .as_mut()
        .expect("data")
        .insert(DATA_ENTRIES.to_string(), kept);
    config_maps
        .replace(&head_name, &PostParams::default(), &head)
        .await
        .expect("rewrite the head segment");
    let truncated = verified(&read_segments(&ns.client, &ns.name).await);
    assert_eq!(truncated.len(), before.len() - LOST);

    // Restart: the missing entries are appended again, exactly once, and
    // read as they would have on time.
    let operator = Operator::start(&ns.name, &NO_WARNING);
    let segments = wait_for_entries(&ns, &expected, Duration::from_secs(20)).await;
    let after = verified(&segments);
    let problems = differences(&after, &expected);
    let older: Vec<String> = lost
        .iter()
        .filter(|e| e.time < before[0].time)
        .map(|e| format!("{} at {}", show(e), e.time))
        .collect();
    assert!(
        problems.is_empty(),
        "the lost entries were not all appended again:\n  {}\n(entry 1 is at {}; lost entries made before it: {older:?})",
        problems.join("\n  "),
        before[0].time
    );
    for entry in &lost {
        let again = after
            .iter()
            .find(|e| e.dedup_key() == entry.dedup_key())
            .expect("appended again");
        let timeless = |e: &Entry| Entry {
            seq: 0,
            prev: String::new(),
            ..e.clone()
        };
        assert_eq!(
            timeless(again),
            timeless(entry),
            "{}: the late entry reads as it would have on time",
            show(entry)
        );
    }
    for (uid, key) in &keys {
        assert!(
            after.iter().any(|e| &e.uid == uid),
            "{} has its entry",
            key.name_any()
        );
    }

    // A further restart adds nothing: wait until it has reconciled every
    // key, then for one more periodic verification (every 2 s).
    drop(operator);
    let operator = Operator::start(&ns.name, &NO_WARNING);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = operator.log();
        if keys
            .values()
            .all(|k| reconciled(&log, &ns.name, &k.name_any()))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted operator reconciled every key within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let final_segments = read_segments(&ns.client, &ns.name).await;
    let last = verified(&final_segments);
    assert_no_differences(&last, &expected);
    assert_eq!(final_segments, segments, "the stream is unchanged");
    ns.delete().await;
}

#[tokio::test]
async fn two_operators_never_fork_the_chain() {
    const KEYS: usize = 60;
    let ns = TestNamespace::new("audit-twins").await;
    let api: Api<ApiKey> = ns.api();
    // Small segments: both operators roll the stream over many times.
    let flags = [
        NO_WARNING[0],
        NO_WARNING[1],
        "--audit-segment-bytes",
        "4096",
    ];
    let _first = Operator::start(&ns.name, &flags);
    let _second = Operator::start(&ns.name, &flags);
    let mut created = BTreeMap::new();
    for i in 0..KEYS {
        let owner = format!("user-{}@example.com", i % 4);
        let key = api_key(&format!("key-{i:02}"), "twins", &owner);
        let key = api
            .create(&PostParams::default(), &key)
            .await
            .expect("create");
        created.insert(key.uid().expect("uid"), (key.name_any(), owner));
    }
    let doomed = |name: &str| name.ends_with('0') || name.ends_with('5');
    for (name, _) in created.values() {
        wait_for_phase(&api, name, Phase::Active, Duration::from_secs(60)).await;
        if doomed(name) {
            api.delete(name, &DeleteParams::default())
                .await
                .expect("delete");
        }
    }
    let expected: BTreeMap<String, Expected> = created
        .iter()
        .map(|(uid, (name, owner))| {
            let mut actions = vec![Action::Minted];
            if doomed(name) {
                actions.push(Action::Deleted);
            }
            let want = Expected {
                name: name.clone(),
                project: "twins".into(),
                owner: owner.clone(),
                actions,
            };
            (uid.clone(), want)
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len()
        > expected.values().filter(|e| e.actions.len() == 1).count()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deleted ApiKeys went within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_entries(&ns, &expected, Duration::from_secs(30)).await;
    // Both operators re-verify every key (every 2 s) meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let segments = read_segments(&ns.client, &ns.name).await;
    let entries = verified(&segments);
    eprintln!("{} entries in {} segments", entries.len(), segments.len());
    assert_no_differences(&entries, &expected);
    assert!(segments.len() > 3, "the stream rolled over");
    ns.delete().await;
}
