//! `keymint verifier`: wires the ApiKey watch, the index and the HTTP and
//! gRPC servers together, and runs until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use futures::FutureExt as _;
use jiff::Timestamp;
use kube::{Api, Client, Config};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::apikey::GuardedApiKey;
use crate::listener;
use crate::owner_binding::OwnerBindingError;
use crate::verify::credential::Credential;
use crate::verify::decision::{self, Verdict};
use crate::verify::freshness::{self, Freshness};
use crate::verify::grpc::ExtAuthz;
use crate::verify::index::{self, Index};
use crate::verify::metrics::{Metrics, Protocol};
use crate::verify::options::VerifierOptions;
use crate::verify::projects::Projects;
use crate::verify::{feed, http};

/// How long one owner-binding check may take while the API server is out
/// of reach (a black-holed connection never fails by itself), and how long
/// to wait before the next.
const GATE_ATTEMPT: Duration = Duration::from_secs(10);
const GATE_RETRY: Duration = Duration::from_secs(1);

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
    OwnerBinding(#[from] OwnerBindingError),
    #[error("the owner-binding check stopped unexpectedly: {0}")]
    Gate(#[source] tokio::task::JoinError),
    #[error("cannot serve HTTP on --http-addr: {0}")]
    Http(#[source] std::io::Error),
    #[error("cannot serve probes and metrics on --probe-addr: {0}")]
    Probe(#[source] std::io::Error),
    #[error("cannot serve gRPC on --grpc-addr: {0}")]
    Grpc(#[source] std::io::Error),
    #[error("the gRPC server failed: {0}")]
    GrpcServer(#[source] tonic::transport::Error),
}

/// What the servers and the watch share.
pub struct Shared {
    pub index: RwLock<Index>,
    /// Whether the index may answer, and how old it is.
    pub freshness: Freshness,
    /// `--default-project`: what a check that names no project accepts.
    pub default_project: Option<String>,
    pub metrics: Metrics,
}

impl Shared {
    fn new(max_staleness: Duration, default_project: Option<String>) -> Shared {
        Shared {
            index: RwLock::new(Index::default()),
            freshness: Freshness::new(max_staleness, Instant::now()),
            default_project,
            metrics: Metrics::new(),
        }
    }

    /// The verdict on `presented`, counted and logged (by key id only);
    /// unavailable, without a look at the index, when it is stale or not
    /// yet listed.
    pub fn decide(
        &self,
        protocol: Protocol,
        presented: Credential<'_>,
        projects: &Projects<'_>,
    ) -> Verdict {
        let verdict = match self.freshness.available() {
            true => decision::verify(
                &index::read(&self.index),
                presented,
                projects,
                Timestamp::now(),
            ),
            false => Verdict::Unavailable,
        };
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
    // Fail fast on what only an administrator can fix (no CRD, no RBAC);
    // an API server out of reach is waited for, answering 503 meanwhile.
    let reachable = tokio::time::timeout(options.max_staleness, probe(&api_keys)).await;
    match reachable {
        Ok(Err(e @ kube::Error::Api(_))) => return Err(VerifierError::ListApiKeys(e)),
        Ok(Err(e)) => {
            warn!(error = %e, "cannot reach the API server yet; answering 503 until the index is listed")
        }
        Err(_) => warn!(
            "the API server did not answer in --max-staleness; answering 503 until the index is listed"
        ),
        Ok(Ok(())) => {}
    }

    let shared = Arc::new(Shared::new(
        options.max_staleness,
        options.default_project.clone(),
    ));
    let http_listener = tokio::net::TcpListener::bind(options.http_addr)
        .await
        .map_err(VerifierError::Http)?;
    let grpc_listener = tokio::net::TcpListener::bind(options.grpc_addr)
        .await
        .map_err(VerifierError::Grpc)?;
    let probe_listener = tokio::net::TcpListener::bind(options.probe_addr)
        .await
        .map_err(VerifierError::Probe)?;
    info!(addr = %http_listener.local_addr().map_err(VerifierError::Http)?,
        "serving HTTP: /forward-auth, /v1/verify");
    info!(addr = %probe_listener.local_addr().map_err(VerifierError::Probe)?,
        "serving probes: /healthz, /readyz, /metrics");
    info!(addr = %grpc_listener.local_addr().map_err(VerifierError::Grpc)?,
        "serving gRPC: envoy.service.auth.v3.Authorization");
    info!(
        watch_namespace = options.watch_namespace.as_deref().unwrap_or("(all)"),
        default_project = options.default_project.as_deref().unwrap_or("(none: a check must name its projects)"),
        max_staleness = ?options.max_staleness,
        "keymint verifier starting"
    );

    let mut watch = tokio::spawn(gate_then_feed(
        client,
        options.owner_binding.clone(),
        api_keys.clone(),
        shared.clone(),
    ));
    let probes = tokio::spawn(probe_while_watching(api_keys, shared.clone()));
    let ticker = tokio::spawn(tick(shared.clone()));
    let shutdown = crate::runtime::signal::shutdown_signal("finishing in-flight requests").shared();
    let limits = &options.limits;
    let refused = |name| listener::refusals::of(&shared.metrics.connections_refused, name);
    let http = listener::http1::serve(
        http_listener,
        http::router(shared.clone()),
        limits,
        refused("http"),
        shutdown.clone(),
    );
    let probes_served = listener::http1::serve(
        probe_listener,
        http::probe_router(shared.clone()),
        limits,
        refused("probe"),
        shutdown.clone(),
    );
    let ext_authz = AuthorizationServer::new(ExtAuthz {
        shared: shared.clone(),
    })
    .max_decoding_message_size(options.grpc_limits.grpc_max_message_bytes as usize);
    let grpc = listener::grpc::serve(
        grpc_listener,
        tonic::service::Routes::new(ext_authz),
        limits,
        &options.grpc_limits,
        refused("grpc"),
        shutdown,
    );
    let servers = async { tokio::join!(http, probes_served, grpc) };
    let (_, _, grpc) = tokio::select! {
        servers = servers => servers,
        // Only a refusal by the owner binding ends the watch task.
        gated = &mut watch => return match gated {
            Ok(refused) => refused,
            Err(e) => Err(VerifierError::Gate(e)),
        },
    };
    watch.abort();
    probes.abort();
    ticker.abort();
    grpc.map_err(VerifierError::GrpcServer)?;
    info!("keymint verifier stopped");
    Ok(())
}

/// The owner binding is judged before anything is indexed, so nothing
/// verifies until it has been: a verifier started while the API server is
/// out of reach answers 503 meanwhile, and stops with the reason if the
/// binding turns out not to be enforced (or cannot be read: RBAC). Returns
/// only on that refusal; the feed runs for as long as the verifier does.
async fn gate_then_feed(
    client: Client,
    options: crate::owner_binding::OwnerBindingOptions,
    api_keys: Api<GuardedApiKey>,
    shared: Arc<Shared>,
) -> Result<(), VerifierError> {
    let enforced = &shared.metrics.owner_binding_enforced;
    loop {
        let attempt = crate::owner_binding::gate(&client, &options, enforced);
        match tokio::time::timeout(GATE_ATTEMPT, attempt).await {
            Ok(Ok(())) => break,
            Ok(Err(OwnerBindingError::Read {
                source: source @ (kube::Error::HyperError(_) | kube::Error::Service(_)),
                ..
            })) => {
                warn!(error = %source, "cannot reach the API server to check the owner binding; answering 503 meanwhile")
            }
            Ok(Err(refused)) => return Err(refused.into()),
            Err(_) => warn!(
                "the API server did not answer the owner-binding check in time; answering 503 meanwhile"
            ),
        }
        tokio::time::sleep(GATE_RETRY).await;
    }
    feed::feed(api_keys, shared).await;
    Ok(())
}

/// The cheapest read that proves the API server answers: one ApiKey's
/// metadata, as a consistent read.
async fn probe(api_keys: &Api<GuardedApiKey>) -> Result<(), kube::Error> {
    let one = kube::api::ListParams::default().limit(1);
    api_keys.list_metadata(&one).await.map(|_| ())
}

/// Probes the API server every third of `--max-staleness` (each probe
/// given as long), so that an idle watch, silent between bookmarks, still
/// proves its index current; see `freshness` for when a probe counts.
async fn probe_while_watching(api_keys: Api<GuardedApiKey>, shared: Arc<Shared>) {
    let every = freshness::probe_interval(shared.freshness.max());
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(started) = shared.freshness.probe(Instant::now()) else {
            continue;
        };
        match tokio::time::timeout(every, probe(&api_keys)).await {
            Ok(Ok(())) => shared.freshness.probed(started, Instant::now()),
            Ok(Err(e)) => {
                debug!(error = %e, "probe of the API server (list ApiKeys, limit 1) failed")
            }
            Err(_) => {
                debug!(timeout = ?every, "probe of the API server (list ApiKeys, limit 1) timed out")
            }
        }
    }
}

/// Recomputes availability and the age gauge every tick, and says when
/// the index turns stale and when it is fresh again.
async fn tick(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(freshness::tick_interval(shared.freshness.max()));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut was_available, mut went_stale) = (false, false);
    loop {
        interval.tick().await;
        let age = shared.freshness.tick(Instant::now());
        shared.metrics.index_age_seconds.set(age.as_secs_f64());
        let available = shared.freshness.available();
        if was_available && !available {
            went_stale = true;
            warn!(
                age = ?age, max_staleness = ?shared.freshness.max(),
                "the index has had no proof of being current for longer than --max-staleness: \
                 answering 503 / UNAVAILABLE until the ApiKey watch proves it again"
            );
        } else if went_stale && available && !was_available {
            info!("the index is current again; answering");
        }
        was_available = available;
    }
}
