//! The `verify` scenario: `keymint verifier` with N keys indexed, under a
//! real HTTP load generator (wrk, Debian's package), against a floor — the
//! same server stack (`keymint::verify::listener` and its limits) answering
//! 200 without a check — and nginx with `auth_request` against nginx alone,
//! all in one run. The ApiKeys are created by the bench with an Active
//! status of its own (no operator: only the verifier reads them).
//!
//! The same bench binary, started with `KEYMINT_BENCH_ROLE=verify-floor`,
//! is the floor server.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keymint::apikey::key;
use keymint::apikey::{ApiKey, ApiKeySpec};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::Result;
use crate::cluster::{self, ControlPlane, REPO};
use crate::procs::{Kind, http_get, http_request};
use crate::scenarios::Ctx;

pub const FLOOR_ROLE: &str = "verify-floor";
const FLOOR_LINE: &str = "verify-floor: serving addr=";
/// Keys deleted one after another to measure the revocation lag.
const REVOCATIONS: usize = 100;
/// Requests in flight while the bench creates the ApiKeys.
const CREATE_CONCURRENCY: usize = 64;
/// wrk's connections at peak load.
const PEAK_CONNECTIONS: usize = 64;
/// The pause of each paced connection between requests.
const PACED_GAP_MS: f64 = 1.0;

pub async fn scenario(ctx: &mut Ctx) -> Result<Value> {
    for tool in ["wrk", "/usr/sbin/nginx"] {
        if Command::new(tool).arg("-v").output().is_err() {
            return Err(format!("{tool} is missing: apt-get install wrk nginx-light").into());
        }
    }
    let n = ctx.plan.verify_keys;
    let seconds = ctx.plan.load_seconds;
    // Not one of keymint's namespaces: no finalizer policy, since no
    // operator runs here to remove a finalizer.
    let ns = ctx.namespace(Kind::Floor, "verify").await?;
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &ns);
    eprintln!("bench: verify: creating {n} Active ApiKeys");
    let created = Instant::now();
    let mut keys = populate(&api, n).await?;
    let create_seconds = created.elapsed().as_secs_f64();
    let presented = keys.pop().ok_or("no key")?.1;
    let bearer = format!("Authorization: Bearer {presented}");

    let mut verifier = Server::verifier(&ctx.cp, &ns)?;
    let ready = verifier.ready().await?;
    let rss_ready = verifier.rss_mib();
    let indexed = verifier.metric("keymint_verifier_index_keys").await;
    let mut floor = Server::floor()?;
    floor.ready().await?;

    eprintln!("bench: verify: peak load, {seconds} s each");
    let floor_peak = wrk(&floor.url("/forward-auth"), &bearer, Load::Peak, seconds)?;
    let verifier_peak = wrk(&verifier.url("/forward-auth"), &bearer, Load::Peak, seconds)?;
    let half = Load::Paced(verifier_peak.rps / 2.0);
    let floor_paced = wrk(&floor.url("/forward-auth"), &bearer, half, seconds)?;
    let verifier_paced = wrk(&verifier.url("/forward-auth"), &bearer, half, seconds)?;
    let rss_loaded = verifier.rss_mib();
    let peak_rss = verifier.peak_rss_mib();

    eprintln!("bench: verify: revocation lag over {} deletes", keys.len());
    let lag = revocation_lag(&api, verifier.addr, &keys).await?;
    eprintln!("bench: verify: nginx with and without auth_request");
    let nginx = nginx(verifier.addr, &bearer, seconds)?;
    floor.stop();
    verifier.stop();

    Ok(json!({
        "keys": n,
        "indexed": indexed,
        "create_seconds": round3(create_seconds),
        "index_ready_seconds": round3(ready.as_secs_f64()),
        "rss_mib_ready": round3(rss_ready),
        "rss_mib_after_load": round3(rss_loaded),
        "peak_rss_mib": round3(peak_rss),
        "peak": {"verifier": verifier_peak.json(), "floor": floor_peak.json(),
                 "throughput_ratio_to_floor": ratio(verifier_peak.rps, floor_peak.rps)},
        "half_peak": {"verifier": verifier_paced.json(), "floor": floor_paced.json()},
        "revocation_lag": lag,
        "nginx": nginx,
    }))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ratio(a: f64, b: f64) -> Value {
    match b > 0.0 {
        true => json!(round3(a / b)),
        false => Value::Null,
    }
}

/// Creates `n` ApiKeys and gives each an Active status with the hash of a
/// freshly minted key; returns (name, key) of the last REVOCATIONS + 1.
async fn populate(api: &Api<ApiKey>, n: usize) -> Result<Vec<(String, String)>> {
    let kept = n.saturating_sub(REVOCATIONS + 1);
    let results: Vec<Result<Option<(String, String)>>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let minted = key::mint()?;
                let name = format!("vk-{i:06}");
                let pair = i / 10;
                let api_key = ApiKey::new(
                    &name,
                    ApiKeySpec {
                        project: format!("proj{}", pair % 4),
                        owner: format!("user{pair}@example.com"),
                        description: None,
                        expires_at: None,
                        secret_name: None,
                        secret_template: None,
                        show_once: None,
                    },
                );
                let status = json!({"status": {
                    "phase": "Active", "keyId": key::key_id(&minted),
                    "keyHash": key::hash(&minted), "secretName": name,
                }});
                let (post, patch) = (PostParams::default(), PatchParams::default());
                let merge = Patch::Merge(&status);
                retry(|| api.create(&post, &api_key)).await?;
                retry(|| api.patch_status(&name, &patch, &merge)).await?;
                if i > 0 && i % 10_000 == 0 {
                    eprintln!("bench: verify: {i} ApiKeys");
                }
                Ok((i >= kept).then(|| (name, minted.expose().to_string())))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    let mut keys = Vec::new();
    for r in results {
        keys.extend(r?);
    }
    Ok(keys)
}

async fn retry<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 4 => {
                eprintln!("bench: verify: {e}; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// From the delete call to the first refusal, key by key.
async fn revocation_lag(
    api: &Api<ApiKey>,
    verifier: SocketAddr,
    keys: &[(String, String)],
) -> Result<Value> {
    let mut lags = Vec::new();
    for (name, key) in keys {
        let body = json!({ "key": key }).to_string();
        let started = Instant::now();
        api.delete(name, &DeleteParams::default()).await?;
        loop {
            let (_, answer) = http_request(verifier, "POST", "/v1/verify", &body).await?;
            if !answer.contains("\"valid\":true") {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("{name} still verifies 10 s after its delete").into());
            }
        }
        lags.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    lags.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        let rank = ((q * lags.len() as f64).ceil() as usize).clamp(1, lags.len());
        round3(lags[rank - 1])
    };
    Ok(json!({"n": lags.len(), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}))
}

// ---------------------------------------------------------------------------
// The servers under load.

struct Server {
    child: Option<Child>,
    log_path: PathBuf,
    addr: SocketAddr,
    marker: &'static str,
    started: Instant,
}

impl Server {
    /// `keymint verifier` (release) for `ns`, as the cluster admin.
    fn verifier(cp: &ControlPlane, ns: &str) -> Result<Server> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keymint"));
        command
            .args(["verifier", "--watch-namespace", ns])
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info");
        Server::spawn(command, "verifier", "serving HTTP")
    }

    /// This binary as the floor server.
    fn floor() -> Result<Server> {
        let mut command = Command::new(std::env::current_exe()?);
        command.env(crate::floor::ROLE_ENV, FLOOR_ROLE);
        Server::spawn(command, "verify-floor", FLOOR_LINE)
    }

    fn spawn(mut command: Command, tag: &str, marker: &'static str) -> Result<Server> {
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
            marker,
            started,
        })
    }

    /// Waits for the address in the log, then for /readyz (the verifier's
    /// index is synced) or any answer (the floor); how long from the start.
    async fn ready(&mut self) -> Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let found = log.lines().find_map(|line| {
                let rest = line.split(self.marker).nth(1)?;
                rest.split("addr=")
                    .nth(1)
                    .or(Some(rest))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(addr) = found {
                self.addr = addr;
                if http_get(addr, "/readyz")
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

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn rss_mib(&self) -> f64 {
        cluster::memory_kib(self.pid()).1 as f64 / 1024.0
    }

    fn peak_rss_mib(&self) -> f64 {
        cluster::memory_kib(self.pid()).0 as f64 / 1024.0
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(self.addr, "/metrics").await.ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    fn stop(&mut self) {
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
        keymint::verify::listener::serve(listener, app, std::future::pending()).await;
        ExitCode::SUCCESS
    })
}

// ---------------------------------------------------------------------------
// wrk.

#[derive(Clone, Copy)]
enum Load {
    /// As fast as PEAK_CONNECTIONS connections go.
    Peak,
    /// About this many requests per second: connections that each pause
    /// PACED_GAP_MS between requests.
    Paced(f64),
}

struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    connections: usize,
}

impl Run {
    fn json(&self) -> Value {
        json!({"requests_per_s": round3(self.rps), "p50_ms": round3(self.p50_ms),
               "p99_ms": round3(self.p99_ms), "non_2xx": self.non_2xx,
               "connections": self.connections})
    }
}

/// One wrk run (1 thread) against `url` with `header`.
fn wrk(url: &str, header: &str, load: Load, seconds: u64) -> Result<Run> {
    let (connections, script) = match load {
        Load::Peak => (PEAK_CONNECTIONS, None),
        Load::Paced(rate) => {
            let connections = ((rate * PACED_GAP_MS / 1000.0).ceil() as usize).max(1);
            (connections, Some(paced_script()?))
        }
    };
    let mut command = Command::new("wrk");
    command
        .args(["-t1", "--latency", "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "-H", header]);
    if let Some(script) = &script {
        command.arg("-s").arg(script);
    }
    let output = command.arg(url).output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("wrk failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    parse_wrk(&text, connections).ok_or_else(|| format!("unreadable wrk output:\n{text}").into())
}

/// A wrk script whose connections pause between requests.
fn paced_script() -> Result<PathBuf> {
    let path = Path::new(REPO).join("target/bench/paced.lua");
    std::fs::write(
        &path,
        format!("function delay() return {PACED_GAP_MS} end\n"),
    )?;
    Ok(path)
}

fn parse_wrk(text: &str, connections: usize) -> Option<Run> {
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let rps = value("Requests/sec:")?.parse().ok()?;
    let non_2xx = value("Non-2xx or 3xx responses:").map_or(Some(0), |v| v.parse().ok())?;
    Some(Run {
        rps,
        p50_ms: duration_ms(&value("50%")?)?,
        p99_ms: duration_ms(&value("99%")?)?,
        non_2xx,
        connections,
    })
}

/// wrk's `850.00us`, `1.40ms`, `1.02s`, `2.00m` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(number * factor)
}

// ---------------------------------------------------------------------------
// nginx with and without auth_request.

fn nginx(verifier: SocketAddr, bearer: &str, seconds: u64) -> Result<Value> {
    let dir = Path::new(REPO).join("target/bench/nginx");
    std::fs::create_dir_all(&dir)?;
    let front = free_port()?;
    let upstream = free_port()?;
    std::fs::write(
        dir.join("nginx.conf"),
        nginx_config(&dir, front, upstream, verifier),
    )?;
    let mut command = Command::new("/usr/sbin/nginx");
    command
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: as for the servers above.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(front).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("nginx did not start; see target/bench/nginx/error.log".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let alone = wrk(
        &format!("http://{front}/alone/"),
        bearer,
        Load::Peak,
        seconds,
    );
    let auth = wrk(
        &format!("http://{front}/auth/"),
        bearer,
        Load::Peak,
        seconds,
    );
    let _ = child.kill();
    let _ = child.wait();
    let (alone, auth) = (alone?, auth?);
    Ok(json!({"alone": alone.json(), "auth_request": auth.json(),
              "throughput_ratio": ratio(auth.rps, alone.rps)}))
}

fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// One nginx worker; keep-alive connections to the upstream and to the
/// verifier, as a production configuration would have.
fn nginx_config(
    dir: &Path,
    front: SocketAddr,
    upstream: SocketAddr,
    verifier: SocketAddr,
) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream app {{ server {upstream}; keepalive 64; }}
    upstream keymint_verifier {{ server {verifier}; keepalive 64; }}
    server {{ listen {upstream}; location / {{ return 200 "ok\n"; }} }}
    server {{
        listen {front};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location /alone/ {{ proxy_pass http://app; }}
        location /auth/ {{
            auth_request /_keymint;
            auth_request_set $keymint_owner $upstream_http_x_keymint_owner;
            proxy_set_header X-Keymint-Owner $keymint_owner;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }}
        location = /_keymint {{
            internal;
            proxy_pass http://keymint_verifier/forward-auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}
