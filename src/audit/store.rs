//! The audit segments as ConfigMaps in keymint's namespace
//! (`keymint-audit-0000000001`, `...02`, ...): their names, labels and
//! annotations, their content and entries, and the calls that list, read,
//! write (compare-and-swap) and delete them. Every call's error names the
//! segment and the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use crate::apikey::secret::{LABEL_MANAGED_BY, MANAGER};
use crate::audit::segment::parse_segment;
use crate::audit::watermark::Listed;
use crate::audit::{AuditError, Entry, Head, format_time};
use crate::configmap::{CasError, compare_and_swap};

pub const LABEL_AUDIT: &str = "keymint.dev/audit";
pub const SEGMENT_PREFIX: &str = "keymint-audit-";
/// The data key of a segment's entries.
pub const DATA_ENTRIES: &str = "entries";
/// Set on a full segment before its successor is created.
const ANNOTATION_SEALED: &str = "keymint.dev/sealed";
/// On each segment: the chain position it continues from, so an empty
/// segment still knows what its first entry links to.
const ANNOTATION_PREV_SEQ: &str = "keymint.dev/prev-seq";
const ANNOTATION_PREV_HASH: &str = "keymint.dev/prev-hash";
/// On each segment: the time of its newest entry, so that start-up knows
/// which segments to read from the list alone.
const ANNOTATION_NEWEST: &str = "keymint.dev/newest-entry";
/// On each segment: the watermark of its last write (see `watermark`).
const ANNOTATION_WATERMARK: &str = "keymint.dev/watermark";
/// Segments listed per page.
const LIST_PAGE: u32 = 100;

/// The marks a segment write carries besides the chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// The time of the segment's newest entry (None: it has none).
    pub newest: Option<Timestamp>,
    /// Every transition made before it is in the stream (None: unknown).
    pub watermark: Option<Timestamp>,
}

/// The segment ConfigMaps of one namespace.
#[derive(Clone)]
pub struct Segments {
    api: Api<ConfigMap>,
    namespace: String,
}

/// Why a compare-and-swap write of a segment did not land.
pub enum PutError {
    /// Another writer got there first: read again and retry.
    Race,
    /// The write failed: give up this batch (its reconciles retry).
    Failed(AuditError),
}

impl Segments {
    pub fn new(client: Client, namespace: &str) -> Segments {
        Segments {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Segment names, oldest first.
    pub async fn names(&self) -> Result<Vec<String>, AuditError> {
        let listed = self.list().await?;
        Ok(listed.into_iter().map(|s| s.name).collect())
    }

    /// The segments with their marks, oldest first: metadata only, in pages
    /// (a full retention's list at once would be most of start-up's memory).
    pub async fn list(&self) -> Result<Vec<Listed>, AuditError> {
        let mut params = ListParams::default()
            .labels(&format!("{LABEL_AUDIT}=segment"))
            .limit(LIST_PAGE);
        let mut listed = Vec::new();
        loop {
            let page = self.api.list_metadata(&params).await;
            let page = page.map_err(|e| AuditError::List {
                namespace: self.namespace.clone(),
                source: Arc::new(e),
            })?;
            listed.extend(
                page.items
                    .iter()
                    .filter(|m| m.name_any().starts_with(SEGMENT_PREFIX))
                    .map(|m| Listed {
                        name: m.name_any(),
                        newest: time_annotation(m.annotations(), ANNOTATION_NEWEST),
                        watermark: time_annotation(m.annotations(), ANNOTATION_WATERMARK),
                    }),
            );
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        listed.sort_by(|a, b: &Listed| a.name.cmp(&b.name));
        Ok(listed)
    }

    /// The segment `name`; an error if it does not exist.
    pub async fn get(&self, name: &str) -> Result<ConfigMap, AuditError> {
        self.api
            .get(name)
            .await
            .map_err(|e| self.read_error(name, e))
    }

    /// The segment `name`, if it exists.
    pub async fn get_opt(&self, name: &str) -> Result<Option<ConfigMap>, AuditError> {
        let read = self.api.get_opt(name).await;
        read.map_err(|e| self.read_error(name, e))
    }

    /// Creates or replaces `cm` (against the resourceVersion it carries);
    /// returns the version written.
    pub async fn put(&self, cm: &ConfigMap) -> Result<Option<String>, PutError> {
        match compare_and_swap(&self.api, cm).await {
            Ok(version) => Ok(version),
            Err(CasError::Conflict(_)) => Err(PutError::Race),
            Err(CasError::Api(e)) => Err(PutError::Failed(AuditError::Write {
                namespace: self.namespace.clone(),
                segment: cm.name_any(),
                source: Arc::new(e),
            })),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), AuditError> {
        let deleted = self.api.delete(name, &DeleteParams::default()).await;
        deleted.map(drop).map_err(|e| AuditError::Delete {
            namespace: self.namespace.clone(),
            segment: name.to_string(),
            source: Arc::new(e),
        })
    }

    /// The entries of segment `name`, whose content is `content`.
    pub fn entries(&self, name: &str, content: &str) -> Result<Vec<Entry>, AuditError> {
        parse_segment(content).map_err(|e| AuditError::Corrupt {
            namespace: self.namespace.clone(),
            segment: name.to_string(),
            reason: e.to_string(),
        })
    }

    /// The entries of a segment ConfigMap.
    pub fn entries_of(&self, cm: &ConfigMap) -> Result<Vec<Entry>, AuditError> {
        self.entries(&cm.name_any(), content_of(cm))
    }

    fn read_error(&self, name: &str, e: kube::Error) -> AuditError {
        AuditError::Read {
            namespace: self.namespace.clone(),
            segment: name.to_string(),
            source: Arc::new(e),
        }
    }
}

/// The content of a segment ConfigMap: its entries' lines ("" if none).
pub fn content_of(cm: &ConfigMap) -> &str {
    let data = cm.data.as_ref();
    data.and_then(|d| d.get(DATA_ENTRIES))
        .map_or("", String::as_str)
}

/// Whether the segment is full and its successor started.
pub fn is_sealed(cm: &ConfigMap) -> bool {
    cm.annotations().contains_key(ANNOTATION_SEALED)
}

/// What the segment's first entry links to: read from that entry, or for
/// an empty segment from its annotations.
pub fn prev_of(cm: &ConfigMap, entries: &[Entry]) -> Option<Head> {
    if let Some(first) = entries.first() {
        return Some(Head {
            seq: first.seq.saturating_sub(1),
            hash: first.prev.clone(),
        });
    }
    let annotations = cm.annotations();
    Some(Head {
        seq: annotations.get(ANNOTATION_PREV_SEQ)?.parse().ok()?,
        hash: annotations.get(ANNOTATION_PREV_HASH)?.clone(),
    })
}

/// What the entry after the segment links to: its last entry, or for an
/// empty segment what it continues from.
pub fn head_of(cm: &ConfigMap, entries: &[Entry]) -> Option<Head> {
    entries
        .last()
        .map(Head::of)
        .or_else(|| prev_of(cm, entries))
}

/// A time annotation, if present and well-formed.
fn time_annotation(annotations: &BTreeMap<String, String>, key: &str) -> Option<Timestamp> {
    annotations.get(key)?.parse().ok()
}

/// The time of the newest of `entries` (their times are not in order: an
/// entry's is when its transition was made, not when it was appended).
pub fn newest_of(entries: &[Entry]) -> Option<Timestamp> {
    entries.iter().filter_map(Entry::timestamp).max()
}

/// A segment as written: named, labelled as keymint's audit segment,
/// annotated with what its first entry links to, its `marks` (and sealed,
/// if it is full), holding `content`. `resource_version`: the version it
/// was read or written at (None: it does not exist yet).
pub fn configmap(
    name: &str,
    resource_version: Option<String>,
    prev: &Head,
    content: &str,
    sealed: bool,
    marks: Marks,
) -> ConfigMap {
    let mut annotations = BTreeMap::from([
        (ANNOTATION_PREV_SEQ.to_string(), prev.seq.to_string()),
        (ANNOTATION_PREV_HASH.to_string(), prev.hash.clone()),
    ]);
    if sealed {
        annotations.insert(ANNOTATION_SEALED.to_string(), "true".to_string());
    }
    let times = [
        (ANNOTATION_NEWEST, marks.newest),
        (ANNOTATION_WATERMARK, marks.watermark),
    ];
    for (key, time) in times {
        if let Some(time) = time {
            annotations.insert(key.to_string(), format_time(time));
        }
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version,
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
                (LABEL_AUDIT.to_string(), "segment".to_string()),
            ])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            DATA_ENTRIES.to_string(),
            content.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

pub fn segment_name(n: u64) -> String {
    format!("{SEGMENT_PREFIX}{n:010}")
}

pub fn next_segment_name(name: &str) -> String {
    let n: u64 = name
        .strip_prefix(SEGMENT_PREFIX)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    segment_name(n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::{build, encode_segment};

    #[test]
    fn a_segment_is_written_with_its_labels_annotations_and_content() {
        let prev = Head {
            seq: 41,
            hash: format!("sha256:{}", "ab".repeat(32)),
        };
        let cm = configmap(
            "keymint-audit-0000000002",
            None,
            &prev,
            "x\n",
            false,
            Marks::default(),
        );
        assert_eq!(
            cm.labels().get(LABEL_AUDIT).map(String::as_str),
            Some("segment")
        );
        assert_eq!(
            cm.labels().get(LABEL_MANAGED_BY).map(String::as_str),
            Some(MANAGER)
        );
        assert_eq!(content_of(&cm), "x\n");
        assert!(!is_sealed(&cm));
        assert_eq!(prev_of(&cm, &[]), Some(prev.clone()));
        assert_eq!(head_of(&cm, &[]), Some(prev.clone()));
        let sealed = configmap(
            "keymint-audit-0000000002",
            Some("7".into()),
            &prev,
            "",
            true,
            Marks::default(),
        );
        assert!(is_sealed(&sealed));
        assert_eq!(sealed.resource_version().as_deref(), Some("7"));
        assert_eq!(content_of(&ConfigMap::default()), "");
        assert_eq!(prev_of(&ConfigMap::default(), &[]), None);
    }

    #[test]
    fn a_segment_links_through_its_entries_when_it_has_any() {
        let entries = build(5);
        let cm = configmap(
            "s",
            None,
            &Head::genesis(),
            &encode_segment(&entries[2..]),
            false,
            Marks::default(),
        );
        let kept = &entries[2..];
        assert_eq!(prev_of(&cm, kept), Some(Head::of(&entries[1])));
        assert_eq!(head_of(&cm, kept), Some(Head::of(&entries[4])));
    }

    #[test]
    fn a_segment_carries_its_marks_as_annotations() {
        let marks = Marks {
            newest: Some("2026-03-01T00:00:01Z".parse().expect("time")),
            watermark: Some("2026-03-01T00:00:00.5Z".parse().expect("time")),
        };
        let cm = configmap("s", None, &Head::genesis(), "", false, marks);
        let a = cm.annotations();
        assert_eq!(time_annotation(a, ANNOTATION_NEWEST), marks.newest);
        assert_eq!(time_annotation(a, ANNOTATION_WATERMARK), marks.watermark);
        let unmarked = configmap("s", None, &Head::genesis(), "", false, Marks::default());
        assert_eq!(
            time_annotation(unmarked.annotations(), ANNOTATION_NEWEST),
            None
        );
        let entries = build(3);
        assert_eq!(newest_of(&entries), entries[2].timestamp());
        assert_eq!(newest_of(&[]), None);
    }

    #[test]
    fn segments_are_numbered_in_order() {
        assert_eq!(segment_name(1), "keymint-audit-0000000001");
        assert_eq!(
            next_segment_name("keymint-audit-0000000009"),
            "keymint-audit-0000000010"
        );
        assert_eq!(next_segment_name("other"), segment_name(1));
    }
}
