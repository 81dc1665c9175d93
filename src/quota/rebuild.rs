//! A missing ledger rebuilt from the ApiKeys: which keys hold a slot when no
//! ledger says so. Pure: the controller's slot requests (`quota::slots`)
//! and the protocol model (`tests/quota_model.rs`) both run this function.
//!
//! A ledger goes missing on a pair's first key (nothing to rebuild) and when
//! keymint's namespace is deleted and re-created with keys still Active
//! (everything to rebuild). Reading a missing ledger as empty would let
//! every owner mint another full quota on top of the keys still in use.

use kube::ResourceExt;

use super::admission::slot_freed;
use super::ledger::{Entry, Ledger, Pair};
use crate::apikey::{ApiKey, ApiKeyStatus};

/// Whether a key holds a slot as far as its status tells: a key was minted
/// for it (its hash is recorded) and it has not ended (not Expired). Lost,
/// tampered, never-shown and being-deleted keys count: the protocol releases
/// their slots only once the ApiKey is gone, and over-counting is safe.
/// A key admitted but not minted yet does not count: it asks for a slot
/// again.
pub fn holds_slot(status: Option<&ApiKeyStatus>) -> bool {
    status.is_some_and(|s| s.key_hash.is_some()) && !slot_freed(status)
}

/// The ledger of `pair` as the ApiKeys tell it: every key of the pair that
/// [`holds_slot`], whatever the limit (a pair already over a lowered limit
/// stays over it until keys end).
pub fn ledger<'a>(pair: &Pair<'_>, keys: impl IntoIterator<Item = &'a ApiKey>) -> Ledger {
    let mut ledger = Ledger::default();
    for key in keys {
        let of_pair = key.spec.project == pair.project && key.spec.owner == pair.owner;
        let Some(uid) = key.uid() else { continue };
        if of_pair && holds_slot(key.status.as_ref()) {
            let minted_at = key.status.as_ref().and_then(|s| s.minted_at.as_ref());
            let entry = Entry {
                namespace: key.namespace().unwrap_or_default(),
                name: key.name_any(),
                admitted_at: minted_at.map_or(0, |t| t.0.as_millisecond()),
            };
            ledger.restore(&uid, entry);
        }
    }
    ledger
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::apikey::Phase;

    fn key(uid: &str, project: &str, owner: &str, status: Option<ApiKeyStatus>) -> ApiKey {
        let spec = serde_json::from_value(serde_json::json!({"project": project, "owner": owner}))
            .expect("spec");
        let mut k = ApiKey::new(uid, spec);
        k.metadata.namespace = Some("ns".into());
        k.metadata.uid = Some(uid.into());
        k.status = status;
        k
    }

    fn status(phase: Phase, hash: bool) -> Option<ApiKeyStatus> {
        Some(ApiKeyStatus {
            phase: Some(phase),
            key_hash: hash.then(|| "sha256:00".to_string()),
            minted_at: hash.then(|| Time(Timestamp::from_second(7).expect("time"))),
            ..ApiKeyStatus::default()
        })
    }

    const PAIR: Pair<'static> = Pair {
        project: "p",
        owner: "alice",
    };

    #[test]
    fn minted_keys_that_have_not_ended_hold_slots() {
        for phase in [
            Phase::Active,
            Phase::SecretLost,
            Phase::SecretTampered,
            Phase::NeverShown,
        ] {
            assert!(holds_slot(status(phase, true).as_ref()), "{phase:?}");
        }
        assert!(!holds_slot(status(Phase::Expired, true).as_ref()));
        for phase in [Phase::Pending, Phase::Rejected, Phase::Conflict] {
            assert!(!holds_slot(status(phase, false).as_ref()), "{phase:?}");
        }
        assert!(!holds_slot(None));
    }

    #[test]
    fn a_rebuilt_ledger_holds_the_pairs_minted_keys_beyond_any_limit() {
        let keys: Vec<ApiKey> = (0..30)
            .map(|n| {
                key(
                    &format!("u{n:02}"),
                    "p",
                    "alice",
                    status(Phase::Active, true),
                )
            })
            .chain([
                key("other-owner", "p", "bob", status(Phase::Active, true)),
                key("other-project", "q", "alice", status(Phase::Active, true)),
                key("expired", "p", "alice", status(Phase::Expired, true)),
                key("waiting", "p", "alice", status(Phase::Rejected, false)),
                key("new", "p", "alice", None),
            ])
            .collect();
        let ledger = ledger(&PAIR, &keys);
        assert_eq!(ledger.admitted(), 30);
        let entry = ledger.get("u07").expect("rebuilt");
        assert_eq!(
            (entry.namespace.as_str(), entry.name.as_str()),
            ("ns", "u07")
        );
        assert_eq!(entry.admitted_at, 7_000);
        for absent in ["other-owner", "other-project", "expired", "waiting", "new"] {
            assert!(ledger.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn no_minted_key_rebuilds_an_empty_ledger() {
        let keys = [key("new", "p", "alice", None)];
        assert_eq!(ledger(&PAIR, &keys), Ledger::default());
    }
}
