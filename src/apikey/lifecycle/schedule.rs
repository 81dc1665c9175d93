//! When to reconcile an ApiKey again.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::status::to_signed;
use crate::apikey::Phase;

/// When to reconcile again: at expiry (to delete the key on time), when the
/// warning window opens, and at the periodic verification — whichever comes
/// first. `jitter` in [0, 1) spreads verifications of many keys apart.
pub fn next_check(
    phase: Phase,
    expires_at: Option<Timestamp>,
    now: Timestamp,
    expiry_warning: Duration,
    verify_interval: Duration,
    jitter: f64,
) -> Option<Duration> {
    let verify = verify_interval.mul_f64(1.0 - 0.1 * jitter.clamp(0.0, 1.0));
    let until = |t: Timestamp| -> Option<Duration> {
        let d = t.duration_since(now);
        // A few milliseconds late rather than early: a wake-up before the
        // instant would find nothing to do and have to sleep again.
        (d > SignedDuration::ZERO)
            .then(|| Duration::try_from(d).unwrap_or_default() + Duration::from_millis(5))
    };
    let expiry = expires_at.and_then(until);
    let warning = expires_at.and_then(|t| until(t - to_signed(expiry_warning)));
    let candidates = match phase {
        Phase::Expired => vec![],
        Phase::Active => vec![Some(verify), expiry, warning],
        // Waiting keys are woken when a slot frees; the periodic check is a
        // safety net. Every key not yet expired still expires on time.
        _ => vec![Some(verify), expiry],
    };
    candidates.into_iter().flatten().min()
}
