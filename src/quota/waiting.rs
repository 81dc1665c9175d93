//! The ApiKeys waiting for a quota slot, per (project, owner), kept up to date
//! from the watch. Admission needs the waiting keys of one pair (to admit
//! the oldest first), and a slot that frees must wake them: both without
//! scanning every cached ApiKey, which at 10,000 keys was most of an
//! admission's cost.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use jiff::Timestamp;

use crate::apikey::lifecycle::waits_for_slot;
use crate::apikey::{ApiKey, GuardedApiKey};
use crate::quota::Pair;
use crate::quota::admission::slot_freed;

type PairKey = (String, String);

#[derive(Default)]
pub struct WaitingKeys {
    by_pair: Mutex<HashMap<PairKey, HashSet<Waiter>>>,
}

/// A waiting key as `namespace/name`, in one string (neither may hold a
/// `/`). In a burst every new key waits until it is admitted: held as an
/// `ObjectRef` (four strings, two of them a UID and a resource version that
/// no lookup compares) 100,000 of them took 16.6 MiB at the burst's peak.
#[derive(Hash, PartialEq, Eq)]
struct Waiter(Box<str>);

impl Waiter {
    fn new(namespace: Option<&str>, name: &str) -> Waiter {
        Waiter(format!("{}/{name}", namespace.unwrap_or_default()).into_boxed_str())
    }

    fn of(api_key: &ApiKey) -> Waiter {
        let meta = &api_key.metadata;
        Waiter::new(
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    fn of_reference(reference: &ObjectRef<GuardedApiKey>) -> Waiter {
        Waiter::new(reference.namespace.as_deref(), &reference.name)
    }

    fn reference(&self) -> ObjectRef<GuardedApiKey> {
        let (namespace, name) = self.0.split_once('/').unwrap_or(("", &self.0));
        let reference = ObjectRef::new(name);
        match namespace {
            "" => reference,
            namespace => reference.within(namespace),
        }
    }
}

fn references(waiting: &HashSet<Waiter>) -> Vec<ObjectRef<GuardedApiKey>> {
    waiting.iter().map(Waiter::reference).collect()
}

impl WaitingKeys {
    /// Updates the index from one watch event and returns the keys to wake:
    /// the waiting keys of a pair in which a key just stopped holding a slot
    /// (deleted, or its status now says Expired, which keymint writes only
    /// after deleting the Secret).
    pub fn observe(&self, event: &Event<GuardedApiKey>) -> Vec<ObjectRef<GuardedApiKey>> {
        match event {
            Event::Apply(guarded) | Event::InitApply(guarded) => {
                let Ok(api_key) = &guarded.0 else {
                    return Vec::new();
                };
                let waiter = Waiter::of(api_key);
                let key = pair_key(api_key);
                let mut by_pair = self.lock();
                if waits_for_slot(api_key, Timestamp::now()) {
                    by_pair.entry(key.clone()).or_default().insert(waiter);
                } else if let Some(waiting) = by_pair.get_mut(&key) {
                    waiting.remove(&waiter);
                    // Most pairs have no key waiting: they hold no entry.
                    if waiting.is_empty() {
                        by_pair.remove(&key);
                    }
                }
                let freed = matches!(event, Event::Apply(_)) && slot_freed(api_key.status.as_ref());
                match (freed, by_pair.get(&key)) {
                    (true, Some(waiting)) => references(waiting),
                    _ => Vec::new(),
                }
            }
            Event::Delete(guarded) => {
                let Ok(api_key) = &guarded.0 else {
                    return Vec::new();
                };
                let mut by_pair = self.lock();
                let key = pair_key(api_key);
                let Some(waiting) = by_pair.get_mut(&key) else {
                    return Vec::new();
                };
                waiting.remove(&Waiter::of(api_key));
                if waiting.is_empty() {
                    by_pair.remove(&key);
                    return Vec::new();
                }
                references(waiting)
            }
            // A relist: entries of keys deleted meanwhile stay until a caller
            // finds them missing from the cache and forgets them.
            Event::Init | Event::InitDone => Vec::new(),
        }
    }

    /// The keys of `pair` that were waiting when last seen. Callers re-check
    /// each against the cache: an entry may be stale after a relist.
    pub fn of(&self, pair: &Pair<'_>) -> Vec<ObjectRef<GuardedApiKey>> {
        let key = (pair.project.to_string(), pair.owner.to_string());
        self.lock().get(&key).map(references).unwrap_or_default()
    }

    /// Drops `reference` from `pair`'s waiting keys: for an entry the cache
    /// no longer has (deleted while the watch was relisting).
    pub fn forget(&self, pair: &Pair<'_>, reference: &ObjectRef<GuardedApiKey>) {
        let key = (pair.project.to_string(), pair.owner.to_string());
        let mut by_pair = self.lock();
        if let Some(waiting) = by_pair.get_mut(&key) {
            waiting.remove(&Waiter::of_reference(reference));
            if waiting.is_empty() {
                by_pair.remove(&key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PairKey, HashSet<Waiter>>> {
        self.by_pair.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pair_key(api_key: &ApiKey) -> PairKey {
    (api_key.spec.project.clone(), api_key.spec.owner.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::{ApiKeySpec, ApiKeyStatus, Phase};

    fn api_key(name: &str, owner: &str, phase: Option<Phase>) -> GuardedApiKey {
        let spec: ApiKeySpec =
            serde_json::from_value(serde_json::json!({"project": "p", "owner": owner}))
                .expect("spec");
        let mut api_key = ApiKey::new(name, spec);
        api_key.metadata.namespace = Some("ns".into());
        api_key.status = phase.map(|phase| ApiKeyStatus {
            phase: Some(phase),
            key_hash: (phase == Phase::Active).then(|| "sha256:00".to_string()),
            ..ApiKeyStatus::default()
        });
        GuardedApiKey(Ok(api_key))
    }

    fn names(mut refs: Vec<ObjectRef<GuardedApiKey>>) -> Vec<String> {
        refs.sort_by(|a, b| a.name.cmp(&b.name));
        refs.into_iter().map(|r| r.name).collect()
    }

    const ALICE: Pair<'static> = Pair {
        project: "p",
        owner: "alice",
    };

    #[test]
    fn keys_wait_per_pair_until_they_mint_or_end() {
        let index = WaitingKeys::default();
        index.observe(&Event::InitApply(api_key("a", "alice", None)));
        index.observe(&Event::Apply(api_key("b", "alice", Some(Phase::Rejected))));
        index.observe(&Event::Apply(api_key("c", "bob", Some(Phase::Rejected))));
        assert_eq!(names(index.of(&ALICE)), ["a", "b"]);
        index.observe(&Event::Apply(api_key("a", "alice", Some(Phase::Active))));
        index.observe(&Event::Apply(api_key("b", "alice", Some(Phase::Conflict))));
        assert!(index.of(&ALICE).is_empty());
        let pairs = |index: &WaitingKeys| index.lock().keys().cloned().collect::<Vec<_>>();
        let bob = ("p".to_string(), "bob".to_string());
        assert_eq!(
            pairs(&index),
            std::slice::from_ref(&bob),
            "a pair with no key waiting holds no entry"
        );
        index.observe(&Event::InitApply(api_key(
            "m",
            "carol",
            Some(Phase::Active),
        )));
        assert_eq!(pairs(&index), [bob]);
    }

    #[test]
    fn a_deleted_or_expired_key_wakes_its_pairs_waiting_keys_only() {
        let index = WaitingKeys::default();
        index.observe(&Event::Apply(api_key("w", "alice", Some(Phase::Rejected))));
        index.observe(&Event::Apply(api_key("x", "bob", Some(Phase::Rejected))));
        let woken = index.observe(&Event::Apply(api_key("e", "alice", Some(Phase::Expired))));
        assert_eq!(names(woken), ["w"]);
        let woken = index.observe(&Event::Delete(api_key("d", "alice", Some(Phase::Active))));
        assert_eq!(names(woken), ["w"]);
        let woken = index.observe(&Event::Apply(api_key("f", "alice", Some(Phase::Active))));
        assert!(woken.is_empty(), "an Active key frees nothing");
        let woken = index.observe(&Event::InitApply(api_key(
            "g",
            "alice",
            Some(Phase::Expired),
        )));
        assert!(woken.is_empty(), "a relist reconciles everything anyway");
    }

    #[test]
    fn a_waiting_key_comes_back_as_its_reference() {
        let index = WaitingKeys::default();
        index.observe(&Event::InitApply(api_key("a", "alice", None)));
        assert_eq!(index.of(&ALICE), [ObjectRef::new("a").within("ns")]);
    }

    #[test]
    fn a_forgotten_key_leaves_the_index() {
        let index = WaitingKeys::default();
        let w = api_key("w", "alice", None);
        index.observe(&Event::InitApply(w.clone()));
        index.forget(&ALICE, &ObjectRef::from_obj(&w));
        assert!(index.of(&ALICE).is_empty());
        assert!(index.lock().is_empty());
    }

    #[test]
    fn a_waiting_key_deleted_leaves_the_index() {
        let index = WaitingKeys::default();
        index.observe(&Event::Apply(api_key("w", "alice", None)));
        let woken = index.observe(&Event::Delete(api_key("w", "alice", None)));
        assert!(woken.is_empty());
        assert!(index.lock().is_empty());
    }
}
