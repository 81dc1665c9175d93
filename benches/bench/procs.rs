//! The processes under measurement: the release `keymint run`, and the
//! floor client (this same binary in its floor role). Both get the same
//! kubeconfig, namespace and concurrency, log to target/bench/logs/, and die
//! with the bench.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Result;
use crate::cluster::{self, ControlPlane};

/// The concurrency both keymint (its default --concurrency) and the floor
/// use, unless the bench's `--concurrency` says otherwise.
pub const CONCURRENCY: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Keymint,
    Floor,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Keymint => "keymint",
            Kind::Floor => "floor",
        }
    }

    pub fn agent(self) -> &'static str {
        match self {
            Kind::Keymint => cluster::KEYMINT_AGENT_PREFIX,
            Kind::Floor => cluster::FLOOR_AGENT,
        }
    }
}

pub struct Proc {
    pub kind: Kind,
    child: Option<Child>,
    pub log_path: PathBuf,
    pub started: Instant,
    pid: u32,
}

impl Proc {
    /// `keymint run` for `namespace` (its ledgers and audit stream live
    /// there too), production defaults but for the flags a local run needs.
    pub fn keymint(cp: &ControlPlane, namespace: &str, tag: &str, extra: &[&str]) -> Result<Proc> {
        let binary = std::env::var_os("KEYMINT_BENCH_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_keymint")),
            PathBuf::from,
        );
        let mut command = Command::new(binary);
        command.args([
            "run",
            "--namespace",
            namespace,
            "--watch-namespace",
            namespace,
            "--http-addr",
            "127.0.0.1:0",
            "--leader-elect",
            "false",
            // The bench's cluster has no owner binding (a cluster-wide
            // admission policy); it measures keymint, not admission.
            "--allow-unbound-owners",
        ]);
        command.args(extra);
        command.env("RUST_LOG", "info");
        Proc::spawn(Kind::Keymint, command, cp, tag)
    }

    /// The floor client, watching `namespace`.
    pub fn floor(
        cp: &ControlPlane,
        namespace: &str,
        tag: &str,
        concurrency: usize,
    ) -> Result<Proc> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env(crate::floor::ROLE_ENV, "floor")
            .env(crate::floor::NAMESPACE_ENV, namespace)
            .env(crate::floor::CONCURRENCY_ENV, concurrency.to_string());
        Proc::spawn(Kind::Floor, command, cp, tag)
    }

    fn spawn(kind: Kind, mut command: Command, cp: &ControlPlane, tag: &str) -> Result<Proc> {
        let dir = PathBuf::from(cluster::REPO).join("target/bench/logs");
        std::fs::create_dir_all(&dir)?;
        let log_path = dir.join(format!("{tag}-{}.log", kind.label()));
        let log = std::fs::File::create(&log_path)?;
        command
            .env("KUBECONFIG", &cp.kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the child is SIGKILLed if the
        // bench goes away, so no process outlives the run.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        let child = command.spawn()?;
        let pid = child.id();
        Ok(Proc {
            kind,
            child: Some(child),
            log_path,
            started,
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        cluster::memory_kib(self.pid).0 as f64 / 1024.0
    }

    pub fn rss_mib(&self) -> f64 {
        cluster::memory_kib(self.pid).1 as f64 / 1024.0
    }

    pub fn cpu_seconds(&self) -> f64 {
        cluster::cpu_seconds(self.pid)
    }

    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.kind.label())),
            _ => None,
        }
    }

    /// Waits until the process is ready: keymint's /readyz answers 200 (its
    /// cache is synced), the floor has logged that its watch is synced.
    /// Returns how long that took from the start of the process.
    pub async fn ready(&mut self) -> Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = match self.kind {
            Kind::Keymint => Some(self.http_addr().await?),
            Kind::Floor => None,
        };
        loop {
            let ready = match addr {
                Some(addr) => http_get(addr, "/readyz").await.is_ok_and(|(c, _)| c == 200),
                None => self.log().contains(crate::floor::READY_LINE),
            };
            if ready {
                return Ok(self.started.elapsed());
            }
            if let Some(why) = self.exited() {
                return Err(format!("{why}; see {}", self.log_path.display()).into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not ready within 120 s; see {}",
                    self.kind.label(),
                    self.log_path.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// keymint's HTTP address, from its log.
    pub async fn http_addr(&mut self) -> Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(60);
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
                return Ok(addr);
            }
            if let Some(why) = self.exited() {
                return Err(format!("{why}; see {}", self.log_path.display()).into());
            }
            if Instant::now() > deadline {
                return Err("keymint never logged its HTTP address".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// keymint's own metrics (`keymint_*` samples), empty for the floor.
    pub async fn metrics(&mut self) -> std::collections::BTreeMap<String, f64> {
        let mut out = std::collections::BTreeMap::new();
        if self.kind != Kind::Keymint {
            return out;
        }
        let Ok(addr) = self.http_addr().await else {
            return out;
        };
        let Ok((_, body)) = http_get(addr, "/metrics").await else {
            return out;
        };
        for line in body.lines() {
            if line.starts_with('#') || !line.starts_with("keymint_") {
                continue;
            }
            if let Some((name, value)) = line.rsplit_once(' ')
                && let Ok(v) = value.parse::<f64>()
            {
                out.insert(name.to_string(), v);
            }
        }
        out
    }

    /// SIGTERM and wait for the exit; returns how long the shutdown took.
    pub fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        started.elapsed()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.0 GET on loopback: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http_request(addr, "GET", path, "").await
}

/// A minimal HTTP/1.0 request on loopback (JSON body): status and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("malformed HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// A `perf record` of a process, for --profile.
pub struct Perf {
    child: Child,
    pub data: PathBuf,
}

impl Perf {
    pub fn start(pid: u32, name: &str) -> Option<Perf> {
        let data = PathBuf::from(cluster::REPO).join(format!("target/bench/perf-{name}.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "499", "-g", "-o"])
            .arg(&data)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Perf { child, data })
    }

    /// Stops recording and writes a flat report next to the data.
    pub fn finish(mut self) -> Option<PathBuf> {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
        let report = self.data.with_extension("txt");
        let out = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--percent-limit",
                "0.5",
                "--sort",
                "symbol",
                "-g",
                "none",
                "-i",
            ])
            .arg(&self.data)
            .output()
            .ok()?;
        std::fs::write(&report, out.stdout).ok()?;
        Some(report)
    }
}
