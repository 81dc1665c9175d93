//! `keymint describe`: one key — its spec, status, conditions and its
//! latest audit entries.

use std::fmt::Write as _;
use std::io::Write;

use clap::Args;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::apikey::{ApiKey, ApiKeyStatus};
use crate::audit::store::Segments;
use crate::audit::{self, Entry};
use crate::people::connection::{Cluster, Connection};
use crate::people::error::{API_KEYS, Call, PeopleError};
use crate::people::table::minute;
use crate::people::terminal::escape;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Audit entries shown: the latest ones (`keymint audit` has them all).
const RECENT: usize = 10;

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// The ApiKey.
    pub name: String,
    /// Namespace of the audit stream (keymint's --audit-namespace).
    #[arg(
        long,
        env = "KEYMINT_AUDIT_NAMESPACE",
        default_value = "keymint-system"
    )]
    pub audit_namespace: String,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(cluster: &Cluster, args: &DescribeArgs) -> Result<(), PeopleError> {
    let api_key = cluster.api_keys().get(&args.name).await.map_err(|e| {
        Call::new("get", API_KEYS)
            .named(&args.name)
            .in_namespace(&cluster.namespace)
            .failed(e)
    })?;
    // The stream is keymint's, in its own namespace: a person may well not
    // be allowed to read it, which is no reason to show nothing else.
    let history = match may_read_audit(cluster, &args.audit_namespace).await {
        Ok(()) => audit::cli::read_segments(&Segments::new(
            cluster.client.clone(),
            &args.audit_namespace,
        ))
        .await
        .map_err(|e| e.to_string())
        .and_then(|segments| entries_of(&segments, &api_key.uid().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    };
    let mut stdout = std::io::stdout().lock();
    write!(
        stdout,
        "{}",
        render(&api_key, &args.audit_namespace, &history)
    )?;
    Ok(())
}

/// One small list first, so that a missing permission reads as one
/// (which verb on what, where) rather than as a failed stream read.
async fn may_read_audit(cluster: &Cluster, namespace: &str) -> Result<(), PeopleError> {
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), namespace);
    config_maps
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|e| {
            Call::new("list", "configmaps")
                .in_namespace(namespace)
                .failed(e)
        })
}

/// The latest entries about the ApiKey with `uid`, oldest first.
fn entries_of(segments: &[(String, String)], uid: &str) -> Result<Vec<Entry>, String> {
    let mut found = Vec::new();
    for (name, content) in segments {
        let parsed = audit::parse_segment(content).map_err(|e| format!("segment {name}: {e}"))?;
        found.extend(parsed.into_iter().filter(|e| e.uid == uid));
    }
    let skip = found.len().saturating_sub(RECENT);
    Ok(found.split_off(skip))
}

/// What `describe` prints.
pub fn render(k: &ApiKey, audit_namespace: &str, history: &Result<Vec<Entry>, String>) -> String {
    let status = k.status.clone().unwrap_or_default();
    let mut out = String::new();
    for (label, value) in fields(k, &status) {
        let _ = writeln!(out, "{:<13}{}", format!("{label}:"), escape(&value));
    }
    render_conditions(&mut out, &status);
    render_audit(&mut out, audit_namespace, history);
    out
}

/// The key's fields, label and value; "Revealed" only for a show-once key
/// that was shown (its Secret deleted).
fn fields(k: &ApiKey, status: &ApiKeyStatus) -> Vec<(&'static str, String)> {
    let time = |t: Option<&Time>| t.map_or("-".to_string(), |t| t.0.to_string());
    let mut fields = vec![
        ("Name", k.name_any()),
        ("Namespace", k.namespace().unwrap_or_default()),
        ("Project", k.spec.project.clone()),
        ("Owner", k.spec.owner.clone()),
        (
            "Description",
            k.spec.description.clone().unwrap_or("-".into()),
        ),
        (
            "Expires",
            k.spec
                .expires_at
                .as_ref()
                .map_or("never".into(), |t| t.0.to_string()),
        ),
        (
            "Phase",
            status.phase.map_or("-".into(), |p| format!("{p:?}")),
        ),
        ("Key ID", status.key_id.clone().unwrap_or("-".into())),
        ("Secret", status.secret_name.clone().unwrap_or("-".into())),
        ("Minted", time(status.minted_at.as_ref())),
        ("Created", time(k.creation_timestamp().as_ref())),
    ];
    if let Some(t) = &status.revealed_at {
        fields.push(("Revealed", t.0.to_string()));
    }
    fields
}

fn render_conditions(out: &mut String, status: &ApiKeyStatus) {
    let _ = writeln!(out, "Conditions:");
    if status.conditions.is_empty() {
        let _ = writeln!(out, "  (none yet)");
    }
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "  {} {} {} since {}: {}",
            escape(&c.type_),
            escape(&c.status),
            escape(&c.reason),
            minute(c.last_transition_time.0),
            escape(&c.message)
        );
    }
}

fn render_audit(out: &mut String, audit_namespace: &str, history: &Result<Vec<Entry>, String>) {
    let _ = writeln!(out, "Audit ({audit_namespace}, latest {RECENT}):");
    let entries = match history {
        Ok(entries) if entries.is_empty() => {
            let _ = writeln!(out, "  (no entries)");
            return;
        }
        Ok(entries) => entries,
        Err(reason) => {
            let _ = writeln!(out, "  not readable: {}", escape(reason));
            return;
        }
    };
    for e in entries {
        let _ = writeln!(
            out,
            "  {}  {:<15}  {}",
            escape(&e.timestamp().map_or(e.time.clone(), |t| format!("{t:.0}"))),
            e.action.as_str(),
            escape(&e.message)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::{ApiKeySpec, ApiKeyStatus, Phase};
    use crate::audit::{Action, Draft, Head};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn entry(action: Action, uid: &str, transition: u64) -> Entry {
        let draft = Draft {
            time: "2026-12-01T20:15:00Z".parse().expect("time"),
            action,
            namespace: "team-a".into(),
            name: "ci".into(),
            uid: uid.into(),
            transition,
            project: "payments".into(),
            owner: "alice".into(),
            key_id: Some("km_1".into()),
            reason: "Minted".into(),
            message: format!("{action} {transition}"),
            instance: "keymint-0".into(),
            pruned_through: None,
        };
        audit::chain(&Head::genesis(), &draft).0
    }

    #[test]
    fn only_the_latest_entries_of_this_key_are_shown() {
        let mut lines = String::new();
        for n in 1..=12 {
            lines.push_str(&entry(Action::Minted, "uid-1", n).encode());
            lines.push('\n');
        }
        lines.push_str(&entry(Action::Deleted, "uid-2", 1).encode());
        lines.push('\n');
        let found = entries_of(&[("s-1".into(), lines)], "uid-1").expect("entries");
        let numbers: Vec<u64> = found.iter().map(|e| e.transition).collect();
        assert_eq!(numbers, (3..=12).collect::<Vec<_>>());
        assert!(
            entries_of(&[("s-1".into(), "garbage\n".into())], "uid-1")
                .unwrap_err()
                .starts_with("segment s-1: ")
        );
    }

    #[test]
    fn describe_shows_status_conditions_and_audit() {
        let mut k = ApiKey::new(
            "ci",
            ApiKeySpec {
                project: "payments".into(),
                owner: "alice\u{1b}[2J".into(),
                description: Some("CI \u{1b}]0;title\u{7}deploy".into()),
                expires_at: None,
                secret_name: None,
                secret_template: None,
                show_once: None,
            },
        );
        k.metadata.namespace = Some("team-a".into());
        k.status = Some(ApiKeyStatus {
            phase: Some(Phase::Active),
            key_id: Some("km_1".into()),
            secret_name: Some("ci".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Minted".into(),
                message: "the key is in Secret ci".into(),
                last_transition_time: Time("2026-12-01T20:15:00Z".parse().expect("time")),
                observed_generation: Some(1),
            }],
            ..ApiKeyStatus::default()
        });
        let text = render(
            &k,
            "keymint-system",
            &Ok(vec![entry(Action::Minted, "u", 1)]),
        );
        for line in [
            "Name:        ci",
            "Owner:       alice\\u{1b}[2J",
            "Description: CI \\u{1b}]0;title\\u{7}deploy",
            "Phase:       Active",
            "Key ID:      km_1",
            "Expires:     never",
            "  Ready True Minted since 2026-12-01 20:15: the key is in Secret ci",
            "Audit (keymint-system, latest 10):",
            "  2026-12-01T20:15:00Z  minted           minted 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(!text.contains("Revealed:"), "{text}");
        k.status.as_mut().expect("status").revealed_at =
            Some(Time("2026-12-01T20:16:00Z".parse().expect("time")));
        let revealed = render(&k, "keymint-system", &Ok(vec![]));
        assert!(
            revealed
                .lines()
                .any(|l| l == "Revealed:    2026-12-01T20:16:00Z"),
            "{revealed}"
        );
        let hidden = render(&k, "keymint-system", &Err("forbidden".into()));
        assert!(hidden.ends_with("  not readable: forbidden\n"), "{hidden}");
    }
}
