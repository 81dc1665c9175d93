//! Connection slots: at most `--max-connections` open at once on a
//! listener, and at most `--max-connections-per-source` from one source
//! address, so that one pod's flood cannot take the slots of the others
//! (the kubelet probes from the node's address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::listener::limits::ListenerLimits;

pub struct Gate {
    per_source: u32,
    total: Arc<Semaphore>,
    /// Open connections by source; an address leaves the map with its last
    /// connection, so the map is never larger than the total.
    held: Mutex<HashMap<IpAddr, u32>>,
}

/// One connection's place: its share of the total and of its source's cap,
/// both given back when it is dropped (the connection closed).
pub struct Slot {
    gate: Arc<Gate>,
    source: IpAddr,
    _total: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(limits: &ListenerLimits) -> Arc<Gate> {
        Arc::new(Gate {
            per_source: limits.max_connections_per_source,
            total: Arc::new(Semaphore::new(limits.max_connections as usize)),
            held: Mutex::new(HashMap::new()),
        })
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
    /// None when that source already holds its cap.
    pub fn admit(self: &Arc<Self>, vacancy: OwnedSemaphorePermit, source: IpAddr) -> Option<Slot> {
        // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
        let source = source.to_canonical();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(source).or_insert(0);
        if *count >= self.per_source {
            return None;
        }
        *count += 1;
        Some(Slot {
            gate: self.clone(),
            source,
            _total: vacancy,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|n| *n as usize)
            .sum()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .gate
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.source);
            }
        }
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

    fn gate(total: u32, per_source: u32) -> Arc<Gate> {
        let flags = Flags::parse_from([
            "test",
            "--max-connections",
            &total.to_string(),
            "--max-connections-per-source",
            &per_source.to_string(),
        ]);
        Gate::new(&flags.limits)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[tokio::test]
    async fn one_source_cannot_take_the_slots_of_another() {
        let gate = gate(10, 2);
        let a1 = gate.admit(gate.vacancy().await, ip("10.0.0.1"));
        let a2 = gate.admit(gate.vacancy().await, ip("10.0.0.1"));
        assert!(a1.is_some() && a2.is_some());
        assert!(gate.admit(gate.vacancy().await, ip("10.0.0.1")).is_none());
        let b = gate.admit(gate.vacancy().await, ip("10.0.0.2"));
        assert!(b.is_some(), "another source still gets a slot");
        drop(a1);
        assert!(gate.admit(gate.vacancy().await, ip("10.0.0.1")).is_some());
    }

    #[tokio::test]
    async fn a_refused_or_closed_connection_gives_its_places_back() {
        let gate = gate(2, 1);
        let slot = gate.admit(gate.vacancy().await, ip("10.0.0.1"));
        assert!(gate.admit(gate.vacancy().await, ip("10.0.0.1")).is_none());
        assert_eq!(
            gate.total.available_permits(),
            1,
            "the refused one's vacancy is back"
        );
        drop(slot);
        assert_eq!(gate.total.available_permits(), 2);
        assert_eq!(
            gate.open(),
            0,
            "no address is remembered without a connection"
        );
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

    #[tokio::test]
    async fn ipv4_over_ipv6_counts_as_the_ipv4_source() {
        let gate = gate(10, 1);
        let _v4 = gate.admit(gate.vacancy().await, ip("10.0.0.1"));
        assert!(
            gate.admit(gate.vacancy().await, ip("::ffff:10.0.0.1"))
                .is_none()
        );
    }
}
