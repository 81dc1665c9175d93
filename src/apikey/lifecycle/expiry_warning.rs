//! When the ExpiringSoon condition turning True is a warning — an Event and
//! an `expiring-soon` audit entry — and when it is only the condition.
//!
//! The condition follows `expiresAt` both ways: moved into the warning
//! window it turns True, moved out it turns False. Whoever may patch an
//! ApiKey could otherwise mint an audit entry every two patches, on any key
//! in their namespace. So a key is warned at most once per warning window:
//! the first time its condition turns True, and again only once a whole
//! window has passed since the last warning (a key renewed much later,
//! whose new expiry comes round, is warned again). The time of the last
//! warning is kept in `status.expiryWarnedAt`, which only keymint writes,
//! so the memory survives restarts and relists. Pure.

use std::time::Duration;

use jiff::Timestamp;

use super::status::to_signed;

/// Whether the condition turning True at `now` warns, for a key last warned
/// at `last_warned` (None: never), with a warning window of `window`.
pub fn warns(last_warned: Option<Timestamp>, now: Timestamp, window: Duration) -> bool {
    last_warned.is_none_or(|last| {
        last.checked_add(to_signed(window))
            .is_ok_and(|again| now >= again)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn the_first_warning_is_given() {
        assert!(warns(None, at("2027-01-01T00:00:00Z"), WEEK));
    }

    #[test]
    fn a_key_moved_in_and_out_of_the_window_is_warned_once_per_window() {
        let last = Some(at("2027-01-01T00:00:00Z"));
        assert!(!warns(last, at("2027-01-01T00:00:01Z"), WEEK));
        assert!(!warns(last, at("2027-01-07T23:59:59Z"), WEEK));
        assert!(warns(last, at("2027-01-08T00:00:00Z"), WEEK));
        assert!(warns(last, at("2027-06-01T00:00:00Z"), WEEK));
    }

    #[test]
    fn a_clock_behind_the_last_warning_does_not_warn() {
        let last = Some(at("2027-01-08T00:00:00Z"));
        assert!(!warns(last, at("2027-01-01T00:00:00Z"), WEEK));
    }

    #[test]
    fn a_window_beyond_any_time_warns_once() {
        let last = Some(at("2027-01-01T00:00:00Z"));
        assert!(!warns(last, at("2099-01-01T00:00:00Z"), Duration::MAX));
    }
}
