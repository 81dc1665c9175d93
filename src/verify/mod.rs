//! `keymint verifier`: answers "is this key good, and whose is it?" from an
//! in-memory index of key hashes fed by a watch of ApiKeys. It never reads a
//! Secret, and a presented key never leaves the request that carried it.
//!
//! Pure (no I/O, unit-tested): `index` (the lean projection of each Active
//! ApiKey, keyed by key hash, with watch resets handled), `decision` (the
//! verdict on a presented key), `credential` (where a request carries its
//! key), `projects` (which projects a check accepts) and `freshness` (how
//! old the index is, and whether it may answer). I/O: `feed` (the ApiKey watch that fills the index), `http`
//! (forward-auth, `POST /v1/verify`; health and metrics on a port of their
//! own), `grpc` (Envoy ext_authz v3), `metrics`, `options` and `run` (the wiring).

pub mod credential;
pub mod decision;
pub mod feed;
pub mod freshness;
pub mod grpc;
pub mod http;
pub mod index;
pub mod metrics;
pub mod options;
pub mod projects;
pub mod run;
