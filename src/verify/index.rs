//! The verifier's index: for every ApiKey that has a key hash, a lean
//! projection (who, which project, until when, in which phase, whether it is
//! being deleted), reachable from the 32 bytes of the key's SHA-256. Built
//! from ApiKeys only — never from a Secret. Pure.
//!
//! Watch resets are explicit: a relist ([`Change::Reset`] .. [`Change::ListDone`])
//! builds a fresh index beside the live one and swaps it in whole, so a key
//! deleted while the watch was disconnected disappears, and requests are
//! answered from the old index until the new one is complete.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use kube::ResourceExt as _;
use sha2::{Digest as _, Sha256};

use crate::apikey::key::MintedKey;
use crate::apikey::{ApiKey, Phase};

/// SHA-256 of a key's full text, as bytes: half the size of its hex form.
pub type KeyHash = [u8; 32];

/// The tag of `status.keyHash` (see `crate::apikey::key::hash`).
const HASH_TAG: &str = "sha256:";

/// The hash of a presented (already parsed) key, as the index stores it.
#[must_use]
pub fn digest(key: &MintedKey) -> KeyHash {
    Sha256::digest(key.expose().as_bytes()).into()
}

/// `sha256:<64 lowercase hex>` as bytes; None for anything else.
#[must_use]
pub fn parse_key_hash(tagged: &str) -> Option<KeyHash> {
    let hex = tagged.strip_prefix(HASH_TAG)?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// What the verifier keeps of one ApiKey, read at the watch so the object
/// itself is dropped at once.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    pub hash: KeyHash,
    pub uid: String,
    pub project: String,
    pub owner: String,
    pub expires_at: Option<Timestamp>,
    pub phase: Phase,
    pub deleting: bool,
}

/// `namespace/name`: how the verifier names an ApiKey (and what it returns
/// in `X-Keymint-ApiKey`).
#[must_use]
pub fn object_name(object: &impl kube::Resource) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// The projection of `api_key`; None when it has no (readable) key hash,
/// so there is nothing a presented key could match.
#[must_use]
pub fn project(api_key: &ApiKey) -> Option<Projection> {
    let status = api_key.status.as_ref()?;
    let hash = parse_key_hash(status.key_hash.as_deref()?)?;
    Some(Projection {
        hash,
        uid: api_key.uid().unwrap_or_default(),
        project: api_key.spec.project.clone(),
        owner: api_key.spec.owner.clone(),
        expires_at: api_key.spec.expires_at.as_ref().map(|t| t.0),
        phase: status.phase.unwrap_or(Phase::Pending),
        deleting: api_key.metadata.deletion_timestamp.is_some(),
    })
}

/// One indexed ApiKey. Project and owner strings are shared between the
/// keys that have them (an owner holds up to 25 keys per project).
#[derive(Debug)]
pub struct Entry {
    pub api_key: Arc<str>,
    pub hash: KeyHash,
    pub uid: Box<str>,
    pub project: Arc<str>,
    pub owner: Arc<str>,
    pub expires_at: Option<Timestamp>,
    pub phase: Phase,
    pub deleting: bool,
}

/// Who claims a key hash. Two ApiKeys with one hash cannot come from
/// keymint (each key is 256 random bits) but can be written by hand into a
/// status; then the key verifies as nobody's rather than as either's.
#[derive(Debug)]
enum Claim {
    One(Arc<str>),
    Contested(Vec<Arc<str>>),
}

/// What a key hash finds.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a Entry),
    NotFound,
    Contested,
}

/// The index: ApiKeys by name (to apply changes) and by key hash (to verify).
#[derive(Debug, Default)]
pub struct Index {
    by_name: HashMap<Arc<str>, Entry>,
    by_hash: HashMap<KeyHash, Claim>,
    /// Project and owner strings, shared. Never shrinks between relists,
    /// which start from an empty index.
    strings: HashSet<Arc<str>>,
}

impl Index {
    /// Number of indexed ApiKeys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    #[must_use]
    pub fn lookup(&self, hash: &KeyHash) -> Lookup<'_> {
        match self.by_hash.get(hash) {
            None => Lookup::NotFound,
            Some(Claim::Contested(_)) => Lookup::Contested,
            Some(Claim::One(name)) => self
                .by_name
                .get(name)
                .map_or(Lookup::NotFound, Lookup::Found),
        }
    }

    /// Records what the watch says about the ApiKey `name`: its projection,
    /// or None when it has nothing to verify (any earlier entry goes).
    pub fn apply(&mut self, name: &str, projection: Option<Projection>) {
        self.remove(name);
        let Some(p) = projection else {
            return;
        };
        let name: Arc<str> = Arc::from(name);
        let entry = Entry {
            api_key: name.clone(),
            hash: p.hash,
            uid: p.uid.into_boxed_str(),
            project: self.shared(p.project),
            owner: self.shared(p.owner),
            expires_at: p.expires_at,
            phase: p.phase,
            deleting: p.deleting,
        };
        self.by_name.insert(name.clone(), entry);
        match self.by_hash.get_mut(&p.hash) {
            None => {
                self.by_hash.insert(p.hash, Claim::One(name));
            }
            Some(claim) => {
                let mut names = match std::mem::replace(claim, Claim::Contested(Vec::new())) {
                    Claim::One(other) => vec![other],
                    Claim::Contested(names) => names,
                };
                names.push(name);
                *claim = Claim::Contested(names);
            }
        }
    }

    /// Forgets the ApiKey `name` (deleted, or no longer verifiable).
    pub fn remove(&mut self, name: &str) {
        let Some(entry) = self.by_name.remove(name) else {
            return;
        };
        let Some(claim) = self.by_hash.get_mut(&entry.hash) else {
            return;
        };
        match claim {
            Claim::One(_) => {
                self.by_hash.remove(&entry.hash);
            }
            Claim::Contested(names) => {
                names.retain(|n| **n != *name);
                if let [only] = names.as_slice() {
                    *claim = Claim::One(only.clone());
                }
            }
        }
    }

    fn shared(&mut self, s: String) -> Arc<str> {
        if let Some(found) = self.strings.get(s.as_str()) {
            return found.clone();
        }
        let s: Arc<str> = Arc::from(s);
        self.strings.insert(s.clone());
        s
    }
}

/// What the ApiKey watch reports, already projected.
#[derive(Debug)]
pub enum Change {
    /// A (re)list starts: what follows until [`Change::ListDone`] is the
    /// whole set of ApiKeys.
    Reset,
    /// One ApiKey of the list.
    Listed(String, Option<Projection>),
    /// The list is complete.
    ListDone,
    /// An ApiKey was created or changed.
    Applied(String, Option<Projection>),
    /// An ApiKey is gone.
    Deleted(String),
}

/// Keeps the live index up to date with the watch, rebuilding it beside the
/// live one on every relist.
#[derive(Debug, Default)]
pub struct Indexer {
    rebuilding: Option<Index>,
}

impl Indexer {
    /// Applies `change` to `live`; true when a list has just completed (the
    /// index is synced).
    pub fn observe(&mut self, change: Change, live: &RwLock<Index>) -> bool {
        match change {
            Change::Reset => self.rebuilding = Some(Index::default()),
            Change::Listed(name, projection) => {
                self.rebuilding
                    .get_or_insert_with(Index::default)
                    .apply(&name, projection);
            }
            Change::ListDone => {
                let fresh = self.rebuilding.take().unwrap_or_default();
                // The old index is dropped after the lock is released.
                let _old = std::mem::replace(&mut *write(live), fresh);
                return true;
            }
            Change::Applied(name, projection) => write(live).apply(&name, projection),
            Change::Deleted(name) => write(live).remove(&name),
        }
        false
    }
}

/// The index for writing. A panic while holding the lock cannot leave it
/// half-changed in a way that matters (each change is one map operation),
/// so a poisoned lock is used as is.
pub fn write(live: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    live.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The index for reading (see [`write`] on poisoning).
pub fn read(live: &RwLock<Index>) -> std::sync::RwLockReadGuard<'_, Index> {
    live.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::apikey::key;

    pub(crate) fn projection(hash: KeyHash, project: &str, phase: Phase) -> Projection {
        Projection {
            hash,
            uid: "0b7c6e2a-1111-4222-8333-444455556666".into(),
            project: project.into(),
            owner: "alice@example.com".into(),
            expires_at: None,
            phase,
            deleting: false,
        }
    }

    #[test]
    fn the_stored_hash_and_the_presented_digest_agree() {
        let minted = key::mint().expect("mint");
        assert_eq!(parse_key_hash(&key::hash(&minted)), Some(digest(&minted)));
        assert_eq!(parse_key_hash("sha256:abc"), None);
        assert_eq!(parse_key_hash("sha256:"), None);
        let upper = key::hash(&minted)
            .to_uppercase()
            .replace("SHA256:", "sha256:");
        assert_eq!(parse_key_hash(&upper), None, "keymint writes lowercase");
        assert_eq!(parse_key_hash(&format!("md5:{}", "0".repeat(64))), None);
    }

    #[test]
    fn an_api_key_without_a_hash_is_not_indexed() {
        let api_key = ApiKey::new(
            "k",
            crate::apikey::ApiKeySpec {
                project: "p".into(),
                owner: "o".into(),
                description: None,
                expires_at: None,
                secret_name: None,
                secret_template: None,
            },
        );
        assert_eq!(project(&api_key), None);
    }

    #[test]
    fn apply_replaces_and_remove_forgets() {
        let mut index = Index::default();
        index.apply("ns/a", Some(projection([1; 32], "p", Phase::Pending)));
        index.apply("ns/a", Some(projection([2; 32], "p", Phase::Active)));
        assert!(matches!(index.lookup(&[1; 32]), Lookup::NotFound));
        let Lookup::Found(entry) = index.lookup(&[2; 32]) else {
            panic!("indexed");
        };
        assert_eq!((&*entry.api_key, entry.phase), ("ns/a", Phase::Active));
        index.apply("ns/a", None);
        assert!(index.is_empty());
        assert!(matches!(index.lookup(&[2; 32]), Lookup::NotFound));
    }

    #[test]
    fn a_hash_claimed_twice_is_nobodys_until_one_claim_goes() {
        let mut index = Index::default();
        index.apply("ns/a", Some(projection([7; 32], "p", Phase::Active)));
        index.apply("ns/b", Some(projection([7; 32], "q", Phase::Active)));
        assert!(matches!(index.lookup(&[7; 32]), Lookup::Contested));
        index.remove("ns/a");
        let Lookup::Found(entry) = index.lookup(&[7; 32]) else {
            panic!("one claim left");
        };
        assert_eq!(&*entry.api_key, "ns/b");
    }

    #[test]
    fn owners_and_projects_are_stored_once() {
        let mut index = Index::default();
        index.apply("ns/a", Some(projection([1; 32], "p", Phase::Active)));
        index.apply("ns/b", Some(projection([2; 32], "p", Phase::Active)));
        let (Lookup::Found(a), Lookup::Found(b)) = (index.lookup(&[1; 32]), index.lookup(&[2; 32]))
        else {
            panic!("indexed");
        };
        assert!(Arc::ptr_eq(&a.owner, &b.owner));
        assert!(Arc::ptr_eq(&a.project, &b.project));
    }

    #[test]
    fn a_relist_swaps_in_a_fresh_index_so_keys_deleted_meanwhile_disappear() {
        let live = RwLock::new(Index::default());
        let mut indexer = Indexer::default();
        let listed = |n: &str, b: u8| {
            Change::Listed(n.into(), Some(projection([b; 32], "p", Phase::Active)))
        };
        assert!(!indexer.observe(Change::Reset, &live));
        indexer.observe(listed("ns/a", 1), &live);
        indexer.observe(listed("ns/b", 2), &live);
        assert!(
            read(&live).is_empty(),
            "the live index waits for the whole list"
        );
        assert!(indexer.observe(Change::ListDone, &live));
        assert_eq!(read(&live).len(), 2);

        // The watch drops; ns/a is deleted meanwhile; the relist lacks it.
        indexer.observe(Change::Reset, &live);
        indexer.observe(listed("ns/b", 2), &live);
        assert_eq!(read(&live).len(), 2, "answers from the old index meanwhile");
        indexer.observe(Change::ListDone, &live);
        assert!(matches!(read(&live).lookup(&[1; 32]), Lookup::NotFound));
        assert!(matches!(read(&live).lookup(&[2; 32]), Lookup::Found(_)));

        indexer.observe(
            Change::Applied("ns/c".into(), Some(projection([3; 32], "p", Phase::Active))),
            &live,
        );
        indexer.observe(Change::Deleted("ns/b".into()), &live);
        assert!(matches!(read(&live).lookup(&[3; 32]), Lookup::Found(_)));
        assert!(matches!(read(&live).lookup(&[2; 32]), Lookup::NotFound));
    }
}
