//! The durable audit stream, pure part: entries, their canonical encoding,
//! hash chaining, the content of ConfigMap segments, and verification.
//! Reading and writing the ConfigMaps is someone else's job; this module
//! does no I/O and knows no Kubernetes types.
//!
//! # Format
//!
//! The stream is a sequence of [`Entry`] values numbered `seq` 1, 2, 3, ...
//! It is stored in segments (ConfigMaps) as JSON Lines: one entry per line,
//! each line the entry's canonical encoding ([`Entry::encode`]: compact
//! `serde_json` output, fields in struct order) followed by `'\n'`. A line
//! must be exactly that encoding; anything else (extra spaces, `null` for an
//! absent field, another time format, unknown fields) is malformed. That
//! makes "the entry" and "the bytes stored" the same thing, so the hash of a
//! parsed entry is the hash of its stored line.
//!
//! # Chaining
//!
//! Every entry carries in `prev` the `sha256:<hex>` of the previous entry's
//! line; entry 1 carries [`GENESIS`]. Editing an entry therefore changes the
//! hash that its successor recorded, deleting or moving one breaks `seq`
//! continuity and the links, and the break is found by [`verify`].
//!
//! # What [`verify`] guarantees, and what it cannot
//!
//! If [`verify`] returns `Ok`, every line is a well-formed entry, `seq` runs
//! without gaps from the first entry to the last, every entry links by hash
//! to the one before it, and the first entry is either entry 1 (linked to
//! [`GENESIS`]) or vouched for by a later "pruned" entry (see [`pruned_draft`]).
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
//!
//! # No key material
//!
//! Entries have no field for a key: `key_id` is the public id (`km_...`),
//! safe to show anywhere. As defence in depth, [`chain`] also redacts
//! anything that looks like a key (the `kmk_` prefix followed by base62
//! text) from every text field, so a careless message cannot carry one into
//! a stream that is kept and exported for a long time.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use std::fmt;

use crate::apikey::TransitionTime;
use crate::apikey::key::PREFIX as KEY_PREFIX;

/// `prev` of entry 1: `sha256:` and 64 zeros (no entry hashes to it).
pub const GENESIS: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

const _: () = assert!(GENESIS.len() == crate::digest::PREFIX.len() + 64);

/// Fewer base62 characters than this after `kmk_` are left alone: that is
/// prose ("keys start with kmk_"), not a key or a usable part of one.
const REDACT_MIN_RUN: usize = 8;
const REDACTED: &str = "[redacted]";

pub use crate::apikey::action::Action;

/// What the caller knows about an event before it is placed in the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    /// Encoded as RFC 3339 in UTC with exactly 9 fractional digits, e.g.
    /// `2026-03-01T12:00:00.123456789Z`.
    pub time: Timestamp,
    pub action: Action,
    /// The ApiKey (all empty for [`Action::Pruned`]).
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The ApiKey's own transition number (1, 2, ...). With `uid` it is the
    /// dedup key: the I/O layer appends a draft only if no entry has the
    /// same `(uid, transition)`, so a retry after a crash adds nothing.
    pub transition: u64,
    pub project: String,
    pub owner: String,
    /// The public key id (`km_...`), never the key or any part of it.
    pub key_id: Option<String>,
    pub reason: String,
    pub message: String,
    /// Which operator process wrote the entry.
    pub instance: String,
    /// Only for [`Action::Pruned`]: the last entry retention removed. Build
    /// such drafts with [`pruned_draft`].
    pub pruned_through: Option<Head>,
}

/// An entry in the stream: a [`Draft`] plus its place in the chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Entry {
    /// 1, 2, 3, ... across the whole stream, across segments.
    pub seq: u64,
    /// As serialised (see [`Draft::time`]); [`Entry::timestamp`] parses it.
    pub time: String,
    pub action: Action,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub transition: u64,
    pub project: String,
    pub owner: String,
    /// The public key id (`km_...`), never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub reason: String,
    pub message: String,
    pub instance: String,
    /// Pruned entries only: seq of the last entry retention removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_through_seq: Option<u64>,
    /// Pruned entries only: hash of that entry, i.e. the `prev` of the
    /// oldest entry kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_through_hash: Option<String>,
    /// `sha256:<hex>` of the previous entry's line; [`GENESIS`] for entry 1.
    /// Last, so a line reads as "this happened, after that".
    pub prev: String,
}

impl Entry {
    /// The canonical line: `serde_json::to_string` of the struct (fields in
    /// declaration order, absent options omitted), no trailing newline.
    pub fn encode(&self) -> String {
        // The derived `Serialize` of strings, integers, options and a unit
        // enum never produces an error, and a `String` writer cannot fail,
        // so there is no error here to hand to callers.
        serde_json::to_string(self).expect("an audit entry always serialises")
    }

    /// `sha256:<hex>` of [`Entry::encode`]: what the next entry's `prev` holds.
    pub fn hash(&self) -> String {
        hash_line(&self.encode())
    }

    /// `(uid, transition)`: equal keys describe the same event.
    pub fn dedup_key(&self) -> (String, u64) {
        (self.uid.clone(), self.transition)
    }

    /// `time` as a timestamp. Always `Some` for entries made by [`chain`] or
    /// returned by [`parse_segment`], which rejects any other time format.
    pub fn timestamp(&self) -> Option<Timestamp> {
        let ts: Timestamp = self.time.parse().ok()?;
        (format_time(ts) == self.time).then_some(ts)
    }

    /// The pruned-through head this entry records, if it is a pruned entry
    /// with both fields.
    fn pruned_through(&self) -> Option<(u64, &str)> {
        match (
            self.action,
            self.pruned_through_seq,
            &self.pruned_through_hash,
        ) {
            (Action::Pruned, Some(seq), Some(hash)) => Some((seq, hash)),
            _ => None,
        }
    }
}

/// The head of the chain: what the next entry links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    /// The head of an empty stream: seq 0, [`GENESIS`].
    pub fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }

    pub fn of(entry: &Entry) -> Head {
        Head {
            seq: entry.seq,
            hash: entry.hash(),
        }
    }
}

/// Places `draft` after `head`: returns the entry and the new head.
pub fn chain(head: &Head, draft: &Draft) -> (Entry, Head) {
    let entry = Entry {
        // Saturating: 2^64 entries will not happen, and a stuck seq would
        // be reported by `verify` rather than wrap silently to 0.
        seq: head.seq.saturating_add(1),
        time: format_time(draft.time),
        action: draft.action,
        namespace: redact(&draft.namespace),
        name: redact(&draft.name),
        uid: redact(&draft.uid),
        transition: draft.transition,
        project: redact(&draft.project),
        owner: redact(&draft.owner),
        key_id: draft.key_id.as_deref().map(redact),
        reason: redact(&draft.reason),
        message: redact(&draft.message),
        instance: redact(&draft.instance),
        pruned_through_seq: draft.pruned_through.as_ref().map(|h| h.seq),
        pruned_through_hash: draft.pruned_through.as_ref().map(|h| h.hash.clone()),
        prev: head.hash.clone(),
    };
    let next = Head::of(&entry);
    (entry, next)
}

/// The draft of a "pruned" entry, recording that retention removed
/// `segments_removed` segments ending with the entry `through` (the [`Head`]
/// of the last removed entry). Once appended, it vouches for the oldest
/// kept entry (whose `prev` is `through.hash`), so [`verify`] still accepts
/// the stream.
///
/// Append it *before* deleting the segments: a crash in between then leaves
/// a longer stream that still verifies from entry 1, whereas the other order
/// would leave a stream with an anchor nobody vouches for.
///
/// Its dedup key is `("", through.seq)`, so retrying the same pruning after
/// a crash does not append a second entry.
pub fn pruned_draft(
    time: Timestamp,
    instance: &str,
    through: &Head,
    segments_removed: usize,
) -> Draft {
    let plural = if segments_removed == 1 { "" } else { "s" };
    Draft {
        time,
        action: Action::Pruned,
        namespace: String::new(),
        name: String::new(),
        uid: String::new(),
        transition: through.seq,
        project: String::new(),
        owner: String::new(),
        key_id: None,
        reason: "Retention".to_string(),
        message: format!(
            "retention removed {segments_removed} segment{plural} holding the entries up to and including entry {} ({}); the oldest kept entry links to it",
            through.seq, through.hash
        ),
        instance: instance.to_string(),
        pruned_through: Some(through.clone()),
    }
}

/// A segment's content for `entries`: one canonical line each, each ending
/// in `'\n'`.
pub fn encode_segment(entries: &[Entry]) -> String {
    append_lines("", entries)
}

/// `existing` segment content with `entries` appended. A missing final
/// newline in `existing` is supplied first, so its last line stays whole.
pub fn append_lines(existing: &str, entries: &[Entry]) -> String {
    let mut out = String::with_capacity(size_after(existing, entries));
    out.push_str(existing);
    if needs_newline(existing) {
        out.push('\n');
    }
    for entry in entries {
        out.push_str(&entry.encode());
        out.push('\n');
    }
    out
}

/// Size in bytes of [`append_lines`]`(existing, entries)`, without building
/// it: the I/O layer rolls over to a new segment before this would exceed
/// its budget (kept well below the 1 MiB ConfigMap limit, which also covers
/// the object's metadata).
pub fn size_after(existing: &str, entries: &[Entry]) -> usize {
    let added: usize = entries.iter().map(|e| e.encode().len() + 1).sum();
    existing.len() + usize::from(needs_newline(existing)) + added
}

fn needs_newline(content: &str) -> bool {
    !content.is_empty() && !content.ends_with('\n')
}

/// A line of a segment that is not a well-formed entry. Says which line and
/// why, never what the line holds: it could be anything someone pasted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// The entries of a segment, or the first line that is not a well-formed
/// entry in canonical form. Empty content is an empty segment.
pub fn parse_segment(content: &str) -> Result<Vec<Entry>, ParseError> {
    lines(content)
        .map(|(line, text, terminated)| {
            parse_line(text, terminated).map_err(|reason| ParseError { line, reason })
        })
        .collect()
}

/// The lines of a segment: (1-based number, text without `'\n'`, whether it
/// ended with `'\n'`).
fn lines(content: &str) -> impl Iterator<Item = (usize, &str, bool)> {
    content
        .split_inclusive('\n')
        .enumerate()
        .map(|(i, raw)| match raw.strip_suffix('\n') {
            Some(text) => (i + 1, text, true),
            None => (i + 1, raw, false),
        })
}

fn parse_line(text: &str, terminated: bool) -> Result<Entry, String> {
    if text.is_empty() {
        return Err("empty line".to_string());
    }
    let entry: Entry = serde_json::from_str(text).map_err(|e| describe_json_error(&e))?;
    if entry.encode() != text {
        return Err("not in canonical form (compact JSON, fields in keymint's order, absent fields omitted)".to_string());
    }
    if entry.timestamp().is_none() {
        return Err(format!(
            "time is not an RFC 3339 UTC timestamp with {} fractional digits",
            TransitionTime::DIGITS
        ));
    }
    if !terminated {
        // keymint ends every line with '\n'; a line without one was cut
        // short or written by hand.
        return Err("the segment does not end with a newline".to_string());
    }
    Ok(entry)
}

/// A description of a JSON error that does not quote the input: serde's
/// messages may contain values from the line ("invalid type: string ...").
/// A missing field names one of ours, so that message is kept.
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!("not valid JSON (column {})", e.column()),
        Category::Data => {
            let message = e.to_string();
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(field, _)| field.to_string());
            match missing {
                Some(field) => format!("not an audit entry: missing field `{field}`"),
                None => format!(
                    "not an audit entry: unknown field, or a field of the wrong type or value (column {})",
                    e.column()
                ),
            }
        }
        Category::Io => "could not be read".to_string(),
    }
}

/// How the stream's first entry is anchored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// No entries at all.
    Empty,
    /// It is entry 1 and links to [`GENESIS`].
    Genesis,
    /// The pruned entry with this seq records the hash the first entry links to.
    Pruned { by_seq: u64 },
}

/// A stream that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub segments: usize,
    pub entries: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Where the next entry links to ([`Head::genesis`] if empty). Record it
    /// as a checkpoint for [`verify_with_checkpoint`].
    pub head: Head,
    pub anchor: Anchor,
}

/// The first problem [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Name of the segment holding the line.
    pub segment: String,
    /// 1-based line in that segment: the entry at fault, or for
    /// [`FindingKind::Removed`] the first entry after the gap.
    pub line: usize,
    /// The seq of the entry at `segment`/`line` in the chain (for an edited
    /// `seq` field, the seq it should have, not the one it shows); `None`
    /// for a malformed line or a gap at the end.
    pub seq: Option<u64>,
    pub kind: FindingKind,
    /// One line, never the content of a malformed line.
    pub detail: String,
}

/// What kind of problem [`verify`] found, decided from the links around the
/// first break in the chain (the classification assumes a single change;
/// several changes close together are still found, possibly under another
/// kind):
///
/// * the entry's `prev` matches the entry before it but `seq` is not one
///   more: its `seq` was edited → [`Modified`](FindingKind::Modified);
/// * `seq` is one more but `prev` does not match: the entry before was
///   edited (its hash changed) → `Modified` at that entry; unless restoring
///   this entry's `prev` makes the next entry link to it again, in which
///   case this entry's `prev` was edited → `Modified` at this entry;
/// * `seq` jumps ahead: if this entry's seq shows up again later →
///   [`Duplicated`](FindingKind::Duplicated); if a skipped seq shows up
///   later → [`Reordered`](FindingKind::Reordered) (at the entry that came
///   too early); otherwise → [`Removed`](FindingKind::Removed) with the
///   missing range (a single entry or whole segments);
/// * `seq` goes back: if an earlier entry has the same seq → `Duplicated`,
///   otherwise → `Reordered`.
///
/// At the first entry of the stream the same rules apply against the entry
/// it must follow: genesis, or what a pruned entry recorded. Where the
/// culprit would be that predecessor, or entries before the first are
/// missing with nothing vouching for the gap, the finding is
/// [`Unanchored`](FindingKind::Unanchored) (so deleting entry 1 is
/// `Unanchored`, not `Removed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// The line is not a well-formed entry in canonical form.
    Malformed,
    /// The entry's content differs from what was chained.
    Modified,
    /// Entries `first..=last` are missing.
    Removed { first: u64, last: u64 },
    /// The entry appears before an entry with a smaller seq.
    Reordered,
    /// The seq appears twice (a copied line, or an entry inserted with an
    /// existing seq).
    Duplicated,
    /// The first entry is neither entry 1 linked to genesis nor vouched for
    /// by a pruned entry.
    Unanchored,
}

impl FindingKind {
    /// A stable label, e.g. for JSON output of `keymint audit verify`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FindingKind::Malformed => "malformed",
            FindingKind::Modified => "modified",
            FindingKind::Removed { .. } => "removed",
            FindingKind::Reordered => "reordered",
            FindingKind::Duplicated => "duplicated",
            FindingKind::Unanchored => "unanchored",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = format!("{} line {}", self.segment, self.line);
        let subject = match self.seq {
            Some(seq) => format!("entry {seq} in {at}"),
            None => at.clone(),
        };
        let detail = &self.detail;
        match self.kind {
            FindingKind::Malformed => write!(f, "{subject} is malformed: {detail}"),
            FindingKind::Modified => write!(f, "{subject} was modified: {detail}"),
            FindingKind::Removed { first, last } if first == last => {
                write!(f, "entry {first} was removed (at {at}): {detail}")
            }
            FindingKind::Removed { first, last } => {
                write!(
                    f,
                    "entries {first} to {last} were removed (at {at}): {detail}"
                )
            }
            FindingKind::Reordered => write!(f, "{subject} is out of order: {detail}"),
            FindingKind::Duplicated => write!(f, "{subject} is duplicated: {detail}"),
            FindingKind::Unanchored => {
                write!(
                    f,
                    "{subject} starts the stream but is not anchored: {detail}"
                )
            }
        }
    }
}

impl std::error::Error for Finding {}

/// Verifies a stream given as its segments in order (oldest first), each as
/// `(segment name, content)`; empty segments are allowed. Returns a summary,
/// or the first problem in stream order. See the module docs for what `Ok`
/// guarantees and [`FindingKind`] for how problems are classified.
pub fn verify(segments: &[(String, String)]) -> Result<Summary, Finding> {
    Stream::read(segments).verify()
}

/// [`verify`], and also that the stream still holds `checkpoint` (a head
/// recorded earlier, e.g. [`Summary::head`]): catches what the chain alone
/// cannot, an edit of the last entry or removal of the newest entries.
/// Entries appended after the checkpoint are fine; a checkpoint older than
/// the oldest kept entry (pruned since) cannot be compared and is accepted.
pub fn verify_with_checkpoint(
    segments: &[(String, String)],
    checkpoint: &Head,
) -> Result<Summary, Finding> {
    let stream = Stream::read(segments);
    let summary = stream.verify()?;
    if checkpoint.seq == 0 {
        return Ok(summary);
    }
    if let Some(item) = stream.items().find(|i| i.entry.seq == checkpoint.seq) {
        if item.hash == checkpoint.hash {
            return Ok(summary);
        }
        return Err(stream.finding(
            item,
            FindingKind::Modified,
            Some(item.entry.seq),
            format!(
                "its hash {} differs from the checkpoint {}",
                item.hash, checkpoint.hash
            ),
        ));
    }
    match summary.last_seq {
        Some(last) if checkpoint.seq < last => Ok(summary),
        last => {
            let first = last.map_or(1, |l| l + 1);
            let (segment, line) = match segments.last() {
                Some((name, content)) => (name.clone(), lines(content).count() + 1),
                None => (String::new(), 1),
            };
            Err(Finding {
                segment,
                line,
                seq: None,
                kind: FindingKind::Removed {
                    first,
                    last: checkpoint.seq,
                },
                detail: format!(
                    "the checkpoint is entry {} but the stream ends at entry {}",
                    checkpoint.seq,
                    last.unwrap_or(0)
                ),
            })
        }
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

/// A line that is not a well-formed entry.
struct Malformed {
    segment: usize,
    line: usize,
    reason: String,
}

/// A line of the stream, parsed or not.
type Slot<'a> = Result<Item<'a>, Malformed>;

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
                slots.push(match parse_line(text, terminated) {
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
                });
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

    /// "keymint-audit-0000000003 line 7", for details.
    fn place(&self, item: &Item) -> String {
        format!("{} line {}", self.name(item.segment), item.line)
    }

    fn verify(&self) -> Result<Summary, Finding> {
        let mut before: Option<&Item> = None;
        let mut anchor = Anchor::Empty;
        for (index, slot) in self.slots.iter().enumerate() {
            let item = match slot {
                Ok(item) => item,
                Err(Malformed {
                    segment,
                    line,
                    reason,
                }) => {
                    return Err(Finding {
                        segment: self.name(*segment),
                        line: *line,
                        seq: None,
                        kind: FindingKind::Malformed,
                        detail: reason.clone(),
                    });
                }
            };
            match before {
                None => anchor = self.anchor(index, item)?,
                Some(p) => {
                    let link = Link {
                        seq: p.entry.seq,
                        hash: &p.hash,
                        at: Some(p),
                    };
                    if let Some(finding) = self.check(&link, index, item) {
                        return Err(finding);
                    }
                }
            }
            before = Some(item);
        }
        Ok(Summary {
            segments: self.segments.len(),
            entries: self.slots.len(),
            first_seq: self.items().next().map(|i| i.entry.seq),
            last_seq: before.map(|i| i.entry.seq),
            head: before.map_or_else(Head::genesis, |i| Head {
                seq: i.entry.seq,
                hash: i.hash.clone(),
            }),
            anchor,
        })
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
    fn check(&self, link: &Link, index: usize, cur: &Item) -> Option<Finding> {
        let e = &cur.entry;
        let expected = link.seq.saturating_add(1);
        let pred_name = match link.at {
            Some(_) => format!("entry {}", link.seq),
            None if link.seq == 0 => "genesis".to_string(),
            None => format!("entry {} (as recorded by a pruned entry)", link.seq),
        };
        if e.prev == link.hash {
            if e.seq == expected {
                return None;
            }
            return Some(self.finding(
                cur,
                FindingKind::Modified,
                Some(expected),
                format!(
                    "it links to {pred_name} by hash, so it is entry {expected}, but its seq says {}",
                    e.seq
                ),
            ));
        }

        let later = || self.slots[index + 1..].iter().filter_map(item);
        let unanchored = |why: String| {
            self.finding(
                cur,
                FindingKind::Unanchored,
                Some(e.seq),
                format!(
                    "{why}; only entry 1 linked to genesis, or an entry whose predecessor a pruned entry records, can start the stream"
                ),
            )
        };

        if e.seq == expected {
            if self.relinks(index, cur, link.hash) {
                return Some(self.finding(
                    cur,
                    FindingKind::Modified,
                    Some(e.seq),
                    format!(
                        "its prev was changed: with the hash of {pred_name} restored, the next entry links to it again"
                    ),
                ));
            }
            return Some(match link.at {
                Some(p) => self.finding(
                    p,
                    FindingKind::Modified,
                    Some(p.entry.seq),
                    format!(
                        "its hash no longer matches the prev recorded by entry {} ({})",
                        e.seq,
                        self.place(cur)
                    ),
                ),
                None => unanchored(format!(
                    "it does not link to {pred_name}, whose hash is {}",
                    link.hash
                )),
            });
        }

        if e.seq > expected {
            let (first, last) = (expected, e.seq - 1);
            if let Some(copy) = later().find(|i| i.entry.seq == e.seq) {
                return Some(self.finding(
                    cur,
                    FindingKind::Duplicated,
                    Some(e.seq),
                    format!(
                        "entry {} appears again at {}{}",
                        e.seq,
                        self.place(copy),
                        same_or_different(cur, copy)
                    ),
                ));
            }
            if let Some(skipped) = later().find(|i| (first..=last).contains(&i.entry.seq)) {
                return Some(self.finding(
                    cur,
                    FindingKind::Reordered,
                    Some(e.seq),
                    format!(
                        "it comes before entry {} ({})",
                        skipped.entry.seq,
                        self.place(skipped)
                    ),
                ));
            }
            return Some(match link.at {
                Some(p) => {
                    let boundary = if p.segment != cur.segment && cur.line == 1 {
                        " (at a segment boundary: whole segments may be missing)"
                    } else {
                        ""
                    };
                    self.finding(
                        cur,
                        FindingKind::Removed { first, last },
                        Some(e.seq),
                        format!(
                            "entry {} ({}) is followed by entry {}{boundary}",
                            p.entry.seq,
                            self.place(p),
                            e.seq
                        ),
                    )
                }
                None => unanchored(format!(
                    "the stream starts at entry {}, entries {first} to {last} are not in it",
                    e.seq
                )),
            });
        }

        // The seq goes back (or repeats).
        if link.at.is_none() {
            return Some(unanchored(format!(
                "its seq {} cannot start a stream",
                e.seq
            )));
        }
        let earlier = self.slots[..index]
            .iter()
            .filter_map(item)
            .find(|i| i.entry.seq == e.seq);
        Some(match earlier {
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
                format!("it comes after {pred_name}"),
            ),
        })
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

/// `time` as stored: RFC 3339, UTC (`Z`), exactly [`TransitionTime::DIGITS`]
/// fractional digits.
pub fn format_time(time: Timestamp) -> String {
    TransitionTime(time).to_string()
}

/// `sha256:<64 lowercase hex>` of a line (the same form as key hashes).
fn hash_line(line: &str) -> String {
    crate::digest::sha256_tagged(line.as_bytes())
}

/// Replaces anything that looks like a key or a usable part of one (the key
/// prefix and at least [`REDACT_MIN_RUN`] base62 characters) with
/// `kmk_[redacted]`.
fn redact(text: &str) -> String {
    if !text.contains(KEY_PREFIX) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY_PREFIX) {
        let after = &rest[at + KEY_PREFIX.len()..];
        out.push_str(&rest[..at + KEY_PREFIX.len()]);
        let run = after.bytes().take_while(u8::is_ascii_alphanumeric).count();
        if run >= REDACT_MIN_RUN {
            out.push_str(REDACTED);
            // `run` counts ASCII bytes, so this is a char boundary.
            rest = &after[run..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    /// Varied drafts: every non-pruned action, with and without key id.
    fn draft(i: u64) -> Draft {
        let actions = &Action::ALL[..9];
        Draft {
            time: ts("2026-03-01T00:00:00Z") + SignedDuration::from_nanos(i as i64 * 1_500_000_007),
            action: actions[i as usize % actions.len()],
            namespace: format!("ns-{}", i % 3),
            name: format!("key-{i}"),
            uid: format!("uid-{}", i / 2),
            transition: i % 2 + 1,
            project: "payments".to_string(),
            owner: "alice@example.com".to_string(),
            key_id: (!i.is_multiple_of(4)).then(|| format!("km_{i:012}")),
            reason: "Minted".to_string(),
            message: format!("event {i}"),
            instance: "keymint-0".to_string(),
            pruned_through: None,
        }
    }

    fn build_from(head: &Head, drafts: impl IntoIterator<Item = Draft>) -> (Vec<Entry>, Head) {
        let mut head = head.clone();
        let entries = drafts
            .into_iter()
            .map(|d| {
                let (e, h) = chain(&head, &d);
                head = h;
                e
            })
            .collect();
        (entries, head)
    }

    fn build(n: u64) -> Vec<Entry> {
        build_from(&Head::genesis(), (1..=n).map(draft)).0
    }

    fn seg_name(i: usize) -> String {
        format!("keymint-audit-{i:010}")
    }

    /// Splits the entries' lines into segments of the given sizes.
    /// Segments as (name, lines), named by their place in the full stream
    /// so that a slice (what retention kept) keeps the names.
    type Segs = Vec<(String, Vec<String>)>;

    /// Splits the entries' lines into segments of the given sizes.
    fn split(entries: &[Entry], sizes: &[usize]) -> Segs {
        assert_eq!(sizes.iter().sum::<usize>(), entries.len());
        let mut lines = entries.iter().map(Entry::encode);
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (seg_name(i), lines.by_ref().take(n).collect()))
            .collect()
    }

    fn pairs(segs: &[(String, Vec<String>)]) -> Vec<(String, String)> {
        segs.iter()
            .map(|(name, lines)| {
                let content: String = lines.iter().map(|l| format!("{l}\n")).collect();
                (name.clone(), content)
            })
            .collect()
    }

    /// (segment index, 0-based line) of the `index`-th line overall.
    fn locate(segs: &[(String, Vec<String>)], mut index: usize) -> (usize, usize) {
        for (s, (_, lines)) in segs.iter().enumerate() {
            if index < lines.len() {
                return (s, index);
            }
            index -= lines.len();
        }
        panic!("index out of range")
    }

    fn at(segs: &mut [(String, Vec<String>)], index: usize) -> &mut String {
        let (s, l) = locate(segs, index);
        &mut segs[s].1[l]
    }

    fn finding(segs: &[(String, Vec<String>)]) -> Finding {
        match verify(&pairs(segs)) {
            Ok(summary) => panic!("expected a finding, verified: {summary:?}"),
            Err(f) => f,
        }
    }

    fn assert_at(f: &Finding, segs: &[(String, Vec<String>)], index: usize) {
        let (s, l) = locate(segs, index);
        assert_eq!(
            (f.segment.as_str(), f.line),
            (segs[s].0.as_str(), l + 1),
            "{f}"
        );
    }

    fn golden_entry() -> Entry {
        let head = Head {
            seq: 41,
            hash: format!("sha256:{}", "ab".repeat(32)),
        };
        let draft = Draft {
            time: ts("2026-03-01T12:34:56.123456789Z"),
            action: Action::ExpiringSoon,
            namespace: "payments".to_string(),
            name: "ci-deploy".to_string(),
            uid: "6f1c2b9e-0d4a-4c1e-9a57-3b2f8e1d7c60".to_string(),
            transition: 3,
            project: "payments".to_string(),
            owner: "alice@example.com".to_string(),
            key_id: Some("km_7Hq2xK9pLm3Q".to_string()),
            reason: "ExpiresSoon".to_string(),
            message: "the key expires at 2026-03-08T00:00:00Z".to_string(),
            instance: "keymint-6d5f7c9b8-x2k4p".to_string(),
            pruned_through: None,
        };
        chain(&head, &draft).0
    }

    const GOLDEN: &str = concat!(
        r#"{"seq":42,"time":"2026-03-01T12:34:56.123456789Z","action":"expiring-soon","#,
        r#""namespace":"payments","name":"ci-deploy","uid":"6f1c2b9e-0d4a-4c1e-9a57-3b2f8e1d7c60","#,
        r#""transition":3,"project":"payments","owner":"alice@example.com","keyId":"km_7Hq2xK9pLm3Q","#,
        r#""reason":"ExpiresSoon","message":"the key expires at 2026-03-08T00:00:00Z","#,
        r#""instance":"keymint-6d5f7c9b8-x2k4p","#,
        r#""prev":"sha256:abababababababababababababababababababababababababababababababab"}"#
    );

    #[test]
    fn canonical_encoding_is_stable() {
        let entry = golden_entry();
        assert_eq!(entry.encode(), GOLDEN);
        let parsed = parse_segment(&format!("{GOLDEN}\n")).expect("golden parses");
        assert_eq!(parsed, vec![entry]);
    }

    #[test]
    fn hash_known_answer() {
        // Computed independently: printf '%s' "$GOLDEN" | sha256sum
        assert_eq!(
            golden_entry().hash(),
            "sha256:5258f3fb7c428589ef87964dcb4d29b69f0919d32103f1c8304930e5aa443532"
        );
        assert_eq!(
            hash_line("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn optional_fields_are_omitted_or_written_in_order() {
        let mut entry = golden_entry();
        entry.key_id = None;
        assert!(!entry.encode().contains("keyId"));
        let through = Head {
            seq: 9,
            hash: GENESIS.to_string(),
        };
        let (pruned, _) = chain(
            &Head::genesis(),
            &pruned_draft(ts("2026-03-01T00:00:00Z"), "keymint-0", &through, 2),
        );
        let line = pruned.encode();
        let tail =
            format!(r#""prunedThroughSeq":9,"prunedThroughHash":"{GENESIS}","prev":"{GENESIS}"}}"#);
        assert!(line.ends_with(&tail), "{line}");
        assert!(line.contains(r#""action":"pruned""#));
        assert!(!line.contains("keyId"));
    }

    #[test]
    fn genesis_and_heads() {
        assert_eq!(GENESIS, format!("sha256:{}", "0".repeat(64)));
        assert_eq!(
            Head::genesis(),
            Head {
                seq: 0,
                hash: GENESIS.to_string()
            }
        );
        let entry = golden_entry();
        assert_eq!(
            Head::of(&entry),
            Head {
                seq: 42,
                hash: entry.hash()
            }
        );
    }

    #[test]
    fn chain_links_each_entry_to_the_one_before() {
        let entries = build(20);
        assert_eq!(entries[0].seq, 1);
        assert_eq!(entries[0].prev, GENESIS);
        for pair in entries.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
            assert_eq!(pair[1].prev, pair[0].hash());
        }
        let (_, head) = build_from(&Head::genesis(), (1..=20).map(draft));
        assert_eq!(head, Head::of(&entries[19]));
    }

    #[test]
    fn valid_streams_verify() {
        let entries = build(24);
        for sizes in [
            vec![24],
            vec![8, 8, 8],
            vec![1, 22, 1],
            vec![0, 10, 0, 14, 0],
        ] {
            let segs = split(&entries, &sizes);
            let summary = verify(&pairs(&segs)).expect("valid stream verifies");
            assert_eq!(
                summary,
                Summary {
                    segments: sizes.len(),
                    entries: 24,
                    first_seq: Some(1),
                    last_seq: Some(24),
                    head: Head::of(&entries[23]),
                    anchor: Anchor::Genesis,
                }
            );
        }
    }

    #[test]
    fn empty_stream_verifies() {
        let empty = verify(&[]).expect("no segments");
        assert_eq!(empty.entries, 0);
        assert_eq!(empty.head, Head::genesis());
        assert_eq!(empty.anchor, Anchor::Empty);
        let one_empty = verify(&[(seg_name(0), String::new())]).expect("empty segment");
        assert_eq!((one_empty.segments, one_empty.entries), (1, 0));
    }

    type Edit = (&'static str, fn(&mut Entry));

    /// One edit per field (three for seq), each keeping the line well-formed.
    const EDITS: &[Edit] = &[
        ("seq+1", |e| e.seq += 1),
        ("seq+100", |e| e.seq += 100),
        ("seq-1", |e| e.seq -= 1),
        ("time", |e| {
            let t = e.timestamp().expect("time") + SignedDuration::from_nanos(1);
            e.time = format_time(t);
        }),
        ("action", |e| {
            e.action = if e.action == Action::Deleted {
                Action::Minted
            } else {
                Action::Deleted
            }
        }),
        ("namespace", |e| e.namespace.push('x')),
        ("name", |e| e.name.push('x')),
        ("uid", |e| e.uid.push('x')),
        ("transition", |e| e.transition += 1),
        ("project", |e| e.project = "other".to_string()),
        ("owner", |e| e.owner = "mallory@example.com".to_string()),
        ("keyId", |e| {
            e.key_id = match e.key_id {
                Some(_) => None,
                None => Some("km_forged00000".to_string()),
            }
        }),
        ("reason", |e| e.reason.push('x')),
        ("message", |e| e.message = "nothing happened".to_string()),
        ("instance", |e| e.instance.push('x')),
        ("prunedThroughSeq", |e| {
            e.pruned_through_seq = Some(e.pruned_through_seq.map_or(3, |s| s + 1))
        }),
        ("prunedThroughHash", |e| {
            e.pruned_through_hash = Some(hash_line("forged"))
        }),
        ("prev", |e| e.prev = hash_line("forged")),
    ];

    fn edited(segs: &[(String, Vec<String>)], index: usize, edit: fn(&mut Entry)) -> Segs {
        let mut segs = segs.to_vec();
        let line = at(&mut segs, index);
        let mut entry = parse_segment(&format!("{line}\n"))
            .expect("parses")
            .remove(0);
        edit(&mut entry);
        *line = entry.encode();
        segs
    }

    #[test]
    fn an_edit_of_any_field_of_any_entry_but_the_last_is_modified_at_its_seq() {
        let entries = build(12);
        let segs = split(&entries, &[4, 4, 4]);
        for index in 0..entries.len() - 1 {
            for (field, edit) in EDITS {
                let tampered = edited(&segs, index, *edit);
                let f = finding(&tampered);
                assert_eq!(
                    f.kind,
                    FindingKind::Modified,
                    "{field} of entry {}: {f}",
                    index + 1
                );
                assert_eq!(f.seq, Some(index as u64 + 1), "{field}: {f}");
                assert_at(&f, &segs, index);
            }
        }
    }

    #[test]
    fn the_last_entry_is_covered_only_partly_by_the_chain() {
        let entries = build(12);
        let segs = split(&entries, &[4, 4, 4]);
        let last = entries.len() - 1;
        let head = Head::of(&entries[last]);
        for (field, edit) in EDITS {
            let tampered = edited(&segs, last, *edit);
            let result = verify(&pairs(&tampered));
            match *field {
                // seq and prev are checked against the entry before.
                "seq+1" | "seq+100" | "seq-1" => {
                    let f = result.expect_err(field);
                    assert_eq!((f.kind, f.seq), (FindingKind::Modified, Some(12)), "{f}");
                }
                // Caught, but blamed on entry 11: nothing tells the two apart.
                "prev" => {
                    let f = result.expect_err(field);
                    assert_eq!((f.kind, f.seq), (FindingKind::Modified, Some(11)), "{f}");
                }
                // Undetectable by the chain alone...
                _ => assert!(result.is_ok(), "{field}"),
            }
            // ...but not against a checkpoint.
            let f = verify_with_checkpoint(&pairs(&tampered), &head).expect_err(field);
            assert_eq!(f.kind, FindingKind::Modified, "{field}: {f}");
        }
        // An edit that breaks the line is caught.
        let mut broken = segs.clone();
        at(&mut broken, last).pop();
        let f = finding(&broken);
        assert_eq!((f.kind, f.seq), (FindingKind::Malformed, None));
        assert_at(&f, &segs, last);
    }

    #[test]
    fn deleting_a_single_entry_is_removed() {
        let entries = build(12);
        let segs = split(&entries, &[4, 4, 4]);
        for index in 0..entries.len() {
            let mut cut = segs.clone();
            let (s, l) = locate(&cut, index);
            cut[s].1.remove(l);
            let result = verify(&pairs(&cut));
            if index == entries.len() - 1 {
                // Truncation at the end leaves a valid, shorter chain.
                assert!(result.is_ok());
                let f = verify_with_checkpoint(&pairs(&cut), &Head::of(&entries[index]))
                    .expect_err("checkpoint catches it");
                assert_eq!(
                    f.kind,
                    FindingKind::Removed {
                        first: 12,
                        last: 12
                    },
                    "{f}"
                );
                assert_eq!(
                    (f.segment.as_str(), f.line, f.seq),
                    (seg_name(2).as_str(), 4, None)
                );
                continue;
            }
            let f = result.expect_err("deletion is caught");
            let seq = index as u64 + 1;
            assert_eq!(f.seq, Some(seq + 1), "{f}");
            // The entry after the gap now sits where the deleted one was.
            assert_at(&f, &cut, index);
            if index == 0 {
                assert_eq!(f.kind, FindingKind::Unanchored, "{f}");
            } else {
                assert_eq!(
                    f.kind,
                    FindingKind::Removed {
                        first: seq,
                        last: seq
                    },
                    "{f}"
                );
            }
        }
    }

    #[test]
    fn swapping_two_adjacent_entries_is_reordered() {
        let entries = build(12);
        let segs = split(&entries, &[4, 4, 4]);
        for index in 0..entries.len() - 1 {
            let mut swapped = segs.clone();
            let a = at(&mut swapped, index).clone();
            let b = std::mem::replace(at(&mut swapped, index + 1), a);
            *at(&mut swapped, index) = b;
            let f = finding(&swapped);
            assert_eq!(f.kind, FindingKind::Reordered, "{f}");
            // Reported at the entry that came too early.
            assert_eq!(f.seq, Some(index as u64 + 2), "{f}");
            assert_at(&f, &segs, index);
        }
    }

    #[test]
    fn copied_entries_are_duplicated() {
        let entries = build(12);
        let segs = split(&entries, &[4, 4, 4]);
        // (entry copied, position the copy is inserted at)
        for (copied, insert_at) in [(3, 3), (3, 9), (9, 3), (0, 1), (11, 12), (5, 0)] {
            let mut segs2 = segs.clone();
            let line = at(&mut segs2, copied).clone();
            let (s, l) = if insert_at == 12 {
                (2, 4)
            } else {
                locate(&segs2, insert_at)
            };
            segs2[s].1.insert(l, line);
            let f = finding(&segs2);
            assert_eq!(
                f.kind,
                FindingKind::Duplicated,
                "copy of {copied} at {insert_at}: {f}"
            );
            assert_eq!(f.seq, Some(copied as u64 + 1));
            assert!(f.detail.contains("identical copy"), "{f}");
            // Reported at the copy; right before the original, the two are
            // indistinguishable and the second one is reported.
            let reported = if insert_at == copied {
                insert_at + 1
            } else {
                insert_at
            };
            assert_at(&f, &segs2, reported);
        }
    }

    #[test]
    fn a_segment_removed_from_the_middle_is_removed() {
        let entries = build(12);
        let mut segs = split(&entries, &[4, 4, 4]);
        segs.remove(1);
        let f = finding(&segs);
        assert_eq!(f.kind, FindingKind::Removed { first: 5, last: 8 }, "{f}");
        assert_eq!(f.seq, Some(9));
        assert_eq!((f.segment.as_str(), f.line), (seg_name(2).as_str(), 1));
        assert!(f.detail.contains("segment boundary"), "{f}");
    }

    #[test]
    fn segments_out_of_order_are_reordered() {
        let entries = build(12);
        let mut segs = split(&entries, &[4, 4, 4]);
        segs.swap(1, 2);
        let f = finding(&segs);
        assert_eq!((f.kind, f.seq), (FindingKind::Reordered, Some(9)), "{f}");
        segs.swap(0, 2);
        let f = finding(&segs);
        assert_eq!((f.kind, f.seq), (FindingKind::Reordered, Some(5)), "{f}");
    }

    /// Twelve entries in four segments of three, then pruned entries for
    /// each of `through` (seqs), appended to the last segment.
    fn pruned_stream(through: &[usize]) -> (Vec<Entry>, Segs) {
        let mut entries = build(12);
        for &seq in through {
            let head = Head::of(&entries[entries.len() - 1]);
            let through = Head::of(&entries[seq - 1]);
            let draft = pruned_draft(ts("2026-04-01T00:00:00Z"), "keymint-1", &through, seq / 3);
            entries.push(chain(&head, &draft).0);
        }
        let rest = entries.len() - 9;
        let segs = split(&entries, &[3, 3, 3, rest]);
        (entries, segs)
    }

    #[test]
    fn pruning_verifies_only_when_a_pruned_entry_vouches_for_the_anchor() {
        // Retention dropped the first two segments (entries 1-6).
        let (_, segs) = pruned_stream(&[6]);
        let summary = verify(&pairs(&segs[2..])).expect("vouched");
        assert_eq!(summary.anchor, Anchor::Pruned { by_seq: 13 });
        assert_eq!(
            (summary.first_seq, summary.last_seq, summary.entries),
            (Some(7), Some(13), 7)
        );
        // A crash between appending the pruned entry and deleting: still fine.
        assert_eq!(verify(&pairs(&segs)).expect("full").anchor, Anchor::Genesis);

        // No pruned entry.
        let plain = split(&build(12), &[3, 3, 3, 3]);
        let f = finding(&plain[2..]);
        assert_eq!((f.kind, f.seq), (FindingKind::Unanchored, Some(7)), "{f}");
        assert_eq!((f.segment.as_str(), f.line), (seg_name(2).as_str(), 1));

        // The pruned entry vouches for entry 4, but entries 4-6 are gone too.
        let (_, segs) = pruned_stream(&[3]);
        let f = finding(&segs[2..]);
        assert_eq!((f.kind, f.seq), (FindingKind::Unanchored, Some(7)), "{f}");

        // The pruned entry records the wrong hash for entry 6.
        let (entries, mut segs) = pruned_stream(&[6]);
        let last = segs[3].1.len() - 1;
        let mut pruned = entries[12].clone();
        pruned.pruned_through_hash = Some(entries[4].hash());
        // Keep the pruned entry chained, so only its record is wrong.
        segs[3].1[last] = pruned.encode();
        let f = finding(&segs[2..]);
        assert_eq!((f.kind, f.seq), (FindingKind::Unanchored, Some(7)), "{f}");

        // Only a pruned entry vouches: the same fields on another action do not.
        let (_, segs) = pruned_stream(&[6]);
        let mut other = segs.clone();
        let last = other[3].1.len() - 1;
        other[3].1[last] =
            other[3].1[last].replace(r#""action":"pruned""#, r#""action":"deleted""#);
        let f = finding(&other[2..]);
        assert_eq!(f.kind, FindingKind::Unanchored, "{f}");
    }

    #[test]
    fn repeated_pruning_vouches_for_each_anchor() {
        let (_, segs) = pruned_stream(&[3, 6]);
        assert_eq!(verify(&pairs(&segs)).expect("all").anchor, Anchor::Genesis);
        let f = verify(&pairs(&segs[1..])).expect("first pruning");
        assert_eq!(f.anchor, Anchor::Pruned { by_seq: 13 });
        let f = verify(&pairs(&segs[2..])).expect("second pruning");
        assert_eq!(f.anchor, Anchor::Pruned { by_seq: 14 });
        let f = finding(&segs[3..]);
        assert_eq!((f.kind, f.seq), (FindingKind::Unanchored, Some(10)), "{f}");
    }

    #[test]
    fn edits_of_a_pruned_anchor_are_modified() {
        let (_, segs) = pruned_stream(&[6]);
        let kept = &segs[2..];
        for (field, edit) in EDITS {
            let f = finding(&edited(kept, 0, *edit));
            assert_eq!(
                (f.kind, f.seq),
                (FindingKind::Modified, Some(7)),
                "{field}: {f}"
            );
            assert_at(&f, kept, 0);
        }
    }

    fn malformed_at_line_3(bad: &str) -> Finding {
        let entries = build(5);
        let mut lines: Vec<String> = entries.iter().map(Entry::encode).collect();
        lines[2] = bad.to_string();
        let content: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let err = parse_segment(&content).expect_err(bad);
        assert_eq!(err.line, 3, "{err}");
        let f = verify(&[(seg_name(0), content)]).expect_err(bad);
        assert_eq!(
            (f.kind, f.seq, f.line, f.segment.as_str()),
            (FindingKind::Malformed, None, 3, seg_name(0).as_str())
        );
        assert_eq!(f.detail, err.reason);
        for shown in [f.to_string(), err.to_string()] {
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(!shown.contains('\n'), "{shown}");
        }
        f
    }

    #[test]
    fn malformed_lines_are_reported_by_number_without_their_content() {
        let good = build(3).remove(2).encode();
        // `good` with `from` replaced (which must be there).
        let sub = |from: &str, to: &str| {
            assert!(good.contains(from), "{from} not in {good}");
            good.replacen(from, to, 1)
        };
        let f = malformed_at_line_3(r#"{"seq":3,"message":"kmk_SECRETSECRETSECRET"#);
        assert!(f.detail.contains("not valid JSON"), "{f}");
        malformed_at_line_3("kmk_SECRETSECRETSECRETSECRETSECRET");
        let f = malformed_at_line_3(&sub(r#""seq":3"#, r#""seq":"kmk_SECRETSECRET""#));
        assert!(f.detail.contains("wrong type"), "{f}");
        let f = malformed_at_line_3(&sub(r#""prev""#, r#""kmk_SECRETSECRET":1,"prev""#));
        assert!(f.detail.contains("unknown field"), "{f}");
        let f = malformed_at_line_3(&sub(
            r#""action":"expiring-soon""#,
            r#""action":"kmk_SECRETSECRET""#,
        ));
        assert!(f.detail.contains("not an audit entry"), "{f}");
        let f = malformed_at_line_3(&sub(r#""seq":3,"#, ""));
        assert!(f.detail.contains("missing field `seq`"), "{f}");
        // Well-formed JSON with the same content, but not what keymint writes.
        let time = r#""time":"2026-03-01T00:00:04.500000021Z""#;
        for non_canonical in [
            sub(r#""seq":3"#, r#""seq": 3"#),
            sub(
                r#""keyId":"km_000000000003","#,
                r#""keyId":"km_\u0030\u0030000000003","#,
            ),
            sub(r#""prev""#, r#""prunedThroughSeq":null,"prev""#),
            sub(&format!(r#""seq":3,{time}"#), &format!(r#"{time},"seq":3"#)),
            format!("{good}\r"),
            format!(" {good}"),
        ] {
            let f = malformed_at_line_3(&non_canonical);
            assert!(f.detail.contains("canonical"), "{f}");
        }
        for other_time in [
            "2026-03-01T00:00:04.500000Z",
            "2026-03-01T00:00:04.500000021+00:00",
            "2026-03-01 00:00:04.500000021Z",
            "yesterday",
        ] {
            let f = malformed_at_line_3(&sub(time, &format!(r#""time":"{other_time}""#)));
            assert!(f.detail.contains("time"), "{f}");
        }
        let f = malformed_at_line_3("");
        assert!(f.detail.contains("empty"), "{f}");
    }

    #[test]
    fn a_segment_must_end_with_a_newline() {
        let content = encode_segment(&build(3));
        let cut = content.trim_end_matches('\n');
        let err = parse_segment(cut).expect_err("no final newline");
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("newline"), "{err}");
        assert_eq!(parse_segment(""), Ok(vec![]));
    }

    #[test]
    fn segments_round_trip() {
        let entries = build(7);
        let content = encode_segment(&entries);
        assert_eq!(content.lines().count(), 7);
        assert!(content.ends_with("}\n"));
        assert_eq!(parse_segment(&content), Ok(entries.clone()));
        let appended = append_lines(&encode_segment(&entries[..3]), &entries[3..]);
        assert_eq!(appended, content);
    }

    #[test]
    fn size_after_matches_append_lines() {
        let entries = build(5);
        let lens: Vec<usize> = entries.iter().map(|e| e.encode().len()).collect();
        assert_eq!(size_after("", &[]), 0);
        assert_eq!(size_after("", &entries), lens.iter().sum::<usize>() + 5);
        let existing = encode_segment(&entries[..2]);
        assert_eq!(
            size_after(&existing, &entries[2..]),
            existing.len() + lens[2] + lens[3] + lens[4] + 3
        );
        assert_eq!(size_after(&existing, &[]), existing.len());
        // A missing final newline is added before appending.
        let cut = existing.trim_end_matches('\n');
        assert_eq!(size_after(cut, &entries[2..3]), cut.len() + 1 + lens[2] + 1);
        assert_eq!(
            append_lines(cut, &entries[2..3]),
            encode_segment(&entries[..3])
        );
        for (existing, new) in [
            ("", &entries[..]),
            (existing.as_str(), &entries[2..]),
            (cut, &entries[4..]),
        ] {
            assert_eq!(size_after(existing, new), append_lines(existing, new).len());
        }
        // Bytes, not characters.
        let mut wide = entries[0].clone();
        wide.message = "é€😀".to_string();
        assert_eq!(
            size_after("", std::slice::from_ref(&wide)),
            wide.encode().len() + 1
        );
        assert!(wide.encode().contains("é€😀"));
    }

    #[test]
    fn actions_round_trip() {
        let names = [
            "minted",
            "rejected",
            "conflict",
            "expiring-soon",
            "expired",
            "secret-lost",
            "secret-tampered",
            "secret-restored",
            "deleted",
            "pruned",
        ];
        for (action, name) in Action::ALL.into_iter().zip(names) {
            assert_eq!(action.as_str(), name);
            assert_eq!(action.to_string(), name);
            assert_eq!(Action::parse(name), Some(action));
            let json = serde_json::to_string(&action).expect("serialises");
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<Action>(&json).expect("parses"),
                action
            );
        }
        assert_eq!(Action::parse("Minted"), None);
        assert_eq!(Action::parse("expiring_soon"), None);
    }

    #[test]
    fn time_has_nanosecond_precision_and_round_trips() {
        for (input, stored) in [
            ("2026-03-01T12:00:00Z", "2026-03-01T12:00:00.000000000Z"),
            (
                "2026-03-01T12:00:00.000000001Z",
                "2026-03-01T12:00:00.000000001Z",
            ),
            ("2026-03-01T12:00:00.5Z", "2026-03-01T12:00:00.500000000Z"),
            (
                "2026-03-01T14:00:00.123456+02:00",
                "2026-03-01T12:00:00.123456000Z",
            ),
        ] {
            let time = ts(input);
            assert_eq!(format_time(time), stored);
            let mut d = draft(1);
            d.time = time;
            let (entry, _) = chain(&Head::genesis(), &d);
            assert_eq!(entry.time, stored);
            assert_eq!(entry.timestamp(), Some(time));
            let parsed = parse_segment(&encode_segment(&[entry])).expect("parses");
            assert_eq!(parsed[0].timestamp(), Some(time));
        }
    }

    #[test]
    fn dedup_key_is_uid_and_transition() {
        let entry = golden_entry();
        assert_eq!(
            entry.dedup_key(),
            ("6f1c2b9e-0d4a-4c1e-9a57-3b2f8e1d7c60".to_string(), 3)
        );
    }

    #[test]
    fn pruned_drafts_describe_what_was_removed() {
        let through = Head {
            seq: 300,
            hash: hash_line("x"),
        };
        let d = pruned_draft(ts("2026-04-01T00:00:00Z"), "keymint-1", &through, 3);
        assert_eq!(d.action, Action::Pruned);
        assert_eq!(d.pruned_through.as_ref(), Some(&through));
        assert!(
            d.message.contains("3 segments") && d.message.contains("entry 300"),
            "{}",
            d.message
        );
        assert!(d.uid.is_empty() && d.key_id.is_none());
        let (entry, _) = chain(&Head::genesis(), &d);
        // Retrying the same pruning gives the same dedup key.
        assert_eq!(entry.dedup_key(), (String::new(), 300));
        assert_eq!(entry.pruned_through(), Some((300, through.hash.as_str())));
        let one = pruned_draft(ts("2026-04-01T00:00:00Z"), "keymint-1", &through, 1);
        assert!(one.message.contains("1 segment "), "{}", one.message);
    }

    #[test]
    fn findings_read_as_one_line() {
        let entries = build(50);
        let mut segs = split(&entries, &[12, 12, 11, 15]);
        segs[3].1[6] = segs[3].1[6].replace("event 42", "event 24");
        let f = finding(&segs);
        let shown = f.to_string();
        assert!(
            shown.starts_with("entry 42 in keymint-audit-0000000003 line 7 was modified: "),
            "{shown}"
        );
        assert!(
            shown.contains("entry 43 (keymint-audit-0000000003 line 8)"),
            "{shown}"
        );
        assert_eq!(f.kind.as_str(), "modified");

        let removed = Finding {
            segment: seg_name(1),
            line: 1,
            seq: Some(9),
            kind: FindingKind::Removed { first: 5, last: 8 },
            detail: "d".to_string(),
        };
        assert_eq!(
            removed.to_string(),
            "entries 5 to 8 were removed (at keymint-audit-0000000001 line 1): d"
        );
        let malformed = Finding {
            kind: FindingKind::Malformed,
            seq: None,
            ..removed
        };
        assert_eq!(
            malformed.to_string(),
            "keymint-audit-0000000001 line 1 is malformed: d"
        );
    }

    #[test]
    fn key_material_is_redacted_from_entries() {
        let key = format!(
            "kmk_{}",
            "A1b2C3d4E5".repeat(5).get(..49).expect("49 chars")
        );
        let mut d = draft(1);
        d.message = format!("minted {key} for ci");
        d.reason = format!("x{key}");
        d.owner = "keys start with kmk_ or kmk_short".to_string();
        let (entry, _) = chain(&Head::genesis(), &d);
        assert_eq!(entry.message, "minted kmk_[redacted] for ci");
        assert_eq!(entry.reason, "xkmk_[redacted]");
        assert_eq!(entry.owner, "keys start with kmk_ or kmk_short");
        assert!(!entry.encode().contains(&key[4..]));
        assert_eq!(
            redact("kmk_12345678 kmk_abcdefgh!"),
            "kmk_[redacted] kmk_[redacted]!"
        );
        assert_eq!(redact("ünï kmk_"), "ünï kmk_");
    }

    #[test]
    fn checkpoints_catch_what_the_chain_cannot() {
        let entries = build(12);
        let segs = split(&entries, &[4, 4, 4]);
        let head = Head::of(&entries[11]);
        let ok = verify_with_checkpoint(&pairs(&segs), &head).expect("unchanged");
        assert_eq!(ok.head, head);
        // Entries appended since the checkpoint are fine.
        verify_with_checkpoint(&pairs(&segs), &Head::of(&entries[7])).expect("older checkpoint");
        verify_with_checkpoint(&pairs(&segs), &Head::genesis()).expect("genesis");
        // A checkpoint that retention has pruned since cannot be compared.
        let (pruned_entries, psegs) = pruned_stream(&[6]);
        verify_with_checkpoint(&pairs(&psegs[2..]), &Head::of(&pruned_entries[2])).expect("pruned");
        // A checkpoint the stream disagrees with.
        let forged = Head {
            seq: 8,
            hash: hash_line("forged"),
        };
        let f = verify_with_checkpoint(&pairs(&segs), &forged).expect_err("mismatch");
        assert_eq!(
            (f.kind, f.seq, f.line),
            (FindingKind::Modified, Some(8), 4),
            "{f}"
        );
        // Entries missing at the end (all of them, here).
        let f = verify_with_checkpoint(&[(seg_name(0), String::new())], &head).expect_err("empty");
        assert_eq!(f.kind, FindingKind::Removed { first: 1, last: 12 }, "{f}");
    }
}
