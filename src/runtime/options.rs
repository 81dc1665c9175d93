//! `keymint run` options. Every flag has an environment-variable twin so the
//! same settings work from a shell, a Deployment or a Helm chart; durations
//! are written like `30s`, `10m`, `7d`.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::audit::retention::{Retention, RetentionError};
use crate::duration::parse_duration;

#[derive(Args, Clone, Debug)]
pub struct RunOptions {
    /// Most live (minted, unexpired) keys one owner may hold in one project.
    #[arg(long, env = "KEYMINT_MAX_KEYS_PER_OWNER", default_value_t = 25)]
    pub max_keys_per_owner: usize,

    /// How long before `expiresAt` a key is flagged ExpiringSoon (condition and
    /// a Warning Event).
    #[arg(long, env = "KEYMINT_EXPIRY_WARNING", default_value = "7d", value_parser = parse_duration)]
    pub expiry_warning: Duration,

    /// How often an Active key's Secret is re-read and checked against its
    /// hash, besides every reconcile (jittered by up to 10%).
    #[arg(long, env = "KEYMINT_VERIFY_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub verify_interval: Duration,

    /// How long after minting the owner of a show-once key has to
    /// acknowledge its reveal (`keymint create --show-once` does, right after
    /// printing the key). A key not acknowledged by then has its Secret
    /// deleted and becomes NeverShown: it no longer verifies.
    #[arg(long, env = "KEYMINT_REVEAL_WINDOW", default_value = crate::apikey::lifecycle::reveal::DEFAULT_REVEAL_WINDOW, value_parser = parse_duration)]
    pub reveal_window: Duration,

    /// How many ApiKeys are reconciled at once.
    #[arg(long, env = "KEYMINT_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Namespace keymint itself runs in: it keeps its quota ledgers there
    /// (ConfigMaps). In a pod, set it from the downward API.
    #[arg(long, env = "KEYMINT_NAMESPACE", default_value = "keymint-system")]
    pub namespace: String,

    /// Only reconcile ApiKeys in this namespace (default: all namespaces).
    #[arg(long, env = "KEYMINT_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Longest wait between retries of an ApiKey whose reconcile keeps
    /// failing (retries back off exponentially from 1s).
    #[arg(long, env = "KEYMINT_MAX_BACKOFF", default_value = "5m", value_parser = parse_duration)]
    pub max_backoff: Duration,

    /// Namespace of the audit stream's ConfigMap segments (default: --namespace).
    #[arg(long, env = "KEYMINT_AUDIT_NAMESPACE")]
    pub audit_namespace: Option<String>,

    /// Size at which an audit segment is sealed and the next one started;
    /// below the API server's 1 MiB object limit.
    #[arg(long, env = "KEYMINT_AUDIT_SEGMENT_BYTES", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=1_000_000))]
    pub audit_segment_bytes: u64,

    /// How long audit history is kept: a segment is pruned once its newest
    /// entry is older than this (the pruning is itself audited). An age, so
    /// that no burst of entries pushes older history out.
    #[arg(long, env = "KEYMINT_AUDIT_RETENTION", default_value = "400d", value_parser = crate::audit::retention::parse_age)]
    pub audit_retention: Duration,

    /// Audit history younger than this is never pruned, not even over
    /// --audit-max-segments. At most --audit-retention.
    #[arg(long, env = "KEYMINT_AUDIT_RETENTION_FLOOR", default_value = "30d", value_parser = parse_duration)]
    pub audit_retention_floor: Duration,

    /// The audit stream's size bound, in segments (2000 of 64 KiB: about
    /// 128 MiB of ConfigMaps). Above it keymint reports
    /// keymint_audit_over_bound (alert), prunes only segments older than
    /// --audit-retention-floor, and keeps writing.
    #[arg(long, env = "KEYMINT_AUDIT_MAX_SEGMENTS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(2..))]
    pub audit_max_segments: u64,

    /// How many namespaces keymint_audit_entries_total labels by name; the
    /// entries of any further namespace count as `other`.
    #[arg(long, env = "KEYMINT_AUDIT_METRIC_NAMESPACES", default_value_t = crate::runtime::metrics::DEFAULT_AUDIT_NAMESPACES)]
    pub audit_metric_namespaces: usize,

    /// Elect a leader on a Lease in --namespace: only the leader reconciles,
    /// so several replicas can run for availability (the Helm chart turns
    /// this on; a single `keymint run` does not need it).
    #[arg(long, env = "KEYMINT_LEADER_ELECT", default_value_t = false, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "KEYMINT_LEASE_NAME", default_value = "keymint")]
    pub lease_name: String,

    /// Address of the HTTP server for /metrics, /healthz and /readyz (the
    /// operator serves nothing else: probes and metrics share this one
    /// bounded listener).
    #[arg(long, env = "KEYMINT_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,

    /// Log format.
    #[arg(long, env = "KEYMINT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub limits: crate::listener::limits::ListenerLimits,

    #[command(flatten)]
    pub owner_binding: crate::owner_binding::OwnerBindingOptions,
}

impl RunOptions {
    /// The audit stream's retention rule, if the three flags agree.
    pub fn audit_retention(&self) -> Result<Retention, RetentionError> {
        let max = usize::try_from(self.audit_max_segments).unwrap_or(usize::MAX);
        Retention::new(self.audit_retention, self.audit_retention_floor, max)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
