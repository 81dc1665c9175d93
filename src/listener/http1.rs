//! The HTTP/1 server of every HTTP listener (the verifier's serving and
//! probe ports, the operator's probe and metrics port): a request head must
//! fit in `--max-head-bytes` and `--max-headers` (else 431) and arrive
//! within `--head-timeout`, connections take slots in a gate, and shutdown
//! lets requests in flight finish. `axum::serve` sets none of these limits.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;

use crate::listener::admitted::accept;
use crate::listener::gate::Gate;
use crate::listener::limits::ListenerLimits;

/// How long shutdown waits for in-flight requests.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, counting in
/// `refused` the connections its sources' caps refuse.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ListenerLimits,
    refused: Counter,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // hyper starts this timer whenever the connection is ready for a
        // head: when it opens, and when the previous response is written.
        // So it bounds a kept-alive connection's idle time as well.
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.max_head_bytes as usize)
        .max_headers(limits.max_headers as usize);
    let gate = Gate::new(limits, refused);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            admitted = accept(&listener, &gate, limits.first_byte_timeout) => admitted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that breaks its connection is not our error; the
            // slot goes with the connection.
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
