//! Test fixtures shared by the audit modules' unit tests: varied drafts,
//! chained streams, segment content.

use jiff::{SignedDuration, Timestamp};

use crate::audit::{Action, Draft, Entry, Head, chain_all, segment};

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// Varied drafts: every non-pruned action, with and without key id.
pub fn draft(i: u64) -> Draft {
    let actions: Vec<Action> = Action::ALL
        .into_iter()
        .filter(|a| *a != Action::Pruned)
        .collect();
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

pub fn build_from(head: &Head, drafts: impl IntoIterator<Item = Draft>) -> (Vec<Entry>, Head) {
    let drafts: Vec<Draft> = drafts.into_iter().collect();
    chain_all(head, &drafts)
}

pub fn build(n: u64) -> Vec<Entry> {
    build_from(&Head::genesis(), (1..=n).map(draft)).0
}

/// An audit key of 32 `byte`s.
pub fn test_key(byte: u8) -> crate::audit::AuditKey {
    crate::audit::AuditKey::from_bytes(&[byte; 32]).expect("32 bytes")
}

pub fn seg_name(i: usize) -> String {
    format!("keymint-audit-{i:010}")
}

/// A segment's content for `entries`: one canonical line each, each ending
/// in `'\n'`.
pub fn encode_segment(entries: &[Entry]) -> String {
    segment::append_lines("", entries)
}
