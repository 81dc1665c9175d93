//! `keymint run`: the controller process.
//!
//! For now it connects with the standard kubeconfig resolution (in-cluster
//! service account, `$KUBECONFIG`, `~/.kube/config`), checks that the ApiKey
//! CRD is served, reports ready and waits for a shutdown signal.

use kube::{Api, Client, api::ListParams};
use thiserror::Error;
use tracing::info;

use crate::api::ApiKey;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(
        "cannot build a Kubernetes client (check KUBECONFIG or the in-cluster service account): {0}"
    )]
    Client(#[source] kube::Error),
    #[error(
        "the ApiKey CRD is not served; install it with `keymint crd | kubectl apply -f -`: {0}"
    )]
    CrdMissing(#[source] kube::Error),
    #[error("waiting for a shutdown signal: {0}")]
    Signal(#[source] std::io::Error),
}

pub async fn run() -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let api_keys: Api<ApiKey> = Api::all(client);
    api_keys
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(RunError::CrdMissing)?;
    info!("connected; ApiKey CRD is served; ready");
    shutdown_signal().await.map_err(RunError::Signal)?;
    info!("shutting down");
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends a pod).
async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
