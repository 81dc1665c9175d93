//! The audit stream's metrics: its size against its bound, what retention
//! prunes and why, and the entries appended per namespace (who writes the
//! history). Labels are bounded: two prune reasons, and at most
//! `--audit-metric-namespaces` namespaces (namespaces are bounded by the
//! cluster, but a cluster may hold many; the rest count as `other`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label of entries that belong to no ApiKey (`pruned`).
pub const STREAM_LABEL: &str = "-";
/// The label of namespaces past the cap.
pub const OTHER_LABEL: &str = "other";

/// Not `namespace`: Prometheus gives that label to the scraped pod's
/// namespace (renaming keymint's to `exported_namespace`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabel {
    pub apikey_namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `age` or `size`.
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct AuditMetrics {
    /// Segments in the stream after the last rollover.
    pub segments: Gauge,
    /// `--audit-max-segments`.
    pub max_segments: Gauge,
    /// 1 while the stream holds more segments than its bound.
    pub over_bound: Gauge,
    pub pruned: Family<ReasonLabel, Counter>,
    pub entries: Family<NamespaceLabel, Counter>,
    labels: Arc<Mutex<Labels>>,
}

impl AuditMetrics {
    /// Metrics that label at most `namespaces` namespaces by name.
    pub fn new(namespaces: usize) -> AuditMetrics {
        AuditMetrics {
            segments: Gauge::default(),
            max_segments: Gauge::default(),
            over_bound: Gauge::default(),
            pruned: Family::default(),
            entries: Family::default(),
            labels: Arc::new(Mutex::new(Labels::new(namespaces))),
        }
    }

    /// Labels at most `namespaces` namespaces by name from now on.
    pub fn cap_namespaces(&self, namespaces: usize) {
        self.labels.lock().unwrap_or_else(|e| e.into_inner()).cap = namespaces;
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "audit_segments",
            "Segments in the audit stream",
            self.segments.clone(),
        );
        r.register(
            "audit_max_segments",
            "The audit stream's size bound (--audit-max-segments)",
            self.max_segments.clone(),
        );
        r.register(
            "audit_over_bound",
            "1 while the audit stream holds more segments than its size bound",
            self.over_bound.clone(),
        );
        r.register(
            "audit_pruned_segments",
            "Audit segments removed by retention, by reason (age: past --audit-retention; size: over the bound, past the floor)",
            self.pruned.clone(),
        );
        r.register(
            "audit_entries",
            "Audit entries appended, by the namespace of their ApiKey (\"-\": the stream's own; \"other\": past --audit-metric-namespaces)",
            self.entries.clone(),
        );
    }

    /// Counts an appended entry of an ApiKey in `namespace` ("" for the
    /// stream's own entries).
    pub fn count_entry(&self, namespace: &str) {
        let label = self
            .labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .label(namespace);
        self.entries
            .get_or_create(&NamespaceLabel {
                apikey_namespace: label,
            })
            .inc();
    }

    pub fn count_pruned(&self, reason: &str, segments: usize) {
        self.pruned
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(segments as u64);
    }

    pub fn set_size(&self, segments: usize, max_segments: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.segments.set(gauge(segments));
        self.max_segments.set(gauge(max_segments));
        self.over_bound.set(i64::from(segments > max_segments));
    }
}

/// Which namespaces have a series of their own: the first `cap` seen.
#[derive(Debug)]
struct Labels {
    named: HashSet<String>,
    cap: usize,
}

impl Labels {
    fn new(cap: usize) -> Labels {
        Labels {
            named: HashSet::new(),
            cap,
        }
    }

    /// The label `namespace` is counted under.
    fn label(&mut self, namespace: &str) -> String {
        if namespace.is_empty() {
            return STREAM_LABEL.to_string();
        }
        if self.named.contains(namespace) {
            return namespace.to_string();
        }
        if self.named.len() < self.cap {
            self.named.insert(namespace.to_string());
            return namespace.to_string();
        }
        OTHER_LABEL.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_past_the_cap_count_as_other() {
        let mut labels = Labels::new(2);
        assert_eq!(labels.label("a"), "a");
        assert_eq!(labels.label("b"), "b");
        assert_eq!(labels.label("c"), OTHER_LABEL);
        assert_eq!(labels.label("a"), "a");
        assert_eq!(labels.label(""), STREAM_LABEL);
        assert_eq!(labels.label("d"), OTHER_LABEL);
    }

    #[test]
    fn the_size_gauges_say_when_the_stream_is_over_its_bound() {
        let m = AuditMetrics::new(10);
        let mut r = Registry::with_prefix("keymint");
        m.register(&mut r);
        m.set_size(12, 10);
        m.count_pruned("size", 2);
        m.count_entry("payments");
        m.count_entry("");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).expect("encode");
        for line in [
            "keymint_audit_segments 12",
            "keymint_audit_max_segments 10",
            "keymint_audit_over_bound 1",
            "keymint_audit_pruned_segments_total{reason=\"size\"} 2",
            "keymint_audit_entries_total{apikey_namespace=\"payments\"} 1",
            "keymint_audit_entries_total{apikey_namespace=\"-\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.set_size(10, 10);
        assert_eq!(m.over_bound.get(), 0);
    }
}
