//! `keymint verifier` options. Every flag has an environment-variable twin,
//! like `keymint run`'s.

use clap::Args;

use crate::runtime::options::LogFormat;

#[derive(Args, Clone, Debug)]
pub struct VerifierOptions {
    /// Address of the HTTP server: /forward-auth, /v1/verify, /metrics,
    /// /healthz and /readyz.
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

    /// Only index ApiKeys in this namespace (default: all namespaces).
    #[arg(long, env = "KEYMINT_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Log format.
    #[arg(long, env = "KEYMINT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub owner_binding: crate::owner_binding::OwnerBindingOptions,
}
