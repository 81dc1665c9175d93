//! The API server's own audit log (the local control plane records every
//! write at Metadata level): who wrote what, to count an operator's writes.

use std::path::PathBuf;

use serde::Deserialize;

use super::control_plane;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Write {
    pub verb: String,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub object_ref: ObjectRef,
    #[serde(default)]
    pub response_status: ResponseStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseStatus {
    #[serde(default)]
    pub code: u16,
}

/// Where the audit log is; None against an external cluster.
pub fn path() -> Option<PathBuf> {
    if std::env::var_os(super::EXTERNAL_CLUSTER_ENV).is_some() {
        return None;
    }
    control_plane()
        .kubeconfig()
        .parent()
        .map(|dir| dir.join("logs/audit.log"))
}

/// The log's current length: pass it to [`keymint_writes_since`] to see only
/// later writes.
pub fn mark() -> u64 {
    path()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

/// Successful writes by keymint (its user agent) in `namespace` since `mark`.
pub fn keymint_writes_since(mark: u64, namespace: &str) -> Vec<Write> {
    let Some(path) = path() else {
        return Vec::new();
    };
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(mark).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..])
        .lines()
        .filter_map(|line| serde_json::from_str::<Write>(line).ok())
        .filter(|w| w.user_agent.starts_with("keymint/"))
        .filter(|w| w.object_ref.namespace == namespace)
        .filter(|w| (200..300).contains(&w.response_status.code))
        .collect()
}
