//! The decision: from an ApiKey's status, its expiry, the clock and the
//! Secret under its name to the next step — either settled (the status to
//! show follows from what was observed) or an act that needs API calls.

use jiff::Timestamp;

use crate::apikey::secret::Observed;
use crate::apikey::{ApiKey, ApiKeyStatus, Phase};

/// What to do with an ApiKey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to change in the cluster: the status shows this outcome.
    Settled(Outcome),
    /// Never minted and not expired: ask the quota ledger for a slot, then
    /// mint.
    RequestSlot,
    /// `expiresAt` has passed: delete our Secret (the one with this UID), if
    /// it is still there.
    Expire { delete_secret: Option<String> },
    /// Never minted, and a Secret that is not ours holds the name: give back
    /// any slot the key was admitted to.
    Conflict,
}

/// The result of a step: what the status should say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The key is in its Secret: just minted, adopted or verified.
    Active {
        key_id: String,
        key_hash: String,
        minted_at: Option<Timestamp>,
    },
    /// No slot: the owner's quota for the project is full, or older keys are
    /// ahead in line.
    Rejected {
        message: String,
    },
    Conflict,
    Expired,
    /// Not minted yet because a call failed; keymint retries. `reason` is
    /// the failure's category, `message` names the call and the object.
    Retrying {
        reason: &'static str,
        message: String,
    },
    /// Minted, but the Secret is gone or was replaced by one that is not ours.
    Lost,
    /// Minted, but the Secret no longer holds the minted key.
    Tampered,
    /// A show-once key whose Secret is gone: shown to its person and
    /// deleted, as designed. Still Active: it verifies by its hash.
    Revealed,
    /// Never minted: its namespace is not granted its project (`grant`).
    /// It takes no slot, and is looked at again when the grant changes.
    ProjectNotGranted {
        message: String,
    },
}

/// A minted key as status records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub key_hash: String,
    pub minted_at: Option<Timestamp>,
}

/// Decides the next step. Expiry comes first (an expired key never mints and
/// an expired Secret is always deleted); then a key that was minted is
/// verified — a show-once key's Secret is meant to go; only a key never
/// minted may request a slot.
pub fn decide(
    status: Option<&ApiKeyStatus>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
    secret: &Observed,
    show_once: bool,
) -> Step {
    let already_expired = status.and_then(|s| s.phase) == Some(Phase::Expired);
    if already_expired || expires_at.is_some_and(|t| t <= now) {
        let delete_secret = match secret {
            Observed::Ours { uid, .. } => uid.clone(),
            _ => None,
        };
        return Step::Expire { delete_secret };
    }
    let recorded = status.and_then(|s| s.key_hash.as_deref());
    match secret {
        Observed::Missing if minted(status) && show_once => Step::Settled(Outcome::Revealed),
        Observed::Missing | Observed::Foreign if minted(status) => Step::Settled(Outcome::Lost),
        Observed::Ours { content_hash, .. } if recorded.is_some() => {
            match content_hash.as_deref() == recorded {
                true => Step::Settled(recorded_key(status)),
                false => Step::Settled(Outcome::Tampered),
            }
        }
        Observed::Ours { .. } => adopt(secret),
        Observed::Foreign => Step::Conflict,
        Observed::Missing => Step::RequestSlot,
    }
}

/// Whether a key was minted for this ApiKey: its hash is recorded, or its
/// phase is one only a minted key reaches. Such a key is never minted again.
pub fn minted(status: Option<&ApiKeyStatus>) -> bool {
    status.is_some_and(|s| {
        s.key_hash.is_some()
            || matches!(
                s.phase,
                Some(Phase::Active | Phase::SecretLost | Phase::SecretTampered)
            )
    })
}

/// The one rule for "waits for a slot": not being deleted, never minted,
/// not ended (Conflict, Expired, Lost, Tampered) and not expired at `now`.
/// Exactly the keys for which [`decide`] says [`Step::RequestSlot`] when no
/// Secret holds their name — so the waiting index, the admission order and
/// the skipped Secret read all agree on who is in line.
pub fn waits_for_slot(api_key: &ApiKey, now: Timestamp) -> bool {
    let status = api_key.status.as_ref();
    api_key.metadata.deletion_timestamp.is_none()
        && !minted(status)
        && matches!(
            status.and_then(|s| s.phase),
            None | Some(Phase::Pending | Phase::Rejected)
        )
        && api_key.spec.expires_at.as_ref().is_none_or(|t| t.0 > now)
}

/// Our Secret, but no key recorded: an attempt stopped between creating
/// the Secret and writing the status. Record the key it holds — never mint
/// a second one — unless its content no longer matches what was minted.
fn adopt(secret: &Observed) -> Step {
    match secret {
        Observed::Ours {
            content_hash: Some(content),
            annotated_hash: Some(annotated),
            key_id,
            created,
            ..
        } if content == annotated => Step::Settled(Outcome::Active {
            key_id: key_id.clone().unwrap_or_default(),
            key_hash: content.clone(),
            minted_at: *created,
        }),
        _ => Step::Settled(Outcome::Tampered),
    }
}

/// The key the status records, as an Active outcome.
fn recorded_key(status: Option<&ApiKeyStatus>) -> Outcome {
    Outcome::Active {
        key_id: status.and_then(|s| s.key_id.clone()).unwrap_or_default(),
        key_hash: status.and_then(|s| s.key_hash.clone()).unwrap_or_default(),
        minted_at: status.and_then(|s| s.minted_at.as_ref()).map(|t| t.0),
    }
}

/// The key in our Secret when the status does not record one yet: minted
/// by an attempt that stopped before writing the status. It was minted,
/// whatever happens to it next.
pub fn unrecorded_key(status: Option<&ApiKeyStatus>, observed: &Observed) -> Option<KeyRecord> {
    if status.and_then(|s| s.key_hash.as_ref()).is_some() {
        return None;
    }
    match observed {
        Observed::Ours {
            content_hash,
            annotated_hash,
            key_id,
            created,
            ..
        } => Some(KeyRecord {
            key_id: key_id.clone().unwrap_or_default(),
            key_hash: annotated_hash.clone().or_else(|| content_hash.clone())?,
            minted_at: *created,
        }),
        _ => None,
    }
}
