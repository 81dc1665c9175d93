//! The verifier behind a real Traefik (built from its Go module) with the
//! ForwardAuth middleware, configured as docs/gateways.md documents, in front of
//! an upstream that echoes the headers it received.

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::{Value, json};

use crate::support::operator::Operator;
use crate::support::traefik::{FORWARD_AUTH_ONLY, Traefik};
use crate::support::upstream::Upstream;
use crate::support::verifier::{Verifier, active_key};
use crate::support::{TestNamespace, api_key};

#[tokio::test]
async fn verifier_behind_traefik_passes_the_owner_and_nothing_forged() {
    let ns = TestNamespace::new("verify-traefik").await;
    let _operator = Operator::start(&ns.name, &[]);
    let key = active_key(&ns, &api_key("ci", "payments", "alice@example.com")).await;
    let billing = active_key(&ns, &api_key("bill", "billing", "bob@example.com")).await;
    let verifier = Verifier::start(&ns).await;
    let upstream = Upstream::start().await;
    let traefik = Traefik::start(verifier.http, upstream.addr, "payments").await;
    let bearer = format!("Bearer {key}");
    let forged = [
        ("X-Keymint-Owner", "mallory"),
        ("X-Keymint-Project", "billing"),
        ("X-Keymint-Key-Id", "km_forged"),
        ("X-Keymint-ApiKey", "elsewhere/forged"),
    ];

    // A valid key reaches the upstream with its owner — and what the client
    // claimed, and the key itself, do not.
    let mut headers = vec![("Authorization", bearer.as_str())];
    headers.extend(forged);
    let reply = traefik.get("/orders", &headers).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), traefik.log());
    let seen = reply.json();
    assert_verifier_headers_only(&seen, &ns.name);
    assert!(
        seen.get("authorization").is_none(),
        "the key is not passed on: {seen}"
    );
    let reply = traefik.get("/", &[("X-API-Key", &key)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["x-keymint-owner"], json!(["alice@example.com"]));
    assert!(
        seen.get("x-api-key").is_none(),
        "the key is not passed on: {seen}"
    );

    // `authResponseHeaders` alone (no strip middleware before it) already
    // replaces the client's headers with the verifier's.
    let path = format!("{FORWARD_AUTH_ONLY}/orders");
    let reply = traefik.get(&path, &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_verifier_headers_only(&reply.json(), &ns.name);

    // Refusals never reach the upstream, forged headers or not, on either
    // router; the verifier's 401 comes back with its WWW-Authenticate.
    let before = upstream.requests();
    let stranger = format!(
        "Bearer {}",
        keymint::apikey::key::mint().expect("mint").expose()
    );
    for path in ["/", FORWARD_AUTH_ONLY] {
        for (headers, status) in [
            (vec![("Authorization", stranger.as_str())], 401),
            (vec![("Authorization", "Bearer kmk_typo")], 401),
            (forged.to_vec(), 401),
            (vec![("X-API-Key", billing.as_str())], 403),
        ] {
            let reply = traefik.get(path, &headers).await;
            assert_eq!(reply.status, status, "{path} {headers:?}: {}", reply.text());
            if status == 401 {
                assert!(
                    reply
                        .header("WWW-Authenticate")
                        .is_some_and(|c| c.starts_with("Bearer realm=\"keymint\"")),
                    "{:?}",
                    reply.headers
                );
            }
        }
    }
    assert_eq!(upstream.requests(), before);

    // A verifier that cannot be reached fails closed.
    drop(verifier);
    let reply = traefik.get("/", &[("Authorization", &bearer)]).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(upstream.requests(), before);
    ns.delete().await;
}

/// The upstream saw each `X-Keymint-*` header once, with the verifier's
/// value for alice's key `ci` in project payments.
fn assert_verifier_headers_only(seen: &Value, namespace: &str) {
    assert_eq!(
        seen["x-keymint-owner"],
        json!(["alice@example.com"]),
        "{seen}"
    );
    assert_eq!(seen["x-keymint-project"], json!(["payments"]), "{seen}");
    assert_eq!(
        seen["x-keymint-apikey"],
        json!([format!("{namespace}/ci")]),
        "{seen}"
    );
    let key_ids = seen["x-keymint-key-id"].as_array().expect("a key id");
    assert!(
        key_ids.len() == 1 && key_ids[0].as_str().is_some_and(|id| id.starts_with("km_")),
        "{seen}"
    );
}

#[tokio::test]
async fn verifier_behind_traefik_refuses_a_deleted_key_within_a_second() {
    let ns = TestNamespace::new("verify-traefik-revoke").await;
    let mut operator = Operator::start(&ns.name, &[]);
    let key = active_key(&ns, &api_key("ci", "payments", "alice@example.com")).await;
    // From here on only the verifier acts: a refusal cannot come from the
    // controller deleting the ApiKey.
    operator.kill();
    let verifier = Verifier::start(&ns).await;
    let upstream = Upstream::start().await;
    let traefik = Traefik::start(verifier.http, upstream.addr, "payments").await;
    let bearer = format!("Bearer {key}");
    let reply = traefik.get("/", &[("Authorization", &bearer)]).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), traefik.log());

    // Revocation is `kubectl delete`.
    let api = ns.api::<keymint::apikey::ApiKey>();
    api.delete("ci", &DeleteParams::default())
        .await
        .expect("delete the ApiKey");
    crate::support::refused_within_a_second(|| async {
        traefik.get("/", &[("Authorization", &bearer)]).await.status
    })
    .await;
    let served = upstream.requests();
    let reply = traefik.get("/", &[("Authorization", &bearer)]).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(upstream.requests(), served, "a revoked key never arrives");
    assert_eq!(
        verifier.verify_json(&key, "payments").await["reason"],
        "revoked"
    );

    // The controller finishes the deletion before the namespace goes.
    let _operator = Operator::start(&ns.name, &[]);
    crate::support::eventually(Duration::from_secs(30), || async {
        api.get_opt("ci").await.expect("get").is_none()
    })
    .await;
    ns.delete().await;
}
