//! How much of the audit stream is kept, and which segments retention
//! removes. Pure: the stream reads what [`choose`] asks for and deletes what
//! it chose.

use std::time::Duration;

use jiff::Timestamp;

#[derive(Clone, Debug)]
pub enum Retention {
    /// Keep at most this many segments.
    Segments(usize),
    /// Drop segments whose newest entry is older than this.
    Age(Duration),
}

impl std::str::FromStr for Retention {
    type Err = String;
    /// `100` (segments) or a duration such as `90d`.
    fn from_str(s: &str) -> Result<Retention, String> {
        if let Ok(n) = s.parse::<usize>() {
            return if n >= 2 {
                Ok(Retention::Segments(n))
            } else {
                Err("keep at least 2 segments".into())
            };
        }
        crate::duration::parse_duration(s)
            .map(Retention::Age)
            .map_err(|e| format!("{e}; or a number of segments such as 100"))
    }
}

/// What [`choose`] decided, or what it needs to know first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Remove this many of the oldest segments (possibly none).
    Remove(usize),
    /// Read the next oldest segment not read yet, and ask again with the
    /// time of its newest entry.
    ReadNext,
}

/// Which segments retention removes: always the oldest ones, never the
/// last of `segments` (the head, still being written). `newest` holds, for
/// the oldest segments read so far, the time of each one's newest entry
/// (`None`: empty or unreadable, which stops removal there). A segment
/// count needs no reads; an age asks for one segment at a time, so the
/// stream reads only the segments it removes and the first one it keeps.
pub fn choose(
    retention: &Retention,
    segments: usize,
    newest: &[Option<Timestamp>],
    now: Timestamp,
) -> Choice {
    let age = match retention {
        Retention::Segments(keep) => return Choice::Remove(segments.saturating_sub(*keep)),
        Retention::Age(age) => *age,
    };
    // An age reaching back before any representable time removes nothing.
    let Some(cutoff) = jiff::SignedDuration::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(age).ok())
    else {
        return Choice::Remove(0);
    };
    let sealed = segments.saturating_sub(1);
    let old = newest
        .iter()
        .take(sealed)
        .take_while(|t| t.is_some_and(|t| t < cutoff))
        .count();
    if old < newest.len() || old >= sealed {
        Choice::Remove(old.min(sealed))
    } else {
        Choice::ReadNext
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

    #[test]
    fn retention_reads_as_segments_or_an_age() {
        assert!(matches!("100".parse(), Ok(Retention::Segments(100))));
        assert!(matches!("90d".parse(), Ok(Retention::Age(d)) if d == 90 * DAY));
        let one: Result<Retention, _> = "1".parse();
        assert_eq!(one.unwrap_err(), "keep at least 2 segments");
        let bad: Result<Retention, _> = "soon".parse();
        assert!(bad.unwrap_err().contains("number of segments"));
    }

    #[test]
    fn a_segment_count_removes_the_oldest_beyond_it_without_reading() {
        let keep = Retention::Segments(3);
        assert_eq!(choose(&keep, 5, &[], now()), Choice::Remove(2));
        assert_eq!(choose(&keep, 3, &[], now()), Choice::Remove(0));
        assert_eq!(choose(&keep, 1, &[], now()), Choice::Remove(0));
    }

    #[test]
    fn an_age_removes_the_oldest_segments_until_one_is_young_enough() {
        let keep = Retention::Age(30 * DAY);
        let old = Some(ts("2026-04-01T00:00:00Z"));
        let young = Some(ts("2026-05-20T00:00:00Z"));
        assert_eq!(choose(&keep, 5, &[], now()), Choice::ReadNext);
        assert_eq!(choose(&keep, 5, &[old, old], now()), Choice::ReadNext);
        assert_eq!(choose(&keep, 5, &[old, young], now()), Choice::Remove(1));
        assert_eq!(choose(&keep, 5, &[young], now()), Choice::Remove(0));
        // Empty or unreadable: kept, and so is everything after it.
        assert_eq!(choose(&keep, 5, &[old, None], now()), Choice::Remove(1));
    }

    #[test]
    fn an_age_never_removes_the_head() {
        let keep = Retention::Age(DAY);
        let old = Some(ts("2026-01-01T00:00:00Z"));
        assert_eq!(choose(&keep, 1, &[], now()), Choice::Remove(0));
        assert_eq!(choose(&keep, 3, &[old, old], now()), Choice::Remove(2));
    }

    #[test]
    fn an_age_beyond_any_time_removes_nothing() {
        let keep = Retention::Age(Duration::from_secs(u64::MAX));
        assert_eq!(choose(&keep, 5, &[], now()), Choice::Remove(0));
        let keep = Retention::Age(400_000 * 365 * DAY);
        assert_eq!(choose(&keep, 5, &[], now()), Choice::Remove(0));
    }
}
