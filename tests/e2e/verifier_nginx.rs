//! The verifier behind a real nginx (Debian's package) with `auth_request`,
//! configured as docs/gateways.md documents, in front of an upstream that echoes
//! the headers it received.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DeleteParams;
use serde_json::Value;

use crate::support::nginx::Nginx;
use crate::support::operator::Operator;
use crate::support::upstream::Upstream;
use crate::support::verifier::{Verifier, active_key};
use crate::support::{TestNamespace, api_key};

#[tokio::test]
async fn verifier_behind_nginx_passes_the_owner_and_nothing_forged() {
    let ns = TestNamespace::new("verify-nginx").await;
    let _operator = Operator::start(&ns.name, &[]);
    let key = active_key(&ns, &api_key("ci", "payments", "alice@example.com")).await;
    let billing = active_key(&ns, &api_key("bill", "billing", "bob@example.com")).await;
    let verifier = Verifier::start(&ns).await;
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(verifier.http, upstream.addr, "payments").await;
    let bearer = format!("Bearer {key}");

    // A valid key reaches the upstream with its owner — and the owner the
    // client claimed, and the key itself, do not.
    let reply = nginx
        .get(
            "/orders",
            &[("Authorization", &bearer), ("X-Keymint-Owner", "mallory")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), nginx.error_log());
    let seen: Value = reply.json();
    assert_eq!(
        seen["x-keymint-owner"],
        serde_json::json!(["alice@example.com"])
    );
    assert_eq!(seen["x-keymint-project"], serde_json::json!(["payments"]));
    assert_eq!(
        seen["x-keymint-apikey"],
        serde_json::json!([format!("{}/ci", ns.name)])
    );
    assert!(
        seen.get("authorization").is_none(),
        "the key is not passed on: {seen}"
    );
    let reply = nginx.get("/", &[("X-API-Key", &key)]).await;
    assert_eq!(
        reply.json()["x-keymint-owner"],
        serde_json::json!(["alice@example.com"])
    );

    // Refusals never reach the upstream, forged owner or not.
    let before = upstream.requests();
    let stranger = format!(
        "Bearer {}",
        keymint::apikey::key::mint().expect("mint").expose()
    );
    for (headers, status) in [
        (vec![("Authorization", stranger.as_str())], 401),
        (vec![("Authorization", "Bearer kmk_typo")], 401),
        (vec![("X-Keymint-Owner", "alice@example.com")], 401),
        (vec![("X-API-Key", billing.as_str())], 403),
    ] {
        let reply = nginx.get("/", &headers).await;
        assert_eq!(reply.status, status, "{headers:?}: {}", reply.text());
        if status == 401 {
            assert!(
                reply
                    .header("WWW-Authenticate")
                    .is_some_and(|c| c.starts_with("Bearer realm=\"keymint\""))
            );
        }
    }
    assert_eq!(upstream.requests(), before);
    ns.delete().await;
}

#[tokio::test]
async fn verifier_behind_nginx_refuses_a_deleted_key_within_a_second_and_an_expired_one_at_once() {
    let ns = TestNamespace::new("verify-revoke").await;
    let mut operator = Operator::start(&ns.name, &[]);
    let key = active_key(&ns, &api_key("ci", "payments", "alice@example.com")).await;
    // Expires at a whole second a few seconds from now.
    let expires_at =
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 8).expect("time");
    let mut expiring = api_key("soon", "payments", "alice@example.com");
    expiring.spec.expires_at = Some(Time(expires_at));
    let soon = active_key(&ns, &expiring).await;
    // From here on only the verifier acts: a refusal cannot come from the
    // controller deleting the ApiKey or marking it Expired.
    operator.kill();
    let verifier = Verifier::start(&ns).await;
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(verifier.http, upstream.addr, "payments").await;
    let api = ns.api::<keymint::apikey::ApiKey>();
    refused_within_a_second_of_the_delete(&nginx, &verifier, &api, &key).await;
    refused_from_expires_at_on(&nginx, &verifier, &api, &soon, expires_at).await;

    // The controller finishes the deletion before the namespace goes.
    let _operator = Operator::start(&ns.name, &[]);
    crate::support::eventually(Duration::from_secs(30), || async {
        api.get_opt("ci").await.expect("get").is_none()
    })
    .await;
    ns.delete().await;
}

/// Revocation is `kubectl delete`.
async fn refused_within_a_second_of_the_delete(
    nginx: &Nginx,
    verifier: &Verifier,
    api: &kube::Api<keymint::apikey::ApiKey>,
    key: &str,
) {
    let bearer = format!("Bearer {key}");
    assert_eq!(
        nginx.get("/", &[("Authorization", &bearer)]).await.status,
        200
    );

    // Revocation is `kubectl delete`.
    api.delete("ci", &DeleteParams::default())
        .await
        .expect("delete the ApiKey");
    crate::support::refused_within_a_second(|| async {
        nginx.get("/", &[("Authorization", &bearer)]).await.status
    })
    .await;
    // Refused while the ApiKey still exists (its finalizer waits for the
    // controller): the deletionTimestamp is enough.
    assert_eq!(
        verifier.verify_json(key, "payments").await["reason"],
        "revoked"
    );
}

/// Expiry is the verifier's clock at request time, not the controller's.
async fn refused_from_expires_at_on(
    nginx: &Nginx,
    verifier: &Verifier,
    api: &kube::Api<keymint::apikey::ApiKey>,
    soon: &str,
    expires_at: jiff::Timestamp,
) {
    let soon_bearer = format!("Bearer {soon}");
    assert_eq!(
        nginx
            .get("/", &[("Authorization", &soon_bearer)])
            .await
            .status,
        200
    );
    let wait = expires_at.duration_since(jiff::Timestamp::now());
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    let reply = nginx.get("/", &[("Authorization", &soon_bearer)]).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    let answer = verifier.verify_json(soon, "payments").await;
    assert_eq!(answer["reason"], "expired", "{answer}");
    let phase = api
        .get("soon")
        .await
        .expect("ApiKey")
        .status
        .and_then(|s| s.phase);
    assert_eq!(
        phase,
        Some(keymint::apikey::Phase::Active),
        "the controller did not act"
    );
}
