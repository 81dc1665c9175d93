//! Hostile clients against the real processes, over real sockets: an
//! HTTP/2 stream flood with slow bodies and reset floods against the
//! verifier's gRPC port, 20,000 idle connections, and slowloris against
//! both processes' serving and probe ports. Throughout, each process's
//! peak memory stays under `RSS_BOUND_MIB`, its probe port answers within
//! the chart's probe timeout, and a well-behaved client's checks are
//! granted. Attackers come from other loopback addresses than the good
//! client and the probes, as another pod would.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use keymint::listener::limits::ListenerLimits;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::support::hostile::{
    GoodClient, Holder, check_head, h2_connection, open_fds, peak_rss_mib, watch,
};
use crate::support::operator::Operator;
use crate::support::verifier::{Verifier, admin_active_key};
use crate::support::{TestNamespace, eventually, raw_http};

/// The most memory either process may reach under attack: half the
/// verifier's 128 MiB limit in the chart, a quarter of the operator's. Measured (debug build): 31 to 36 MiB under these
/// attacks; before the bounds, the operator reached 158 MiB under slowloris.
const RSS_BOUND_MIB: u64 = 64;

/// A gRPC message head announcing 60,000 bytes, and the first 16 KiB of
/// them: a body that is never finished.
fn slow_body() -> Bytes {
    let mut body = vec![0u8];
    body.extend(60_000u32.to_be_bytes());
    body.extend(vec![b'x'; 16 * 1024]);
    Bytes::from(body)
}

/// Opens Checks with slow bodies on one connection from `source` until
/// `stop`, as fast as the server lets it: the most streams the server
/// allowed at once (as it advertised them).
async fn slow_streams(source: [u8; 4], grpc: SocketAddr, stop: Instant) -> usize {
    let (mut send, _driver) = h2_connection(source, grpc).await;
    let mut held = Vec::new();
    let body = slow_body();
    while Instant::now() < stop {
        // The connection's own task sends what is queued: let it run.
        tokio::task::yield_now().await;
        let ready = tokio::time::timeout(Duration::from_millis(500), send.clone().ready()).await;
        match ready {
            Ok(Ok(ready)) => send = ready,
            Ok(Err(_)) => break,
            Err(_) => continue,
        }
        let Ok((response, mut stream)) = send.send_request(check_head(), false) else {
            break;
        };
        let _ = stream.send_data(body.clone(), false);
        held.push((response, stream));
    }
    send.current_max_send_streams()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_stream_flood_with_slow_bodies_leaves_memory_probes_and_checks_alone() {
    let ns = TestNamespace::new("hostile-streams").await;
    let key = admin_active_key(&ns, "good").await;
    let verifier = Verifier::start(&ns).await;
    let good = GoodClient::ExtAuthz(verifier.grpc, key.expose().to_string());
    let stop = Instant::now() + Duration::from_secs(8);
    let flood: Vec<_> = (0..16)
        .map(|_| tokio::spawn(slow_streams([127, 0, 0, 2], verifier.grpc, stop)))
        .collect();
    let seen = watch(&[verifier.probe], &good, Duration::from_secs(8)).await;
    for connection in flood {
        let allowed = connection.await.expect("attacker");
        assert!(
            allowed <= 32,
            "the server allows {allowed} streams per connection"
        );
    }
    let peak = peak_rss_mib(verifier.pid());
    eprintln!("verifier peak RSS {peak} MiB");
    assert!(peak <= RSS_BOUND_MIB, "verifier peak RSS {peak} MiB");
    seen.assert_healthy();
    ns.delete().await;
}

/// Requests that break their own content-length: the server resets
/// each stream (a local reset, RUSTSEC-2024-0003) until it closes the
/// connection. How many it took; None if the connection outlived them all.
async fn local_reset_flood(source: [u8; 4], grpc: SocketAddr, streams: usize) -> Option<usize> {
    let (mut send, driver) = h2_connection(source, grpc).await;
    for n in 0..streams {
        tokio::task::yield_now().await;
        match tokio::time::timeout(Duration::from_secs(2), send.clone().ready()).await {
            Ok(Ok(ready)) => send = ready,
            _ => return Some(n),
        }
        // A head that promises a byte of body and ends the stream.
        let mut head = check_head();
        head.headers_mut()
            .insert("content-length", http::HeaderValue::from_static("1"));
        if send.send_request(head, true).is_err() {
            return Some(n);
        }
    }
    // Whatever the server answered to the last streams has arrived.
    tokio::time::sleep(Duration::from_millis(500)).await;
    driver.is_finished().then_some(streams)
}

/// Streams opened and at once cancelled (the rapid-reset attack,
/// CVE-2023-44487), as fast as the server lets them be.
async fn rapid_reset_flood(source: [u8; 4], grpc: SocketAddr, stop: Instant) {
    let (mut send, _driver) = h2_connection(source, grpc).await;
    while Instant::now() < stop {
        tokio::task::yield_now().await;
        match tokio::time::timeout(Duration::from_secs(1), send.clone().ready()).await {
            Ok(Ok(ready)) => send = ready,
            Ok(Err(_)) => {
                // Cut off: come back on a new connection.
                (send, _) = h2_connection(source, grpc).await;
                continue;
            }
            Err(_) => continue,
        }
        if let Ok((_, mut stream)) = send.send_request(check_head(), false) {
            stream.send_reset(h2::Reason::CANCEL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_floods_are_cut_off_and_leave_probes_and_checks_alone() {
    let ns = TestNamespace::new("hostile-resets").await;
    let key = admin_active_key(&ns, "good").await;
    let verifier = Verifier::start(&ns).await;
    let good = GoodClient::ExtAuthz(verifier.grpc, key.expose().to_string());
    let stop = Instant::now() + Duration::from_secs(6);
    let rapid: Vec<_> = (0..4)
        .map(|_| tokio::spawn(rapid_reset_flood([127, 0, 0, 3], verifier.grpc, stop)))
        .collect();
    let local = tokio::spawn(local_reset_flood([127, 0, 0, 3], verifier.grpc, 3000));
    let seen = watch(&[verifier.probe], &good, Duration::from_secs(6)).await;
    for flood in rapid {
        flood.await.expect("attacker");
    }
    let cut_off = local.await.expect("attacker");
    assert!(
        cut_off.is_some_and(|n| n < 3000),
        "the connection outlived 3,000 locally reset streams: {cut_off:?}"
    );
    let peak = peak_rss_mib(verifier.pid());
    eprintln!("verifier peak RSS {peak} MiB");
    assert!(peak <= RSS_BOUND_MIB, "verifier peak RSS {peak} MiB");
    seen.assert_healthy();
    ns.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_idle_connections_take_no_more_than_their_sources_caps() {
    let ns = TestNamespace::new("hostile-idle").await;
    let key = admin_active_key(&ns, "good").await;
    let verifier = Verifier::start(&ns).await;
    let good = GoodClient::ForwardAuth(verifier.http, key.expose().to_string());
    let SocketAddr::V4(http) = verifier.http else {
        panic!("the verifier listens on 127.0.0.1");
    };
    let before = open_fds(verifier.pid());
    // Two processes of 10,000 silent connections each, from two addresses.
    let _holders = [
        Holder::spawn(http, &[[127, 0, 0, 5]], 10_000),
        Holder::spawn(http, &[[127, 0, 0, 6]], 10_000),
    ];
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = watch(&[verifier.probe], &good, Duration::from_secs(3)).await;
    let held = open_fds(verifier.pid()).saturating_sub(before);
    let seen_later = watch(&[verifier.probe], &good, Duration::from_secs(3)).await;
    let cap = ListenerLimits::default().max_connections_per_source as usize;
    // The watch's own connections come and go: a few more.
    assert!(
        held <= 2 * cap + 8,
        "the verifier holds {held} connections of two sources capped at {cap}"
    );
    let metrics = raw_http::get(verifier.probe, "/metrics", &[]).await.text();
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keymint_connections_refused_total{listener=\"http\"} "))
        .and_then(|v| v.parse().ok())
        .expect("the refusals are counted");
    assert!(refused > 0.0, "{metrics}");
    let peak = peak_rss_mib(verifier.pid());
    eprintln!("verifier peak RSS {peak} MiB");
    assert!(peak <= RSS_BOUND_MIB, "verifier peak RSS {peak} MiB");
    seen.assert_healthy();
    seen_later.assert_healthy();
    ns.delete().await;
}

/// `connections` to `addr` from `source`, each sending 200 KiB of a header
/// that never ends, then a byte a second until `stop`.
async fn slowloris(source: [u8; 4], addr: SocketAddr, connections: usize, stop: Instant) {
    let start = b"GET /forward-auth HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    let pad = vec![b'a'; 200 * 1024];
    let mut open = Vec::new();
    for _ in 0..connections {
        let mut stream = raw_http::connect_from(source, addr).await;
        // The server may refuse the bytes (over the cap, or over its head
        // limit): that is its defence.
        if stream.write_all(&start).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(50), stream.write_all(&pad)).await;
            open.push(stream);
        }
    }
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for stream in &mut open {
            let _ = stream.write_all(b"a").await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_against_both_processes_serving_and_probe_ports_fails_no_probe() {
    let ns = TestNamespace::new("hostile-slowloris").await;
    let key = admin_active_key(&ns, "good").await;
    let verifier = Verifier::start(&ns).await;
    // Its own namespace: it would find the admin's key without a Secret.
    let home = TestNamespace::new("hostile-slowloris-op").await;
    let operator = Operator::start(&home.name, &[]);
    let operator_http = operator.http_addr().await;
    eventually(Duration::from_secs(30), || async {
        raw_http::get(operator_http, "/readyz", &[]).await.status == 200
    })
    .await;
    let good = GoodClient::ForwardAuth(verifier.http, key.expose().to_string());
    let stop = Instant::now() + Duration::from_secs(8);
    let attacks: Vec<_> = [verifier.http, verifier.probe, operator_http]
        .into_iter()
        .map(|addr| tokio::spawn(slowloris([127, 0, 0, 4], addr, 600, stop)))
        .collect();
    let seen = watch(
        &[verifier.probe, operator_http],
        &good,
        Duration::from_secs(8),
    )
    .await;
    for attack in attacks {
        attack.await.expect("attacker");
    }
    for (process, pid) in [("verifier", verifier.pid()), ("operator", operator.pid())] {
        let peak = peak_rss_mib(pid);
        eprintln!("{process} peak RSS {peak} MiB");
        assert!(peak <= RSS_BOUND_MIB, "{process} peak RSS {peak} MiB");
    }
    seen.assert_healthy();
    ns.delete().await;
    home.delete().await;
}

/// hyper's head timer runs again from the end of each response, so a
/// kept-alive connection left idle is closed at `--head-timeout` (5 s): the
/// keep-alive idle bound, here on the operator's port.
#[tokio::test]
async fn a_kept_alive_connection_left_idle_is_closed_at_the_head_timeout() {
    use tokio::io::AsyncReadExt;
    let home = TestNamespace::new("hostile-keepalive").await;
    let operator = Operator::start(&home.name, &[]);
    let addr = operator.http_addr().await;
    let mut stream = raw_http::connect_from([127, 0, 0, 7], addr).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut answer = vec![0u8; 1024];
    let n = stream.read(&mut answer).await.expect("read the answer");
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the idle kept-alive connection is still open after 15 s"
    );
    home.delete().await;
}
