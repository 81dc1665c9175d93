//! The verifier's index: for every Active ApiKey, a lean entry (who, which
//! project, until when, whether it is being deleted), reachable from the 32
//! bytes of the key's SHA-256. Built from ApiKeys only — never from a
//! Secret. Pure.
//!
//! Only an Active ApiKey claims a hash. An ApiKey in any other phase is not
//! indexed at all, so whatever its status says (a hash written there by
//! hand, or copied from a tenant's Secret) can never contest, and so
//! silence, another ApiKey's key.
//!
//! Memory is the constraint (100,000 keys in a few tens of MiB): entries
//! live in one vector, packed (owner and project as numbers into a table of
//! the strings, shared by every key that has them); two hash tables of
//! 4-byte positions find an entry by key hash (to verify) and by name (to
//! apply a change).
//!
//! Watch resets are explicit: a relist ([`Change::Reset`] .. [`Change::ListDone`])
//! builds a fresh index beside the live one and swaps it in whole, so a key
//! deleted while the watch was disconnected disappears, and requests are
//! answered from the old index until the new one is complete.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;
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

/// What the verifier takes of one ApiKey (the lean ApiKey of
/// `apikey::lean`, as the watch delivers it) before the object is dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    pub hash: KeyHash,
    pub key_id: Option<String>,
    pub project: String,
    pub owner: String,
    pub expires_at: Option<Timestamp>,
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

/// The projection of `api_key`; None when it is not Active or has no
/// (readable) key hash, so there is nothing a presented key could match.
/// An Active ApiKey being deleted is projected: it answers "revoked" until
/// it is gone.
#[must_use]
pub fn project(api_key: &ApiKey) -> Option<Projection> {
    let status = api_key.status.as_ref()?;
    if status.phase != Some(Phase::Active) {
        return None;
    }
    let hash = parse_key_hash(status.key_hash.as_deref()?)?;
    Some(Projection {
        hash,
        key_id: status.key_id.clone(),
        project: api_key.spec.project.clone(),
        owner: api_key.spec.owner.clone(),
        expires_at: api_key.spec.expires_at.as_ref().map(|t| t.0),
        deleting: api_key.metadata.deletion_timestamp.is_some(),
    })
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

/// One indexed ApiKey, packed: a position in [`Strings`] stands for its
/// project and its owner (an owner holds up to 25 keys per project).
#[derive(Debug)]
struct Entry {
    hash: KeyHash,
    api_key: Box<str>,
    project: u32,
    owner: u32,
    /// From `status.keyId` (None when that is not a key id): the id of the
    /// key with this hash, so a valid key's answer needs no second hash.
    key_id: Option<KeyIdText>,
    expires_at: Option<Timestamp>,
    deleting: bool,
}

/// An indexed ApiKey as [`Index::lookup`] finds it.
#[derive(Debug)]
pub struct Found<'a> {
    pub api_key: &'a str,
    pub project: &'a Arc<str>,
    pub owner: &'a Arc<str>,
    pub key_id: Option<KeyIdText>,
    pub expires_at: Option<Timestamp>,
    pub deleting: bool,
}

/// A second Active ApiKey claiming a hash that one already holds: the key
/// verifies for neither. keymint never mints that (a key is 256 random
/// bits), so one of the two statuses was written by someone else.
#[derive(Debug, PartialEq, Eq)]
pub struct Contest {
    /// `namespace/name` of the ApiKey that held the hash first.
    pub holder: String,
    /// `namespace/name` of the ApiKey that claims it too.
    pub claimant: String,
    /// The key id recorded with the hash (public, safe to log).
    pub key_id: Option<KeyIdText>,
}

/// What a key hash finds.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(Found<'a>),
    NotFound,
    Contested,
}

/// Project and owner strings, stored once and named by position. Never
/// shrinks between relists, which start from an empty index.
#[derive(Debug, Default)]
struct Strings {
    all: Vec<Arc<str>>,
    position: HashMap<Arc<str>, u32>,
}

impl Strings {
    fn intern(&mut self, s: String) -> u32 {
        if let Some(&at) = self.position.get(s.as_str()) {
            return at;
        }
        let at = u32::try_from(self.all.len()).unwrap_or(u32::MAX);
        let s: Arc<str> = Arc::from(s);
        self.all.push(s.clone());
        self.position.insert(s, at);
        at
    }

    fn get(&self, at: u32) -> &Arc<str> {
        &self.all[at as usize]
    }
}

/// The index. Two Active ApiKeys with one hash cannot come from keymint
/// (each key is 256 random bits) but can be written by hand into a status;
/// then the key verifies as nobody's rather than as either's (a
/// [`Contest`], logged and counted by the feed).
#[derive(Debug, Default)]
pub struct Index {
    entries: Vec<Entry>,
    /// Positions in `entries`, by key hash.
    by_hash: HashTable<u32>,
    /// Positions in `entries`, by ApiKey name.
    by_name: HashTable<u32>,
    /// Further claimants of a hash already in `entries`.
    contested: HashMap<KeyHash, Vec<Entry>>,
    strings: Strings,
    /// Names are chosen by whoever creates ApiKeys: hashed with a random
    /// seed. Key hashes are SHA-256 output and are their own hash.
    seed: RandomState,
}

/// A key hash's first 8 bytes: uniformly distributed already.
fn hash_of_hash(hash: &KeyHash) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

fn position(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

impl Index {
    /// Number of indexed ApiKeys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len() + self.contested.values().map(Vec::len).sum::<usize>()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[must_use]
    pub fn lookup(&self, hash: &KeyHash) -> Lookup<'_> {
        if !self.contested.is_empty() && self.contested.contains_key(hash) {
            return Lookup::Contested;
        }
        let entries = &self.entries;
        let found = self
            .by_hash
            .find(hash_of_hash(hash), |&at| entries[at as usize].hash == *hash);
        let Some(&at) = found else {
            return Lookup::NotFound;
        };
        let e = &entries[at as usize];
        Lookup::Found(Found {
            api_key: &e.api_key,
            project: self.strings.get(e.project),
            owner: self.strings.get(e.owner),
            key_id: e.key_id,
            expires_at: e.expires_at,
            deleting: e.deleting,
        })
    }

    /// Hashes two or more Active ApiKeys claim (each verifies for nobody).
    #[must_use]
    pub fn contested_hashes(&self) -> usize {
        self.contested.len()
    }

    /// Records what the watch says about the ApiKey `name`: its projection,
    /// or None when it has nothing to verify (any earlier entry goes). A
    /// claim on a hash another ApiKey holds is told, for the log.
    pub fn apply(&mut self, name: &str, projection: Option<Projection>) -> Option<Contest> {
        self.remove(name);
        let p = projection?;
        let entry = Entry {
            hash: p.hash,
            api_key: name.into(),
            project: self.strings.intern(p.project),
            owner: self.strings.intern(p.owner),
            key_id: p.key_id.as_deref().and_then(KeyIdText::parse),
            expires_at: p.expires_at,
            deleting: p.deleting,
        };
        let Some(at) = self.find_hash(&entry.hash) else {
            self.insert(entry);
            return None;
        };
        let contest = Contest {
            holder: self.entries[at].api_key.to_string(),
            claimant: name.to_owned(),
            key_id: entry.key_id.or(self.entries[at].key_id),
        };
        self.contested.entry(entry.hash).or_default().push(entry);
        Some(contest)
    }

    /// Forgets the ApiKey `name` (deleted, or no longer verifiable).
    pub fn remove(&mut self, name: &str) {
        let Some(at) = self.find_name(name) else {
            self.remove_contested(name);
            return;
        };
        let gone = self.take(at);
        // A hash claimed twice passes to a remaining claimant.
        if let Some(others) = self.contested.get_mut(&gone.hash) {
            let next = others.pop();
            if others.is_empty() {
                self.contested.remove(&gone.hash);
            }
            if let Some(next) = next {
                self.insert(next);
            }
        }
    }

    /// Gives back what a list's growth left over (the vector and tables
    /// double as they grow).
    pub fn shrink_to_fit(&mut self) {
        let Index {
            entries,
            by_hash,
            by_name,
            seed,
            ..
        } = self;
        entries.shrink_to_fit();
        by_hash.shrink_to_fit(|&at| hash_of_hash(&entries[at as usize].hash));
        by_name.shrink_to_fit(|&at| seed.hash_one(&*entries[at as usize].api_key));
    }

    fn remove_contested(&mut self, name: &str) {
        let Some(hash) = self
            .contested
            .iter()
            .find(|(_, others)| others.iter().any(|e| &*e.api_key == name))
            .map(|(hash, _)| *hash)
        else {
            return;
        };
        if let Some(others) = self.contested.get_mut(&hash) {
            others.retain(|e| &*e.api_key != name);
            if others.is_empty() {
                self.contested.remove(&hash);
            }
        }
    }

    fn find_hash(&self, hash: &KeyHash) -> Option<usize> {
        let entries = &self.entries;
        self.by_hash
            .find(hash_of_hash(hash), |&at| entries[at as usize].hash == *hash)
            .map(|&at| at as usize)
    }

    fn find_name(&self, name: &str) -> Option<usize> {
        let entries = &self.entries;
        self.by_name
            .find(self.seed.hash_one(name), |&at| {
                &*entries[at as usize].api_key == name
            })
            .map(|&at| at as usize)
    }

    fn insert(&mut self, entry: Entry) {
        let at = position(self.entries.len());
        let (by_hash, by_name) = (
            hash_of_hash(&entry.hash),
            self.seed.hash_one(&*entry.api_key),
        );
        self.entries.push(entry);
        let Index {
            entries,
            by_hash: hashes,
            by_name: names,
            seed,
            ..
        } = self;
        hashes.insert_unique(by_hash, at, |&i| hash_of_hash(&entries[i as usize].hash));
        names.insert_unique(by_name, at, |&i| {
            seed.hash_one(&*entries[i as usize].api_key)
        });
    }

    /// Removes the entry at `at`; the last entry moves into its place, and
    /// its table slots follow it (no insert, so no rehash sees a stale
    /// position).
    fn take(&mut self, at: usize) -> Entry {
        let e = &self.entries[at];
        let (h, n) = (hash_of_hash(&e.hash), self.seed.hash_one(&*e.api_key));
        let here = position(at);
        if let Ok(slot) = self.by_hash.find_entry(h, |&i| i == here) {
            slot.remove();
        }
        if let Ok(slot) = self.by_name.find_entry(n, |&i| i == here) {
            slot.remove();
        }
        let moved_from = position(self.entries.len() - 1);
        let gone = self.entries.swap_remove(at);
        if let Some(moved) = self.entries.get(at) {
            let (h, n) = (
                hash_of_hash(&moved.hash),
                self.seed.hash_one(&*moved.api_key),
            );
            for slot in [
                self.by_hash.find_mut(h, |&i| i == moved_from),
                self.by_name.find_mut(n, |&i| i == moved_from),
            ]
            .into_iter()
            .flatten()
            {
                *slot = here;
            }
        }
        gone
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

/// What one change did, for the feed to log and count.
#[derive(Debug, Default, PartialEq)]
pub struct Observed {
    /// A list has just completed: the index is synced.
    pub listed: bool,
    /// The change made a hash contested.
    pub contest: Option<Contest>,
}

impl Indexer {
    /// Applies `change` to `live`.
    pub fn observe(&mut self, change: Change, live: &RwLock<Index>) -> Observed {
        let contest = match change {
            Change::Reset => {
                self.rebuilding = Some(Index::default());
                None
            }
            Change::Listed(name, projection) => self
                .rebuilding
                .get_or_insert_with(Index::default)
                .apply(&name, projection),
            Change::ListDone => {
                let mut fresh = self.rebuilding.take().unwrap_or_default();
                fresh.shrink_to_fit();
                // The old index is dropped after the lock is released.
                let _old = std::mem::replace(&mut *write(live), fresh);
                return Observed {
                    listed: true,
                    contest: None,
                };
            }
            Change::Applied(name, projection) => write(live).apply(&name, projection),
            Change::Deleted(name) => {
                write(live).remove(&name);
                None
            }
        };
        Observed {
            listed: false,
            contest,
        }
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

    pub(crate) fn projection(hash: KeyHash, project: &str) -> Projection {
        Projection {
            hash,
            key_id: None,
            project: project.into(),
            owner: "alice@example.com".into(),
            expires_at: None,
            deleting: false,
        }
    }

    /// An ApiKey with no status: never minted.
    fn bare_api_key() -> ApiKey {
        ApiKey::new(
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
        )
    }

    /// An ApiKey of `phase` whose status carries `hash` (and `key_id`), as
    /// anyone allowed to write the status subresource could make it.
    fn api_key_with(phase: Option<Phase>, hash: &str, deleting: bool) -> ApiKey {
        let mut api_key = bare_api_key();
        api_key.status = Some(crate::apikey::ApiKeyStatus {
            phase,
            key_hash: Some(hash.into()),
            key_id: Some("km_Sdz7gm2XJHwC".into()),
            ..Default::default()
        });
        if deleting {
            api_key.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
            );
        }
        api_key
    }

    fn found<'a>(index: &'a Index, hash: &KeyHash) -> Found<'a> {
        match index.lookup(hash) {
            Lookup::Found(found) => found,
            other => panic!("{hash:?} not found: {other:?}"),
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
        assert_eq!(project(&bare_api_key()), None);
    }

    /// Only an Active ApiKey claims a hash: one in any other phase (say,
    /// SecretTampered with a victim's hash in its status) is not indexed,
    /// so it can never contest, and silence, the victim's key.
    #[test]
    fn only_an_active_api_key_is_indexed() {
        let minted = key::mint().expect("mint");
        let hash = key::hash(&minted);
        let active = project(&api_key_with(Some(Phase::Active), &hash, false));
        assert_eq!(active.map(|p| p.hash), Some(digest(&minted)));
        for phase in [
            None,
            Some(Phase::Pending),
            Some(Phase::Rejected),
            Some(Phase::Conflict),
            Some(Phase::SecretLost),
            Some(Phase::SecretTampered),
            Some(Phase::Expired),
        ] {
            assert_eq!(
                project(&api_key_with(phase, &hash, false)),
                None,
                "{phase:?}"
            );
        }
        // Being deleted, it stays indexed, to answer "revoked".
        let deleting = project(&api_key_with(Some(Phase::Active), &hash, true));
        assert!(deleting.is_some_and(|p| p.deleting));
    }

    #[test]
    fn apply_replaces_and_remove_forgets() {
        let mut index = Index::default();
        index.apply("ns/a", Some(projection([1; 32], "p")));
        index.apply("ns/a", Some(projection([2; 32], "p")));
        assert!(matches!(index.lookup(&[1; 32]), Lookup::NotFound));
        assert_eq!(found(&index, &[2; 32]).api_key, "ns/a");
        index.apply("ns/a", None);
        assert!(index.is_empty());
        assert!(matches!(index.lookup(&[2; 32]), Lookup::NotFound));
    }

    #[test]
    fn a_hash_claimed_twice_is_nobodys_until_one_claim_goes() {
        for (gone, left) in [("ns/a", "ns/b"), ("ns/b", "ns/a")] {
            let mut index = Index::default();
            let mut first = projection([7; 32], "p");
            first.key_id = Some("km_Sdz7gm2XJHwC".into());
            assert_eq!(index.apply("ns/a", Some(first)), None);
            let contest = index.apply("ns/b", Some(projection([7; 32], "q")));
            assert_eq!(
                contest,
                Some(Contest {
                    holder: "ns/a".into(),
                    claimant: "ns/b".into(),
                    key_id: KeyIdText::parse("km_Sdz7gm2XJHwC"),
                })
            );
            assert_eq!((index.len(), index.contested_hashes()), (2, 1));
            assert!(matches!(index.lookup(&[7; 32]), Lookup::Contested));
            index.remove(gone);
            assert_eq!(index.contested_hashes(), 0);
            assert_eq!(found(&index, &[7; 32]).api_key, left);
            index.remove(left);
            assert!(matches!(index.lookup(&[7; 32]), Lookup::NotFound));
            assert!(index.is_empty());
            assert_eq!(index.len(), 0);
        }
    }

    #[test]
    fn key_ids_are_kept_inline_when_well_formed() {
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
        // What keeps 100,000 keys in a few MiB: an entry is a few words
        // (and its name's allocation), a table slot is 4 bytes.
        assert!(
            std::mem::size_of::<Entry>() <= 104,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn owners_and_projects_are_stored_once() {
        let mut index = Index::default();
        index.apply("ns/a", Some(projection([1; 32], "p")));
        index.apply("ns/b", Some(projection([2; 32], "p")));
        let (a, b) = (found(&index, &[1; 32]), found(&index, &[2; 32]));
        assert!(Arc::ptr_eq(a.owner, b.owner));
        assert!(Arc::ptr_eq(a.project, b.project));
    }

    /// Many applies and removes in random order agree with a plain map of
    /// name → projection: the moves inside the packed vector lose nothing.
    #[test]
    fn agrees_with_a_plain_map_under_random_changes() {
        use rand::{RngExt as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut index = Index::default();
        let mut model: HashMap<String, KeyHash> = HashMap::new();
        for step in 0..20_000 {
            let name = format!("ns/k{}", rng.random_range(0..300));
            if rng.random_bool(0.35) {
                index.remove(&name);
                model.remove(&name);
            } else {
                let mut hash = [0u8; 32];
                rng.fill(&mut hash[..]);
                index.apply(&name, Some(projection(hash, "p")));
                model.insert(name, hash);
            }
            if step % 1000 == 0 {
                index.shrink_to_fit();
            }
            assert_eq!(index.len(), model.len());
        }
        for (name, hash) in &model {
            assert_eq!(found(&index, hash).api_key, name);
        }
    }

    #[test]
    fn a_relist_swaps_in_a_fresh_index_so_keys_deleted_meanwhile_disappear() {
        let live = RwLock::new(Index::default());
        let mut indexer = Indexer::default();
        let listed = |n: &str, b: u8| Change::Listed(n.into(), Some(projection([b; 32], "p")));
        assert_eq!(indexer.observe(Change::Reset, &live), Observed::default());
        indexer.observe(listed("ns/a", 1), &live);
        indexer.observe(listed("ns/b", 2), &live);
        assert!(
            read(&live).is_empty(),
            "the live index waits for the whole list"
        );
        assert!(indexer.observe(Change::ListDone, &live).listed);
        assert_eq!(read(&live).len(), 2);

        // The watch drops; ns/a is deleted meanwhile; the relist lacks it.
        indexer.observe(Change::Reset, &live);
        indexer.observe(listed("ns/b", 2), &live);
        assert_eq!(read(&live).len(), 2, "answers from the old index meanwhile");
        indexer.observe(Change::ListDone, &live);
        assert!(matches!(read(&live).lookup(&[1; 32]), Lookup::NotFound));
        assert!(matches!(read(&live).lookup(&[2; 32]), Lookup::Found(_)));

        indexer.observe(
            Change::Applied("ns/c".into(), Some(projection([3; 32], "p"))),
            &live,
        );
        indexer.observe(Change::Deleted("ns/b".into()), &live);
        assert!(matches!(read(&live).lookup(&[3; 32]), Lookup::Found(_)));
        assert!(matches!(read(&live).lookup(&[2; 32]), Lookup::NotFound));
    }

    #[test]
    fn a_contest_is_told_whether_listed_or_applied() {
        let live = RwLock::new(Index::default());
        let mut indexer = Indexer::default();
        let claim = |n: &str| Some(projection([9; 32], n));
        indexer.observe(Change::Reset, &live);
        indexer.observe(Change::Listed("ns/a".into(), claim("p")), &live);
        let listed = indexer.observe(Change::Listed("ns/b".into(), claim("p")), &live);
        assert_eq!(listed.contest.map(|c| c.claimant), Some("ns/b".into()));
        indexer.observe(Change::ListDone, &live);
        assert_eq!(read(&live).contested_hashes(), 1);
        let applied = indexer.observe(Change::Applied("ns/c".into(), claim("p")), &live);
        assert_eq!(applied.contest.map(|c| c.holder), Some("ns/a".into()));
        assert_eq!(read(&live).contested_hashes(), 1, "one hash, three claims");
        indexer.observe(Change::Deleted("ns/a".into()), &live);
        indexer.observe(Change::Deleted("ns/b".into()), &live);
        assert_eq!(read(&live).contested_hashes(), 0);
        assert!(matches!(read(&live).lookup(&[9; 32]), Lookup::Found(_)));
    }
}
