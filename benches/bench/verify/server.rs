//! The servers under load: `keymint verifier` and the floor server.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::Result;
use crate::cluster::{self, ControlPlane, REPO};
use crate::procs::http_get;

pub const FLOOR_ROLE: &str = "verify-floor";
const FLOOR_LINE: &str = "verify-floor: serving addr=";
pub(crate) struct Server {
    child: Option<Child>,
    log_path: PathBuf,
    pub(crate) addr: SocketAddr,
    /// Where /readyz and /metrics are: the verifier's probe port, or the
    /// floor's one port.
    probe: SocketAddr,
    marker: &'static str,
    /// The log line naming the probe port, if it has its own.
    probe_marker: Option<&'static str>,
    started: Instant,
}

impl Server {
    /// `keymint verifier` (release) for `ns`, as the cluster admin; its
    /// log is `target/bench/logs/<tag>.log`.
    pub(crate) fn verifier(cp: &ControlPlane, ns: &str, tag: &str) -> Result<Server> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keymint"));
        command
            .args(["verifier", "--watch-namespace", ns])
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .args(["--probe-addr", "127.0.0.1:0"])
            // No owner binding in the bench's cluster: admission is not measured.
            .arg("--allow-unbound-owners")
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info");
        Server::spawn(command, tag, "serving HTTP", Some("serving probes"))
    }

    /// This binary as the floor server.
    pub(super) fn floor() -> Result<Server> {
        let mut command = Command::new(std::env::current_exe()?);
        command.env(crate::floor::ROLE_ENV, FLOOR_ROLE);
        Server::spawn(command, "verify-floor", FLOOR_LINE, None)
    }

    fn spawn(
        mut command: Command,
        tag: &str,
        marker: &'static str,
        probe_marker: Option<&'static str>,
    ) -> Result<Server> {
        let dir = PathBuf::from(REPO).join("target/bench/logs");
        std::fs::create_dir_all(&dir)?;
        let log_path = dir.join(format!("{tag}.log"));
        let log = std::fs::File::create(&log_path)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the server dies with the bench.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        let child = command.spawn()?;
        Ok(Server {
            child: Some(child),
            log_path,
            addr: "0.0.0.0:0".parse()?,
            probe: "0.0.0.0:0".parse()?,
            marker,
            probe_marker,
            started,
        })
    }

    /// Waits for the address in the log, then for /readyz (the verifier's
    /// index is synced) or any answer (the floor); how long from the start.
    pub(crate) async fn ready(&mut self) -> Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let found = logged_addr(&log, self.marker);
            let probe = match self.probe_marker {
                Some(marker) => logged_addr(&log, marker),
                None => found,
            };
            if let (Some(addr), Some(probe)) = (found, probe) {
                self.addr = addr;
                self.probe = probe;
                if http_get(probe, "/readyz")
                    .await
                    .is_ok_and(|(c, _)| c == 200 || c == 404)
                {
                    return Ok(self.started.elapsed());
                }
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("exited ({status}); see {}", self.log_path.display()).into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!("not ready within 300 s; see {}", self.log_path.display()).into())
    }

    /// The verifier's gRPC (ext_authz) address, from its log.
    pub(crate) fn grpc_addr(&self) -> Result<SocketAddr> {
        let log = std::fs::read_to_string(&self.log_path)?;
        log.lines()
            .find_map(|line| {
                let rest = line.split("serving gRPC").nth(1)?;
                rest.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| format!("no gRPC address in {}", self.log_path.display()).into())
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub(crate) fn rss_mib(&self) -> f64 {
        cluster::memory_kib(self.pid()).1 as f64 / 1024.0
    }

    pub(crate) fn peak_rss_mib(&self) -> f64 {
        cluster::memory_kib(self.pid()).0 as f64 / 1024.0
    }

    pub(super) async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(self.probe, "/metrics").await.ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address on the log line that has `marker`.
fn logged_addr(log: &str, marker: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let rest = line.split(marker).nth(1)?;
        rest.split("addr=")
            .nth(1)
            .or(Some(rest))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The floor server: keymint's HTTP stack (listener limits, body limit,
/// timeout) with a `/forward-auth` that answers 200 without looking.
pub fn floor_main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            eprintln!("verify-floor: cannot bind");
            return ExitCode::FAILURE;
        };
        match listener.local_addr() {
            Ok(addr) => eprintln!("{FLOOR_LINE}{addr}"),
            Err(_) => return ExitCode::FAILURE,
        }
        let routes = axum::Router::new().route(
            "/forward-auth",
            axum::routing::any(|| async { axum::http::StatusCode::OK }),
        );
        let app = keymint::verify::http::guarded(routes);
        let limits = keymint::listener::limits::ListenerLimits::default();
        let refused = prometheus_client::metrics::counter::Counter::default();
        keymint::listener::http1::serve(listener, app, &limits, refused, std::future::pending())
            .await;
        ExitCode::SUCCESS
    })
}
