//! keymint: a Kubernetes operator that manages API keys as custom resources.
//!
//! `api` holds the `ApiKey` types, `crd` the generated CustomResourceDefinition,
//! `key` the key format, and `run` the controller process.

pub mod api;
pub mod crd;
pub mod key;
pub mod run;
