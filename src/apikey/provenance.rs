//! Provenance: how keymint proves that it minted the key a Secret holds, for
//! the ApiKey that Secret belongs to. Pure: the seal key is handed in.
//!
//! An ownerReference proves nothing: the ApiKey's UID is public, and any
//! tenant who may create Secrets can write a controller reference to it. So
//! every Secret keymint mints carries a **seal**: HMAC-SHA256, under a
//! 32-byte key only keymint reads, over the ApiKey's UID and the hash of
//! the key. Only keymint can produce one; a seal copied from another Secret
//! names another UID or another key and does not verify.

use std::fmt;

use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::TryRng as _;
use rand::rngs::SysRng;
use sha2::Sha256;

/// The Secret annotation that holds the seal.
pub const ANNOTATION: &str = "keymint.dev/provenance";

/// Bytes in a seal key: the output size of SHA-256, as RFC 2104 advises.
pub const SEAL_KEY_BYTES: usize = 32;

/// What every seal message starts with, so that a seal can never be the MAC
/// of anything else keymint might one day sign with the same key.
const DOMAIN: &[u8] = b"keymint provenance v1";

/// The seal's version tag: a later format gets another one, and a seal of
/// an unknown version proves nothing.
const VERSION: &str = "v1:";

/// Bytes in an HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;

/// Why a seal key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SealKeyError {
    /// The OS CSPRNG failed. There is no fallback to a weaker source.
    #[error("could not read random bytes from the operating system for the provenance seal key")]
    Entropy(#[source] rand::rngs::SysError),
    /// The stored key is not 32 bytes: edited or truncated.
    #[error("the provenance seal key must be {SEAL_KEY_BYTES} bytes, found {0}")]
    WrongLength(usize),
}

/// The key that seals what keymint mints. No `Display`, `Clone` or serde,
/// and `Debug` prints nothing of it.
pub struct SealKey {
    /// HMAC state keyed once: each seal clones it.
    mac: Hmac<Sha256>,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// 32 fresh bytes from the OS CSPRNG: a new seal key, to be stored once.
///
/// # Errors
///
/// [`SealKeyError::Entropy`] if the OS RNG fails.
pub fn fresh_key_bytes() -> Result<[u8; SEAL_KEY_BYTES], SealKeyError> {
    let mut bytes = [0u8; SEAL_KEY_BYTES];
    SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(SealKeyError::Entropy)?;
    Ok(bytes)
}

impl SealKey {
    /// The seal key stored as `bytes`: exactly 32 of them, so that a
    /// truncated or edited key fails loudly instead of sealing weakly.
    ///
    /// # Errors
    ///
    /// [`SealKeyError::WrongLength`] for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Result<SealKey, SealKeyError> {
        if bytes.len() != SEAL_KEY_BYTES {
            return Err(SealKeyError::WrongLength(bytes.len()));
        }
        let mac = Hmac::<Sha256>::new_from_slice(bytes)
            .map_err(|_| SealKeyError::WrongLength(bytes.len()))?;
        Ok(SealKey { mac })
    }

    /// The seal of the key whose hash is `key_hash` (`sha256:<hex>`),
    /// minted for the ApiKey with `api_key_uid`: `v1:<64 hex digits>`.
    #[must_use]
    pub fn seal(&self, api_key_uid: &str, key_hash: &str) -> String {
        let tag = self.keyed(api_key_uid, key_hash).finalize().into_bytes();
        let mut out = String::with_capacity(VERSION.len() + 2 * TAG_BYTES);
        out.push_str(VERSION);
        crate::digest::push_hex(&mut out, &tag);
        out
    }

    /// Whether `seal` proves that keymint minted the key with `key_hash`
    /// for the ApiKey with `api_key_uid`. The tag is compared in constant
    /// time, so timing tells an attacker nothing about a near miss.
    #[must_use]
    pub fn proves(&self, seal: &str, api_key_uid: &str, key_hash: &str) -> bool {
        let Some(tag) = seal
            .strip_prefix(VERSION)
            .and_then(crate::digest::decode_hex32)
        else {
            return false;
        };
        self.keyed(api_key_uid, key_hash).verify_slice(&tag).is_ok()
    }

    /// The HMAC over the domain, then each field with its length before it,
    /// so that no two (UID, hash) pairs make the same message.
    fn keyed(&self, api_key_uid: &str, key_hash: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        for field in [api_key_uid, key_hash] {
            // Both are short (a UUID, a tagged SHA-256): the length fits.
            mac.update(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b6f6f5e-6f2b-4c59-9d1c-6a5b9e0c1d2e";
    const HASH: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn key(byte: u8) -> SealKey {
        SealKey::from_bytes(&[byte; SEAL_KEY_BYTES]).expect("32 bytes")
    }

    #[test]
    fn a_seal_proves_its_uid_and_hash_and_nothing_else() {
        let k = key(7);
        let seal = k.seal(UID, HASH);
        assert!(seal.starts_with("v1:") && seal.len() == 3 + 64, "{seal}");
        assert!(k.proves(&seal, UID, HASH));
        assert!(!k.proves(&seal, "another-uid", HASH), "another ApiKey");
        let other_hash = crate::digest::sha256_tagged(b"another key");
        assert!(!k.proves(&seal, UID, &other_hash), "another key");
        assert!(!key(8).proves(&seal, UID, HASH), "another seal key");
    }

    #[test]
    fn fields_cannot_slide_into_each_other() {
        let k = key(7);
        // Without the lengths these two would be the same message.
        assert!(!k.proves(&k.seal("ab", "c"), "a", "bc"));
    }

    #[test]
    fn a_malformed_seal_proves_nothing() {
        let k = key(7);
        let seal = k.seal(UID, HASH);
        let hex = &seal[3..];
        for bad in [
            String::new(),
            hex.to_string(),
            format!("v2:{hex}"),
            format!("v1:{}", hex.to_uppercase()),
            format!("v1:{}", &hex[..62]),
            format!("{seal}00"),
            format!("v1:{}", "z".repeat(64)),
        ] {
            assert!(!k.proves(&bad, UID, HASH), "{bad}");
        }
    }

    #[test]
    fn the_seal_is_stable_for_a_key() {
        // A restart reads the same key back and must prove what it sealed.
        let seal = key(7).seal(UID, HASH);
        assert!(key(7).proves(&seal, UID, HASH));
        assert_eq!(seal, key(7).seal(UID, HASH));
    }

    #[test]
    fn only_a_32_byte_key_is_taken() {
        assert!(matches!(
            SealKey::from_bytes(&[1; 31]),
            Err(SealKeyError::WrongLength(31))
        ));
        assert!(SealKey::from_bytes(&[]).is_err());
        let fresh = fresh_key_bytes().expect("entropy");
        assert_ne!(fresh, fresh_key_bytes().expect("entropy"));
        assert!(SealKey::from_bytes(&fresh).is_ok());
    }

    #[test]
    fn debug_prints_nothing_of_the_key() {
        assert_eq!(format!("{:?}", key(0xab)), "SealKey(..)");
    }
}
