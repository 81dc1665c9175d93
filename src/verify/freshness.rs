//! How old the verifier's index is, and whether it may still answer: the
//! rule "an index older than its bound, or not yet listed, answers
//! unavailable, never a stale yes". The clock comes in; no I/O.
//!
//! The age is the time since the verifier last had proof that its index was
//! current. Proofs: a complete list swapped in; an event or a bookmark of
//! the ApiKey watch (the stream delivers, so nothing was missed up to
//! there); a cheap probe of the API server that succeeds while the watch is
//! established and has shown life recently. The probe is needed because an
//! idle healthy watch is silent between bookmarks, and a black-holed
//! connection never errors: without it, silence could not tell "nothing
//! changed" from "nothing arrives". A watch error stops probes from
//! counting until the watch is established again, so the index ages from
//! its last proof on.
//!
//! Every check reads one atomic flag ([`Freshness::available`]); the flag
//! is recomputed at each proof and by a ticker ([`tick_interval`]), so an
//! index turns unavailable at most one tick after its bound.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the API server does on an idle ApiKey watch with
/// `allowWatchBookmarks=true`: a bookmark a minute. Measured against the
/// test control plane (kube-apiserver v1.36.3): an idle verifier watch got
/// its bookmarks 61.0, 60.2 and 60.0 s apart (2026-12-07, with
/// `RUST_LOG=keymint=debug`, which logs each "ApiKey watch bookmark").
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// A watch that has sent nothing — no event, no bookmark — for this long is
/// presumed dead even if no error came, and probes stop counting: two
/// bookmarks missed, and a margin, which a healthy watch never reaches.
pub const WATCH_SILENCE: Duration = Duration::from_secs(BOOKMARK_INTERVAL.as_secs() * 2 + 30);

/// The index's age and availability, shared by the watch, the probe, the
/// ticker and every check.
#[derive(Debug)]
pub struct Freshness {
    started: Instant,
    max: Duration,
    /// Milliseconds from `started` to the last proof, plus one; 0 before
    /// the first complete list.
    proof: AtomicU64,
    /// Milliseconds from `started` to the watch's last sign of life (its
    /// start, an event, a bookmark).
    activity: AtomicU64,
    /// The watch is established and has not failed since.
    watch_up: AtomicBool,
    /// Watch failures so far: a probe that one interrupted does not count.
    failures: AtomicU64,
    /// Listed, and no older than `max` at the last proof or tick.
    available: AtomicBool,
}

/// A probe under way: what it must find unchanged to count.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    failures: u64,
    started: Instant,
}

/// How often the ticker recomputes availability: a tenth of the bound,
/// between 50 ms and 1 s.
#[must_use]
pub fn tick_interval(max: Duration) -> Duration {
    (max / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// How often the API server is probed, and how long a probe may take: a
/// third of the bound, so two probes may fail before the index is stale.
#[must_use]
pub fn probe_interval(max: Duration) -> Duration {
    max / 3
}

impl Freshness {
    #[must_use]
    pub fn new(max: Duration, now: Instant) -> Freshness {
        Freshness {
            started: now,
            max,
            proof: AtomicU64::new(0),
            activity: AtomicU64::new(0),
            watch_up: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            available: AtomicBool::new(false),
        }
    }

    /// The bound (`--max-staleness`).
    #[must_use]
    pub fn max(&self) -> Duration {
        self.max
    }

    /// Whether checks may be answered: the hot path, one load.
    #[must_use]
    pub fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// A complete list was swapped into the index. True the first time.
    pub fn listed(&self, now: Instant) -> bool {
        let first = !self.ever_listed();
        self.prove(now, now);
        first
    }

    /// The watch request was answered: events flow from here on.
    pub fn watch_started(&self, now: Instant) {
        self.activity.store(self.millis(now), Ordering::SeqCst);
        self.watch_up.store(true, Ordering::SeqCst);
    }

    /// An event or a bookmark arrived (after a complete list): the index
    /// holds everything up to it.
    pub fn watched(&self, now: Instant) {
        self.activity.fetch_max(self.millis(now), Ordering::SeqCst);
        self.prove(now, now);
    }

    /// The watch failed: no probe counts until it is established again.
    pub fn watch_failed(&self, now: Instant) {
        self.watch_up.store(false, Ordering::SeqCst);
        self.failures.fetch_add(1, Ordering::SeqCst);
        self.tick(now);
    }

    /// A probe starting at `now`, if one could prove anything: the watch
    /// is up and has shown life within [`WATCH_SILENCE`].
    #[must_use]
    pub fn probe(&self, now: Instant) -> Option<Probe> {
        let recent = self
            .millis(now)
            .saturating_sub(self.activity.load(Ordering::SeqCst))
            <= millis(WATCH_SILENCE);
        (self.watch_up.load(Ordering::SeqCst) && recent).then(|| Probe {
            failures: self.failures.load(Ordering::SeqCst),
            started: now,
        })
    }

    /// `probe` was answered at `now`: the index was current when it
    /// started, unless the watch failed meanwhile.
    pub fn probed(&self, probe: Probe, now: Instant) {
        let unbroken = self.ever_listed()
            && self.watch_up.load(Ordering::SeqCst)
            && self.failures.load(Ordering::SeqCst) == probe.failures;
        if unbroken {
            self.prove(probe.started, now);
        }
    }

    /// The index's age at `now`: since the last proof, or since the start
    /// when nothing was ever listed (so an alert sees a verifier that never
    /// gets ready). Recomputes availability.
    pub fn tick(&self, now: Instant) -> Duration {
        let proof = self.proof.load(Ordering::SeqCst);
        let since = Duration::from_millis(proof.saturating_sub(1));
        let age = now.saturating_duration_since(self.started + since);
        self.available
            .store(proof != 0 && age <= self.max, Ordering::Relaxed);
        age
    }

    /// Whether a first complete list was ever swapped in.
    #[must_use]
    pub fn ever_listed(&self) -> bool {
        self.proof.load(Ordering::SeqCst) != 0
    }

    /// Records a proof that the index was current `at` (a proof never
    /// moves backwards), and recomputes availability at `now`.
    fn prove(&self, at: Instant, now: Instant) {
        self.proof
            .fetch_max(self.millis(at).saturating_add(1), Ordering::SeqCst);
        self.tick(now);
    }

    fn millis(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.started))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(30);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Listed at `t0`, the watch established.
    fn listed() -> (Freshness, Instant) {
        let t0 = Instant::now();
        let f = Freshness::new(MAX, t0);
        assert!(f.listed(t0), "the first list is told");
        f.watch_started(t0);
        (f, t0)
    }

    #[test]
    fn nothing_is_available_before_the_first_complete_list() {
        let t0 = Instant::now();
        let f = Freshness::new(MAX, t0);
        assert!(!f.available());
        assert_eq!(f.tick(t0 + secs(5)), secs(5), "age since the start");
        assert!(!f.available());
        // A watch start alone (no list yet) and a probe prove nothing.
        f.watch_started(t0);
        let probe = f.probe(t0 + secs(1)).expect("the watch is up");
        f.probed(probe, t0 + secs(1));
        assert!(!f.available() && !f.ever_listed());
        assert!(f.listed(t0 + secs(6)));
        assert!(f.available());
        assert!(!f.listed(t0 + secs(7)), "only the first list is first");
    }

    #[test]
    fn an_index_without_proof_turns_unavailable_past_its_bound() {
        let (f, t0) = listed();
        assert_eq!(f.tick(t0 + MAX), MAX);
        assert!(f.available(), "at the bound, still available");
        f.tick(t0 + MAX + Duration::from_millis(1));
        assert!(!f.available());
        // An event proves it current again.
        f.watched(t0 + secs(40));
        assert!(f.available());
        assert_eq!(f.tick(t0 + secs(41)), secs(1));
    }

    #[test]
    fn a_probe_counts_from_its_start_while_the_watch_is_up() {
        let (f, t0) = listed();
        let probe = f.probe(t0 + secs(20)).expect("watch up");
        f.probed(probe, t0 + secs(25));
        assert_eq!(f.tick(t0 + secs(25)), secs(5), "proof at the probe's start");
        assert_eq!(f.tick(t0 + secs(50)), MAX);
        assert!(f.available());
    }

    #[test]
    fn after_a_watch_error_probes_do_not_count_until_it_is_back() {
        let (f, t0) = listed();
        let straddling = f.probe(t0 + secs(1)).expect("watch up");
        f.watch_failed(t0 + secs(2));
        f.probed(straddling, t0 + secs(3));
        assert_eq!(
            f.tick(t0 + secs(3)),
            secs(3),
            "the probe straddled an error"
        );
        assert!(f.probe(t0 + secs(4)).is_none(), "no probe while down");
        f.tick(t0 + secs(31));
        assert!(!f.available(), "stale from its last proof on");
        // Established again: a probe counts once more.
        f.watch_started(t0 + secs(32));
        assert!(!f.available(), "a watch start alone is no proof");
        let probe = f.probe(t0 + secs(33)).expect("watch up again");
        f.probed(probe, t0 + secs(34));
        assert!(f.available());
    }

    #[test]
    fn a_silent_watch_stops_probes_from_counting() {
        let (f, t0) = listed();
        let late = t0 + WATCH_SILENCE + secs(1);
        assert!(f.probe(late).is_none(), "no sign of life for too long");
        f.watched(late);
        assert!(
            f.probe(late + secs(1)).is_some(),
            "a bookmark is a sign of life"
        );
    }

    #[test]
    fn a_proof_never_moves_backwards() {
        let (f, t0) = listed();
        f.watched(t0 + secs(20));
        let old = f.probe(t0 + secs(5)).expect("watch up");
        f.probed(old, t0 + secs(21));
        assert_eq!(f.tick(t0 + secs(21)), secs(1));
    }

    #[test]
    fn ticks_and_probes_scale_with_the_bound() {
        assert_eq!(tick_interval(secs(30)), secs(1));
        assert_eq!(tick_interval(secs(3)), Duration::from_millis(300));
        assert_eq!(
            tick_interval(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(probe_interval(secs(30)), secs(10));
    }
}
