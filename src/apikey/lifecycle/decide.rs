//! The decision: from an ApiKey's status, its expiry, the clock and the
//! Secret under its name to the next step — either settled (the status to
//! show follows from what was observed) or an act that needs API calls.

use jiff::Timestamp;

use super::reveal::{self, Reveal, ShowOnce};
use crate::apikey::secret::{Observed, ProvenKey};
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
    /// Never minted, and a Secret keymint did not mint for this ApiKey holds
    /// the name (whatever its ownerReferences say): give back any slot the
    /// key was admitted to, mint nothing.
    Conflict,
    /// A show-once key nobody acknowledged within its reveal window: delete
    /// our Secret (the one with this UID), if it is still there.
    NeverShown { delete_secret: Option<String> },
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
    /// A show-once key whose Secret is gone and whose owner acknowledged
    /// seeing it (`lifecycle::reveal`). Still Active: it verifies by its hash.
    Revealed,
    /// A show-once key nobody acknowledged within its reveal window: its
    /// Secret deleted, the key no longer verifies.
    NeverShown,
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
/// verified — a show-once key's Secret is meant to go, as `reveal` rules; a
/// Secret is adopted only if keymint proves it minted it; only a key never
/// minted may request a slot.
pub fn decide(
    status: Option<&ApiKeyStatus>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
    secret: &Observed,
    show_once: Option<&ShowOnce>,
) -> Step {
    let already_expired = status.and_then(|s| s.phase) == Some(Phase::Expired);
    if already_expired || expires_at.is_some_and(|t| t <= now) {
        // A Secret that names this ApiKey as its controller goes with it in
        // any case (the garbage collector deletes it with the ApiKey): at
        // expiry the key material goes, whoever wrote it.
        let delete_secret = match secret {
            Observed::Controlled { uid, .. } => uid.clone(),
            _ => None,
        };
        return Step::Expire { delete_secret };
    }
    if let (Some(show_once), Some(current)) = (show_once, status)
        && minted(status)
    {
        match reveal::reveal(show_once, current, secret, now) {
            Reveal::Revealed => return Step::Settled(Outcome::Revealed),
            Reveal::Awaiting => return Step::Settled(recorded_key(status)),
            Reveal::NeverShown { delete_secret } => return Step::NeverShown { delete_secret },
            Reveal::Verify => {}
        }
    }
    let recorded = status.and_then(|s| s.key_hash.as_deref());
    match secret {
        Observed::Missing | Observed::Foreign if minted(status) => Step::Settled(Outcome::Lost),
        // The recorded key is checked by its content, seal or none: Secrets
        // minted before seals existed have none, and the content is the
        // recorded key.
        Observed::Controlled { content_hash, .. } if recorded.is_some() => {
            match content_hash.as_deref() == recorded {
                true => Step::Settled(recorded_key(status)),
                false => Step::Settled(Outcome::Tampered),
            }
        }
        Observed::Controlled {
            proven: Some(key), ..
        } => Step::Settled(adopt(key)),
        // Minted, with no hash recorded (a status an older keymint wrote),
        // and the Secret proves nothing: never minted again, nothing taken
        // from it.
        Observed::Controlled { .. } if minted(status) => Step::Settled(Outcome::Tampered),
        Observed::Controlled { .. } | Observed::Foreign => Step::Conflict,
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
                Some(Phase::Active | Phase::SecretLost | Phase::SecretTampered | Phase::NeverShown)
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

/// Whether keymint is about to mint this key: never minted, not being
/// deleted, and nothing decided about it yet (no phase, or Pending — a
/// first attempt, or one retried after a failed call). Only such a key's
/// `secretTemplate` is kept in the controller's cache: a Rejected,
/// Conflict or Expired key may be declared by the thousand and mint
/// nothing, and a minted one never mints again. A key that is not about
/// to mint and still reaches a mint (admitted from the waiting line, or a
/// Conflict whose Secret went away) has its template read from the API
/// server at that moment. A pure function of the object, with no clock:
/// the cache and the mint judge the same object alike.
pub fn about_to_mint(api_key: &ApiKey) -> bool {
    let status = api_key.status.as_ref();
    api_key.metadata.deletion_timestamp.is_none()
        && !minted(status)
        && matches!(status.and_then(|s| s.phase), None | Some(Phase::Pending))
}

/// A Secret keymint proves it minted for this ApiKey, but no key recorded:
/// an attempt stopped between creating the Secret and writing the status.
/// Record the key it holds — never mint a second one.
fn adopt(key: &ProvenKey) -> Outcome {
    Outcome::Active {
        key_id: key.key_id.clone(),
        key_hash: key.key_hash.clone(),
        minted_at: key.created,
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

/// The key in a Secret keymint proves it minted, when the status does not
/// record one yet: minted by an attempt that stopped before writing the
/// status. It was minted, whatever happens to it next. Nothing else a
/// Secret holds is ever recorded.
pub fn unrecorded_key(status: Option<&ApiKeyStatus>, observed: &Observed) -> Option<KeyRecord> {
    if status.and_then(|s| s.key_hash.as_ref()).is_some() {
        return None;
    }
    match observed {
        Observed::Controlled {
            proven: Some(key), ..
        } => Some(KeyRecord {
            key_id: key.key_id.clone(),
            key_hash: key.key_hash.clone(),
            minted_at: key.created,
        }),
        _ => None,
    }
}
