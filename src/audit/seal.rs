//! The entries that explain where a stream starts — every `pruned` entry,
//! and entry 1 of a stream keymint started — sealed with keymint's audit
//! key. Pure: the key is handed in.
//!
//! A hash chain needs no secret, so whoever may write the segment
//! ConfigMaps could delete the oldest segments, through an exported
//! checkpoint, and append a `pruned` entry that vouches for what is left.
//! So those entries carry a seal: HMAC-SHA256, under a 32-byte key kept in
//! a Secret that writing ConfigMaps does not let one read, over the entry's
//! canonical line without the seal (so it binds the entry's seq, its link
//! and what it records). Only keymint can write one; verifying needs the
//! key (`keymint audit verify` reads the Secret).
//!
//! Entry 1 links to no earlier entry; sealed, it records that keymint
//! started this stream with no previous head (a first install, or the
//! stream or its namespace deleted), so a checkpoint of an earlier stream is
//! reported as "started over" rather than as an edit. Streams written
//! before seals existed have an unsealed entry 1, which claims nothing.
//!
//! The key is its own, not the provenance seal key: an auditor who reads it
//! can check prunings but cannot forge a minted key's provenance, and the
//! domain label keeps a seal of one kind from ever being a MAC of another.

use std::fmt;

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::audit::{Action, Entry};

/// Bytes in an audit key: the output size of SHA-256, as RFC 2104 advises.
pub const AUDIT_KEY_BYTES: usize = 32;

/// What every sealed message starts with.
const DOMAIN: &[u8] = b"keymint audit stream seal v1\0";

/// The seal's version tag: a later format gets another one.
const VERSION: &str = "v1:";

/// Bytes in an HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;

/// Whether keymint seals `entry`: a pruning, or the first entry of a stream.
pub fn carries_seal(entry: &Entry) -> bool {
    entry.action == Action::Pruned || entry.seq == 1
}

/// Why an audit key could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the audit key must be {AUDIT_KEY_BYTES} bytes, found {0}")]
pub struct WrongLength(pub usize);

/// The key that seals prunings and the start of a stream. No `Display`, `Clone` or
/// serde, and `Debug` prints nothing of it.
pub struct AuditKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    /// The key stored as `bytes`: exactly 32 of them, so that a truncated or
    /// edited key fails loudly instead of sealing weakly.
    pub fn from_bytes(bytes: &[u8]) -> Result<AuditKey, WrongLength> {
        if bytes.len() != AUDIT_KEY_BYTES {
            return Err(WrongLength(bytes.len()));
        }
        let mac = Hmac::<Sha256>::new_from_slice(bytes).map_err(|_| WrongLength(bytes.len()))?;
        Ok(AuditKey { mac })
    }

    /// `entry` with its seal set, if it [`carries_seal`] (others are
    /// returned as they are).
    pub fn seal(&self, mut entry: Entry) -> Entry {
        if carries_seal(&entry) {
            entry.seal = None;
            let tag = self.keyed(&entry).finalize().into_bytes();
            let mut seal = String::with_capacity(VERSION.len() + 2 * TAG_BYTES);
            seal.push_str(VERSION);
            crate::digest::push_hex(&mut seal, &tag);
            entry.seal = Some(seal);
        }
        entry
    }

    /// Whether `entry` carries a seal this key made for exactly its content.
    /// The tag is compared in constant time.
    pub fn proves(&self, entry: &Entry) -> bool {
        let Some(tag) = entry
            .seal
            .as_deref()
            .and_then(|s| s.strip_prefix(VERSION))
            .and_then(crate::digest::decode_hex32)
        else {
            return false;
        };
        let unsealed = Entry {
            seal: None,
            ..entry.clone()
        };
        self.keyed(&unsealed).verify_slice(&tag).is_ok()
    }

    fn keyed(&self, unsealed: &Entry) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        mac.update(unsealed.encode().as_bytes());
        mac
    }
}

/// What verifying knows of keymint's audit key.
pub enum Keyring<'a> {
    Key(&'a AuditKey),
    /// It could not be read: why, in words that name the Secret.
    Unreadable(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::{build, test_key, ts};
    use crate::audit::{Head, chain, pruned_draft};

    fn pruned() -> Entry {
        let entries = build(3);
        let through = Head::of(&entries[1]);
        let draft = pruned_draft(ts("2026-04-01T00:00:00Z"), "keymint-0", &through, 1);
        chain(&Head::of(&entries[2]), &draft).0
    }

    #[test]
    fn a_sealed_entry_is_proved_and_any_change_breaks_its_seal() {
        let key = test_key(7);
        let sealed = key.seal(pruned());
        assert!(sealed.seal.as_deref().is_some_and(|s| s.starts_with("v1:")));
        assert!(key.proves(&sealed));
        assert!(!test_key(8).proves(&sealed), "another key");
        assert!(!key.proves(&pruned()), "no seal");
        for edit in [
            |e: &mut Entry| e.seq += 1,
            |e: &mut Entry| e.prev = crate::audit::GENESIS.to_string(),
            |e: &mut Entry| e.pruned_through_seq = Some(1),
            |e: &mut Entry| e.message.push('!'),
            |e: &mut Entry| e.seal = Some("v1:00".to_string()),
        ] {
            let mut forged = sealed.clone();
            edit(&mut forged);
            assert!(!key.proves(&forged), "{forged:?}");
        }
    }

    #[test]
    fn prunings_and_the_first_entry_are_sealed_and_nothing_else() {
        let key = test_key(7);
        let entries = build(3);
        assert!(key.seal(entries[0].clone()).seal.is_some(), "entry 1");
        for plain in &entries[1..] {
            assert!(!carries_seal(plain));
            assert_eq!(&key.seal(plain.clone()), plain);
        }
        assert!(carries_seal(&pruned()));
    }

    #[test]
    fn the_key_is_32_bytes_and_debug_shows_none_of_it() {
        assert_eq!(AuditKey::from_bytes(&[1; 31]).err(), Some(WrongLength(31)));
        assert_eq!(format!("{:?}", test_key(1)), "AuditKey(..)");
    }
}
