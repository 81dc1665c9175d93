//! Bad input to the verifier: each a quick 4xx with bounded memory, no
//! panic, and other clients unaffected.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::TestNamespace;
use crate::support::raw_http::{self, Reply};
use crate::support::verifier::Verifier;

#[tokio::test]
async fn verifier_answers_bad_requests_with_a_4xx_and_no_panic() {
    let ns = TestNamespace::new("verify-bad").await;
    let mut verifier = Verifier::start(&ns).await;
    let http = verifier.http;
    oversized_heads(http).await;
    let k1 = keymint::apikey::key::mint().expect("mint");
    unreadable_credentials(http, &k1).await;
    bad_json(http, &k1).await;
    let reply = ten_mib_body(http).await;
    assert_eq!(reply.status, 413, "a 10 MiB body");

    assert!(verifier.running(), "no panic:\n{}", verifier.log());
    assert!(!verifier.log().contains("panicked"), "{}", verifier.log());
    ns.delete().await;
}

/// A head over 16 KiB or 64 headers: 431.
async fn oversized_heads(http: std::net::SocketAddr) {
    let big = "x".repeat(20 * 1024);
    let reply = raw_http::get(http, "/forward-auth", &[("X-Padding", &big)]).await;
    assert_eq!(reply.status, 431, "an oversized head");
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(
        raw_http::get(http, "/forward-auth", &many).await.status,
        431,
        "too many headers"
    );
}

/// Two different keys, non-UTF-8 headers, not HTTP at all, too many
/// projects: 4xx, and no answer quotes a key.
async fn unreadable_credentials(http: std::net::SocketAddr, k1: &keymint::apikey::key::MintedKey) {
    let k2 = keymint::apikey::key::mint().expect("mint");
    let two = [("X-API-Key", k1.expose()), ("X-API-Key", k2.expose())];
    let reply = raw_http::get(http, "/forward-auth?project=p", &two).await;
    assert_eq!(reply.status, 401, "two different keys");
    assert!(
        !reply.text().contains(&k1.expose()[4..]),
        "the answer quotes no key"
    );

    let non_utf8 = b"GET /forward-auth?project=p HTTP/1.0\r\nX-API-Key: kmk_\xff\xfe\xfd\r\n\r\n";
    assert_eq!(raw_http::exchange(http, non_utf8).await.status, 401);
    let latin1 = b"GET /forward-auth?project=p HTTP/1.0\r\nAuthorization: Bearer \xe9t\xe9\r\n\r\n";
    assert_eq!(raw_http::exchange(http, latin1).await.status, 401);
    let garbage = raw_http::exchange(http, b"\x16\x03\x01\x02\x00 not http\r\n\r\n").await;
    assert_eq!(garbage.status, 400);

    let projects = vec!["project=p"; 17].join("&");
    let reply = raw_http::get(
        http,
        &format!("/forward-auth?{projects}"),
        &[("X-API-Key", k1.expose())],
    )
    .await;
    assert_eq!(reply.status, 400, "too many projects");
}

/// Bodies that are not `{"key", "project"}` JSON: 400 with a fixed
/// message; wrong methods and paths: 405 and 404.
async fn bad_json(http: std::net::SocketAddr, k1: &keymint::apikey::key::MintedKey) {
    for body in [
        &b"{\"key\": \xff}"[..],
        b"not json",
        b"[1, 2]",
        b"{\"key\": 5}",
    ] {
        let reply = raw_http::post(http, "/v1/verify", body).await;
        assert_eq!(reply.status, 400, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(reply.json()["reason"], "bad-request");
    }
    let quoted = json!({"key": k1.expose(), "project": 42});
    let reply = raw_http::post_json(http, "/v1/verify", &quoted).await;
    assert_eq!(reply.status, 400);
    assert!(
        !reply.text().contains(&k1.expose()[4..]),
        "a JSON error quotes no key"
    );
    assert_eq!(raw_http::get(http, "/v1/verify", &[]).await.status, 405);
    assert_eq!(raw_http::get(http, "/nothing-here", &[]).await.status, 404);
}

/// `POST /v1/verify` declaring and sending 10 MiB: the answer comes without
/// the server reading it all.
async fn ten_mib_body(http: std::net::SocketAddr) -> Reply {
    let size = 10 * 1024 * 1024;
    let mut stream = TcpStream::connect(http).await.expect("connect");
    let head = format!("POST /v1/verify HTTP/1.0\r\nHost: test\r\nContent-Length: {size}\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the head");
    let (mut read, mut write) = stream.into_split();
    let sender = tokio::spawn(async move {
        let chunk = vec![b'{'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            // The server may close the connection once it has answered.
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut raw = Vec::new();
    let read_all = tokio::io::AsyncReadExt::read_to_end(&mut read, &mut raw);
    // A reset after the answer is fine: what was read is the answer.
    let _ = tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("an answer within 10 s");
    sender.abort();
    raw_http::parse(&raw)
}

#[tokio::test]
async fn verifier_drops_slow_clients_and_keeps_answering_others() {
    let ns = TestNamespace::new("verify-slow").await;
    let mut verifier = Verifier::start(&ns).await;
    let http = verifier.http;

    // 200 clients of another address that start a request and never
    // finish its head (over that address's cap, some are closed at once).
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = raw_http::connect_from([127, 0, 0, 2], http).await;
        // One the server already closed may refuse the bytes.
        let _ = stream
            .write_all(b"GET /forward-auth HTTP/1.1\r\nHost: test\r\nX-API-Key: kmk_")
            .await;
        slow.push(stream);
    }
    let answered = tokio::time::Instant::now();
    let reply = raw_http::get(http, "/forward-auth?project=p", &[]).await;
    assert_eq!(reply.status, 401);
    assert!(
        answered.elapsed() < Duration::from_secs(1),
        "others are answered meanwhile"
    );

    // The server hangs up on them after its head timeout (5 s).
    let waited = tokio::time::Instant::now();
    for stream in &mut slow {
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::io::AsyncReadExt::read_to_end(stream, &mut buf),
        )
        .await;
        assert!(closed.is_ok(), "a slow client is dropped");
    }
    assert!(waited.elapsed() < Duration::from_secs(15));
    assert!(verifier.running(), "{}", verifier.log());
    ns.delete().await;
}

#[tokio::test]
async fn verifier_takes_a_flood_of_random_well_formed_keys_in_bounded_memory() {
    let ns = TestNamespace::new("verify-flood").await;
    let mut verifier = Verifier::start(&ns).await;
    let http = verifier.http;
    let before = verifier.rss_kib();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(async move {
            for _ in 0..1000 {
                let key = keymint::apikey::key::mint().expect("mint");
                let reply = raw_http::post_json(
                    http,
                    "/v1/verify",
                    &json!({"key": key.expose(), "project": "p"}),
                )
                .await;
                assert_eq!(reply.status, 200);
                assert_eq!(reply.json()["reason"], "unknown");
            }
        }));
    }
    for task in tasks {
        task.await.expect("flood");
    }
    let metrics = raw_http::get(verifier.probe, "/metrics", &[]).await.text();
    assert!(
        metrics.contains(
            "keymint_verifier_verifications_total{protocol=\"Json\",outcome=\"unknown\"} 4000"
        ),
        "{metrics}"
    );
    let after = verifier.rss_kib();
    // Nothing is kept per request: memory may grow by allocator slack only.
    assert!(
        after < before + 16 * 1024,
        "RSS {before} KiB -> {after} KiB"
    );
    assert!(verifier.running());
    ns.delete().await;
}
