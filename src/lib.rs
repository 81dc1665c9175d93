//! keymint: a Kubernetes operator that manages API keys as custom resources.
//!
//! Pure modules: `api` (the ApiKey types), `crd`, `key` (key format),
//! `quota` (ledger and admission order), `lifecycle` (decisions, status,
//! transitions), `secret` (building and judging the Secret).
//! Kubernetes I/O: `ledger`, `reconcile`, `report`, `run` (`own_writes`
//! keeps keymint's own status writes from triggering reconciles, `waiting`
//! indexes the keys waiting for a quota slot).

pub mod api;
pub mod audit;
pub mod audit_cli;
pub mod audit_stream;
pub mod crd;
pub mod http;
pub mod key;
pub mod leader;
pub mod ledger;
pub mod lifecycle;
pub mod metrics;
pub mod options;
pub mod own_writes;
pub mod quota;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod secret;
pub mod waiting;
