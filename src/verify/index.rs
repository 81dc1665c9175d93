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
    pub key_id: Option<String>,
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
        key_id: status.key_id.clone(),
        uid: api_key.uid().unwrap_or_default(),
        project: api_key.spec.project.clone(),
        owner: api_key.spec.owner.clone(),
        expires_at: api_key.spec.expires_at.as_ref().map(|t| t.0),
        phase: status.phase.unwrap_or(Phase::Pending),
        deleting: api_key.metadata.deletion_timestamp.is_some(),
    })
}

/// One indexed ApiKey. Project and owner strings are shared between the
/// keys that have them (an owner holds up to 25 keys per project); the rest
/// is inline, so a key costs its name's allocation and two map slots.
#[derive(Debug)]
pub struct Entry {
    pub api_key: Arc<str>,
    pub uid: Uid,
    pub project: Arc<str>,
    pub owner: Arc<str>,
    /// From `status.keyId` (None when that is not a key id): the id of the
    /// key with this hash, so a valid key's answer needs no second hash.
    pub key_id: Option<KeyIdText>,
    pub expires_at: Option<Timestamp>,
    pub phase: Phase,
    pub deleting: bool,
}

/// An ApiKey's UID: the 16 bytes of the UUID the API server assigns, or the
/// text of anything else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uid {
    Uuid([u8; 16]),
    Other(Box<str>),
}

impl Uid {
    fn new(text: String) -> Uid {
        parse_uuid(&text).map_or_else(|| Uid::Other(text.into_boxed_str()), Uid::Uuid)
    }
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
        return None;
    }
    let mut digits = bytes.iter().filter(|&&b| b != b'-');
    let mut out = [0u8; 16];
    for byte in &mut out {
        let (hi, lo) = (digits.next()?, digits.next()?);
        let digit = |c: u8| hex_digit(c.to_ascii_lowercase());
        *byte = (digit(*hi)? << 4) | digit(*lo)?;
    }
    Some(out)
}

/// A key id (`km_` and 12 base62 characters) as its 15 ASCII bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyIdText([u8; 15]);

impl KeyIdText {
    fn parse(text: &str) -> Option<KeyIdText> {
        let bytes: [u8; 15] = text.as_bytes().try_into().ok()?;
        let well_formed = text.starts_with(crate::apikey::key::KEY_ID_PREFIX)
            && bytes[3..].iter().all(u8::is_ascii_alphanumeric);
        well_formed.then_some(KeyIdText(bytes))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        // Checked ASCII in `parse`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// What a key hash finds.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a Entry),
    NotFound,
    Contested,
}

/// The index: entries by key hash (to verify) and the hash of each ApiKey
/// by name (to apply changes). Two ApiKeys with one hash cannot come from
/// keymint (each key is 256 random bits) but can be written by hand into a
/// status; then the key verifies as nobody's rather than as either's.
#[derive(Debug, Default)]
pub struct Index {
    by_hash: HashMap<KeyHash, Entry>,
    by_name: HashMap<Arc<str>, KeyHash>,
    /// Further claimants of a hash already in `by_hash`.
    contested: HashMap<KeyHash, Vec<Entry>>,
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
        if !self.contested.is_empty() && self.contested.contains_key(hash) {
            return Lookup::Contested;
        }
        self.by_hash
            .get(hash)
            .map_or(Lookup::NotFound, Lookup::Found)
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
            uid: Uid::new(p.uid),
            project: self.shared(p.project),
            owner: self.shared(p.owner),
            key_id: p.key_id.as_deref().and_then(KeyIdText::parse),
            expires_at: p.expires_at,
            phase: p.phase,
            deleting: p.deleting,
        };
        self.by_name.insert(name, p.hash);
        match self.by_hash.entry(p.hash) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(entry);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.contested.entry(p.hash).or_default().push(entry);
            }
        }
    }

    /// Forgets the ApiKey `name` (deleted, or no longer verifiable).
    pub fn remove(&mut self, name: &str) {
        let Some(hash) = self.by_name.remove(name) else {
            return;
        };
        let Some(others) = self.contested.get_mut(&hash) else {
            self.by_hash.remove(&hash);
            return;
        };
        if let Some(at) = others.iter().position(|e| &*e.api_key == name) {
            others.swap_remove(at);
        } else if let Some(next) = others.pop() {
            self.by_hash.insert(hash, next);
        }
        if others.is_empty() {
            self.contested.remove(&hash);
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
            key_id: None,
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
                show_once: None,
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
        for (gone, left) in [("ns/a", "ns/b"), ("ns/b", "ns/a")] {
            let mut index = Index::default();
            index.apply("ns/a", Some(projection([7; 32], "p", Phase::Active)));
            index.apply("ns/b", Some(projection([7; 32], "q", Phase::Active)));
            assert!(matches!(index.lookup(&[7; 32]), Lookup::Contested));
            index.remove(gone);
            let Lookup::Found(entry) = index.lookup(&[7; 32]) else {
                panic!("one claim left");
            };
            assert_eq!(&*entry.api_key, left);
            index.remove(left);
            assert!(matches!(index.lookup(&[7; 32]), Lookup::NotFound));
            assert!(index.is_empty());
        }
    }

    #[test]
    fn uids_and_key_ids_are_kept_inline_when_well_formed() {
        let uid = "0B7C6E2A-1111-4222-8333-444455556666";
        let Uid::Uuid(bytes) = Uid::new(uid.into()) else {
            panic!("a UUID");
        };
        assert_eq!(bytes[..4], [0x0b, 0x7c, 0x6e, 0x2a]);
        assert_eq!(
            Uid::new("not-a-uuid".into()),
            Uid::Other("not-a-uuid".into())
        );
        assert_eq!(
            KeyIdText::parse("km_Sdz7gm2XJHwC").map(|k| k.as_str().to_owned()),
            Some("km_Sdz7gm2XJHwC".into())
        );
        for bad in [
            "km_short",
            "kmk_Sdz7gm2XJHw",
            "km_Sdz7gm2XJH-C",
            "km_Sdz7gm2XJHwéC",
        ] {
            assert_eq!(KeyIdText::parse(bad), None, "{bad}");
        }
        // What keeps 100,000 keys in a few MiB: an entry is a few words.
        assert!(
            std::mem::size_of::<Entry>() <= 136,
            "{}",
            std::mem::size_of::<Entry>()
        );
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
