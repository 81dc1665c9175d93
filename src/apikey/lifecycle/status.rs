//! The status to show for an outcome. Key id, hash and mint time, once
//! recorded, are kept through every later phase: they identify the key in
//! Events and audit entries long after it expired or was lost.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::conditions::{self, EXPIRING_SOON, PROJECT_NOT_GRANTED, QUOTA_EXCEEDED, READY, Said};
use super::decide::{KeyRecord, Outcome};
use super::expiry_warning;
use crate::apikey::{ApiKeyStatus, Phase};

/// Everything the status depends on besides the outcome.
pub struct StatusInput<'a> {
    pub current: Option<&'a ApiKeyStatus>,
    /// The key found in a Secret keymint proves it minted, when the status
    /// has none recorded (the operator stopped between creating the Secret
    /// and writing the status): it was minted, whatever happens to it next.
    pub unrecorded_key: Option<KeyRecord>,
    pub generation: Option<i64>,
    pub secret_name: &'a str,
    pub expires_at: Option<Timestamp>,
    pub expiry_warning: Duration,
    pub now: Timestamp,
}

/// The status to show for `outcome`.
pub fn status(input: &StatusInput, outcome: &Outcome) -> ApiKeyStatus {
    let current = input.current.cloned().unwrap_or_default();
    let (phase, reason, message) = describe(outcome, input.secret_name);
    let key = recorded_key(&current, input, outcome);
    let conditions = conditions_for(&current, input, phase, reason, &message);
    let expiry_warned_at = expiry_warned_at(&current, &conditions, input);
    ApiKeyStatus {
        phase: Some(phase),
        conditions,
        observed_generation: input.generation,
        key_id: key.key_id,
        key_hash: key.key_hash,
        secret_name: Some(input.secret_name.to_string()),
        minted_at: key.minted_at,
        revealed_at: match outcome {
            Outcome::Revealed => current.revealed_at.clone().or(Some(Time(input.now))),
            _ => current.revealed_at.clone(),
        },
        expiry_warned_at,
        // Replaced only when this status change is itself a transition.
        last_transitions: current.last_transitions,
    }
}

/// Phase, Ready reason and message of an outcome, in keymint's words.
fn describe(outcome: &Outcome, secret: &str) -> (Phase, &'static str, String) {
    match outcome {
        Outcome::Active { .. } => (
            Phase::Active,
            "Minted",
            format!("the key is in Secret {secret}"),
        ),
        Outcome::Revealed => (
            Phase::Active,
            "Revealed",
            format!(
                "the key was shown once and Secret {secret} deleted: it exists nowhere in the cluster, and still verifies"
            ),
        ),
        Outcome::Rejected { message } => (Phase::Rejected, QUOTA_EXCEEDED, message.clone()),
        Outcome::ProjectNotGranted { message } => {
            (Phase::Rejected, PROJECT_NOT_GRANTED, message.clone())
        }
        Outcome::Retrying { reason, message } => (Phase::Pending, reason, message.clone()),
        Outcome::Conflict => (
            Phase::Conflict,
            "SecretConflict",
            format!(
                "Secret {secret} exists and keymint did not mint it (whatever its owner references and annotations say); nothing was minted and no quota slot is held. Delete or rename that Secret, or set spec.secretName"
            ),
        ),
        Outcome::Expired => (
            Phase::Expired,
            "Expired",
            "expiresAt has passed; the key material was deleted".to_string(),
        ),
        Outcome::Lost => (
            Phase::SecretLost,
            "SecretLost",
            format!(
                "Secret {secret} was deleted or replaced; keymint never re-mints. Delete this ApiKey and create a new one for a new key"
            ),
        ),
        Outcome::NeverShown => (
            Phase::NeverShown,
            "NeverShown",
            format!(
                "nobody acknowledged seeing this show-once key within the reveal window: Secret {secret} was deleted and the key no longer verifies. Delete this ApiKey and create a new one"
            ),
        ),
        Outcome::Tampered => (
            Phase::SecretTampered,
            "SecretTampered",
            format!(
                "Secret {secret} no longer holds the minted key; treat the key as compromised, delete this ApiKey and create a new one"
            ),
        ),
    }
}

/// Key id, hash and mint time as the status records them after this change.
struct RecordedKey {
    key_id: Option<String>,
    key_hash: Option<String>,
    minted_at: Option<Time>,
}

/// The key the status records after this change: the one just minted,
/// adopted or verified; else one found in a Secret keymint proves it minted
/// that the status never recorded; else what was recorded before.
fn recorded_key(current: &ApiKeyStatus, input: &StatusInput, outcome: &Outcome) -> RecordedKey {
    let record = |k: &KeyRecord| RecordedKey {
        key_id: Some(k.key_id.clone()),
        key_hash: Some(k.key_hash.clone()),
        minted_at: k.minted_at.map(Time),
    };
    match (outcome, &input.unrecorded_key) {
        (
            Outcome::Active {
                key_id,
                key_hash,
                minted_at,
            },
            _,
        ) => RecordedKey {
            key_id: Some(key_id.clone()),
            key_hash: Some(key_hash.clone()),
            // A key keeps the mint time first recorded for it.
            minted_at: current.minted_at.clone().or(minted_at.map(Time)),
        },
        (_, Some(found)) if current.key_hash.is_none() => record(found),
        _ => RecordedKey {
            key_id: current.key_id.clone(),
            key_hash: current.key_hash.clone(),
            minted_at: current.minted_at.clone(),
        },
    }
}

/// Ready first; then Reconciling or Stalled for the phases that raise one;
/// then ExpiringSoon for an Active key with an expiry.
fn conditions_for(
    current: &ApiKeyStatus,
    input: &StatusInput,
    phase: Phase,
    reason: &str,
    message: &str,
) -> Vec<Condition> {
    let stamp = |said: Said| conditions::stamp(current, &said, input.generation, Time(input.now));
    let mut out = vec![stamp(Said {
        type_: READY,
        status: phase == Phase::Active,
        reason,
        message,
    })];
    if let Some(type_) = conditions::progress(phase) {
        out.push(stamp(Said {
            type_,
            status: true,
            reason,
            message,
        }));
    }
    if let (Phase::Active, Some(expires_at)) = (phase, input.expires_at) {
        let soon = input.now >= expires_at - to_signed(input.expiry_warning);
        out.push(stamp(Said {
            type_: EXPIRING_SOON,
            status: soon,
            reason: if soon {
                "ExpiresSoon"
            } else {
                "NotExpiringSoon"
            },
            message: &format!("the key expires at {expires_at}"),
        }));
    }
    out
}

/// When the key was last warned of its expiry after this change: now, if
/// ExpiringSoon turns True and `expiry_warning::warns` says it is a warning
/// (it then makes the ExpiringSoon transition); else as before.
fn expiry_warned_at(
    current: &ApiKeyStatus,
    conditions: &[Condition],
    input: &StatusInput,
) -> Option<Time> {
    let last = current.expiry_warned_at.clone();
    let soon = conditions::true_among(
        conditions.iter().map(|c| (&*c.type_, &*c.status)),
        EXPIRING_SOON,
    );
    let turns_true = soon && !conditions::expiring_soon(Some(current));
    let at = last.as_ref().map(|t| t.0);
    match turns_true && expiry_warning::warns(at, input.now, input.expiry_warning) {
        true => Some(Time(input.now)),
        false => last,
    }
}

/// Whether `desired` differs from `current` in anything but condition
/// timestamps (which `status` already preserves): the only case that
/// warrants a write.
pub fn needs_write(current: Option<&ApiKeyStatus>, desired: &ApiKeyStatus) -> bool {
    current != Some(desired)
}

pub(super) fn to_signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}
