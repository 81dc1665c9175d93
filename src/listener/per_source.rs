//! Places held per source address, at most a cap each: the connections of
//! a listener (`gate`), the gRPC checks in flight (`grpc`). So that one
//! pod's flood cannot take the places of the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

pub struct PerSource {
    cap: u32,
    /// Places held by source; an address leaves the map with its last
    /// place, so the map never outgrows what is held.
    held: Mutex<HashMap<IpAddr, u32>>,
}

/// One place of one source, given back when dropped.
pub struct Held {
    counts: Arc<PerSource>,
    source: IpAddr,
}

impl PerSource {
    pub fn new(cap: u32) -> Arc<PerSource> {
        Arc::new(PerSource {
            cap,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A place for `source`, or None when it holds its cap already.
    pub fn take(self: &Arc<Self>, source: IpAddr) -> Option<Held> {
        // An IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d.
        let source = source.to_canonical();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(source).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Held {
            counts: self.clone(),
            source,
        })
    }

    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self
            .counts
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

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn one_source_cannot_take_the_places_of_another() {
        let counts = PerSource::new(2);
        let a1 = counts.take(ip("10.0.0.1"));
        let a2 = counts.take(ip("10.0.0.1"));
        assert!(a1.is_some() && a2.is_some());
        assert!(counts.take(ip("10.0.0.1")).is_none());
        assert!(
            counts.take(ip("10.0.0.2")).is_some(),
            "another source still gets one"
        );
        drop(a1);
        assert!(counts.take(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn no_address_is_remembered_without_a_place() {
        let counts = PerSource::new(1);
        let held = counts.take(ip("10.0.0.1"));
        assert_eq!(counts.sources(), 1);
        drop(held);
        assert_eq!(counts.sources(), 0);
    }

    #[test]
    fn ipv4_over_ipv6_counts_as_the_ipv4_source() {
        let counts = PerSource::new(1);
        let _v4 = counts.take(ip("10.0.0.1"));
        assert!(counts.take(ip("::ffff:10.0.0.1")).is_none());
    }
}
