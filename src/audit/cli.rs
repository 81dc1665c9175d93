//! `keymint audit`: read, export and verify the audit stream with the
//! normal kubeconfig. Needs `get` and `list` on ConfigMaps in the audit
//! namespace; `verify` also reads the Secret `keymint-audit-key` in
//! keymint's namespace, to check the seals of the stream's own entries.

use std::io::Write;

use clap::{Args, Subcommand};
use jiff::Timestamp;
use kube::Client;

use crate::audit::store::{self, Segments};
use crate::audit::{self, Action, AuditError, Entry, Head, Keyring};

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Namespace of the audit stream (keymint's --audit-namespace).
    #[arg(
        long,
        env = "KEYMINT_AUDIT_NAMESPACE",
        default_value = "keymint-system",
        global = true
    )]
    pub audit_namespace: String,
    /// Namespace keymint runs in, which holds its audit key (keymint's
    /// --namespace).
    #[arg(
        long,
        env = "KEYMINT_NAMESPACE",
        default_value = "keymint-system",
        global = true
    )]
    pub keymint_namespace: String,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// A readable table of entries.
    List(Filter),
    /// Entries as JSON Lines (exactly as stored: stable field names), for a SIEM.
    Export(Filter),
    /// Walk the hash chain and check the seals of prunings and of the
    /// stream's start (reads Secret keymint-audit-key); report the first
    /// modified, removed, reordered or forged entry and exit non-zero.
    Verify {
        /// A head recorded earlier (`<seq>:sha256:<hex>`, as printed by
        /// verify): also catches edits of the last entries and truncation.
        #[arg(long)]
        checkpoint: Option<String>,
    },
}

#[derive(Args, Debug, Default)]
pub struct Filter {
    /// Only this project.
    #[arg(long)]
    pub project: Option<String>,
    /// Only this owner.
    #[arg(long)]
    pub owner: Option<String>,
    /// Only ApiKeys in this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only this action (minted, rejected, conflict, expiring-soon, expired,
    /// secret-lost, secret-tampered, secret-restored, revealed, never-shown,
    /// deleted, deleted-unobserved, pruned).
    #[arg(long, value_parser = parse_action)]
    pub action: Option<Action>,
    /// Only entries at or after this time: RFC 3339, or an age like `24h`.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<Timestamp>,
    /// Only entries before this time: RFC 3339, or an age like `1h`.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<Timestamp>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        let time = e.timestamp();
        self.project.as_ref().is_none_or(|p| &e.project == p)
            && self.owner.as_ref().is_none_or(|o| &e.owner == o)
            && self.namespace.as_ref().is_none_or(|n| &e.namespace == n)
            && self.action.is_none_or(|a| e.action == a)
            && self.since.is_none_or(|s| time.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| time.is_some_and(|t| t < u))
    }
}

fn parse_action(s: &str) -> Result<Action, String> {
    Action::parse(s).ok_or_else(|| format!("unknown action {s:?}"))
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let age =
        crate::duration::parse_duration(s).map_err(|e| format!("{e}, or an RFC 3339 time"))?;
    let age = jiff::SignedDuration::try_from(age).map_err(|e| e.to_string())?;
    Timestamp::now().checked_sub(age).map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    #[error("cannot connect to the cluster (check KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error("{0}")]
    Stream(#[from] AuditError),
    #[error("bad --checkpoint (expected <seq>:sha256:<hex>)")]
    Checkpoint,
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// Verification found a problem (already printed).
    #[error("{0}")]
    Tampered(String),
}

/// Runs `keymint audit ...`.
pub async fn run(args: AuditArgs) -> Result<(), AuditCliError> {
    let client = Client::try_default().await.map_err(AuditCliError::Client)?;
    let store = Segments::new(client.clone(), &args.audit_namespace);
    let segments = read_segments(&store).await?;
    let mut out = std::io::stdout().lock();
    match args.command {
        AuditCommand::List(filter) => list(&mut out, &entries(&store, &segments)?, &filter)?,
        AuditCommand::Export(filter) => export(&mut out, &entries(&store, &segments)?, &filter)?,
        AuditCommand::Verify { checkpoint } => {
            let key = crate::runtime::audit_key::read(&client, &args.keymint_namespace).await;
            let keyring = match &key {
                Ok(key) => Keyring::Key(key),
                Err(e) => Keyring::Unreadable(e.to_string()),
            };
            verify(&mut out, &segments, checkpoint.as_deref(), &keyring)?
        }
    }
    Ok(())
}

/// `keymint audit list`: the entries `filter` matches, as a table.
fn list(out: &mut impl Write, entries: &[Entry], filter: &Filter) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<6}  {:<24}  {:<15}  {:<32}  {:<14}  {:<24}  {:<15}  REASON",
        "SEQ", "TIME", "ACTION", "APIKEY", "PROJECT", "OWNER", "KEY ID"
    )?;
    for e in entries.iter().filter(|e| filter.matches(e)) {
        let apikey = if e.name.is_empty() {
            "-".to_string()
        } else {
            format!("{}/{}", e.namespace, e.name)
        };
        writeln!(
            out,
            "{:<6}  {:<24}  {:<15}  {:<32}  {:<14}  {:<24}  {:<15}  {}",
            e.seq,
            short_time(&e.time),
            e.action.as_str(),
            apikey,
            dash(&e.project),
            dash(&e.owner),
            e.key_id.as_deref().unwrap_or("-"),
            e.reason
        )?;
    }
    Ok(())
}

/// `keymint audit export`: the entries `filter` matches, as stored.
fn export(out: &mut impl Write, entries: &[Entry], filter: &Filter) -> std::io::Result<()> {
    for e in entries.iter().filter(|e| filter.matches(e)) {
        writeln!(out, "{}", e.encode())?;
    }
    Ok(())
}

/// `keymint audit verify`: the summary and the checkpoint to pass next
/// time, or the first finding as the error.
fn verify(
    out: &mut impl Write,
    segments: &[(String, String)],
    checkpoint: Option<&str>,
    keyring: &Keyring,
) -> Result<(), AuditCliError> {
    let checkpoint = match checkpoint {
        Some(c) => parse_checkpoint(c).ok_or(AuditCliError::Checkpoint)?,
        None => Head::genesis(),
    };
    let summary = audit::verify_with_checkpoint(segments, &checkpoint, keyring)
        .map_err(|finding| AuditCliError::Tampered(finding.to_string()))?;
    if let Keyring::Unreadable(why) = keyring {
        // The stream starts at entry 1, so no pruning needs proving; the
        // seals of any later prunings or start were not checked.
        writeln!(out, "note: seals not checked: {why}")?;
    }
    writeln!(
        out,
        "ok: {} entr{} in {} segment{} verify ({}); checkpoint: {}:{}",
        summary.entries,
        if summary.entries == 1 { "y" } else { "ies" },
        summary.segments,
        if summary.segments == 1 { "" } else { "s" },
        match (summary.first_seq, summary.last_seq) {
            (Some(f), Some(l)) => format!("entries {f} to {l}"),
            _ => "empty".to_string(),
        },
        summary.head.seq,
        summary.head.hash
    )?;
    Ok(())
}

/// Every segment, oldest first, as (name, content).
pub async fn read_segments(store: &Segments) -> Result<Vec<(String, String)>, AuditError> {
    let names = store.names().await?;
    let mut segments = Vec::with_capacity(names.len());
    for name in names {
        let cm = store.get(&name).await?;
        let content = store::content_of(&cm).to_string();
        segments.push((name, content));
    }
    Ok(segments)
}

/// The entries of every segment, in stream order.
fn entries(store: &Segments, segments: &[(String, String)]) -> Result<Vec<Entry>, AuditError> {
    let mut all = Vec::new();
    for (name, content) in segments {
        all.extend(store.entries(name, content)?);
    }
    Ok(all)
}

fn parse_checkpoint(s: &str) -> Option<Head> {
    let (seq, hash) = s.split_once(':')?;
    Some(Head {
        seq: seq.parse().ok()?,
        hash: hash.strip_prefix("sha256:").map(|_| hash.to_string())?,
    })
}

/// `2027-01-31T00:00:00.123Z`: milliseconds are enough to read.
fn short_time(time: &str) -> String {
    match time.parse::<Timestamp>() {
        Ok(t) => format!("{t:.3}"),
        Err(_) => time.to_string(),
    }
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_parse_as_printed() {
        let hash = format!("sha256:{}", "ab".repeat(32));
        let head = parse_checkpoint(&format!("42:{hash}")).expect("checkpoint");
        assert_eq!((head.seq, head.hash.as_str()), (42, hash.as_str()));
        assert!(parse_checkpoint("42").is_none());
        assert!(parse_checkpoint("x:sha256:00").is_none());
        assert!(parse_checkpoint("4:md5:00").is_none());
    }

    #[test]
    fn times_are_absolute_or_ages() {
        let t = parse_time("2027-01-31T00:00:00Z").expect("rfc3339");
        assert_eq!(t.to_string(), "2027-01-31T00:00:00Z");
        let an_hour_ago = parse_time("1h").expect("age");
        let delta = Timestamp::now().duration_since(an_hour_ago).as_secs();
        assert!((3599..=3601).contains(&delta), "{delta}");
        assert!(parse_time("yesterday").is_err());
    }
}
