//! The bounds of every listener, as flags (each with an environment twin).
//! `ListenerLimits` is flattened into `keymint run` and `keymint verifier`
//! and applies to each of their listeners; `GrpcLimits` into the
//! verifier's only. `docs/verifier.md` ("Listeners and their bounds") says why each
//! default is what it is.

use std::time::Duration;

use clap::Args;

use crate::duration::parse_duration;

/// `--grpc-max-message-bytes`' default: see the flag.
pub const DEFAULT_GRPC_MAX_MESSAGE_BYTES: u32 = 64 * 1024;

#[derive(Args, Clone, Debug)]
pub struct ListenerLimits {
    /// Open connections at once, per listener. Further connections wait in
    /// the kernel's accept queue until one closes.
    #[arg(long, env = "KEYMINT_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Open connections at once from one source address, per listener, so
    /// that a flood from one pod cannot take the slots of the others (the
    /// kubelet's probes come from the node's address). A connection over
    /// this is closed as soon as it is accepted.
    #[arg(long, env = "KEYMINT_MAX_CONNECTIONS_PER_SOURCE", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_source: u32,

    /// How long a new connection may stay silent: one that has sent no byte
    /// by then is closed (a client that means to ask sends at once).
    #[arg(long, env = "KEYMINT_FIRST_BYTE_TIMEOUT", default_value = "2s",
          value_parser = parse_duration)]
    pub first_byte_timeout: Duration,

    /// How long an HTTP/1 request head (request line and headers) may take,
    /// counted from the connection's start and, on a kept-alive connection,
    /// from the end of the previous response: so it is also how long an idle
    /// keep-alive connection is kept.
    #[arg(long, env = "KEYMINT_HEAD_TIMEOUT", default_value = "5s",
          value_parser = parse_duration)]
    pub head_timeout: Duration,

    /// Largest request head in bytes (HTTP/1 request line and headers, else
    /// 431; HTTP/2 header list). At least 8 KiB, hyper's minimum.
    #[arg(long, env = "KEYMINT_MAX_HEAD_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(8192..=1024 * 1024))]
    pub max_head_bytes: u32,

    /// Most headers in an HTTP/1 request head (else 431).
    #[arg(long, env = "KEYMINT_MAX_HEADERS", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_headers: u16,
}

impl Default for ListenerLimits {
    /// The flags' defaults (and their environment twins): for a server
    /// started without a command line, such as the benchmark's floor.
    fn default() -> Self {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            limits: ListenerLimits,
        }
        Defaults::parse_from(["keymint"]).limits
    }
}

/// The bounds of the verifier's Envoy ext_authz (gRPC, HTTP/2) listener,
/// besides the `ListenerLimits` every listener has.
#[derive(Args, Clone, Debug)]
pub struct GrpcLimits {
    /// Concurrent streams (checks) on one HTTP/2 connection; a client that
    /// needs more opens another connection (Envoy does).
    #[arg(long, env = "KEYMINT_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_concurrent_streams: u32,

    /// Checks being answered at once over all gRPC connections; more wait,
    /// unread, so that the messages being read take at most this times
    /// --grpc-max-message-bytes (16 MiB by default) however many streams
    /// are open. A check takes well under a millisecond: 256 in flight
    /// serve far more than 100,000 checks a second.
    #[arg(long, env = "KEYMINT_GRPC_MAX_IN_FLIGHT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_in_flight: u32,

    /// Checks being answered at once from one source address; more are
    /// refused at once (RESOURCE_EXHAUSTED, unread), so that one pod's slow
    /// bodies cannot take the places of the others' checks.
    #[arg(long, env = "KEYMINT_GRPC_MAX_IN_FLIGHT_PER_SOURCE", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_in_flight_per_source: u32,

    /// Largest CheckRequest in bytes (else RESOURCE_EXHAUSTED). Envoy puts
    /// the original request's headers in it (not its body, unless told to):
    /// a browser's request with cookies makes a CheckRequest of 2.5 KiB
    /// (measured in `verify::grpc`'s tests), and 64 KiB admits any request
    /// Envoy itself admits with its default 60 KiB header limit.
    #[arg(long, env = "KEYMINT_GRPC_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_GRPC_MAX_MESSAGE_BYTES,
          value_parser = clap::value_parser!(u32).range(4096..=4 * 1024 * 1024))]
    pub grpc_max_message_bytes: u32,

    /// Streams a client may reset before the server has accepted them, at
    /// once, before the connection is closed (the HTTP/2 rapid-reset
    /// attack, CVE-2023-44487).
    #[arg(long, env = "KEYMINT_GRPC_MAX_PENDING_RESETS", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_pending_resets: u32,

    /// Streams the server may reset because of a client's protocol errors on
    /// one connection before it closes the connection (RUSTSEC-2024-0003).
    #[arg(long, env = "KEYMINT_GRPC_MAX_LOCAL_RESETS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_local_resets: u32,

    /// How often an HTTP/2 PING checks that the client is still there.
    #[arg(long, env = "KEYMINT_GRPC_KEEPALIVE_INTERVAL", default_value = "30s",
          value_parser = parse_duration)]
    pub grpc_keepalive_interval: Duration,

    /// How long a PING may go unanswered before the connection is closed.
    #[arg(long, env = "KEYMINT_GRPC_KEEPALIVE_TIMEOUT", default_value = "10s",
          value_parser = parse_duration)]
    pub grpc_keepalive_timeout: Duration,

    /// Age at which a connection is asked to go away (GOAWAY): the client
    /// reconnects, so no connection, busy or idle, holds a slot forever.
    #[arg(long, env = "KEYMINT_GRPC_MAX_CONNECTION_AGE", default_value = "5m",
          value_parser = parse_duration)]
    pub grpc_max_connection_age: Duration,

    /// How long, after --grpc-max-connection-age, its checks in flight have
    /// to finish before the connection is closed.
    #[arg(long, env = "KEYMINT_GRPC_MAX_CONNECTION_AGE_GRACE", default_value = "10s",
          value_parser = parse_duration)]
    pub grpc_max_connection_age_grace: Duration,
}
