//! Expiry: at `expiresAt` (within a second) the Secret is deleted and the
//! ApiKey shows Expired; an expiry already past mints nothing; moving
//! `expiresAt` reschedules; a key about to expire says so once.
//!
//! Timing is measured with watches and the local clock: the API server runs
//! on this machine, so the instant a watch reports a Secret's deletion is
//! comparable with `expiresAt`.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use keymint::apikey::{ApiKey, Phase};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::watch_from_here;
use crate::support::{TestNamespace, events_for, eventually, wait_for_phase};

/// `expiresAt` as a user would write it, with a fraction of a second, so
/// that "within a second" is measured against the exact instant.
fn rfc3339_millis(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// An instant `after` from now, at millisecond precision (what
/// [`rfc3339_millis`] writes), with a non-zero fraction.
fn instant_in(after: SignedDuration) -> Timestamp {
    let t = (Timestamp::now() + after)
        .round(jiff::Unit::Millisecond)
        .expect("round");
    if t.subsec_millisecond() == 0 {
        t + SignedDuration::from_millis(137)
    } else {
        t
    }
}

/// Creates an ApiKey from JSON, so that `expiresAt` keeps its fraction of a
/// second (the typed `Time` serializes whole seconds only).
async fn create_api_key(
    ns: &TestNamespace,
    name: &str,
    owner: &str,
    expires_at: Option<Timestamp>,
) {
    let mut spec = json!({"project": "expiry", "owner": owner});
    if let Some(t) = expires_at {
        spec["expiresAt"] = json!(rfc3339_millis(t));
    }
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keymint.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("ApiKey JSON");
    let api: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::erase::<ApiKey>(&()),
    );
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create ApiKey {name}: {e}"));
}

/// Moves `spec.expiresAt` the way a user would (a merge patch of the spec).
async fn set_expires_at(api: &Api<ApiKey>, name: &str, t: Timestamp) {
    let patch = json!({"spec": {"expiresAt": rfc3339_millis(t)}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch expiresAt of {name}: {e}"));
}

/// What a watch saw, with the local time it arrived.
#[derive(Clone, Debug)]
enum Change<K> {
    Applied(K),
    Deleted(K),
}

struct Seen<K> {
    at: Timestamp,
    change: Change<K>,
}

/// Every change a watch reports for the kind `K` in one namespace, recorded
/// for the whole test.
struct Recording<K> {
    seen: Arc<Mutex<Vec<Seen<K>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Recording<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    /// Starts watching; returns once the initial list is done, so nothing
    /// that happens afterwards is missed.
    async fn start(api: Api<K>) -> Recording<K> {
        let seen: Arc<Mutex<Vec<Seen<K>>>> = Arc::default();
        let sink = seen.clone();
        let task = watch_from_here(api, watcher::Config::default(), move |event| {
            let at = Timestamp::now();
            let change = match event {
                watcher::Event::Apply(k) | watcher::Event::InitApply(k) => Change::Applied(k),
                watcher::Event::Delete(k) => Change::Deleted(k),
                watcher::Event::Init | watcher::Event::InitDone => return,
            };
            sink.lock().expect("lock").push(Seen { at, change });
        })
        .await;
        Recording { seen, task }
    }

    /// When the object `name` was reported deleted (the first time).
    fn deleted_at(&self, name: &str) -> Option<Timestamp> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .find_map(|s| match &s.change {
                Change::Deleted(k) if k.meta().name.as_deref() == Some(name) => Some(s.at),
                _ => None,
            })
    }

    /// Whether the watch ever reported an object named `name`.
    fn ever_saw(&self, name: &str) -> bool {
        self.seen.lock().expect("lock").iter().any(|s| {
            let (Change::Applied(k) | Change::Deleted(k)) = &s.change;
            k.meta().name.as_deref() == Some(name)
        })
    }

    /// Every version of `name` the watch reported, in order.
    fn versions(&self, name: &str) -> Vec<K> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|s| match &s.change {
                Change::Applied(k) | Change::Deleted(k)
                    if k.meta().name.as_deref() == Some(name) =>
                {
                    Some(k.clone())
                }
                _ => None,
            })
            .collect()
    }
}

impl<K> Drop for Recording<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The phases an ApiKey went through, in order, without repeats.
fn phase_history(recording: &Recording<ApiKey>, name: &str) -> Vec<Phase> {
    let mut phases: Vec<Phase> = Vec::new();
    for key in recording.versions(name) {
        if let Some(phase) = key.status.and_then(|s| s.phase)
            && phases.last() != Some(&phase)
        {
            phases.push(phase);
        }
    }
    phases
}

/// The phases the recording saw, once it has seen `last` (a GET can see a
/// version before the recording's watch delivers it), or after 5 s.
async fn phase_history_through(
    recording: &Recording<ApiKey>,
    name: &str,
    last: Phase,
) -> Vec<Phase> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let history = phase_history(recording, name);
        if history.last() == Some(&last) || std::time::Instant::now() > deadline {
            return history;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the operator and waits until it has minted a key without an
/// expiry: after that, what the test measures is expiry, not start-up.
async fn start_operator_and_wait_until_it_mints(ns: &TestNamespace, extra: &[&str]) -> Operator {
    let operator = Operator::start(&ns.name, extra);
    create_api_key(ns, "steady", "steady@example.com", None).await;
    wait_for_phase(&ns.api(), "steady", Phase::Active, Duration::from_secs(30)).await;
    operator
}

/// How long after `expires_at` the Secret was deleted; panics if it never
/// was.
fn deletion_lag(secrets: &Recording<Secret>, name: &str, expires_at: Timestamp) -> SignedDuration {
    let deleted = secrets
        .deleted_at(name)
        .unwrap_or_else(|| panic!("the watch saw no deletion of Secret {name}"));
    deleted.duration_since(expires_at)
}

/// The Events about `name` with `reason`, as full objects (to see their
/// type and whether a repeat was folded into a series).
async fn event_objects(ns: &TestNamespace, name: &str, reason: &str) -> Vec<K8sEvent> {
    ns.api::<K8sEvent>()
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

async fn wait_for_event(ns: &TestNamespace, name: &str, reason: &str) {
    let timeout = Duration::from_secs(10);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let events = events_for(&ns.client, &ns.name, name).await;
        if events.iter().any(|(r, _)| r == reason) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: no {reason} Event within {timeout:?}; Events: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_secret_is_deleted_within_a_second_of_expires_at() {
    const KEYS: usize = 5;
    let ns = TestNamespace::new("expiry-on-time").await;
    let api: Api<ApiKey> = ns.api();
    let secrets = Recording::start(ns.api::<Secret>()).await;
    let api_keys = Recording::start(ns.api::<ApiKey>()).await;
    let _operator = start_operator_and_wait_until_it_mints(&ns, &[]).await;

    // Spread over ~2 s so that they expire one at a time, each at its own
    // fraction of a second.
    let mut expiries = Vec::new();
    for i in 0..KEYS {
        let name = format!("key-{i}");
        let expires_at = instant_in(
            SignedDuration::from_secs(4) + SignedDuration::from_millis(450 * i as i64 + 61),
        );
        create_api_key(&ns, &name, "alice@example.com", Some(expires_at)).await;
        expiries.push((name, expires_at));
    }
    for (name, expires_at) in &expiries {
        let until = expires_at.duration_since(Timestamp::now()) + SignedDuration::from_secs(10);
        wait_for_phase(
            &api,
            name,
            Phase::Expired,
            Duration::try_from(until).expect("positive"),
        )
        .await;
    }

    let mut table = String::new();
    let mut lags = Vec::new();
    for (name, expires_at) in &expiries {
        let history = phase_history_through(&api_keys, name, Phase::Expired).await;
        assert!(
            history.ends_with(&[Phase::Active, Phase::Expired]),
            "{name}: was Active, then Expired; phases seen: {history:?}"
        );
        let lag = deletion_lag(&secrets, name, *expires_at);
        writeln!(
            table,
            "{name}: expiresAt {expires_at}, Secret deleted {lag:#} later"
        )
        .ok();
        lags.push(lag);
    }
    let earliest = lags.iter().min().expect("lags");
    let latest = lags.iter().max().expect("lags");
    assert!(
        *earliest >= SignedDuration::ZERO,
        "a Secret was deleted before its expiresAt:\n{table}"
    );
    assert!(
        *latest < SignedDuration::from_secs(1),
        "a Secret outlived its expiresAt by a second or more:\n{table}"
    );
    eprintln!("expiry lags:\n{table}");

    for (name, _) in &expiries {
        let key = api.get(name).await.expect("get ApiKey");
        let status = key.status.expect("status");
        let ready = &status.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "False", "Expired"),
            "{name}: {ready:?}"
        );
        assert!(
            status.key_id.is_some() && status.key_hash.is_some(),
            "{name}: the expired key is still identified: {status:?}"
        );
        assert!(
            ns.api::<Secret>()
                .get_opt(name)
                .await
                .expect("get")
                .is_none(),
            "{name}: the Secret is gone for good"
        );
        wait_for_event(&ns, name, "Expired").await;
    }
    // The key without an expiry is untouched.
    wait_for_phase(&api, "steady", Phase::Active, Duration::from_secs(1)).await;
    assert!(
        ns.api::<Secret>()
            .get_opt("steady")
            .await
            .expect("get")
            .is_some(),
        "the Secret of the key without an expiry stays"
    );
    ns.delete().await;
}

#[tokio::test]
async fn an_expiry_already_past_mints_nothing() {
    let ns = TestNamespace::new("expiry-past").await;
    let api: Api<ApiKey> = ns.api();
    let secrets = Recording::start(ns.api::<Secret>()).await;
    let _operator = start_operator_and_wait_until_it_mints(&ns, &[]).await;

    let expires_at = instant_in(SignedDuration::from_secs(-90));
    create_api_key(&ns, "too-late", "alice@example.com", Some(expires_at)).await;
    let key = wait_for_phase(&api, "too-late", Phase::Expired, Duration::from_secs(20)).await;
    // Give the operator time to do anything it still might (a re-verify
    // would come within 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert!(
        !secrets.ever_saw("too-late"),
        "a Secret was created for a key that expired before it was created"
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("too-late")
            .await
            .expect("get")
            .is_none(),
        "no Secret"
    );
    let status = key.status.expect("status");
    assert_eq!(status.key_hash, None, "nothing minted: {status:?}");
    assert_eq!(status.key_id, None, "nothing minted: {status:?}");
    assert_eq!(status.minted_at, None, "nothing minted: {status:?}");
    assert_eq!(
        (
            status.conditions[0].status.as_str(),
            status.conditions[0].reason.as_str()
        ),
        ("False", "Expired"),
        "{:?}",
        status.conditions
    );
    let key = api.get("too-late").await.expect("get");
    assert_eq!(
        key.status.and_then(|s| s.phase),
        Some(Phase::Expired),
        "Expired is final"
    );
    wait_for_event(&ns, "too-late", "Expired").await;
    let events = events_for(&ns.client, &ns.name, "too-late").await;
    assert!(
        !events.iter().any(|(reason, _)| reason == "Minted"),
        "{events:?}"
    );
    // What the Event says must be true: no Secret existed, none was deleted.
    for (reason, note) in &events {
        assert!(
            !note.contains("Secret too-late deleted"),
            "the {reason} Event claims a Secret was deleted, but none was ever created: {note:?}"
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn changing_expires_at_reschedules() {
    let ns = TestNamespace::new("expiry-moved").await;
    let api: Api<ApiKey> = ns.api();
    let secrets = Recording::start(ns.api::<Secret>()).await;
    let api_keys = Recording::start(ns.api::<ApiKey>()).await;
    let _operator = start_operator_and_wait_until_it_mints(&ns, &[]).await;

    // "postponed" expires in 3 s, then is moved 6 s later; "brought-forward"
    // expires in a year, then is moved to 2 s from then.
    let first_expiry = instant_in(SignedDuration::from_secs(3));
    create_api_key(&ns, "postponed", "alice@example.com", Some(first_expiry)).await;
    let far = instant_in(SignedDuration::from_hours(24 * 365));
    create_api_key(&ns, "brought-forward", "alice@example.com", Some(far)).await;
    wait_for_phase(&api, "postponed", Phase::Active, Duration::from_secs(3)).await;
    wait_for_phase(
        &api,
        "brought-forward",
        Phase::Active,
        Duration::from_secs(10),
    )
    .await;

    let postponed_to = first_expiry + SignedDuration::from_secs(6);
    assert!(
        Timestamp::now() + SignedDuration::from_millis(500) < first_expiry,
        "the key became Active too late to move its expiry before it"
    );
    set_expires_at(&api, "postponed", postponed_to).await;
    let brought_forward_to = instant_in(SignedDuration::from_secs(2));
    set_expires_at(&api, "brought-forward", brought_forward_to).await;

    // Past the old instant (and the 1 s allowance), the postponed key lives.
    let check_at = first_expiry + SignedDuration::from_millis(1500);
    let wait = check_at.duration_since(Timestamp::now());
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    let key = api.get("postponed").await.expect("get");
    assert_eq!(
        key.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Active),
        "still Active after its old expiresAt: {:?}",
        key.status
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("postponed")
            .await
            .expect("get")
            .is_some(),
        "the Secret lives past the old expiresAt"
    );
    assert_eq!(secrets.deleted_at("postponed"), None);

    for (name, expires_at) in [
        ("brought-forward", brought_forward_to),
        ("postponed", postponed_to),
    ] {
        let until = expires_at.duration_since(Timestamp::now()) + SignedDuration::from_secs(10);
        wait_for_phase(
            &api,
            name,
            Phase::Expired,
            Duration::try_from(until).expect("positive"),
        )
        .await;
        let lag = deletion_lag(&secrets, name, expires_at);
        assert!(
            lag >= SignedDuration::ZERO && lag < SignedDuration::from_secs(1),
            "{name}: Secret deleted {lag:#} after the new expiresAt {expires_at}"
        );
        let history = phase_history_through(&api_keys, name, Phase::Expired).await;
        assert!(
            history.ends_with(&[Phase::Active, Phase::Expired]) && history.len() <= 3,
            "{name}: Active, then Expired; phases seen: {history:?}"
        );
        wait_for_event(&ns, name, "Expired").await;
        assert_eq!(
            event_objects(&ns, name, "Expired").await.len(),
            1,
            "{name}: one Expired Event"
        );
    }
    ns.delete().await;
}

/// How many times the operator logged finishing a reconcile of `name`.
fn reconciles_of(operator: &Operator, ns: &TestNamespace, name: &str) -> usize {
    let needle = format!("/{name}.{}", ns.name);
    operator
        .log()
        .lines()
        .filter(|l| l.contains("reconciled") && l.contains(&needle))
        .count()
}

/// The ApiKey's ExpiringSoon condition, if it has one.
fn expiring_soon(
    key: &ApiKey,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    key.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "ExpiringSoon")
        .cloned()
}

async fn assert_one_expiring_soon_event(ns: &TestNamespace, when: &str) {
    let events = event_objects(ns, "soon", "ExpiringSoon").await;
    assert_eq!(
        events.len(),
        1,
        "{when}: exactly one ExpiringSoon Event for the key expiring in 30 min: {events:#?}"
    );
    let event = &events[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"), "{event:?}");
    assert!(
        event.series.is_none() && event.deprecated_count.unwrap_or(1) <= 1,
        "{when}: the ExpiringSoon Event was repeated: {event:?}"
    );
    for name in ["later", "never"] {
        let events = event_objects(ns, name, "ExpiringSoon").await;
        assert!(events.is_empty(), "{when}: {name}: {events:?}");
    }
}

#[tokio::test]
async fn a_key_inside_the_warning_window_is_expiring_soon_once() {
    let ns = TestNamespace::new("expiring-soon").await;
    let api: Api<ApiKey> = ns.api();
    let flags = ["--expiry-warning", "1h"];
    let mut operator = Operator::start(&ns.name, &flags);
    create_api_key(
        &ns,
        "soon",
        "alice@example.com",
        Some(instant_in(SignedDuration::from_mins(30))),
    )
    .await;
    create_api_key(
        &ns,
        "later",
        "alice@example.com",
        Some(instant_in(SignedDuration::from_hours(2))),
    )
    .await;
    create_api_key(&ns, "never", "alice@example.com", None).await;
    for name in ["soon", "later", "never"] {
        wait_for_phase(&api, name, Phase::Active, Duration::from_secs(30)).await;
    }

    let soon = api.get("soon").await.expect("get");
    let condition = expiring_soon(&soon).expect("soon: an ExpiringSoon condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "ExpiresSoon"),
        "{condition:?}"
    );
    let later = api.get("later").await.expect("get");
    let later_condition = expiring_soon(&later).expect("later: an ExpiringSoon condition");
    assert_eq!(later_condition.status, "False", "{later_condition:?}");
    let never = api.get("never").await.expect("get");
    assert_eq!(
        expiring_soon(&never),
        None,
        "a key without an expiry has no ExpiringSoon condition"
    );
    wait_for_event(&ns, "soon", "ExpiringSoon").await;

    // Several periodic re-verifications (every 2 s) change nothing.
    eventually(Duration::from_secs(20), || async {
        reconciles_of(&operator, &ns, "soon") >= 4
    })
    .await;
    assert_one_expiring_soon_event(&ns, "after re-verification").await;

    // A restart (a fresh operator with a fresh Event recorder) relists the
    // key: it is still expiring soon, and that was already said.
    operator.kill();
    let operator = Operator::start(&ns.name, &flags);
    eventually(Duration::from_secs(20), || async {
        reconciles_of(&operator, &ns, "soon") >= 3
    })
    .await;
    assert_one_expiring_soon_event(&ns, "after a restart").await;
    let soon = api.get("soon").await.expect("get");
    assert_eq!(
        expiring_soon(&soon)
            .expect("condition")
            .last_transition_time,
        condition.last_transition_time,
        "the condition did not flap"
    );
    let later = api.get("later").await.expect("get");
    assert_eq!(expiring_soon(&later).expect("condition").status, "False");
    ns.delete().await;
}
