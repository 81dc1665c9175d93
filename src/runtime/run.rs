//! `keymint run`: wires the controller together and runs it until SIGTERM or
//! Ctrl-C, then finishes in-flight reconciles and exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Config, ResourceExt};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::apikey::GuardedApiKey;
use crate::audit::stream::{AuditLog, AuditOptions};
use crate::quota::waiting::WaitingKeys;
use crate::reconcile::own_writes::OwnWrites;
use crate::reconcile::report::Reporter;
use crate::reconcile::{self, Context};
use crate::runtime::http::{self, Status};
use crate::runtime::leader::{Election, Role};
use crate::runtime::metrics::Metrics;
use crate::runtime::options::RunOptions;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(
        "cannot load a Kubernetes client configuration (check KUBECONFIG or the in-cluster service account): {0}"
    )]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(
        "the ApiKey CRD is not served; install it with `keymint crd | kubectl apply --server-side -f -`: {0}"
    )]
    CrdMissing(#[source] kube::Error),
    #[error("cannot open the audit stream: {0}")]
    Audit(#[source] crate::audit::stream::AuditError),
    #[error("cannot serve HTTP (--http-addr): {0}")]
    Http(#[source] std::io::Error),
    #[error("leader election: {0}")]
    Election(#[source] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that this instance restarts as a standby")]
    LostLeadership,
}

pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let mut config = Config::infer().await.map_err(RunError::Config)?;
    // Lets API server audit logs and metrics tell keymint's requests apart.
    config.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_static(concat!("keymint/", env!("CARGO_PKG_VERSION"))),
    ));
    let client = Client::try_from(config).map_err(RunError::Client)?;

    let api_keys: Api<GuardedApiKey> = match &options.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api_keys
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(RunError::CrdMissing)?;

    let instance = instance_name();
    let metrics = Arc::new(Metrics::new());
    let listener = http::bind(options.http_addr)
        .await
        .map_err(RunError::Http)?;
    info!(addr = %listener.local_addr().map_err(RunError::Http)?, "serving /metrics, /healthz, /readyz");
    let shutdown = shutdown_signal().shared();

    // Leader election: standbys wait here, serving /readyz.
    let mut election = match options.leader_elect {
        true => Some(
            Election::start(
                client.clone(),
                &options.namespace,
                &options.lease_name,
                &instance,
            )
            .await
            .map_err(RunError::Election)?,
        ),
        false => None,
    };
    let role = match &election {
        Some(e) => e.role(),
        None => tokio::sync::watch::channel(Role::Leader).1,
    };
    let status = Arc::new(Status {
        metrics: metrics.clone(),
        store: OnceLock::new(),
        caches_synced: AtomicBool::new(false),
        role,
    });
    tokio::spawn(http::serve(listener, status.clone()));
    if let Some(election) = &mut election {
        info!(lease = %options.lease_name, "waiting to lead");
        tokio::select! {
            _ = election.leading() => {}
            _ = shutdown.clone() => {
                    return Ok(());
            }
        }
    }
    metrics.leader.set(1);

    // Leading: the audit stream is opened now, so its index of what is
    // recorded includes everything an earlier leader appended.
    let audit = AuditLog::open(
        client.clone(),
        AuditOptions {
            namespace: options
                .audit_namespace
                .clone()
                .unwrap_or_else(|| options.namespace.clone()),
            segment_bytes: usize::try_from(options.audit_segment_bytes).unwrap_or(64 * 1024),
            retention: options.audit_retention.clone(),
            instance: instance.clone(),
            appends: metrics.audit_appends.clone(),
        },
    )
    .await
    .map_err(RunError::Audit)?;

    let lost = match &election {
        Some(e) => e.lost().boxed(),
        None => std::future::pending().boxed(),
    };
    let lost = lost.shared();
    let stop = {
        let (shutdown, lost) = (shutdown.clone(), lost.clone());
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = lost => warn!("lost the lease: stopping"),
            }
        }
    };
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let own_writes = OwnWrites::default();
    let (store, writer) = reflector::store();
    let waiting = Arc::new(WaitingKeys::default());
    let triggers = {
        let own_writes = own_writes.clone();
        let (waiting, wake) = (waiting.clone(), wake_tx.clone());
        watcher(api_keys, watcher::Config::default())
            // managedFields are most of a cached ApiKey's memory, and
            // `kubectl apply` (client-side) adds a whole copy of the object
            // as an annotation; keymint reads neither.
            .modify(|api_key| {
                api_key.managed_fields_mut().clear();
                api_key
                    .annotations_mut()
                    .remove("kubectl.kubernetes.io/last-applied-configuration");
            })
            .reflect(writer)
            // After the cache has the change: a key that stopped holding a
            // slot wakes the keys waiting in its pair.
            .inspect_ok(move |event| {
                for waiting in waiting.observe(event) {
                    let _ = wake.unbounded_send(waiting);
                }
            })
            .applied_objects()
            // A status keymint just wrote comes back on the watch: it is what
            // the reconcile decided, so reconciling it again would only
            // repeat the Secret read. Periodic verification still runs.
            .try_filter(move |api_key| std::future::ready(!own_writes.is_echo(api_key)))
    };
    let controller = Controller::for_stream(triggers, store)
        .with_config(ControllerConfig::default().concurrency(options.concurrency))
        .reconcile_on(wake_rx)
        .graceful_shutdown_on(stop);
    let store = controller.store();
    let _ = status.store.set(store.clone());
    {
        let status = status.clone();
        tokio::spawn(async move {
            // The store's readiness wakes only its most recent waiter (the
            // controller's), so look again every so often rather than wait.
            loop {
                let wait =
                    tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready());
                match wait.await {
                    Ok(Ok(())) => {
                        status.caches_synced.store(true, Ordering::Release);
                        info!("caches synced; ready");
                        return;
                    }
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
        });
    }
    let event_reporter = kube::runtime::events::Reporter {
        controller: "keymint".into(),
        instance: Some(instance),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Reporter {
            recorder: Recorder::new(client.clone(), event_reporter.clone()),
            client: client.clone(),
            event_source: event_reporter,
            audit,
            metrics: metrics.clone(),
        },
        controller.store(),
        waiting,
        Api::<ConfigMap>::namespaced(client, &options.namespace),
        options.max_keys_per_owner,
        options.expiry_warning,
        options.verify_interval,
        options.max_backoff,
        wake_tx,
        own_writes,
    ));
    info!(
        namespace = %options.namespace,
        watch_namespace = options.watch_namespace.as_deref().unwrap_or("(all)"),
        max_keys_per_owner = options.max_keys_per_owner,
        "keymint starting"
    );
    controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(apikey = %object, "reconciled"),
                // Reconcile errors are already logged by the error policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => warn!(error = %e, "controller"),
            }
        })
        .await;
    metrics.leader.set(0);
    if let Some(election) = election {
        // Lost the lease: exit with an error, and come back as a standby.
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

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends a pod).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    info!("shutting down: finishing in-flight reconciles");
}
