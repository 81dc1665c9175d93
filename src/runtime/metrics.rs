//! Prometheus metrics. Labels are bounded: phases, error categories, and
//! the namespaces of audit entries up to a cap (`audit::metrics`) — never
//! ApiKey names, owners or error text, which would make the number of
//! series grow with the cluster.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::apikey::Phase;
use crate::audit::metrics::AuditMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    pub category: String,
}

/// Every metric keymint exports.
pub struct Metrics {
    pub keys: Family<PhaseLabel, Gauge>,
    pub keys_expiring_soon: Gauge,
    pub mints: Counter,
    pub rejections: Counter,
    pub expiries: Counter,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<CategoryLabel, Counter>,
    /// From `expiresAt` to the Secret's deletion.
    pub expiry_lag: Histogram,
    pub audit_appends: Counter<u64, AtomicU64>,
    /// Audit segments read when the stream was opened (this leadership).
    pub audit_segments_read: Gauge,
    /// The stream's size, bound, prunes and entries per namespace.
    pub audit: AuditMetrics,
    /// Transition Events dropped because their queue was full.
    pub events_dropped: Counter,
    /// ApiKeys deleted without keymint's cleanup (`reconcile::unobserved`).
    pub deletions_unobserved: Counter,
    /// ApiKeys due and waiting for a worker (`runtime::queue`).
    pub queue_depth: Gauge,
    pub leader: Gauge,
    /// `owner_binding::register`.
    pub owner_binding_enforced: Gauge,
    /// `listener::refusals::register`.
    pub connections_refused: crate::listener::refusals::Refusals,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keymint");
        let owner_binding_enforced = crate::owner_binding::register(&mut registry);
        let connections_refused = crate::listener::refusals::register(&mut registry);
        let mut m = Metrics {
            keys: Family::default(),
            keys_expiring_soon: Gauge::default(),
            mints: Counter::default(),
            rejections: Counter::default(),
            expiries: Counter::default(),
            // 1 ms to ~16 s.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            reconcile_errors: Family::default(),
            // 1 ms to ~33 s: the target is under a second.
            expiry_lag: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            audit_appends: Counter::default(),
            audit_segments_read: Gauge::default(),
            audit: AuditMetrics::new(DEFAULT_AUDIT_NAMESPACES),
            events_dropped: Counter::default(),
            deletions_unobserved: Counter::default(),
            queue_depth: Gauge::default(),
            leader: Gauge::default(),
            owner_binding_enforced,
            connections_refused,
            registry,
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "keys",
            "ApiKeys by phase (as cached by the leader)",
            self.keys.clone(),
        );
        r.register(
            "keys_expiring_soon",
            "Active keys inside the --expiry-warning window",
            self.keys_expiring_soon.clone(),
        );
        r.register("mints", "Keys minted", self.mints.clone());
        r.register(
            "rejections",
            "ApiKeys rejected by the quota",
            self.rejections.clone(),
        );
        r.register("expiries", "Keys expired", self.expiries.clone());
        r.register(
            "reconcile_duration_seconds",
            "Time to reconcile one ApiKey",
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            self.reconcile_errors.clone(),
        );
        r.register(
            "expiry_lag_seconds",
            "Delay from expiresAt to the key's Secret being deleted",
            self.expiry_lag.clone(),
        );
        r.register(
            "audit_appends",
            "Entries appended to the audit stream",
            self.audit_appends.clone(),
        );
        r.register(
            "audit_segments_read_at_open",
            "Audit segments read when this leader opened the stream (start-up cost)",
            self.audit_segments_read.clone(),
        );
        self.audit.register(r);
        r.register(
            "events_dropped",
            "Transition Events dropped because their queue was full",
            self.events_dropped.clone(),
        );
        r.register(
            "deletions_unobserved",
            "ApiKeys deleted without keymint's cleanup (their finalizer removed by someone else), recorded as deleted-unobserved",
            self.deletions_unobserved.clone(),
        );
        r.register(
            "queue_depth",
            "ApiKeys due to be reconciled and waiting for a worker",
            self.queue_depth.clone(),
        );
        r.register(
            "leader",
            "1 while this instance leads (reconciles), else 0",
            self.leader.clone(),
        );
    }

    /// Sets the per-phase gauges from a count of the cache: every phase is
    /// always present, at 0 when no key has it, so alerts can rely on it.
    pub fn set_key_counts(&self, counts: &[(Phase, i64)], expiring_soon: i64) {
        for phase in ALL_PHASES {
            let n = counts
                .iter()
                .filter(|(p, _)| *p == phase)
                .map(|(_, n)| n)
                .sum();
            self.keys
                .get_or_create(&PhaseLabel {
                    phase: format!("{phase:?}"),
                })
                .set(n);
        }
        self.keys_expiring_soon.set(expiring_soon);
    }

    /// Counts one failure of `category` (a bounded name: an error category
    /// or `InvalidSpec`).
    pub fn count_failure(&self, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&CategoryLabel {
                category: category.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// `--audit-metric-namespaces`'s default.
pub const DEFAULT_AUDIT_NAMESPACES: usize = 1000;

pub const ALL_PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Active,
    Phase::Rejected,
    Phase::Conflict,
    Phase::Expired,
    Phase::SecretLost,
    Phase::SecretTampered,
    Phase::NeverShown,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_metric_the_example_alerts_use_exists() {
        // Families show only once they have a member.
        let m = Metrics::new();
        m.set_key_counts(&[], 0);
        m.count_failure("KubernetesApi");
        m.audit.count_entry("payments");
        m.audit.count_pruned("age", 1);
        crate::listener::refusals::of(&m.connections_refused, "http").inc();
        let text = m.encode().expect("encode");
        let alerts = include_str!("../../docs/alerts.yaml");
        let names = alerts
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("keymint_") && !w.starts_with("keymint_verifier_"));
        let mut checked = 0;
        for name in names {
            let family = ["_total", "_bucket"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "docs/alerts.yaml uses {name}, which keymint does not export"
            );
            checked += 1;
        }
        assert!(checked > 10, "{checked} metric names found in the alerts");
    }

    #[test]
    fn metrics_have_bounded_labels_and_documented_names() {
        let m = Metrics::new();
        m.set_key_counts(&[(Phase::Active, 3), (Phase::Rejected, 1)], 2);
        m.mints.inc();
        m.reconcile_errors
            .get_or_create(&CategoryLabel {
                category: "KubernetesApi".into(),
            })
            .inc();
        m.expiry_lag.observe(0.02);
        let text = m.encode().expect("encode");
        for name in [
            "keymint_keys{phase=\"Active\"} 3",
            "keymint_keys{phase=\"Expired\"} 0",
            "keymint_keys_expiring_soon 2",
            "keymint_mints_total 1",
            "keymint_rejections_total 0",
            "keymint_expiries_total 0",
            "keymint_reconcile_errors_total{category=\"KubernetesApi\"} 1",
            "keymint_expiry_lag_seconds_count 1",
            "keymint_reconcile_duration_seconds_count 0",
            "keymint_audit_appends_total 0",
            "keymint_audit_segments_read_at_open 0",
            "keymint_audit_segments 0",
            "keymint_audit_over_bound 0",
            "keymint_leader 0",
            "keymint_owner_binding_enforced 0",
        ] {
            assert!(text.contains(name), "missing {name:?} in\n{text}");
        }
    }
}
