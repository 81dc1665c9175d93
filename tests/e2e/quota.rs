//! Quota: at no instant do more than `--max-keys-per-owner` non-expired
//! minted keys exist for one (project, owner) pair — under concurrent
//! creates and operator restarts. Keys over quota are Rejected with a reason
//! that names the limit; when a slot frees (deletion or expiry) the oldest
//! waiting key (creation time, then name) is admitted.
//!
//! Every test runs a [`Sampler`] that watches ApiKeys and Secrets (every
//! watch event is one exact sample of the cluster's state) and also polls
//! both, and checks that no sample ever shows more minted keys for a pair
//! than the limit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keymint::apikey::{ApiKey, Phase};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::task::JoinHandle;

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, eventually, wait_for_phase};

const PROJECT: &str = "payments";
const OWNER: &str = "alice@example.com";

/// (project, owner)
type Pair = (String, String);

fn pair(project: &str, owner: &str) -> Pair {
    (project.to_string(), owner.to_string())
}

fn phase_of(key: &ApiKey) -> Option<Phase> {
    key.status.as_ref().and_then(|s| s.phase)
}

/// The Ready condition's message: where the reason for a rejection is shown.
fn ready_message(key: &ApiKey) -> String {
    key.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

fn created(key: &ApiKey) -> Timestamp {
    key.metadata
        .creation_timestamp
        .as_ref()
        .expect("creationTimestamp")
        .0
}

/// `1st`, `2nd`, `3rd`, `4th`, ..., `11th`, ..., `21st`, ...
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A key that counts against its pair's quota as a user sees it: it has a
/// minted key (status.keyHash), it is not expired (by phase or by its
/// expiresAt) and it is not being deleted.
fn counts_as_minted(key: &ApiKey, now: Timestamp) -> bool {
    let status = key.status.as_ref();
    status.and_then(|s| s.key_hash.as_ref()).is_some()
        && status.and_then(|s| s.phase) != Some(Phase::Expired)
        && key.spec.expires_at.as_ref().is_none_or(|t| t.0 > now)
        && key.metadata.deletion_timestamp.is_none()
}

/// Names of minted (counting) ApiKeys, per pair.
fn minted_keys<'a>(
    keys: impl IntoIterator<Item = &'a ApiKey>,
    now: Timestamp,
) -> BTreeMap<Pair, Vec<String>> {
    let mut out: BTreeMap<Pair, Vec<String>> = BTreeMap::new();
    for key in keys.into_iter().filter(|k| counts_as_minted(k, now)) {
        out.entry(pair(&key.spec.project, &key.spec.owner))
            .or_default()
            .push(key.name_any());
    }
    out
}

/// Names of ApiKeys whose status says Active, per pair (informational: the
/// status of an expiring key may lag its Secret's deletion a little).
fn active_phase_keys<'a>(keys: impl IntoIterator<Item = &'a ApiKey>) -> BTreeMap<Pair, usize> {
    let mut out: BTreeMap<Pair, usize> = BTreeMap::new();
    for key in keys
        .into_iter()
        .filter(|k| phase_of(k) == Some(Phase::Active))
    {
        *out.entry(pair(&key.spec.project, &key.spec.owner))
            .or_default() += 1;
    }
    out
}

/// Names of keymint's Secrets (the key material itself), per pair, from
/// the Secret's own `project` and `owner` data.
fn minted_secrets<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
) -> BTreeMap<Pair, Vec<String>> {
    let text = |s: &Secret, field: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(field))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let mut out: BTreeMap<Pair, Vec<String>> = BTreeMap::new();
    for secret in secrets.into_iter().filter(|s| {
        s.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some("keymint")
    }) {
        out.entry((text(secret, "project"), text(secret, "owner")))
            .or_default()
            .push(secret.name_any());
    }
    out
}

/// The highest counts seen, per pair, and where they were seen.
#[derive(Clone, Debug, Default)]
struct Observations {
    /// Samples from watch events (each one an exact state of the cluster).
    watch_samples: usize,
    /// Samples from polling lists.
    poll_samples: usize,
    max_keys: BTreeMap<Pair, (usize, Vec<String>)>,
    max_secrets: BTreeMap<Pair, (usize, Vec<String>)>,
    max_active_phase: BTreeMap<Pair, usize>,
}

impl Observations {
    fn record(
        maxima: &mut BTreeMap<Pair, (usize, Vec<String>)>,
        counts: BTreeMap<Pair, Vec<String>>,
    ) {
        for (pair, mut names) in counts {
            let entry = maxima.entry(pair).or_default();
            if names.len() > entry.0 {
                names.sort();
                *entry = (names.len(), names);
            }
        }
    }

    fn keys(&mut self, keys: &[Arc<ApiKey>]) {
        let now = Timestamp::now();
        Self::record(
            &mut self.max_keys,
            minted_keys(keys.iter().map(|k| &**k), now),
        );
        for (pair, n) in active_phase_keys(keys.iter().map(|k| &**k)) {
            let max = self.max_active_phase.entry(pair).or_default();
            *max = (*max).max(n);
        }
    }

    fn secrets(&mut self, secrets: &[Arc<Secret>]) {
        Self::record(
            &mut self.max_secrets,
            minted_secrets(secrets.iter().map(|s| &**s)),
        );
    }

    fn max_for(&self, pair: &Pair) -> (usize, usize) {
        (
            self.max_keys.get(pair).map_or(0, |m| m.0),
            self.max_secrets.get(pair).map_or(0, |m| m.0),
        )
    }

    /// Asserts that no sample showed more than `limit` minted keys for any
    /// pair, and that sampling really happened.
    fn assert_never_over(&self, limit: usize, min_watch: usize, min_poll: usize) {
        for (what, maxima) in [
            ("minted ApiKeys", &self.max_keys),
            ("keymint Secrets", &self.max_secrets),
        ] {
            for (pair, (n, names)) in maxima {
                assert!(
                    *n <= limit,
                    "{n} {what} for {pair:?} at once (limit {limit}): {names:?}"
                );
            }
        }
        assert!(
            self.watch_samples >= min_watch && self.poll_samples >= min_poll,
            "too few samples to mean anything: {} from watches, {} from polls",
            self.watch_samples,
            self.poll_samples
        );
        eprintln!(
            "sampler: {} watch samples, {} poll samples; max minted ApiKeys {:?}, max Secrets {:?}, max phase Active {:?}",
            self.watch_samples,
            self.poll_samples,
            self.max_keys
                .iter()
                .map(|(p, m)| (p, m.0))
                .collect::<Vec<_>>(),
            self.max_secrets
                .iter()
                .map(|(p, m)| (p, m.0))
                .collect::<Vec<_>>(),
            self.max_active_phase
        );
    }
}

/// Samples the namespace's ApiKeys and Secrets continuously: a watch on
/// each (every event is one sample of an exact cluster state) and a poller
/// that lists both every few milliseconds.
struct Sampler {
    observations: Arc<Mutex<Observations>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling; returns once both watches have their initial list.
    async fn start(ns: &TestNamespace) -> Sampler {
        let observations: Arc<Mutex<Observations>> = Arc::default();
        let keys_synced = Arc::new(AtomicBool::new(false));
        let secrets_synced = Arc::new(AtomicBool::new(false));
        let tasks = vec![
            Self::watch(
                ns.api::<ApiKey>(),
                keys_synced.clone(),
                observations.clone(),
                |o, state| o.keys(state),
            ),
            Self::watch(
                ns.api::<Secret>(),
                secrets_synced.clone(),
                observations.clone(),
                |o, state| o.secrets(state),
            ),
            Self::poll(ns.api(), ns.api(), observations.clone()),
        ];
        eventually(Duration::from_secs(20), || async {
            keys_synced.load(Ordering::SeqCst) && secrets_synced.load(Ordering::SeqCst)
        })
        .await;
        Sampler {
            observations,
            tasks,
        }
    }

    fn watch<K>(
        api: Api<K>,
        synced: Arc<AtomicBool>,
        observations: Arc<Mutex<Observations>>,
        record: fn(&mut Observations, &[Arc<K>]),
    ) -> JoinHandle<()>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        tokio::spawn(async move {
            let (reader, writer) = reflector::store::<K>();
            let mut stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                let changed = match event {
                    Ok(watcher::Event::InitDone) => {
                        synced.store(true, Ordering::SeqCst);
                        true
                    }
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => true,
                    _ => false,
                };
                if changed && synced.load(Ordering::SeqCst) {
                    let state = reader.state();
                    let mut o = observations.lock().expect("lock");
                    o.watch_samples += 1;
                    record(&mut o, &state);
                }
            }
        })
    }

    fn poll(
        keys: Api<ApiKey>,
        secrets: Api<Secret>,
        observations: Arc<Mutex<Observations>>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let (Ok(k), Ok(s)) = (
                    keys.list(&ListParams::default()).await,
                    secrets.list(&ListParams::default()).await,
                ) {
                    let k: Vec<Arc<ApiKey>> = k.items.into_iter().map(Arc::new).collect();
                    let s: Vec<Arc<Secret>> = s.items.into_iter().map(Arc::new).collect();
                    let mut o = observations.lock().expect("lock");
                    o.poll_samples += 1;
                    o.keys(&k);
                    o.secrets(&s);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    }

    fn snapshot(&self) -> Observations {
        self.observations.lock().expect("lock").clone()
    }

    fn stop(mut self) -> Observations {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.snapshot()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Every ApiKey in the namespace by name.
async fn all_keys(api: &Api<ApiKey>) -> BTreeMap<String, ApiKey> {
    api.list(&ListParams::default())
        .await
        .expect("list ApiKeys")
        .items
        .into_iter()
        .map(|k| (k.name_any(), k))
        .collect()
}

fn names_in(keys: &BTreeMap<String, ApiKey>, phase: Phase) -> BTreeSet<String> {
    keys.values()
        .filter(|k| phase_of(k) == Some(phase))
        .map(|k| k.name_any())
        .collect()
}

/// Waits until the ApiKeys named in `active` are Active and those in
/// `rejected` are Rejected (and nothing else is either).
async fn wait_for_split(
    api: &Api<ApiKey>,
    active: &BTreeSet<String>,
    rejected: &BTreeSet<String>,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let keys = all_keys(api).await;
        let now_active = names_in(&keys, Phase::Active);
        let now_rejected = names_in(&keys, Phase::Rejected);
        if &now_active == active && &now_rejected == rejected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected Active {active:?} and Rejected {rejected:?}; got Active {now_active:?}, Rejected {now_rejected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every Active key of the namespace has its Secret (owned by it); no other
/// ApiKey of `pair` has one, and no Rejected key ever got a key hash.
async fn assert_secrets_match_active_keys(ns: &TestNamespace, pair: &Pair) {
    let keys = all_keys(&ns.api()).await;
    let secrets = ns
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items;
    let by_pair = minted_secrets(&secrets);
    let secret_names: BTreeSet<String> = by_pair
        .get(pair)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let active: BTreeSet<String> = keys
        .values()
        .filter(|k| pair == &(k.spec.project.clone(), k.spec.owner.clone()))
        .filter(|k| phase_of(k) == Some(Phase::Active))
        .map(|k| k.name_any())
        .collect();
    assert_eq!(
        secret_names, active,
        "one Secret per Active key of {pair:?}"
    );
    for secret in &secrets {
        if let Some(owner) = secret.owner_references().first() {
            let key = keys.get(&owner.name).expect("the owner exists");
            assert_eq!(key.uid().as_deref(), Some(owner.uid.as_str()));
        }
    }
    for key in keys.values() {
        if phase_of(key) == Some(Phase::Rejected) {
            assert_eq!(
                key.status.as_ref().and_then(|s| s.key_hash.as_deref()),
                None,
                "{}: a Rejected key has nothing minted",
                key.name_any()
            );
        }
    }
}

/// Events of the namespace, as reason list per ApiKey name.
async fn events_by_key(ns: &TestNamespace) -> BTreeMap<String, Vec<(String, String)>> {
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for e in events
        .list(&ListParams::default())
        .await
        .expect("list Events")
        .items
    {
        if let Some(name) = e.regarding.as_ref().and_then(|r| r.name.clone()) {
            out.entry(name)
                .or_default()
                .push((e.reason.unwrap_or_default(), e.note.unwrap_or_default()));
        }
    }
    out
}

async fn delete_and_wait_gone(api: &Api<ApiKey>, name: &str) {
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    eventually(Duration::from_secs(20), || async {
        api.get_opt(name).await.expect("get").is_none()
    })
    .await;
}

async fn create(api: &Api<ApiKey>, name: &str, project: &str, owner: &str) -> ApiKey {
    api.create(&PostParams::default(), &api_key(name, project, owner))
        .await
        .expect("create ApiKey")
}

#[tokio::test]
async fn concurrent_creates_admit_exactly_the_limit() {
    const KEYS: usize = 100;
    const LIMIT: usize = 25; // the default: the operator gets no quota flag
    let ns = TestNamespace::new("quota-burst").await;
    let api: Api<ApiKey> = ns.api();
    let sampler = Sampler::start(&ns).await;
    let _operator = Operator::start(&ns.name, &[]);

    let creates = (0..KEYS).map(|i| {
        let api = api.clone();
        async move {
            api.create(
                &PostParams::default(),
                &api_key(&format!("key-{i:03}"), PROJECT, OWNER),
            )
            .await
        }
    });
    for result in futures::future::join_all(creates).await {
        result.expect("create ApiKey");
    }

    // Exactly the limit is admitted, the rest wait, and every waiting key
    // says which limit holds it back.
    let limit_text = format!("{OWNER} has {LIMIT} of {LIMIT} keys in project {PROJECT}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let keys = all_keys(&api).await;
        let active = names_in(&keys, Phase::Active).len();
        let rejected: Vec<&ApiKey> = keys
            .values()
            .filter(|k| phase_of(k) == Some(Phase::Rejected))
            .collect();
        let explained = rejected
            .iter()
            .all(|k| ready_message(k).contains(&limit_text));
        if active == LIMIT && rejected.len() == KEYS - LIMIT && explained {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{active} Active, {} Rejected; e.g. {:?}",
            rejected.len(),
            rejected.first().map(|k| ready_message(k))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Each rejection reads like the contract: reason QuotaExceeded, the
    // owner, the project and the limit; its place in line follows creation
    // time, then name.
    let keys = all_keys(&api).await;
    let mut waiting: Vec<&ApiKey> = keys
        .values()
        .filter(|k| phase_of(k) == Some(Phase::Rejected))
        .collect();
    waiting.sort_by_key(|k| (created(k), k.name_any()));
    for key in &waiting {
        let status = key.status.as_ref().expect("status");
        let ready = &status.conditions[0];
        assert_eq!(ready.type_, "Ready", "{}: Ready first", key.name_any());
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "QuotaExceeded");
        assert!(
            ready.message.contains(&limit_text),
            "{}: {}",
            key.name_any(),
            ready.message
        );
        assert_eq!(status.key_hash, None);
    }
    eventually(Duration::from_secs(20), || async {
        let keys = all_keys(&api).await;
        waiting.iter().enumerate().all(|(i, k)| {
            let line = format!("{} in line for a slot", ordinal(i + 1));
            keys.get(&k.name_any())
                .is_some_and(|now| ready_message(now).contains(&line))
        })
    })
    .await;

    // Users see it in Events too: one Minted per admitted key, a Rejected
    // (naming the limit) per waiting one.
    eventually(Duration::from_secs(20), || async {
        let events = events_by_key(&ns).await;
        keys.values().all(|k| {
            let mine = events.get(&k.name_any()).cloned().unwrap_or_default();
            match phase_of(k) {
                Some(Phase::Active) => mine.iter().any(|(r, _)| r == "Minted"),
                _ => mine
                    .iter()
                    .any(|(r, note)| r == "Rejected" && note.contains(&format!("of {LIMIT} keys"))),
            }
        })
    })
    .await;
    let events = events_by_key(&ns).await;
    let minted_events = events
        .values()
        .flatten()
        .filter(|(r, _)| r == "Minted")
        .count();
    assert_eq!(minted_events, LIMIT, "one Minted Event per admitted key");

    // Nothing changes afterwards (periodic re-verification runs every 2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = all_keys(&api).await;
    assert_eq!(
        names_in(&later, Phase::Active),
        names_in(&keys, Phase::Active)
    );
    assert_eq!(names_in(&later, Phase::Rejected).len(), KEYS - LIMIT);
    assert_secrets_match_active_keys(&ns, &pair(PROJECT, OWNER)).await;

    let seen = sampler.stop();
    seen.assert_never_over(LIMIT, 200, 20);
    assert_eq!(
        seen.max_for(&pair(PROJECT, OWNER)),
        (LIMIT, LIMIT),
        "the sampler saw the quota fill"
    );
    ns.delete().await;
}

#[tokio::test]
async fn deleting_an_active_key_admits_exactly_the_oldest_waiting_one() {
    const LIMIT: usize = 3;
    let ns = TestNamespace::new("quota-fifo").await;
    let api: Api<ApiKey> = ns.api();
    let sampler = Sampler::start(&ns).await;
    let _operator = Operator::start(&ns.name, &["--max-keys-per-owner", "3"]);

    for name in ["active-1", "active-2", "active-3"] {
        create(&api, name, PROJECT, OWNER).await;
        wait_for_phase(&api, name, Phase::Active, Duration::from_secs(20)).await;
    }

    // Waiting keys whose order by creation time disagrees with their order
    // by name, and by creation order within one second:
    //   wait-y, wait-x  created in the same second (y first): x goes first;
    //   wait-a          >1 s later: after both, despite its name;
    //   wait-0          >1 s later again: last, despite its name.
    let mut attempt = 0;
    let (y, x) = loop {
        attempt += 1;
        // Start just after a second boundary so both creates land in it.
        let into_second = Timestamp::now().subsec_nanosecond();
        let to_boundary = 1_000_000_000 - i64::from(into_second);
        tokio::time::sleep(Duration::from_nanos(
            u64::try_from(to_boundary).expect("positive"),
        ))
        .await;
        let y = create(&api, "wait-y", PROJECT, OWNER).await;
        let x = create(&api, "wait-x", PROJECT, OWNER).await;
        if created(&y) == created(&x) {
            break (y, x);
        }
        assert!(attempt < 5, "could not create two keys within one second");
        delete_and_wait_gone(&api, "wait-y").await;
        delete_and_wait_gone(&api, "wait-x").await;
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a = create(&api, "wait-a", PROJECT, OWNER).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let zero = create(&api, "wait-0", PROJECT, OWNER).await;
    assert!(created(&x) < created(&a) && created(&a) < created(&zero));
    assert_eq!(created(&x), created(&y));

    let set =
        |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    wait_for_split(
        &api,
        &set(&["active-1", "active-2", "active-3"]),
        &set(&["wait-y", "wait-x", "wait-a", "wait-0"]),
        Duration::from_secs(20),
    )
    .await;
    // The status tells each one its place in line.
    eventually(Duration::from_secs(15), || async {
        let keys = all_keys(&api).await;
        [
            ("wait-x", "1st"),
            ("wait-y", "2nd"),
            ("wait-a", "3rd"),
            ("wait-0", "4th"),
        ]
        .iter()
        .all(|(name, place)| {
            keys.get(*name).is_some_and(|k| {
                let msg = ready_message(k);
                msg.contains(&format!("{place} in line"))
                    && msg.contains(&format!("{OWNER} has 3 of 3 keys in project {PROJECT}"))
            })
        })
    })
    .await;

    // Each freed slot goes to exactly one key: the oldest waiting one.
    let rounds: [(&str, &str, &[&str], &[&str]); 3] = [
        (
            "active-2",
            "wait-x",
            &["active-1", "active-3", "wait-x"],
            &["wait-y", "wait-a", "wait-0"],
        ),
        (
            "active-1",
            "wait-y",
            &["active-3", "wait-x", "wait-y"],
            &["wait-a", "wait-0"],
        ),
        (
            "wait-x",
            "wait-a",
            &["active-3", "wait-y", "wait-a"],
            &["wait-0"],
        ),
    ];
    for (deleted, admitted, active, rejected) in rounds {
        delete_and_wait_gone(&api, deleted).await;
        wait_for_phase(&api, admitted, Phase::Active, Duration::from_secs(20)).await;
        wait_for_split(&api, &set(active), &set(rejected), Duration::from_secs(5)).await;
        // ... and stays that way while every waiting key is re-checked.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        wait_for_split(&api, &set(active), &set(rejected), Duration::ZERO).await;
        eventually(Duration::from_secs(10), || async {
            events_by_key(&ns)
                .await
                .get(admitted)
                .is_some_and(|e| e.iter().any(|(r, _)| r == "Minted"))
        })
        .await;
    }
    assert_secrets_match_active_keys(&ns, &pair(PROJECT, OWNER)).await;

    let seen = sampler.stop();
    seen.assert_never_over(LIMIT, 30, 20);
    ns.delete().await;
}

#[tokio::test]
async fn expired_keys_free_their_slot() {
    const LIMIT: usize = 2;
    let ns = TestNamespace::new("quota-expiry").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let sampler = Sampler::start(&ns).await;
    let _operator = Operator::start(&ns.name, &["--max-keys-per-owner", "2"]);

    // expiresAt has 1 s precision on the wire: a whole second, 8 s ahead.
    let now = Timestamp::now();
    let expires_at = Timestamp::from_second(now.as_second() + 8).expect("timestamp");
    let mut expiring = api_key("expiring", PROJECT, OWNER);
    expiring.spec.expires_at = Some(Time(expires_at));
    api.create(&PostParams::default(), &expiring)
        .await
        .expect("create");
    create(&api, "lasting", PROJECT, OWNER).await;
    wait_for_phase(&api, "expiring", Phase::Active, Duration::from_secs(20)).await;
    wait_for_phase(&api, "lasting", Phase::Active, Duration::from_secs(20)).await;

    create(&api, "waiting", PROJECT, OWNER).await;
    let waiting = wait_for_phase(&api, "waiting", Phase::Rejected, Duration::from_secs(20)).await;
    assert!(
        Timestamp::now() < expires_at,
        "too slow: the test needs the waiting key rejected before the expiry"
    );
    assert!(
        ready_message(&waiting).contains(&format!("{OWNER} has 2 of 2 keys in project {PROJECT}")),
        "{}",
        ready_message(&waiting)
    );

    // At expiry the first key's material goes and its slot is handed on.
    let expired = wait_for_phase(&api, "expiring", Phase::Expired, Duration::from_secs(20)).await;
    let admitted = wait_for_phase(&api, "waiting", Phase::Active, Duration::from_secs(15)).await;
    assert!(
        expired
            .status
            .as_ref()
            .and_then(|s| s.key_hash.as_ref())
            .is_some(),
        "an expired key keeps its identity"
    );
    assert!(
        secrets.get_opt("expiring").await.expect("get").is_none(),
        "the expired key's Secret is deleted"
    );
    assert!(
        secrets.get_opt("waiting").await.expect("get").is_some(),
        "the admitted key has its Secret"
    );
    let minted_at = admitted
        .status
        .as_ref()
        .and_then(|s| s.minted_at.as_ref())
        .expect("mintedAt")
        .0;
    assert!(
        minted_at >= expires_at,
        "minted at {minted_at}, before the slot freed at {expires_at}"
    );
    wait_for_phase(&api, "lasting", Phase::Active, Duration::ZERO).await;
    eventually(Duration::from_secs(10), || async {
        let events = events_by_key(&ns).await;
        let has = |name: &str, reason: &str| {
            events
                .get(name)
                .is_some_and(|e| e.iter().any(|(r, _)| r == reason))
        };
        has("expiring", "Expired") && has("waiting", "Rejected") && has("waiting", "Minted")
    })
    .await;
    // Expired is final: the freed slot stays with the new key.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let keys = all_keys(&api).await;
    assert_eq!(
        names_in(&keys, Phase::Expired),
        BTreeSet::from(["expiring".to_string()])
    );
    assert_eq!(
        names_in(&keys, Phase::Active),
        BTreeSet::from(["lasting".to_string(), "waiting".to_string()])
    );
    assert_secrets_match_active_keys(&ns, &pair(PROJECT, OWNER)).await;

    let seen = sampler.stop();
    seen.assert_never_over(LIMIT, 10, 20);
    ns.delete().await;
}

#[tokio::test]
async fn quota_is_per_owner_and_project() {
    const LIMIT: usize = 2;
    let ns = TestNamespace::new("quota-pairs").await;
    let api: Api<ApiKey> = ns.api();
    let sampler = Sampler::start(&ns).await;
    let _operator = Operator::start(&ns.name, &["--max-keys-per-owner", "2"]);

    // alice's payments quota is full.
    for name in ["alice-pay-1", "alice-pay-2"] {
        create(&api, name, PROJECT, OWNER).await;
        wait_for_phase(&api, name, Phase::Active, Duration::from_secs(20)).await;
    }
    create(&api, "alice-pay-3", PROJECT, OWNER).await;
    wait_for_phase(
        &api,
        "alice-pay-3",
        Phase::Rejected,
        Duration::from_secs(20),
    )
    .await;

    // Another owner in the same project, and the same owner in another
    // project, each get their own full quota.
    const BOB: &str = "bob@example.com";
    const BILLING: &str = "billing";
    for name in ["bob-pay-1", "bob-pay-2"] {
        create(&api, name, PROJECT, BOB).await;
    }
    for name in ["alice-bill-1", "alice-bill-2"] {
        create(&api, name, BILLING, OWNER).await;
    }
    for name in ["bob-pay-1", "bob-pay-2", "alice-bill-1", "alice-bill-2"] {
        wait_for_phase(&api, name, Phase::Active, Duration::from_secs(20)).await;
    }
    // ... and their own limit.
    create(&api, "bob-pay-3", PROJECT, BOB).await;
    create(&api, "alice-bill-3", BILLING, OWNER).await;
    let bob = wait_for_phase(&api, "bob-pay-3", Phase::Rejected, Duration::from_secs(20)).await;
    let bill = wait_for_phase(
        &api,
        "alice-bill-3",
        Phase::Rejected,
        Duration::from_secs(20),
    )
    .await;
    assert!(
        ready_message(&bob).contains(&format!("{BOB} has 2 of 2 keys in project {PROJECT}")),
        "{}",
        ready_message(&bob)
    );
    assert!(
        ready_message(&bill).contains(&format!("{OWNER} has 2 of 2 keys in project {BILLING}")),
        "{}",
        ready_message(&bill)
    );

    // Freeing a slot of one pair admits that pair's waiting key only.
    delete_and_wait_gone(&api, "bob-pay-1").await;
    wait_for_phase(&api, "bob-pay-3", Phase::Active, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let keys = all_keys(&api).await;
    assert_eq!(
        names_in(&keys, Phase::Rejected),
        BTreeSet::from(["alice-pay-3".to_string(), "alice-bill-3".to_string()])
    );
    assert!(
        ready_message(&keys["alice-pay-3"])
            .contains(&format!("{OWNER} has 2 of 2 keys in project {PROJECT}")),
        "{}",
        ready_message(&keys["alice-pay-3"])
    );
    for p in [
        pair(PROJECT, OWNER),
        pair(PROJECT, BOB),
        pair(BILLING, OWNER),
    ] {
        assert_secrets_match_active_keys(&ns, &p).await;
    }

    let seen = sampler.stop();
    seen.assert_never_over(LIMIT, 20, 20);
    for p in [
        pair(PROJECT, OWNER),
        pair(PROJECT, BOB),
        pair(BILLING, OWNER),
    ] {
        assert_eq!(seen.max_for(&p), (LIMIT, LIMIT), "{p:?} filled up");
    }
    ns.delete().await;
}

#[tokio::test]
async fn quota_holds_across_operator_restarts() {
    const KEYS: usize = 20;
    const LIMIT: usize = 5;
    let flags = ["--max-keys-per-owner", "5"];
    let ns = TestNamespace::new("quota-restarts").await;
    let api: Api<ApiKey> = ns.api();
    let sampler = Sampler::start(&ns).await;

    // Creates are spread over several short operator lives, each ended by
    // SIGKILL at a random moment.
    let creator = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..KEYS {
                create(&api, &format!("key-{i:02}"), PROJECT, OWNER).await;
                let pause = 100 + rand::random::<u64>() % 300;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        })
    };
    // Lives that got as far as reconciling (a life killed during start-up
    // proves nothing).
    let mut working_kills = 0;
    for _ in 0..15 {
        let mut operator = Operator::start(&ns.name, &flags);
        let lifetime = 700 + rand::random::<u64>() % 1000;
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        operator.kill();
        if operator.log().contains("reconciled") {
            working_kills += 1;
        }
        if working_kills >= 4 && creator.is_finished() {
            break;
        }
    }
    creator.await.expect("creator");
    assert!(
        working_kills >= 4,
        "only {working_kills} working operator lives were killed"
    );

    let _operator = Operator::start(&ns.name, &flags);
    let limit_text = format!("{OWNER} has {LIMIT} of {LIMIT} keys in project {PROJECT}");
    eventually(Duration::from_secs(45), || async {
        let keys = all_keys(&api).await;
        keys.len() == KEYS
            && names_in(&keys, Phase::Active).len() == LIMIT
            && keys
                .values()
                .filter(|k| phase_of(k) == Some(Phase::Rejected))
                .filter(|k| ready_message(k).contains(&limit_text))
                .count()
                == KEYS - LIMIT
    })
    .await;
    // Settled, not passing through: the same after every key is re-checked.
    let keys = all_keys(&api).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = all_keys(&api).await;
    assert_eq!(
        names_in(&later, Phase::Active),
        names_in(&keys, Phase::Active)
    );
    assert_eq!(names_in(&later, Phase::Rejected).len(), KEYS - LIMIT);
    assert_secrets_match_active_keys(&ns, &pair(PROJECT, OWNER)).await;

    let seen = sampler.stop();
    seen.assert_never_over(LIMIT, 60, 40);
    assert_eq!(seen.max_for(&pair(PROJECT, OWNER)), (LIMIT, LIMIT));
    ns.delete().await;
}
