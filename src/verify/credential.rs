//! Where a request carries its key, for every protocol alike (the projects
//! it must belong to are `projects`'). Pure.
//!
//! A key comes from `Authorization: Bearer <key>` or `X-API-Key: <key>`.
//! Other `Authorization` schemes (say, Basic for another layer) are not a
//! keymint credential and are ignored. Several headers that carry the same
//! key are one credential; several different keys are refused as
//! unreadable, rather than picking one.

/// The key a request presents, not parsed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No keymint credential at all.
    Absent,
    /// Something that cannot be a key: not UTF-8, or two different keys.
    Unreadable,
    /// One presented key (its text is never logged or returned).
    Key(&'a str),
}

/// The credential among `headers`, given as (name, value) pairs; names in
/// any case.
pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Credential<'a> {
    let mut found = Credential::Absent;
    for (name, value) in headers {
        let token = if name.eq_ignore_ascii_case("authorization") {
            bearer_token(value)
        } else if name.eq_ignore_ascii_case("x-api-key") {
            Some(trim(value))
        } else {
            None
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            continue;
        };
        let Ok(token) = std::str::from_utf8(token) else {
            return Credential::Unreadable;
        };
        found = match found {
            Credential::Absent => Credential::Key(token),
            Credential::Key(earlier) if earlier == token => found,
            _ => return Credential::Unreadable,
        };
    }
    found
}

/// The token of `Bearer <token>` (scheme in any case, RFC 7235); None for
/// another scheme.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    let split = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, rest) = value.split_at(split);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| trim(rest))
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::apikey::key::{self, KEY_LEN, PREFIX};

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> Credential<'a> {
        from_headers(pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn a_key_comes_from_bearer_or_x_api_key() {
        assert_eq!(
            headers(&[("Authorization", "Bearer k1")]),
            Credential::Key("k1")
        );
        assert_eq!(
            headers(&[("authorization", "bearer  k1 ")]),
            Credential::Key("k1")
        );
        assert_eq!(headers(&[("X-API-Key", " k1")]), Credential::Key("k1"));
        assert_eq!(
            headers(&[("x-api-key", "k1"), ("Authorization", "Bearer k1")]),
            Credential::Key("k1")
        );
    }

    #[test]
    fn other_schemes_and_empty_values_are_no_credential() {
        assert_eq!(headers(&[]), Credential::Absent);
        assert_eq!(
            headers(&[("Authorization", "Basic YWxpY2U6cHc=")]),
            Credential::Absent
        );
        assert_eq!(headers(&[("Authorization", "Bearer")]), Credential::Absent);
        assert_eq!(
            headers(&[("Authorization", "Bearer   ")]),
            Credential::Absent
        );
        assert_eq!(headers(&[("X-API-Key", "")]), Credential::Absent);
        assert_eq!(headers(&[("Cookie", "k1")]), Credential::Absent);
        assert_eq!(
            headers(&[("Authorization", "Basic x"), ("X-API-Key", "k1")]),
            Credential::Key("k1")
        );
    }

    #[test]
    fn two_different_keys_or_non_utf8_are_unreadable() {
        assert_eq!(
            headers(&[("X-API-Key", "k1"), ("X-API-Key", "k2")]),
            Credential::Unreadable
        );
        assert_eq!(
            headers(&[("Authorization", "Bearer k1"), ("X-API-Key", "k2")]),
            Credential::Unreadable
        );
        let bad: [(&str, &[u8]); 1] = [("X-API-Key", b"kmk_\xff\xfe")];
        assert_eq!(from_headers(bad), Credential::Unreadable);
    }

    proptest! {
        /// The key parser sees whatever a client sends: it never panics,
        /// and accepts only the exact shape keymint mints.
        #[test]
        fn the_key_parser_takes_any_input_without_panicking(input in any::<String>()) {
            if key::parse(&input).is_ok() {
                prop_assert_eq!(input.len(), KEY_LEN);
                prop_assert!(input.starts_with(PREFIX));
            }
        }

        /// Inputs that look like keys (right prefix and alphabet) pass only
        /// with a correct checksum: a random look-alike is refused before
        /// any lookup, and the error never carries the input.
        #[test]
        fn look_alike_keys_fail_the_checksum(body in "[0-9A-Za-z]{49}") {
            let input = format!("{PREFIX}{body}");
            match key::parse(&input) {
                Ok(parsed) => prop_assert_eq!(parsed.expose(), input.as_str()),
                Err(e) => {
                    let shown = format!("{e} {e:?}");
                    prop_assert!(!shown.contains(&body[..16]));
                }
            }
        }

        /// Every single-byte change of a minted key is refused.
        #[test]
        fn a_changed_byte_is_refused(pos in 0..KEY_LEN, byte in any::<u8>()) {
            let minted = key::mint().expect("mint");
            let mut bytes = minted.expose().as_bytes().to_vec();
            prop_assume!(bytes[pos] != byte);
            bytes[pos] = byte;
            let changed = String::from_utf8_lossy(&bytes);
            prop_assert!(key::parse(&changed).is_err());
        }

        /// Any header set yields an answer, never a panic.
        #[test]
        fn any_headers_yield_a_credential(
            pairs in proptest::collection::vec(("[A-Za-z-]{1,16}", proptest::collection::vec(any::<u8>(), 0..80)), 0..8)
        ) {
            let _ = from_headers(pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        }
    }
}
