//! Traefik (built from its Go module by tests/traefik/build.sh) on loopback
//! for one test, with docs/gateways.md's ForwardAuth middlewares in front of an
//! upstream. Static and dynamic (file provider) configuration and logs in a
//! directory of their own; Traefik runs as a child and is killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{control_plane, eventually, raw_http};

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// The path prefix of a second router that has the `keymint` ForwardAuth
/// middleware alone, without docs/gateways.md's `strip-keymint-headers` before
/// it: what `authResponseHeaders` does by itself.
pub const FORWARD_AUTH_ONLY: &str = "/forward-auth-only";

pub struct Traefik {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Traefik {
    /// Traefik on a free loopback port: every request to it must carry a
    /// key of `project` that `verifier` (its HTTP address) accepts before it
    /// reaches `upstream`.
    pub async fn start(verifier: SocketAddr, upstream: SocketAddr, project: &str) -> Traefik {
        let binary = traefik_binary();
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = control_plane()
            .kubeconfig()
            .parent()
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join(format!("traefik-{n}"));
        std::fs::create_dir_all(&dir).expect("traefik directory");
        let addr = free_port();
        let dynamic = dir.join("dynamic.yml");
        std::fs::write(&dynamic, dynamic_configuration(verifier, upstream, project))
            .expect("write dynamic.yml");
        let config = dir.join("traefik.yml");
        std::fs::write(&config, static_configuration(&dir, addr, &dynamic))
            .expect("write traefik.yml");
        let log = std::fs::File::create(dir.join("stderr.log")).expect("traefik log");
        let mut command = Command::new(binary);
        command
            .arg(format!("--configFile={}", config.display()))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        crate::support::dies_with_the_test(&mut command);
        let child = command.spawn().expect("start traefik");
        let traefik = Traefik {
            child: Some(child),
            addr,
            dir,
        };
        eventually(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        // The entry point listens before the file provider's routers are
        // loaded (a 404 until then): wait until a request without a key
        // reaches the ForwardAuth middleware and is refused.
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let status = traefik.get("/", &[]).await.status;
                if status != 404 {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert_eq!(
            ready.ok(),
            Some(401),
            "traefik did not start refusing keyless requests: {}",
            traefik.log()
        );
        traefik
    }

    /// Traefik's own log (debug level) and its stderr.
    pub fn log(&self) -> String {
        ["traefik.log", "stderr.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `GET path` through Traefik with `headers`.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> raw_http::Reply {
        raw_http::get(self.addr, path, headers).await
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// target/tools/bin/traefik (tests/traefik: `make traefik`), built on
/// first use.
fn traefik_binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| super::test_tool("traefik", "tests/traefik/build.sh"))
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("addr")
}

/// One entry point on loopback, the file provider, logs in `dir`; nothing
/// that calls out (version check, anonymous usage statistics).
fn static_configuration(dir: &Path, listen: SocketAddr, dynamic: &Path) -> String {
    let dir = dir.display();
    let dynamic = dynamic.display();
    format!(
        r#"global:
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  web:
    address: "{listen}"
providers:
  file:
    filename: "{dynamic}"
    watch: false
log:
  level: DEBUG
  filePath: "{dir}/traefik.log"
accessLog:
  filePath: "{dir}/access.log"
"#
    )
}

/// docs/gateways.md's Traefik section ("Traefik (ForwardAuth) — tested") in the
/// file provider's terms: the Middlewares' `spec`s are the same fields, the
/// IngressRoute becomes a router, the Service a load balancer. A second
/// router, on [`FORWARD_AUTH_ONLY`], has the ForwardAuth middleware alone.
fn dynamic_configuration(verifier: SocketAddr, upstream: SocketAddr, project: &str) -> String {
    format!(
        r#"http:
  middlewares:
    strip-keymint-headers:
      headers:
        customRequestHeaders:
          X-Keymint-Owner: ""
          X-Keymint-Project: ""
          X-Keymint-Key-Id: ""
          X-Keymint-ApiKey: ""
    keymint:
      forwardAuth:
        address: "http://{verifier}/forward-auth?project={project}"
        authResponseHeaders: [X-Keymint-Owner, X-Keymint-Project, X-Keymint-Key-Id, X-Keymint-ApiKey]
        maxResponseBodySize: 4096
    drop-keymint-key:
      headers:
        customRequestHeaders:
          Authorization: ""
          X-API-Key: ""
  routers:
    payments-api:
      entryPoints: [web]
      rule: "PathPrefix(`/`)"
      middlewares: [strip-keymint-headers, keymint, drop-keymint-key]
      service: payments-api
    forward-auth-only:
      entryPoints: [web]
      rule: "PathPrefix(`{FORWARD_AUTH_ONLY}`)"
      middlewares: [keymint]
      service: payments-api
  services:
    payments-api:
      loadBalancer:
        servers:
          - url: "http://{upstream}"
"#
    )
}
