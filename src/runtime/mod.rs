//! `keymint run`: wiring (`run`), start-up checks (`preflight`), options,
//! the HTTP endpoints, leader election, metrics, keymint's key Secrets
//! (`key_secret`: the provenance seal key, `seal_key`, and the audit key,
//! `audit_key`), and the watches behind the caches (ApiKeys: `watch`,
//! `cache`; ProjectGrants: `grants`).

pub mod audit_key;
pub mod cache;
pub mod grants;
pub mod http;
pub mod key_secret;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod options;
pub mod preflight;
pub mod queue;
pub mod run;
pub mod seal_key;
pub mod signal;
pub mod watch;
pub mod workers;
