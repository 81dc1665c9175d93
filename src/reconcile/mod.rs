//! Reconciling one ApiKey: observe (the ApiKey and the Secret under its
//! name), decide (`lifecycle`, `quota` — pure), act (a short list of API
//! calls), in this order:
//!
//! 1. The Secret is the commit point: creating it under its deterministic
//!    name is what "minted" means. AlreadyExists means "already minted" —
//!    adopt it if it is ours, report a conflict if not, never overwrite.
//! 2. A key is recorded in its quota ledger before it is minted. Its entry
//!    is dropped lazily, when an admission finds the pair full: only once the
//!    ApiKey is gone (its finalizer deleted the Secret first) or shows
//!    Expired (written only after the Secret is deleted).
//! 3. Secret first, then status (only when it changed, and only against the
//!    version that was observed), then the Event.

pub mod own_writes;
pub mod report;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::apikey::key::{self, KeyError};
use crate::apikey::lifecycle::{self, Outcome, StatusInput, Step};
use crate::apikey::secret::{self, MANAGER, Observed};
use crate::apikey::{ApiKey, ApiKeyStatus, GuardedApiKey, Phase};
use crate::audit;
use crate::audit::stream::AuditError;
use crate::quota::store::{self, LedgerError};
use crate::quota::waiting::{self, WaitingKeys};
use crate::quota::{self, Admission, Entry, Pair, Waiting};
use crate::reconcile::own_writes::OwnWrites;
use crate::reconcile::report::Reporter;

/// Removed only after the Secret is deleted and the deletion reported.
pub const FINALIZER: &str = "keymint.dev/cleanup";
/// Ledger writes that lose a race are retried this many times in one
/// reconcile before the reconcile is retried as a whole.
const LEDGER_ATTEMPTS: usize = 8;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// Audit entries and Events.
    pub reporter: Reporter,
    /// The controller's cache of ApiKeys: used to find keys waiting for a
    /// slot and keys that ended, never to count minted keys (the ledger does
    /// that).
    pub store: Store<GuardedApiKey>,
    /// The keys waiting for a slot, per pair (kept from the watch).
    pub waiting: Arc<WaitingKeys>,
    /// Quota ledgers, in keymint's own namespace.
    pub ledgers: Api<ConfigMap>,
    pub max_keys_per_owner: usize,
    pub expiry_warning: Duration,
    pub verify_interval: Duration,
    pub max_backoff: Duration,
    /// Reconciles the given ApiKeys soon: used to wake waiting keys when a
    /// slot frees.
    pub wake: UnboundedSender<ObjectRef<GuardedApiKey>>,
    /// Status writes whose echo on the watch is not reconciled.
    pub own_writes: OwnWrites,
    /// One lock per (project, owner) so that this process's reconciles of one
    /// pair take turns instead of racing on the ledger.
    pair_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per ApiKey: consecutive failures (for exponential backoff) and the
    /// category of the last one (for one Event per kind of failure).
    failures: Mutex<HashMap<ObjectRef<GuardedApiKey>, (u32, &'static str)>>,
    /// Each pair's ledger as this process last wrote (or read) it, by ledger
    /// name. Only a cache: every write is a compare-and-swap against its
    /// resourceVersion, and a lost race drops the entry and reads again.
    ledgers_seen: Mutex<HashMap<String, store::Versioned>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        reporter: Reporter,
        store: Store<GuardedApiKey>,
        waiting: Arc<WaitingKeys>,
        ledgers: Api<ConfigMap>,
        max_keys_per_owner: usize,
        expiry_warning: Duration,
        verify_interval: Duration,
        max_backoff: Duration,
        wake: UnboundedSender<ObjectRef<GuardedApiKey>>,
        own_writes: OwnWrites,
    ) -> Context {
        Context {
            client,
            reporter,
            store,
            waiting,
            ledgers,
            max_keys_per_owner,
            expiry_warning,
            verify_interval,
            max_backoff,
            wake,
            own_writes,
            pair_locks: Mutex::default(),
            failures: Mutex::default(),
            ledgers_seen: Mutex::default(),
        }
    }

    /// The pair's ledger: as last seen by this process, else read. Call
    /// under the pair's lock.
    async fn ledger(&self, pair: &Pair<'_>) -> Result<store::Versioned, LedgerError> {
        let seen = self.seen_ledgers().get(&pair.ledger_name()).cloned();
        match seen {
            Some(versioned) => Ok(versioned),
            None => store::load(&self.ledgers, pair).await,
        }
    }

    /// Writes the pair's ledger (compare-and-swap) and remembers it as
    /// written; any failure forgets it, so the next attempt reads it again.
    async fn save_ledger(
        &self,
        pair: &Pair<'_>,
        mut versioned: store::Versioned,
    ) -> Result<(), LedgerError> {
        let result = store::save(&self.ledgers, pair, &mut versioned).await;
        let mut seen = self.seen_ledgers();
        match result {
            Ok(()) => seen.insert(pair.ledger_name(), versioned),
            Err(_) => seen.remove(&pair.ledger_name()),
        };
        result
    }

    fn seen_ledgers(&self) -> std::sync::MutexGuard<'_, HashMap<String, store::Versioned>> {
        self.ledgers_seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pair_lock(&self, pair: &Pair<'_>) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.pair_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(pair.ledger_name()).or_default().clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {}", api_message(.0))]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot mint a key: {0}")]
    Mint(#[from] KeyError),
    /// The ApiKey changed since it was read (a stale cache): try again with
    /// the newer version, without backing off.
    #[error("the ApiKey changed while it was being reconciled")]
    Stale,
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl Error {
    /// A bounded, stable category: for metrics labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::Ledger(LedgerError::Conflict) => "LedgerContention",
            Error::Ledger(LedgerError::Api(_)) => "KubernetesApi",
            Error::Ledger(_) => "LedgerUnreadable",
            Error::Mint(_) => "MintFailed",
            Error::Stale => "Stale",
            Error::Finalizer(_) => "Finalizer",
            Error::Audit(_) => "AuditStream",
        }
    }
}

/// The controller's entry point for one ApiKey.
pub async fn reconcile(obj: Arc<GuardedApiKey>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_guarded(obj, &ctx).await;
    ctx.reporter
        .metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_guarded(obj: Arc<GuardedApiKey>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let api_key = match &obj.0 {
        Ok(api_key) => api_key,
        Err(invalid) => {
            // Not stalling the others is the point: report and wait for a fix.
            let reference = obj.object_ref(&());
            let detail = unreadable_field(ctx, &obj)
                .await
                .unwrap_or_else(|| invalid.error.clone());
            let note = truncate(&format!("keymint cannot read this ApiKey: {detail}"), 400);
            warn!(apikey = reference.name.as_deref(), "{note}");
            let event = kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Warning,
                reason: "InvalidSpec".into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = ctx.reporter.recorder.publish(&event, &reference).await {
                warn!(error = %e, "could not publish Event");
            }
            return Ok(Action::await_change());
        }
    };
    let namespace = api_key.namespace().unwrap_or_default();
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, Arc::new(api_key.clone()), |event| async {
        match event {
            finalizer::Event::Apply(api_key) => apply(&api_key, ctx).await,
            finalizer::Event::Cleanup(api_key) => cleanup(&api_key, ctx).await,
        }
    })
    .await;
    match result {
        Ok(action) => {
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ObjectRef::from_obj(&*obj));
            Ok(action)
        }
        Err(finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e)) => Err(e),
        // Another instance finished the deletion first: nothing left to do.
        Err(finalizer::Error::RemoveFinalizer(kube::Error::Api(s))) if s.code == 404 => {
            Ok(Action::await_change())
        }
        Err(
            finalizer::Error::AddFinalizer(kube::Error::Api(s))
            | finalizer::Error::RemoveFinalizer(kube::Error::Api(s)),
        ) if s.code == 409 || s.code == 422 => Err(Error::Stale),
        Err(e) => Err(Error::Finalizer(e.to_string())),
    }
}

/// Which field makes an ApiKey unreadable, from the object as stored (the
/// guard keeps only serde's message, which does not say where).
async fn unreadable_field(ctx: &Context, obj: &GuardedApiKey) -> Option<String> {
    let resource = ApiResource::erase::<ApiKey>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &obj.namespace().unwrap_or_default(),
        &resource,
    );
    let stored = api.get(&obj.name_any()).await.ok()?;
    crate::apikey::unreadable_field(&serde_json::to_value(stored).ok()?)
}

/// Retries back off exponentially per ApiKey, from 1 s to `max_backoff`; a
/// stale read is retried at once (the newer version is already on its way).
/// Every failure is logged and counted; a Warning Event is published when a
/// failure starts or changes its kind, not on every retry: a failing control
/// plane is not sent an Event per attempt (30,000 in two minutes in the
/// benchmark's etcd outage).
pub fn error_policy(obj: Arc<GuardedApiKey>, error: &Error, ctx: Arc<Context>) -> Action {
    let reference = ObjectRef::from_obj(&*obj);
    if matches!(error, Error::Stale | Error::Ledger(LedgerError::Conflict)) {
        debug!(apikey = %reference, "{error}; retrying");
        return Action::requeue(Duration::from_millis(50));
    }
    ctx.reporter
        .metrics
        .reconcile_errors
        .get_or_create(&crate::runtime::metrics::CategoryLabel {
            category: error.category().to_string(),
        })
        .inc();
    let (failures, new_kind) = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (n, last) = failures.entry(reference.clone()).or_insert((0, ""));
        *n = n.saturating_add(1);
        let new_kind = *last != error.category();
        *last = error.category();
        (*n, new_kind)
    };
    let delay = backoff(failures, ctx.max_backoff);
    warn!(apikey = %reference, category = error.category(), retry_in = ?delay, "{error}");
    if !new_kind {
        return Action::requeue(delay);
    }
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: error.category().into(),
        note: Some(truncate(
            &format!("{error}; retrying in {}s", delay.as_secs()),
            400,
        )),
        action: "Reconcile".into(),
        secondary: None,
    };
    let object_ref = obj.object_ref(&());
    let recorder = ctx.reporter.recorder.clone();
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &object_ref).await {
            warn!(error = %e, "could not publish Event");
        }
    });
    Action::requeue(delay)
}

/// 1 s, 2 s, 4 s, ... capped at `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    Duration::from_secs(1u64 << exp).min(max)
}

async fn apply(api_key: &ApiKey, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let uid = api_key.uid().unwrap_or_default();
    let namespace = api_key.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_name = secret::name(api_key);
    let expires_at = api_key.spec.expires_at.as_ref().map(|t| t.0);
    let status = api_key.status.as_ref();

    // Transitions of an earlier reconcile that never reached the audit
    // stream (keymint stopped in between) come first.
    ctx.reporter.catch_up(api_key).await?;

    // Observe. A key waiting to be minted has no Secret, unless an attempt
    // stopped right after creating it: then its slot is already in the
    // ledger and creating the Secret finds it (AlreadyExists). Either way
    // reading the Secret first would only cost a request per attempt.
    let mut observed = match lifecycle::awaits_minting(status, expires_at, now) {
        true => Observed::Missing,
        false => secret::observe(secrets.get_opt(&secret_name).await?.as_ref(), &uid),
    };
    // Decide, then act.
    let outcome = match lifecycle::decide(status, expires_at, now, &observed) {
        Step::RequestSlot => match request_slot(api_key, ctx, now).await? {
            Slot::Granted => {
                let (outcome, found) = mint(api_key, ctx, &secrets, &secret_name).await?;
                observed = found;
                outcome
            }
            Slot::Denied { message } => Outcome::Rejected { message },
        },
        Step::Adopt { key_hash } => adopted(&observed, key_hash),
        Step::Verified => current_key(status),
        Step::Expire { delete_secret } => {
            // Its ledger entry is dropped when an admission needs the slot
            // and finds the status Expired (written below).
            if let Some(secret_uid) = delete_secret {
                delete_secret_with_uid(&secrets, &secret_name, secret_uid).await?;
            }
            Outcome::Expired
        }
        Step::Lost => Outcome::Lost,
        Step::Tampered => Outcome::Tampered,
        Step::Conflict => Outcome::Conflict,
    };

    let mut desired = lifecycle::status(
        &StatusInput {
            current: status,
            unrecorded_key: unrecorded_key(status, &observed),
            generation: api_key.metadata.generation,
            secret_name: &secret_name,
            expires_at,
            expiry_warning: ctx.expiry_warning,
            now,
        },
        &outcome,
    );
    let transitions = lifecycle::transitions(status, &desired);
    if !transitions.is_empty() {
        // The status change carries its transitions: the audit stream's
        // outbox, should keymint stop before appending them.
        desired.last_transitions = lifecycle::number_transitions(
            status,
            &transitions,
            &audit::format_time(now),
            &ctx.reporter.audit.instance,
        );
    }
    if lifecycle::needs_write(status, &desired) {
        write_status(api_key, &desired, ctx).await?;
        if !transitions.is_empty() {
            ctx.reporter
                .transitions(api_key, &desired, &desired.last_transitions)
                .await?;
        }
    }

    let phase = desired.phase.unwrap_or(Phase::Pending);
    Ok(
        match lifecycle::next_check(
            phase,
            expires_at,
            Timestamp::now(),
            ctx.expiry_warning,
            ctx.verify_interval,
            rand::random(),
        ) {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        },
    )
}

/// The ApiKey is being deleted: delete its Secret (only ours, by UID),
/// report, and let the finalizer go. Its ledger entry is dropped when an
/// admission needs the slot and finds the ApiKey gone; its deletion from the
/// watch wakes the keys waiting for it.
async fn cleanup(api_key: &ApiKey, ctx: &Context) -> Result<Action, Error> {
    let uid = api_key.uid().unwrap_or_default();
    let namespace = api_key.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_name = secret::name(api_key);
    ctx.reporter.catch_up(api_key).await?;
    let secret_deleted = match secret::observe(secrets.get_opt(&secret_name).await?.as_ref(), &uid)
    {
        Observed::Ours {
            uid: Some(secret_uid),
            ..
        } => {
            delete_secret_with_uid(&secrets, &secret_name, secret_uid).await?;
            true
        }
        _ => false,
    };
    // Durable before the finalizer goes: the last word on this ApiKey.
    ctx.reporter.deleted(api_key, secret_deleted).await?;
    Ok(Action::await_change())
}

enum Slot {
    Granted,
    Denied { message: String },
}

/// Asks the pair's ledger for a slot. Granted means the key is recorded in
/// the ledger (now or by an earlier attempt) and may be minted.
async fn request_slot(api_key: &ApiKey, ctx: &Context, now: Timestamp) -> Result<Slot, Error> {
    let pair = Pair {
        project: &api_key.spec.project,
        owner: &api_key.spec.owner,
    };
    let uid = api_key.uid().unwrap_or_default();
    let lock = ctx.pair_lock(&pair);
    let _turn = lock.lock().await;
    let now_ms = now.as_millisecond();
    let limit = ctx.max_keys_per_owner;
    let me = waiting_entry(api_key);
    for _ in 0..LEDGER_ATTEMPTS {
        let mut versioned = ctx.ledger(&pair).await?;
        if versioned.ledger.get(&uid).is_some() {
            return Ok(Slot::Granted);
        }
        let waiting = waiting_keys(ctx, &pair, &versioned.ledger, now);
        let denied = |live, limit| Slot::Denied {
            message: quota::rejection_message(&pair, live, limit, quota::position(&me, &waiting)),
        };
        let mut live = versioned.ledger.live(now_ms);
        let mut dropped = false;
        if !quota::may_take_slot(&me, &waiting, limit.saturating_sub(live)) {
            dropped = drop_ended(&mut versioned.ledger, ctx).await?;
            live = versioned.ledger.live(now_ms);
        }
        if !quota::may_take_slot(&me, &waiting, limit.saturating_sub(live)) {
            if dropped {
                match ctx.save_ledger(&pair, versioned).await {
                    Ok(()) => {}
                    Err(LedgerError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(denied(live, limit));
        }
        match versioned
            .ledger
            .admit(&uid, ledger_entry(&me, now_ms), limit, now_ms)
        {
            Admission::AlreadyAdmitted => return Ok(Slot::Granted),
            Admission::Full { live, limit } => return Ok(denied(live, limit)),
            Admission::Admitted => {}
        }
        // The same write admits the keys next in line with it: a burst of
        // keys for one pair costs one ledger write, not one per key.
        let with_me = quota::admitted_with(&me, &waiting, limit.saturating_sub(live));
        for other in &with_me {
            versioned
                .ledger
                .admit(&other.uid, ledger_entry(other, now_ms), limit, now_ms);
        }
        match ctx.save_ledger(&pair, versioned).await {
            Ok(()) => {
                for other in with_me {
                    let reference = ObjectRef::new(&other.name).within(&other.namespace);
                    let _ = ctx.wake.unbounded_send(reference);
                }
                return Ok(Slot::Granted);
            }
            Err(LedgerError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(LedgerError::Conflict.into())
}

/// Drops the entries of keys that no longer hold a slot: the ApiKey shows
/// Expired (keymint writes that only after deleting the Secret) or is gone
/// (its finalizer deleted the Secret first). A key missing from the cache is
/// confirmed gone with the API server: the cache may not have seen a key
/// another replica admitted. Returns whether any entry was dropped.
async fn drop_ended(ledger: &mut quota::Ledger, ctx: &Context) -> Result<bool, Error> {
    let mut ended = Vec::new();
    for (uid, entry) in ledger.iter() {
        let reference = ObjectRef::new(&entry.name).within(&entry.namespace);
        let cached = ctx.store.get(&reference);
        let same_key = cached
            .as_deref()
            .and_then(|guarded| guarded.0.as_ref().ok())
            .filter(|k| k.uid().as_deref() == Some(uid));
        let is_ended = match same_key {
            Some(k) => k.status.as_ref().and_then(|s| s.phase) == Some(Phase::Expired),
            None => {
                let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &entry.namespace);
                api.get_metadata_opt(&entry.name)
                    .await?
                    .is_none_or(|found| found.metadata.uid.as_deref() != Some(uid))
            }
        };
        if is_ended {
            ended.push(uid.to_string());
        }
    }
    for uid in &ended {
        ledger.release(uid);
    }
    Ok(!ended.is_empty())
}

/// Removes the key from its ledger (if it is there) and wakes the keys
/// waiting for a slot of the same pair: for a key that turned out never to
/// be minted (a foreign Secret holds its name).
async fn release_slot(api_key: &ApiKey, ctx: &Context) -> Result<(), Error> {
    let pair = Pair {
        project: &api_key.spec.project,
        owner: &api_key.spec.owner,
    };
    let uid = api_key.uid().unwrap_or_default();
    let lock = ctx.pair_lock(&pair);
    let released = {
        let _turn = lock.lock().await;
        let mut attempts = 0;
        loop {
            let mut versioned = ctx.ledger(&pair).await?;
            if !versioned.ledger.release(&uid) {
                break false;
            }
            match ctx.save_ledger(&pair, versioned).await {
                Ok(()) => break true,
                Err(LedgerError::Conflict) if attempts < LEDGER_ATTEMPTS => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if released {
        for waiting in ctx.waiting.of(&pair) {
            let _ = ctx.wake.unbounded_send(waiting);
        }
    }
    Ok(())
}

/// ApiKeys of `pair` in the cache that wait for a slot: not minted, not
/// finished, not being deleted, not expired, not already in the ledger.
fn waiting_keys(
    ctx: &Context,
    pair: &Pair<'_>,
    ledger: &quota::Ledger,
    now: Timestamp,
) -> Vec<Waiting> {
    let mut waiting = Vec::new();
    for reference in ctx.waiting.of(pair) {
        // The index may be behind the cache: judge the cached object.
        let Some(guarded) = ctx.store.get(&reference) else {
            ctx.waiting.forget(pair, &reference);
            continue;
        };
        let Ok(k) = &guarded.0 else {
            continue;
        };
        if k.spec.project == pair.project
            && k.spec.owner == pair.owner
            && waiting::waits(k)
            && k.spec.expires_at.as_ref().is_none_or(|t| t.0 > now)
            && ledger.get(&k.uid().unwrap_or_default()).is_none()
        {
            waiting.push(waiting_entry(k));
        }
    }
    waiting
}

fn ledger_entry(waiting: &Waiting, now_ms: i64) -> Entry {
    Entry {
        namespace: waiting.namespace.clone(),
        name: waiting.name.clone(),
        admitted_at: now_ms,
        // Slots are freed when the Secret is deleted, not at expiresAt: the
        // ledger then never undercounts, even if expiresAt moves.
        expires_at: None,
    }
}

fn waiting_entry(api_key: &ApiKey) -> Waiting {
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

/// Mints the key and creates its Secret: the commit point. Returns what
/// happened and the Secret as now observed.
async fn mint(
    api_key: &ApiKey,
    ctx: &Context,
    secrets: &Api<Secret>,
    secret_name: &str,
) -> Result<(Outcome, Observed), Error> {
    let minted = key::mint()?;
    let params = PostParams {
        field_manager: Some(MANAGER.to_string()),
        ..PostParams::default()
    };
    match secrets
        .create(&params, &secret::build(api_key, &minted))
        .await
    {
        Ok(created) => {
            let uid = api_key.uid().unwrap_or_default();
            let observed = secret::observe(Some(&created), &uid);
            let outcome = Outcome::Active {
                key_id: key::key_id(&minted),
                key_hash: key::hash(&minted),
                minted_at: created.metadata.creation_timestamp.map(|t| t.0),
            };
            Ok((outcome, observed))
        }
        // Already exists: "already minted" if it is ours, a conflict if not.
        // The key just generated is dropped, never written anywhere.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let uid = api_key.uid().unwrap_or_default();
            let observed = secret::observe(secrets.get_opt(secret_name).await?.as_ref(), &uid);
            let outcome = match lifecycle::decide(None, None, Timestamp::now(), &observed) {
                Step::Adopt { key_hash } => adopted(&observed, key_hash),
                Step::Conflict => {
                    release_slot(api_key, ctx).await?;
                    Outcome::Conflict
                }
                Step::Tampered => Outcome::Tampered,
                // Deleted again in between: start over.
                _ => return Err(Error::Stale),
            };
            Ok((outcome, observed))
        }
        Err(e) => Err(e.into()),
    }
}

fn adopted(observed: &Observed, key_hash: String) -> Outcome {
    let (key_id, minted_at) = match observed {
        Observed::Ours {
            key_id, created, ..
        } => (key_id.clone().unwrap_or_default(), *created),
        _ => (String::new(), None),
    };
    Outcome::Active {
        key_id,
        key_hash,
        minted_at,
    }
}

/// The key in our Secret when the status does not record one yet: minted
/// by an attempt that stopped before writing the status.
fn unrecorded_key(
    status: Option<&ApiKeyStatus>,
    observed: &Observed,
) -> Option<lifecycle::KeyRecord> {
    if status.and_then(|s| s.key_hash.as_ref()).is_some() {
        return None;
    }
    match observed {
        Observed::Ours {
            content_hash,
            annotated_hash,
            key_id,
            created,
            ..
        } => Some(lifecycle::KeyRecord {
            key_id: key_id.clone().unwrap_or_default(),
            key_hash: annotated_hash.clone().or_else(|| content_hash.clone())?,
            minted_at: *created,
        }),
        _ => None,
    }
}

fn current_key(status: Option<&ApiKeyStatus>) -> Outcome {
    Outcome::Active {
        key_id: status.and_then(|s| s.key_id.clone()).unwrap_or_default(),
        key_hash: status.and_then(|s| s.key_hash.clone()).unwrap_or_default(),
        minted_at: status.and_then(|s| s.minted_at.as_ref()).map(|t| t.0),
    }
}

/// Deletes the Secret only if it is still the one observed (same UID).
async fn delete_secret_with_uid(
    secrets: &Api<Secret>,
    name: &str,
    uid: String,
) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(name, &params).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by another Secret we must not touch.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the whole status, against the observed resourceVersion: if the
/// cache was stale the write fails (and the reconcile is retried with the
/// newer object) instead of overwriting a newer status.
async fn write_status(api_key: &ApiKey, status: &ApiKeyStatus, ctx: &Context) -> Result<(), Error> {
    let api: Api<ApiKey> =
        Api::namespaced(ctx.client.clone(), &api_key.namespace().unwrap_or_default());
    let mut body = serde_json::to_value(status).map_err(|e| Error::Finalizer(e.to_string()))?;
    if let Value::Object(map) = &mut body {
        // A merge patch keeps fields it does not mention: clear the absent
        // ones explicitly so the status is exactly `status`.
        for field in [
            "phase",
            "conditions",
            "observedGeneration",
            "keyId",
            "keyHash",
            "secretName",
            "mintedAt",
        ] {
            map.entry(field).or_insert(Value::Null);
        }
    }
    let patch = json!({
        "metadata": {"resourceVersion": api_key.resource_version()},
        "status": body,
    });
    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..PatchParams::default()
    };
    match api
        .patch_status(&api_key.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(written) => {
            if let Some(version) = written.resource_version() {
                let reference = ObjectRef::new(&api_key.name_any())
                    .within(&api_key.namespace().unwrap_or_default());
                ctx.own_writes.record(reference, version);
            }
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Stale),
        Err(e) => Err(e.into()),
    }
}

/// The API server's own words for an API error (not the client's debug
/// dump of the whole response); other errors as they display.
fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        let delays: Vec<u64> = (1..=11).map(|n| backoff(n, cap).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX, cap), cap);
    }

    #[test]
    fn truncate_respects_character_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
