//! The HTTP endpoints: `/metrics` (Prometheus), `/healthz` (the process is
//! alive) and `/readyz` (ready: caches synced when leading, or standing by),
//! on one bounded listener (`crate::listener`): the operator serves nothing
//! else, so there is no serving port whose load could fail a probe, and the
//! per-source cap keeps one pod's flood off the node's (kubelet's) slots.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use crate::apikey::Phase;
use crate::listener::limits::ListenerLimits;
use crate::runtime::cache::ApiKeyCache;
use crate::runtime::leader::Role;
use crate::runtime::metrics::Metrics;

/// What the endpoints report on.
pub struct Status {
    pub metrics: Arc<Metrics>,
    /// The leader's cache of ApiKeys, once it leads.
    pub cache: OnceLock<Arc<ApiKeyCache>>,
    pub caches_synced: AtomicBool,
    pub role: watch::Receiver<Role>,
    /// When the cache was last counted for the key gauges.
    pub counted: Mutex<Option<Instant>>,
}

/// The key gauges are at most this old: however often `/metrics` is
/// scraped, the cache is walked at most once per interval.
const COUNT_INTERVAL: Duration = Duration::from_secs(5);

/// Whether the cache, last counted at `last`, is due for a count at `now`.
fn count_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= COUNT_INTERVAL)
}

impl Status {
    /// Ready when leading with synced caches, or standing by (ready to take
    /// over); not while the role is unknown or caches are still filling.
    pub fn ready(&self) -> bool {
        match *self.role.borrow() {
            Role::Leader => self.caches_synced.load(Ordering::Acquire),
            Role::Standby => true,
            Role::Unknown => false,
        }
    }
}

/// Serves the endpoints for as long as the process runs.
pub async fn serve(listener: tokio::net::TcpListener, status: Arc<Status>, limits: ListenerLimits) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(status.clone());
    let refused = crate::listener::refusals::of(&status.metrics.connections_refused, "http");
    crate::listener::http1::serve(listener, app, &limits, refused, std::future::pending()).await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn readyz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    if status.ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    if let Some(cache) = status.cache.get() {
        recount(&status, cache);
    }
    openmetrics(status.metrics.encode())
}

/// Sets the key gauges from a walk of the cache, if they are due; a scrape
/// that finds another one counting answers with the gauges as they are.
fn recount(status: &Status, cache: &ApiKeyCache) {
    let Ok(mut counted) = status.counted.try_lock() else {
        return;
    };
    let now = Instant::now();
    if !count_due(*counted, now) {
        return;
    }
    let (counts, expiring_soon) = count_keys(cache);
    status.metrics.set_key_counts(&counts, expiring_soon);
    *counted = Some(now);
}

/// A Prometheus scrape's answer (OpenMetrics text), for every `/metrics`.
pub fn openmetrics(encoded: Result<String, std::fmt::Error>) -> axum::response::Response {
    match encoded {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Keys per phase in the cache, and how many Active keys expire soon.
fn count_keys(cache: &ApiKeyCache) -> (Vec<(Phase, i64)>, i64) {
    let mut counts: Vec<(Phase, i64)> = Vec::new();
    let mut expiring_soon = 0;
    cache.each(|key| {
        let Some(phase) = key.phase() else {
            return;
        };
        match counts.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, n)) => *n += 1,
            None => counts.push((phase, 1)),
        }
        if phase == Phase::Active && key.expiring_soon() {
            expiring_soon += 1;
        }
    });
    (counts, expiring_soon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_counted_at_most_once_per_interval() {
        let start = Instant::now();
        assert!(count_due(None, start), "the first scrape counts");
        assert!(!count_due(Some(start), start + COUNT_INTERVAL / 2));
        assert!(count_due(Some(start), start + COUNT_INTERVAL));
    }
}
