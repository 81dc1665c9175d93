//! Runs the real `keymint` binary as an operator process for one test: the
//! way it runs in production, so tests can SIGKILL and restart it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::control_plane;

static STARTED: AtomicUsize = AtomicUsize::new(0);

pub struct Operator {
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl Operator {
    /// Starts `keymint run` scoped to `namespace` (it watches only that
    /// namespace and keeps its quota ledgers there), with debug logs, as the
    /// chart's ServiceAccount of that namespace: with production's
    /// privileges. `extra` adds or overrides flags.
    pub fn start(namespace: &str, extra: &[&str]) -> Operator {
        Self::start_with(namespace, extra, true)
    }

    /// As [`Operator::start`], but as cluster admin: for the few tests that
    /// deliberately step outside what the chart grants.
    pub fn start_as_admin(namespace: &str, extra: &[&str]) -> Operator {
        Self::start_with(namespace, extra, false)
    }

    /// As production runs it: keymint in a namespace of its own (`home`:
    /// its seal key, quota ledgers and audit stream), watching the tenants'
    /// `watched`, as cluster admin (the chart's RBAC is tested elsewhere).
    /// A tenant of `watched` reaches nothing in `home`.
    pub fn start_apart(home: &str, watched: &str, extra: &[&str]) -> Operator {
        Self::start_in(home, watched, extra, false)
    }

    fn start_with(namespace: &str, extra: &[&str], as_chart_service_account: bool) -> Operator {
        Self::start_in(namespace, namespace, extra, as_chart_service_account)
    }

    fn start_in(
        namespace: &str,
        watched: &str,
        extra: &[&str],
        as_chart_service_account: bool,
    ) -> Operator {
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = control_plane()
            .kubeconfig()
            .parent()
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join("operators");
        std::fs::create_dir_all(&dir).expect("operator log directory");
        let log_path = dir.join(format!("{namespace}-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("operator log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keymint"));
        command.args([
            "run",
            "--namespace",
            namespace,
            "--watch-namespace",
            watched,
        ]);
        // Test defaults, unless `extra` sets the same flag: quick
        // verification and retries; a free port; no leader election, so that
        // a test can kill an operator and start the next at once (the
        // leader-election tests turn it on).
        for (flag, value) in [
            ("--verify-interval", "2s"),
            ("--max-backoff", "2s"),
            ("--http-addr", "127.0.0.1:0"),
            ("--leader-elect", "false"),
        ] {
            if !extra.contains(&flag) {
                command.args([flag, value]);
            }
        }
        if !names_owner_binding(extra) {
            command.arg("--allow-unbound-owners");
        }
        command
            .args(extra)
            .env(
                "KUBECONFIG",
                match as_chart_service_account {
                    true => super::chart::operator_kubeconfig(
                        control_plane().kubeconfig(),
                        &dir,
                        namespace,
                    ),
                    false => control_plane().kubeconfig().to_path_buf(),
                },
            )
            .env("RUST_LOG", "keymint=debug,kube=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        crate::support::dies_with_the_test(&mut command);
        let child = command.spawn().expect("start keymint run");
        Operator {
            child: Some(child),
            log_path,
        }
    }

    /// SIGKILL: no graceful shutdown, no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a graceful exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().is_ok_and(|s| s.success())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The address of its HTTP server (/metrics, /healthz, /readyz), once it
    /// has logged it.
    pub async fn http_addr(&self) -> std::net::SocketAddr {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let found = self.log().lines().find_map(|line| {
                let rest = line.split("serving /metrics").nth(1)?;
                rest.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operator never served HTTP:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `timeout` for the process to exit: its exit code (None
    /// if it still runs, or was killed by a signal).
    pub async fn exit_code(&mut self, timeout: std::time::Duration) -> Option<i32> {
        super::exit_code(self.child.as_mut()?, timeout).await
    }

    /// Its peak and current resident memory, in KiB (VmHWM and VmRSS of
    /// /proc/<pid>/status).
    pub fn memory_kib(&self) -> (u64, u64) {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .expect("the operator runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("the operator's /proc status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// The process id, to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `extra` says how to treat the owner binding. Most tests install
/// no admission policy (it is cluster-wide, and the cluster is shared): they
/// run keymint with `--allow-unbound-owners`, as a cluster without the
/// chart's policies must; tests of the binding name their policy instead.
pub fn names_owner_binding(extra: &[&str]) -> bool {
    extra
        .iter()
        .any(|a| a.starts_with("--owner-binding-policy") || a.starts_with("--allow-unbound-owners"))
}
