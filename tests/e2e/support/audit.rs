//! Reading the audit stream as stored, for the tests that check it.

use k8s_openapi::api::core::v1::ConfigMap;
use keymint::audit::{self, Entry};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

/// The label every segment ConfigMap carries.
pub const SEGMENT_SELECTOR: &str = "keymint.dev/audit=segment";
/// The prefix of every segment's name (the number follows).
pub const SEGMENT_PREFIX: &str = "keymint-audit-";

/// The stream in `namespace` as stored, read with `client`: (segment name,
/// `entries`), oldest (lowest number) first.
pub async fn segments(client: &Client, namespace: &str) -> Vec<(String, String)> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut maps: Vec<ConfigMap> = api
        .list(&ListParams::default().labels(SEGMENT_SELECTOR))
        .await
        .expect("list audit segments")
        .items
        .into_iter()
        .filter(|cm| cm.name_any().starts_with(SEGMENT_PREFIX))
        .collect();
    maps.sort_by_key(ResourceExt::name_any);
    maps.iter()
        .map(|cm| {
            let content = cm.data.as_ref().and_then(|d| d.get("entries"));
            (cm.name_any(), content.cloned().unwrap_or_default())
        })
        .collect()
}

/// Every entry of the stream, in order; panics on a malformed line.
pub fn entries(segments: &[(String, String)]) -> Vec<Entry> {
    segments
        .iter()
        .flat_map(|(name, content)| {
            audit::parse_segment(content).unwrap_or_else(|e| panic!("segment {name}: {e}"))
        })
        .collect()
}

/// The checkpoint `keymint audit verify` printed last in `output`.
pub fn checkpoint_in(output: &str) -> String {
    output
        .trim()
        .rsplit_once("checkpoint: ")
        .map(|(_, c)| c.trim().to_string())
        .unwrap_or_else(|| panic!("no checkpoint in {output:?}"))
}
