//! keymint: a Kubernetes operator that manages API keys as custom resources.
//!
//! Folders by capability; the pure cores do no I/O and import no Kubernetes
//! client (a unit test in this file keeps it so):
//! - `apikey`: the ApiKey resource, its CRD, the key format, the Secret, and
//!   the lifecycle decisions (pure).
//! - `grant`: the ProjectGrant resource, its CRD, and the rule "may this
//!   namespace use this project" (pure).
//! - `quota`: the ledger and the admission order (pure), the ledger's
//!   ConfigMap store, slot requests and the index of waiting keys (I/O).
//! - `audit`: entries, the hash chain and verification (pure), the stream in
//!   ConfigMaps and the `keymint audit` command (I/O).
//! - `reconcile`: one ApiKey reconciled — observe, decide, act — its errors,
//!   and the reports (Events, audit entries) of its transitions.
//! - `people`: `keymint create`, `list`, `describe`, `delete` (also as
//!   `kubectl keymint`): errors, verdicts and tables (pure), the calls (I/O).
//! - `runtime`: `keymint run` wiring, options, HTTP endpoints, leader
//!   election, metrics.
//! - `owner_binding`: whether the admission policy that binds an ApiKey's
//!   owner to its creator is enforced (pure judge), checked by `run` and
//!   `verifier` at start-up and every minute.
//! - `listener`: every port's bounds against hostile clients (connections
//!   in total and per source, head size and time, HTTP/2 streams, resets,
//!   age), shared by `run` and `verifier`.
//! - `verify`: `keymint verifier` — the index of key hashes and the verdict
//!   (pure), the ApiKey watch, forward-auth, JSON and Envoy ext_authz.

pub mod api_error;
pub mod apikey;
pub mod audit;
pub mod configmap;
pub mod crds;
pub mod digest;
pub mod duration;
pub mod grant;
pub mod listener;
pub mod owner_binding;
pub mod people;
pub mod quota;
pub mod reconcile;
pub mod runtime;
pub mod texts;
pub mod verify;
