//! The conditions an ApiKey's status carries, by name, and the rules that
//! read them. `Ready` comes first; `Reconciling` and `Stalled` follow
//! kstatus's abnormal-true convention (present and True only while work is
//! in progress, or while a person must act), so kubectl, Flux, kpt and
//! Argo CD all read the same state; `ExpiringSoon` warns before expiry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::apikey::{ApiKeyStatus, Phase};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const EXPIRING_SOON: &str = "ExpiringSoon";

/// The Ready reasons of a Rejected key: why nothing was minted. A key
/// rejected for one reason and then the other is rejected again (a
/// transition of its own, `transitions`), and its Event and audit entry
/// carry the reason (`reconcile::report`).
pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
pub const PROJECT_NOT_GRANTED: &str = "ProjectNotGranted";

/// Whether the condition `type_` is True in `status`.
pub fn is_true(status: Option<&ApiKeyStatus>, type_: &str) -> bool {
    status.is_some_and(|s| true_among(s.conditions.iter().map(|c| (&*c.type_, &*c.status)), type_))
}

/// Whether the condition `type_` is True among conditions given as
/// (type, status): the same rule, for a status held in another form.
pub fn true_among<'a>(
    mut conditions: impl Iterator<Item = (&'a str, &'a str)>,
    type_: &str,
) -> bool {
    conditions.any(|(t, status)| t == type_ && status == "True")
}

/// The one rule for "expiring soon": the ExpiringSoon condition is True
/// (only an Active key inside the warning window carries it so).
pub fn expiring_soon(status: Option<&ApiKeyStatus>) -> bool {
    is_true(status, EXPIRING_SOON)
}

/// The reason of condition `type_`, or "" when there is none.
pub fn reason<'a>(status: &'a ApiKeyStatus, type_: &str) -> &'a str {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or("", |c| c.reason.as_str())
}

/// The message of condition `type_`, or "" when there is none.
pub fn message(status: &ApiKeyStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Which of kstatus's conditions a phase raises: `Reconciling` while keymint
/// is still working towards a key, `Stalled` when only a person can move
/// the key on — a full quota, a foreign Secret, a lost or tampered Secret,
/// a show-once key never shown, or an expiry (the key is gone and never comes back: remove or replace
/// the ApiKey). None for Active.
pub fn progress(phase: Phase) -> Option<&'static str> {
    match phase {
        Phase::Pending => Some(RECONCILING),
        Phase::Active => None,
        Phase::Rejected
        | Phase::Conflict
        | Phase::Expired
        | Phase::SecretLost
        | Phase::SecretTampered
        | Phase::NeverShown => Some(STALLED),
    }
}

/// What a condition says, before it is stamped with a time and generation.
pub struct Said<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: &'a str,
}

/// A condition that keeps its `lastTransitionTime` while its status stays
/// the same, so an unchanged state produces an identical status: no write.
pub fn stamp(current: &ApiKeyStatus, said: &Said, generation: Option<i64>, now: Time) -> Condition {
    let status = if said.status { "True" } else { "False" };
    let previous = current.conditions.iter().find(|c| c.type_ == said.type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        type_: said.type_.to_string(),
        status: status.to_string(),
        reason: said.reason.to_string(),
        message: said.message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}
