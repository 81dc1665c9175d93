//! Shutdown on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes sends a pod),
//! for `keymint run` and `keymint verifier` alike.

use tracing::{info, warn};

/// Resolves on SIGINT or SIGTERM; logs `then` ("finishing in-flight
/// reconciles", "... requests").
pub async fn shutdown_signal(then: &'static str) {
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
    info!("shutting down: {then}");
}
