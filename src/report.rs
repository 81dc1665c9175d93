//! Reporting transitions: the one place every lifecycle transition goes
//! through. Today it publishes a Kubernetes Event; the durable audit stream
//! will append its entry here too, so that Events and audit entries can
//! never disagree about what happened.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::{info, warn};

use crate::lifecycle::Transition;

/// What is known about the key when it changes: all safe to show (the key
/// itself is never passed here).
pub struct Subject<'a> {
    pub reference: ObjectReference,
    pub project: &'a str,
    pub owner: &'a str,
    pub key_id: Option<&'a str>,
    pub secret_name: &'a str,
}

/// A transition, or the deletion of an ApiKey (which has no status to
/// change, hence not a [`Transition`]).
pub enum Report<'a> {
    Transition(&'a Transition, &'a str),
    /// Whether keymint deleted a Secret of the ApiKey's (there may have been
    /// none: never minted, lost, or a conflict with someone else's).
    Deleted {
        secret_deleted: bool,
    },
}

/// Publishes the Event for `report`. Event failures are logged, not
/// returned: the transition already happened and a retry would only repeat
/// the work that caused it.
pub async fn publish(recorder: &Recorder, subject: &Subject<'_>, report: Report<'_>) {
    let (type_, reason, note) = describe(subject, &report);
    // Audit stream: the entry for this transition is appended here (issue
    // "durable, tamper-evident audit stream").
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.clone()),
        action: action(&report).to_string(),
        secondary: None,
    };
    if type_ == EventType::Warning {
        warn!(
            reason,
            apikey = subject.reference.name.as_deref(),
            key_id = subject.key_id,
            "{note}"
        );
    } else {
        info!(
            reason,
            apikey = subject.reference.name.as_deref(),
            key_id = subject.key_id,
            "{note}"
        );
    }
    if let Err(e) = recorder.publish(&event, &subject.reference).await {
        warn!(reason, error = %e, "could not publish Event");
    }
}

fn describe(subject: &Subject<'_>, report: &Report<'_>) -> (EventType, &'static str, String) {
    let key = subject.key_id.unwrap_or("(none)");
    let secret = subject.secret_name;
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
        } => match subject.key_id {
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
        Report::Transition(t, detail) => match t {
            Transition::Minted => (
                EventType::Normal,
                "Minted",
                format!("key {key} minted into Secret {secret}"),
            ),
            Transition::Rejected => (EventType::Warning, "Rejected", detail.to_string()),
            Transition::Conflict => (EventType::Warning, "Conflict", detail.to_string()),
            Transition::ExpiringSoon => (
                EventType::Warning,
                "ExpiringSoon",
                format!("key {key}: {detail}"),
            ),
            Transition::Expired => match subject.key_id {
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
            Transition::SecretLost => (EventType::Warning, "SecretLost", detail.to_string()),
            Transition::SecretTampered => {
                (EventType::Warning, "SecretTampered", detail.to_string())
            }
            Transition::SecretRestored => (
                EventType::Normal,
                "SecretRestored",
                format!("Secret {secret} holds key {key} again"),
            ),
        },
    }
}

fn action(report: &Report<'_>) -> &'static str {
    match report {
        Report::Deleted { .. } => "Delete",
        Report::Transition(t, _) => match t {
            Transition::Minted => "Mint",
            Transition::Rejected | Transition::Conflict => "Admit",
            Transition::ExpiringSoon | Transition::Expired => "Expire",
            Transition::SecretLost | Transition::SecretTampered | Transition::SecretRestored => {
                "Verify"
            }
        },
    }
}
