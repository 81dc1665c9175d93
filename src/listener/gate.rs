//! Connection slots: at most `--max-connections` open at once on a
//! listener, and at most `--max-connections-per-source` from one source
//! address, so that one pod's flood cannot take the slots of the others
//! (the kubelet probes from the node's address).

use std::net::IpAddr;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::listener::limits::ListenerLimits;
use crate::listener::per_source::{Held, PerSource};

pub struct Gate {
    total: Arc<Semaphore>,
    sources: Arc<PerSource>,
    /// Connections refused by their source's cap.
    refused: Counter,
}

/// One connection's place: its share of the total and of its source's cap,
/// both given back when it is dropped (the connection closed).
pub struct Slot {
    _source: Held,
    _total: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(limits: &ListenerLimits, refused: Counter) -> Gate {
        Gate {
            total: Arc::new(Semaphore::new(limits.max_connections as usize)),
            sources: PerSource::new(limits.max_connections_per_source),
            refused,
        }
    }

    /// Waits for a free place in the total: the listener accepts nothing
    /// meanwhile, so further connections wait in the kernel's queue.
    pub async fn vacancy(&self) -> OwnedSemaphorePermit {
        match self.total.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("a gate never closes its semaphore"),
        }
    }

    /// The slot of a connection accepted from `source` with `vacancy`, or
    /// None when that source already holds its cap (the vacancy is then
    /// given back).
    pub fn admit(&self, vacancy: OwnedSemaphorePermit, source: IpAddr) -> Option<Slot> {
        let Some(held) = self.sources.take(source) else {
            self.refused.inc();
            return None;
        };
        Some(Slot {
            _source: held,
            _total: vacancy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: ListenerLimits,
    }

    fn gate(total: u32, per_source: u32) -> Gate {
        let flags = Flags::parse_from([
            "test",
            "--max-connections",
            &total.to_string(),
            "--max-connections-per-source",
            &per_source.to_string(),
        ]);
        Gate::new(&flags.limits, Counter::default())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[tokio::test]
    async fn a_source_over_its_cap_is_refused_and_gives_its_vacancy_back() {
        let gate = gate(10, 1);
        let slot = gate.admit(gate.vacancy().await, ip("10.0.0.1"));
        assert!(slot.is_some());
        assert!(gate.admit(gate.vacancy().await, ip("10.0.0.1")).is_none());
        assert_eq!(
            gate.total.available_permits(),
            9,
            "only the admitted one holds a place"
        );
        assert_eq!(gate.refused.get(), 1, "the refusal is counted");
        assert!(gate.admit(gate.vacancy().await, ip("10.0.0.2")).is_some());
    }

    #[tokio::test]
    async fn the_total_waits_for_a_connection_to_close() {
        let gate = gate(1, 1);
        let slot = gate.admit(gate.vacancy().await, ip("10.0.0.1"));
        assert!(
            gate.total.clone().try_acquire_owned().is_err(),
            "no vacancy while the one slot is held"
        );
        drop(slot);
        assert!(gate.total.clone().try_acquire_owned().is_ok());
    }
}
