//! The low watermark: how little of the stream start-up must read so that
//! a transition is still appended exactly once. Pure.
//!
//! Every segment write carries a watermark W, meaning "every transition
//! made before W is in the stream". At start-up keymint reads the head's W
//! and only the segments holding an entry made at or after W (each segment
//! carries the time of its newest entry), typically the head alone: a
//! transition older than W is recorded, a younger one is recorded exactly
//! when the segments read hold it. Start-up thus costs what was appended
//! around the last write, not the stream's length.
//!
//! Why W holds. The writer computes W = min(its pending transitions, now) -
//! [`SKEW`], where pending (the [`Outbox`]) is every transition it has
//! written, or is about to write, to a status and not yet seen recorded: a
//! reconcile registers a transition before the status write that makes it,
//! the catch-up before appending one it found missing; a successful append
//! (or finding it recorded) settles them. So a crash between a status write
//! and its append (the case exactly-once exists for) leaves a head whose W
//! is no later than that transition. A deletion's retry asks about a later
//! time than its entry's, so it stays pending until its finalizer is gone.
//! A transition whose status write failed stays pending until that number
//! is recorded: a lower W, never a wrong one.
//! - Transitions of an earlier leader that it never appended: a fresh
//!   leader keeps W no later than the one it inherited for [`HOLD`], the
//!   time its catch-up (every key is reconciled after a start, each
//!   missing transition registered before its append) needs; with nothing
//!   inherited (a stream from an older keymint, read by the tail rule
//!   without a bound), it writes no watermark until then.
//! - Two leaders briefly: every write appends drafts its writer holds
//!   pending, made while it believed it led; the other leader's transitions
//!   are younger than its lease. [`SKEW`] covers the clocks of the two and
//!   the lease's timing disagreeing.
//! - Clocks: W and the pending times come from one process's clock; a
//!   lower W is always safe (more is read), so only a W too late matters,
//!   and that is what the rules above bound.
//! - Retention deletes the oldest segments; W is taken from the head, and
//!   segments that are gone hold nothing to index, as before.
//!
//! A head without a watermark (written by an older keymint) falls back to
//! reading the tail, as far back as the newest entry's window reaches;
//! segments without the newest-entry mark among watermarked ones are read
//! by that rule, from W.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

use crate::audit::Entry;

/// How far two instances' clocks (and the lease's timing) may disagree.
pub const SKEW: SignedDuration = SignedDuration::from_secs(15);
/// How long a fresh leader keeps the watermark it inherited: its catch-up
/// runs well within it (the reconcile backoff is minutes).
pub const HOLD: SignedDuration = SignedDuration::from_mins(30);

/// A segment as listed: its name and marks (None: not marked, or
/// unreadable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    /// The time of its newest entry.
    pub newest: Option<Timestamp>,
    /// The watermark of its last write.
    pub watermark: Option<Timestamp>,
}

/// What start-up reads.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    /// No watermark on the head: the tail, newest first, by the window rule.
    Tail,
    Watermark {
        /// Transitions older than this are recorded.
        from: Timestamp,
        /// Segments that may hold entries made at or after `from`, oldest
        /// first (the head among them).
        read: Vec<String>,
        /// Segments without a newest-entry mark, newest first: read until
        /// one starts a whole window before `from` (see [`reaches_back`]).
        unmarked: Vec<String>,
    },
}

/// What to read at start-up, from the segments listed oldest first.
pub fn plan(listed: &[Listed]) -> Start {
    let Some((head, older)) = listed.split_last() else {
        return Start::Tail;
    };
    let Some(from) = head.watermark else {
        return Start::Tail;
    };
    let mut read: Vec<String> = older
        .iter()
        .filter(|s| s.newest.is_some_and(|newest| newest >= from))
        .map(|s| s.name.clone())
        .collect();
    read.push(head.name.clone());
    let unmarked = older
        .iter()
        .rev()
        .filter(|s| s.newest.is_none())
        .map(|s| s.name.clone())
        .collect();
    Start::Watermark {
        from,
        read,
        unmarked,
    }
}

/// Whether an unmarked segment holding `entries` starts a whole `window`
/// before `from`, so that older ones need not be read: the window rule of
/// the tail read (appends land within it of the transitions they record).
pub fn reaches_back(entries: &[Entry], from: Timestamp, window: SignedDuration) -> bool {
    let first = entries.first().and_then(Entry::timestamp);
    let reach = from.checked_sub(window).ok();
    matches!((first, reach), (Some(first), Some(reach)) if first <= reach)
}

/// The transitions this process has made (or is about to make) in a
/// status and not yet seen recorded, and the watermark they allow.
#[derive(Debug)]
pub struct Outbox {
    /// Per (ApiKey UID, transition number): the earliest time registered.
    pending: HashMap<(String, u64), Timestamp>,
    /// The bound inherited at start-up (None: none known).
    inherited: Option<Timestamp>,
    /// Until when the inherited bound holds.
    hold_until: Timestamp,
}

impl Outbox {
    /// The outbox of a process that opened the stream at `opened`, where
    /// transitions before `inherited` were known to be recorded.
    pub fn new(inherited: Option<Timestamp>, opened: Timestamp, hold: SignedDuration) -> Outbox {
        Outbox {
            pending: HashMap::new(),
            inherited,
            hold_until: opened.checked_add(hold).unwrap_or(opened),
        }
    }

    /// Registers transition `transition` of `uid`, made at `at`, before it
    /// is written to a status or appended.
    pub fn expect(&mut self, uid: &str, transition: u64, at: Timestamp) {
        let earliest = self
            .pending
            .entry((uid.to_string(), transition))
            .or_insert(at);
        *earliest = (*earliest).min(at);
    }

    /// Transition `transition` of `uid` is in the stream.
    pub fn settle(&mut self, uid: &str, transition: u64) {
        self.pending.remove(&(uid.to_string(), transition));
    }

    /// The watermark a write at `now` carries (None: write none, so that
    /// the next start-up reads the tail).
    pub fn watermark(&self, now: Timestamp) -> Option<Timestamp> {
        let earliest = self.pending.values().min().map_or(now, |t| (*t).min(now));
        let own = earliest.checked_sub(SKEW).ok()?;
        if now >= self.hold_until {
            return Some(own);
        }
        self.inherited.map(|inherited| own.min(inherited))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::{build, ts};

    fn listed(name: &str, newest: Option<&str>, watermark: Option<&str>) -> Listed {
        Listed {
            name: name.to_string(),
            newest: newest.map(ts),
            watermark: watermark.map(ts),
        }
    }

    #[test]
    fn a_head_without_a_watermark_falls_back_to_the_tail() {
        assert_eq!(plan(&[]), Start::Tail);
        let old = [
            listed("s1", None, None),
            listed("s2", Some("2026-03-01T00:00:00Z"), None),
        ];
        assert_eq!(plan(&old), Start::Tail);
        // A watermark on an older segment only: the head's writer (an older
        // keymint, or a fresh leader with nothing to inherit) vouches for
        // nothing.
        let mixed = [
            listed(
                "s1",
                Some("2026-03-01T00:00:00Z"),
                Some("2026-03-01T00:00:00Z"),
            ),
            listed("s2", Some("2026-03-01T00:01:00Z"), None),
        ];
        assert_eq!(plan(&mixed), Start::Tail);
    }

    #[test]
    fn only_segments_with_entries_at_or_after_the_watermark_are_read() {
        let segments = [
            listed(
                "s1",
                Some("2026-03-01T00:00:00Z"),
                Some("2026-02-28T23:00:00Z"),
            ),
            // Appended late (a catch-up), after s1: times are not in order.
            listed(
                "s2",
                Some("2026-03-01T12:00:00Z"),
                Some("2026-03-01T00:00:00Z"),
            ),
            listed(
                "s3",
                Some("2026-03-01T11:00:00Z"),
                Some("2026-03-01T10:59:00Z"),
            ),
            listed(
                "s4",
                Some("2026-03-01T11:59:00Z"),
                Some("2026-03-01T11:00:00Z"),
            ),
            listed("s5", None, Some("2026-03-01T12:00:00Z")),
        ];
        let Start::Watermark {
            from,
            read,
            unmarked,
        } = plan(&segments)
        else {
            panic!("the head has a watermark");
        };
        assert_eq!(from, ts("2026-03-01T12:00:00Z"));
        // The head is read even when empty (no newest entry).
        assert_eq!(read, ["s2", "s5"]);
        assert!(unmarked.is_empty());
    }

    #[test]
    fn a_long_history_below_the_watermark_costs_only_the_head() {
        let mut segments: Vec<Listed> = (0..1000)
            .map(|i| listed(&format!("s{i:04}"), Some("2026-03-01T00:00:00Z"), None))
            .collect();
        segments.push(listed(
            "head",
            Some("2026-03-02T00:00:00Z"),
            Some("2026-03-01T23:59:00Z"),
        ));
        let Start::Watermark { read, unmarked, .. } = plan(&segments) else {
            panic!("watermark");
        };
        assert_eq!(read, ["head"]);
        assert!(unmarked.is_empty());
    }

    #[test]
    fn unmarked_segments_are_read_newest_first_by_the_window_rule() {
        let segments = [
            listed("s1", None, None),
            listed("s2", None, None),
            listed(
                "s3",
                Some("2026-03-01T00:00:00Z"),
                Some("2026-03-01T00:00:00Z"),
            ),
        ];
        let Start::Watermark { unmarked, .. } = plan(&segments) else {
            panic!("watermark");
        };
        assert_eq!(unmarked, ["s2", "s1"]);
        let entries = build(3);
        let first = entries[0].timestamp().expect("time");
        let window = SignedDuration::from_mins(30);
        assert!(reaches_back(&entries, first + window, window));
        let just_within = first + window - SignedDuration::from_nanos(1);
        assert!(!reaches_back(&entries, just_within, window));
        assert!(!reaches_back(&[], first + window, window));
    }

    #[test]
    fn the_watermark_stays_below_every_pending_transition() {
        let opened = ts("2026-03-01T00:00:00Z");
        let mut outbox = Outbox::new(None, opened, SignedDuration::ZERO);
        let now = ts("2026-03-01T01:00:00Z");
        assert_eq!(outbox.watermark(now), Some(now - SKEW));
        outbox.expect("uid-1", 1, ts("2026-03-01T00:40:00Z"));
        outbox.expect("uid-2", 3, ts("2026-03-01T00:50:00Z"));
        // Registered again later (a retried status write): the earlier time
        // stays, the status may hold either.
        outbox.expect("uid-1", 1, ts("2026-03-01T00:45:00Z"));
        assert_eq!(outbox.watermark(now), Some(ts("2026-03-01T00:39:45Z")));
        outbox.settle("uid-1", 1);
        assert_eq!(outbox.watermark(now), Some(ts("2026-03-01T00:49:45Z")));
        outbox.settle("uid-2", 3);
        outbox.settle("unknown", 9);
        assert_eq!(outbox.watermark(now), Some(now - SKEW));
        // A pending time after `now` (another clock): now bounds it.
        outbox.expect("uid-3", 1, ts("2026-03-01T02:00:00Z"));
        assert_eq!(outbox.watermark(now), Some(now - SKEW));
    }

    #[test]
    fn a_fresh_leader_holds_the_watermark_it_inherited() {
        let opened = ts("2026-03-01T00:00:00Z");
        let inherited = ts("2026-02-28T23:00:00Z");
        let outbox = Outbox::new(Some(inherited), opened, HOLD);
        assert_eq!(outbox.watermark(opened), Some(inherited));
        let during = opened + SignedDuration::from_mins(29);
        assert_eq!(outbox.watermark(during), Some(inherited));
        let after = opened + HOLD;
        assert_eq!(outbox.watermark(after), Some(after - SKEW));
        // An inherited bound later than its own: its own is lower.
        let late = Outbox::new(Some(opened + HOLD), opened, HOLD);
        assert_eq!(late.watermark(opened), Some(opened - SKEW));
    }

    #[test]
    fn a_fresh_leader_with_nothing_inherited_writes_no_watermark_until_caught_up() {
        let opened = ts("2026-03-01T00:00:00Z");
        let outbox = Outbox::new(None, opened, HOLD);
        assert_eq!(outbox.watermark(opened), None);
        assert_eq!(
            outbox.watermark(opened + SignedDuration::from_mins(29)),
            None
        );
        let after = opened + HOLD;
        assert_eq!(outbox.watermark(after), Some(after - SKEW));
    }
}
