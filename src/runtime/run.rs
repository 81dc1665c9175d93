//! `keymint run`: wires the controller together and runs it until SIGTERM or
//! Ctrl-C, then finishes in-flight reconciles and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Stream, StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, ObjectRefExtra};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use thiserror::Error;
use tracing::{info, warn};

use crate::apikey::provenance::SealKey;
use crate::apikey::{ApiKey, GuardedApiKey};
use crate::audit::store::Segments;
use crate::audit::stream::{AuditLog, AuditOptions};
use crate::grant::{Grants, ProjectGrant};
use crate::quota::slots::Slots;
use crate::quota::waiting::WaitingKeys;
use crate::reconcile::events::{Busy, EventQueue, Flush};
use crate::reconcile::own_writes::OwnWrites;
use crate::reconcile::report::Reporter;
use crate::reconcile::{self, Context, Failures};
use crate::runtime::cache::ApiKeyCache;
use crate::runtime::http::{self, Status};
use crate::runtime::leader::{Election, Role};
use crate::runtime::metrics::Metrics;
use crate::runtime::options::RunOptions;
use crate::runtime::watch::list_then_watch;
use crate::runtime::workers::{self, Queue};

#[derive(Debug, Error)]
pub enum RunError {
    #[error(
        "cannot load a Kubernetes client configuration (check KUBECONFIG or the in-cluster service account): {0}"
    )]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Preflight(#[from] crate::runtime::preflight::PreflightError),
    #[error(transparent)]
    OwnerBinding(#[from] crate::owner_binding::OwnerBindingError),
    #[error(transparent)]
    SealKey(#[from] crate::runtime::seal_key::SealKeyLoadError),
    #[error(transparent)]
    AuditKey(#[from] crate::runtime::audit_key::AuditKeyLoadError),
    #[error(transparent)]
    Retention(#[from] crate::audit::retention::RetentionError),
    #[error("cannot open the audit stream: {0}")]
    Audit(#[source] crate::audit::AuditError),
    #[error("cannot serve HTTP (--http-addr): {0}")]
    Http(#[source] std::io::Error),
    #[error("leader election: {0}")]
    Election(#[source] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that this instance restarts as a standby")]
    LostLeadership,
}

/// How often freed heap is handed back (`runtime::memory`).
const TRIM_PERIOD: Duration = Duration::from_secs(30);

/// Resolves once: on a shutdown signal, or when the lease is lost.
type Signal = Shared<BoxFuture<'static, ()>>;

pub async fn run(options: RunOptions) -> Result<(), RunError> {
    // A retention rule that contradicts itself stops keymint before it
    // touches anything.
    options.audit_retention()?;
    let client = client().await?;
    let api_keys = api_keys(&client, &options);
    let project_grants = scoped(&client, &options);
    crate::runtime::preflight::check(&client, &options, &api_keys, &project_grants).await?;
    let metrics = Arc::new(Metrics::new());
    metrics
        .audit
        .cap_namespaces(options.audit_metric_namespaces);
    crate::owner_binding::gate(
        &client,
        &options.owner_binding,
        &metrics.owner_binding_enforced,
    )
    .await?;
    let instance = instance_name();
    let shutdown: Signal =
        crate::runtime::signal::shutdown_signal("finishing in-flight reconciles")
            .boxed()
            .shared();
    let mut election = elect(&client, &options, &instance).await?;
    let status = serve_http(&options, &metrics, &election).await?;
    if !lead(&mut election, &options, shutdown.clone()).await {
        return Ok(());
    }
    metrics.leader.set(1);
    // Leading: the seal key is read once, here (standbys never mint).
    let seal_key = crate::runtime::seal_key::load(&client, &options.namespace).await?;
    // The audit stream is opened now, so its index of what is recorded
    // includes everything an earlier leader appended.
    let audit_key = crate::runtime::audit_key::load(&client, &options.namespace).await?;
    let audit = open_audit(&client, &options, &instance, &metrics, audit_key).await?;
    let lost: Signal = match &election {
        Some(e) => e.lost().boxed().shared(),
        None => std::future::pending().boxed().shared(),
    };
    let parts = Parts {
        client,
        options,
        instance,
        metrics: metrics.clone(),
        audit,
        seal_key,
    };
    let watched = Watched {
        api_keys,
        project_grants,
    };
    control(parts, watched, &status, stop(shutdown, lost.clone())).await;
    metrics.leader.set(0);
    finish(election, lost).await
}

/// What the controller is built from.
struct Parts {
    client: Client,
    options: RunOptions,
    instance: String,
    metrics: Arc<Metrics>,
    audit: AuditLog,
    seal_key: SealKey,
}

async fn client() -> Result<Client, RunError> {
    let mut config = Config::infer().await.map_err(RunError::Config)?;
    // Lets API server audit logs and metrics tell keymint's requests apart.
    config.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_static(concat!("keymint/", env!("CARGO_PKG_VERSION"))),
    ));
    Client::try_from(config).map_err(RunError::Client)
}

fn api_keys(client: &Client, options: &RunOptions) -> Api<GuardedApiKey> {
    scoped(client, options)
}

/// A namespaced resource in the watched namespace, or in all of them.
fn scoped<K>(client: &Client, options: &RunOptions) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &options.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What the controller watches.
struct Watched {
    api_keys: Api<GuardedApiKey>,
    project_grants: Api<ProjectGrant>,
}

async fn elect(
    client: &Client,
    options: &RunOptions,
    instance: &str,
) -> Result<Option<Election>, RunError> {
    if !options.leader_elect {
        return Ok(None);
    }
    let election = Election::start(
        client.clone(),
        &options.namespace,
        &options.lease_name,
        instance,
    )
    .await
    .map_err(RunError::Election)?;
    Ok(Some(election))
}

/// Serves /metrics, /healthz and /readyz from now on (standbys too).
async fn serve_http(
    options: &RunOptions,
    metrics: &Arc<Metrics>,
    election: &Option<Election>,
) -> Result<Arc<Status>, RunError> {
    let listener = http::bind(options.http_addr)
        .await
        .map_err(RunError::Http)?;
    let addr = listener.local_addr().map_err(RunError::Http)?;
    info!(%addr, "serving /metrics, /healthz, /readyz");
    let role = match election {
        Some(e) => e.role(),
        None => tokio::sync::watch::channel(Role::Leader).1,
    };
    let status = Arc::new(Status {
        metrics: metrics.clone(),
        cache: OnceLock::new(),
        caches_synced: AtomicBool::new(false),
        role,
        counted: std::sync::Mutex::new(None),
    });
    tokio::spawn(http::serve(
        listener,
        status.clone(),
        options.limits.clone(),
    ));
    Ok(status)
}

/// Waits to lead (standbys wait here, serving /readyz); false if shut down
/// first.
async fn lead(election: &mut Option<Election>, options: &RunOptions, shutdown: Signal) -> bool {
    let Some(election) = election else {
        return true;
    };
    info!(lease = %options.lease_name, "waiting to lead");
    tokio::select! {
        _ = election.leading() => true,
        _ = shutdown => false,
    }
}

async fn open_audit(
    client: &Client,
    options: &RunOptions,
    instance: &str,
    metrics: &Metrics,
    key: crate::audit::AuditKey,
) -> Result<AuditLog, RunError> {
    let audit_options = AuditOptions {
        namespace: audit_namespace(options),
        segment_bytes: usize::try_from(options.audit_segment_bytes).unwrap_or(64 * 1024),
        retention: options.audit_retention()?,
        instance: instance.to_string(),
        appends: metrics.audit_appends.clone(),
        segments_read: metrics.audit_segments_read.clone(),
        metrics: metrics.audit.clone(),
        key: Arc::new(key),
    };
    AuditLog::open(client.clone(), audit_options)
        .await
        .map_err(RunError::Audit)
}

/// Where the audit stream lives: `--audit-namespace`, else keymint's own.
fn audit_namespace(options: &RunOptions) -> String {
    options
        .audit_namespace
        .clone()
        .unwrap_or_else(|| options.namespace.clone())
}

/// Resolves on shutdown or when the lease is lost.
async fn stop(shutdown: Signal, lost: Signal) {
    tokio::select! {
        _ = shutdown => {}
        _ = lost => warn!("lost the lease: stopping"),
    }
}

/// Runs the controller until `stop`, finishing in-flight reconciles.
async fn control(
    parts: Parts,
    watched: Watched,
    status: &Arc<Status>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mut stop = Box::pin(stop);
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let own_writes = OwnWrites::default();
    let waiting = Arc::new(WaitingKeys::default());
    let cache = Arc::new(ApiKeyCache::default());
    let grants = Arc::new(Grants::default());
    let (grants_listed, mut grants_ready) = tokio::sync::watch::channel(false);
    let granting = tokio::spawn(crate::runtime::grants::watch_grants(
        watched.project_grants,
        grants.clone(),
        cache.clone(),
        wake_tx.clone(),
        grants_listed,
    ));
    let queue = Arc::new(Queue::new(parts.metrics.queue_depth.clone()));
    let api_keys = watched.api_keys.clone();
    // ApiKeys the watch says are gone, to find deletions keymint did not see.
    let (deleted_tx, mut deleted_rx) = futures::channel::mpsc::unbounded();
    let watches = Watches {
        cache: &cache,
        own_writes: &own_writes,
        waiting: &waiting,
        wake: &wake_tx,
        deleted: deleted_tx,
    };
    let triggers = triggers(watched.api_keys, watches);
    let triggers = stream::select(triggers, wake_rx.map(Ok));
    let feeding = tokio::spawn(workers::feed(triggers, queue.clone()));
    let _ = status.cache.set(cache.clone());
    tokio::spawn(crate::runtime::memory::trim_after_bursts(
        TRIM_PERIOD,
        queue.clone(),
    ));
    let concurrency = parts.options.concurrency;
    // Events hold back while keys wait in the queue (`reconcile::events`).
    let busy: Busy = {
        let queue = queue.clone();
        Arc::new(move || queue.depth() > 0)
    };
    let kept = Kept {
        api_keys,
        cache: cache.clone(),
        waiting,
        grants,
    };
    let segments = Segments::new(parts.client.clone(), &audit_namespace(&parts.options));
    let (ctx, events) = context(parts, kept, wake_tx, own_writes, busy);
    let ctx = Arc::new(ctx);
    // Quotas count the cache, and a key is minted only for a granted
    // project: nothing is reconciled before both are listed.
    let listed = async {
        cache.wait_until_ready().await;
        // The sender lives in the grant watch, which runs until aborted.
        let _ = grants_ready.wait_for(|listed| *listed).await;
    };
    let synced = tokio::select! {
        () = listed => true,
        () = &mut stop => false,
    };
    if synced {
        status.caches_synced.store(true, Ordering::Release);
        info!("caches synced; ready");
        tokio::spawn(reconcile::rounds::verify_in_rounds(ctx.clone()));
        let recording = ctx.clone();
        tokio::spawn(async move { reconcile::unobserved::record(&recording, segments).await });
        let seeing = ctx.clone();
        tokio::spawn(async move {
            while let Some(api_key) = deleted_rx.next().await {
                reconcile::unobserved::seen_deleted(&seeing, &api_key).await;
            }
        });
        let shut_down = async {
            stop.await;
            queue.shut_down();
        };
        tokio::join!(
            workers::work(queue.clone(), cache, ctx, concurrency),
            shut_down
        );
    }
    feeding.abort();
    granting.abort();
    // The reconciles are done and their Events queued: publish them.
    events.wait().await;
}

/// The watch of ApiKeys, lean, into the cache, feeding the waiting index,
/// without the echoes of keymint's own status writes: the keys to
/// reconcile.
fn triggers(
    api_keys: Api<GuardedApiKey>,
    watches: Watches<'_>,
) -> impl Stream<Item = Result<ObjectRef<GuardedApiKey>, watcher::Error>> + Send + 'static {
    let (own_writes, cache) = (watches.own_writes.clone(), watches.cache.clone());
    let (waiting, wake) = (watches.waiting.clone(), watches.wake.clone());
    let deleted = watches.deleted;
    // Lean objects (`apikey::lean`): what keymint reads, nothing else.
    list_then_watch(api_keys)
        .default_backoff()
        // Into the cache first; then a key that stopped holding a slot wakes
        // the keys waiting in its pair.
        .inspect_ok(move |event| {
            cache.apply(event);
            for waiting in waiting.observe(event) {
                let _ = wake.unbounded_send(waiting);
            }
            if let watcher::Event::Delete(GuardedApiKey(Ok(api_key))) = event {
                let _ = deleted.unbounded_send(api_key.clone());
            }
        })
        .applied_objects()
        // A status keymint just wrote comes back on the watch: it is what the
        // reconcile decided, so reconciling it again would only repeat the
        // Secret read. Periodic verification still runs.
        .try_filter(move |api_key| std::future::ready(!own_writes.is_echo(api_key)))
        .map_ok(|api_key| queued(&api_key))
}

/// What the ApiKey watch feeds besides the work queue.
struct Watches<'a> {
    cache: &'a Arc<ApiKeyCache>,
    own_writes: &'a OwnWrites,
    waiting: &'a Arc<WaitingKeys>,
    wake: &'a futures::channel::mpsc::UnboundedSender<ObjectRef<GuardedApiKey>>,
    /// The last state of each ApiKey the watch says is gone.
    deleted: futures::channel::mpsc::UnboundedSender<ApiKey>,
}

/// A key as the work queue holds it: its namespace and name. The UID and
/// resource version `from_obj` adds are read by nothing downstream, and a
/// burst of 100,000 creates queues every key at once.
fn queued(api_key: &GuardedApiKey) -> ObjectRef<GuardedApiKey> {
    let mut reference = ObjectRef::from_obj(api_key);
    reference.extra = ObjectRefExtra::default();
    reference
}

/// The state the watches keep and the reconciles read.
struct Kept {
    /// The ApiKeys as watched (all namespaces, or `--watch-namespace`).
    api_keys: Api<GuardedApiKey>,
    cache: Arc<ApiKeyCache>,
    waiting: Arc<WaitingKeys>,
    grants: Arc<Grants>,
}

fn context(
    parts: Parts,
    kept: Kept,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<GuardedApiKey>>,
    own_writes: OwnWrites,
    busy: Busy,
) -> (Context, Flush) {
    let Parts {
        client,
        options,
        instance,
        metrics,
        audit,
        seal_key,
    } = parts;
    let event_source = kube::runtime::events::Reporter {
        controller: "keymint".into(),
        instance: Some(instance),
    };
    info!(
        namespace = %options.namespace,
        watch_namespace = options.watch_namespace.as_deref().unwrap_or("(all)"),
        max_keys_per_owner = options.max_keys_per_owner,
        "keymint starting"
    );
    let ledgers = Api::<ConfigMap>::namespaced(client.clone(), &options.namespace);
    let dropped = metrics.events_dropped.clone();
    let (events, flush) = EventQueue::start(client.clone(), event_source.clone(), dropped, busy);
    let ctx = Context {
        reporter: Reporter {
            recorder: Recorder::new(client.clone(), event_source),
            events,
            audit,
            metrics,
        },
        slots: Slots::new(
            kept.api_keys,
            ledgers,
            kept.cache,
            kept.waiting,
            kept.grants.clone(),
            wake,
            options.max_keys_per_owner,
        ),
        grants: kept.grants,
        client,
        expiry_warning: options.expiry_warning,
        verify_interval: options.verify_interval,
        reveal_window: options.reveal_window,
        max_backoff: options.max_backoff,
        own_writes,
        failures: Failures::default(),
        seal_key,
    };
    (ctx, flush)
}

/// After the controller stopped: a lost lease exits with an error (to come
/// back as a standby); otherwise the lease is released.
async fn finish(election: Option<Election>, lost: Signal) -> Result<(), RunError> {
    if let Some(election) = election {
        if lost.now_or_never().is_some() {
            return Err(RunError::LostLeadership);
        }
        election.resign().await;
    }
    info!("keymint stopped");
    Ok(())
}

/// Names this process in audit entries and Events: the pod's name in a
/// cluster (POD_NAME, from the downward API), else host and process id.
fn instance_name() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "keymint".to_string());
        format!("{host}/{}", std::process::id())
    })
}
