//! The verdict on a presented key: one function, [`verify`], that every
//! protocol asks. Pure: the index, the request and the clock come in.
//!
//! Order matters. The format and CRC32 are checked before any lookup (a
//! random string costs no hash and no lock); then the key must be indexed
//! (only Active ApiKeys are: see `index`), not being deleted (revocation is
//! `kubectl delete`), not past its `expiresAt` by the verifier's own clock
//! (the controller's expiry may lag), and of one of the projects the caller
//! named.

use std::sync::Arc;

use jiff::Timestamp;

use crate::apikey::key;
use crate::verify::credential::Credential;
use crate::verify::index::{self, Index, Lookup};
use crate::verify::projects::Projects;

/// Why a key was refused. Few and fixed: each is a metric label and a
/// `reason` in the JSON answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Denial {
    /// No key in the request.
    Missing,
    /// Not a keymint key: format or checksum wrong, or unreadable.
    Malformed,
    /// Well-formed, but no Active ApiKey has it (or two claim it).
    Unknown,
    /// Its ApiKey is being deleted.
    Revoked,
    /// `expiresAt` has passed by the verifier's clock.
    Expired,
    /// Valid, but for another project than the ones the caller named.
    WrongProject,
}

impl Denial {
    pub const ALL: [Denial; 6] = [
        Denial::Missing,
        Denial::Malformed,
        Denial::Unknown,
        Denial::Revoked,
        Denial::Expired,
        Denial::WrongProject,
    ];

    /// The machine-readable reason.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Denial::Missing => "missing",
            Denial::Malformed => "malformed",
            Denial::Unknown => "unknown",
            Denial::Revoked => "revoked",
            Denial::Expired => "expired",
            Denial::WrongProject => "wrong-project",
        }
    }

    /// For people: in `WWW-Authenticate` and response bodies.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Denial::Missing => "no API key: send Authorization: Bearer <key> or X-API-Key",
            Denial::Malformed => "not a keymint API key (format or checksum)",
            Denial::Unknown => "unknown API key",
            Denial::Revoked => "the API key was revoked",
            Denial::Expired => "the API key has expired",
            Denial::WrongProject => "the API key is not valid for this project",
        }
    }

    /// 403 for a valid key of another project (who you are is known, what
    /// you asked for is not yours); 401 for every other refusal.
    #[must_use]
    pub fn forbidden(self) -> bool {
        self == Denial::WrongProject
    }
}

/// The outcome of [`Verdict::Unavailable`].
pub const UNAVAILABLE: &str = "unavailable";

/// For people: why a check got no answer.
pub const UNAVAILABLE_MESSAGE: &str =
    "the verifier's index of keys is not listed yet or is older than --max-staleness; retry";

/// What a valid key is: the ApiKey that holds it and what it grants.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// `namespace/name` of the ApiKey.
    pub api_key: Arc<str>,
    pub owner: Arc<str>,
    pub project: Arc<str>,
    pub key_id: String,
    pub expires_at: Option<Timestamp>,
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Valid(Grant),
    /// Refused; `key_id` is set when the key was well-formed (safe to log).
    Denied {
        denial: Denial,
        key_id: Option<String>,
    },
    /// No answer: the index is not listed yet, or older than its bound
    /// (`freshness`), so neither a yes nor a no can be trusted.
    Unavailable,
}

impl Verdict {
    /// `valid`, the denial's reason or `unavailable`: the metric label and
    /// JSON `reason`.
    #[must_use]
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Valid(_) => "valid",
            Verdict::Denied { denial, .. } => denial.reason(),
            Verdict::Unavailable => UNAVAILABLE,
        }
    }

    /// The key id, when the key was well-formed (and looked at).
    #[must_use]
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Verdict::Valid(grant) => Some(&grant.key_id),
            Verdict::Denied { key_id, .. } => key_id.as_deref(),
            Verdict::Unavailable => None,
        }
    }
}

/// The verdict on `presented`, which must belong to one of `projects`, at
/// `now`.
#[must_use]
pub fn verify(
    index: &Index,
    presented: Credential<'_>,
    projects: &Projects<'_>,
    now: Timestamp,
) -> Verdict {
    let text = match presented {
        Credential::Absent => return denied(Denial::Missing, None),
        Credential::Unreadable => return denied(Denial::Malformed, None),
        Credential::Key(text) => text,
    };
    let Ok(parsed) = key::parse(text) else {
        return denied(Denial::Malformed, None);
    };
    let entry = match index.lookup(&index::digest(&parsed)) {
        Lookup::Found(entry) => entry,
        Lookup::NotFound | Lookup::Contested => {
            return denied(Denial::Unknown, Some(key::key_id(&parsed)));
        }
    };
    // The id recorded with this hash is this key's: no second hash needed.
    let key_id = entry
        .key_id
        .map_or_else(|| key::key_id(&parsed), |id| id.as_str().to_owned());
    let refusal = if entry.deleting {
        Some(Denial::Revoked)
    } else if entry.expires_at.is_some_and(|at| now >= at) {
        Some(Denial::Expired)
    } else if !projects.accept(entry.project) {
        Some(Denial::WrongProject)
    } else {
        None
    };
    if let Some(denial) = refusal {
        return denied(denial, Some(key_id));
    }
    Verdict::Valid(Grant {
        api_key: Arc::from(entry.api_key),
        owner: entry.owner.clone(),
        project: entry.project.clone(),
        key_id,
        expires_at: entry.expires_at,
    })
}

fn denied(denial: Denial, key_id: Option<String>) -> Verdict {
    Verdict::Denied { denial, key_id }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::key::MintedKey;
    use crate::verify::index::tests::projection;

    const ANY: Projects<'static> = Projects::Any;

    fn named(names: &[&'static str]) -> Projects<'static> {
        Projects::Named(names.iter().map(|n| (*n).into()).collect())
    }

    fn now() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().expect("timestamp")
    }

    fn indexed(change: impl FnOnce(&mut index::Projection)) -> (Index, MintedKey) {
        let minted = key::mint().expect("mint");
        let mut p = projection(index::digest(&minted), "payments");
        p.key_id = Some(key::key_id(&minted));
        change(&mut p);
        let mut index = Index::default();
        index.apply("ns/ci", Some(p));
        (index, minted)
    }

    fn verdict(index: &Index, minted: &MintedKey, projects: &Projects, at: Timestamp) -> Verdict {
        verify(index, Credential::Key(minted.expose()), projects, at)
    }

    #[test]
    fn an_active_key_verifies_with_who_and_what() {
        let (index, minted) = indexed(|_| {});
        let Verdict::Valid(grant) = verdict(&index, &minted, &ANY, now()) else {
            panic!("valid");
        };
        assert_eq!(&*grant.api_key, "ns/ci");
        assert_eq!(&*grant.owner, "alice@example.com");
        assert_eq!(&*grant.project, "payments");
        assert_eq!(grant.key_id, key::key_id(&minted));
        let v = verdict(&index, &minted, &named(&["other", "payments"]), now());
        assert_eq!(v.outcome(), "valid");
    }

    #[test]
    fn missing_unreadable_and_malformed_keys_are_refused_before_any_lookup() {
        let index = Index::default();
        let refused = |c| verify(&index, c, &ANY, now());
        assert_eq!(refused(Credential::Absent).outcome(), "missing");
        assert_eq!(refused(Credential::Unreadable).outcome(), "malformed");
        let minted = key::mint().expect("mint");
        let mut typo = minted.expose().to_owned();
        let last = if typo.ends_with('0') { "1" } else { "0" };
        typo.replace_range(typo.len() - 1.., last);
        let v = refused(Credential::Key(&typo));
        assert_eq!(
            v,
            Verdict::Denied {
                denial: Denial::Malformed,
                key_id: None
            }
        );
        let v = refused(Credential::Key(minted.expose()));
        assert_eq!(v.outcome(), "unknown");
        assert_eq!(v.key_id(), Some(key::key_id(&minted).as_str()));
    }

    #[test]
    fn the_key_id_is_the_keys_with_or_without_one_recorded() {
        let (index, minted) = indexed(|p| p.key_id = Some("not an id".into()));
        let v = verdict(&index, &minted, &ANY, now());
        assert_eq!(v.key_id(), Some(key::key_id(&minted).as_str()));
    }

    #[test]
    fn a_key_being_deleted_is_refused_at_once() {
        let (index, minted) = indexed(|p| p.deleting = true);
        assert_eq!(verdict(&index, &minted, &ANY, now()).outcome(), "revoked");
    }

    #[test]
    fn expires_at_is_enforced_by_the_verifiers_clock_from_that_instant_on() {
        let at = now();
        let (index, minted) = indexed(|p| p.expires_at = Some(at));
        let just_before = at - jiff::SignedDuration::from_millis(1);
        assert_eq!(
            verdict(&index, &minted, &ANY, just_before).outcome(),
            "valid"
        );
        assert_eq!(verdict(&index, &minted, &ANY, at).outcome(), "expired");
    }

    #[test]
    fn a_key_of_another_project_is_forbidden_not_unauthenticated() {
        let (index, minted) = indexed(|_| {});
        let v = verdict(&index, &minted, &named(&["billing"]), now());
        assert_eq!(v.outcome(), "wrong-project");
        let Verdict::Denied { denial, .. } = v else {
            panic!("denied");
        };
        assert!(denial.forbidden());
        assert!(Denial::ALL.iter().filter(|d| d.forbidden()).count() == 1);
    }

    #[test]
    fn denials_are_listed_in_declaration_order() {
        for (i, denial) in Denial::ALL.iter().enumerate() {
            assert_eq!(*denial as usize, i, "{denial:?}");
        }
    }

    #[test]
    fn a_contested_hash_verifies_as_nobodys() {
        let (mut index, minted) = indexed(|_| {});
        let p = projection(index::digest(&minted), "payments");
        index.apply("other/copy", Some(p));
        assert_eq!(verdict(&index, &minted, &ANY, now()).outcome(), "unknown");
    }

    #[test]
    fn no_verdict_carries_the_key() {
        let (index, minted) = indexed(|_| {});
        let body = &minted.expose()[4..20];
        for projects in [ANY, named(&["billing"])] {
            let shown = format!("{:?}", verdict(&index, &minted, &projects, now()));
            assert!(!shown.contains(body), "{shown}");
        }
    }
}
