//! Quota slots in the API server: a key asks its pair's ledger for a slot
//! before it is minted, and gives it back if it turns out it can never mint.
//! The decisions are `admission`'s; this module reads and writes the
//! ledgers, finds which entries ended, and wakes the keys next in line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tracing::warn;

use super::admission::{self, Plan, Waiting};
use super::ledger::{Admission, Entry, Ledger, Pair};
use super::rebuild;
use super::store::{self, LedgerError, Loaded, Versioned};
use super::waiting::WaitingKeys;
use crate::apikey::lifecycle::waits_for_slot;
use crate::apikey::{ApiKey, GuardedApiKey};
use crate::grant::Grants;
use crate::runtime::cache::ApiKeyCache;
use crate::runtime::watch;

/// Ledger writes that lose a race are retried this many times in one
/// request before the reconcile is retried as a whole.
const LEDGER_ATTEMPTS: usize = 8;

/// The answer to a slot request.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    /// The key is in the persisted ledger: it may be minted.
    Granted,
    /// No slot; the message says why and where the key is in line.
    Denied { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot list ApiKeys to rebuild the missing quota ledger {ledger}: {}", crate::api_error::describe(.source))]
    ListApiKeys {
        ledger: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read ApiKey {namespace}/{name} to see whether it still holds a quota slot: {}", crate::api_error::describe(.source))]
    GetApiKey {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The quota ledgers of keymint's namespace, as one process sees them.
pub struct Slots {
    pub client: Client,
    /// The ApiKeys keymint watches (cluster-wide, or one namespace): a
    /// missing ledger is rebuilt from these.
    api_keys: Api<GuardedApiKey>,
    /// Quota ledgers, in keymint's own namespace.
    pub ledgers: Api<ConfigMap>,
    /// The controller's cache of ApiKeys: used to find keys waiting for a
    /// slot and keys that ended, never to count minted keys (the ledger does
    /// that).
    pub cache: Arc<ApiKeyCache>,
    /// The keys waiting for a slot, per pair (kept from the watch).
    pub waiting: Arc<WaitingKeys>,
    /// The projects each namespace is granted: a waiting key whose project
    /// is not granted is never admitted along with another.
    pub grants: Arc<Grants>,
    /// Reconciles the given ApiKeys soon: wakes keys admitted along with
    /// another, and keys waiting when a slot frees.
    pub wake: UnboundedSender<ObjectRef<GuardedApiKey>>,
    pub limit: usize,
    /// One lock per pair so that this process's requests of one pair take
    /// turns instead of racing on the ledger.
    pair_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Each pair's ledger as this process last wrote (or read) it. Only a
    /// cache: every write is a compare-and-swap against its version, and a
    /// lost race forgets it so the next attempt reads it again.
    seen: Mutex<HashMap<String, Versioned>>,
}

impl Slots {
    pub fn new(
        api_keys: Api<GuardedApiKey>,
        ledgers: Api<ConfigMap>,
        cache: Arc<ApiKeyCache>,
        waiting: Arc<WaitingKeys>,
        grants: Arc<Grants>,
        wake: UnboundedSender<ObjectRef<GuardedApiKey>>,
        limit: usize,
    ) -> Slots {
        Slots {
            client: api_keys.clone().into_client(),
            api_keys,
            ledgers,
            cache,
            waiting,
            grants,
            wake,
            limit,
            pair_locks: Mutex::default(),
            seen: Mutex::default(),
        }
    }

    /// Asks the pair's ledger for a slot. Granted means the key is recorded
    /// in the persisted ledger (now or by an earlier attempt).
    pub async fn request(&self, api_key: &ApiKey) -> Result<Slot, SlotError> {
        let pair = pair_of(api_key);
        let lock = self.pair_lock(&pair);
        let _turn = lock.lock().await;
        let me = waiting_entry(api_key);
        for _ in 0..LEDGER_ATTEMPTS {
            if let Some(slot) = self.attempt(&pair, &me).await? {
                return Ok(slot);
            }
        }
        Err(LedgerError::Conflict(pair.ledger_name()).into())
    }

    /// One read-decide-write round; None when the write lost a race.
    async fn attempt(&self, pair: &Pair<'_>, me: &Waiting) -> Result<Option<Slot>, SlotError> {
        let mut versioned = self.ledger(pair).await?;
        let waiting = self.waiting_keys(pair);
        let mut plan = admission::plan(&versioned.ledger, me, &waiting, self.limit);
        // A rebuilt ledger is written even if this request admits nothing.
        let mut changed = versioned.rebuilt;
        if let Plan::Full { .. } = plan {
            // Lazy release: only a full pair looks for ended keys.
            changed |= self.drop_ended(&mut versioned.ledger).await?;
            plan = admission::plan(&versioned.ledger, me, &waiting, self.limit);
        }
        match plan {
            Plan::AlreadyAdmitted => Ok(Some(Slot::Granted)),
            Plan::Admit { with } => self.admit(pair, versioned, me, with).await,
            Plan::Full { admitted, position } => {
                if changed && !self.save(pair, versioned).await? {
                    return Ok(None);
                }
                let message = admission::rejection_message(pair, admitted, self.limit, position);
                Ok(Some(Slot::Denied { message }))
            }
        }
    }

    /// Admits `me` and the keys next in line with one write; on success wakes
    /// the others so that they mint too.
    async fn admit(
        &self,
        pair: &Pair<'_>,
        mut versioned: Versioned,
        me: &Waiting,
        with: Vec<Waiting>,
    ) -> Result<Option<Slot>, SlotError> {
        let now = Timestamp::now().as_millisecond();
        // The plan saw a free slot; should the ledger's hard limit disagree,
        // the limit wins.
        if let Admission::Full { live, limit } =
            versioned
                .ledger
                .admit(&me.uid, ledger_entry(me, now), self.limit)
        {
            let message = admission::rejection_message(pair, live, limit, 0);
            return Ok(Some(Slot::Denied { message }));
        }
        for other in &with {
            versioned
                .ledger
                .admit(&other.uid, ledger_entry(other, now), self.limit);
        }
        if !self.save(pair, versioned).await? {
            return Ok(None);
        }
        for other in with {
            let reference = ObjectRef::new(&other.name).within(&other.namespace);
            let _ = self.wake.unbounded_send(reference);
        }
        Ok(Some(Slot::Granted))
    }

    /// Gives the key's slot back (if it holds one) and wakes the keys
    /// waiting in its pair: for a key that can never mint (a foreign Secret
    /// holds its name).
    pub async fn release(&self, api_key: &ApiKey) -> Result<(), SlotError> {
        let uid = api_key.uid().unwrap_or_default();
        self.release_uid(&pair_of(api_key), &uid).await
    }

    /// Gives the slot of the key `uid` of `pair` back (if it holds one) and
    /// wakes the keys waiting in the pair: for a key that can never mint,
    /// or whose ApiKey is gone.
    pub async fn release_uid(&self, pair: &Pair<'_>, uid: &str) -> Result<(), SlotError> {
        let lock = self.pair_lock(pair);
        let released = {
            let _turn = lock.lock().await;
            self.release_locked(pair, uid).await?
        };
        if released {
            for waiting in self.waiting.of(pair) {
                let _ = self.wake.unbounded_send(waiting);
            }
        }
        Ok(())
    }

    async fn release_locked(&self, pair: &Pair<'_>, uid: &str) -> Result<bool, SlotError> {
        for _ in 0..LEDGER_ATTEMPTS {
            let mut versioned = self.ledger(pair).await?;
            if !versioned.ledger.release(uid) {
                return Ok(false);
            }
            if self.save(pair, versioned).await? {
                return Ok(true);
            }
        }
        Err(LedgerError::Conflict(pair.ledger_name()).into())
    }

    /// Drops the entries of keys that no longer hold a slot: the ApiKey
    /// shows Expired or is gone. A key missing from the cache is confirmed
    /// gone with the API server: the cache may not have seen a key another
    /// replica admitted. Returns whether any entry was dropped.
    async fn drop_ended(&self, ledger: &mut Ledger) -> Result<bool, SlotError> {
        let mut ended = Vec::new();
        for (uid, entry) in ledger.iter() {
            if self.has_ended(uid, entry).await? {
                ended.push(uid.to_string());
            }
        }
        for uid in &ended {
            ledger.release(uid);
        }
        Ok(!ended.is_empty())
    }

    async fn has_ended(&self, uid: &str, entry: &Entry) -> Result<bool, SlotError> {
        match self.cached_slot_freed(uid, entry) {
            Some(freed) => Ok(freed),
            None => self.gone_from_the_api_server(uid, entry).await,
        }
    }

    /// Whether the ApiKey a ledger entry records is gone: not cached under
    /// its UID, and confirmed with the API server (the cache may not have
    /// seen a key another replica admitted).
    pub async fn is_gone(&self, uid: &str, entry: &Entry) -> Result<bool, SlotError> {
        match self.cached_slot_freed(uid, entry) {
            Some(_) => Ok(false),
            None => self.gone_from_the_api_server(uid, entry).await,
        }
    }

    /// Whether the cached ApiKey an entry records has freed its slot; None
    /// if the cache does not hold it under the entry's UID (or cannot read
    /// it).
    fn cached_slot_freed(&self, uid: &str, entry: &Entry) -> Option<bool> {
        let reference = ObjectRef::new(&entry.name).within(&entry.namespace);
        let cached = self.cache.get(&reference)?;
        let key = cached.0.as_ref().ok()?;
        (key.uid().as_deref() == Some(uid)).then(|| admission::slot_freed(key.status.as_ref()))
    }

    async fn gone_from_the_api_server(&self, uid: &str, entry: &Entry) -> Result<bool, SlotError> {
        let api: Api<ApiKey> = Api::namespaced(self.client.clone(), &entry.namespace);
        let found =
            api.get_metadata_opt(&entry.name)
                .await
                .map_err(|source| SlotError::GetApiKey {
                    namespace: entry.namespace.clone(),
                    name: entry.name.clone(),
                    source,
                })?;
        Ok(found.is_none_or(|found| found.metadata.uid.as_deref() != Some(uid)))
    }

    /// ApiKeys of `pair` in the cache that wait for a slot. The index may be
    /// behind the cache: each is judged as cached, by the one rule. A key
    /// whose project its namespace is not granted would mint nothing if
    /// admitted: it is not in line (it neither holds up the keys behind it
    /// nor is admitted along with them).
    fn waiting_keys(&self, pair: &Pair<'_>) -> Vec<Waiting> {
        let now = Timestamp::now();
        let mut waiting = Vec::new();
        for reference in self.waiting.of(pair) {
            let Some(guarded) = self.cache.get(&reference) else {
                self.waiting.forget(pair, &reference);
                continue;
            };
            if let Ok(k) = &guarded.0
                && pair_of(k) == *pair
                && waits_for_slot(k, now)
                && self.grants.check(k).is_ok()
            {
                waiting.push(waiting_entry(k));
            }
        }
        waiting
    }

    /// The pair's ledger: as last seen by this process, else read, else
    /// (missing) rebuilt. Call under the pair's lock.
    async fn ledger(&self, pair: &Pair<'_>) -> Result<Versioned, SlotError> {
        let seen = self.seen().get(&pair.ledger_name()).cloned();
        if let Some(versioned) = seen {
            return Ok(versioned);
        }
        match store::load(&self.ledgers, pair).await? {
            Loaded::Found(versioned) => Ok(versioned),
            Loaded::Missing(missing) if self.minted_in_cache(pair) => {
                Ok(missing.rebuilt(self.rebuild(pair).await?))
            }
            // A pair's first key: nothing was ever minted for it.
            Loaded::Missing(missing) => Ok(missing.rebuilt(Ledger::default())),
        }
    }

    /// Whether the cache shows a key ever minted for the pair: what tells a
    /// lost ledger from a pair's first key, which has none. Without it every
    /// new pair would cost a list of all the ApiKeys.
    fn minted_in_cache(&self, pair: &Pair<'_>) -> bool {
        let mut minted = false;
        self.cache
            .each(|k| minted = minted || k.minted_for(pair.project, pair.owner));
        minted
    }

    /// The pair's ledger rebuilt from the ApiKeys that hold a minted key,
    /// listed fresh: the cache may lag behind a key minted (by this process
    /// or another replica) a moment before the ledger went missing, and a
    /// key it missed would be a slot counted twice. This costs one list of
    /// the ApiKeys, once per pair whose ledger went missing with keys minted
    /// (keymint's namespace lost, or a ledger deleted by hand).
    async fn rebuild(&self, pair: &Pair<'_>) -> Result<Ledger, SlotError> {
        let ledger_name = pair.ledger_name();
        // The watches' list, read as it arrives: only the pair's keys are kept.
        let mut events = std::pin::pin!(watch::list_then_watch(self.api_keys.clone()));
        let mut ledger = Ledger::default();
        loop {
            let event = events.next().await;
            let key = match event {
                Some(Ok(Event::InitApply(key))) => key,
                Some(Ok(Event::InitDone)) => break,
                Some(Ok(_)) => continue,
                Some(Err(watcher::Error::InitialListFailed(source))) => {
                    return Err(SlotError::ListApiKeys {
                        ledger: ledger_name,
                        source,
                    });
                }
                Some(Err(other)) => {
                    return Err(SlotError::ListApiKeys {
                        ledger: ledger_name,
                        source: kube::Error::Service(other.into()),
                    });
                }
                None => break,
            };
            if let Ok(key) = &key.0 {
                for (uid, entry) in rebuild::ledger(pair, [key]).iter() {
                    ledger.restore(uid, entry.clone());
                }
            }
        }
        if ledger.admitted() > 0 {
            warn!(
                ledger = %ledger_name,
                keys = ledger.admitted(),
                "quota ledger was missing: rebuilt from the ApiKeys that hold a minted key"
            );
        }
        Ok(ledger)
    }

    /// Writes the pair's ledger (compare-and-swap) and remembers it as
    /// written; false when another writer got there first. Any failure
    /// forgets it, so the next attempt reads it again.
    async fn save(&self, pair: &Pair<'_>, mut versioned: Versioned) -> Result<bool, LedgerError> {
        let result = store::save(&self.ledgers, pair, &mut versioned).await;
        let mut seen = self.seen();
        match result {
            Ok(()) => {
                seen.insert(pair.ledger_name(), versioned);
                Ok(true)
            }
            Err(e) => {
                seen.remove(&pair.ledger_name());
                match e {
                    LedgerError::Conflict(_) => Ok(false),
                    e => Err(e),
                }
            }
        }
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<String, Versioned>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pair_lock(&self, pair: &Pair<'_>) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.pair_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(pair.ledger_name()).or_default().clone()
    }
}

/// The key's (project, owner) pair.
pub fn pair_of(api_key: &ApiKey) -> Pair<'_> {
    Pair {
        project: &api_key.spec.project,
        owner: &api_key.spec.owner,
    }
}

fn ledger_entry(waiting: &Waiting, now_ms: i64) -> Entry {
    Entry {
        namespace: waiting.namespace.clone(),
        name: waiting.name.clone(),
        admitted_at: now_ms,
    }
}

/// The key as a place in line.
pub fn waiting_entry(api_key: &ApiKey) -> Waiting {
    Waiting {
        created: api_key
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond()),
        namespace: api_key.namespace().unwrap_or_default(),
        name: api_key.name_any(),
        uid: api_key.uid().unwrap_or_default(),
    }
}
