//! The durable audit stream: every lifecycle transition appends exactly one
//! hash-chained entry to ConfigMap segments in the operator's namespace;
//! segments roll over before their size limit and are pruned by retention;
//! `keymint audit` lists, exports and verifies the stream and catches
//! tampering.
//!
//! The operator runs as a separate process (the real binary) and the stream
//! is read the way a user reads it: the ConfigMaps as admin, and the real
//! `keymint audit` command with the test's kubeconfig.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keymint::apikey::{ApiKey, Phase, TransitionRecord};
use keymint::audit::{self, Action, Anchor, Entry, GENESIS};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::support;
use crate::support::audit::{SEGMENT_PREFIX, SEGMENT_SELECTOR, checkpoint_in, entries};
use crate::support::operator::Operator;
use crate::support::watch_from_here;
use crate::support::{
    TestNamespace, api_key, control_plane, events_for, eventually, replace_secret,
};

const SEALED: &str = "keymint.dev/sealed";

// ---------------------------------------------------------------------------
// Reading the stream
// ---------------------------------------------------------------------------

/// The segment ConfigMaps in `namespace`, oldest (lowest number) first.
async fn segment_maps(ns: &TestNamespace) -> Vec<ConfigMap> {
    let api: Api<ConfigMap> = ns.api();
    let mut maps: Vec<ConfigMap> = api
        .list(&ListParams::default().labels(SEGMENT_SELECTOR))
        .await
        .expect("list audit segments")
        .items
        .into_iter()
        .filter(|cm| cm.name_any().starts_with(SEGMENT_PREFIX))
        .collect();
    maps.sort_by_key(|cm| cm.name_any());
    maps
}

fn content_of(cm: &ConfigMap) -> String {
    cm.data
        .as_ref()
        .and_then(|d| d.get("entries"))
        .cloned()
        .unwrap_or_default()
}

/// The stream as stored: (segment name, `entries`), oldest first.
async fn segments(ns: &TestNamespace) -> Vec<(String, String)> {
    support::audit::segments(&ns.client, &ns.name).await
}

/// The stored lines (without their newline), in stream order.
fn stored_lines(segments: &[(String, String)]) -> Vec<String> {
    segments
        .iter()
        .flat_map(|(_, content)| content.lines().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Waits until the stream holds at least `n` entries; returns its segments.
async fn wait_for_entries(ns: &TestNamespace, n: usize) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let segs = segments(ns).await;
        let have = entries(&segs).len();
        if have >= n {
            return segs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the audit stream holds {have} entries, expected {n} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `keymint audit <args> --audit-namespace <namespace>`, run as a user
/// would with the test's kubeconfig.
struct CliRun {
    success: bool,
    stdout: String,
    stderr: String,
}

impl CliRun {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

async fn keymint_audit(namespace: &str, args: &[&str]) -> CliRun {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keymint"));
    command
        .arg("audit")
        .args(args)
        // The test's operator runs in the test's namespace: its audit key
        // is there too.
        .args([
            "--audit-namespace",
            namespace,
            "--keymint-namespace",
            namespace,
        ])
        .env("KUBECONFIG", control_plane().kubeconfig())
        .env_remove("KEYMINT_AUDIT_NAMESPACE")
        .env_remove("KEYMINT_NAMESPACE");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run keymint audit");
    CliRun {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).expect("utf8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf8 stderr"),
    }
}

/// `keymint audit verify` succeeds; returns the checkpoint it prints.
async fn verify_ok(namespace: &str, extra: &[&str]) -> String {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    let run = keymint_audit(namespace, &args).await;
    assert!(run.success, "keymint audit verify failed: {}", run.output());
    assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);
    checkpoint_in(&run.stdout)
}

/// Every version of every segment that a watch reported, and the most
/// segments that existed at once.
#[derive(Default)]
struct SegmentLog {
    /// (name, content) per write, in the order the watch reported them.
    versions: Vec<(String, String)>,
    live: BTreeSet<String>,
    max_live: usize,
    deleted: BTreeSet<String>,
}

struct SegmentWatch {
    log: Arc<Mutex<SegmentLog>>,
    task: tokio::task::JoinHandle<()>,
}

impl SegmentWatch {
    /// Starts watching the segments in `ns`; returns once the watch is
    /// established, so no write made afterwards is missed.
    async fn start(ns: &TestNamespace) -> SegmentWatch {
        let api: Api<ConfigMap> = ns.api();
        let log: Arc<Mutex<SegmentLog>> = Arc::default();
        let sink = log.clone();
        let config = watcher::Config::default().labels(SEGMENT_SELECTOR);
        let task = watch_from_here(api, config, move |event| {
            let mut log = sink.lock().expect("lock");
            match event {
                watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) => {
                    let name = cm.name_any();
                    log.versions.push((name.clone(), content_of(&cm)));
                    log.live.insert(name);
                    log.max_live = log.max_live.max(log.live.len());
                }
                watcher::Event::Delete(cm) => {
                    log.live.remove(&cm.name_any());
                    log.deleted.insert(cm.name_any());
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        })
        .await;
        SegmentWatch { log, task }
    }

    /// Whether the watch has seen the stream as it is now: the same segments,
    /// each with its current content last.
    fn caught_up(&self, segments: &[(String, String)]) -> bool {
        let live: BTreeSet<String> = segments.iter().map(|(n, _)| n.clone()).collect();
        let live_matches = self.log.lock().expect("lock").live == live;
        live_matches
            && segments
                .iter()
                .all(|(name, content)| self.versions_of(name).last() == Some(content))
    }

    /// Waits until [`SegmentWatch::caught_up`] with `segments`.
    async fn catch_up(&self, segments: &[(String, String)]) {
        eventually(Duration::from_secs(10), || {
            let done = self.caught_up(segments);
            async move { done }
        })
        .await;
    }

    /// The contents `name` had, write by write.
    fn versions_of(&self, name: &str) -> Vec<String> {
        let log = self.log.lock().expect("lock");
        let mut versions: Vec<String> = log
            .versions
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
            .collect();
        // A write that only changes annotations (sealing) repeats the content.
        versions.dedup();
        versions
    }
}

impl Drop for SegmentWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn segment_name(n: u64) -> String {
    format!("{SEGMENT_PREFIX}{n:010}")
}

// ---------------------------------------------------------------------------
// Driving ApiKeys
// ---------------------------------------------------------------------------

async fn create(api: &Api<ApiKey>, key: &ApiKey) -> Timestamp {
    let before = Timestamp::now();
    api.create(&PostParams::default(), key)
        .await
        .unwrap_or_else(|e| panic!("create ApiKey {}: {e}", key.name_any()));
    before
}

async fn delete_and_wait(api: &Api<ApiKey>, name: &str) {
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete ApiKey {name}: {e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.get_opt(name).await.expect("get ApiKey").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ApiKey {name} still there 30 s after its deletion"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `support::wait_for_phase`, but a timeout shows the end of the operators' logs
/// (which never hold a key) instead of only the status.
async fn wait_phase(
    api: &Api<ApiKey>,
    name: &str,
    phase: Phase,
    timeout: Duration,
    operators: &[&Operator],
) -> ApiKey {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = api.get_opt(name).await.expect("get ApiKey");
        let seen = current
            .as_ref()
            .and_then(|k| k.status.as_ref())
            .and_then(|s| s.phase);
        if seen == Some(phase) {
            return current.expect("present");
        }
        if tokio::time::Instant::now() >= deadline {
            let logs: Vec<String> = operators
                .iter()
                .map(|o| {
                    let log = o.log();
                    let lines: Vec<&str> = log.lines().collect();
                    lines[lines.len().saturating_sub(30)..].join("\n")
                })
                .collect();
            panic!(
                "{name}: phase {seen:?}, expected {phase:?} within {timeout:?}; status: {:?}\noperator logs (tail):\n{}",
                current.and_then(|k| k.status),
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The plaintext in the Secret `name` (for leak checks only; never printed).
async fn plaintext(secrets: &Api<Secret>, name: &str) -> String {
    let secret = secrets.get(name).await.expect("Secret exists");
    let bytes = secret.data.as_ref().expect("data")["api-key"].0.clone();
    String::from_utf8(bytes).expect("utf8 key")
}

/// Replaces the Secret `name` with one that looks like ours (same labels,
/// annotations and controller ownerReference) but holds another key.
/// Returns the forged plaintext.
async fn tamper_with_secret(secrets: &Api<Secret>, name: &str) -> String {
    let original = secrets.get(name).await.expect("Secret exists");
    let replacement = replace_secret(secrets, &original, true).await;
    let bytes = replacement.data.as_ref().expect("data")["api-key"]
        .0
        .clone();
    String::from_utf8(bytes).expect("utf8 key")
}

/// What the test knows about one ApiKey, to check its entries against.
#[derive(Default)]
struct Known {
    uid: String,
    project: String,
    owner: String,
    key_id: Option<String>,
    /// Outbox records seen in its status (number → record).
    outbox: BTreeMap<u64, TransitionRecord>,
    /// (action, not before, not after): when each transition happened, as
    /// seen from the test.
    windows: Vec<(Action, Timestamp, Timestamp)>,
}

impl Known {
    fn new(key: &ApiKey) -> Known {
        Known {
            uid: key.uid().expect("uid"),
            project: key.spec.project.clone(),
            owner: key.spec.owner.clone(),
            ..Known::default()
        }
    }

    /// Records what `key`'s status shows: its key id and outbox.
    fn observe(&mut self, key: &ApiKey) {
        let status = key.status.as_ref().expect("status");
        if let Some(id) = &status.key_id {
            self.key_id = Some(id.clone());
        }
        for record in &status.last_transitions {
            self.outbox.insert(record.number, record.clone());
        }
    }

    fn happened(&mut self, action: Action, from: Timestamp, to: Timestamp) {
        self.windows.push((action, from, to));
    }
}

/// Event reason of each action (an entry and its Event use the same words).
fn event_reason(action: Action) -> &'static str {
    match action {
        Action::Minted => "Minted",
        Action::Rejected => "Rejected",
        Action::Conflict => "Conflict",
        Action::ExpiringSoon => "ExpiringSoon",
        Action::Expired => "Expired",
        Action::SecretLost => "SecretLost",
        Action::SecretTampered => "SecretTampered",
        Action::SecretRestored => "SecretRestored",
        Action::Revealed => "Revealed",
        Action::NeverShown => "NeverShown",
        Action::Deleted => "Deleted",
        Action::DeletedUnobserved => "DeletedUnobserved",
        Action::Pruned => "Retention",
    }
}

/// RFC 3339 in UTC with nine fractional digits, e.g.
/// `2026-03-01T12:00:00.123456789Z`.
fn is_nanosecond_rfc3339(time: &str) -> bool {
    let b = time.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 30
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..29)
        && b[29] == b'Z'
}

// ---------------------------------------------------------------------------
// 1. One entry per transition, with the documented fields
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_transition_appends_one_entry_with_the_documented_fields() {
    let ns = TestNamespace::new("auditfields").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let warning = SignedDuration::from_secs(6);
    let operator = Operator::start(
        &ns.name,
        &["--max-keys-per-owner", "1", "--expiry-warning", "6s"],
    );
    let mut known: BTreeMap<&str, Known> = BTreeMap::new();
    let mut plaintexts: Vec<String> = Vec::new();

    // a-expiring: minted, then expiring-soon when the 6 s window opens, then
    // expired. Whole seconds: that is what the typed spec keeps.
    let expires_at = Timestamp::from_second(Timestamp::now().as_second() + 16).expect("time");
    let mut expiring = api_key("a-expiring", "audit", "alice@example.com");
    expiring.spec.expires_at = Some(Time(expires_at));
    // b-first holds bob's only slot; b-second waits for it.
    let first = api_key("b-first", "audit", "bob@example.com");
    // c-conflict: a Secret that is not ours already has its name.
    let foreign = keymint::apikey::key::mint().expect("mint");
    let foreign_secret = Secret {
        metadata: ObjectMeta {
            name: Some("c-conflict".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "api-key".to_string(),
            ByteString(foreign.expose().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &foreign_secret)
        .await
        .expect("create the foreign Secret");
    plaintexts.push(foreign.expose().to_string());
    let conflicting = api_key("c-conflict", "audit", "carol@example.com");
    let lost = api_key("d-lost", "audit", "dave@example.com");
    let tampered = api_key("e-tampered", "audit", "erin@example.com");

    let mut created: Vec<(&str, Timestamp)> = Vec::new();
    for key in [&expiring, &first, &conflicting, &lost, &tampered] {
        created.push((
            key.metadata.name.as_deref().expect("name"),
            create(&api, key).await,
        ));
    }
    for (name, at) in &created {
        let phase = if *name == "c-conflict" {
            Phase::Conflict
        } else {
            Phase::Active
        };
        let key = wait_phase(&api, name, phase, Duration::from_secs(30), &[&operator]).await;
        let k = known.entry(name).or_insert_with(|| Known::new(&key));
        k.observe(&key);
        let action = if phase == Phase::Active {
            Action::Minted
        } else {
            Action::Conflict
        };
        k.happened(action, *at, Timestamp::now());
        if phase == Phase::Active {
            plaintexts.push(plaintext(&secrets, name).await);
        }
    }

    // b-second: over bob's quota.
    let second = api_key("b-second", "audit", "bob@example.com");
    let at = create(&api, &second).await;
    let key = wait_phase(
        &api,
        "b-second",
        Phase::Rejected,
        Duration::from_secs(20),
        &[&operator],
    )
    .await;
    let k = known.entry("b-second").or_insert_with(|| Known::new(&key));
    k.observe(&key);
    k.happened(Action::Rejected, at, Timestamp::now());

    // d-lost: its Secret is deleted out of band.
    let at = Timestamp::now();
    secrets
        .delete("d-lost", &DeleteParams::default())
        .await
        .expect("delete d-lost's Secret");
    let key = wait_phase(
        &api,
        "d-lost",
        Phase::SecretLost,
        Duration::from_secs(20),
        &[&operator],
    )
    .await;
    let k = known.get_mut("d-lost").expect("known");
    k.observe(&key);
    k.happened(Action::SecretLost, at, Timestamp::now());

    // e-tampered: its Secret is replaced by a look-alike with another key.
    let at = Timestamp::now();
    plaintexts.push(tamper_with_secret(&secrets, "e-tampered").await);
    let key = wait_phase(
        &api,
        "e-tampered",
        Phase::SecretTampered,
        Duration::from_secs(20),
        &[&operator],
    )
    .await;
    let k = known.get_mut("e-tampered").expect("known");
    k.observe(&key);
    k.happened(Action::SecretTampered, at, Timestamp::now());

    // Deleting b-first frees bob's slot for b-second.
    let at = Timestamp::now();
    delete_and_wait(&api, "b-first").await;
    known
        .get_mut("b-first")
        .expect("known")
        .happened(Action::Deleted, at, Timestamp::now());
    let key = wait_phase(
        &api,
        "b-second",
        Phase::Active,
        Duration::from_secs(20),
        &[&operator],
    )
    .await;
    let k = known.get_mut("b-second").expect("known");
    k.observe(&key);
    k.happened(Action::Minted, at, Timestamp::now());
    plaintexts.push(plaintext(&secrets, "b-second").await);

    // a-expiring expires.
    let until = expires_at.duration_since(Timestamp::now()) + SignedDuration::from_secs(10);
    let key = wait_phase(
        &api,
        "a-expiring",
        Phase::Expired,
        Duration::try_from(until).unwrap_or(Duration::from_secs(10)),
        &[&operator],
    )
    .await;
    let k = known.get_mut("a-expiring").expect("known");
    k.observe(&key);
    // The window opens at expiresAt - 6s, unless the key was minted later.
    let minted_by = k.windows[0].2;
    let soon_from = expires_at - warning;
    k.happened(
        Action::ExpiringSoon,
        soon_from.min(k.windows[0].1),
        soon_from.max(minted_by) + SignedDuration::from_secs(1),
    );
    k.happened(
        Action::Expired,
        expires_at,
        expires_at + SignedDuration::from_secs(2),
    );

    // Steady states (conflict, lost, tampered, active, expired) append
    // nothing more, however often they are verified.
    eventually(Duration::from_secs(10), || async {
        entries(&segments(&ns).await)
            .iter()
            .any(|e| e.action == Action::Expired)
    })
    .await;
    let steady = wait_for_entries(&ns, 12).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = segments(&ns).await;
    assert_eq!(
        entries(&later),
        entries(&steady),
        "steady keys appended entries while being re-verified"
    );

    // Deleting every ApiKey records a last entry for each.
    for name in [
        "a-expiring",
        "b-second",
        "c-conflict",
        "d-lost",
        "e-tampered",
    ] {
        let at = Timestamp::now();
        delete_and_wait(&api, name).await;
        known
            .get_mut(name)
            .expect("known")
            .happened(Action::Deleted, at, Timestamp::now());
    }

    let segs = segments(&ns).await;
    let stream = entries(&segs);

    // The chain: seq 1, 2, 3, ... each linked to the one before; and the
    // operator's own verification agrees.
    for (i, e) in stream.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "seq runs without gaps: {e:?}");
        let prev = if i == 0 {
            GENESIS.to_string()
        } else {
            stream[i - 1].hash()
        };
        assert_eq!(e.prev, prev, "entry {} links to entry {}", e.seq, i);
    }
    let summary = audit::verify(&segs).expect("the stream verifies");
    assert_eq!(summary.anchor, Anchor::Genesis);
    assert_eq!(summary.entries, stream.len());
    verify_ok(&ns.name, &[]).await;

    // One entry per transition, per ApiKey, in order.
    let by_uid: HashMap<&str, &str> = known
        .iter()
        .map(|(name, k)| (k.uid.as_str(), *name))
        .collect();
    let mut actions: BTreeMap<&str, Vec<Action>> = BTreeMap::new();
    for e in &stream {
        let name = by_uid
            .get(e.uid.as_str())
            .unwrap_or_else(|| panic!("an entry for an unknown ApiKey: {e:?}"));
        actions.entry(name).or_default().push(e.action);
    }
    // e-tampered's Secret is deleted and re-created: a verification that
    // runs in between sees it missing first.
    let tampered_actions = &actions["e-tampered"];
    let tampered_expected: &[Action] = if tampered_actions.contains(&Action::SecretLost) {
        &[
            Action::Minted,
            Action::SecretLost,
            Action::SecretTampered,
            Action::Deleted,
        ]
    } else {
        &[Action::Minted, Action::SecretTampered, Action::Deleted]
    };
    let expected: BTreeMap<&str, &[Action]> = BTreeMap::from([
        (
            "a-expiring",
            &[
                Action::Minted,
                Action::ExpiringSoon,
                Action::Expired,
                Action::Deleted,
            ][..],
        ),
        ("b-first", &[Action::Minted, Action::Deleted][..]),
        (
            "b-second",
            &[Action::Rejected, Action::Minted, Action::Deleted][..],
        ),
        ("c-conflict", &[Action::Conflict, Action::Deleted][..]),
        (
            "d-lost",
            &[Action::Minted, Action::SecretLost, Action::Deleted][..],
        ),
        ("e-tampered", tampered_expected),
    ]);
    let seen: BTreeMap<&str, &[Action]> = actions.iter().map(|(n, a)| (*n, &a[..])).collect();
    assert_eq!(seen, expected, "the entries of each ApiKey");

    // The fields of every entry.
    let instance = &stream[0].instance;
    assert!(!instance.is_empty(), "entries name the operator instance");
    let mut transitions: HashMap<&str, u64> = HashMap::new();
    let mut windows: HashMap<&str, Vec<(Action, Timestamp, Timestamp)>> = known
        .iter()
        .map(|(name, k)| (*name, k.windows.clone()))
        .collect();
    for e in &stream {
        let name = by_uid[e.uid.as_str()];
        let k = &known[name];
        let what = format!("entry {} ({} {})", e.seq, e.action, name);
        assert!(is_nanosecond_rfc3339(&e.time), "{what}: time {}", e.time);
        let time = e.timestamp().expect("a timestamp");
        assert_eq!(
            (e.namespace.as_str(), e.name.as_str()),
            (ns.name.as_str(), name),
            "{what}"
        );
        assert_eq!(
            (e.project.as_str(), e.owner.as_str()),
            (k.project.as_str(), k.owner.as_str()),
            "{what}"
        );
        // Transitions count per ApiKey from 1.
        let n = transitions.entry(name).or_insert(0);
        *n += 1;
        assert_eq!(e.transition, *n, "{what}: transition number");
        assert_eq!(&e.instance, instance, "{what}: one operator wrote it all");
        assert_eq!(e.reason, event_reason(e.action), "{what}: reason");
        assert!(!e.message.trim().is_empty(), "{what}: a message");
        // Key id: none before the key was minted, then the one in status.
        let minted_yet = actions[name][..*n as usize].contains(&Action::Minted);
        let expected_id = if minted_yet { k.key_id.clone() } else { None };
        assert_eq!(e.key_id, expected_id, "{what}: keyId");
        if e.action == Action::Minted {
            let id = k.key_id.as_deref().expect("a key id");
            assert!(id.starts_with("km_"), "{id}");
            assert!(e.message.contains(id), "{what}: {}", e.message);
        }
        assert_eq!(e.pruned_through_seq, None, "{what}");
        assert_eq!(e.pruned_through_hash, None, "{what}");
        // The outbox record the status carried is the entry's time and
        // instance, exactly.
        if let Some(record) = k.outbox.get(&e.transition) {
            assert_eq!(record.action.as_str(), e.action.as_str(), "{what}");
            assert_eq!(record.time.to_string(), e.time, "{what}: time as in status");
            assert_eq!(&record.instance, instance, "{what}");
        }
        // Close to when it happened, as seen from the test (same clock).
        let slack = SignedDuration::from_millis(1000);
        let list = windows.get_mut(name).expect("windows");
        if let Some(pos) = list.iter().position(|(a, _, _)| *a == e.action) {
            let (_, from, to) = list.remove(pos);
            assert!(
                time >= from - slack && time <= to + slack,
                "{what}: time {time} not within [{from}, {to}] (± {slack:#})"
            );
        } else if e.action != Action::SecretLost {
            panic!("{what}: no window for it");
        }
    }
    // Deletion wording tells whether a Secret was deleted with the ApiKey.
    let deleted_message = |name: &str| {
        stream
            .iter()
            .find(|e| e.name == name && e.action == Action::Deleted)
            .map(|e| e.message.clone())
            .expect("a deleted entry")
    };
    for (name, says) in [
        ("a-expiring", "had no Secret left to delete"),
        ("b-first", "and its Secret b-first deleted"),
        ("b-second", "and its Secret b-second deleted"),
        ("c-conflict", "no key had been minted"),
        ("d-lost", "had no Secret left to delete"),
        ("e-tampered", "and its Secret e-tampered deleted"),
    ] {
        let message = deleted_message(name);
        assert!(message.contains(says), "{name}: {message}");
    }

    // Each entry has its Event, in the same words.
    for e in &stream {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let events = loop {
            let events = events_for(&ns.client, &ns.name, &e.name).await;
            let found = events
                .iter()
                .any(|(reason, note)| reason == &e.reason && note == &e.message);
            if found || tokio::time::Instant::now() >= deadline {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            events
                .iter()
                .any(|(reason, note)| reason == &e.reason && note == &e.message),
            "entry {} ({} {}): no Event with reason {} and note {:?}; Events: {events:?}",
            e.seq,
            e.action,
            e.name,
            e.reason,
            e.message
        );
    }

    // Never the key, in any form.
    for (name, content) in &segs {
        for key in &plaintexts {
            assert!(
                !content.contains(key.as_str()) && !content.contains(&key[4..]),
                "segment {name} contains a key"
            );
        }
        assert!(!content.contains("kmk_"), "segment {name} mentions a key");
    }
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// 2. Rollover
// ---------------------------------------------------------------------------

const SMALL_SEGMENT: usize = 4096;

/// Creates `n` ApiKeys `<prefix>-00`, ... for one owner and waits until all
/// are Active; then deletes them all and waits until they are gone.
async fn mint_and_delete(ns: &TestNamespace, operator: &Operator, prefix: &str, n: usize) {
    let api: Api<ApiKey> = ns.api();
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:02}")).collect();
    for name in &names {
        create(&api, &api_key(name, "rollover", "alice@example.com")).await;
    }
    for name in &names {
        wait_phase(
            &api,
            name,
            Phase::Active,
            Duration::from_secs(40),
            &[operator],
        )
        .await;
    }
    for name in &names {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete ApiKey");
    }
    eventually(Duration::from_secs(40), || async {
        api.list_metadata(&ListParams::default())
            .await
            .expect("list ApiKeys")
            .items
            .is_empty()
    })
    .await;
}

/// Each ApiKey has exactly one minted and one deleted entry.
fn assert_minted_and_deleted_once(stream: &[Entry], n: usize) {
    let mut per_key: BTreeMap<(&str, &str), Vec<Action>> = BTreeMap::new();
    for e in stream.iter().filter(|e| e.action != Action::Pruned) {
        per_key
            .entry((e.name.as_str(), e.uid.as_str()))
            .or_default()
            .push(e.action);
    }
    assert_eq!(per_key.len(), n, "one ApiKey per name: {per_key:?}");
    for (key, actions) in &per_key {
        assert_eq!(
            actions,
            &[Action::Minted, Action::Deleted],
            "{key:?}: its entries"
        );
    }
    let dedup: BTreeSet<(String, u64)> = stream.iter().map(Entry::dedup_key).collect();
    assert_eq!(dedup.len(), stream.len(), "no (uid, transition) twice");
}

#[tokio::test]
async fn segments_roll_over_before_the_size_limit() {
    let ns = TestNamespace::new("auditroll").await;
    let watch = SegmentWatch::start(&ns).await;
    let operator = Operator::start(
        &ns.name,
        &[
            "--audit-segment-bytes",
            "4096",
            "--max-keys-per-owner",
            "100",
        ],
    );
    const KEYS: usize = 24;
    mint_and_delete(&ns, &operator, "roll", KEYS).await;
    let maps = {
        wait_for_entries(&ns, 2 * KEYS).await;
        segment_maps(&ns).await
    };
    let segs: Vec<(String, String)> = maps
        .iter()
        .map(|cm| (cm.name_any(), content_of(cm)))
        .collect();
    let stream = entries(&segs);
    assert_eq!(stream.len(), 2 * KEYS, "one entry per transition");
    watch.catch_up(&segs).await;
    assert_minted_and_deleted_once(&stream, KEYS);

    // Named in order, 1, 2, 3, ..., with several of them.
    let names: Vec<String> = segs.iter().map(|(n, _)| n.clone()).collect();
    let expected: Vec<String> = (1..=names.len() as u64).map(segment_name).collect();
    assert_eq!(names, expected, "segments are numbered without gaps");
    assert!(
        names.len() >= 3,
        "{} entries in {} segments of at most {SMALL_SEGMENT} bytes",
        stream.len(),
        names.len()
    );

    // Every segment but the newest is sealed; each says where its chain
    // starts.
    let mut next_seq = 1;
    for (i, cm) in maps.iter().enumerate() {
        let name = cm.name_any();
        let sealed = cm.annotations().get(SEALED).map(String::as_str);
        if i + 1 < maps.len() {
            assert_eq!(sealed, Some("true"), "{name} is sealed");
        } else {
            assert_eq!(sealed, None, "the head segment {name} is not sealed");
        }
        let own = audit::parse_segment(&content_of(cm)).expect("parses");
        let first = own.first().expect("no empty segment");
        assert_eq!(first.seq, next_seq, "{name} continues the stream");
        next_seq = own.last().expect("last").seq + 1;
        assert_eq!(
            cm.annotations().get("keymint.dev/prev-seq"),
            Some(&(first.seq - 1).to_string()),
            "{name}"
        );
        assert_eq!(
            cm.annotations().get("keymint.dev/prev-hash"),
            Some(&first.prev),
            "{name}"
        );
    }

    // Sizes. The operator rolls over when appending a batch (the entries of
    // the reconciles waiting at that moment, one write) would take the head
    // segment past the threshold: the batch then starts the next segment.
    // So every write that *appends* to a segment leaves it within the
    // threshold; only the write that *creates* a segment can exceed it, when
    // that one batch alone is bigger, and such a segment takes nothing more.
    // And a segment is only sealed when the next batch did not fit.
    for (i, (name, content)) in segs.iter().enumerate() {
        let versions = watch.versions_of(name);
        assert!(!versions.is_empty(), "the watch saw {name} written");
        assert_eq!(versions.last(), Some(content), "{name}: last write seen");
        for (v, version) in versions.iter().enumerate().skip(1) {
            assert!(
                version.len() <= SMALL_SEGMENT,
                "{name}: write {} appended to {} bytes, over the {SMALL_SEGMENT}-byte threshold",
                v + 1,
                version.len()
            );
        }
        if content.len() > SMALL_SEGMENT {
            assert_eq!(
                versions.len(),
                1,
                "{name} ({} bytes) is over the threshold, so it must hold one batch only",
                content.len()
            );
        }
        if let Some((next, _)) = segs.get(i + 1) {
            let started_with = watch.versions_of(next).first().cloned().expect("seen");
            assert!(
                content.len() + started_with.len() > SMALL_SEGMENT,
                "{name} ({} bytes) was sealed although the batch that started {next} ({} bytes) fitted",
                content.len(),
                started_with.len()
            );
        }
        // Far below the API server's 1 MiB object limit, in any case.
        assert!(
            content.len() < 512 * 1024,
            "{name}: {} bytes",
            content.len()
        );
    }

    let summary = audit::verify(&segs).expect("the stream verifies");
    assert_eq!(summary.anchor, Anchor::Genesis);
    let run = keymint_audit(&ns.name, &["verify"]).await;
    assert!(run.success, "{}", run.output());
    assert!(
        run.stdout.starts_with(&format!(
            "ok: {} entries in {} segments verify (entries 1 to {})",
            2 * KEYS,
            segs.len(),
            2 * KEYS
        )),
        "{}",
        run.stdout
    );
    drop(watch);
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// 3. Retention
// ---------------------------------------------------------------------------

#[tokio::test]
async fn retention_prunes_old_segments_and_keeps_the_chain_verifiable() {
    let ns = TestNamespace::new("auditretain").await;
    let watch = SegmentWatch::start(&ns).await;
    let operator = Operator::start(
        &ns.name,
        &[
            "--audit-segment-bytes",
            "4096",
            // The size bound with no floor: the test's segments are all
            // seconds old, and only a bound past the floor removes them.
            "--audit-max-segments",
            "3",
            "--audit-retention-floor",
            "0s",
            "--max-keys-per-owner",
            "100",
        ],
    );
    // Three rounds, so that the stream rolls over many times.
    const KEYS: usize = 12;
    for round in 0..3 {
        mint_and_delete(&ns, &operator, &format!("r{round}"), KEYS).await;
    }
    // Every transition reached the stream: all 72 of them, across the
    // segments the watch saw (pruned ones included).
    let total = 3 * 2 * KEYS;
    let everything = || -> BTreeMap<u64, String> {
        let log = watch.log.lock().expect("lock");
        let mut by_seq: BTreeMap<u64, String> = BTreeMap::new();
        for (name, content) in &log.versions {
            for line in content.lines() {
                let entry = audit::parse_segment(&format!("{line}\n"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
                    .remove(0);
                let previous = by_seq.insert(entry.seq, line.to_string());
                assert!(
                    previous.is_none_or(|p| p == line),
                    "two different entries {} (the chain forked)",
                    entry.seq
                );
            }
        }
        by_seq
    };
    eventually(Duration::from_secs(20), || {
        let n = everything()
            .values()
            .filter(|l| !l.contains(r#""action":"pruned""#))
            .count();
        async move { n >= total }
    })
    .await;
    let all: Vec<Entry> = everything()
        .values()
        .map(|l| {
            audit::parse_segment(&format!("{l}\n"))
                .expect("parses")
                .remove(0)
        })
        .collect();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(seqs, expected, "every entry ever written, without gaps");
    assert_minted_and_deleted_once(&all, 3 * KEYS);

    // What is left: at most 3 segments, the newest ones.
    let segs = segments(&ns).await;
    watch.catch_up(&segs).await;
    let (seen, deleted, max_live) = {
        let log = watch.log.lock().expect("lock");
        let seen: BTreeSet<String> = log.versions.iter().map(|(n, _)| n.clone()).collect();
        (seen, log.deleted.clone(), log.max_live)
    };
    assert!(
        seen.len() > 3 + 1,
        "the test wrote only {} segments",
        seen.len()
    );
    assert!(segs.len() <= 3, "{} segments kept", segs.len());
    let kept: Vec<String> = segs.iter().map(|(n, _)| n.clone()).collect();
    let newest: Vec<String> = seen.iter().rev().take(kept.len()).rev().cloned().collect();
    assert_eq!(kept, newest, "retention keeps the newest segments");
    let pruned: BTreeSet<String> = seen
        .difference(&kept.iter().cloned().collect())
        .cloned()
        .collect();
    assert_eq!(deleted, pruned, "every older segment was deleted");
    assert!(
        max_live <= 3 + 1,
        "{max_live} segments existed at once (retention 3, plus one while pruning)"
    );

    // The oldest kept entry is vouched for by a pruned entry, which records
    // exactly what it links to.
    let kept_entries = entries(&segs);
    let first = kept_entries.first().expect("entries kept");
    assert!(first.seq > 1, "old entries were pruned");
    let prunings: Vec<&Entry> = kept_entries
        .iter()
        .filter(|e| e.action == Action::Pruned)
        .collect();
    assert!(!prunings.is_empty(), "a pruned entry records the pruning");
    assert!(
        prunings
            .iter()
            .any(|p| p.pruned_through_seq == Some(first.seq - 1)
                && p.pruned_through_hash.as_deref() == Some(first.prev.as_str())),
        "no pruned entry vouches for entry {}: {prunings:?}",
        first.seq
    );
    for p in all.iter().filter(|e| e.action == Action::Pruned) {
        assert!(
            p.namespace.is_empty() && p.name.is_empty() && p.uid.is_empty(),
            "{p:?}"
        );
        assert_eq!(p.reason, "Retention");
        assert!(p.message.contains("retention removed"), "{}", p.message);
        assert!(!p.instance.is_empty());
        // It names the entry it vouches for with that entry's real hash.
        let through = p.pruned_through_seq.expect("prunedThroughSeq");
        let removed = all
            .iter()
            .find(|e| e.seq == through)
            .expect("the watch saw the entry");
        assert_eq!(p.pruned_through_hash, Some(removed.hash()), "{p:?}");
    }
    let summary = audit::verify(&segs).expect("the kept stream verifies");
    assert!(
        matches!(summary.anchor, Anchor::Pruned { .. }),
        "{:?}",
        summary.anchor
    );
    let run = keymint_audit(&ns.name, &["verify"]).await;
    assert!(run.success, "keymint audit verify: {}", run.output());
    drop(watch);
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// 4. Tampering
// ---------------------------------------------------------------------------

/// Puts `content` into the segment `name` (as admin), creating it again from
/// `original` if it was deleted.
async fn put_segment(ns: &TestNamespace, original: &ConfigMap, content: &str) {
    let api: Api<ConfigMap> = ns.api();
    let name = original.name_any();
    let data = Some(BTreeMap::from([(
        "entries".to_string(),
        content.to_string(),
    )]));
    match api.get_opt(&name).await.expect("get segment") {
        Some(mut cm) => {
            cm.data = data;
            api.replace(&name, &PostParams::default(), &cm)
                .await
                .expect("replace segment");
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: original.metadata.labels.clone(),
                    annotations: original.metadata.annotations.clone(),
                    ..ObjectMeta::default()
                },
                data,
                ..ConfigMap::default()
            };
            api.create(&PostParams::default(), &cm)
                .await
                .expect("re-create segment");
        }
    }
}

/// Restores every segment to `originals`.
async fn restore(ns: &TestNamespace, originals: &[ConfigMap]) {
    for cm in originals {
        put_segment(ns, cm, &content_of(cm)).await;
    }
}

/// The lines of each segment, to edit.
fn lines_of(originals: &[ConfigMap]) -> Vec<Vec<String>> {
    originals
        .iter()
        .map(|cm| content_of(cm).lines().map(str::to_string).collect())
        .collect()
}

fn join(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Where entry `seq` is: (segment index, line index).
fn locate(lines: &[Vec<String>], seq: u64) -> (usize, usize) {
    let needle = format!("{{\"seq\":{seq},");
    for (s, seg) in lines.iter().enumerate() {
        if let Some(l) = seg.iter().position(|line| line.starts_with(&needle)) {
            return (s, l);
        }
    }
    panic!("entry {seq} not found");
}

/// Runs `keymint audit verify` and expects it to fail naming `expected`
/// (each string must appear in its output).
async fn verify_fails(ns: &TestNamespace, case: &str, extra: &[&str], expected: &[&str]) {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    let run = keymint_audit(&ns.name, &args).await;
    let output = run.output();
    assert!(!run.success, "{case}: verify passed: {output}");
    assert!(
        run.stderr.starts_with("error: "),
        "{case}: {:?}",
        run.stderr
    );
    for needle in expected {
        assert!(
            output.contains(needle),
            "{case}: {needle:?} not in {output:?}"
        );
    }
}

#[tokio::test]
async fn verify_catches_edited_deleted_and_reordered_entries() {
    let ns = TestNamespace::new("audittamper").await;
    // The smallest segments, so that the stream spans several.
    let mut operator = Operator::start(&ns.name, &["--audit-segment-bytes", "1024"]);
    let api: Api<ApiKey> = ns.api();
    // One key at a time, so that every entry is a write of its own.
    for i in 0..10 {
        let name = format!("t-{i:02}");
        create(&api, &api_key(&name, "tamper", "alice@example.com")).await;
        wait_phase(
            &api,
            &name,
            Phase::Active,
            Duration::from_secs(20),
            &[&operator],
        )
        .await;
        wait_for_entries(&ns, i + 1).await;
    }
    for i in 0..10 {
        delete_and_wait(&api, &format!("t-{i:02}")).await;
        wait_for_entries(&ns, 10 + i + 1).await;
    }
    assert!(operator.terminate(), "the operator stops cleanly");

    let originals = segment_maps(&ns).await;
    let lines = lines_of(&originals);
    let total: usize = lines.iter().map(Vec::len).sum();
    assert_eq!(total, 20, "20 entries");
    assert!(
        originals.len() >= 5,
        "{} segments for 20 entries",
        originals.len()
    );
    let checkpoint = verify_ok(&ns.name, &[]).await;
    assert!(checkpoint.starts_with("20:sha256:"), "{checkpoint}");

    // An edit of a middle entry: its successor no longer links to it.
    let (s, l) = locate(&lines, 10);
    let mut entry = audit::parse_segment(&format!("{}\n", lines[s][l]))
        .expect("parses")
        .remove(0);
    entry.owner = "mallory@example.com".to_string();
    let mut edited = lines[s].clone();
    edited[l] = entry.encode();
    put_segment(&ns, &originals[s], &join(&edited)).await;
    verify_fails(&ns, "edit", &[], &["entry 10 in ", "was modified"]).await;
    restore(&ns, &originals).await;
    assert_eq!(verify_ok(&ns.name, &[]).await, checkpoint);

    // A middle line deleted.
    let mut cut = lines[s].clone();
    cut.remove(l);
    put_segment(&ns, &originals[s], &join(&cut)).await;
    verify_fails(&ns, "delete a line", &[], &["entry 10 was removed"]).await;
    restore(&ns, &originals).await;
    assert_eq!(verify_ok(&ns.name, &[]).await, checkpoint);

    // Two lines swapped (entries 10 and 11, wherever they are): 11 comes
    // too early.
    let (s2, l2) = locate(&lines, 11);
    let mut swapped = lines.clone();
    let (a, b) = (swapped[s][l].clone(), swapped[s2][l2].clone());
    swapped[s][l] = b;
    swapped[s2][l2] = a;
    for i in BTreeSet::from([s, s2]) {
        put_segment(&ns, &originals[i], &join(&swapped[i])).await;
    }
    verify_fails(
        &ns,
        "swap",
        &[],
        &["entry 11 in ", "out of order", "before entry 10"],
    )
    .await;
    restore(&ns, &originals).await;
    assert_eq!(verify_ok(&ns.name, &[]).await, checkpoint);

    // A whole middle segment deleted.
    let middle = originals.len() / 2;
    let gone = audit::parse_segment(&content_of(&originals[middle])).expect("parses");
    let (first, last) = (
        gone.first().expect("entries").seq,
        gone.last().expect("entries").seq,
    );
    ns.api::<ConfigMap>()
        .delete(&originals[middle].name_any(), &DeleteParams::default())
        .await
        .expect("delete a segment");
    let named = if first == last {
        format!("entry {first} was removed")
    } else {
        format!("entries {first} to {last} were removed")
    };
    verify_fails(&ns, "delete a segment", &[], &[&named]).await;
    restore(&ns, &originals).await;
    assert_eq!(verify_ok(&ns.name, &[]).await, checkpoint);

    // What the chain alone cannot see, a checkpoint can: the last entries
    // removed ...
    let mut truncated = lines.clone();
    for seq in [20, 19] {
        let (s, l) = locate(&lines, seq);
        assert_eq!(l + 1, truncated[s].len(), "entry {seq} ends its segment");
        truncated[s].pop();
    }
    for s in BTreeSet::from([locate(&lines, 19).0, locate(&lines, 20).0]) {
        put_segment(&ns, &originals[s], &join(&truncated[s])).await;
    }
    verify_ok(&ns.name, &[]).await;
    let flag = format!("--checkpoint={checkpoint}");
    verify_fails(
        &ns,
        "truncate",
        &[&flag],
        &["entries 19 to 20 were removed"],
    )
    .await;
    restore(&ns, &originals).await;
    assert_eq!(verify_ok(&ns.name, &[&flag]).await, checkpoint);

    // ... and the last entry edited.
    let (s, l) = locate(&lines, 20);
    let mut entry = audit::parse_segment(&format!("{}\n", lines[s][l]))
        .expect("parses")
        .remove(0);
    entry.message = "nothing to see here".to_string();
    let mut edited = lines[s].clone();
    edited[l] = entry.encode();
    put_segment(&ns, &originals[s], &join(&edited)).await;
    verify_ok(&ns.name, &[]).await;
    verify_fails(
        &ns,
        "edit the last",
        &[&flag],
        &["entry 20 in ", "was modified"],
    )
    .await;
    restore(&ns, &originals).await;
    assert_eq!(verify_ok(&ns.name, &[&flag]).await, checkpoint);

    ns.delete().await;
}

// ---------------------------------------------------------------------------
// 5. list and export
// ---------------------------------------------------------------------------

/// The seqs of `entries` that match `keep`.
fn seqs_where(entries: &[Entry], keep: impl Fn(&Entry) -> bool) -> Vec<u64> {
    entries.iter().filter(|e| keep(e)).map(|e| e.seq).collect()
}

/// `keymint audit export <filter>`: the lines it prints, each checked to
/// parse as an entry.
async fn export(namespace: &str, filter: &[&str]) -> Vec<String> {
    let mut args = vec!["export"];
    args.extend_from_slice(filter);
    let run = keymint_audit(namespace, &args).await;
    assert!(run.success, "export {filter:?}: {}", run.output());
    run.stdout
        .lines()
        .map(|line| {
            let entry: Entry = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("export {filter:?}: not an entry ({e}): {line}"));
            assert_eq!(entry.encode(), line, "exported as stored");
            line.to_string()
        })
        .collect()
}

/// `keymint audit list <filter>`: the header and the rows, split into
/// columns.
async fn list(namespace: &str, filter: &[&str]) -> (String, Vec<Vec<String>>) {
    let mut args = vec!["list"];
    args.extend_from_slice(filter);
    let run = keymint_audit(namespace, &args).await;
    assert!(run.success, "list {filter:?}: {}", run.output());
    let mut lines = run.stdout.lines();
    let header = lines.next().expect("a header").to_string();
    let rows = lines
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    (header, rows)
}

#[tokio::test]
async fn list_and_export_filter_entries() {
    let home = TestNamespace::new("auditlist").await;
    let other = TestNamespace::new("auditlist2").await;
    // Two operators, each for its own namespace, appending to one stream
    // (in `home`).
    let home_operator = Operator::start(&home.name, &[]);
    // Writing into another namespace's stream is beyond what the chart grants
    // an operator (its Role covers its own namespace): run this one as admin.
    let other_operator = Operator::start_as_admin(&other.name, &["--audit-namespace", &home.name]);

    let keys = [
        (&home, "h-web", "web", "alice@example.com"),
        (&home, "h-billing", "billing", "bob@example.com"),
        (&other, "o-web", "web", "bob@example.com"),
        (&other, "o-billing", "billing", "alice@example.com"),
    ];
    for (ns, name, project, owner) in keys {
        create(&ns.api(), &api_key(name, project, owner)).await;
    }
    for (ns, name, _, _) in keys {
        wait_phase(
            &ns.api(),
            name,
            Phase::Active,
            Duration::from_secs(30),
            &[&home_operator, &other_operator],
        )
        .await;
    }
    wait_for_entries(&home, 4).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mid = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    delete_and_wait(&home.api(), "h-web").await;
    delete_and_wait(&other.api(), "o-billing").await;
    let segs = wait_for_entries(&home, 6).await;
    let stored = stored_lines(&segs);
    let all = entries(&segs);
    assert_eq!(all.len(), 6, "{all:?}");
    let instances: BTreeSet<(&str, &str)> = all
        .iter()
        .map(|e| (e.namespace.as_str(), e.instance.as_str()))
        .collect();
    assert_eq!(
        instances.len(),
        2,
        "one instance per operator: {instances:?}"
    );

    // export: JSON Lines, exactly the stored lines.
    assert_eq!(
        export(&home.name, &[]).await,
        stored,
        "export of everything"
    );

    // Filters, alone and combined; each compared with the stored entries.
    let mid_arg = mid.to_string();
    type Keep = Box<dyn Fn(&Entry) -> bool>;
    let cases: Vec<(Vec<&str>, Keep)> = vec![
        (
            vec!["--project", "web"],
            Box::new(|e: &Entry| e.project == "web"),
        ),
        (
            vec!["--owner", "alice@example.com"],
            Box::new(|e: &Entry| e.owner == "alice@example.com"),
        ),
        (vec!["-n", &other.name], {
            let n = other.name.clone();
            Box::new(move |e: &Entry| e.namespace == n)
        }),
        (vec!["--namespace", &home.name], {
            let n = home.name.clone();
            Box::new(move |e: &Entry| e.namespace == n)
        }),
        (
            vec!["--action", "deleted"],
            Box::new(|e: &Entry| e.action == Action::Deleted),
        ),
        (vec!["--since", &mid_arg], {
            Box::new(move |e: &Entry| e.timestamp().expect("time") >= mid)
        }),
        (vec!["--until", &mid_arg], {
            Box::new(move |e: &Entry| e.timestamp().expect("time") < mid)
        }),
        (vec!["--since", "1h"], Box::new(|_: &Entry| true)),
        (
            vec![
                "--project",
                "web",
                "--action",
                "minted",
                "--owner",
                "bob@example.com",
            ],
            Box::new(|e: &Entry| {
                e.project == "web" && e.action == Action::Minted && e.owner == "bob@example.com"
            }),
        ),
        (
            vec!["--project", "nothing-here"],
            Box::new(|_: &Entry| false),
        ),
    ];
    for (filter, keep) in &cases {
        let expected = seqs_where(&all, keep);
        let expected_lines: Vec<String> = all
            .iter()
            .zip(&stored)
            .filter(|(e, _)| keep(e))
            .map(|(_, l)| l.clone())
            .collect();
        assert_eq!(
            export(&home.name, filter).await,
            expected_lines,
            "export {filter:?}"
        );
        let (_, rows) = list(&home.name, filter).await;
        let listed: Vec<u64> = rows.iter().map(|r| r[0].parse().expect("a seq")).collect();
        assert_eq!(listed, expected, "list {filter:?}");
    }
    // The filters that split the stream really split it.
    assert_eq!(
        seqs_where(&all, |e| e.timestamp().expect("t") >= mid).len(),
        2
    );
    assert_eq!(seqs_where(&all, |e| e.project == "web").len(), 3);

    // list: a header, then one row per entry with its fields.
    let (header, rows) = list(&home.name, &[]).await;
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "SEQ", "TIME", "ACTION", "APIKEY", "PROJECT", "OWNER", "KEY", "ID", "REASON"
        ],
        "{header}"
    );
    assert_eq!(rows.len(), all.len(), "one row per entry");
    for (row, e) in rows.iter().zip(&all) {
        let time = e.timestamp().expect("time");
        let shown: Timestamp = row[1].parse().expect("an RFC 3339 time");
        assert!(
            (time.duration_since(shown)).abs() < SignedDuration::from_millis(1),
            "{row:?} vs {}",
            e.time
        );
        let expected: Vec<String> = vec![
            e.seq.to_string(),
            row[1].clone(),
            e.action.as_str().to_string(),
            format!("{}/{}", e.namespace, e.name),
            e.project.clone(),
            e.owner.clone(),
            e.key_id.clone().unwrap_or_else(|| "-".to_string()),
            e.reason.clone(),
        ];
        assert_eq!(row, &expected, "row for entry {}", e.seq);
    }
    home.delete().await;
    other.delete().await;
}
