//! The controller's cache of ApiKeys, kept from the watch. It does what
//! kube's reflector store does — the latest version of every key, a relist
//! swapped in whole when it is complete, "ready" once the first list is in —
//! but holds each key packed (`apikey::cached`): kube's store keeps an `Arc`
//! of each object as the watch delivered it, which at 10,000 keys was most
//! of keymint's heap at rest.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use tokio::sync::watch;

use crate::apikey::GuardedApiKey;
use crate::apikey::cached::{CachedApiKey, Words};

pub struct ApiKeyCache {
    state: RwLock<State>,
    ready: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    keys: Keys,
    /// A relist in progress: what it has delivered so far. It replaces
    /// `keys` when it is done, so that readers never see a half list.
    relist: Option<Keys>,
    words: Words,
}

/// The keys by namespace and name. Boxed: a table keeps up to twice as
/// many slots as keys, and an empty slot then costs a pointer, not a key.
#[derive(Default)]
struct Keys {
    table: HashTable<Box<CachedApiKey>>,
    hasher: RandomState,
}

/// Cached keys picked by name, every name in one string. A verification
/// round holds its keys for a whole interval: as `ObjectRef`s (four strings
/// each) 100,000 keys were 16.6 MiB, packed they are about 3.
#[derive(Default)]
pub struct Picked {
    names: String,
    keys: Vec<PickedKey>,
}

struct PickedKey {
    namespace: Option<Arc<str>>,
    /// Where its name ends in `names`; it starts where the one before ends.
    end: usize,
}

impl Picked {
    fn push(&mut self, namespace: Option<&Arc<str>>, name: &str) {
        self.names.push_str(name);
        self.keys.push(PickedKey {
            namespace: namespace.cloned(),
            end: self.names.len(),
        });
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The picked keys, each by reference, in the order they were picked.
    pub fn references(&self) -> impl Iterator<Item = ObjectRef<GuardedApiKey>> + '_ {
        let starts = std::iter::once(0).chain(self.keys.iter().map(|k| k.end));
        self.keys.iter().zip(starts).map(|(key, start)| {
            let reference = ObjectRef::new(&self.names[start..key.end]);
            match &key.namespace {
                Some(namespace) => reference.within(namespace),
                None => reference,
            }
        })
    }
}

impl Default for ApiKeyCache {
    fn default() -> ApiKeyCache {
        ApiKeyCache {
            state: RwLock::default(),
            ready: watch::Sender::new(false),
        }
    }
}

impl ApiKeyCache {
    /// Takes in one watch event, as kube's reflector would.
    pub fn apply(&self, event: &Event<GuardedApiKey>) {
        let mut state = self.write();
        let State {
            keys,
            relist,
            words,
        } = &mut *state;
        match event {
            Event::Apply(api_key) => keys.insert(CachedApiKey::new(api_key, words)),
            Event::Delete(api_key) => keys.remove(&ObjectRef::from_obj(api_key)),
            Event::Init => *relist = Some(Keys::default()),
            Event::InitApply(api_key) => relist
                .get_or_insert_with(Keys::default)
                .insert(CachedApiKey::new(api_key, words)),
            Event::InitDone => {
                if let Some(mut listed) = relist.take() {
                    listed
                        .table
                        .shrink_to_fit(|k| listed.hasher.hash_one(k.name_pair()));
                    *keys = listed;
                }
                self.ready.send_replace(true);
            }
        }
    }

    /// Resolves once the first list is in.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// The key as last watched, rebuilt from its packed form.
    pub fn get(&self, key: &ObjectRef<GuardedApiKey>) -> Option<Arc<GuardedApiKey>> {
        let state = self.read();
        state.keys.get(key).map(|k| Arc::new(k.api_key()))
    }

    /// Visits every cached key (under the cache's read lock: keep it short).
    pub fn each(&self, mut visit: impl FnMut(&CachedApiKey)) {
        self.read().keys.table.iter().for_each(|k| visit(k));
    }

    /// The keys that `wanted` picks, by name.
    pub fn pick(&self, wanted: impl Fn(&CachedApiKey) -> bool) -> Picked {
        let mut picked = Picked::default();
        self.each(|k| {
            if wanted(k) {
                picked.push(k.namespace_word(), k.name());
            }
        });
        picked
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Keys {
    fn insert(&mut self, key: CachedApiKey) {
        let key = Box::new(key);
        let hash = self.hasher.hash_one(key.name_pair());
        let hasher = &self.hasher;
        match self.table.entry(
            hash,
            |k| k.name_pair() == key.name_pair(),
            |k| hasher.hash_one(k.name_pair()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut held) => *held.get_mut() = key,
            hashbrown::hash_table::Entry::Vacant(free) => {
                free.insert(key);
            }
        }
    }

    fn remove(&mut self, key: &ObjectRef<GuardedApiKey>) {
        let wanted = (key.namespace.as_deref(), key.name.as_str());
        let hash = self.hasher.hash_one(wanted);
        if let Ok(held) = self.table.find_entry(hash, |k| k.name_pair() == wanted) {
            held.remove();
        }
    }

    fn get(&self, key: &ObjectRef<GuardedApiKey>) -> Option<&CachedApiKey> {
        let wanted = (key.namespace.as_deref(), key.name.as_str());
        let hash = self.hasher.hash_one(wanted);
        self.table
            .find(hash, |k| k.name_pair() == wanted)
            .map(|k| &**k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::Phase;
    use serde_json::json;

    fn key(name: &str, phase: &str) -> GuardedApiKey {
        let object = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"project": "p", "owner": "o"},
            "status": {"phase": phase}
        });
        serde_json::from_value(object).expect("parses")
    }

    fn phase_of(cache: &ApiKeyCache, name: &str) -> Option<Phase> {
        let got = cache.get(&ObjectRef::new(name).within("ns"))?;
        let api_key = got.0.as_ref().ok()?;
        api_key.status.as_ref()?.phase
    }

    fn names(cache: &ApiKeyCache) -> Vec<String> {
        let mut names = Vec::new();
        cache.each(|k| names.push(k.name().to_string()));
        names.sort();
        names
    }

    #[test]
    fn keeps_the_latest_version_of_each_key_and_forgets_deleted_ones() {
        let cache = ApiKeyCache::default();
        cache.apply(&Event::Apply(key("a", "Pending")));
        cache.apply(&Event::Apply(key("b", "Active")));
        cache.apply(&Event::Apply(key("a", "Active")));
        assert_eq!(phase_of(&cache, "a"), Some(Phase::Active));
        cache.apply(&Event::Delete(key("b", "Active")));
        assert_eq!(phase_of(&cache, "b"), None);
        assert_eq!(names(&cache), ["a"]);
        assert!(cache.get(&ObjectRef::new("a").within("other")).is_none());
        let active = cache.pick(|k| k.phase() == Some(Phase::Active));
        assert_eq!(active.len(), 1);
        let active: Vec<_> = active.references().collect();
        assert_eq!(active, [ObjectRef::new("a").within("ns")]);
    }

    #[tokio::test]
    async fn a_relist_replaces_the_keys_when_it_is_done_and_makes_the_cache_ready() {
        let cache = ApiKeyCache::default();
        cache.apply(&Event::Apply(key("gone", "Active")));
        cache.apply(&Event::Init);
        cache.apply(&Event::InitApply(key("new", "Active")));
        // Until the relist is done, readers see the keys before it.
        assert_eq!(names(&cache), ["gone"]);
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            cache.wait_until_ready(),
        );
        assert!(waiting.await.is_err(), "ready before the first list is in");
        cache.apply(&Event::InitDone);
        assert_eq!(names(&cache), ["new"]);
        cache.wait_until_ready().await;
    }

    #[test]
    fn an_unreadable_key_is_kept_with_its_name() {
        let cache = ApiKeyCache::default();
        cache.apply(&Event::Apply(key("bad", "Sideways")));
        let got = cache.get(&ObjectRef::new("bad").within("ns"));
        assert!(got.is_some_and(|k| k.0.is_err()));
    }
}
