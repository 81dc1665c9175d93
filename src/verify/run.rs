//! `keymint verifier`: wires the ApiKey watch, the index and the HTTP and
//! gRPC servers together, and runs until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use futures::FutureExt as _;
use jiff::Timestamp;
use kube::{Api, Client, Config};
use thiserror::Error;
use tracing::{debug, info};

use crate::apikey::GuardedApiKey;
use crate::verify::credential::Credential;
use crate::verify::decision::{self, Verdict};
use crate::verify::grpc::ExtAuthz;
use crate::verify::index::{self, Index};
use crate::verify::metrics::{Metrics, Protocol};
use crate::verify::options::VerifierOptions;
use crate::verify::{feed, http, listener};

/// Largest ext_authz CheckRequest accepted (Envoy sends headers, and a body
/// only when configured to; keys need neither).
const MAX_GRPC_MESSAGE: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum VerifierError {
    #[error(
        "cannot load a Kubernetes client configuration (check KUBECONFIG or the in-cluster service account): {0}"
    )]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(
        "cannot list ApiKeys (is the CRD installed, and may this account list and watch apikeys.keymint.dev?): {0}"
    )]
    ListApiKeys(#[source] kube::Error),
    #[error(transparent)]
    OwnerBinding(#[from] crate::owner_binding::OwnerBindingError),
    #[error("cannot serve HTTP on --http-addr: {0}")]
    Http(#[source] std::io::Error),
    #[error("cannot serve gRPC on --grpc-addr: {0}")]
    Grpc(#[source] std::io::Error),
    #[error("the gRPC server failed: {0}")]
    GrpcServer(#[source] tonic::transport::Error),
}

/// What the servers and the watch share.
pub struct Shared {
    pub index: RwLock<Index>,
    /// A first complete list is in the index.
    pub synced: AtomicBool,
    pub metrics: Metrics,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            index: RwLock::new(Index::default()),
            synced: AtomicBool::new(false),
            metrics: Metrics::new(),
        }
    }

    /// The verdict on `presented`, counted and logged (by key id only).
    pub fn decide<P: AsRef<str>>(
        &self,
        protocol: Protocol,
        presented: Credential<'_>,
        projects: &[P],
    ) -> Verdict {
        let verdict = decision::verify(
            &index::read(&self.index),
            presented,
            projects,
            Timestamp::now(),
        );
        self.metrics.count(protocol, &verdict);
        debug!(
            ?protocol,
            outcome = verdict.outcome(),
            key_id = verdict.key_id().unwrap_or("-"),
            "verified"
        );
        verdict
    }
}

pub async fn run(options: VerifierOptions) -> Result<(), VerifierError> {
    let mut config = Config::infer().await.map_err(VerifierError::Config)?;
    config.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_static(concat!("keymint-verifier/", env!("CARGO_PKG_VERSION"))),
    ));
    let client = Client::try_from(config).map_err(VerifierError::Client)?;
    let api_keys: Api<GuardedApiKey> = match &options.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api_keys
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(VerifierError::ListApiKeys)?;
    let shared = Arc::new(Shared::new());
    crate::owner_binding::gate(
        &client,
        &options.owner_binding,
        &shared.metrics.owner_binding_enforced,
    )
    .await?;

    let http_listener = tokio::net::TcpListener::bind(options.http_addr)
        .await
        .map_err(VerifierError::Http)?;
    let grpc_listener = tokio::net::TcpListener::bind(options.grpc_addr)
        .await
        .map_err(VerifierError::Grpc)?;
    info!(addr = %http_listener.local_addr().map_err(VerifierError::Http)?,
        "serving HTTP: /forward-auth, /v1/verify, /metrics, /healthz, /readyz");
    info!(addr = %grpc_listener.local_addr().map_err(VerifierError::Grpc)?,
        "serving gRPC: envoy.service.auth.v3.Authorization");
    info!(
        watch_namespace = options.watch_namespace.as_deref().unwrap_or("(all)"),
        "keymint verifier starting"
    );

    let watch = tokio::spawn(feed::feed(api_keys, shared.clone()));
    let shutdown = crate::runtime::signal::shutdown_signal("finishing in-flight requests").shared();
    let http = listener::serve(
        http_listener,
        http::router(shared.clone()),
        shutdown.clone(),
    );
    let ext_authz = AuthorizationServer::new(ExtAuthz {
        shared: shared.clone(),
    })
    .max_decoding_message_size(MAX_GRPC_MESSAGE);
    let grpc = tonic::transport::Server::builder()
        .timeout(Duration::from_secs(5))
        .add_service(ext_authz)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            shutdown,
        );
    let (_, grpc) = tokio::join!(http, grpc);
    watch.abort();
    grpc.map_err(VerifierError::GrpcServer)?;
    info!("keymint verifier stopped");
    Ok(())
}
