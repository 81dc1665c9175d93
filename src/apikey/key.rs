//! API key format: minting, parsing, hashing and public key ids.
//!
//! This module is pure (no Kubernetes, no I/O apart from asking the OS for
//! random bytes) so the security-relevant format can be reviewed and tested
//! on its own.
//!
//! # Format
//!
//! ```text
//! kmk_<body: 43 base62 chars><checksum: 6 base62 chars>      (53 chars total)
//! ```
//!
//! Modelled on GitHub's token format (prefix, base62 body, CRC32 checksum):
//!
//! * The **prefix** `kmk_` makes keys recognisable to humans and to secret
//!   scanners, and tells a reader which system issued the key.
//! * The **body** is 32 bytes (256 bits) from the OS CSPRNG, written as a
//!   fixed-width big-endian base62 number. 43 digits is the smallest width
//!   that holds every 256-bit value (62^43 ≈ 2^256.03), and left-padding with
//!   `0` keeps every key the same length, which makes scanning regexes exact.
//!   Base62 is used (rather than base64) so the key is a single "word": it
//!   survives double-click selection, URLs, shells and config files unquoted.
//! * The **checksum** is CRC32 (IEEE) over `prefix + body`, written as 6
//!   fixed-width base62 digits (62^6 > 2^32). It is not a security feature:
//!   it lets a scanner tell a real key from a random look-alike offline,
//!   without calling us, and lets [`parse`] reject typos / truncation.
//!   CRC32 detects every burst error of up to 32 bits, so every
//!   single-character substitution is caught.
//!
//! The alphabet is `0-9A-Z a-z` in ASCII order, so a fixed-width string sorts
//! the same way as the number it encodes.
//!
//! A scanner can match keys with `kmk_[0-9A-Za-z]{49}` and verify one by
//! recomputing CRC32 over its first 47 characters.
//!
//! # What is stored where
//!
//! The plaintext only ever lives in [`MintedKey`] and in the Kubernetes
//! Secret. Everything else (status, logs, events) uses [`hash`]
//! (`sha256:<hex>`, to verify a presented key) and [`key_id`] (`km_...`, to
//! refer to a key).

use std::fmt;

use rand::TryRng as _;
use rand::rngs::SysRng;
use sha2::{Digest as _, Sha256};

/// Prefix of every key. Secret scanners key off this.
pub const PREFIX: &str = "kmk_";

/// Prefix of the public key id, deliberately different from [`PREFIX`] so an
/// id can never be mistaken for (or flagged by a scanner as) a key.
pub const KEY_ID_PREFIX: &str = "km_";

/// Number of random bytes in a key: 256 bits, as the design requires.
const KEY_BYTES: usize = 32;

/// Base62 digits needed for [`KEY_BYTES`] bytes: 62^43 > 2^256 > 62^42.
const BODY_LEN: usize = 43;

/// Base62 digits needed for a CRC32: 62^6 > 2^32 > 62^5.
const CHECKSUM_LEN: usize = 6;

/// Base62 characters of the SHA-256 digest shown in a key id (~71 bits):
/// short enough to read in a log line, long enough that two keys in one
/// cluster will not collide by accident.
const KEY_ID_LEN: usize = 12;

/// Total length of a key in characters (all ASCII, so also bytes): 4 + 43 + 6.
pub const KEY_LEN: usize = PREFIX.len() + BODY_LEN + CHECKSUM_LEN;

const _: () = assert!(KEY_LEN == 53);
// The checksum width must hold any u32.
const _: () = assert!(62u64.pow(CHECKSUM_LEN as u32) > u32::MAX as u64);

/// Base62 alphabet in ASCII order; index = digit value.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The largest body, 2^256 - 1. The alphabet is in ASCII order, so a body
/// is at most 256 bits exactly when its text sorts at or below this: the
/// range check of every presented key is one comparison. Decoding 43
/// digits into 32 bytes was the verifier's costliest step of its own.
const MAX_BODY: &[u8; BODY_LEN] = b"yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1";

/// Why a key could not be minted or parsed.
///
/// No variant carries (any part of) the key text, so these errors are safe
/// to log and to put in status conditions.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The OS CSPRNG failed. We never fall back to a weaker source.
    #[error("could not read random bytes from the operating system")]
    Entropy(#[source] rand::rngs::SysError),
    /// Not a keymint key at all (or a different kind of token).
    #[error("API key does not start with the `{PREFIX}` prefix")]
    WrongPrefix,
    /// Truncated, padded or with stray whitespace. Lengths are not secret.
    #[error("API key has the wrong length: expected {expected} characters, got {actual}")]
    WrongLength {
        /// Always [`KEY_LEN`].
        expected: usize,
        /// Length of the rejected input, in characters.
        actual: usize,
    },
    /// A character outside `0-9A-Za-z` after the prefix (which one is not
    /// reported, as it would be a character of a possibly real key).
    #[error("API key contains characters outside the base62 alphabet")]
    InvalidCharacter,
    /// Right shape, but the CRC32 does not match: a typo or corruption.
    #[error("API key checksum does not match (the key is corrupted or mistyped)")]
    ChecksumMismatch,
    /// Well-formed and checksummed, but the body encodes a number of more
    /// than 256 bits, so [`mint`] cannot have produced it.
    #[error("API key body is out of range (not a key minted by keymint)")]
    BodyOutOfRange,
}

/// A plaintext API key in the `kmk_` format, produced by [`mint`] or
/// validated by [`parse`].
///
/// Deliberately has no `Display`, `Clone`, `PartialEq` or serde impls, and
/// `Debug` shows only the public [`key_id`], so the plaintext cannot end up
/// in a log line or a status field by accident: the only way to get the text
/// is the explicit [`MintedKey::expose`].
///
/// (The memory is not zeroized on drop; that would need an extra
/// dependency, and the same bytes sit in the Secret anyway.)
pub struct MintedKey {
    text: String,
}

impl MintedKey {
    /// The plaintext key. Call this only where the key is written into the
    /// Kubernetes Secret.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Builds the key text for 32 given bytes. Private: callers get keys
    /// only from [`mint`] (OS randomness) or [`parse`] (validated text).
    fn from_bytes(bytes: &[u8; KEY_BYTES]) -> Self {
        let mut text = String::with_capacity(KEY_LEN);
        text.push_str(PREFIX);
        text.push_str(&base62_fixed(bytes, BODY_LEN));
        let checksum = checksum(text.as_bytes());
        text.extend(checksum.map(char::from));
        Self { text }
    }
}

impl fmt::Debug for MintedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id is safe to show and makes debug output still useful.
        f.debug_struct("MintedKey")
            .field("key_id", &key_id(self))
            .finish_non_exhaustive()
    }
}

/// Mints a new key from 256 bits of OS randomness.
///
/// Uses the OS CSPRNG directly (`getrandom` via `rand::rngs::SysRng`) rather
/// than a userspace PRNG: minting is rare, so speed does not matter, and this
/// leaves no PRNG state in our process that could be leaked or forked.
///
/// # Errors
///
/// [`KeyError::Entropy`] if the OS RNG fails; there is no fallback.
pub fn mint() -> Result<MintedKey, KeyError> {
    let mut bytes = [0u8; KEY_BYTES];
    SysRng
        .try_fill_bytes(&mut bytes)
        .map_err(KeyError::Entropy)?;
    Ok(MintedKey::from_bytes(&bytes))
}

/// Validates `s` as a key: prefix, length, alphabet, checksum and range.
///
/// Strict on purpose: no trimming or case folding, so a key that parses is
/// byte-for-byte the text whose [`hash`] we store. Callers that read keys
/// from files may trim a trailing newline themselves.
///
/// # Errors
///
/// The first failed check, in the order prefix, length, alphabet, checksum,
/// range. A corrupted or mistyped key is always rejected.
pub fn parse(s: &str) -> Result<MintedKey, KeyError> {
    // Work on bytes: until the alphabet check passes, `s` may contain
    // multi-byte characters and slicing the `str` could panic.
    let bytes = s.as_bytes();
    if !bytes.starts_with(PREFIX.as_bytes()) {
        return Err(KeyError::WrongPrefix);
    }
    if bytes.len() != KEY_LEN {
        return Err(KeyError::WrongLength {
            expected: KEY_LEN,
            actual: s.chars().count(),
        });
    }
    let (head, given_checksum) = bytes.split_at(KEY_LEN - CHECKSUM_LEN);
    let body = &head[PREFIX.len()..];
    if !body
        .iter()
        .chain(given_checksum)
        .all(u8::is_ascii_alphanumeric)
    {
        return Err(KeyError::InvalidCharacter);
    }
    // Everything is ASCII now, so comparing re-encoded text is exact.
    if checksum(head) != given_checksum {
        return Err(KeyError::ChecksumMismatch);
    }
    // 62^43 is slightly above 2^256, so ~2% of 43-digit bodies encode
    // values mint() can never produce; reject them so parse accepts exactly
    // the set of keys we issue.
    if body > MAX_BODY.as_slice() {
        return Err(KeyError::BodyOutOfRange);
    }
    Ok(MintedKey { text: s.to_owned() })
}

/// `sha256:<64 lowercase hex digits>` of the full key text (prefix and
/// checksum included, i.e. exactly what a client presents).
///
/// This is the only form of the key stored outside the Secret; it lets a
/// presented key be verified without keeping the key itself. The key has 256
/// bits of entropy, so a plain (unsalted, fast) hash is not brute-forceable.
#[must_use]
pub fn hash(key: &MintedKey) -> String {
    hash_bytes(key.expose().as_bytes())
}

/// [`hash`] of arbitrary bytes, in the same `sha256:<hex>` form: what a
/// Secret holds is checked against the recorded hash even when it is no
/// longer a well-formed key (tampered content must not be parsed first).
#[must_use]
pub fn hash_bytes(bytes: &[u8]) -> String {
    crate::digest::sha256_tagged(bytes)
}

/// Public identifier of a key, e.g. `km_7Hq2xK9pLm3Q`: safe to show in
/// status, logs and audit trails.
///
/// Derived from the SHA-256 digest of the key, not from the key text, so it
/// reveals no bits of the key (taking a prefix of the key would shorten the
/// brute-force search by those bits). It lets users match a key they hold,
/// the status of its resource, and log lines, without anyone handling the
/// plaintext. It is the first 12 characters of the digest's fixed-width
/// base62 encoding (~71 bits, so accidental collisions are not a concern).
#[must_use]
pub fn key_id(key: &MintedKey) -> String {
    let digest = Sha256::digest(key.expose().as_bytes());
    let encoded = base62_fixed(&digest, BODY_LEN);
    let mut id = String::with_capacity(KEY_ID_PREFIX.len() + KEY_ID_LEN);
    id.push_str(KEY_ID_PREFIX);
    id.extend(encoded.chars().take(KEY_ID_LEN));
    id
}

/// CRC32 of `prefix + body` as 6 base62 digits.
fn checksum(prefix_and_body: &[u8]) -> [u8; CHECKSUM_LEN] {
    checksum_digits(crc32fast::hash(prefix_and_body))
}

/// A CRC32 as 6 base62 digits: [`base62_fixed`] in one machine word, with
/// no allocation (every presented key is checked with it).
fn checksum_digits(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    digits
}

/// Encodes `bytes` (a big-endian unsigned number) as exactly `width` base62
/// digits, most significant first, left-padded with `0`.
///
/// Schoolbook long division by 62, one output digit per pass, over 32-bit
/// limbs. Quadratic, but inputs are at most 32 bytes and no bignum
/// dependency is needed; the verifier runs it for the key id of every
/// well-formed unknown key it is sent.
/// `width` must be large enough for any value of `bytes.len()` bytes; all
/// call sites use the constants above, which the tests check.
fn base62_fixed(bytes: &[u8], width: usize) -> String {
    // Most significant limb first; only the first may have fewer bytes.
    let mut num: Vec<u32> = bytes
        .rchunks(4)
        .rev()
        .map(|limb| limb.iter().fold(0, |acc, &b| (acc << 8) | u32::from(b)))
        .collect();
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        let mut rem: u64 = 0;
        for limb in &mut num {
            let acc = (rem << 32) | u64::from(*limb);
            // acc < 62 * 2^32, so the quotient fits in a limb.
            *limb = (acc / 62) as u32;
            rem = acc % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
    debug_assert!(
        num.iter().all(|&b| b == 0),
        "base62 width {width} too small for {} bytes",
        bytes.len()
    );
    digits.into_iter().map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_base62(s: &str) -> bool {
        s.bytes().all(|c| ALPHABET.contains(&c))
    }

    /// A deterministic, valid key for tests that need fixed text.
    fn sample_key() -> MintedKey {
        MintedKey::from_bytes(sample_key_bytes())
    }

    /// Builds key text with a correct checksum for an arbitrary body.
    fn with_checksum(body: &str) -> String {
        let head = format!("{PREFIX}{body}");
        let sum = checksum(head.as_bytes()).map(char::from);
        format!("{head}{}", String::from_iter(sum))
    }

    #[test]
    fn alphabet_is_the_ascii_alphanumerics_in_order() {
        let alphanumerics: Vec<u8> = (0..=u8::MAX).filter(u8::is_ascii_alphanumeric).collect();
        assert_eq!(
            ALPHABET.as_slice(),
            alphanumerics,
            "ASCII order keeps sort order"
        );
    }

    #[test]
    fn minted_key_has_expected_format() {
        let key = mint().expect("OS RNG available in tests");
        let text = key.expose();
        assert_eq!(text.len(), KEY_LEN);
        assert_eq!(text.len(), 53);
        assert!(text.starts_with("kmk_"));
        assert!(is_base62(&text[PREFIX.len()..]));
        // The checksum is CRC32 over everything before it.
        let (head, sum) = text.split_at(KEY_LEN - CHECKSUM_LEN);
        let crc = crc32fast::hash(head.as_bytes());
        assert_eq!(sum, base62_fixed(&crc.to_be_bytes(), CHECKSUM_LEN));
        assert_eq!(sum.as_bytes(), checksum(head.as_bytes()));
    }

    #[test]
    fn mint_parse_round_trip() {
        for _ in 0..100 {
            let key = mint().expect("mint");
            let parsed = parse(key.expose()).expect("minted key parses");
            assert_eq!(parsed.expose(), key.expose());
            assert_eq!(hash(&parsed), hash(&key));
            assert_eq!(key_id(&parsed), key_id(&key));
        }
    }

    #[test]
    fn checksum_detects_every_single_character_substitution() {
        let key = sample_key();
        let original = key.expose().as_bytes();
        let mut checked = 0;
        for pos in PREFIX.len()..KEY_LEN {
            for &replacement in ALPHABET.iter() {
                if replacement == original[pos] {
                    continue;
                }
                let mut corrupted = original.to_vec();
                corrupted[pos] = replacement;
                let corrupted = String::from_utf8(corrupted).expect("ascii");
                let err = parse(&corrupted).expect_err("corruption must be detected");
                assert!(
                    matches!(err, KeyError::ChecksumMismatch | KeyError::BodyOutOfRange),
                    "pos {pos}: unexpected {err:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, (KEY_LEN - PREFIX.len()) * 61);
    }

    #[test]
    fn wrong_prefix_rejected() {
        let key = sample_key();
        let text = key.expose();
        for bad in [
            text.replacen("kmk_", "kmx_", 1),
            text.replacen("kmk_", "KMK_", 1),
            text.replacen("kmk_", "ghp_", 1),
            text[PREFIX.len()..].to_owned(),
            String::new(),
        ] {
            assert!(matches!(parse(&bad), Err(KeyError::WrongPrefix)), "{bad:?}");
        }
    }

    #[test]
    fn wrong_length_rejected() {
        let key = sample_key();
        let text = key.expose();
        for bad in [
            text[..KEY_LEN - 1].to_owned(),
            format!("{text}0"),
            format!("{text}\n"),
            PREFIX.to_owned(),
        ] {
            match parse(&bad) {
                Err(KeyError::WrongLength { expected, actual }) => {
                    assert_eq!(expected, KEY_LEN);
                    assert_eq!(actual, bad.chars().count());
                }
                other => panic!("{bad:?}: expected WrongLength, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_alphabet_rejected() {
        let key = sample_key();
        let text = key.expose();
        for c in ["-", "_", "+", "/", "=", " ", "."] {
            let bad = replaced(text, 10, c);
            assert!(
                matches!(parse(&bad), Err(KeyError::InvalidCharacter)),
                "{c:?}"
            );
        }
        // Non-ASCII of the right byte length must be rejected, not panic on
        // a char boundary: two 2-byte chars replace four ASCII ones.
        let mut bad = text.to_owned();
        bad.replace_range(KEY_LEN - 4.., "éé");
        assert_eq!(bad.len(), KEY_LEN);
        assert!(matches!(parse(&bad), Err(KeyError::InvalidCharacter)));
        // ...including a multi-byte char straddling the checksum boundary.
        let mut bad = text.to_owned();
        bad.replace_range(KEY_LEN - CHECKSUM_LEN - 1..KEY_LEN - CHECKSUM_LEN + 1, "é");
        assert_eq!(bad.len(), KEY_LEN);
        assert!(matches!(parse(&bad), Err(KeyError::InvalidCharacter)));
    }

    #[test]
    fn body_above_256_bits_rejected_even_with_valid_checksum() {
        let bad = with_checksum(&"z".repeat(BODY_LEN));
        assert!(matches!(parse(&bad), Err(KeyError::BodyOutOfRange)));
        // The largest 256-bit body is still accepted.
        let max = with_checksum(&base62_fixed(&[0xff; KEY_BYTES], BODY_LEN));
        assert!(parse(&max).is_ok());
        let zero = with_checksum(&"0".repeat(BODY_LEN));
        assert!(parse(&zero).is_ok());
    }

    fn replaced(text: &str, pos: usize, with: &str) -> String {
        let mut out = text.to_owned();
        out.replace_range(pos..pos + 1, with);
        out
    }

    #[test]
    fn errors_never_contain_key_text() {
        let key = sample_key();
        let text = key.expose();
        let body = &text[PREFIX.len()..KEY_LEN - CHECKSUM_LEN];
        let corrupted = replaced(text, 20, if &text[20..21] == "A" { "B" } else { "A" });
        let errors = [
            parse(&corrupted).expect_err("checksum"),
            parse(&text.replacen("kmk_", "xxx_", 1)).expect_err("prefix"),
            parse(&text[..40]).expect_err("length"),
            parse(&replaced(text, 30, "-")).expect_err("alphabet"),
        ];
        for err in &errors {
            for rendered in [err.to_string(), format!("{err:?}")] {
                // No 8-character window of the key may appear in the error.
                for window in body.as_bytes().windows(8) {
                    let window = std::str::from_utf8(window).expect("ascii");
                    assert!(!rendered.contains(window), "{rendered} leaks key");
                }
            }
        }
    }

    #[test]
    fn hash_format_and_known_vectors() {
        // The all-zero key, hashed as its full text.
        let zero = MintedKey::from_bytes(&[0u8; KEY_BYTES]);
        assert_eq!(zero.expose(), ZERO_KEY);
        assert_eq!(hash(&zero), ZERO_KEY_HASH);
        assert_eq!(hash_bytes(ZERO_KEY.as_bytes()), ZERO_KEY_HASH);
        assert_eq!(
            hash_bytes(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );

        let h = hash(&mint().expect("mint"));
        let hex = h.strip_prefix("sha256:").expect("sha256: prefix");
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    }

    /// Key text for 32 zero bytes: 43 zero digits plus its CRC32.
    const ZERO_KEY: &str = "kmk_00000000000000000000000000000000000000000002WHLQo";
    /// `printf %s "$ZERO_KEY" | sha256sum`.
    const ZERO_KEY_HASH: &str =
        "sha256:78cc4baf4e7c0fc8d669c8225002f3b347c2e4d283abef94e0406b4181e11823";

    #[test]
    fn key_id_is_stable_distinct_and_not_key_material() {
        let key = sample_key();
        let id = key_id(&key);
        assert_eq!(id, key_id(&key));
        assert_eq!(id, key_id(&parse(key.expose()).expect("parse")));
        assert!(id.starts_with(KEY_ID_PREFIX));
        assert!(!id.starts_with(PREFIX));
        assert_eq!(id.len(), KEY_ID_PREFIX.len() + KEY_ID_LEN);
        assert!(is_base62(&id[KEY_ID_PREFIX.len()..]));
        // Derived from the digest, not from the key text.
        let digest = Sha256::digest(key.expose().as_bytes());
        assert!(base62_fixed(&digest, BODY_LEN).starts_with(&id[KEY_ID_PREFIX.len()..]));
        assert!(!key.expose().contains(&id[KEY_ID_PREFIX.len()..]));

        let other = mint().expect("mint");
        assert_ne!(key_id(&other), id);
        assert_eq!(key_id(&MintedKey::from_bytes(&[0; KEY_BYTES])), ZERO_KEY_ID);
    }

    const ZERO_KEY_ID: &str = "km_Sdz7gm2XJHwC";

    #[test]
    fn debug_redacts_plaintext() {
        let key = mint().expect("mint");
        let body = &key.expose()[PREFIX.len()..];
        for rendered in [format!("{key:?}"), format!("{key:#?}")] {
            assert!(!rendered.contains(body), "{rendered}");
            assert!(!rendered.contains(PREFIX), "{rendered}");
            assert!(rendered.contains(&key_id(&key)), "{rendered}");
        }
    }

    #[test]
    fn thousand_mints_are_distinct() {
        let keys: HashSet<String> = (0..1000)
            .map(|_| mint().expect("mint").expose().to_owned())
            .collect();
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn base62_fixed_width_known_patterns() {
        assert_eq!(
            base62_fixed(&[0; KEY_BYTES], BODY_LEN),
            "0".repeat(BODY_LEN)
        );
        // 2^256 - 1 needs all 43 digits (cross-checked with Python).
        assert_eq!(
            base62_fixed(&[0xff; KEY_BYTES], BODY_LEN),
            "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1"
        );
        assert_eq!(base62_fixed(&[0, 0, 0, 0], CHECKSUM_LEN), "000000");
        assert_eq!(base62_fixed(&[0, 0, 0, 61], CHECKSUM_LEN), "00000z");
        assert_eq!(base62_fixed(&[0, 0, 0, 62], CHECKSUM_LEN), "000010");
        // u32::MAX = 4294967295 still fits in 6 digits.
        assert_eq!(base62_fixed(&[0xff; 4], CHECKSUM_LEN), "4gfFC3");
        let mut one = [0u8; KEY_BYTES];
        one[KEY_BYTES - 1] = 1;
        assert_eq!(base62_fixed(&one, BODY_LEN), format!("{}1", "0".repeat(42)));
    }

    #[test]
    fn base62_decode_inverts_encode() {
        for bytes in [[0u8; KEY_BYTES], [0xff; KEY_BYTES], *sample_key_bytes()] {
            let text = base62_fixed(&bytes, BODY_LEN);
            assert_eq!(
                decode_base62_fixed::<KEY_BYTES>(text.as_bytes()),
                Some(bytes)
            );
        }
        assert_eq!(decode_base62_fixed::<KEY_BYTES>(b"zzz-"), None);
        assert_eq!(decode_base62_fixed::<4>(b"4gfFC4"), None, "u32::MAX + 1");
        assert_eq!(
            decode_base62_fixed::<4>(b"4gfFC3"),
            Some(u32::MAX.to_be_bytes())
        );
    }

    /// Inverse of [`base62_fixed`]: decodes base62 digits into an `N`-byte
    /// big-endian number. `None` on a non-base62 character or if the value
    /// does not fit in `N` bytes: the reference that [`MAX_BODY`] and
    /// [`base62_fixed`] are tested against.
    fn decode_base62_fixed<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
        let mut num = [0u8; N];
        for &c in text {
            // num = num * 62 + digit
            let digit = ALPHABET.iter().position(|&a| a == c)?;
            let mut carry = digit as u32;
            for byte in num.iter_mut().rev() {
                let acc = u32::from(*byte) * 62 + carry;
                *byte = (acc & 0xff) as u8;
                carry = acc >> 8;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(num)
    }

    #[test]
    fn max_body_is_the_largest_256_bit_number() {
        assert_eq!(
            base62_fixed(&[0xff; KEY_BYTES], BODY_LEN).as_bytes(),
            MAX_BODY
        );
    }

    proptest::proptest! {
        /// Decoding gives back any 32 bytes, and any 4 (a checksum's
        /// width, with a limb of its own).
        #[test]
        fn base62_round_trips(bytes: [u8; KEY_BYTES], crc: u32) {
            let text = base62_fixed(&bytes, BODY_LEN);
            proptest::prop_assert_eq!(decode_base62_fixed(text.as_bytes()), Some(bytes));
            let text = base62_fixed(&crc.to_be_bytes(), CHECKSUM_LEN);
            proptest::prop_assert_eq!(decode_base62_fixed(text.as_bytes()), Some(crc.to_be_bytes()));
            proptest::prop_assert_eq!(text.as_bytes(), checksum_digits(crc));
        }

        /// The range check by order agrees with decoding, on bodies near
        /// the limit and anywhere.
        #[test]
        fn a_body_sorts_within_range_exactly_when_it_fits_256_bits(
            near in proptest::bool::ANY,
            digits in proptest::collection::vec(0..62usize, BODY_LEN),
            keep in 0..BODY_LEN,
        ) {
            let mut body: Vec<u8> = digits.iter().map(|&d| ALPHABET[d]).collect();
            if near {
                body[..keep].copy_from_slice(&MAX_BODY[..keep]);
            }
            let fits = decode_base62_fixed::<KEY_BYTES>(&body).is_some();
            proptest::prop_assert_eq!(body.as_slice() <= MAX_BODY.as_slice(), fits);
        }
    }

    fn sample_key_bytes() -> &'static [u8; KEY_BYTES] {
        const BYTES: [u8; KEY_BYTES] = {
            let mut b = [0u8; KEY_BYTES];
            let mut i = 0;
            while i < KEY_BYTES {
                b[i] = (i as u8).wrapping_mul(37).wrapping_add(11);
                i += 1;
            }
            b
        };
        &BYTES
    }
}
