//! What verifying the stream concludes: a [`Summary`] of a stream that
//! verified, or the first [`Finding`] in one that did not, in words a person
//! reads in `keymint audit verify`'s output. Pure.

use std::fmt;

use crate::audit::Head;

/// How the stream's first entry is anchored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anchor {
    /// No entries at all.
    Empty,
    /// It is entry 1 and links to [`GENESIS`](crate::audit::GENESIS).
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
    /// as a checkpoint for [`verify_with_checkpoint`](crate::audit::verify::verify_with_checkpoint).
    pub head: Head,
    pub anchor: Anchor,
}

/// The first problem [`verify`](crate::audit::verify::verify) found.
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

/// What kind of problem [`verify`](crate::audit::verify::verify) found, decided from the links around the
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
    /// A pruned entry (or a sealed entry 1) does not carry keymint's seal
    /// for its content: someone without keymint's audit key wrote or
    /// changed it.
    Forged,
    /// The stream relies on a pruning, and keymint's audit key, which
    /// proves it, could not be read.
    Unverifiable,
    /// The checkpoint is from an earlier stream: keymint started this one
    /// afresh since.
    StartedOver,
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
            FindingKind::Forged => "forged",
            FindingKind::Unverifiable => "unverifiable",
            FindingKind::StartedOver => "started-over",
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
            FindingKind::Forged => write!(f, "{subject} is forged: {detail}"),
            FindingKind::Unverifiable => write!(f, "{subject} cannot be verified: {detail}"),
            FindingKind::StartedOver => write!(f, "the stream started over at {subject}: {detail}"),
        }
    }
}

impl std::error::Error for Finding {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::seg_name;

    #[test]
    fn findings_name_the_entry_the_gap_and_the_line() {
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
        let modified = Finding {
            kind: FindingKind::Modified,
            seq: Some(42),
            ..removed.clone()
        };
        assert_eq!(
            modified.to_string(),
            "entry 42 in keymint-audit-0000000001 line 1 was modified: d"
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
}
