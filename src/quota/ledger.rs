//! The quota ledger of one (project, owner) pair: its data model, its JSON
//! form and the hard limit. Pure: no Kubernetes types, no I/O.
//!
//! # The guarantee
//!
//! At no instant do more than `limit` minted keys whose Secret still exists
//! count for one pair, even under concurrent creates and operator restarts.
//! Counting ApiKeys (or Secrets) from an informer cache cannot give that:
//! two reconcilers can each see 24 of 25 and both mint. So every pair has a
//! **ledger**, one ConfigMap (named by [`Pair::ledger_name`], data key
//! [`Ledger::DATA_KEY`]) that records each admitted ApiKey by UID, written
//! with optimistic concurrency (`metadata.resourceVersion`): of two writers
//! that read the same version only one wins; the loser re-reads and decides
//! again. Safety comes from that compare-and-swap, not from a fresh read.
//!
//! # The protocol the controller runs (`quota::slots`, modelled by
//! `tests/quota_model.rs`)
//!
//! * **Admit, then mint.** Read the ledger, decide ([`crate::quota::admission`]),
//!   [`Ledger::admit`] the key (and the keys next in line with it, one write
//!   for a burst), write the ledger back with the version that was read, and
//!   mint only after that write succeeded. A key already in the ledger was
//!   admitted by an earlier attempt (which may have stopped before minting):
//!   mint without writing. A crash at any point leaves at most an
//!   admitted-but-unminted entry, which over-counts (safe).
//! * **Delete, then release — lazily.** An entry is dropped only when an
//!   admission finds the pair full and the entry's key has ended: its
//!   ApiKey is gone (its finalizer deleted the Secret first) or shows
//!   Expired (written only after the Secret is deleted). Releasing late only
//!   over-counts. A key whose Secret name is taken by a foreign Secret gives
//!   its slot back at once (it never minted).
//! * **Release is final.** What ends a key (phase Expired) is on its status
//!   before its Secret is deleted, and such a key never asks for a slot
//!   again, so a later change to `spec.expiresAt` cannot bring it back.
//! * **A missing ledger is rebuilt, never read as empty.** When the
//!   ConfigMap (or its data key) is missing — the pair's first key, or
//!   keymint's namespace deleted and re-created — the entries are rebuilt
//!   from the ApiKeys of the pair that hold a minted key
//!   ([`crate::quota::rebuild`]), listed fresh from the API server (a cache
//!   may not have seen a key minted a moment ago) when the cache shows any
//!   key ever minted for the pair (else it is a new pair, and starts
//!   empty), and written with create
//!   (which fails if another writer created it first) before anything is
//!   admitted against them. Keys admitted but not minted yet are not
//!   rebuilt: they ask for a slot again. A present but unparsable value is
//!   an error, never "empty": that would reset the quota.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// Milliseconds since the Unix epoch. Kept as a plain integer so this module
/// needs no time library; the controller converts from `Time`.
pub type Millis = i64;

/// The default number of non-expired keys one owner may hold in one project.
pub const DEFAULT_LIMIT: usize = 25;

/// Prefix of every ledger ConfigMap name, so the ledgers are easy to find
/// (`kubectl get cm | grep keymint-quota-`).
const LEDGER_PREFIX: &str = "keymint-quota-";

/// Hex characters of the hash kept in the name: 80 bits, so accidental
/// collisions need ~2^40 pairs, and the name stays short (34 chars).
const LEDGER_HASH_HEX: usize = 20;

/// Identifies a (project, owner) pair; the ledger's ConfigMap name derives
/// from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pair<'a> {
    /// `spec.project`: a DNS label, so it contains no `\n`.
    pub project: &'a str,
    /// `spec.owner`: no whitespace, so it contains no `\n`.
    pub owner: &'a str,
}

impl Pair<'_> {
    /// `keymint-quota-<first 20 lowercase hex chars of sha256(project + "\n" + owner)>`.
    ///
    /// The owner may contain characters a ConfigMap name cannot (`@`, `:`,
    /// upper case, up to 253 chars), so the name carries a hash, never the
    /// owner. `\n` separates the two because neither can contain it (the CRD
    /// schema guarantees that), so the hashed string determines the pair.
    /// For inputs that break that precondition two pairs can share a ledger;
    /// that over-counts (both pairs' keys count against it), it never
    /// under-counts.
    pub fn ledger_name(&self) -> String {
        let digest = Sha256::new()
            .chain_update(self.project.as_bytes())
            .chain_update(b"\n")
            .chain_update(self.owner.as_bytes())
            .finalize();
        let mut name = String::with_capacity(LEDGER_PREFIX.len() + LEDGER_HASH_HEX);
        name.push_str(LEDGER_PREFIX);
        crate::digest::push_hex(&mut name, &digest[..LEDGER_HASH_HEX / 2]);
        name
    }
}

/// One admitted ApiKey.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Namespace and name of the ApiKey, for humans reading the ConfigMap and
    /// for status messages; the ledger is keyed by UID, not by these.
    pub namespace: String,
    pub name: String,
    /// When the key was admitted (informational). Entries written by older
    /// versions may also carry `expiresAt`; it is ignored: a slot frees when
    /// the key's Secret is gone, not at `expiresAt`, so the ledger never
    /// undercounts even if `expiresAt` moves.
    pub admitted_at: Millis,
}

/// Why a ledger's stored JSON could not be read.
///
/// Messages carry only a position, never the input or serde's own message
/// (which quotes offending values), so a tampered ConfigMap cannot inject
/// text into logs and events. They are phrased as a reason, without naming
/// the ledger, because the caller knows which ConfigMap it read.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum LedgerParseError {
    #[error("not valid JSON at line {line}, column {column}")]
    Syntax { line: usize, column: usize },
    #[error("not a JSON object of UID to entry at line {line}, column {column}")]
    Shape { line: usize, column: usize },
}

/// The set of admitted ApiKeys of one pair, keyed by ApiKey UID.
///
/// Keyed by UID rather than namespace/name so an ApiKey deleted and
/// re-created under the same name is a different key and cannot inherit (or
/// release) the old one's slot.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Ledger {
    // BTreeMap so iteration, and therefore the JSON, is sorted by UID: equal
    // ledgers serialise to equal bytes, so a no-op write is recognisable.
    entries: BTreeMap<String, Entry>,
}

impl Ledger {
    /// The ConfigMap data key holding the JSON.
    pub const DATA_KEY: &'static str = "admitted";

    /// Parses the ConfigMap value: `{"<uid>": {"namespace": .., "name": ..,
    /// "admittedAt": ..}, ..}`. Unknown entry fields are
    /// ignored so a newer operator's additions do not break an older one.
    pub fn from_json(s: &str) -> Result<Ledger, LedgerParseError> {
        match serde_json::from_str::<BTreeMap<String, Entry>>(s) {
            Ok(entries) => Ok(Ledger { entries }),
            Err(e) => {
                let (line, column) = (e.line(), e.column());
                Err(match e.classify() {
                    serde_json::error::Category::Data => LedgerParseError::Shape { line, column },
                    _ => LedgerParseError::Syntax { line, column },
                })
            }
        }
    }

    /// Compact JSON, sorted by UID (deterministic).
    pub fn to_json(&self) -> String {
        // Built as a `Value` rather than with `serde_json::to_string`, which
        // returns a `Result` that cannot actually fail here; this way there
        // is no error path to invent a value for. The round-trip tests check
        // this matches `Entry`'s serde attributes.
        let mut map = serde_json::Map::new();
        for (uid, e) in &self.entries {
            let mut obj = serde_json::Map::new();
            obj.insert("namespace".into(), e.namespace.clone().into());
            obj.insert("name".into(), e.name.clone().into());
            obj.insert("admittedAt".into(), e.admitted_at.into());
            map.insert(uid.clone(), serde_json::Value::Object(obj));
        }
        serde_json::Value::Object(map).to_string()
    }

    pub fn get(&self, uid: &str) -> Option<&Entry> {
        self.entries.get(uid)
    }

    /// All entries, sorted by UID.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(uid, e)| (uid.as_str(), e))
    }

    /// How many keys hold a slot: every entry, minted or merely admitted
    /// (an admitted key may be minted at any moment).
    pub fn admitted(&self) -> usize {
        self.entries.len()
    }

    /// Records `uid` if a slot is free: the hard limit, whatever the
    /// waiting order says.
    ///
    /// * `uid` already present: [`Admission::AlreadyAdmitted`], unchanged.
    /// * `admitted() >= limit`: [`Admission::Full`], unchanged.
    /// * otherwise the entry is inserted: [`Admission::Admitted`]; persist
    ///   the ledger (CAS) before minting.
    pub fn admit(&mut self, uid: &str, entry: Entry, limit: usize) -> Admission {
        if self.entries.contains_key(uid) {
            return Admission::AlreadyAdmitted;
        }
        let live = self.admitted();
        if live >= limit {
            return Admission::Full { live, limit };
        }
        self.entries.insert(uid.to_owned(), entry);
        Admission::Admitted
    }

    /// Records `uid` whatever the limit: a ledger rebuilt from the ApiKeys
    /// must count every key that holds a slot, even beyond a lowered limit
    /// (under-counting is the one error the ledger must never make).
    pub fn restore(&mut self, uid: &str, entry: Entry) {
        self.entries.entry(uid.to_owned()).or_insert(entry);
    }

    /// Removes `uid`; true if it was present. Call only once the key's
    /// Secret is gone (or was never created).
    pub fn release(&mut self, uid: &str) -> bool {
        self.entries.remove(uid).is_some()
    }
}

/// Outcome of [`Ledger::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Recorded now: the caller must persist the ledger (CAS) before minting.
    Admitted,
    /// Already in the ledger (e.g. the operator crashed after recording,
    /// before minting): mint without writing the ledger.
    AlreadyAdmitted,
    /// No free slot: `live` admitted entries >= `limit`.
    Full { live: usize, limit: usize },
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use sha2::{Digest as _, Sha256};

    use super::*;

    fn entry(name: &str) -> Entry {
        Entry {
            namespace: "ns".into(),
            name: name.into(),
            admitted_at: 0,
        }
    }

    fn pair<'a>(project: &'a str, owner: &'a str) -> Pair<'a> {
        Pair { project, owner }
    }

    #[test]
    fn ledger_name_is_stable_and_a_valid_configmap_name() {
        let name = pair("payments", "alice@example.com").ledger_name();
        // Pinned: the name is how a restarted (or upgraded) operator finds
        // the existing ledger; changing it would silently reset every quota.
        let digest = Sha256::digest(b"payments\nalice@example.com");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(name, format!("keymint-quota-{}", &hex[..20]));
        assert_eq!(name, pair("payments", "alice@example.com").ledger_name());
        assert_eq!(name.len(), 34);
        // A DNS label (valid for a ConfigMap name, and for a label value).
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
        assert!(name.len() <= 63);
        assert!(!name.starts_with('-') && !name.ends_with('-'));
    }

    #[test]
    fn ledger_name_handles_any_owner() {
        let long_owner = "x".repeat(253);
        for owner in [
            "system:serviceaccount:ci:deployer",
            "Alice@Example.COM",
            "ünïcødé",
            "\u{1b}[31m",
            long_owner.as_str(),
        ] {
            let name = pair("p", owner).ledger_name();
            assert_eq!(name.len(), 34, "{owner:?}");
            assert!(name.is_ascii(), "{owner:?}");
        }
    }

    #[test]
    fn ledger_name_differs_between_pairs() {
        let names: HashSet<String> = [
            pair("payments", "alice"),
            pair("payments", "bob"),
            pair("billing", "alice"),
            pair("paymentsa", "lice"),
            pair("payment", "salice"),
            pair("a", "b"),
            pair("b", "a"),
        ]
        .iter()
        .map(Pair::ledger_name)
        .collect();
        assert_eq!(names.len(), 7);
    }

    #[test]
    fn ledger_name_separator_cannot_appear_in_valid_input() {
        // Joining with "\n" is only unambiguous because neither part can
        // contain it: the project is a DNS label and the owner has no
        // whitespace. Inputs that violate that can collide, which is why the
        // CRD schema must keep rejecting them...
        assert_eq!(
            pair("a", "b\nc").ledger_name(),
            pair("a\nb", "c").ledger_name()
        );
        // ...while for valid input the hashed text splits back into exactly
        // one pair, so distinct valid pairs hash distinct strings.
        let joined = "payments\nalice@example.com";
        let (project, owner) = joined.split_once('\n').expect("separator");
        assert_eq!((project, owner), ("payments", "alice@example.com"));
        assert!(!owner.contains(char::is_whitespace));
    }

    #[test]
    fn json_round_trips() {
        let mut l = Ledger::default();
        l.entries.insert("uid-2".into(), entry("b"));
        l.entries.insert(
            "uid-1".into(),
            Entry {
                namespace: "team-a".into(),
                name: "with \"quotes\" and \\ and \u{1}".into(),
                admitted_at: -5,
            },
        );
        l.entries.insert("uid-3".into(), entry("c"));
        let json = l.to_json();
        assert_eq!(Ledger::from_json(&json), Ok(l.clone()));
        // Also agrees with what serde's derive would produce for `Entry`,
        // so the hand-built `to_json` and the derive cannot drift apart.
        let via_serde: BTreeMap<String, Entry> =
            serde_json::from_str(&json).expect("serde reads to_json");
        assert_eq!(via_serde, l.entries);
        let via_derive = serde_json::to_string(&l.entries).expect("serialises");
        assert_eq!(Ledger::from_json(&via_derive), Ok(l));
    }

    #[test]
    fn json_is_compact_sorted_and_deterministic() {
        let mut a = Ledger::default();
        let mut b = Ledger::default();
        for uid in ["c", "a", "b"] {
            a.entries.insert(uid.into(), entry(uid));
        }
        for uid in ["b", "c", "a"] {
            b.entries.insert(uid.into(), entry(uid));
        }
        assert_eq!(a.to_json(), b.to_json());
        let json = a.to_json();
        assert!(!json.contains(' ') && !json.contains('\n'), "{json}");
        let pos = |k: &str| json.find(&format!("\"{k}\":{{")).expect("uid present");
        assert!(pos("a") < pos("b") && pos("b") < pos("c"), "{json}");

        let mut one = Ledger::default();
        one.entries.insert("u".into(), entry("k"));
        let json = one.to_json();
        // No expiresAt key when the key never expires.
        assert!(!json.contains("expiresAt"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"u": {"namespace": "ns", "name": "k", "admittedAt": 0}})
        );
    }

    #[test]
    fn empty_json_object_is_empty_ledger() {
        let l = Ledger::from_json("{}").expect("parses");
        assert_eq!(l.admitted(), 0);
        assert_eq!(Ledger::default().to_json(), "{}");
        assert_eq!(Ledger::from_json(" { } \n"), Ok(Ledger::default()));
    }

    #[test]
    fn from_json_reads_minimal_and_extended_entries() {
        let l = Ledger::from_json(
            r#"{"u1":{"namespace":"n","name":"k","admittedAt":1},
                "u2":{"namespace":"n","name":"k2","admittedAt":1,"expiresAt":9,"future":true}}"#,
        )
        .expect("parses");
        assert_eq!(l.admitted(), 2);
        // An older version's `expiresAt` is read and dropped: slots free
        // when the Secret is gone, never at expiresAt.
        assert!(!l.to_json().contains("expiresAt"), "{}", l.to_json());
    }

    #[test]
    fn from_json_rejects_garbage_without_echoing_it() {
        let secretish = "kmk_SHOULD_NOT_BE_ECHOED";
        let cases = [
            String::new(),
            "null".to_owned(),
            "[]".to_owned(),
            "{".to_owned(),
            secretish.to_owned(),
            format!("{{\"u\": \"{secretish}\"}}"),
            format!("{{\"u\": {{\"namespace\": \"n\", \"name\": \"{secretish}\"}}}}"),
            r#"{"u":{"namespace":"n","name":"k","admittedAt":"1"}}"#.to_owned(),
            r#"{"u":{"namespace":"n","name":"k","admittedAt":1.5}}"#.to_owned(),
            r#"{"u":{"namespace":"n","name":"k","admittedAt":1}} trailing"#.to_owned(),
        ];
        for case in &cases {
            let err = Ledger::from_json(case).expect_err(case);
            let msg = err.to_string();
            assert!(!msg.contains(secretish), "{msg}");
            assert!(msg.len() < 80, "{msg}");
            assert!(msg.starts_with("not "), "{msg}");
        }
        assert!(matches!(
            Ledger::from_json("{"),
            Err(LedgerParseError::Syntax { .. })
        ));
        assert!(matches!(
            Ledger::from_json("[]"),
            Err(LedgerParseError::Shape { .. })
        ));
    }

    #[test]
    fn admit_fills_to_limit_then_reports_full() {
        let mut l = Ledger::default();
        for i in 0..DEFAULT_LIMIT {
            let uid = format!("u{i}");
            assert_eq!(
                l.admit(&uid, entry(&uid), DEFAULT_LIMIT),
                Admission::Admitted
            );
            assert_eq!(l.admitted(), i + 1);
        }
        let before = l.clone();
        assert_eq!(
            l.admit("extra", entry("extra"), DEFAULT_LIMIT),
            Admission::Full {
                live: 25,
                limit: 25
            }
        );
        assert_eq!(l, before, "Full must not modify the ledger");
        assert!(l.get("extra").is_none());
    }

    #[test]
    fn admit_of_known_uid_is_already_admitted_and_changes_nothing() {
        let mut l = Ledger::default();
        assert_eq!(l.admit("u", entry("k"), 1), Admission::Admitted);
        let before = l.clone();
        // Different entry data, and even a full ledger: still AlreadyAdmitted
        // and the recorded entry wins (a retry must not re-stamp it).
        assert_eq!(l.admit("u", entry("other"), 1), Admission::AlreadyAdmitted);
        assert_eq!(l, before);
        assert_eq!(l.admit("u", entry("k"), 0), Admission::AlreadyAdmitted);
        assert_eq!(l, before);
    }

    #[test]
    fn limit_zero_is_always_full() {
        let mut l = Ledger::default();
        assert_eq!(
            l.admit("u", entry("k"), 0),
            Admission::Full { live: 0, limit: 0 }
        );
        assert_eq!(l.admitted(), 0);
    }

    #[test]
    fn lowered_limit_reports_more_live_than_limit() {
        let mut l = Ledger::default();
        for uid in ["a", "b", "c"] {
            assert_eq!(l.admit(uid, entry(uid), 3), Admission::Admitted);
        }
        assert_eq!(
            l.admit("d", entry("d"), 2),
            Admission::Full { live: 3, limit: 2 }
        );
        assert!(l.release("a"));
        assert_eq!(
            l.admit("d", entry("d"), 2),
            Admission::Full { live: 2, limit: 2 }
        );
        assert!(l.release("b"));
        assert_eq!(l.admit("d", entry("d"), 2), Admission::Admitted);
    }

    #[test]
    fn restore_counts_beyond_the_limit_and_keeps_the_first_entry() {
        let mut l = Ledger::default();
        l.restore("a", entry("a"));
        l.restore("b", entry("b"));
        l.restore("a", entry("other"));
        assert_eq!(l.admitted(), 2);
        assert_eq!(l.get("a"), Some(&entry("a")));
        assert_eq!(
            l.admit("c", entry("c"), 1),
            Admission::Full { live: 2, limit: 1 }
        );
    }

    #[test]
    fn release_frees_a_slot() {
        let mut l = Ledger::default();
        assert_eq!(l.admit("a", entry("a"), 1), Admission::Admitted);
        assert!(matches!(
            l.admit("b", entry("b"), 1),
            Admission::Full { .. }
        ));
        assert!(l.release("a"));
        assert!(!l.release("a"), "second release is a no-op");
        assert!(!l.release("never-admitted"));
        assert_eq!(l.admit("b", entry("b"), 1), Admission::Admitted);
        assert!(l.get("a").is_none());
    }
}
