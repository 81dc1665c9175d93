//! `keymint verifier` options. Every flag has an environment-variable twin,
//! like `keymint run`'s.

use clap::Args;

use crate::duration::parse_duration;
use crate::runtime::options::LogFormat;

#[derive(Args, Clone, Debug)]
pub struct VerifierOptions {
    /// Address of the HTTP server: /forward-auth and /v1/verify.
    #[arg(
        long,
        env = "KEYMINT_VERIFIER_HTTP_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub http_addr: std::net::SocketAddr,

    /// Address of the Envoy ext_authz v3 gRPC server.
    #[arg(
        long,
        env = "KEYMINT_VERIFIER_GRPC_ADDR",
        default_value = "0.0.0.0:9001"
    )]
    pub grpc_addr: std::net::SocketAddr,

    /// Address of /healthz, /readyz and /metrics: a listener of their own,
    /// so that no load on the serving ports can fail a probe.
    #[arg(
        long,
        env = "KEYMINT_VERIFIER_PROBE_ADDR",
        default_value = "0.0.0.0:8082"
    )]
    pub probe_addr: std::net::SocketAddr,

    /// Only index ApiKeys in this namespace (default: all namespaces).
    #[arg(long, env = "KEYMINT_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// The project a check that names none is checked against, for a
    /// deployment that serves one project. Without it, such a check is
    /// refused (400).
    #[arg(long, env = "KEYMINT_VERIFIER_DEFAULT_PROJECT")]
    pub default_project: Option<String>,

    /// How old the index may grow without proof that it is current (a watch
    /// event or bookmark, or a probe of the API server while the watch is
    /// up) before /readyz fails and every check answers 503 / UNAVAILABLE.
    #[arg(long, env = "KEYMINT_VERIFIER_MAX_STALENESS", default_value = "30s",
          value_parser = parse_staleness)]
    pub max_staleness: std::time::Duration,

    /// Log format.
    #[arg(long, env = "KEYMINT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub limits: crate::listener::limits::ListenerLimits,

    #[command(flatten)]
    pub grpc_limits: crate::listener::limits::GrpcLimits,

    #[command(flatten)]
    pub owner_binding: crate::owner_binding::OwnerBindingOptions,
}

/// A staleness bound: a duration of at least 1 s (the API server is
/// probed every third of it, and a probe needs a round trip).
fn parse_staleness(s: &str) -> Result<std::time::Duration, String> {
    let bound = parse_duration(s)?;
    match bound >= std::time::Duration::from_secs(1) {
        true => Ok(bound),
        false => Err("must be at least 1s".to_string()),
    }
}
