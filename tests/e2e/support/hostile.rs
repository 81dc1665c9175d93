//! Hostile clients and what a test watches while they attack: the
//! processes' peak memory, their probe ports (answering within the chart's
//! probe timeout), and a well-behaved client's checks. Attackers connect
//! from other loopback addresses (127.0.0.2 and up) than the good client
//! and the probes (127.0.0.1), as another pod would.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

use super::raw_http;

/// The chart's probes' `timeoutSeconds`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a well-behaved check may take to be answered at all (the
/// servers' own request timeout).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A well-behaved client's check, with a valid key of project `payments`.
pub enum GoodClient {
    ForwardAuth(SocketAddr, String),
    ExtAuthz(SocketAddr, String),
}

impl GoodClient {
    /// The check's answer: Ok when the key was granted.
    async fn check(&self) -> Result<(), String> {
        match self {
            GoodClient::ForwardAuth(addr, key) => {
                let bearer = format!("Bearer {key}");
                let reply = raw_http::get(
                    *addr,
                    "/forward-auth?project=payments",
                    &[("Authorization", &bearer)],
                )
                .await;
                match reply.status {
                    200 => Ok(()),
                    other => Err(format!("forward-auth answered {other}")),
                }
            }
            GoodClient::ExtAuthz(addr, key) => {
                let mut client = AuthorizationClient::connect(format!("http://{addr}"))
                    .await
                    .map_err(|e| format!("connect to ext_authz: {e}"))?;
                let answer = client
                    .check(check_request(key))
                    .await
                    .map_err(|e| format!("Authorization/Check: {e}"))?;
                match answer.into_inner().status.map(|s| s.code) {
                    Some(0) => Ok(()),
                    other => Err(format!("ext_authz answered code {other:?}")),
                }
            }
        }
    }
}

fn check_request(key: &str) -> CheckRequest {
    let http = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        headers: [("authorization".to_string(), format!("Bearer {key}"))].into(),
        ..HttpRequest::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Request::default()
            }),
            context_extensions: [("project".to_string(), "payments".to_string())].into(),
            ..AttributeContext::default()
        }),
    }
}

/// What the watch saw go wrong.
#[derive(Default, Debug)]
pub struct Seen {
    pub probe_failures: Vec<String>,
    pub checks: usize,
    pub check_failures: Vec<String>,
}

/// Probes every one of `probes` and asks `good`'s check, over and over for
/// `how_long`.
pub async fn watch(probes: &[SocketAddr], good: &GoodClient, how_long: Duration) -> Seen {
    let mut seen = Seen::default();
    let end = tokio::time::Instant::now() + how_long;
    while tokio::time::Instant::now() < end {
        for probe in probes {
            match tokio::time::timeout(PROBE_TIMEOUT, raw_http::get(*probe, "/readyz", &[])).await {
                Ok(reply) if reply.status == 200 => {}
                Ok(reply) => seen
                    .probe_failures
                    .push(format!("{probe}/readyz answered {}", reply.status)),
                Err(_) => seen.probe_failures.push(format!(
                    "{probe}/readyz: no answer within {PROBE_TIMEOUT:?}"
                )),
            }
        }
        seen.checks += 1;
        match tokio::time::timeout(CHECK_TIMEOUT, good.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => seen.check_failures.push(e),
            Err(_) => seen
                .check_failures
                .push(format!("no answer within {CHECK_TIMEOUT:?}")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen
}

impl Seen {
    /// Every probe answered in time and every check was granted.
    pub fn assert_healthy(&self) {
        assert!(
            self.probe_failures.is_empty(),
            "probes failed: {:?}",
            self.probe_failures
        );
        assert!(self.checks > 0);
        assert!(
            self.check_failures.is_empty(),
            "{} of {} well-behaved checks failed: {:?}",
            self.check_failures.len(),
            self.checks,
            self.check_failures
        );
    }
}

/// The peak resident memory of process `pid` so far (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .expect("VmHWM")
}

/// Open file descriptors of process `pid` (its sockets among them).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc fd")
        .count()
}

/// An HTTP/2 connection to `addr` from `source`, driven in the background.
pub async fn h2_connection(
    source: [u8; 4],
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = raw_http::connect_from(source, addr).await;
    let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

/// The head of an ext_authz Check, as gRPC sends it.
pub fn check_head() -> http::Request<()> {
    http::Request::post("http://verifier/envoy.service.auth.v3.Authorization/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request head")
}

/// A child process that opens `per_source` connections to `target` from
/// each of `sources` and holds them, silent, until it is dropped. Its own
/// process because one process may hold at most 20,000 file descriptors
/// here. Connects do not wait: those the server does not accept wait in
/// the kernel's backlog or retry their SYN.
pub struct Holder {
    pid: libc::pid_t,
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

impl Holder {
    pub fn spawn(target: SocketAddrV4, sources: &[[u8; 4]], per_source: usize) -> Holder {
        // All the child needs is made before fork: after it, the child
        // makes only async-signal-safe calls.
        let target = sockaddr(target);
        let sources: Vec<libc::sockaddr_in> = sources
            .iter()
            .map(|ip| sockaddr(SocketAddrV4::new((*ip).into(), 0)))
            .collect();
        let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: the child calls only prctl, socket, bind, connect and
        // pause (async-signal-safe) and never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                for source in &sources {
                    for _ in 0..per_source {
                        let fd =
                            libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                        if fd < 0 {
                            break;
                        }
                        libc::bind(fd, (source as *const libc::sockaddr_in).cast(), size);
                        libc::connect(fd, (&target as *const libc::sockaddr_in).cast(), size);
                    }
                }
                loop {
                    libc::pause();
                }
            }
        }
        Holder { pid }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}
