//! What an ApiKey's status means to the person waiting for it, and which
//! keys hold the slots of a full quota. Pure.

use kube::ResourceExt;

use crate::apikey::{ApiKey, Phase};

/// Where a freshly created ApiKey stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No status yet, or Pending: keymint has not decided.
    Waiting,
    /// Minted: the key is in its Secret.
    Active,
    /// keymint decided against minting: the phase and the Ready message.
    Failed { phase: Phase, message: String },
}

pub fn verdict(api_key: &ApiKey) -> Verdict {
    let status = api_key.status.as_ref();
    match status.and_then(|s| s.phase) {
        None | Some(Phase::Pending) => Verdict::Waiting,
        Some(Phase::Active) => Verdict::Active,
        Some(phase) => Verdict::Failed {
            phase,
            message: ready_message(api_key).unwrap_or_else(|| format!("{phase:?}")),
        },
    }
}

/// The Ready condition's message: the status's own explanation.
pub fn ready_message(api_key: &ApiKey) -> Option<String> {
    api_key
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == crate::apikey::lifecycle::conditions::READY)
        .map(|c| c.message.clone())
        .filter(|m| !m.is_empty())
}

/// The keys that count against `owner`'s quota in `project`, oldest first,
/// other than `me`: minted (a key hash is recorded) and not expired. A lost
/// or tampered key still holds its slot until it is deleted, so it is named
/// with its phase. Keys in `namespace` are named bare, others as `ns/name`.
pub fn slot_holders(
    keys: &[ApiKey],
    project: &str,
    owner: &str,
    me: &str,
    namespace: &str,
) -> Vec<String> {
    let mut holders: Vec<&ApiKey> = keys
        .iter()
        .filter(|k| k.spec.project == project && k.spec.owner == owner)
        .filter(|k| k.uid().as_deref() != Some(me))
        .filter(|k| {
            k.status
                .as_ref()
                .is_some_and(|s| s.key_hash.is_some() && s.phase != Some(Phase::Expired))
        })
        .collect();
    holders.sort_by_key(|k| (k.creation_timestamp().map(|t| t.0), k.name_any()));
    holders
        .into_iter()
        .map(|k| {
            let name = match k.namespace() {
                Some(ns) if ns != namespace => format!("{ns}/{}", k.name_any()),
                _ => k.name_any(),
            };
            match k.status.as_ref().and_then(|s| s.phase) {
                Some(Phase::Active) | None => name,
                Some(phase) => format!("{name} ({phase:?})"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::{ApiKeySpec, ApiKeyStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn key(name: &str, ns: &str, phase: Option<Phase>, minted: bool, age: i64) -> ApiKey {
        let mut k = ApiKey::new(
            name,
            ApiKeySpec {
                project: "payments".into(),
                owner: "alice".into(),
                description: None,
                expires_at: None,
                secret_name: None,
                secret_template: None,
                show_once: None,
            },
        );
        k.metadata.namespace = Some(ns.into());
        k.metadata.uid = Some(format!("uid-{name}"));
        k.metadata.creation_timestamp = Some(Time(
            jiff::Timestamp::from_second(1_800_000_000 - age).expect("time"),
        ));
        k.status = phase.map(|phase| ApiKeyStatus {
            phase: Some(phase),
            key_hash: minted.then(|| "sha256:00".to_string()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "QuotaExceeded".into(),
                message: "quota full: alice has 2 of 2 keys".into(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..ApiKeyStatus::default()
        });
        k
    }

    #[test]
    fn only_pending_or_no_status_is_worth_waiting_for() {
        assert_eq!(verdict(&key("a", "ns", None, false, 0)), Verdict::Waiting);
        let pending = key("a", "ns", Some(Phase::Pending), false, 0);
        assert_eq!(verdict(&pending), Verdict::Waiting);
        let active = key("a", "ns", Some(Phase::Active), true, 0);
        assert_eq!(verdict(&active), Verdict::Active);
        assert_eq!(
            verdict(&key("a", "ns", Some(Phase::Rejected), false, 0)),
            Verdict::Failed {
                phase: Phase::Rejected,
                message: "quota full: alice has 2 of 2 keys".into()
            }
        );
    }

    #[test]
    fn slot_holders_are_the_minted_unexpired_keys_oldest_first() {
        let keys = vec![
            key("newer", "ns", Some(Phase::Active), true, 10),
            key("older", "other", Some(Phase::Active), true, 20),
            key("lost", "ns", Some(Phase::SecretLost), true, 5),
            key("gone", "ns", Some(Phase::Expired), true, 30),
            key("waiting", "ns", Some(Phase::Rejected), false, 40),
            key("me", "ns", Some(Phase::Rejected), false, 1),
        ];
        assert_eq!(
            slot_holders(&keys, "payments", "alice", "uid-me", "ns"),
            vec!["other/older", "newer", "lost (SecretLost)"]
        );
        assert!(slot_holders(&keys, "payments", "bob", "uid-me", "ns").is_empty());
        assert!(slot_holders(&keys, "billing", "alice", "uid-me", "ns").is_empty());
    }
}
