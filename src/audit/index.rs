//! What the stream is known to contain, so that a transition is appended
//! once: the highest transition number recorded per ApiKey UID, built at
//! start-up from the segments the head's watermark points to (see
//! `watermark`), or from the stream's tail when it has none, and kept up to
//! date by every read and write. Pure.

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::audit::Entry;

/// The highest transition number recorded per ApiKey UID, for entries
/// since `covered_from`; transitions older than that are recorded.
#[derive(Debug, Default)]
pub struct Index {
    recorded: HashMap<Uid, u64>,
    covered_from: Option<Timestamp>,
}

/// A UID as the index holds it: the 16 bytes of the UUID the API server
/// assigns, rather than 36 characters in a string of their own (an
/// allocation per ApiKey, 100,000 of them in a burst); any other text as it
/// is. Only the canonical lowercase form is packed, so that two different
/// texts never share an entry.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Uid {
    Uuid(uuid::Bytes),
    Text(Box<str>),
}

impl Uid {
    fn of(uid: &str) -> Uid {
        let canonical = uid.len() == 36 && !uid.bytes().any(|b| b.is_ascii_uppercase());
        match uuid::Uuid::try_parse(uid) {
            Ok(parsed) if canonical => Uid::Uuid(parsed.into_bytes()),
            _ => Uid::Text(uid.into()),
        }
    }
}

impl Index {
    /// An index of nothing yet, where transitions made before `from` are
    /// recorded (the head's watermark).
    pub fn covering(from: Timestamp) -> Index {
        Index {
            recorded: HashMap::new(),
            covered_from: Some(from),
        }
    }

    /// Before when every transition is recorded (None: nothing is known).
    pub fn covered_from(&self) -> Option<Timestamp> {
        self.covered_from
    }

    pub fn add(&mut self, entry: &Entry) {
        let n = self.recorded.entry(Uid::of(&entry.uid)).or_insert(0);
        *n = (*n).max(entry.transition);
    }

    pub fn add_all(&mut self, entries: &[Entry]) {
        for entry in entries {
            self.add(entry);
        }
    }

    /// Whether an entry for transition `transition` of ApiKey `uid` has been
    /// seen.
    pub fn holds(&self, uid: &str, transition: u64) -> bool {
        self.recorded
            .get(&Uid::of(uid))
            .is_some_and(|&n| n >= transition)
    }

    /// Whether transition `transition` of ApiKey `uid`, made at `at`, is in
    /// the stream. Transitions older than the indexed tail are.
    pub fn is_recorded(&self, uid: &str, transition: u64, at: Timestamp) -> bool {
        self.holds(uid, transition) || self.covered_from.is_some_and(|from| at < from)
    }

    /// ApiKeys indexed.
    pub fn keys(&self) -> usize {
        self.recorded.len()
    }
}

/// Builds the start-up [`Index`] from the stream's segments, read newest
/// first, as far back as `window` before the newest entry.
pub struct Tail {
    index: Index,
    window: SignedDuration,
    newest: Option<Timestamp>,
    /// Seq and time of the first entry of the oldest segment read.
    oldest_read: Option<(u64, Timestamp)>,
}

impl Tail {
    pub fn new(window: Duration) -> Tail {
        Tail {
            index: Index::default(),
            window: SignedDuration::try_from(window).unwrap_or_default(),
            newest: None,
            oldest_read: None,
        }
    }

    /// Indexes the entries of the next older segment; returns whether to
    /// read the one before it (false: the index reaches back far enough).
    pub fn add_older(&mut self, entries: &[Entry]) -> bool {
        self.index.add_all(entries);
        self.newest = self.newest.or(entries.last().and_then(Entry::timestamp));
        let Some((first, at)) = entries.first().and_then(|e| Some((e, e.timestamp()?))) else {
            return true;
        };
        self.oldest_read = Some((first.seq, at));
        let reach = self.newest.and_then(|n| n.checked_sub(self.window).ok());
        reach.is_none_or(|reach| at > reach)
    }

    /// The index. Entry times are when a reconcile began, and appends land
    /// in the order reconciles finish, so "older than the first entry read"
    /// does not mean "recorded". Only transitions older than the index
    /// reaches by a whole window are taken as recorded; having read the
    /// stream back to entry 1, nothing is.
    pub fn index(self) -> Index {
        let covered_from = match self.oldest_read {
            Some((1, _)) | None => None,
            Some((_, at)) => at.checked_sub(self.window).ok(),
        };
        Index {
            covered_from,
            ..self.index
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::{build, ts};

    const WINDOW: Duration = Duration::from_secs(30 * 60);

    /// Entries 1..=n, `gap` apart, from 2026-03-01T00:00:00Z.
    fn spaced(n: u64, gap: SignedDuration) -> Vec<Entry> {
        let start = ts("2026-03-01T00:00:00Z");
        let mut entries = build(n);
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.time = crate::audit::format_time(start + gap * i as i32);
        }
        entries
    }

    #[test]
    fn the_index_holds_the_highest_transition_per_key() {
        let mut index = Index::default();
        let entries = build(4);
        index.add_all(&entries);
        for e in &entries {
            assert!(index.holds(&e.uid, e.transition), "{e:?}");
        }
        // uid-1 has transitions 1 and 2.
        assert!(index.holds("uid-1", 1) && index.holds("uid-1", 2));
        assert!(!index.holds("uid-1", 3));
        assert!(!index.holds("unknown", 1));
        assert_eq!(index.keys(), 3);
    }

    #[test]
    fn a_uuid_is_held_packed_and_never_shares_an_entry_with_another_text() {
        let uid = "0b9e1a52-6c1d-4c1e-9f1e-2a3b4c5d6e7f";
        assert!(matches!(Uid::of(uid), Uid::Uuid(_)));
        let mut index = Index::default();
        let mut entries = build(1);
        entries[0].uid = uid.to_string();
        index.add_all(&entries);
        assert!(index.holds(uid, entries[0].transition));
        for other in [
            uid.to_uppercase(),
            uid.replace('-', ""),
            format!("{{{uid}}}"),
        ] {
            assert!(matches!(Uid::of(&other), Uid::Text(_)), "{other}");
            assert!(!index.holds(&other, 1), "{other}");
        }
    }

    #[test]
    fn the_tail_is_read_back_a_whole_window_before_the_newest_entry() {
        let entries = spaced(40, SignedDuration::from_mins(2));
        let mut tail = Tail::new(WINDOW);
        // Segments of ten, newest first: entry 31 is 18 minutes older than
        // entry 40, entry 21 is 38 minutes older, past the window.
        assert!(tail.add_older(&entries[30..]));
        assert!(!tail.add_older(&entries[20..30]));
        let index = tail.index();
        let entry_21 = entries[20].timestamp().expect("time");
        let before = entry_21 - SignedDuration::from_mins(30);
        assert!(index.is_recorded("not-indexed", 1, before - SignedDuration::from_nanos(1)));
        assert!(!index.is_recorded("not-indexed", 1, before));
        assert!(index.is_recorded(&entries[25].uid, entries[25].transition, before));
    }

    #[test]
    fn a_tail_read_back_to_entry_one_takes_nothing_else_as_recorded() {
        let entries = spaced(10, SignedDuration::from_mins(1));
        let mut tail = Tail::new(WINDOW);
        assert!(tail.add_older(&entries[5..]));
        assert!(tail.add_older(&entries[..5]));
        assert!(tail.add_older(&[]), "an empty segment says nothing");
        let index = tail.index();
        assert!(!index.is_recorded("not-indexed", 1, ts("2000-01-01T00:00:00Z")));
        assert_eq!(index.covered_from(), None);
    }

    #[test]
    fn a_watermarked_index_covers_what_came_before_the_watermark() {
        let from = ts("2026-03-01T12:00:00Z");
        let mut index = Index::covering(from);
        assert_eq!(index.covered_from(), Some(from));
        assert!(index.is_recorded("old", 1, from - SignedDuration::from_nanos(1)));
        assert!(!index.is_recorded("new", 1, from));
        let entries = build(2);
        index.add_all(&entries);
        assert!(index.is_recorded(&entries[1].uid, entries[1].transition, from));
    }
}
