//! The ApiKey lifecycle as pure functions: from what keymint observed to
//! what it should do, the status it should show, the transitions to report
//! and when to look again. No API calls here; `reconcile` does those.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::apikey::secret::Observed;
use crate::apikey::{ApiKeyStatus, Phase, TransitionRecord};

/// What to do with an ApiKey, decided from its status, its expiry, the clock
/// and the Secret under its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not minted and not expired: ask the quota ledger for a slot, then mint.
    RequestSlot,
    /// The Secret is ours but the status does not record it: the operator
    /// stopped between creating the Secret and writing the status. Record the
    /// existing key; never mint a second one.
    Adopt { key_hash: String },
    /// Minted, and the Secret still holds the minted key.
    Verified,
    /// `expiresAt` has passed: delete our Secret (the one with this UID), if
    /// it is still there, and free the quota slot.
    Expire { delete_secret: Option<String> },
    /// Minted, but the Secret is gone or was replaced by one that is not ours.
    Lost,
    /// Minted, but the Secret no longer holds the minted key.
    Tampered,
    /// Not minted, and a Secret that is not ours holds the name.
    Conflict,
}

/// Decides the next step. Expiry comes first (an expired key never mints and
/// an expired Secret is always deleted); then a key that was minted is
/// verified; only a key never minted may request a slot.
pub fn decide(
    status: Option<&ApiKeyStatus>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
    secret: &Observed,
) -> Step {
    let already_expired = status.and_then(|s| s.phase) == Some(Phase::Expired);
    if already_expired || expires_at.is_some_and(|t| t <= now) {
        let delete_secret = match secret {
            Observed::Ours { uid, .. } => uid.clone(),
            _ => None,
        };
        return Step::Expire { delete_secret };
    }
    match (status.and_then(|s| s.key_hash.as_deref()), secret) {
        (Some(_), Observed::Missing | Observed::Foreign) => Step::Lost,
        (Some(recorded), Observed::Ours { content_hash, .. }) => {
            if content_hash.as_deref() == Some(recorded) {
                Step::Verified
            } else {
                Step::Tampered
            }
        }
        (
            None,
            Observed::Ours {
                content_hash,
                annotated_hash,
                ..
            },
        ) => match (content_hash, annotated_hash) {
            (Some(content), Some(annotated)) if content == annotated => Step::Adopt {
                key_hash: content.clone(),
            },
            _ => Step::Tampered,
        },
        (None, Observed::Foreign) => Step::Conflict,
        (None, Observed::Missing) => Step::RequestSlot,
    }
}

/// Whether the key is still waiting to be minted: no key recorded, not
/// ended, not expired. For such a key [`decide`] can only say
/// [`Step::RequestSlot`] — unless an attempt already created its Secret,
/// which minting finds out (AlreadyExists) and then judges it.
pub fn awaits_minting(
    status: Option<&ApiKeyStatus>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    status.and_then(|s| s.key_hash.as_ref()).is_none()
        && matches!(
            status.and_then(|s| s.phase),
            None | Some(Phase::Pending | Phase::Rejected)
        )
        && expires_at.is_none_or(|t| t > now)
}

/// A minted key as status records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub key_hash: String,
    pub minted_at: Option<Timestamp>,
}

/// The result of acting on a [`Step`]: what the status should say.
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
    Lost,
    Tampered,
}

pub const READY: &str = "Ready";
pub const EXPIRING_SOON: &str = "ExpiringSoon";

/// Everything the status depends on besides the outcome.
pub struct StatusInput<'a> {
    pub current: Option<&'a ApiKeyStatus>,
    /// The key found in our Secret when the status has none recorded (the
    /// operator stopped between creating the Secret and writing the status):
    /// it was minted, whatever happens to it next.
    pub unrecorded_key: Option<KeyRecord>,
    pub generation: Option<i64>,
    pub secret_name: &'a str,
    pub expires_at: Option<Timestamp>,
    pub expiry_warning: Duration,
    pub now: Timestamp,
}

/// The status to show for `outcome`. Key id, hash and mint time, once
/// recorded, are kept through every later phase: they identify the key in
/// Events and audit entries long after it expired or was lost.
pub fn status(input: &StatusInput, outcome: &Outcome) -> ApiKeyStatus {
    let current = input.current.cloned().unwrap_or_default();
    let (phase, reason, message) = match outcome {
        Outcome::Active { .. } => (
            Phase::Active,
            "Minted",
            format!("the key is in Secret {}", input.secret_name),
        ),
        Outcome::Rejected { message } => (Phase::Rejected, "QuotaExceeded", message.clone()),
        Outcome::Conflict => (
            Phase::Conflict,
            "SecretConflict",
            format!(
                "Secret {} exists and is not managed by this ApiKey; nothing was minted. Delete or rename that Secret, or set spec.secretName",
                input.secret_name
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
                "Secret {} was deleted or replaced; keymint never re-mints. Delete this ApiKey and create a new one for a new key",
                input.secret_name
            ),
        ),
        Outcome::Tampered => (
            Phase::SecretTampered,
            "SecretTampered",
            format!(
                "Secret {} no longer holds the minted key; treat the key as compromised, delete this ApiKey and create a new one",
                input.secret_name
            ),
        ),
    };
    let (key_id, key_hash, minted_at) = match outcome {
        Outcome::Active {
            key_id,
            key_hash,
            minted_at,
        } => (
            Some(key_id.clone()),
            Some(key_hash.clone()),
            current.minted_at.clone().or(minted_at.map(Time)),
        ),
        _ if current.key_hash.is_none() && input.unrecorded_key.is_some() => {
            let key = input.unrecorded_key.clone().unwrap_or_default();
            (
                Some(key.key_id),
                Some(key.key_hash),
                key.minted_at.map(Time),
            )
        }
        _ => (
            current.key_id.clone(),
            current.key_hash.clone(),
            current.minted_at.clone(),
        ),
    };

    let ready = condition(
        &current,
        READY,
        if phase == Phase::Active {
            "True"
        } else {
            "False"
        },
        reason,
        &message,
        input,
    );
    let mut conditions = vec![ready];
    if let (Phase::Active, Some(expires_at)) = (phase, input.expires_at) {
        let warn_from = expires_at - to_signed(input.expiry_warning);
        let soon = input.now >= warn_from;
        conditions.push(condition(
            &current,
            EXPIRING_SOON,
            if soon { "True" } else { "False" },
            if soon {
                "ExpiresSoon"
            } else {
                "NotExpiringSoon"
            },
            &format!("the key expires at {expires_at}"),
            input,
        ));
    }

    ApiKeyStatus {
        phase: Some(phase),
        conditions,
        observed_generation: input.generation,
        key_id,
        key_hash,
        secret_name: Some(input.secret_name.to_string()),
        minted_at,
        // Replaced only when this status change is itself a transition.
        last_transitions: current.last_transitions,
    }
}

/// A condition that keeps its `lastTransitionTime` while its status stays
/// the same, so an unchanged state produces an identical status: no write.
fn condition(
    current: &ApiKeyStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    input: &StatusInput,
) -> Condition {
    let previous = current.conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(input.now),
    };
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: input.generation,
        last_transition_time,
    }
}

/// A change worth an Event and an audit entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Minted,
    Rejected,
    Conflict,
    ExpiringSoon,
    Expired,
    SecretLost,
    SecretTampered,
    /// A lost or tampered Secret holds the minted key again (someone put
    /// the original back).
    SecretRestored,
}

impl Transition {
    /// The audit stream's name for it.
    pub fn action(&self) -> &'static str {
        match self {
            Transition::Minted => "minted",
            Transition::Rejected => "rejected",
            Transition::Conflict => "conflict",
            Transition::ExpiringSoon => "expiring-soon",
            Transition::Expired => "expired",
            Transition::SecretLost => "secret-lost",
            Transition::SecretTampered => "secret-tampered",
            Transition::SecretRestored => "secret-restored",
        }
    }

    pub fn from_action(action: &str) -> Option<Transition> {
        [
            Transition::Minted,
            Transition::Rejected,
            Transition::Conflict,
            Transition::ExpiringSoon,
            Transition::Expired,
            Transition::SecretLost,
            Transition::SecretTampered,
            Transition::SecretRestored,
        ]
        .into_iter()
        .find(|t| t.action() == action)
    }
}

/// The highest transition number an ApiKey has used (0: none yet).
pub fn last_transition_number(status: Option<&ApiKeyStatus>) -> u64 {
    status
        .into_iter()
        .flat_map(|s| s.last_transitions.iter())
        .map(|r| r.number)
        .max()
        .unwrap_or(0)
}

/// Numbers `transitions` after the ones `before` recorded: the records the
/// status change carries, so the audit stream can be caught up after a crash.
pub fn number_transitions(
    before: Option<&ApiKeyStatus>,
    transitions: &[Transition],
    time: &str,
    instance: &str,
) -> Vec<TransitionRecord> {
    let first = last_transition_number(before) + 1;
    transitions
        .iter()
        .zip(first..)
        .map(|(t, number)| TransitionRecord {
            number,
            action: t.action().to_string(),
            time: time.to_string(),
            instance: instance.to_string(),
        })
        .collect()
}

/// The transitions between two statuses: a phase change, and the
/// ExpiringSoon condition turning true.
pub fn transitions(before: Option<&ApiKeyStatus>, after: &ApiKeyStatus) -> Vec<Transition> {
    let mut out = Vec::new();
    let old_phase = before.and_then(|s| s.phase);
    // A key recorded for the first time was minted, even if the same
    // change also records what became of it (expired, tampered).
    let minted = before.and_then(|s| s.key_hash.as_ref()).is_none() && after.key_hash.is_some();
    if minted {
        out.push(Transition::Minted);
    }
    if old_phase != after.phase {
        match after.phase {
            Some(Phase::Active)
                if matches!(old_phase, Some(Phase::SecretTampered | Phase::SecretLost)) =>
            {
                out.push(Transition::SecretRestored)
            }
            Some(Phase::Active) => {} // minted, above
            Some(Phase::Rejected) => out.push(Transition::Rejected),
            Some(Phase::Conflict) => out.push(Transition::Conflict),
            Some(Phase::Expired) => out.push(Transition::Expired),
            Some(Phase::SecretLost) => out.push(Transition::SecretLost),
            Some(Phase::SecretTampered) => out.push(Transition::SecretTampered),
            Some(Phase::Pending) | None => {}
        }
    }
    let soon = |s: Option<&ApiKeyStatus>| {
        s.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == EXPIRING_SOON && c.status == "True")
        })
    };
    if soon(Some(after)) && !soon(before) {
        out.push(Transition::ExpiringSoon);
    }
    out
}

/// Whether `desired` differs from `current` in anything but condition
/// timestamps (which `status` already preserves): the only case that
/// warrants a write.
pub fn needs_write(current: Option<&ApiKeyStatus>, desired: &ApiKeyStatus) -> bool {
    current != Some(desired)
}

/// When to reconcile again: at expiry (to delete the key on time), when the
/// warning window opens, and at the periodic verification — whichever comes
/// first. `jitter` in [0, 1) spreads verifications of many keys apart.
pub fn next_check(
    phase: Phase,
    expires_at: Option<Timestamp>,
    now: Timestamp,
    expiry_warning: Duration,
    verify_interval: Duration,
    jitter: f64,
) -> Option<Duration> {
    let verify = verify_interval.mul_f64(1.0 - 0.1 * jitter.clamp(0.0, 1.0));
    let until = |t: Timestamp| -> Option<Duration> {
        let d = t.duration_since(now);
        // A few milliseconds late rather than early: a wake-up before the
        // instant would find nothing to do and have to sleep again.
        (d > SignedDuration::ZERO)
            .then(|| Duration::try_from(d).unwrap_or_default() + Duration::from_millis(5))
    };
    let expiry = expires_at.and_then(until);
    let warning = expires_at.and_then(|t| until(t - to_signed(expiry_warning)));
    let candidates: Vec<Duration> = match phase {
        Phase::Expired => vec![],
        Phase::Active => [Some(verify), expiry, warning]
            .into_iter()
            .flatten()
            .collect(),
        // Waiting keys are woken when a slot frees; the periodic check is a
        // safety net. They still expire on time.
        Phase::Pending | Phase::Rejected | Phase::Conflict => {
            [Some(verify), expiry].into_iter().flatten().collect()
        }
        Phase::SecretLost | Phase::SecretTampered => {
            [Some(verify), expiry].into_iter().flatten().collect()
        }
    };
    candidates.into_iter().min()
}

fn to_signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn minted(hash: &str) -> ApiKeyStatus {
        ApiKeyStatus {
            phase: Some(Phase::Active),
            key_hash: Some(hash.into()),
            ..ApiKeyStatus::default()
        }
    }

    fn ours(content: Option<&str>, annotated: Option<&str>) -> Observed {
        Observed::Ours {
            content_hash: content.map(String::from),
            annotated_hash: annotated.map(String::from),
            uid: Some("secret-uid".into()),
            key_id: Some("km_1".into()),
            created: None,
        }
    }

    const NOW: &str = "2027-01-01T00:00:00Z";

    #[test]
    fn a_new_key_requests_a_slot() {
        assert_eq!(
            decide(None, None, ts(NOW), &Observed::Missing),
            Step::RequestSlot
        );
        let rejected = ApiKeyStatus {
            phase: Some(Phase::Rejected),
            ..ApiKeyStatus::default()
        };
        assert_eq!(
            decide(Some(&rejected), None, ts(NOW), &Observed::Missing),
            Step::RequestSlot
        );
    }

    #[test]
    fn a_key_awaiting_minting_is_one_decide_sends_to_request_a_slot() {
        let future = Some(ts("2027-06-01T00:00:00Z"));
        let past = Some(ts("2026-12-31T23:59:59Z"));
        let with_phase = |phase| ApiKeyStatus {
            phase: Some(phase),
            ..ApiKeyStatus::default()
        };
        let statuses = [
            None,
            Some(with_phase(Phase::Pending)),
            Some(with_phase(Phase::Rejected)),
            Some(with_phase(Phase::Conflict)),
            Some(with_phase(Phase::Expired)),
            Some(minted("h")),
        ];
        for status in &statuses {
            for expires_at in [None, future, past] {
                let awaits = awaits_minting(status.as_ref(), expires_at, ts(NOW));
                // Skipping the Secret read is only sound where a missing
                // Secret leads to minting (which then finds any Secret).
                if awaits {
                    assert_eq!(
                        decide(status.as_ref(), expires_at, ts(NOW), &Observed::Missing),
                        Step::RequestSlot,
                        "{status:?} {expires_at:?}"
                    );
                }
                let expected = status
                    .as_ref()
                    .is_none_or(|s| matches!(s.phase, Some(Phase::Pending | Phase::Rejected)))
                    && expires_at != past;
                assert_eq!(awaits, expected, "{status:?} {expires_at:?}");
            }
        }
    }

    #[test]
    fn an_expired_key_never_mints_and_its_secret_is_deleted() {
        let past = Some(ts("2026-12-31T23:59:59Z"));
        assert_eq!(
            decide(None, past, ts(NOW), &Observed::Missing),
            Step::Expire {
                delete_secret: None
            }
        );
        assert_eq!(
            decide(
                Some(&minted("h")),
                past,
                ts(NOW),
                &ours(Some("h"), Some("h"))
            ),
            Step::Expire {
                delete_secret: Some("secret-uid".into())
            }
        );
        // Expiring exactly now counts as expired.
        assert!(matches!(
            decide(None, Some(ts(NOW)), ts(NOW), &Observed::Missing),
            Step::Expire { .. }
        ));
        // A foreign Secret is never deleted.
        assert_eq!(
            decide(None, past, ts(NOW), &Observed::Foreign),
            Step::Expire {
                delete_secret: None
            }
        );
    }

    #[test]
    fn expired_is_final_even_if_expires_at_moves_later() {
        let expired = ApiKeyStatus {
            phase: Some(Phase::Expired),
            key_hash: Some("h".into()),
            ..ApiKeyStatus::default()
        };
        let later = Some(ts("2030-01-01T00:00:00Z"));
        assert_eq!(
            decide(Some(&expired), later, ts(NOW), &Observed::Missing),
            Step::Expire {
                delete_secret: None
            }
        );
    }

    #[test]
    fn a_minted_key_is_verified_lost_or_tampered() {
        let s = minted("sha256:a");
        assert_eq!(
            decide(
                Some(&s),
                None,
                ts(NOW),
                &ours(Some("sha256:a"), Some("sha256:a"))
            ),
            Step::Verified
        );
        assert_eq!(
            decide(Some(&s), None, ts(NOW), &Observed::Missing),
            Step::Lost
        );
        assert_eq!(
            decide(Some(&s), None, ts(NOW), &Observed::Foreign),
            Step::Lost
        );
        assert_eq!(
            decide(
                Some(&s),
                None,
                ts(NOW),
                &ours(Some("sha256:b"), Some("sha256:a"))
            ),
            Step::Tampered
        );
        assert_eq!(
            decide(Some(&s), None, ts(NOW), &ours(None, Some("sha256:a"))),
            Step::Tampered
        );
    }

    #[test]
    fn an_unrecorded_secret_of_ours_is_adopted_never_reminted() {
        assert_eq!(
            decide(
                None,
                None,
                ts(NOW),
                &ours(Some("sha256:a"), Some("sha256:a"))
            ),
            Step::Adopt {
                key_hash: "sha256:a".into()
            }
        );
        assert_eq!(
            decide(
                None,
                None,
                ts(NOW),
                &ours(Some("sha256:b"), Some("sha256:a"))
            ),
            Step::Tampered
        );
        assert_eq!(
            decide(None, None, ts(NOW), &Observed::Foreign),
            Step::Conflict
        );
    }

    fn input<'a>(
        current: Option<&'a ApiKeyStatus>,
        expires_at: Option<Timestamp>,
        now: &str,
    ) -> StatusInput<'a> {
        StatusInput {
            current,
            unrecorded_key: None,
            generation: Some(1),
            secret_name: "payments-ci",
            expires_at,
            expiry_warning: Duration::from_secs(7 * 86400),
            now: ts(now),
        }
    }

    fn active() -> Outcome {
        Outcome::Active {
            key_id: "km_1".into(),
            key_hash: "sha256:a".into(),
            minted_at: Some(ts(NOW)),
        }
    }

    #[test]
    fn active_status_records_the_key_and_is_ready() {
        let s = status(&input(None, None, NOW), &active());
        assert_eq!(s.phase, Some(Phase::Active));
        assert_eq!(s.key_id.as_deref(), Some("km_1"));
        assert_eq!(s.key_hash.as_deref(), Some("sha256:a"));
        assert_eq!(s.secret_name.as_deref(), Some("payments-ci"));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.conditions[0].type_, READY);
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions.len(), 1, "no ExpiringSoon without an expiry");
    }

    #[test]
    fn an_unchanged_state_yields_an_identical_status() {
        let first = status(
            &input(None, Some(ts("2027-06-01T00:00:00Z")), NOW),
            &active(),
        );
        let later = status(
            &input(
                Some(&first),
                Some(ts("2027-06-01T00:00:00Z")),
                "2027-01-02T00:00:00Z",
            ),
            &active(),
        );
        assert!(!needs_write(Some(&first), &later), "{first:?}\n{later:?}");
    }

    #[test]
    fn expiring_soon_turns_true_inside_the_window_once() {
        let expires = Some(ts("2027-01-05T00:00:00Z"));
        let before = status(&input(None, expires, "2026-12-01T00:00:00Z"), &active());
        assert_eq!(before.conditions[1].status, "False");
        let inside = status(&input(Some(&before), expires, NOW), &active());
        assert_eq!(inside.conditions[1].status, "True");
        assert_eq!(
            transitions(Some(&before), &inside),
            vec![Transition::ExpiringSoon]
        );
        let still = status(
            &input(Some(&inside), expires, "2027-01-02T00:00:00Z"),
            &active(),
        );
        assert!(transitions(Some(&inside), &still).is_empty());
    }

    #[test]
    fn key_identity_survives_later_phases() {
        let active = status(&input(None, None, NOW), &active());
        let lost = status(&input(Some(&active), None, NOW), &Outcome::Lost);
        assert_eq!(lost.phase, Some(Phase::SecretLost));
        assert_eq!(lost.key_hash, active.key_hash);
        assert_eq!(lost.conditions[0].status, "False");
        assert_eq!(
            transitions(Some(&active), &lost),
            vec![Transition::SecretLost]
        );
    }

    #[test]
    fn transitions_follow_phase_changes() {
        let rejected = status(
            &input(None, None, NOW),
            &Outcome::Rejected {
                message: "full".into(),
            },
        );
        assert_eq!(transitions(None, &rejected), vec![Transition::Rejected]);
        let active = status(&input(Some(&rejected), None, NOW), &active());
        assert_eq!(
            transitions(Some(&rejected), &active),
            vec![Transition::Minted]
        );
        assert!(transitions(Some(&active), &active).is_empty());
        let tampered = status(&input(Some(&active), None, NOW), &Outcome::Tampered);
        let restored = status(&input(Some(&tampered), None, NOW), &self::active());
        assert_eq!(
            transitions(Some(&tampered), &restored),
            vec![Transition::SecretRestored]
        );
    }

    #[test]
    fn a_key_found_unrecorded_at_expiry_is_reported_minted_then_expired() {
        let key = KeyRecord {
            key_id: "km_1".into(),
            key_hash: "sha256:a".into(),
            minted_at: Some(ts(NOW)),
        };
        let mut with_key = input(None, Some(ts(NOW)), NOW);
        with_key.unrecorded_key = Some(key);
        let expired = status(&with_key, &Outcome::Expired);
        assert_eq!(expired.key_hash.as_deref(), Some("sha256:a"));
        assert_eq!(
            transitions(None, &expired),
            vec![Transition::Minted, Transition::Expired]
        );
        // Never minted: only expired.
        let never = status(&input(None, Some(ts(NOW)), NOW), &Outcome::Expired);
        assert_eq!(transitions(None, &never), vec![Transition::Expired]);
    }

    #[test]
    fn a_lost_secret_put_back_is_restored() {
        let active = status(&input(None, None, NOW), &active());
        let lost = status(&input(Some(&active), None, NOW), &Outcome::Lost);
        let back = status(&input(Some(&lost), None, NOW), &self::active());
        assert_eq!(
            transitions(Some(&lost), &back),
            vec![Transition::SecretRestored]
        );
    }

    #[test]
    fn transitions_are_numbered_after_the_last_recorded_one() {
        let first = number_transitions(
            None,
            &[Transition::Minted, Transition::ExpiringSoon],
            "t1",
            "pod-a",
        );
        assert_eq!(first.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(first[1].action, "expiring-soon");
        let status = ApiKeyStatus {
            last_transitions: first,
            ..ApiKeyStatus::default()
        };
        assert_eq!(last_transition_number(Some(&status)), 2);
        let next = number_transitions(Some(&status), &[Transition::Expired], "t2", "pod-b");
        assert_eq!((next[0].number, next[0].instance.as_str()), (3, "pod-b"));
        for t in [
            Transition::Minted,
            Transition::SecretRestored,
            Transition::SecretTampered,
        ] {
            assert_eq!(Transition::from_action(t.action()), Some(t));
        }
        assert_eq!(Transition::from_action("deleted"), None);
    }

    #[test]
    fn a_status_change_that_is_no_transition_keeps_the_records() {
        let records = number_transitions(None, &[Transition::Minted], "t1", "pod-a");
        let current = ApiKeyStatus {
            last_transitions: records.clone(),
            ..status(&input(None, None, NOW), &active())
        };
        let again = status(&input(Some(&current), None, NOW), &active());
        assert_eq!(again.last_transitions, records);
        assert!(!needs_write(Some(&current), &again));
    }

    #[test]
    fn next_check_wakes_at_expiry_warning_and_verification() {
        let now = ts(NOW);
        let day = Duration::from_secs(86400);
        let ten_min = Duration::from_secs(600);
        // Far expiry: the verification interval wins.
        let far = Some(ts("2027-03-01T00:00:00Z"));
        assert_eq!(
            next_check(Phase::Active, far, now, 7 * day, ten_min, 0.0),
            Some(ten_min)
        );
        // Expiry in 2 s: wake just after it.
        let soon = Some(ts("2027-01-01T00:00:02Z"));
        let d = next_check(Phase::Active, soon, now, Duration::ZERO, ten_min, 0.0).expect("wake");
        assert!(
            d >= Duration::from_secs(2) && d < Duration::from_millis(2100),
            "{d:?}"
        );
        // Warning window opening in 1 h.
        let in_a_week_and_an_hour = Some(ts("2027-01-08T01:00:00Z"));
        let d =
            next_check(Phase::Active, in_a_week_and_an_hour, now, 7 * day, day, 0.0).expect("wake");
        assert!(
            d >= Duration::from_secs(3600) && d < Duration::from_secs(3601),
            "{d:?}"
        );
        // Jitter only shortens, by at most 10%.
        let d = next_check(Phase::Active, None, now, 7 * day, ten_min, 0.99).expect("wake");
        assert!(d < ten_min && d >= ten_min.mul_f64(0.9));
        assert_eq!(
            next_check(Phase::Expired, soon, now, 7 * day, ten_min, 0.0),
            None
        );
    }
}
