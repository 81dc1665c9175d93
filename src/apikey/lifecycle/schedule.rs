//! When to reconcile an ApiKey again: its deadlines, and whether the
//! periodic verification looks at it.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::status::to_signed;
use crate::apikey::Phase;

/// How many verification intervals ahead a deadline gets a wake-up of its
/// own. The verification rounds reconcile every key once per interval, so
/// two visits of one key are at most two intervals apart (first in one
/// round, last in the next): a deadline further away than that is seen
/// again, closer, before it falls due.
const HORIZON_INTERVALS: u32 = 3;

/// Whether the periodic verification looks at a key in this phase. An
/// Expired key, and a show-once key never shown, have no key material left
/// to check.
#[must_use]
pub fn verified_periodically(phase: Phase) -> bool {
    !matches!(phase, Phase::Expired | Phase::NeverShown)
}

/// When to reconcile again, besides the verification rounds: at expiry (to
/// delete the key on time), when the warning window opens, and when the
/// reveal window of a show-once key awaiting its reveal ends (`reveal_by`,
/// from `reveal::deadline`) — when any falls due before the rounds could
/// come closer to it. None for the
/// others, so that at rest the controller's scheduler holds no entry for
/// them (`reconcile::rounds` says what that buys and what it does not).
pub fn next_check(
    phase: Phase,
    expires_at: Option<Timestamp>,
    reveal_by: Option<Timestamp>,
    now: Timestamp,
    expiry_warning: Duration,
    verify_interval: Duration,
) -> Option<Duration> {
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
        Phase::Expired | Phase::NeverShown => vec![],
        Phase::Active => vec![expiry, warning, reveal_by.and_then(until)],
        // Every key not yet expired still expires on time.
        _ => vec![expiry],
    };
    let horizon = verify_interval.saturating_mul(HORIZON_INTERVALS);
    candidates
        .into_iter()
        .flatten()
        .min()
        .filter(|d| *d <= horizon)
}
