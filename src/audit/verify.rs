//! Verifying the stream: walks every line of every segment in order and
//! names the first break in the chain. Pure.
//!
//! # What [`verify`] guarantees, and what it cannot
//!
//! If [`verify`] returns `Ok`, every line is a well-formed entry, `seq` runs
//! without gaps from the first entry to the last, every entry links by hash
//! to the one before it, and the first entry is either entry 1 (linked to
//! [`GENESIS`]) or vouched for by a later "pruned" entry (see
//! [`pruned_draft`](crate::audit::pruned_draft)).
//!
//! A hash chain proves integrity *relative to its end*. On its own it cannot
//! detect:
//! * an edit of the **last** entry, as long as the line stays well-formed
//!   (nothing after it records its hash; an edit of its `seq` or `prev` is
//!   still caught, and a broken line is caught as malformed);
//! * removal of entries at the **end** (the shorter stream is a valid chain);
//! * someone with write access rewriting the stream from some entry onwards
//!   and recomputing every later hash (a chain gives tamper evidence, not
//!   authenticity: there is no secret involved).
//!
//! All three are caught by [`verify_with_checkpoint`] against a [`Head`]
//! recorded somewhere the tamperer cannot also rewrite (exported with
//! `keymint audit`, logged, kept by a second system). The I/O layer decides
//! where checkpoints live.

use std::cmp::Ordering;

use crate::audit::entry::hash_line;
use crate::audit::finding::{Anchor, Finding, FindingKind, Summary};
use crate::audit::seal::Keyring;
use crate::audit::segment::{lines, parse_line};
use crate::audit::{Entry, GENESIS, Head};

/// Verifies a stream given as its segments in order (oldest first), each as
/// `(segment name, content)`; empty segments are allowed. Returns a summary,
/// or the first problem in stream order. See the module docs for what `Ok`
/// guarantees and [`FindingKind`] for how problems are classified.
pub fn verify(segments: &[(String, String)]) -> Result<Summary, Finding> {
    Stream::read(segments).verify()
}

/// [`verify`], and also that every pruned entry (and entry 1, if sealed)
/// carries keymint's seal (`seal`), and that the stream still holds
/// `checkpoint` (a head recorded earlier, e.g. [`Summary::head`]): catches
/// what the chain alone cannot, an edit of the last entry, removal of the
/// newest entries, and a forged pruning. Entries appended after the
/// checkpoint are fine; a checkpoint older than the oldest kept entry is
/// accepted only when a sealed pruning vouches for the gap. A stream that
/// started over since the checkpoint is reported as such.
///
/// Without the key (`keyring` unreadable) the seals cannot be checked: a
/// stream that starts with entry 1 still verifies, one that relies on a
/// pruning does not.
pub fn verify_with_checkpoint(
    segments: &[(String, String)],
    checkpoint: &Head,
    keyring: &Keyring,
) -> Result<Summary, Finding> {
    let stream = Stream::read(segments);
    let summary = stream.verify()?;
    stream.authenticate(&summary, keyring)?;
    if checkpoint.seq == 0 {
        return Ok(summary);
    }
    let found = stream.items().find(|i| i.entry.seq == checkpoint.seq);
    if found.is_some_and(|item| item.hash == checkpoint.hash) {
        return Ok(summary);
    }
    // A stream keymint started afresh cannot hold a checkpoint of the one
    // before. That is certain when the checkpoint's seq is there, differs,
    // and the chain goes on past it; a checkpoint beyond the end, or at the
    // last entry, may also mean the newest entries were cut or edited, so
    // the finding says both.
    let start = stream.started();
    let beyond = |item: &Item| summary.last_seq.is_some_and(|last| last > item.entry.seq);
    match (found, start) {
        (Some(item), Some(start)) if beyond(item) => Err(stream.started_over(start, checkpoint)),
        (Some(item), _) => Err(stream.finding(
            item,
            FindingKind::Modified,
            Some(item.entry.seq),
            format!(
                "its hash {} differs from the checkpoint {}{}",
                item.hash,
                checkpoint.hash,
                or_started_over(start)
            ),
        )),
        (None, _) => match summary.last_seq {
            Some(last) if checkpoint.seq < last => Ok(summary),
            last => {
                let mut finding = missing_at_end(segments, checkpoint, last);
                finding.detail.push_str(&or_started_over(start));
                Err(finding)
            }
        },
    }
}

/// "; or the stream started over ...", when `start` records that keymint
/// started the stream: a checkpoint that does not match may be of the
/// stream before.
fn or_started_over(start: Option<&Item>) -> String {
    start.map_or_else(String::new, |s| {
        format!(
            "; or the stream started over at {} (entry 1 records that keymint started it with no earlier head) and the checkpoint is from the stream before",
            s.entry.time
        )
    })
}

/// The entries after `last` up to the `checkpoint` are missing from the
/// end of the stream.
fn missing_at_end(segments: &[(String, String)], checkpoint: &Head, last: Option<u64>) -> Finding {
    let (segment, line) = match segments.last() {
        Some((name, content)) => (name.clone(), lines(content).count() + 1),
        None => (String::new(), 1),
    };
    Finding {
        segment,
        line,
        seq: None,
        kind: FindingKind::Removed {
            first: last.map_or(1, |l| l + 1),
            last: checkpoint.seq,
        },
        detail: format!(
            "the checkpoint is entry {} but the stream ends at entry {}",
            checkpoint.seq,
            last.unwrap_or(0)
        ),
    }
}

/// A well-formed line of the stream.
struct Item<'a> {
    /// Index into the segments.
    segment: usize,
    line: usize,
    text: &'a str,
    entry: Entry,
    /// Hash of `text` (equal to `entry.hash()`, as lines are canonical).
    hash: String,
}

impl Item<'_> {
    /// What the entry after this one links to.
    fn head(&self) -> Head {
        Head {
            seq: self.entry.seq,
            hash: self.hash.clone(),
        }
    }
}

/// A line that is not a well-formed entry.
struct Malformed {
    segment: usize,
    line: usize,
    reason: String,
}

/// A line of the stream, parsed or not.
type Slot<'a> = Result<Item<'a>, Malformed>;

/// Line `line` of segment `segment`, `text`, parsed.
fn slot(segment: usize, line: usize, text: &str, terminated: bool) -> Slot<'_> {
    match parse_line(text, terminated) {
        Ok(entry) => Ok(Item {
            segment,
            line,
            text,
            entry,
            hash: hash_line(text),
        }),
        Err(reason) => Err(Malformed {
            segment,
            line,
            reason,
        }),
    }
}

fn item<'s, 'a>(slot: &'s Slot<'a>) -> Option<&'s Item<'a>> {
    slot.as_ref().ok()
}

/// What an entry must link to: the entry before it, or for the first entry
/// genesis or a pruned entry's record (`at` is `None` then).
struct Link<'s, 'a> {
    seq: u64,
    hash: &'s str,
    at: Option<&'s Item<'a>>,
}

impl<'s, 'a> Link<'s, 'a> {
    /// The entry `p` as what the next entry links to.
    fn after(p: &'s Item<'a>) -> Link<'s, 'a> {
        Link {
            seq: p.entry.seq,
            hash: &p.hash,
            at: Some(p),
        }
    }

    /// The seq of the entry that follows.
    fn next_seq(&self) -> u64 {
        self.seq.saturating_add(1)
    }

    /// "entry 6", "genesis", "entry 6 (as recorded by a pruned entry)".
    fn name(&self) -> String {
        match self.at {
            Some(_) => format!("entry {}", self.seq),
            None if self.seq == 0 => "genesis".to_string(),
            None => format!("entry {} (as recorded by a pruned entry)", self.seq),
        }
    }
}

/// Every line of every segment, parsed, in stream order. Lines after a
/// malformed one are kept: the classification looks ahead.
struct Stream<'a> {
    segments: &'a [(String, String)],
    slots: Vec<Slot<'a>>,
}

impl<'a> Stream<'a> {
    fn read(segments: &'a [(String, String)]) -> Stream<'a> {
        let mut slots = Vec::new();
        for (segment, (_, content)) in segments.iter().enumerate() {
            for (line, text, terminated) in lines(content) {
                slots.push(slot(segment, line, text, terminated));
            }
        }
        Stream { segments, slots }
    }

    fn items(&self) -> impl Iterator<Item = &Item<'a>> {
        self.slots.iter().filter_map(item)
    }

    fn name(&self, segment: usize) -> String {
        self.segments
            .get(segment)
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    }

    fn finding(&self, item: &Item, kind: FindingKind, seq: Option<u64>, detail: String) -> Finding {
        Finding {
            segment: self.name(item.segment),
            line: item.line,
            seq,
            kind,
            detail,
        }
    }

    fn malformed(&self, m: &Malformed) -> Finding {
        Finding {
            segment: self.name(m.segment),
            line: m.line,
            seq: None,
            kind: FindingKind::Malformed,
            detail: m.reason.clone(),
        }
    }

    /// "keymint-audit-0000000003 line 7", for details.
    fn place(&self, item: &Item) -> String {
        format!("{} line {}", self.name(item.segment), item.line)
    }

    fn verify(&self) -> Result<Summary, Finding> {
        let mut before: Option<&Item> = None;
        let mut anchor = Anchor::Empty;
        for (index, slot) in self.slots.iter().enumerate() {
            let item = slot.as_ref().map_err(|m| self.malformed(m))?;
            match before {
                None => anchor = self.anchor(index, item)?,
                Some(p) => self
                    .check(&Link::after(p), index, item)
                    .map_or(Ok(()), Err)?,
            }
            before = Some(item);
        }
        Ok(Summary {
            segments: self.segments.len(),
            entries: self.slots.len(),
            first_seq: self.items().next().map(|i| i.entry.seq),
            last_seq: before.map(|i| i.entry.seq),
            head: before.map_or_else(Head::genesis, Item::head),
            anchor,
        })
    }

    /// The pruned entry the stream's start relies on carries keymint's
    /// seal, and so does every entry that claims one (entry 1 of a stream
    /// keymint started, later prunings). An unsealed pruning the start does
    /// not rely on is one written before seals existed: it vouches for
    /// nothing any more. Without the key, the stream must not rely on a
    /// pruning (its first entry is entry 1).
    fn authenticate(&self, summary: &Summary, keyring: &Keyring) -> Result<(), Finding> {
        let anchor = match summary.anchor {
            Anchor::Pruned { by_seq } => Some(by_seq),
            Anchor::Empty | Anchor::Genesis => None,
        };
        let claims = |i: &&Item| i.entry.seal.is_some() || Some(i.entry.seq) == anchor;
        match keyring {
            Keyring::Key(key) => match self.items().filter(claims).find(|i| !key.proves(&i.entry)) {
                None => Ok(()),
                Some(forged) => Err(self.finding(
                    forged,
                    FindingKind::Forged,
                    Some(forged.entry.seq),
                    format!(
                        "this {} entry does not carry keymint's seal for its content (no seal, another key's, or a changed entry): keymint did not write it",
                        forged.entry.action
                    ),
                )),
            },
            Keyring::Unreadable(why) => match summary.anchor {
                Anchor::Pruned { by_seq } => {
                    let first = self.items().next();
                    let (segment, line) = first.map_or((0, 1), |i| (i.segment, i.line));
                    Err(Finding {
                        segment: self.name(segment),
                        line,
                        seq: summary.first_seq,
                        kind: FindingKind::Unverifiable,
                        detail: format!(
                            "the stream starts after a pruning that entry {by_seq} records, and only keymint's audit key proves that keymint wrote it: {why}"
                        ),
                    })
                }
                Anchor::Empty | Anchor::Genesis => Ok(()),
            },
        }
    }

    /// The stream's first entry, if it records that keymint started the
    /// stream: entry 1, sealed (`authenticate` checked the seal, when the
    /// key was at hand).
    fn started(&self) -> Option<&Item<'a>> {
        self.items()
            .next()
            .filter(|i| i.entry.seq == 1 && i.entry.seal.is_some())
    }

    /// The checkpoint is not in a stream that `start` began: it is from the
    /// stream before.
    fn started_over(&self, start: &Item, checkpoint: &Head) -> Finding {
        self.finding(
            start,
            FindingKind::StartedOver,
            Some(1),
            format!(
                "keymint started this stream at {} with no earlier head to link to (entry 1, sealed by keymint); the checkpoint, entry {} ({}), is from the stream before it",
                start.entry.time, checkpoint.seq, checkpoint.hash
            ),
        )
    }

    /// Accepts the first entry if it is entry 1 linked to genesis, or if a
    /// later pruned entry recorded exactly its predecessor (seq and hash).
    /// Otherwise picks the most plausible predecessor to say what is wrong.
    fn anchor(&self, index: usize, first: &Item) -> Result<Anchor, Finding> {
        let pruned: Vec<(&Item, u64, &str)> = self
            .items()
            .skip(1)
            .filter_map(|i| i.entry.pruned_through().map(|(s, h)| (i, s, h)))
            .collect();
        let e = &first.entry;
        if let Some((by, _, _)) = pruned
            .iter()
            .find(|(_, seq, hash)| seq.checked_add(1) == Some(e.seq) && *hash == e.prev)
        {
            return Ok(Anchor::Pruned {
                by_seq: by.entry.seq,
            });
        }
        // A record with its hash: the first entry's seq was edited. Else
        // genesis if it claims to be entry 1. Else a record for its seq: its
        // prev was edited.
        let by_hash = pruned.iter().find(|(_, _, hash)| *hash == e.prev);
        let by_seq = pruned
            .iter()
            .find(|(_, seq, _)| seq.checked_add(1) == Some(e.seq));
        let (seq, hash) = match (by_hash, by_seq) {
            (Some((_, seq, hash)), _) => (*seq, *hash),
            _ if e.seq == 1 || e.prev == GENESIS => (0, GENESIS),
            (None, Some((_, seq, hash))) => (*seq, *hash),
            (None, None) => (0, GENESIS),
        };
        let link = Link {
            seq,
            hash,
            at: None,
        };
        match self.check(&link, index, first) {
            None => Ok(Anchor::Genesis),
            Some(finding) => Err(finding),
        }
    }

    /// Checks that `cur` (at `index`) follows `link`; classifies the break
    /// as documented on [`FindingKind`].
    /// Checks that `cur` (at `index`) follows `link`; classifies the break
    /// as documented on [`FindingKind`].
    fn check(&self, link: &Link, index: usize, cur: &Item) -> Option<Finding> {
        let e = &cur.entry;
        if e.prev == link.hash {
            return (e.seq != link.next_seq()).then(|| self.seq_edited(link, cur));
        }
        Some(match e.seq.cmp(&link.next_seq()) {
            Ordering::Equal => self.link_broken(link, index, cur),
            Ordering::Greater => self.seq_jumps(link, index, cur),
            Ordering::Less => self.seq_goes_back(link, index, cur),
        })
    }

    /// `cur` links to its predecessor by hash, but its seq is not the next
    /// one: its seq was edited.
    fn seq_edited(&self, link: &Link, cur: &Item) -> Finding {
        let expected = link.next_seq();
        self.finding(
            cur,
            FindingKind::Modified,
            Some(expected),
            format!(
                "it links to {} by hash, so it is entry {expected}, but its seq says {}",
                link.name(),
                cur.entry.seq
            ),
        )
    }

    /// `cur` has the next seq but does not link to its predecessor: its own
    /// prev was edited, or the predecessor (whose hash changed).
    fn link_broken(&self, link: &Link, index: usize, cur: &Item) -> Finding {
        if self.relinks(index, cur, link.hash) {
            return self.finding(
                cur,
                FindingKind::Modified,
                Some(cur.entry.seq),
                format!(
                    "its prev was changed: with the hash of {} restored, the next entry links to it again",
                    link.name()
                ),
            );
        }
        match link.at {
            Some(p) => self.finding(
                p,
                FindingKind::Modified,
                Some(p.entry.seq),
                format!(
                    "its hash no longer matches the prev recorded by entry {} ({})",
                    cur.entry.seq,
                    self.place(cur)
                ),
            ),
            None => self.unanchored(
                cur,
                format!(
                    "it does not link to {}, whose hash is {}",
                    link.name(),
                    link.hash
                ),
            ),
        }
    }

    /// `cur`'s seq skips ahead: it is a copy of a later entry, it came too
    /// early, or the entries in between were removed.
    fn seq_jumps(&self, link: &Link, index: usize, cur: &Item) -> Finding {
        let e = &cur.entry;
        let (first, last) = (link.next_seq(), e.seq - 1);
        if let Some(copy) = self.later(index).find(|i| i.entry.seq == e.seq) {
            return self.finding(
                cur,
                FindingKind::Duplicated,
                Some(e.seq),
                format!(
                    "entry {} appears again at {}{}",
                    e.seq,
                    self.place(copy),
                    same_or_different(cur, copy)
                ),
            );
        }
        if let Some(skipped) = self
            .later(index)
            .find(|i| (first..=last).contains(&i.entry.seq))
        {
            return self.finding(
                cur,
                FindingKind::Reordered,
                Some(e.seq),
                format!(
                    "it comes before entry {} ({})",
                    skipped.entry.seq,
                    self.place(skipped)
                ),
            );
        }
        match link.at {
            Some(p) => self.removed(p, cur, first, last),
            None => self.unanchored(
                cur,
                format!(
                    "the stream starts at entry {}, entries {first} to {last} are not in it",
                    e.seq
                ),
            ),
        }
    }

    /// Entries `first..=last` are missing between `p` and `cur`.
    fn removed(&self, p: &Item, cur: &Item, first: u64, last: u64) -> Finding {
        let boundary = if p.segment != cur.segment && cur.line == 1 {
            " (at a segment boundary: whole segments may be missing)"
        } else {
            ""
        };
        self.finding(
            cur,
            FindingKind::Removed { first, last },
            Some(cur.entry.seq),
            format!(
                "entry {} ({}) is followed by entry {}{boundary}",
                p.entry.seq,
                self.place(p),
                cur.entry.seq
            ),
        )
    }

    /// `cur`'s seq goes back (or repeats): a copy of an earlier entry, or
    /// out of order.
    fn seq_goes_back(&self, link: &Link, index: usize, cur: &Item) -> Finding {
        let e = &cur.entry;
        if link.at.is_none() {
            return self.unanchored(cur, format!("its seq {} cannot start a stream", e.seq));
        }
        let earlier = self.slots[..index]
            .iter()
            .filter_map(item)
            .find(|i| i.entry.seq == e.seq);
        match earlier {
            Some(original) => self.finding(
                cur,
                FindingKind::Duplicated,
                Some(e.seq),
                format!(
                    "entry {} already appeared at {}{}",
                    e.seq,
                    self.place(original),
                    same_or_different(cur, original)
                ),
            ),
            None => self.finding(
                cur,
                FindingKind::Reordered,
                Some(e.seq),
                format!("it comes after {}", link.name()),
            ),
        }
    }

    /// `cur` cannot start the stream.
    fn unanchored(&self, cur: &Item, why: String) -> Finding {
        self.finding(
            cur,
            FindingKind::Unanchored,
            Some(cur.entry.seq),
            format!(
                "{why}; only entry 1 linked to genesis, or an entry whose predecessor a pruned entry records, can start the stream"
            ),
        )
    }

    /// The well-formed lines after the one at `index`.
    fn later(&self, index: usize) -> impl Iterator<Item = &Item<'a>> {
        self.slots[index + 1..].iter().filter_map(item)
    }

    /// Whether `cur`, with `prev` set to `hash`, is what the next entry
    /// links to: then only `cur`'s prev was changed, not the entry before.
    fn relinks(&self, index: usize, cur: &Item, hash: &str) -> bool {
        let Some(next) = self.slots.get(index + 1).and_then(item) else {
            return false;
        };
        let mut restored = cur.entry.clone();
        restored.prev = hash.to_string();
        next.entry.seq == cur.entry.seq.saturating_add(1) && next.entry.prev == restored.hash()
    }
}

fn same_or_different(a: &Item, b: &Item) -> &'static str {
    if a.text == b.text {
        " (an identical copy)"
    } else {
        " with different content (one of them was inserted)"
    }
}

#[cfg(test)]
mod tests;
