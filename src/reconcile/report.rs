//! Reporting: the one place every lifecycle transition goes through. Each
//! transition becomes one audit-stream entry (durable, waited for) and then
//! one Kubernetes Event, built from the same words, so the two never
//! disagree about what happened.

use jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::apikey::lifecycle::{self, Transition};
use crate::apikey::{ApiKey, ApiKeyStatus, Phase, TransitionRecord};
use crate::audit::stream::{AuditError, AuditLog};
use crate::audit::{self, Draft};

/// Where reports go.
pub struct Reporter {
    /// For Events that repeat (failures): kube's Recorder folds repeats of
    /// one Event into a series, and caches every Event it published in the
    /// last six minutes to do so.
    pub recorder: Recorder,
    /// For transition Events, which never repeat: each is published through
    /// a fresh Recorder, because the shared one's cache would hold every
    /// Event of a burst (10,000 after 10,000 mints) and is scanned on each
    /// publish.
    pub client: kube::Client,
    pub event_source: kube::runtime::events::Reporter,
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
        let reports: Vec<(Report, &TransitionRecord)> = records
            .iter()
            .filter_map(|r| Transition::from_action(&r.action).map(|t| (Report::Transition(t), r)))
            .collect();
        let drafts = reports
            .iter()
            .map(|(report, record)| {
                draft(
                    api_key,
                    status,
                    *report,
                    record.number,
                    &record.time,
                    &record.instance,
                )
            })
            .collect();
        let appended = self.audit.append(drafts).await?;
        // Only transitions this call recorded get their Event: one that the
        // stream already had was reported by whoever recorded it.
        for ((report, _), new) in reports.iter().zip(appended) {
            if new {
                self.count(api_key, *report);
                self.event(api_key, status, *report).await;
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
        let missing: Vec<TransitionRecord> = status
            .last_transitions
            .iter()
            .filter(|r| {
                let at = r.time.parse::<Timestamp>().unwrap_or(Timestamp::MAX);
                !self.audit.is_recorded(&uid, r.number, at)
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
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
            && matches!(status.phase, Some(Phase::Active | Phase::SecretTampered));
        let report = Report::Deleted {
            secret_deleted: secret_deleted_now || was_live,
        };
        let now = audit::format_time(Timestamp::now());
        if !self.audit.is_recorded(&uid, number, Timestamp::now()) {
            let entry = draft(api_key, &status, report, number, &now, &self.audit.instance);
            if self.audit.append(vec![entry]).await?.first() == Some(&true) {
                self.event(api_key, &status, report).await;
            }
        }
        Ok(())
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

    /// Publishes the Event. Failures are logged, not returned: the
    /// transition and its audit entry are already done.
    async fn event(&self, api_key: &ApiKey, status: &ApiKeyStatus, report: Report) {
        let (type_, reason, note) = describe(api_key, status, report);
        if type_ == EventType::Warning {
            warn!(reason, apikey = %api_key.name_any(), key_id = status.key_id.as_deref(), "{note}");
        } else {
            info!(reason, apikey = %api_key.name_any(), key_id = status.key_id.as_deref(), "{note}");
        }
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action(report).to_string(),
            secondary: None,
        };
        let recorder = Recorder::new(self.client.clone(), self.event_source.clone());
        if let Err(e) = recorder.publish(&event, &api_key.object_ref(&())).await {
            warn!(reason, error = %e, "could not publish Event");
        }
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
    time: &str,
    instance: &str,
) -> Draft {
    let (_, reason, message) = describe(api_key, status, report);
    Draft {
        time: time
            .parse::<Timestamp>()
            .unwrap_or_else(|_| Timestamp::now()),
        action: match report {
            Report::Deleted { .. } => audit::Action::Deleted,
            Report::Transition(t) => {
                audit::Action::parse(t.action()).unwrap_or(audit::Action::Deleted)
            }
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
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    let ready = || condition(lifecycle::READY);
    match report {
        Report::Deleted {
            secret_deleted: true,
        } => (
            EventType::Normal,
            "Deleted",
            format!("ApiKey deleted; key {key} and its Secret {secret} deleted"),
        ),
        Report::Deleted {
            secret_deleted: false,
        } => match &status.key_id {
            Some(key) => (
                EventType::Normal,
                "Deleted",
                format!("ApiKey deleted; key {key} had no Secret left to delete"),
            ),
            None => (
                EventType::Normal,
                "Deleted",
                "ApiKey deleted; no key had been minted".to_string(),
            ),
        },
        Report::Transition(t) => match t {
            Transition::Minted => (
                EventType::Normal,
                "Minted",
                format!("key {key} minted into Secret {secret}"),
            ),
            Transition::Rejected => (EventType::Warning, "Rejected", ready()),
            Transition::Conflict => (EventType::Warning, "Conflict", ready()),
            Transition::ExpiringSoon => (
                EventType::Warning,
                "ExpiringSoon",
                format!("key {key}: {}", condition(lifecycle::EXPIRING_SOON)),
            ),
            Transition::Expired => match &status.key_id {
                Some(key) => (
                    EventType::Normal,
                    "Expired",
                    format!("key {key} expired; its key material was deleted"),
                ),
                None => (
                    EventType::Normal,
                    "Expired",
                    "expiresAt passed before a key was minted; nothing was minted".to_string(),
                ),
            },
            Transition::SecretLost => (EventType::Warning, "SecretLost", ready()),
            Transition::SecretTampered => (EventType::Warning, "SecretTampered", ready()),
            Transition::SecretRestored => (
                EventType::Normal,
                "SecretRestored",
                format!("Secret {secret} holds key {key} again"),
            ),
        },
    }
}

fn action(report: Report) -> &'static str {
    match report {
        Report::Deleted { .. } => "Delete",
        Report::Transition(t) => match t {
            Transition::Minted => "Mint",
            Transition::Rejected | Transition::Conflict => "Admit",
            Transition::ExpiringSoon | Transition::Expired => "Expire",
            Transition::SecretLost | Transition::SecretTampered | Transition::SecretRestored => {
                "Verify"
            }
        },
    }
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
        let time = "2027-01-01T00:00:00.123456Z";
        let d = draft(
            &api_key(),
            &status,
            Report::Transition(Transition::Minted),
            1,
            time,
            "pod-a",
        );
        assert_eq!(d.action, audit::Action::Minted);
        assert_eq!((d.uid.as_str(), d.transition), ("uid-1", 1));
        assert_eq!(
            (d.project.as_str(), d.owner.as_str()),
            ("payments", "alice@example.com")
        );
        assert_eq!(d.key_id.as_deref(), Some("km_abc"));
        assert_eq!(d.reason, "Minted");
        assert_eq!(d.message, "key km_abc minted into Secret payments-ci");
        assert_eq!(d.instance, "pod-a");
        assert_eq!(d.time, time.parse::<Timestamp>().expect("time"));
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
