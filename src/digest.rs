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
}
