//! The verifier's Prometheus metrics. Labels are bounded — the protocol and
//! the outcome (`valid` or a denial reason) — and never name a key, an
//! ApiKey or an owner.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::verify::decision::{Denial, UNAVAILABLE, Verdict};

/// Which protocol asked.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Protocol {
    ForwardAuth,
    ExtAuthz,
    Json,
}

const PROTOCOLS: [Protocol; 3] = [Protocol::ForwardAuth, Protocol::ExtAuthz, Protocol::Json];
/// `valid`, every denial, and `unavailable`.
const OUTCOMES: usize = 2 + Denial::ALL.len();

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerificationLabels {
    pub protocol: Protocol,
    pub outcome: &'static str,
}

pub struct Metrics {
    pub verifications: Family<VerificationLabels, Counter>,
    /// The counters of `verifications`, resolved once: counting an answer
    /// takes no lock and no label lookup (the hot path of every request).
    counters: [[Counter; OUTCOMES]; PROTOCOLS.len()],
    pub index_keys: Gauge,
    pub contested_hashes: Gauge,
    pub index_age_seconds: Gauge<f64, AtomicU64>,
    pub relists: Counter,
    pub watch_errors: Counter,
    /// `owner_binding::register`: named like `keymint run`'s, outside the
    /// verifier's prefix.
    pub owner_binding_enforced: Gauge,
    /// `listener::refusals::register`: outside the prefix too.
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
        let verifications = Family::<VerificationLabels, Counter>::default();
        let index_keys = Gauge::default();
        let contested_hashes = Gauge::default();
        let index_age_seconds = Gauge::<f64, AtomicU64>::default();
        let relists = Counter::default();
        let watch_errors = Counter::default();
        let mut root = Registry::with_prefix("keymint");
        let owner_binding_enforced = crate::owner_binding::register(&mut root);
        let connections_refused = crate::listener::refusals::register(&mut root);
        let registry = root.sub_registry_with_prefix("verifier");
        registry.register(
            "verifications",
            "Keys verified, by protocol and outcome (valid or the reason refused)",
            verifications.clone(),
        );
        registry.register(
            "index_keys",
            "ApiKeys with a key hash in the index",
            index_keys.clone(),
        );
        registry.register(
            "contested_hashes",
            "Key hashes that two or more Active ApiKeys claim (each such key verifies for nobody; \
             keymint never mints that, so a status was written by someone else)",
            contested_hashes.clone(),
        );
        registry.register(
            "index_age_seconds",
            "Time since the verifier last had proof that its index is current (a complete list, \
             a watch event or bookmark, a probe while the watch is up); since the start before \
             the first list. Past --max-staleness every check answers unavailable",
            index_age_seconds.clone(),
        );
        registry.register(
            "relists",
            "Complete lists of ApiKeys swapped into the index (the first one included)",
            relists.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors of the ApiKey watch (it retries with backoff)",
            watch_errors.clone(),
        );
        // Every series exists from the start, at 0, so alerts can rely on it.
        let counters = PROTOCOLS.map(|protocol| {
            let mut outcomes = std::iter::once("valid")
                .chain(Denial::ALL.iter().map(|d| d.reason()))
                .chain(std::iter::once(UNAVAILABLE));
            std::array::from_fn(|_| {
                let outcome = outcomes.next().unwrap_or("valid");
                verifications
                    .get_or_create(&VerificationLabels { protocol, outcome })
                    .clone()
            })
        });
        Metrics {
            verifications,
            counters,
            index_keys,
            contested_hashes,
            index_age_seconds,
            relists,
            watch_errors,
            owner_binding_enforced,
            connections_refused,
            registry: root,
        }
    }

    /// Counts one answer.
    pub fn count(&self, protocol: Protocol, verdict: &Verdict) {
        let outcome = match verdict {
            Verdict::Valid(_) => 0,
            Verdict::Denied { denial, .. } => 1 + *denial as usize,
            Verdict::Unavailable => OUTCOMES - 1,
        };
        let protocol = PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0);
        self.counters[protocol][outcome].inc();
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_of_every_protocol_is_a_series_from_the_start() {
        let m = Metrics::new();
        m.count(
            Protocol::Json,
            &Verdict::Denied {
                denial: Denial::Unknown,
                key_id: Some("km_x".into()),
            },
        );
        let text = m.encode().expect("encode");
        for line in [
            "keymint_verifier_verifications_total{protocol=\"ForwardAuth\",outcome=\"valid\"} 0",
            "keymint_verifier_verifications_total{protocol=\"ExtAuthz\",outcome=\"wrong-project\"} 0",
            "keymint_verifier_verifications_total{protocol=\"Json\",outcome=\"unknown\"} 1",
            "keymint_verifier_index_keys 0",
            "keymint_verifier_contested_hashes 0",
            "keymint_verifier_index_age_seconds 0.0",
            "keymint_verifier_verifications_total{protocol=\"Json\",outcome=\"unavailable\"} 0",
            "keymint_verifier_relists_total 0",
            "keymint_owner_binding_enforced 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert_eq!(text.matches("verifications_total{").count(), 3 * 8);
        // Each counter is the one its labels name.
        for (protocol, denial) in [
            (Protocol::ForwardAuth, Denial::Revoked),
            (Protocol::ExtAuthz, Denial::WrongProject),
        ] {
            m.count(
                protocol,
                &Verdict::Denied {
                    denial,
                    key_id: None,
                },
            );
            let labels = VerificationLabels {
                protocol,
                outcome: denial.reason(),
            };
            assert_eq!(m.verifications.get_or_create(&labels).get(), 1);
        }
        m.count(Protocol::ExtAuthz, &Verdict::Unavailable);
        let labels = VerificationLabels {
            protocol: Protocol::ExtAuthz,
            outcome: UNAVAILABLE,
        };
        assert_eq!(m.verifications.get_or_create(&labels).get(), 1);
        assert!(!text.contains("km_x"), "no key ids in metrics");
    }
}
