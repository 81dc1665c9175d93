//! `keymint describe`: one key — its spec, status, conditions and its
//! latest audit entries.

use std::fmt::Write as _;
use std::io::Write;

use clap::Args;
use kube::ResourceExt;

use crate::apikey::ApiKey;
use crate::audit::{self, Entry};
use crate::people::connection::{Cluster, Connection};
use crate::people::error::{API_KEYS, Call, PeopleError};
use crate::people::table::minute;

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
    let history = audit::cli::read_segments(&cluster.client, &args.audit_namespace)
        .await
        .map_err(|e| e.to_string())
        .and_then(|segments| entries_of(&segments, &api_key.uid().unwrap_or_default()));
    let mut stdout = std::io::stdout().lock();
    write!(
        stdout,
        "{}",
        render(&api_key, &args.audit_namespace, &history)
    )?;
    Ok(())
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
    let fields = [
        ("Name", k.name_any()),
        ("Namespace", k.namespace().unwrap_or_default()),
        ("Project", k.spec.project.clone()),
        ("Owner", printable(&k.spec.owner)),
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
        (
            "Minted",
            status
                .minted_at
                .as_ref()
                .map_or("-".into(), |t| t.0.to_string()),
        ),
        (
            "Created",
            k.creation_timestamp()
                .map_or("-".into(), |t| t.0.to_string()),
        ),
    ];
    for (label, value) in fields {
        let _ = writeln!(out, "{:<13}{value}", format!("{label}:"));
    }
    let _ = writeln!(out, "Conditions:");
    if status.conditions.is_empty() {
        let _ = writeln!(out, "  (none yet)");
    }
    for c in &status.conditions {
        let _ = writeln!(
            out,
            "  {} {} {} since {}: {}",
            c.type_,
            c.status,
            c.reason,
            minute(c.last_transition_time.0),
            printable(&c.message)
        );
    }
    let _ = writeln!(out, "Audit ({audit_namespace}, latest {RECENT}):");
    match history {
        Ok(entries) if entries.is_empty() => {
            let _ = writeln!(out, "  (no entries)");
        }
        Ok(entries) => {
            for e in entries {
                let _ = writeln!(
                    out,
                    "  {}  {:<15}  {}",
                    e.timestamp().map_or(e.time.clone(), |t| format!("{t:.0}")),
                    e.action.as_str(),
                    printable(&e.message)
                );
            }
        }
        Err(reason) => {
            let _ = writeln!(out, "  not readable: {reason}");
        }
    }
    out
}

/// Control characters escaped: these strings end up in a terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}
