//! How much of the audit stream is kept, and which segments retention
//! removes. Pure: the stream reads what [`choose`] asks for and deletes what
//! it chose.
//!
//! History is kept by **age**, so no amount of entries written today can
//! push last month's out: a segment goes once its newest entry is older
//! than the retention age. A **size bound** (a number of segments) guards
//! the API server's storage; reaching it is an alert (`over_bound`), and
//! the only pruning it allows is of segments older than the **floor**:
//! nothing younger than the floor is ever removed, whatever the count, and
//! past the bound keymint keeps writing.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// The retention rule: `--audit-retention`, `--audit-retention-floor`,
/// `--audit-max-segments`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Segments whose newest entry is older than this are removed.
    pub age: Duration,
    /// Segments whose newest entry is younger than this are never removed.
    pub floor: Duration,
    /// The size bound: above this many segments, segments older than the
    /// floor are removed too, and the stream reports it is over its bound.
    pub max_segments: usize,
}

/// `--audit-retention`'s value: an age. A bare number was a segment count
/// once; it is refused with the flag that bounds the size now, because a
/// count let whoever writes entries fastest decide how far back history
/// reaches.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    if s.parse::<u64>().is_ok() {
        return Err(
            "an age such as 400d (a number of segments is --audit-max-segments, a bound that never removes young history)"
                .into(),
        );
    }
    crate::duration::parse_duration(s)
}

/// Why a retention rule is refused at start-up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "--audit-retention ({age}) is shorter than --audit-retention-floor ({floor}): nothing younger than the floor is ever removed, so the age would not be honoured"
    )]
    AgeBelowFloor { age: String, floor: String },
    #[error("--audit-max-segments must be at least 2 (the head and one sealed segment)")]
    TooFewSegments,
}

impl Retention {
    /// A rule that does what it says: the age at least the floor, at least
    /// two segments.
    pub fn new(
        age: Duration,
        floor: Duration,
        max_segments: usize,
    ) -> Result<Retention, RetentionError> {
        if age < floor {
            return Err(RetentionError::AgeBelowFloor {
                age: humantime::format_duration(age).to_string(),
                floor: humantime::format_duration(floor).to_string(),
            });
        }
        if max_segments < 2 {
            return Err(RetentionError::TooFewSegments);
        }
        Ok(Retention {
            age,
            floor,
            max_segments,
        })
    }

    /// Whether a stream of `segments` segments is over the size bound.
    pub fn over_bound(&self, segments: usize) -> bool {
        segments > self.max_segments
    }
}

/// What [`choose`] decided, or what it needs to know first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Remove this many of the oldest segments (possibly none): `by_age`
    /// of them past the retention age, the rest (`by_size`) for the size
    /// bound, older than the floor but not the age.
    Remove { by_age: usize, by_size: usize },
    /// Read the next oldest segment not read yet, and ask again with the
    /// time of its newest entry.
    ReadNext,
}

impl Choice {
    /// Nothing to remove.
    pub const NONE: Choice = Choice::Remove {
        by_age: 0,
        by_size: 0,
    };
}

/// Which segments retention removes: always the oldest ones, never the
/// last of `segments` (the head, still being written). `newest` holds, for
/// the oldest segments read so far, the time of each one's newest entry
/// (`None`: empty or unreadable, which stops removal there). It asks for
/// one segment at a time, so the stream reads only the segments it removes
/// and the first one it keeps.
pub fn choose(
    retention: &Retention,
    segments: usize,
    newest: &[Option<Timestamp>],
    now: Timestamp,
) -> Choice {
    // A duration reaching back before any representable time removes
    // nothing.
    let cutoff = |d: Duration| {
        SignedDuration::try_from(d)
            .ok()
            .and_then(|d| now.checked_sub(d).ok())
    };
    let (Some(by_age), Some(floor)) = (cutoff(retention.age), cutoff(retention.floor)) else {
        return Choice::NONE;
    };
    let sealed = segments.saturating_sub(1);
    let (mut aged, mut sized) = (0, 0);
    for i in 0..sealed {
        let Some(time) = newest.get(i) else {
            return Choice::ReadNext;
        };
        let Some(time) = *time else { break };
        let remaining = segments - i;
        if time < by_age {
            aged += 1;
        } else if time < floor && retention.over_bound(remaining) {
            sized += 1;
        } else {
            break;
        }
    }
    Choice::Remove {
        by_age: aged,
        by_size: sized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::ts;

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> Timestamp {
        ts("2026-06-01T00:00:00Z")
    }

    fn rule(age_days: u64, floor_days: u64, max: usize) -> Retention {
        let days = |d: u64| Duration::from_secs(d.saturating_mul(86_400));
        Retention::new(days(age_days), days(floor_days), max).expect("a valid rule")
    }

    fn remove(by_age: usize, by_size: usize) -> Choice {
        Choice::Remove { by_age, by_size }
    }

    fn days_ago(d: i64) -> Option<Timestamp> {
        Some(now() - SignedDuration::from_hours(24 * d))
    }

    #[test]
    fn retention_is_an_age_and_a_count_is_refused_with_the_flag_to_use() {
        assert_eq!(parse_age("400d"), Ok(400 * DAY));
        let count = parse_age("1000").expect_err("a count");
        assert!(count.contains("--audit-max-segments"), "{count}");
        assert!(parse_age("soon").is_err());
        let low = Retention::new(DAY, 30 * DAY, 10).expect_err("age below floor");
        assert!(low.to_string().contains("--audit-retention-floor"), "{low}");
        assert_eq!(
            Retention::new(30 * DAY, DAY, 1),
            Err(RetentionError::TooFewSegments)
        );
    }

    #[test]
    fn an_age_removes_the_oldest_segments_until_one_is_young_enough() {
        let keep = rule(30, 7, 1000);
        let (old, young) = (days_ago(60), days_ago(10));
        assert_eq!(choose(&keep, 5, &[], now()), Choice::ReadNext);
        assert_eq!(choose(&keep, 5, &[old, old], now()), Choice::ReadNext);
        assert_eq!(choose(&keep, 5, &[old, young], now()), remove(1, 0));
        assert_eq!(choose(&keep, 5, &[young], now()), remove(0, 0));
        // Empty or unreadable: kept, and so is everything after it.
        assert_eq!(choose(&keep, 5, &[old, None], now()), remove(1, 0));
    }

    #[test]
    fn the_head_is_never_removed() {
        let keep = rule(1, 0, 2);
        let old = days_ago(100);
        assert_eq!(choose(&keep, 1, &[], now()), remove(0, 0));
        assert_eq!(choose(&keep, 3, &[old, old], now()), remove(2, 0));
    }

    #[test]
    fn a_flood_of_young_segments_removes_nothing_younger_than_the_floor() {
        // Ten times the bound, all of it from today: over the bound, and
        // nothing removed.
        let keep = rule(400, 30, 100);
        let today: Vec<Option<Timestamp>> = vec![days_ago(0); 1000];
        assert_eq!(choose(&keep, 1000, &today, now()), remove(0, 0));
        assert!(keep.over_bound(1000));
        // Segments past the floor but not the age go only while over the
        // bound, oldest first.
        let mut mixed = vec![days_ago(200); 3];
        mixed.extend(vec![days_ago(1); 100]);
        assert_eq!(choose(&keep, 103, &mixed, now()), remove(0, 3));
        assert_eq!(choose(&keep, 102, &mixed, now()), remove(0, 2));
        assert_eq!(choose(&keep, 100, &mixed, now()), remove(0, 0));
        // Past the age, they go whatever the count.
        let mut aged = vec![days_ago(500); 2];
        aged.extend(mixed);
        assert_eq!(choose(&keep, 105, &aged, now()), remove(2, 3));
        assert_eq!(choose(&keep, 10, &aged, now()), remove(2, 0));
    }

    #[test]
    fn an_age_beyond_any_time_removes_nothing() {
        let keep = rule(u64::MAX / 86_400, 0, 2);
        assert_eq!(choose(&keep, 5, &[], now()), Choice::NONE);
        let keep = rule(400_000 * 365, 0, 2);
        assert_eq!(choose(&keep, 5, &[], now()), Choice::NONE);
    }
}
