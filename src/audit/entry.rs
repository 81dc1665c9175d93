//! An audit entry and its place in the hash chain. Pure: no I/O, no
//! Kubernetes types.
//!
//! The stream is a sequence of [`Entry`] values numbered `seq` 1, 2, 3, ...
//! Each is stored as its canonical encoding ([`Entry::encode`]: compact
//! `serde_json` output, fields in struct order), so "the entry" and "the
//! bytes stored" are the same thing and the hash of a parsed entry is the
//! hash of its stored line (see `segment` for the lines).
//!
//! # Chaining
//!
//! Every entry carries in `prev` the `sha256:<hex>` of the previous entry's
//! line; entry 1 carries [`GENESIS`]. Editing an entry therefore changes the
//! hash that its successor recorded, deleting or moving one breaks `seq`
//! continuity and the links, and the break is found by `verify`.
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
use crate::audit::seal::AuditKey;

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

impl Draft {
    /// `(uid, transition)`: the [`Entry::dedup_key`] of the entry it becomes.
    pub fn dedup_key(&self) -> (String, u64) {
        (self.uid.clone(), self.transition)
    }
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
    /// Pruned entries and the first entry of a stream keymint started:
    /// keymint's seal over the rest of the line (`audit::seal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
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
    /// returned by [`parse_segment`](crate::audit::segment::parse_segment), which rejects any other time format.
    pub fn timestamp(&self) -> Option<Timestamp> {
        let ts: Timestamp = self.time.parse().ok()?;
        (format_time(ts) == self.time).then_some(ts)
    }

    /// The pruned-through head this entry records, if it is a pruned entry
    /// with both fields.
    pub(crate) fn pruned_through(&self) -> Option<(u64, &str)> {
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
        seal: None,
        prev: head.hash.clone(),
    };
    let next = Head::of(&entry);
    (entry, next)
}

/// [`chain_all`], with the entries that carry a seal (`audit::seal`)
/// sealed by `key`, each before the next links to it.
pub fn chain_all_sealed<'a>(
    head: &Head,
    drafts: impl IntoIterator<Item = &'a Draft>,
    key: &AuditKey,
) -> (Vec<Entry>, Head) {
    let mut head = head.clone();
    let entries = drafts
        .into_iter()
        .map(|draft| {
            let entry = key.seal(chain(&head, draft).0);
            head = Head::of(&entry);
            entry
        })
        .collect();
    (entries, head)
}

/// Places `drafts` (in order) after `head`: returns their entries and the
/// new head.
pub fn chain_all<'a>(
    head: &Head,
    drafts: impl IntoIterator<Item = &'a Draft>,
) -> (Vec<Entry>, Head) {
    let mut head = head.clone();
    let entries = drafts
        .into_iter()
        .map(|draft| {
            let (entry, next) = chain(&head, draft);
            head = next;
            entry
        })
        .collect();
    (entries, head)
}

/// The draft of a "pruned" entry, recording that retention removed
/// `segments_removed` segments ending with the entry `through` (the [`Head`]
/// of the last removed entry). Once appended, it vouches for the oldest
/// kept entry (whose `prev` is `through.hash`), so [`verify`](crate::audit::verify::verify) still accepts
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

/// `time` as stored: RFC 3339, UTC (`Z`), exactly [`TransitionTime::DIGITS`]
/// fractional digits.
pub fn format_time(time: Timestamp) -> String {
    TransitionTime(time).to_string()
}

/// `sha256:<64 lowercase hex>` of a line (the same form as key hashes).
pub(crate) fn hash_line(line: &str) -> String {
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
    use super::*;
    use crate::audit::segment::parse_segment;
    use crate::audit::testing::{build, build_from, draft, encode_segment, ts};

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
            "revealed",
            "never-shown",
            "deleted",
            "deleted-unobserved",
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
}
