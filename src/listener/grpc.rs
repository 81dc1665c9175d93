//! The HTTP/2 server of the verifier's Envoy ext_authz port. tonic's
//! builder passes "no limit" to hyper for what it is not told, so every
//! bound is set here: streams per connection, resets (rapid reset,
//! RUSTSEC-2024-0003), keepalive, connection age, flow-control windows,
//! the header list, checks in flight; the connections themselves come
//! through the same gate and first-byte timeout as every listener's.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::server::TcpConnectInfo;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::listener::admitted::{Admitted, accept};
use crate::listener::gate::Gate;
use crate::listener::limits::{GrpcLimits, ListenerLimits};
use crate::listener::per_source::PerSource;

/// A whole check, body included, must be answered within this (else
/// DEADLINE_EXCEEDED): as for the HTTP routes.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2's own default flow-control window (RFC 9113), for each stream and
/// for the connection as a whole, where hyper's server would grant 1 MiB
/// each: what a client may send that keymint has not yet consumed. A
/// CheckRequest is a few KiB; 64 KiB unconsumed per connection is plenty.
const WINDOW: u32 = 65_535;

/// Serves `routes` on `listener` until `shutdown` resolves, counting in
/// `refused` the connections its sources' caps refuse.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    limits: &ListenerLimits,
    grpc: &GrpcLimits,
    refused: Counter,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let gate = Gate::new(limits, refused);
    let first_byte = limits.first_byte_timeout;
    let incoming = futures::stream::unfold((listener, gate), move |(listener, gate)| async move {
        let admitted = accept(&listener, &gate, first_byte).await;
        Some((Ok::<Admitted, std::io::Error>(admitted), (listener, gate)))
    });
    tonic::transport::Server::builder()
        .timeout(CHECK_TIMEOUT)
        .max_concurrent_streams(grpc.grpc_max_concurrent_streams)
        .http2_max_pending_accept_reset_streams(Some(grpc.grpc_max_pending_resets as usize))
        .http2_max_local_error_reset_streams(Some(grpc.grpc_max_local_resets as usize))
        .http2_keepalive_interval(Some(grpc.grpc_keepalive_interval))
        .http2_keepalive_timeout(Some(grpc.grpc_keepalive_timeout))
        .max_connection_age(grpc.grpc_max_connection_age)
        .max_connection_age_grace(grpc.grpc_max_connection_age_grace)
        .http2_max_header_list_size(limits.max_head_bytes)
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        // Envoy speaks HTTP/2 to ext_authz; an HTTP/1 client is refused.
        .accept_http1(false)
        // Per source first, so that a source over its cap waits for no
        // place in the total.
        .layer(PerSourceLayer(PerSource::new(
            grpc.grpc_max_in_flight_per_source,
        )))
        .layer(GlobalConcurrencyLimitLayer::new(
            grpc.grpc_max_in_flight as usize,
        ))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Wraps the routes in [`PerSourceInFlight`].
#[derive(Clone)]
struct PerSourceLayer(Arc<PerSource>);

impl<S> tower::Layer<S> for PerSourceLayer {
    type Service = PerSourceInFlight<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PerSourceInFlight {
            inner,
            sources: self.0.clone(),
        }
    }
}

/// Refuses a check at once, unread (RESOURCE_EXHAUSTED), when its source
/// has `--grpc-max-in-flight-per-source` checks in flight already.
#[derive(Clone)]
struct PerSourceInFlight<S> {
    inner: S,
    sources: Arc<PerSource>,
}

impl<S> tower::Service<http::Request<Body>> for PerSourceInFlight<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // tonic puts every connection's addresses on its requests.
        let source = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let held = match source.map(|addr| self.sources.take(addr.ip())) {
            Some(None) => {
                let refused = tonic::Status::resource_exhausted(
                    "too many checks in flight from this address (--grpc-max-in-flight-per-source)",
                );
                return Box::pin(std::future::ready(Ok(refused.into_http())));
            }
            Some(held) => held,
            None => None,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(held);
            answer
        })
    }
}
