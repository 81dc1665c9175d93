//! `keymint run`: wires the controller together and runs it until SIGTERM or
//! Ctrl-C, then finishes in-flight reconciles and exits.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::options::RunOptions;
use crate::reconcile::{self, Context, GuardedApiKey};

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
}

pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let mut config = Config::infer().await.map_err(RunError::Config)?;
    // Lets API server audit logs and metrics tell keymint's requests apart.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("keymint/", env!("CARGO_PKG_VERSION"))),
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

    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let controller = Controller::new(api_keys, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(options.concurrency))
        .reconcile_on(wake_rx)
        .graceful_shutdown_on(shutdown_signal());
    let reporter = Reporter {
        controller: "keymint".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Recorder::new(client.clone(), reporter),
        controller.store(),
        Api::<ConfigMap>::namespaced(client, &options.namespace),
        options.max_keys_per_owner,
        options.expiry_warning,
        options.verify_interval,
        options.max_backoff,
        wake_tx,
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
    info!("keymint stopped");
    Ok(())
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
