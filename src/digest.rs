//! `sha256:<64 lowercase hex>`: the one form in which keymint writes a
//! SHA-256 — a key's hash (status, Secret annotation, verifier index) and an
//! audit line's hash (the chain's links). Pure.

use sha2::{Digest as _, Sha256};

/// What every tagged hash starts with.
pub const PREFIX: &str = "sha256:";

/// `sha256:<hex>` of `bytes`.
#[must_use]
pub fn sha256_tagged(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(PREFIX.len() + 2 * digest.len());
    out.push_str(PREFIX);
    push_hex(&mut out, &digest);
    out
}

/// Appends `bytes` as lowercase hex.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// 64 lowercase hex digits as 32 bytes (a SHA-256 or HMAC-SHA256 tag, as
/// [`push_hex`] writes it); None for anything else.
pub fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_hash_of_the_fips_vector() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            sha256_tagged(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_round_trips_and_nothing_else_decodes() {
        let mut hex = String::new();
        push_hex(&mut hex, &[0xab; 32]);
        assert_eq!(decode_hex32(&hex), Some([0xab; 32]));
        assert_eq!(decode_hex32(&hex.to_uppercase()), None);
        assert_eq!(decode_hex32(&hex[1..]), None);
        assert_eq!(decode_hex32(&format!("{}g", &hex[1..])), None);
    }
}
