//! The transitions a status change makes, and their numbering: the records
//! a status change carries (`status.lastTransitions`), so the audit stream
//! can be caught up after a crash.

use super::conditions;
use crate::apikey::action::Transition;
use crate::apikey::{ApiKeyStatus, Phase, TransitionRecord, TransitionTime};

/// The transitions between two statuses: a first recorded key (minted), a
/// phase change (or a Rejected key rejected for another reason), and a
/// warning of expiry (`expiry_warning`: the ExpiringSoon condition turning
/// True, at most once per warning window).
pub fn transitions(before: Option<&ApiKeyStatus>, after: &ApiKeyStatus) -> Vec<Transition> {
    let mut out = Vec::new();
    // A key recorded for the first time was minted, even if the same
    // change also records what became of it (expired, tampered).
    if before.and_then(|s| s.key_hash.as_ref()).is_none() && after.key_hash.is_some() {
        out.push(Transition::Minted);
    }
    let old_phase = before.and_then(|s| s.phase);
    if old_phase != after.phase {
        out.extend(phase_change(old_phase, after.phase));
    } else if after.phase == Some(Phase::Rejected) && rejected_anew(before, after) {
        out.push(Transition::Rejected);
    }
    if before.and_then(|s| s.revealed_at.as_ref()).is_none() && after.revealed_at.is_some() {
        out.push(Transition::Revealed);
    }
    let warned = |s: Option<&ApiKeyStatus>| s.and_then(|s| s.expiry_warned_at.clone());
    if after.expiry_warned_at.is_some() && warned(before) != warned(Some(after)) {
        out.push(Transition::ExpiringSoon);
    }
    out
}

/// The transition a phase change is, if any. Becoming Active is the Minted
/// transition (above), or a restoration of a lost or tampered Secret.
fn phase_change(old: Option<Phase>, new: Option<Phase>) -> Option<Transition> {
    match new? {
        Phase::Active => matches!(old, Some(Phase::SecretTampered | Phase::SecretLost))
            .then_some(Transition::SecretRestored),
        Phase::Pending => None,
        Phase::Rejected => Some(Transition::Rejected),
        Phase::Conflict => Some(Transition::Conflict),
        Phase::Expired => Some(Transition::Expired),
        Phase::SecretLost => Some(Transition::SecretLost),
        Phase::SecretTampered => Some(Transition::SecretTampered),
        Phase::NeverShown => Some(Transition::NeverShown),
    }
}

/// Whether a key that stays Rejected is rejected for another reason now
/// (its quota was full, now its project is not granted, or the reverse):
/// the person reading its Events and audit entries must learn the new one.
fn rejected_anew(before: Option<&ApiKeyStatus>, after: &ApiKeyStatus) -> bool {
    let ready = |s| conditions::reason(s, conditions::READY);
    before.is_some_and(|b| ready(b) != ready(after))
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

/// Numbers `transitions` after the ones `before` recorded.
pub fn number_transitions(
    before: Option<&ApiKeyStatus>,
    transitions: &[Transition],
    time: TransitionTime,
    instance: &str,
) -> Vec<TransitionRecord> {
    let first = last_transition_number(before) + 1;
    transitions
        .iter()
        .zip(first..)
        .map(|(&action, number)| TransitionRecord {
            number,
            action,
            time,
            instance: instance.to_string(),
        })
        .collect()
}
