//! The verifier fails closed when it cannot know that its index is current:
//! a TCP proxy between it and the real API server is cut (every connection
//! closed, new ones black-holed: accepted, never answered), and within
//! `--max-staleness` every check answers 503 / UNAVAILABLE and `/readyz`
//! fails, instead of answering from the last list for as long as the API
//! server is out of reach; restored, it recovers. Before its first complete
//! list, the same.

use std::net::SocketAddr;
use std::time::Duration;

use keymint::apikey::{ApiKey, key};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::verifier::{self, Launch, Verifier};
use crate::support::{TestNamespace, api_key, eventually, raw_http};

/// Small, so the test is quick; set through the environment, which a
/// verifier without the setting ignores (so this test fails on it, rather
/// than on an unknown flag).
const MAX_STALENESS: &str = "3s";

/// A TCP proxy to `upstream` that the test can cut and restore. TLS passes
/// through untouched (the verifier's kubeconfig keeps the API server's CA;
/// its certificate names 127.0.0.1).
struct Proxy {
    addr: SocketAddr,
    open: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr, open: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = watch::channel(open);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, rx.clone()));
            }
        });
        Proxy { addr, open: tx }
    }

    /// Closes every connection; new ones are held unanswered.
    fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Forwards again; connections held while cut are closed, so their
    /// clients retry.
    fn restore(&self) {
        self.open.send_replace(true);
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut open: watch::Receiver<bool>) {
    if !*open.borrow_and_update() {
        // Black-holed: held, never read, until the proxy is restored.
        let _ = open.wait_for(|open| *open).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = open.wait_for(|open| !*open) => {}
    }
}

/// An Active ApiKey of project `payments`, its status written by the
/// admin (no operator runs here); returns its key.
async fn active(api: &Api<ApiKey>, name: &str) -> key::MintedKey {
    let minted = key::mint().expect("mint");
    api.create(
        &PostParams::default(),
        &api_key(name, "payments", "alice@example.com"),
    )
    .await
    .expect("create the ApiKey");
    let status = json!({"status": {
        "phase": "Active", "keyId": key::key_id(&minted), "keyHash": key::hash(&minted),
        "secretName": name,
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write the status");
    minted
}

/// The answers of all three protocols and `/readyz` for `minted`:
/// (forward-auth, /v1/verify, ext_authz gRPC code, /readyz).
async fn answers(verifier: &Verifier, minted: &key::MintedKey) -> (u16, u16, i64, u16) {
    let bearer = format!("Bearer {}", minted.expose());
    let auth = [("Authorization", bearer.as_str())];
    let forward = raw_http::get(verifier.http, "/forward-auth?project=payments", &auth).await;
    let body = json!({"key": minted.expose(), "project": "payments"});
    let json = raw_http::post_json(verifier.http, "/v1/verify", &body).await;
    let request = json!({"headers": {"authorization": bearer},
                         "contextExtensions": {"project": "payments"}});
    let grpc = verifier.ext_authz(&request)["grpcCode"]
        .as_i64()
        .unwrap_or(-1);
    let ready = raw_http::get(verifier.probe, "/readyz", &[]).await;
    (forward.status, json.status, grpc, ready.status)
}

const ANSWERING: (u16, u16, i64, u16) = (200, 200, 0, 200);
/// 503 everywhere, gRPC UNAVAILABLE (14).
const UNAVAILABLE: (u16, u16, i64, u16) = (503, 503, 14, 503);

/// The cut lasts longer than the bound, and the recovery is watched for
/// longer than it too, so both a stale yes and a stale no would show.
/// Bookmarks alone (one a minute on an idle watch: measured, see
/// `freshness::BOOKMARK_INTERVAL`) could not keep a 3 s bound: the probes do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_cut_from_the_api_server_answers_unavailable_then_recovers() {
    let ns = TestNamespace::new("verify-stale").await;
    let api: Api<ApiKey> = ns.api();
    let minted = active(&api, "ci").await;
    let proxy = Proxy::start(verifier::api_server(), true).await;
    let launch = Launch {
        env: &[("KEYMINT_VERIFIER_MAX_STALENESS", MAX_STALENESS)],
        api_server: Some(proxy.addr),
        ..Launch::default()
    };
    let verifier = Verifier::launch(&ns, launch).await;
    assert_eq!(answers(&verifier, &minted).await, ANSWERING);

    // Cut: the watch's connection closes, the relist and the probes hang.
    // Within the bound (3 s, and a tick), no check is answered.
    proxy.cut();
    let cut = tokio::time::Instant::now();
    eventually(Duration::from_secs(5), || async {
        answers(&verifier, &minted).await == UNAVAILABLE
    })
    .await;
    assert!(
        cut.elapsed() < Duration::from_secs(5),
        "unavailable within the bound"
    );
    let metrics = raw_http::get(verifier.probe, "/metrics", &[]).await.text();
    let age = metrics
        .lines()
        .find_map(|l| l.strip_prefix("keymint_verifier_index_age_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no index age:\n{metrics}"));
    assert!(age > 3.0, "the age passed the bound: {age}");
    assert!(
        metrics.contains(
            "keymint_verifier_verifications_total{protocol=\"ForwardAuth\",outcome=\"unavailable\"}"
        ),
        "{metrics}"
    );
    // And stays so while cut: silence is not proof.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(answers(&verifier, &minted).await, UNAVAILABLE);

    // Restored: the watch lists again (after its backoff) and answers.
    proxy.restore();
    eventually(Duration::from_secs(60), || async {
        answers(&verifier, &minted).await == ANSWERING
    })
    .await;
    // An idle healthy watch stays available well past the bound: the
    // probes prove it current.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(answers(&verifier, &minted).await, ANSWERING);
    assert!(
        verifier.log().contains("answering 503"),
        "{}",
        verifier.log()
    );
    ns.delete().await;
}

/// Before the first complete list there is nothing to answer from: 503,
/// not 401 "unknown" for every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_that_has_not_listed_yet_answers_unavailable() {
    let ns = TestNamespace::new("verify-unlisted").await;
    let api: Api<ApiKey> = ns.api();
    let minted = active(&api, "ci").await;
    let proxy = Proxy::start(verifier::api_server(), false).await;
    let launch = Launch {
        env: &[("KEYMINT_VERIFIER_MAX_STALENESS", MAX_STALENESS)],
        api_server: Some(proxy.addr),
        unready: true,
        ..Launch::default()
    };
    let verifier = Verifier::launch(&ns, launch).await;
    assert_eq!(answers(&verifier, &minted).await, UNAVAILABLE);
    let ready = raw_http::get(verifier.probe, "/readyz", &[]).await;
    assert!(ready.text().contains("not listed"), "{}", ready.text());
    proxy.restore();
    eventually(Duration::from_secs(60), || async {
        answers(&verifier, &minted).await == ANSWERING
    })
    .await;
    ns.delete().await;
}
