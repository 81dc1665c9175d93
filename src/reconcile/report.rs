//! Reporting: the one place every lifecycle transition goes through. Each
//! transition becomes one audit-stream entry (durable, waited for) and then
//! one Kubernetes Event, built from the same words, so the two never
//! disagree about what happened.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::{info, warn};

use crate::apikey::action::{Action, Transition};
use crate::apikey::lifecycle::{self, conditions};
use crate::apikey::{ApiKey, ApiKeyStatus, Phase, TransitionRecord, TransitionTime};
use crate::audit::stream::AuditLog;
use crate::audit::{AuditError, Draft};
use crate::reconcile::events::{EventQueue, Notice};

/// Where reports go.
pub struct Reporter {
    /// For Events that repeat (failures): kube's Recorder folds repeats of
    /// one Event into a series, and caches every Event it published in the
    /// last six minutes to do so.
    pub recorder: Recorder,
    /// For transition Events, which never repeat: queued, off the
    /// critical path.
    pub events: EventQueue,
    pub audit: AuditLog,
    pub metrics: std::sync::Arc<crate::runtime::metrics::Metrics>,
}

/// What happened to an ApiKey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    Transition(Transition),
    /// The ApiKey was deleted; whether keymint deleted a Secret of its own
    /// along with it (there may have been none: never minted, expired, lost).
    Deleted {
        secret_deleted: bool,
    },
}

impl Reporter {
    /// Records the transitions a status change just made (`records`, taken
    /// from `status`): audit entries first, durable, then Events.
    pub async fn transitions(
        &self,
        api_key: &ApiKey,
        status: &ApiKeyStatus,
        records: &[TransitionRecord],
    ) -> Result<(), AuditError> {
        let drafts = records
            .iter()
            .map(|r| {
                let report = Report::Transition(r.action);
                draft(api_key, status, report, r.number, r.time, &r.instance)
            })
            .collect();
        let appended = self.audit.append(drafts).await?;
        // Only transitions this call recorded get their Event: one that the
        // stream already had was reported by whoever recorded it.
        for (record, new) in records.iter().zip(appended) {
            if new {
                let report = Report::Transition(record.action);
                self.count(api_key, report);
                self.event(api_key, status, report);
            }
        }
        Ok(())
    }

    /// After a crash between a status change and its audit append, the
    /// status still carries the transitions: append the ones the stream
    /// lacks (and their Events, lost with them).
    pub async fn catch_up(&self, api_key: &ApiKey) -> Result<(), AuditError> {
        let Some(status) = &api_key.status else {
            return Ok(());
        };
        let uid = api_key.uid().unwrap_or_default();
        let (recorded, missing): (Vec<TransitionRecord>, Vec<TransitionRecord>) = status
            .last_transitions
            .iter()
            .cloned()
            .partition(|r| self.audit.is_recorded(&uid, r.number, r.time.0));
        for record in &recorded {
            self.audit.settle(&uid, record.number);
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.expect(api_key, &missing);
        info!(apikey = %api_key.name_any(), transitions = missing.len(), "recording transitions missing from the audit stream");
        self.transitions(api_key, status, &missing).await
    }

    /// Records the deletion of an ApiKey, durably, before its finalizer is
    /// removed. Retries after a crash find it recorded and skip it.
    pub async fn deleted(
        &self,
        api_key: &ApiKey,
        secret_deleted_now: bool,
    ) -> Result<(), AuditError> {
        let status = api_key.status.clone().unwrap_or_default();
        let uid = api_key.uid().unwrap_or_default();
        let number = lifecycle::last_transition_number(Some(&status)) + 1;
        // A retry after a crash no longer finds the Secret it deleted: a key
        // that was live when deletion began had its Secret deleted by us.
        let was_live = status.key_hash.is_some()
            && status.revealed_at.is_none()
            && matches!(status.phase, Some(Phase::Active | Phase::SecretTampered));
        let report = Report::Deleted {
            secret_deleted: secret_deleted_now || was_live,
        };
        let now = Timestamp::now();
        // Pending until the finalizer is gone ([`Reporter::deletion_done`]),
        // not just appended: a retry after a crash in between asks the index
        // at a later time, so the entry must stay among what start-up reads.
        self.audit.expect(&uid, number, now);
        if !self.audit.is_recorded(&uid, number, now) {
            let at = TransitionTime(now);
            let entry = draft(api_key, &status, report, number, at, &self.audit.instance);
            let appended = self.audit.append(vec![entry]).await?;
            self.audit.expect(&uid, number, now);
            if appended.first() == Some(&true) {
                self.event(api_key, &status, report);
            }
        }
        Ok(())
    }

    /// The ApiKey's finalizer is gone: no retry will ask about its deletion.
    pub fn deletion_done(&self, api_key: &ApiKey) {
        let number = lifecycle::last_transition_number(api_key.status.as_ref()) + 1;
        self.audit
            .settle(&api_key.uid().unwrap_or_default(), number);
    }

    /// Registers `records` of `api_key` as made and not yet recorded (see
    /// [`AuditLog::expect`]).
    pub fn expect(&self, api_key: &ApiKey, records: &[TransitionRecord]) {
        let uid = api_key.uid().unwrap_or_default();
        for record in records {
            self.audit.expect(&uid, record.number, record.time.0);
        }
    }

    fn count(&self, api_key: &ApiKey, report: Report) {
        let m = &self.metrics;
        match report {
            Report::Transition(Transition::Minted) => {
                m.mints.inc();
            }
            Report::Transition(Transition::Rejected) => {
                m.rejections.inc();
            }
            Report::Transition(Transition::Expired) => {
                m.expiries.inc();
                if let Some(expires_at) = &api_key.spec.expires_at {
                    let lag = Timestamp::now().duration_since(expires_at.0).as_secs_f64();
                    m.expiry_lag.observe(lag.max(0.0));
                }
            }
            _ => {}
        }
    }

    /// Logs the transition and queues its Event: the transition and its
    /// audit entry are already done.
    fn event(&self, api_key: &ApiKey, status: &ApiKeyStatus, report: Report) {
        let (type_, reason, note) = describe(api_key, status, report);
        if type_ == EventType::Warning {
            warn!(reason, apikey = %api_key.name_any(), key_id = status.key_id.as_deref(), "{note}");
        } else {
            info!(reason, apikey = %api_key.name_any(), key_id = status.key_id.as_deref(), "{note}");
        }
        self.events
            .push(Notice::new(type_, reason, action(report), &note, api_key));
    }
}

/// The audit entry for `report`, before it is placed in the chain. Built
/// only from the ApiKey and its status, so an entry appended late (after a
/// crash) reads exactly as it would have on time.
pub fn draft(
    api_key: &ApiKey,
    status: &ApiKeyStatus,
    report: Report,
    number: u64,
    time: TransitionTime,
    instance: &str,
) -> Draft {
    let (_, reason, message) = describe(api_key, status, report);
    Draft {
        time: time.0,
        action: match report {
            Report::Deleted { .. } => Action::Deleted,
            Report::Transition(t) => Action::from(t),
        },
        namespace: api_key.namespace().unwrap_or_default(),
        name: api_key.name_any(),
        uid: api_key.uid().unwrap_or_default(),
        transition: number,
        project: api_key.spec.project.clone(),
        owner: api_key.spec.owner.clone(),
        key_id: status.key_id.clone(),
        reason: reason.to_string(),
        message,
        instance: instance.to_string(),
        pruned_through: None,
    }
}

/// Event type, reason and note. The note never holds the key: only its
/// public id and the Secret's name.
fn describe(
    api_key: &ApiKey,
    status: &ApiKeyStatus,
    report: Report,
) -> (EventType, &'static str, String) {
    let key = status.key_id.as_deref().unwrap_or("(none)");
    let secret = status
        .secret_name
        .clone()
        .unwrap_or_else(|| crate::apikey::secret::name(api_key));
    match report {
        Report::Deleted { secret_deleted } => (
            EventType::Normal,
            "Deleted",
            deleted_note(status, secret_deleted, &secret),
        ),
        Report::Transition(t) => describe_transition(status, t, key, &secret),
    }
}

fn deleted_note(status: &ApiKeyStatus, secret_deleted: bool, secret: &str) -> String {
    match (&status.key_id, secret_deleted) {
        (key, true) => format!(
            "ApiKey deleted; key {} and its Secret {secret} deleted",
            key.as_deref().unwrap_or("(none)")
        ),
        (Some(key), false) => format!("ApiKey deleted; key {key} had no Secret left to delete"),
        (None, false) => "ApiKey deleted; no key had been minted".to_string(),
    }
}

/// A transition's Event: the Warnings carry the Ready condition's words.
fn describe_transition(
    status: &ApiKeyStatus,
    t: Transition,
    key: &str,
    secret: &str,
) -> (EventType, &'static str, String) {
    let ready = || conditions::message(status, conditions::READY);
    match t {
        Transition::Minted => (
            EventType::Normal,
            "Minted",
            format!("key {key} minted into Secret {secret}"),
        ),
        Transition::Rejected => (EventType::Warning, rejection_reason(status), ready()),
        Transition::Conflict => (EventType::Warning, "Conflict", ready()),
        Transition::ExpiringSoon => (
            EventType::Warning,
            "ExpiringSoon",
            format!(
                "key {key}: {}",
                conditions::message(status, conditions::EXPIRING_SOON)
            ),
        ),
        Transition::Expired if status.key_id.is_some() => (
            EventType::Normal,
            "Expired",
            format!("key {key} expired; its key material was deleted"),
        ),
        Transition::Expired => (
            EventType::Normal,
            "Expired",
            "expiresAt passed before a key was minted; nothing was minted".to_string(),
        ),
        Transition::SecretLost => (EventType::Warning, "SecretLost", ready()),
        Transition::SecretTampered => (EventType::Warning, "SecretTampered", ready()),
        Transition::SecretRestored => (
            EventType::Normal,
            "SecretRestored",
            format!("Secret {secret} holds key {key} again"),
        ),
        Transition::Revealed => (
            EventType::Normal,
            "Revealed",
            format!("key {key} was shown once; its Secret {secret} was deleted"),
        ),
        Transition::NeverShown => (EventType::Warning, "NeverShown", ready()),
    }
}

/// A rejection's Event and audit reason: `ProjectNotGranted` when that is
/// why nothing was minted, `Rejected` for a full quota.
fn rejection_reason(status: &ApiKeyStatus) -> &'static str {
    match conditions::reason(status, conditions::READY) {
        conditions::PROJECT_NOT_GRANTED => conditions::PROJECT_NOT_GRANTED,
        _ => "Rejected",
    }
}

fn action(report: Report) -> &'static str {
    match report {
        Report::Deleted { .. } => "Delete",
        Report::Transition(action) => match action {
            Transition::Minted => "Mint",
            Transition::Rejected | Transition::Conflict => "Admit",
            Transition::ExpiringSoon | Transition::Expired => "Expire",
            Transition::Revealed | Transition::NeverShown => "Reveal",
            Transition::SecretLost | Transition::SecretTampered | Transition::SecretRestored => {
                "Verify"
            }
        },
    }
}

/// Longest Warning note: a sentence naming a call and an object fits.
const WARNING_NOTE_MAX: usize = 400;

/// Publishes a Warning Event for a failure (not a transition) through the
/// shared Recorder, which folds repeats into a series. Failures to publish
/// are logged: the failure itself is already logged and counted.
pub async fn warning(recorder: &Recorder, reference: &ObjectReference, reason: &str, note: &str) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.to_string(),
        note: Some(truncate(note, WARNING_NOTE_MAX)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        warn!(reason, error = %e, "could not publish Event");
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), marked with `…`.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::ApiKeySpec;

    fn api_key() -> ApiKey {
        let mut k = ApiKey::new(
            "ci-deploy",
            ApiKeySpec {
                project: "payments".into(),
                owner: "alice@example.com".into(),
                description: None,
                expires_at: None,
                secret_name: Some("payments-ci".into()),
                secret_template: None,
                show_once: None,
            },
        );
        k.metadata.namespace = Some("payments".into());
        k.metadata.uid = Some("uid-1".into());
        k
    }

    #[test]
    fn a_draft_is_built_from_the_status_alone() {
        let status = ApiKeyStatus {
            phase: Some(Phase::Active),
            key_id: Some("km_abc".into()),
            secret_name: Some("payments-ci".into()),
            ..ApiKeyStatus::default()
        };
        let time = TransitionTime("2027-01-01T00:00:00.123456Z".parse().expect("time"));
        let d = draft(
            &api_key(),
            &status,
            Report::Transition(Transition::Minted),
            1,
            time,
            "pod-a",
        );
        assert_eq!(d.action, Action::Minted);
        assert_eq!((d.uid.as_str(), d.transition), ("uid-1", 1));
        assert_eq!(
            (d.project.as_str(), d.owner.as_str()),
            ("payments", "alice@example.com")
        );
        assert_eq!(d.key_id.as_deref(), Some("km_abc"));
        assert_eq!(d.reason, "Minted");
        assert_eq!(d.message, "key km_abc minted into Secret payments-ci");
        assert_eq!(d.instance, "pod-a");
        assert_eq!(d.time, time.0);
        // The same inputs give the same draft: a late append reads the same.
        assert_eq!(
            d,
            draft(
                &api_key(),
                &status,
                Report::Transition(Transition::Minted),
                1,
                time,
                "pod-a"
            )
        );
    }

    #[test]
    fn a_project_not_granted_is_reported_with_its_own_reason() {
        use crate::apikey::lifecycle::conditions::{PROJECT_NOT_GRANTED, QUOTA_EXCEEDED, READY};
        let rejected = |reason: &str| ApiKeyStatus {
            phase: Some(Phase::Rejected),
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: READY.into(),
                status: "False".into(),
                reason: reason.into(),
                message: format!("refused: {reason}"),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
            }],
            ..ApiKeyStatus::default()
        };
        let time = TransitionTime(jiff::Timestamp::UNIX_EPOCH);
        let report = Report::Transition(Transition::Rejected);
        let not_granted = draft(
            &api_key(),
            &rejected(PROJECT_NOT_GRANTED),
            report,
            1,
            time,
            "a",
        );
        assert_eq!(not_granted.action, Action::Rejected);
        assert_eq!(not_granted.reason, "ProjectNotGranted");
        assert_eq!(not_granted.message, "refused: ProjectNotGranted");
        let (type_, reason, _) = describe(&api_key(), &rejected(PROJECT_NOT_GRANTED), report);
        assert_eq!((type_, reason), (EventType::Warning, "ProjectNotGranted"));
        let full = draft(&api_key(), &rejected(QUOTA_EXCEEDED), report, 1, time, "a");
        assert_eq!(full.reason, "Rejected", "a full quota keeps its reason");
    }

    #[test]
    fn truncate_respects_character_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é…");
    }

    #[test]
    fn deletion_wording_follows_what_was_deleted() {
        let never = ApiKeyStatus::default();
        let (_, _, note) = describe(
            &api_key(),
            &never,
            Report::Deleted {
                secret_deleted: false,
            },
        );
        assert_eq!(note, "ApiKey deleted; no key had been minted");
        let minted = ApiKeyStatus {
            key_id: Some("km_abc".into()),
            ..ApiKeyStatus::default()
        };
        let (_, _, note) = describe(
            &api_key(),
            &minted,
            Report::Deleted {
                secret_deleted: true,
            },
        );
        assert!(note.contains("its Secret payments-ci deleted"), "{note}");
        let (_, _, note) = describe(&api_key(), &never, Report::Transition(Transition::Expired));
        assert!(note.contains("nothing was minted"), "{note}");
    }
}
