//! Every TCP listener keymint serves on, bounded against hostile clients:
//! the operator's probes and metrics, the verifier's HTTP, gRPC and probe
//! ports. Below the handlers, so no route can forget a bound.
//!
//! - `limits`: the bounds, as flags shared by `keymint run` and
//!   `keymint verifier` (and the verifier's gRPC ones).
//! - `gate`: connection slots, in total and per source address.
//! - `per_source`: places held per source address, each source capped
//!   (connections, gRPC checks in flight).
//! - `admitted`: the accept loop, and an accepted connection that holds its
//!   slot and must send its first byte in time.
//! - `refusals`: the count of connections refused by a source's cap.
//! - `http1`: the HTTP/1 server (head size and time, graceful shutdown).
//! - `grpc`: the HTTP/2 (gRPC) server (streams, resets, keepalive, age,
//!   message size, checks in flight in total and per source).

pub mod admitted;
pub mod gate;
pub mod grpc;
pub mod http1;
pub mod limits;
pub mod per_source;
pub mod refusals;
