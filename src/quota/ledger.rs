//! Per-(project, owner) key quota: the ledger's data model, its JSON form and
//! the admission decision.
//!
//! # The guarantee
//!
//! At no instant do more than `limit` non-expired minted keys exist for one
//! (project, owner) pair, even under concurrent creates and operator restarts.
//! Keys over quota get phase `Rejected` and mint nothing; when a slot frees,
//! the oldest waiting key is admitted. Expired and deleted keys do not count.
//!
//! # Why a ledger
//!
//! Counting ApiKeys (or Secrets) from an informer cache cannot give that
//! guarantee: two reconcilers can each see 24 of 25 and both mint. So every
//! pair has a **ledger**, one ConfigMap (named by [`Pair::ledger_name`], data
//! key [`Ledger::DATA_KEY`]) that records each admitted ApiKey by UID. It is
//! written with optimistic concurrency (`metadata.resourceVersion`), so of two
//! writers that read the same version only one wins; the loser re-reads and
//! decides again on the new state. Safety comes from that compare-and-swap,
//! not from the read being fresh: a stale read just loses the CAS.
//!
//! This module is pure (no Kubernetes types, no I/O); instants are [`Millis`]
//! since the Unix epoch and the caller converts. "Expired" is judged against
//! the `now` the caller passes, i.e. the operator's clock.
//!
//! # The protocol the controller must follow
//!
//! * **Admit, then mint.** Read the ledger, call [`Ledger::admit`]:
//!   [`Admission::Admitted`] means write the ledger back with the
//!   resourceVersion that was read (on a conflict start again from the read)
//!   and only after that write succeeded, mint. [`Admission::AlreadyAdmitted`]
//!   means a previous attempt recorded the key (e.g. it crashed before
//!   minting): mint without writing. [`Admission::Full`] means mint nothing.
//!   A key is never minted unless its entry is in the *persisted* ledger, so
//!   a crash at any point leaves at most an admitted-but-unminted entry,
//!   which over-counts (safe) until the next reconcile mints it.
//! * **Delete, then release.** When an ApiKey is deleted or expires, delete
//!   its Secret first; only then may [`Ledger::release`] (and a CAS-write)
//!   drop its entry. Releasing first would free the slot while the key
//!   material still exists. The controller releases lazily: an admission
//!   that finds the pair full drops the entries of keys whose ApiKey is gone
//!   (the finalizer deletes the Secret before it lets go) or whose status
//!   says Expired (written after the Secret is deleted). Releasing late only
//!   over-counts, which is the safe direction.
//! * **Release is final.** After [`Ledger::release`] the ledger no longer
//!   knows the key, so whatever ends a key (phase `Expired`, a minted key's
//!   hash) must be on the ApiKey's status *before* its Secret is deleted, and
//!   such a key must never be admitted again; otherwise a later change to
//!   `spec.expiresAt` would bring an expired key back (the model in the
//!   tests found exactly that).
//! * **Record expiry changes first.** When `spec.expiresAt` changes, CAS-write
//!   [`Ledger::set_expiry`] before acting on the new expiry.
//! * **Garbage-collect in this order:** read the ledger, *then* list ApiKeys
//!   (all namespaces, from the API server), then [`Ledger::retain_known`] and
//!   CAS-write with the resourceVersion of that read. Any key admitted after
//!   the read changes the resourceVersion, so the write fails instead of
//!   dropping an entry the list could not have seen.
//! * A missing ConfigMap (or missing data key) is an empty ledger; create it
//!   with create (which fails if another writer created it first). A present
//!   but unparsable value is an error ([`LedgerError`]), never "empty":
//!   treating a corrupt ledger as empty would reset the quota.
//!
//! The tests end with a randomised model of this protocol (concurrent
//! reconcilers, CAS conflicts, crashes, expiries, deletions, garbage
//! collection) that checks the guarantee after every step.

use std::collections::{BTreeMap, HashSet};

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
    /// When the key was admitted (informational).
    pub admitted_at: Millis,
    /// When the key expires; `None` never. From this instant on the entry no
    /// longer counts, even before its Secret is deleted and it is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
}

impl Entry {
    /// Whether the entry counts against the quota at `now`. A key expiring
    /// exactly at `now` is expired, so the slot frees at `expires_at`.
    fn is_live(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// Why a ledger's stored JSON could not be read.
///
/// Messages carry only a position, never the input or serde's own message
/// (which quotes offending values), so a tampered ConfigMap cannot inject
/// text into logs and events. They are phrased as a reason, without naming
/// the ledger, because the caller knows which ConfigMap it read.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum LedgerError {
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
    /// "admittedAt": .., "expiresAt": ..}, ..}`. Unknown entry fields are
    /// ignored so a newer operator's additions do not break an older one.
    pub fn from_json(s: &str) -> Result<Ledger, LedgerError> {
        match serde_json::from_str::<BTreeMap<String, Entry>>(s) {
            Ok(entries) => Ok(Ledger { entries }),
            Err(e) => {
                let (line, column) = (e.line(), e.column());
                Err(match e.classify() {
                    serde_json::error::Category::Data => LedgerError::Shape { line, column },
                    _ => LedgerError::Syntax { line, column },
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
            if let Some(at) = e.expires_at {
                obj.insert("expiresAt".into(), at.into());
            }
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

    /// Entries that count against the quota at `now`: `expires_at` is `None`
    /// or after `now`. Admitted-but-not-yet-minted entries count too: the
    /// key may be minted at any moment.
    pub fn live(&self, now: Millis) -> usize {
        self.entries.values().filter(|e| e.is_live(now)).count()
    }

    /// Records `uid` if a slot is free at `now`.
    ///
    /// * `uid` already present: [`Admission::AlreadyAdmitted`], ledger
    ///   unchanged (even if that entry has expired: the caller checks expiry
    ///   first and never mints an expired key).
    /// * `live(now) >= limit`: [`Admission::Full`], ledger unchanged.
    /// * otherwise the entry is inserted: [`Admission::Admitted`]; persist
    ///   the ledger (CAS) before minting.
    ///
    /// The caller only admits keys that are not expired at `now`; admitting
    /// one would be harmless for the guarantee (it does not count) but
    /// pointless.
    pub fn admit(&mut self, uid: &str, entry: Entry, limit: usize, now: Millis) -> Admission {
        if self.entries.contains_key(uid) {
            return Admission::AlreadyAdmitted;
        }
        let live = self.live(now);
        if live >= limit {
            return Admission::Full { live, limit };
        }
        self.entries.insert(uid.to_owned(), entry);
        Admission::Admitted
    }

    /// Removes `uid`; true if it was present. Call only after the key's
    /// Secret is deleted.
    pub fn release(&mut self, uid: &str) -> bool {
        self.entries.remove(uid).is_some()
    }

    /// Updates an admitted entry's expiry when the user changes
    /// `spec.expiresAt`.
    ///
    /// Refuses (returns false, ledger unchanged) if `uid` is absent or its
    /// recorded expiry has passed (`<= now`): an expired key stays expired.
    /// It stopped counting at that instant and its slot may already have
    /// been given to another key, so reviving it could exceed the limit.
    /// Shortening or extending a live entry is allowed (it already holds a
    /// slot), including shortening into the past, which frees the slot now.
    /// Returns true when the ledger now records `expires_at` for `uid`
    /// (possibly unchanged).
    ///
    /// `now` is the time of the read, so a CAS write that lands just after
    /// the old expiry still extends the entry. That is safe: the CAS
    /// succeeding proves no other write (so no admission into the freed
    /// slot) happened in between.
    pub fn set_expiry(&mut self, uid: &str, expires_at: Option<Millis>, now: Millis) -> bool {
        match self.entries.get_mut(uid) {
            Some(e) if e.is_live(now) => {
                e.expires_at = expires_at;
                true
            }
            _ => false,
        }
    }

    /// Drops entries whose UID is not in `known` (ApiKeys that vanished
    /// without their finalizer running); returns the removed UIDs, sorted.
    ///
    /// `known` must hold the UIDs of *all* ApiKeys (every namespace, including
    /// those being deleted), listed from the API server *after* this ledger
    /// was read; see the module docs for why the order matters.
    pub fn retain_known(&mut self, known: &HashSet<String>) -> Vec<String> {
        let mut removed = Vec::new();
        self.entries.retain(|uid, _| {
            let keep = known.contains(uid);
            if !keep {
                removed.push(uid.clone());
            }
            keep
        });
        removed
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
    /// No free slot: `live` live entries >= `limit`.
    Full { live: usize, limit: usize },
}

/// An ApiKey of the pair that is neither admitted nor finished: waiting for
/// a slot.
///
/// The caller should list only keys that would mint if admitted (not
/// expired, not being deleted, not blocked for another reason such as a
/// Secret name conflict): a key that can never take its slot would hold up
/// every key behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// `metadata.creationTimestamp` (1-second precision, so ties are common).
    pub created: Millis,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Waiting {
    /// The waiting order: creation time, then namespace/name (the quota spans
    /// namespaces), then UID, which makes it total (a deleted ApiKey and its
    /// re-created namesake can both be listed for a moment).
    fn order_key(&self) -> (Millis, &str, &str, &str) {
        (self.created, &self.namespace, &self.name, &self.uid)
    }
}

/// Whether `me` may take a slot now: with `free` = `limit.saturating_sub(live)`
/// free slots, the oldest `free` waiting keys may be admitted; others wait.
///
/// `waiting` may or may not contain `me`; `me` is treated as waiting either
/// way. This is fairness only: the limit itself is enforced by
/// [`Ledger::admit`] and the CAS, whatever this returns.
pub fn may_take_slot(me: &Waiting, waiting: &[Waiting], free: usize) -> bool {
    position(me, waiting) < free
}

/// The other waiting keys that may take a slot along with `me`: those among
/// the oldest `free` (with `me` counted in line), in line order; none if
/// `me` may not take a slot itself. Admitting
/// them in the same ledger write as `me` serves a burst of one pair with one
/// write instead of one per key; an admitted key counts from then on, minted
/// or not, so this can only over-count.
pub fn admitted_with<'a>(me: &Waiting, waiting: &'a [Waiting], free: usize) -> Vec<&'a Waiting> {
    if !may_take_slot(me, waiting, free) {
        return Vec::new();
    }
    let mut line: Vec<Waiting> = waiting.to_vec();
    line.push(me.clone());
    let mut others: Vec<&Waiting> = waiting
        .iter()
        .filter(|w| w.uid != me.uid && position(w, &line) < free)
        .collect();
    others.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    others.dedup_by(|a, b| a.uid == b.uid);
    others
}

/// Position of `me` in the waiting order (0 = next in line): the number of
/// other distinct UIDs in `waiting` that come before it. Entries with `me`'s
/// UID are ignored (`me` is authoritative about itself), and a UID listed
/// twice counts once, at its earliest position, so a duplicated list cannot
/// push `me` back.
pub fn position(me: &Waiting, waiting: &[Waiting]) -> usize {
    let mine = me.order_key();
    let ahead: HashSet<&str> = waiting
        .iter()
        .filter(|w| w.uid != me.uid && w.order_key() < mine)
        .map(|w| w.uid.as_str())
        .collect();
    ahead.len()
}

/// Human message for a rejected key, e.g. `quota full: alice@example.com has
/// 25 of 25 keys in project payments; 2nd in line for a slot; delete an
/// unused key to free one`.
///
/// `position` is 0-based, as returned by [`position`].
pub fn rejection_message(pair: &Pair, live: usize, limit: usize, position: usize) -> String {
    format!(
        "quota full: {} has {live} of {limit} keys in project {}; {} in line for a slot; \
         delete an unused key to free one",
        printable(pair.owner),
        printable(pair.project),
        ordinal(position.saturating_add(1)),
    )
}

/// Escapes control characters. The owner excludes only whitespace, so it
/// could carry e.g. ESC; status messages end up in terminals via kubectl.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `1st`, `2nd`, `3rd`, `4th`, ..., `11th`, `12th`, `13th`, ..., `21st`, ...
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entry(name: &str, expires_at: Option<Millis>) -> Entry {
        Entry {
            namespace: "ns".into(),
            name: name.into(),
            admitted_at: 0,
            expires_at,
        }
    }

    fn waiting(created: Millis, namespace: &str, name: &str, uid: &str) -> Waiting {
        Waiting {
            created,
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn pair<'a>(project: &'a str, owner: &'a str) -> Pair<'a> {
        Pair { project, owner }
    }

    // ---- ledger_name -------------------------------------------------

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

    // ---- JSON ------------------------------------------------------------

    #[test]
    fn json_round_trips() {
        let mut l = Ledger::default();
        l.entries
            .insert("uid-2".into(), entry("b", Some(1_700_000_000_123)));
        l.entries.insert(
            "uid-1".into(),
            Entry {
                namespace: "team-a".into(),
                name: "with \"quotes\" and \\ and \u{1}".into(),
                admitted_at: -5,
                expires_at: None,
            },
        );
        l.entries.insert("uid-3".into(), entry("c", Some(i64::MAX)));
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
            a.entries.insert(uid.into(), entry(uid, Some(7)));
        }
        for uid in ["b", "c", "a"] {
            b.entries.insert(uid.into(), entry(uid, Some(7)));
        }
        assert_eq!(a.to_json(), b.to_json());
        let json = a.to_json();
        assert!(!json.contains(' ') && !json.contains('\n'), "{json}");
        let pos = |k: &str| json.find(&format!("\"{k}\":{{")).expect("uid present");
        assert!(pos("a") < pos("b") && pos("b") < pos("c"), "{json}");

        let mut one = Ledger::default();
        one.entries.insert("u".into(), entry("k", None));
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
        assert!(l.is_empty());
        assert_eq!(l.len(), 0);
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
        assert_eq!(l.get("u1").expect("u1").expires_at, None);
        assert_eq!(l.get("u2").expect("u2").expires_at, Some(9));
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
            r#"{"u":{"namespace":"n","name":"k","admittedAt":1,"expiresAt":"never"}}"#.to_owned(),
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
            Err(LedgerError::Syntax { .. })
        ));
        assert!(matches!(
            Ledger::from_json("[]"),
            Err(LedgerError::Shape { .. })
        ));
    }

    // ---- live ----------------------------------------------------------

    #[test]
    fn live_counts_unexpired_entries_only() {
        let mut l = Ledger::default();
        l.entries.insert("never".into(), entry("a", None));
        l.entries.insert("past".into(), entry("b", Some(99)));
        l.entries.insert("now".into(), entry("c", Some(100)));
        l.entries.insert("future".into(), entry("d", Some(101)));
        assert_eq!(l.live(100), 2); // never + future: expiring at now is expired
        assert_eq!(l.live(99), 3);
        assert_eq!(l.live(98), 4);
        assert_eq!(l.live(i64::MAX), 1);
        assert_eq!(l.live(i64::MIN), 4);
        assert_eq!(l.len(), 4);
    }

    // ---- admit / release ----------------------------------------------

    #[test]
    fn admit_fills_to_limit_then_reports_full() {
        let mut l = Ledger::default();
        for i in 0..DEFAULT_LIMIT {
            let uid = format!("u{i}");
            assert_eq!(
                l.admit(&uid, entry(&uid, None), DEFAULT_LIMIT, 0),
                Admission::Admitted
            );
            assert_eq!(l.live(0), i + 1);
        }
        let before = l.clone();
        assert_eq!(
            l.admit("extra", entry("extra", None), DEFAULT_LIMIT, 0),
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
        assert_eq!(
            l.admit("u", entry("k", Some(50)), 1, 0),
            Admission::Admitted
        );
        let before = l.clone();
        // Different entry data, and even a full ledger: still AlreadyAdmitted
        // and the recorded entry wins (a retry must not re-stamp it).
        assert_eq!(
            l.admit("u", entry("other", None), 1, 10),
            Admission::AlreadyAdmitted
        );
        assert_eq!(l, before);
        assert_eq!(
            l.admit("u", entry("k", None), 0, 10),
            Admission::AlreadyAdmitted
        );
        // Even past its expiry (the caller checks expiry before minting).
        assert_eq!(
            l.admit("u", entry("k", None), 1, 60),
            Admission::AlreadyAdmitted
        );
        assert_eq!(l, before);
    }

    #[test]
    fn slot_frees_exactly_at_expiry() {
        let mut l = Ledger::default();
        assert_eq!(
            l.admit("a", entry("a", Some(100)), 1, 0),
            Admission::Admitted
        );
        assert_eq!(
            l.admit("b", entry("b", None), 1, 99),
            Admission::Full { live: 1, limit: 1 }
        );
        assert_eq!(l.admit("b", entry("b", None), 1, 100), Admission::Admitted);
        // The expired entry is still recorded (until its Secret is deleted)
        // but does not count.
        assert_eq!(l.len(), 2);
        assert_eq!(l.live(100), 1);
    }

    #[test]
    fn limit_zero_is_always_full() {
        let mut l = Ledger::default();
        for now in [0, 1_000, i64::MAX] {
            assert_eq!(
                l.admit("u", entry("k", None), 0, now),
                Admission::Full { live: 0, limit: 0 }
            );
        }
        assert!(l.is_empty());
    }

    #[test]
    fn lowered_limit_reports_more_live_than_limit() {
        let mut l = Ledger::default();
        for uid in ["a", "b", "c"] {
            assert_eq!(l.admit(uid, entry(uid, None), 3, 0), Admission::Admitted);
        }
        assert_eq!(
            l.admit("d", entry("d", None), 2, 0),
            Admission::Full { live: 3, limit: 2 }
        );
        assert!(l.release("a"));
        assert_eq!(
            l.admit("d", entry("d", None), 2, 0),
            Admission::Full { live: 2, limit: 2 }
        );
        assert!(l.release("b"));
        assert_eq!(l.admit("d", entry("d", None), 2, 0), Admission::Admitted);
    }

    #[test]
    fn release_frees_a_slot() {
        let mut l = Ledger::default();
        assert_eq!(l.admit("a", entry("a", None), 1, 0), Admission::Admitted);
        assert!(matches!(
            l.admit("b", entry("b", None), 1, 0),
            Admission::Full { .. }
        ));
        assert!(l.release("a"));
        assert!(!l.release("a"), "second release is a no-op");
        assert!(!l.release("never-admitted"));
        assert_eq!(l.admit("b", entry("b", None), 1, 0), Admission::Admitted);
        assert!(l.get("a").is_none());
    }

    // ---- set_expiry -----------------------------------------------------

    #[test]
    fn set_expiry_allows_changes_to_live_entries() {
        let mut l = Ledger::default();
        l.entries.insert("u".into(), entry("k", Some(100)));
        assert!(l.set_expiry("u", Some(500), 50)); // extend
        assert_eq!(l.get("u").expect("u").expires_at, Some(500));
        assert!(l.set_expiry("u", Some(200), 50)); // shorten
        assert_eq!(l.get("u").expect("u").expires_at, Some(200));
        assert!(l.set_expiry("u", None, 50)); // never expire
        assert_eq!(l.get("u").expect("u").expires_at, None);
        assert!(l.set_expiry("u", None, 60)); // no-op is fine
        assert!(l.set_expiry("u", Some(10), 60)); // into the past: frees now
        assert_eq!(l.live(60), 0);
    }

    #[test]
    fn set_expiry_refuses_expired_and_unknown_entries() {
        let mut l = Ledger::default();
        l.entries.insert("u".into(), entry("k", Some(100)));
        let before = l.clone();
        // Exactly at expiry the key is expired, so it may not be revived.
        assert!(!l.set_expiry("u", Some(1_000), 100));
        assert!(!l.set_expiry("u", None, 150));
        assert!(!l.set_expiry("u", Some(50), 150));
        assert_eq!(l, before);
        assert!(!l.set_expiry("missing", None, 0));
        assert_eq!(l, before);
        // Just before expiry it can still be extended.
        assert!(l.set_expiry("u", Some(1_000), 99));
    }

    #[test]
    fn expired_key_cannot_take_back_a_reassigned_slot() {
        // The scenario set_expiry's refusal exists for.
        let mut l = Ledger::default();
        assert_eq!(
            l.admit("old", entry("old", Some(100)), 1, 0),
            Admission::Admitted
        );
        assert_eq!(
            l.admit("new", entry("new", None), 1, 100),
            Admission::Admitted
        );
        assert!(!l.set_expiry("old", None, 101));
        assert_eq!(l.live(101), 1);
    }

    // ---- retain_known ---------------------------------------------------

    #[test]
    fn retain_known_drops_unknown_uids() {
        let mut l = Ledger::default();
        for uid in ["c", "a", "b", "d"] {
            l.entries.insert(uid.into(), entry(uid, None));
        }
        let known: HashSet<String> = ["b", "zzz"].iter().map(|s| s.to_string()).collect();
        assert_eq!(l.retain_known(&known), vec!["a", "c", "d"]);
        assert_eq!(l.len(), 1);
        assert!(l.get("b").is_some());
        assert!(l.retain_known(&known).is_empty());
        assert_eq!(l.retain_known(&HashSet::new()), vec!["b"]);
        assert!(l.is_empty());
    }

    #[test]
    fn gc_must_read_the_ledger_before_listing_keys() {
        // Why the docs prescribe "read ledger, then list ApiKeys": done the
        // other way round, a key created and admitted in between is missing
        // from the list but present in the ledger, and a successful write
        // would drop its entry while it gets minted.
        let mut server = Ledger::default();
        let mut version = 0;
        // Wrong order: list, then read.
        let known: HashSet<String> = HashSet::new();
        assert_eq!(
            server.admit("new", entry("new", None), 1, 0),
            Admission::Admitted
        );
        version += 1;
        let (mut read, read_version) = (server.clone(), version);
        assert_eq!(read.retain_known(&known), vec!["new"]);
        assert_eq!(read_version, version, "the CAS would succeed: entry lost");

        // Right order: read, then list; the admission bumps the version
        // between the read and the write, so the GC write fails.
        let mut server = Ledger::default();
        let mut version = 0;
        let (mut read, read_version) = (server.clone(), version);
        assert_eq!(
            server.admit("new", entry("new", None), 1, 0),
            Admission::Admitted
        );
        version += 1;
        let known: HashSet<String> = ["new".to_owned()].into();
        assert!(read.retain_known(&known).is_empty());
        assert_ne!(read_version, version, "the CAS fails and GC re-reads");
    }

    // ---- waiting order --------------------------------------------------

    #[test]
    fn position_orders_by_created_then_namespace_name_then_uid() {
        let list = vec![
            waiting(2_000, "a", "k", "u1"),
            waiting(1_000, "b", "a", "u2"),
            waiting(1_000, "a", "z", "u3"),
            waiting(1_000, "a", "y", "u5"),
            waiting(1_000, "a", "y", "u4"), // same name, re-created: uid decides
        ];
        let order: Vec<usize> = list.iter().map(|w| position(w, &list)).collect();
        assert_eq!(order, vec![4, 3, 2, 1, 0]);
        // Namespace before name: "a/z" < "b/a".
        assert!(position(&list[2], &list) < position(&list[1], &list));
    }

    #[test]
    fn position_when_me_is_absent_or_duplicated() {
        let others = vec![
            waiting(1_000, "ns", "a", "u1"),
            waiting(3_000, "ns", "c", "u3"),
        ];
        let me = waiting(2_000, "ns", "b", "me");
        assert_eq!(position(&me, &others), 1);
        let mut with_me = others.clone();
        with_me.push(me.clone());
        assert_eq!(position(&me, &with_me), 1);
        // Duplicates of others count once; duplicates of me are ignored,
        // even stale copies that would sort earlier.
        let mut dup = with_me.clone();
        dup.extend(others.iter().cloned());
        dup.push(waiting(0, "ns", "b", "me"));
        dup.push(waiting(500, "ns", "a", "u1")); // stale copy of u1
        assert_eq!(position(&me, &dup), 1);
        assert_eq!(position(&me, &[]), 0);
        let first = waiting(0, "ns", "a", "u0");
        assert_eq!(position(&first, &dup), 0);
    }

    #[test]
    fn admitted_with_takes_the_others_among_the_oldest_free_in_line_order() {
        let list: Vec<Waiting> = (0..5)
            .map(|i| waiting(1_000 * i, "ns", &format!("k{i}"), &format!("u{i}")))
            .rev()
            .collect();
        let names = |v: Vec<&Waiting>| v.iter().map(|w| w.name.clone()).collect::<Vec<_>>();
        // me is second in line: with 3 free slots the first and third join it.
        let me = list[3].clone(); // k1
        assert_eq!(names(admitted_with(&me, &list, 3)), ["k0", "k2"]);
        assert!(
            admitted_with(&me, &list, 1).is_empty(),
            "only k0 fits, not me"
        );
        assert_eq!(
            names(admitted_with(&me, &list, 99)),
            ["k0", "k2", "k3", "k4"]
        );
        // me absent from the list still takes its place in line.
        let late = waiting(9_000, "ns", "late", "late");
        assert_eq!(
            names(admitted_with(&late, &list, 6)),
            ["k0", "k1", "k2", "k3", "k4"]
        );
        assert!(admitted_with(&late, &list, 5).is_empty(), "late is 6th");
        // Never more than the free slots, me included, and each key once.
        let mut dup = list.clone();
        dup.extend(list.iter().cloned());
        for free in 0..8 {
            let others = admitted_with(&me, &dup, free);
            assert!(others.len() < free.max(1), "free={free}: {}", others.len());
            let mut uids: Vec<&str> = others.iter().map(|w| w.uid.as_str()).collect();
            uids.dedup();
            assert_eq!(uids.len(), others.len());
        }
    }

    #[test]
    fn may_take_slot_admits_the_oldest_free_keys() {
        let list: Vec<Waiting> = (0..5)
            .map(|i| waiting(1_000, "ns", &format!("k{i}"), &format!("u{i}")))
            .collect();
        for free in 0..=7 {
            let admitted: Vec<bool> = list.iter().map(|w| may_take_slot(w, &list, free)).collect();
            let expected: Vec<bool> = (0..5).map(|i| i < free).collect();
            assert_eq!(admitted, expected, "free={free}");
        }
        let me = waiting(9_000, "ns", "late", "late");
        assert!(!may_take_slot(&me, &list, 0));
        assert!(!may_take_slot(&me, &list, 5));
        assert!(may_take_slot(&me, &list, 6));
        assert!(may_take_slot(&me, &[], 1));
        assert!(!may_take_slot(&me, &[], 0));
        assert!(may_take_slot(&me, &list, usize::MAX));
    }

    #[test]
    fn sequential_reconciles_admit_the_oldest_first() {
        // Reconciled newest first (the worst order): the limit and waiting
        // order together still admit exactly the two oldest keys.
        let mut l = Ledger::default();
        let limit = 2;
        let mut queue: Vec<Waiting> = vec![
            waiting(3_000, "x", "c", "u3"),
            waiting(1_000, "y", "a", "u1"),
            waiting(2_000, "x", "b", "u2"),
            waiting(1_000, "x", "z", "u0"),
            waiting(5_000, "a", "a", "u4"),
        ];
        queue.sort_by(|a, b| b.order_key().cmp(&a.order_key()));
        for _round in 0..queue.len() {
            for me in &queue {
                if l.get(&me.uid).is_some() {
                    continue;
                }
                let pending: Vec<Waiting> = queue
                    .iter()
                    .filter(|w| l.get(&w.uid).is_none())
                    .cloned()
                    .collect();
                let free = limit - l.live(0);
                if may_take_slot(me, &pending, free) {
                    let e = entry(&me.name, None);
                    assert_eq!(l.admit(&me.uid, e, limit, 0), Admission::Admitted);
                }
            }
        }
        let admitted: Vec<&str> = l.iter().map(|(uid, _)| uid).collect();
        assert_eq!(admitted, vec!["u0", "u1"]);
    }

    // ---- messages -------------------------------------------------------

    #[test]
    fn rejection_message_is_clear_and_short() {
        let msg = rejection_message(&pair("payments", "alice@example.com"), 25, 25, 1);
        assert_eq!(
            msg,
            "quota full: alice@example.com has 25 of 25 keys in project payments; \
             2nd in line for a slot; delete an unused key to free one"
        );
        assert!(msg.len() < 200);
        let sa = pair("payments-prod", "system:serviceaccount:ci-system:deployer");
        assert!(rejection_message(&sa, 25, 25, 123).len() < 200);
        // Worst case stays bounded (owner 253, project 63).
        let owner = "o".repeat(253);
        let project = "p".repeat(63);
        let long = rejection_message(&pair(&project, &owner), usize::MAX, 25, usize::MAX);
        assert!(long.len() < 500, "{}", long.len());
    }

    #[test]
    fn rejection_message_escapes_control_characters() {
        let msg = rejection_message(&pair("p", "evil\u{1b}[2J\u{7}"), 1, 1, 0);
        assert!(!msg.chars().any(char::is_control), "{msg:?}");
        assert!(msg.contains("evil\\u{1b}[2J\\u{7}"), "{msg}");
        assert!(msg.contains("1st in line"), "{msg}");
    }

    #[test]
    fn ordinals() {
        let cases = [
            (1, "1st"),
            (2, "2nd"),
            (3, "3rd"),
            (4, "4th"),
            (10, "10th"),
            (11, "11th"),
            (12, "12th"),
            (13, "13th"),
            (21, "21st"),
            (22, "22nd"),
            (23, "23rd"),
            (101, "101st"),
            (111, "111th"),
            (112, "112th"),
        ];
        for (n, s) in cases {
            assert_eq!(ordinal(n), s);
        }
    }

    // ---- model of the controller's protocol ----------------------------

    /// xorshift64*: tiny and deterministic, so a failing seed replays.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            // Never zero (xorshift's fixed point).
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform-ish in 0..n (n > 0); the bias is irrelevant here.
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
            if items.is_empty() {
                return None;
            }
            let len = u64::try_from(items.len()).expect("fits");
            let i = usize::try_from(self.below(len)).expect("fits");
            items.get(i)
        }
    }

    /// Which parts of the protocol the model follows; the negative-control
    /// tests switch one off to show the checks can fail.
    #[derive(Clone, Copy)]
    struct Protocol {
        /// Ledger writes fail if the ledger changed since it was read.
        cas: bool,
        /// GC reads the ledger before listing ApiKeys.
        gc_reads_ledger_first: bool,
    }

    const CORRECT: Protocol = Protocol {
        cas: true,
        gc_reads_ledger_first: true,
    };

    /// An ApiKey object in the model's API server.
    struct Key {
        namespace: String,
        name: String,
        created: Millis,
        expires_at: Option<Millis>,
        deleting: bool,
        /// `status.phase == Expired`: terminal, persisted on the object.
        expired: bool,
    }

    /// One reconcile of one ApiKey, or one GC pass, as a state machine whose
    /// every transition touches the "API server" at most once, so the
    /// scheduler can interleave tasks between any two requests.
    #[derive(Clone)]
    enum Stage {
        /// GET key + GET ledger (+ LIST waiting keys), then decide.
        Read,
        /// PUT ledger with the read resourceVersion; on success go to `then`.
        Write {
            ledger: Ledger,
            version: u64,
            then: Box<Stage>,
        },
        /// CREATE Secret (fails harmlessly if it exists).
        Mint,
        /// Write `status.phase = Expired`, then delete the Secret and release.
        MarkExpired,
        /// DELETE Secret, then release.
        DeleteSecret {
            finalize: bool,
        },
        /// GET ledger, release, write.
        Release {
            finalize: bool,
        },
        /// Remove the finalizer: the ApiKey disappears.
        Finalize,
        /// GC: first request (ledger or list, depending on the protocol).
        GcFirst,
        /// GC: second request, then write.
        GcSecond {
            ledger: Option<(Ledger, u64)>,
            known: Option<HashSet<String>>,
        },
        Done,
    }

    struct Task {
        /// `None` for the GC task.
        uid: Option<String>,
        stage: Stage,
    }

    #[derive(Default, Debug)]
    struct Stats {
        admitted: usize,
        already: usize,
        full: usize,
        unfair: usize,
        conflicts: usize,
        minted: usize,
        released: usize,
        gc_dropped: usize,
        expiry_changes: usize,
        expiry_refused: usize,
        late_extensions: usize,
    }

    struct World {
        protocol: Protocol,
        limit: usize,
        now: Millis,
        /// The ledger ConfigMap and its resourceVersion.
        ledger: Ledger,
        version: u64,
        keys: BTreeMap<String, Key>,
        /// UIDs of ApiKeys whose Secret (key material) exists.
        secrets: HashSet<String>,
        next_uid: u64,
        /// UIDs whose ledger entry has been seen expired, with the ledger
        /// version at that moment.
        seen_expired: HashMap<String, u64>,
        stats: Stats,
    }

    impl World {
        fn new(protocol: Protocol, limit: usize) -> Self {
            World {
                protocol,
                limit,
                now: 1_000_000,
                ledger: Ledger::default(),
                version: 0,
                keys: BTreeMap::new(),
                secrets: HashSet::new(),
                next_uid: 0,
                seen_expired: HashMap::new(),
                stats: Stats::default(),
            }
        }

        fn waiting_list(&self, ledger: &Ledger) -> Vec<Waiting> {
            self.keys
                .iter()
                .filter(|(uid, k)| {
                    !k.deleting
                        && !k.expired
                        && ledger.get(uid).is_none()
                        && k.expires_at.is_none_or(|at| at > self.now)
                })
                .map(|(uid, k)| waiting(k.created, &k.namespace, &k.name, uid))
                .collect()
        }

        /// Runs one transition of a reconcile of `uid`.
        fn step_key(&mut self, uid: &str, stage: Stage) -> Stage {
            let now = self.now;
            match stage {
                Stage::Read => {
                    let Some(key) = self.keys.get(uid) else {
                        return Stage::Done;
                    };
                    if key.deleting {
                        return Stage::DeleteSecret { finalize: true };
                    }
                    if key.expired {
                        // Finish a cleanup a restart interrupted; never
                        // admit again, whatever spec.expiresAt says now.
                        return Stage::DeleteSecret { finalize: false };
                    }
                    let (mut ledger, version) = (self.ledger.clone(), self.version);
                    match ledger.get(uid) {
                        Some(e) if !e.is_live(now) => {
                            if e.expires_at != key.expires_at {
                                // The user moved expiresAt after the key
                                // expired: it stays expired.
                                assert!(!ledger.set_expiry(uid, key.expires_at, now));
                                self.stats.expiry_refused += 1;
                            }
                            Stage::MarkExpired
                        }
                        Some(e) if e.expires_at != key.expires_at => {
                            if ledger.set_expiry(uid, key.expires_at, now) {
                                self.stats.expiry_changes += 1;
                                Stage::Write {
                                    ledger,
                                    version,
                                    then: Box::new(Stage::Done),
                                }
                            } else {
                                unreachable!("entry is live")
                            }
                        }
                        Some(_) => {
                            let e = entry(&key.name, key.expires_at);
                            assert_eq!(
                                ledger.admit(uid, e, self.limit, now),
                                Admission::AlreadyAdmitted
                            );
                            self.stats.already += 1;
                            // Mint is create-if-absent, like creating a Secret.
                            Stage::Mint
                        }
                        None if key.expires_at.is_some_and(|at| at <= now) => {
                            // Expired before admission: phase Expired, nothing to do.
                            assert!(!self.secrets.contains(uid));
                            Stage::MarkExpired
                        }
                        None => {
                            let me = waiting(key.created, &key.namespace, &key.name, uid);
                            let free = self.limit.saturating_sub(ledger.live(now));
                            // With no free slot, admit reports Full; with
                            // some, older waiting keys go first.
                            if free > 0 && !may_take_slot(&me, &self.waiting_list(&ledger), free) {
                                self.stats.unfair += 1;
                                return Stage::Done;
                            }
                            let e = Entry {
                                namespace: key.namespace.clone(),
                                name: key.name.clone(),
                                admitted_at: now,
                                expires_at: key.expires_at,
                            };
                            match ledger.admit(uid, e, self.limit, now) {
                                Admission::Admitted => {
                                    self.stats.admitted += 1;
                                    Stage::Write {
                                        ledger,
                                        version,
                                        then: Box::new(Stage::Mint),
                                    }
                                }
                                Admission::Full { live, limit } => {
                                    assert!(live >= limit);
                                    self.stats.full += 1;
                                    Stage::Done
                                }
                                Admission::AlreadyAdmitted => unreachable!("uid not in ledger"),
                            }
                        }
                    }
                }
                Stage::Write {
                    ledger,
                    version,
                    then,
                } => {
                    if self.protocol.cas && version != self.version {
                        self.stats.conflicts += 1;
                        return Stage::Read;
                    }
                    self.ledger = ledger;
                    self.version += 1;
                    *then
                }
                Stage::Mint => {
                    if self.secrets.insert(uid.to_owned()) {
                        self.stats.minted += 1;
                    }
                    Stage::Done
                }
                Stage::MarkExpired => {
                    if let Some(k) = self.keys.get_mut(uid) {
                        k.expired = true;
                    }
                    Stage::DeleteSecret { finalize: false }
                }
                Stage::DeleteSecret { finalize } => {
                    self.secrets.remove(uid);
                    Stage::Release { finalize }
                }
                Stage::Release { finalize } => {
                    let then = if finalize {
                        Stage::Finalize
                    } else {
                        Stage::Done
                    };
                    let mut ledger = self.ledger.clone();
                    if ledger.release(uid) {
                        self.stats.released += 1;
                        Stage::Write {
                            ledger,
                            version: self.version,
                            then: Box::new(then),
                        }
                    } else {
                        then
                    }
                }
                Stage::Finalize => {
                    self.keys.remove(uid);
                    Stage::Done
                }
                other => unreachable!("GC stage in a key task: {}", stage_name(&other)),
            }
        }

        fn step_gc(&mut self, stage: Stage) -> Stage {
            let read = |w: &Self| Some((w.ledger.clone(), w.version));
            let list = |w: &Self| Some(w.keys.keys().cloned().collect::<HashSet<_>>());
            match stage {
                Stage::GcFirst => {
                    if self.protocol.gc_reads_ledger_first {
                        Stage::GcSecond {
                            ledger: read(self),
                            known: None,
                        }
                    } else {
                        Stage::GcSecond {
                            ledger: None,
                            known: list(self),
                        }
                    }
                }
                Stage::GcSecond { ledger, known } => {
                    let (Some((mut ledger, version)), Some(known)) =
                        (ledger.or_else(|| read(self)), known.or_else(|| list(self)))
                    else {
                        unreachable!("one of the two was read in GcFirst")
                    };
                    let dropped = ledger.retain_known(&known);
                    if dropped.is_empty() {
                        return Stage::Done;
                    }
                    self.stats.gc_dropped += dropped.len();
                    Stage::Write {
                        ledger,
                        version,
                        then: Box::new(Stage::Done),
                    }
                }
                Stage::Write {
                    ledger,
                    version,
                    then,
                } => {
                    if self.protocol.cas && version != self.version {
                        self.stats.conflicts += 1;
                        return Stage::Done; // GC simply runs again later
                    }
                    self.ledger = ledger;
                    self.version += 1;
                    *then
                }
                other => unreachable!("key stage in the GC task: {}", stage_name(&other)),
            }
        }

        /// The guarantee, checked after every step.
        fn check(&mut self) -> Result<(), String> {
            let now = self.now;
            // Every existing key material is accounted for in the ledger...
            for uid in &self.secrets {
                if self.ledger.get(uid).is_none() {
                    return Err(format!("secret {uid} exists without a ledger entry"));
                }
            }
            // ...so non-expired minted keys <= live entries <= limit.
            let minted_live = self
                .secrets
                .iter()
                .filter(|uid| self.ledger.get(uid).is_some_and(|e| e.is_live(now)))
                .count();
            let live = self.ledger.live(now);
            if minted_live > self.limit || live > self.limit {
                return Err(format!(
                    "{minted_live} minted and {live} admitted live keys, limit {}",
                    self.limit
                ));
            }
            // A slot freed by expiry is never used twice: once any other
            // write has happened after an entry expired, it stays expired.
            // The one revival allowed is a set_expiry decided while the entry
            // was live whose write lands just after the old expiry: its CAS
            // proves it is the first write since then, so nobody can have
            // taken the slot meanwhile.
            for (uid, e) in self.ledger.iter() {
                if !e.is_live(now) {
                    self.seen_expired
                        .entry(uid.to_owned())
                        .or_insert(self.version);
                } else if let Some(&seen_at) = self.seen_expired.get(uid) {
                    if self.version != seen_at + 1 {
                        return Err(format!("expired entry {uid} became live again"));
                    }
                    self.seen_expired.remove(uid);
                    self.stats.late_extensions += 1;
                }
            }
            Ok(())
        }
    }

    fn stage_name(s: &Stage) -> &'static str {
        match s {
            Stage::Read => "Read",
            Stage::Write { .. } => "Write",
            Stage::Mint => "Mint",
            Stage::MarkExpired => "MarkExpired",
            Stage::DeleteSecret { .. } => "DeleteSecret",
            Stage::Release { .. } => "Release",
            Stage::Finalize => "Finalize",
            Stage::GcFirst => "GcFirst",
            Stage::GcSecond { .. } => "GcSecond",
            Stage::Done => "Done",
        }
    }

    /// Runs one random schedule; `Err` describes the first violation.
    fn simulate(seed: u64, steps: usize, protocol: Protocol) -> Result<Stats, String> {
        let mut rng = Rng::new(seed);
        let limit = usize::try_from(rng.below(5)).expect("fits"); // 0..=4, incl. 0
        let mut w = World::new(protocol, limit);
        let mut tasks: Vec<Task> = Vec::new();

        for step in 0..steps {
            let roll = rng.below(100);
            match roll {
                // Time passes (sometimes exactly onto an expiry boundary,
                // since expiries are whole seconds like creation times).
                0..=9 => w.now += i64::try_from(rng.below(3_001)).expect("fits"),
                // A user creates an ApiKey.
                10..=16 => {
                    w.next_uid += 1;
                    let uid = format!("uid-{:04}", w.next_uid);
                    let ns = ["team-a", "team-b", "team-c"]
                        [usize::try_from(rng.below(3)).expect("fits")];
                    let secs = w.now / 1_000 * 1_000; // 1-second precision
                    let expires_at = if rng.chance(30) {
                        None
                    } else {
                        Some(secs + i64::try_from(rng.below(20) * 1_000).expect("fits"))
                    };
                    let key = Key {
                        namespace: ns.to_owned(),
                        name: format!("key-{}", rng.below(50)),
                        created: secs,
                        expires_at,
                        deleting: false,
                        expired: false,
                    };
                    w.keys.insert(uid, key);
                }
                // A user deletes one (finalizer pending).
                17..=23 => {
                    let uids: Vec<String> = w.keys.keys().cloned().collect();
                    if let Some(uid) = rng.pick(&uids)
                        && let Some(k) = w.keys.get_mut(uid)
                    {
                        k.deleting = true;
                    }
                }
                // A user changes spec.expiresAt (extend, shorten, remove, or
                // set into the past).
                24..=27 => {
                    let uids: Vec<String> = w.keys.keys().cloned().collect();
                    if let Some(uid) = rng.pick(&uids) {
                        let new = if rng.chance(25) {
                            None
                        } else {
                            let delta = i64::try_from(rng.below(25)).expect("fits") - 5;
                            Some(w.now / 1_000 * 1_000 + delta * 1_000)
                        };
                        if let Some(k) = w.keys.get_mut(uid) {
                            k.expires_at = new;
                        }
                    }
                }
                // An ApiKey vanishes without its finalizer (someone stripped
                // it) and Kubernetes' GC deletes its owned Secret: the ledger
                // entry leaks until the quota GC drops it. Only for keys with
                // no reconcile in flight, which otherwise could mint for a
                // vanished owner (Kubernetes' GC would remove that Secret,
                // but not atomically).
                28 => {
                    let busy: HashSet<&str> =
                        tasks.iter().filter_map(|t| t.uid.as_deref()).collect();
                    let idle: Vec<String> = w
                        .keys
                        .keys()
                        .filter(|u| !busy.contains(u.as_str()))
                        .cloned()
                        .collect();
                    if let Some(uid) = rng.pick(&idle) {
                        w.keys.remove(uid);
                        w.secrets.remove(uid);
                    }
                }
                // The operator restarts: every in-flight reconcile is lost
                // between two requests.
                29..=30 => tasks.clear(),
                // The quota GC starts.
                31..=33 => {
                    if !tasks.iter().any(|t| t.uid.is_none()) {
                        tasks.push(Task {
                            uid: None,
                            stage: Stage::GcFirst,
                        });
                    }
                }
                // A reconcile starts for a key with none in flight (the
                // controller runs at most one reconcile per object at a
                // time; different objects run concurrently).
                34..=54 => {
                    let busy: HashSet<&str> =
                        tasks.iter().filter_map(|t| t.uid.as_deref()).collect();
                    let idle: Vec<String> = w
                        .keys
                        .keys()
                        .filter(|u| !busy.contains(u.as_str()))
                        .cloned()
                        .collect();
                    if let Some(uid) = rng.pick(&idle) {
                        tasks.push(Task {
                            uid: Some(uid.clone()),
                            stage: Stage::Read,
                        });
                    }
                }
                // One in-flight task makes one request.
                _ => {
                    if !tasks.is_empty() {
                        let len = u64::try_from(tasks.len()).expect("fits");
                        let i = usize::try_from(rng.below(len)).expect("fits");
                        let mut task = tasks.swap_remove(i);
                        let stage = std::mem::replace(&mut task.stage, Stage::Done);
                        task.stage = match &task.uid {
                            Some(uid) => w.step_key(uid, stage),
                            None => w.step_gc(stage),
                        };
                        if !matches!(task.stage, Stage::Done) {
                            tasks.push(task);
                        }
                    }
                }
            }
            w.check()
                .map_err(|e| format!("seed {seed}, step {step}, limit {limit}: {e}"))?;
        }

        // Liveness: with no more interference, GC then reconcile every key
        // to completion, oldest first, until nothing changes. Then either
        // the quota is full or nobody is waiting.
        tasks.clear();
        let mut gc = Stage::GcFirst;
        while !matches!(gc, Stage::Done) {
            gc = w.step_gc(gc);
        }
        for _round in 0..3 {
            let mut uids: Vec<(Millis, String)> =
                w.keys.iter().map(|(u, k)| (k.created, u.clone())).collect();
            uids.sort();
            for (_, uid) in uids {
                let mut stage = Stage::Read;
                while !matches!(stage, Stage::Done) {
                    stage = w.step_key(&uid, stage);
                    w.check().map_err(|e| format!("seed {seed}, drain: {e}"))?;
                }
            }
        }
        let waiting = w.waiting_list(&w.ledger).len();
        if waiting > 0 && w.ledger.live(w.now) < limit {
            return Err(format!(
                "seed {seed}: {waiting} keys waiting with {} of {limit} slots used",
                w.ledger.live(w.now)
            ));
        }
        Ok(w.stats)
    }

    #[test]
    fn protocol_model_never_exceeds_the_limit() {
        let mut total = Stats::default();
        for seed in 0..300 {
            let s = simulate(seed, 3_000, CORRECT).unwrap_or_else(|e| panic!("{e}"));
            total.admitted += s.admitted;
            total.already += s.already;
            total.full += s.full;
            total.unfair += s.unfair;
            total.conflicts += s.conflicts;
            total.minted += s.minted;
            total.released += s.released;
            total.gc_dropped += s.gc_dropped;
            total.expiry_changes += s.expiry_changes;
            total.expiry_refused += s.expiry_refused;
            total.late_extensions += s.late_extensions;
        }
        // The schedules must actually reach the interesting cases, or the
        // test would pass vacuously.
        assert!(total.admitted > 1_000, "{total:?}");
        assert!(total.already > 100, "{total:?}");
        assert!(total.full > 1_000, "{total:?}");
        assert!(total.unfair > 100, "{total:?}");
        assert!(total.conflicts > 100, "{total:?}");
        assert!(total.minted > 1_000, "{total:?}");
        assert!(total.released > 1_000, "{total:?}");
        assert!(total.gc_dropped > 10, "{total:?}");
        assert!(total.expiry_changes > 100, "{total:?}");
        assert!(total.expiry_refused > 10, "{total:?}");
    }

    #[test]
    fn protocol_model_detects_blind_writes() {
        // Negative control: without the CAS, concurrent admissions overwrite
        // each other and the checks catch it.
        let broken = Protocol {
            cas: false,
            ..CORRECT
        };
        // Stops at the 10th failing schedule to keep the test fast.
        let failures = (0..300)
            .filter(|&seed| simulate(seed, 3_000, broken).is_err())
            .take(10)
            .count();
        assert_eq!(failures, 10, "only {failures} schedules failed");
    }

    #[test]
    fn protocol_model_detects_gc_listing_before_reading() {
        let broken = Protocol {
            gc_reads_ledger_first: false,
            ..CORRECT
        };
        assert!(
            (0..300).any(|seed| simulate(seed, 3_000, broken).is_err()),
            "no schedule failed"
        );
    }
}
