//! What happened to an ApiKey: the one list of actions shared by the
//! status's transition records, the Events and the audit stream. Its names
//! (kebab-case) are what the CRD schema enumerates and what audit entries
//! store, so an action never travels as free text parsed back with a
//! fallback. Pure.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An action. The lifecycle's transitions are all but the last three.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Minted,
    Rejected,
    Conflict,
    ExpiringSoon,
    Expired,
    SecretLost,
    SecretTampered,
    /// A lost or tampered Secret holds the minted key again (someone put the
    /// original back).
    SecretRestored,
    /// A show-once key was shown to the person who created it, and its
    /// Secret deleted: the key exists nowhere in the cluster (it still
    /// verifies by its hash).
    Revealed,
    /// A show-once key nobody acknowledged seeing within the reveal window:
    /// its Secret was deleted and the key no longer verifies.
    NeverShown,
    /// The ApiKey was deleted (recorded by its finalizer, never in status).
    Deleted,
    /// The ApiKey was deleted without its finalizer running (someone else
    /// removed it): found gone at start-up, recorded with what keymint last
    /// knew; its Secret is deleted by the garbage collector.
    DeletedUnobserved,
    /// Audit retention removed old segments (a stream entry, no ApiKey).
    Pruned,
}

impl Action {
    pub const ALL: [Action; 13] = [
        Action::Minted,
        Action::Rejected,
        Action::Conflict,
        Action::ExpiringSoon,
        Action::Expired,
        Action::SecretLost,
        Action::SecretTampered,
        Action::SecretRestored,
        Action::Revealed,
        Action::NeverShown,
        Action::Deleted,
        Action::DeletedUnobserved,
        Action::Pruned,
    ];

    /// The serialised name, e.g. `"expiring-soon"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Minted => "minted",
            Action::Rejected => "rejected",
            Action::Conflict => "conflict",
            Action::ExpiringSoon => "expiring-soon",
            Action::Expired => "expired",
            Action::SecretLost => "secret-lost",
            Action::SecretTampered => "secret-tampered",
            Action::SecretRestored => "secret-restored",
            Action::Revealed => "revealed",
            Action::NeverShown => "never-shown",
            Action::Deleted => "deleted",
            Action::DeletedUnobserved => "deleted-unobserved",
            Action::Pruned => "pruned",
        }
    }

    /// Inverse of [`Action::as_str`] (for `keymint audit --action ...`).
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle transition: an action that a status change makes, and so
/// one that `status.lastTransitions` may record (all but deletion and
/// pruning). Its names are [`Action`]'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    Minted,
    Rejected,
    Conflict,
    ExpiringSoon,
    Expired,
    SecretLost,
    SecretTampered,
    SecretRestored,
    Revealed,
    NeverShown,
}

impl From<Transition> for Action {
    fn from(t: Transition) -> Action {
        match t {
            Transition::Minted => Action::Minted,
            Transition::Rejected => Action::Rejected,
            Transition::Conflict => Action::Conflict,
            Transition::ExpiringSoon => Action::ExpiringSoon,
            Transition::Expired => Action::Expired,
            Transition::SecretLost => Action::SecretLost,
            Transition::SecretTampered => Action::SecretTampered,
            Transition::SecretRestored => Action::SecretRestored,
            Transition::Revealed => Action::Revealed,
            Transition::NeverShown => Action::NeverShown,
        }
    }
}

impl TryFrom<Action> for Transition {
    type Error = Action;

    /// The transition an action is; deletion and pruning are none.
    fn try_from(action: Action) -> Result<Transition, Action> {
        Ok(match action {
            Action::Minted => Transition::Minted,
            Action::Rejected => Transition::Rejected,
            Action::Conflict => Transition::Conflict,
            Action::ExpiringSoon => Transition::ExpiringSoon,
            Action::Expired => Transition::Expired,
            Action::SecretLost => Transition::SecretLost,
            Action::SecretTampered => Transition::SecretTampered,
            Action::SecretRestored => Transition::SecretRestored,
            Action::Revealed => Transition::Revealed,
            Action::NeverShown => Transition::NeverShown,
            Action::Deleted | Action::DeletedUnobserved | Action::Pruned => return Err(action),
        })
    }
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        Action::from(self).as_str()
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Transition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Action::from(*self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Transition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let action = Action::deserialize(deserializer)?;
        Transition::try_from(action)
            .map_err(|a| serde::de::Error::custom(format!("{a} is not a transition")))
    }
}

impl schemars::JsonSchema for Transition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Transition".into()
    }

    /// The names of the actions that are transitions, so the API server
    /// refuses any other text in a status.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Action::ALL
            .into_iter()
            .filter(|a| Transition::try_from(*a).is_ok())
            .map(|a| a.as_str())
            .collect();
        schemars::json_schema!({"type": "string", "enum": names})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
            let json = serde_json::to_value(action).expect("serialises");
            assert_eq!(json, action.as_str());
        }
        assert_eq!(Action::parse("revealed-ish"), None);
    }

    #[test]
    fn transitions_are_the_actions_but_deletion_and_pruning() {
        for action in Action::ALL {
            match Transition::try_from(action) {
                Ok(t) => assert_eq!(Action::from(t), action),
                Err(a) => assert!(matches!(
                    a,
                    Action::Deleted | Action::DeletedUnobserved | Action::Pruned
                )),
            }
        }
        let read: Result<Transition, _> = serde_json::from_str("\"deleted\"");
        assert!(read.is_err(), "deletion is no transition");
        let read: Transition = serde_json::from_str("\"expiring-soon\"").expect("reads");
        assert_eq!(read, Transition::ExpiringSoon);
    }

    #[test]
    fn the_schema_enumerates_transitions_only() {
        let schema = schemars::schema_for!(Transition);
        let schema = serde_json::to_value(schema).expect("json");
        let names = schema["enum"].as_array().expect("enum");
        assert_eq!(names.len(), 10);
        assert!(!names.contains(&"deleted".into()) && !names.contains(&"pruned".into()));
    }
}
