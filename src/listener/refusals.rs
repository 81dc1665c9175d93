//! `keymint_connections_refused_total{listener}`: connections closed as
//! soon as accepted because their source held `--max-connections-per-source`
//! already. Registered by both processes, outside the verifier's prefix,
//! so one alert covers both. A steady rate means an attack, or a gateway
//! that needs a higher cap.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Which listener: `http`, `grpc` or `probe` (bounded: the process's
/// ports).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

pub type Refusals = Family<ListenerLabel, Counter>;

pub fn register(registry: &mut Registry) -> Refusals {
    let refusals = Refusals::default();
    registry.register(
        "connections_refused",
        "Connections closed as soon as accepted: their source address held --max-connections-per-source already",
        refusals.clone(),
    );
    refusals
}

/// The counter of `listener`.
pub fn of(refusals: &Refusals, listener: &'static str) -> Counter {
    refusals.get_or_create(&ListenerLabel { listener }).clone()
}
