//! `keymint verifier` against the real control plane and the real operator:
//! forward-auth, `POST /v1/verify` and Envoy ext_authz (through a client
//! built from Envoy's protos) give one answer, and nothing leaks the key.

use keymint::apikey::key;
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::verifier::{Verifier, active_key};
use crate::support::{TestNamespace, api_key, raw_http};

/// One Active key, and the verifier that answers for it.
struct Setup {
    verifier: Verifier,
    key: String,
    key_id: String,
    api_key_ref: String,
    /// A well-formed key no ApiKey has.
    stranger: key::MintedKey,
}

#[tokio::test]
async fn verifier_answers_alike_on_json_forward_auth_and_ext_authz() {
    let ns = TestNamespace::new("verify").await;
    let _operator = Operator::start(&ns.name, &[]);
    let key = active_key(&ns, &api_key("ci", "payments", "alice@example.com")).await;
    let setup = Setup {
        key_id: key::key_id(&key::parse(&key).expect("a keymint key")),
        key,
        verifier: Verifier::start(&ns).await,
        api_key_ref: format!("{}/ci", ns.name),
        stranger: key::mint().expect("mint"),
    };
    json_answers(&setup).await;
    forward_auth_answers(&setup).await;
    prefixed_forward_auth_answers(&setup).await;
    ext_authz_answers(&setup);
    nothing_leaks(&setup).await;
    ns.delete().await;
}

async fn json_answers(setup: &Setup) {
    let (verifier, key, stranger) = (&setup.verifier, &setup.key, &setup.stranger);
    let (key_id, api_key_ref) = (setup.key_id.as_str(), setup.api_key_ref.as_str());
    let answer = verifier.verify_json(key, "payments").await;
    assert_eq!(
        answer,
        json!({"valid": true, "reason": "valid", "owner": "alice@example.com",
               "project": "payments", "keyId": key_id, "apiKey": api_key_ref,
               "expiresAt": null}),
    );
    assert_eq!(verifier.verify_json(key, "payments").await["valid"], true);
    let other = verifier.verify_json(key, "billing").await;
    assert_eq!(
        (&other["valid"], &other["reason"], &other["owner"]),
        (&json!(false), &json!("wrong-project"), &json!(null))
    );
    let unknown = verifier.verify_json(stranger.expose(), "payments").await;
    assert_eq!(unknown["reason"], "unknown");
    assert_eq!(unknown["keyId"], key::key_id(stranger));
    assert_eq!(
        verifier.verify_json("kmk_nope", "payments").await["reason"],
        "malformed"
    );
    let no_key = json!({"project": "payments"});
    let missing = raw_http::post_json(verifier.http, "/v1/verify", &no_key).await;
    assert_eq!(missing.json()["reason"], "missing");
}

/// Any method, either header, the projects in the query.
async fn forward_auth_answers(setup: &Setup) {
    let (verifier, key, stranger) = (&setup.verifier, &setup.key, &setup.stranger);
    let (key_id, api_key_ref) = (setup.key_id.as_str(), setup.api_key_ref.as_str());
    let bearer = format!("Bearer {key}");
    for (method, headers) in [
        ("GET", [("Authorization", bearer.as_str())]),
        ("POST", [("X-API-Key", key.as_str())]),
    ] {
        let path = "/forward-auth?project=payments";
        let reply = raw_http::request(verifier.http, method, path, &headers).await;
        assert_eq!(reply.status, 200, "{method}: {}", reply.text());
        assert_eq!(reply.header("X-Keymint-Owner"), Some("alice@example.com"));
        assert_eq!(reply.header("X-Keymint-Project"), Some("payments"));
        assert_eq!(reply.header("X-Keymint-Key-Id"), Some(key_id));
        assert_eq!(reply.header("X-Keymint-ApiKey"), Some(api_key_ref));
    }
    let auth = [("Authorization", bearer.as_str())];
    let path = "/forward-auth?project=billing&project=payments";
    assert_eq!(raw_http::get(verifier.http, path, &auth).await.status, 200);
    let forbidden = raw_http::get(verifier.http, "/forward-auth?project=billing", &auth).await;
    assert_eq!(forbidden.status, 403);
    assert!(
        forbidden
            .header("WWW-Authenticate")
            .is_some_and(|c| c.contains("insufficient_scope"))
    );
    assert_eq!(forbidden.header("X-Keymint-Owner"), None);
    let none = raw_http::get(verifier.http, "/forward-auth?project=payments", &[]).await;
    assert_eq!(
        (none.status, none.header("WWW-Authenticate")),
        (401, Some("Bearer realm=\"keymint\""))
    );
    let wrong = format!("Bearer {}", stranger.expose());
    let refused = raw_http::get(
        verifier.http,
        "/forward-auth?project=*",
        &[("Authorization", &wrong)],
    )
    .await;
    assert_eq!(refused.status, 401);
    assert!(
        refused
            .header("WWW-Authenticate")
            .is_some_and(|c| c.contains("invalid_token"))
    );
}

/// Envoy's ext_authz HTTP mode (and Istio's `envoyExtAuthzHttp`) send the
/// original path and query after the prefix: the query is the client's and
/// is not read; the projects come from the header the proxy sets.
async fn prefixed_forward_auth_answers(setup: &Setup) {
    let (verifier, key) = (&setup.verifier, &setup.key);
    let bearer = format!("Bearer {key}");
    let path = "/forward-auth/orders/42?project=billing";
    let headers = [
        ("Authorization", bearer.as_str()),
        ("X-Keymint-Require-Project", "payments"),
    ];
    let reply = raw_http::get(verifier.http, path, &headers).await;
    assert_eq!(reply.status, 200, "the client's query is not read");
    assert_eq!(reply.header("X-Keymint-Owner"), Some("alice@example.com"));
    for (required, status) in [
        ("payments", 200),
        ("billing", 403),
        ("billing, payments", 200),
    ] {
        let headers = [
            ("Authorization", bearer.as_str()),
            ("X-Keymint-Require-Project", required),
        ];
        let reply = raw_http::get(verifier.http, "/forward-auth/", &headers).await;
        assert_eq!(reply.status, status, "required {required}");
    }
    let wrong = format!("Bearer {}", setup.stranger.expose());
    let refused = raw_http::get(
        verifier.http,
        "/forward-auth/x",
        &[
            ("Authorization", &wrong),
            ("X-Keymint-Require-Project", "payments"),
        ],
    )
    .await;
    assert_eq!(refused.status, 401);
}

fn ext_authz_answers(setup: &Setup) {
    let (verifier, key, stranger) = (&setup.verifier, &setup.key, &setup.stranger);
    let (key_id, api_key_ref) = (setup.key_id.as_str(), setup.api_key_ref.as_str());
    let bearer = format!("Bearer {key}");
    let wrong = format!("Bearer {}", stranger.expose());
    let payments = json!({"project": "payments"});
    let ok = verifier.ext_authz(&json!({"headers": {"authorization": bearer},
                                        "contextExtensions": payments}));
    assert_eq!(ok["grpcCode"], 0, "{ok}");
    assert_eq!(ok["headers"]["x-keymint-owner"], "alice@example.com");
    assert_eq!(ok["headers"]["x-keymint-project"], "payments");
    assert_eq!(ok["headers"]["x-keymint-key-id"], key_id);
    assert_eq!(ok["headers"]["x-keymint-apikey"], api_key_ref);
    let raw = verifier.ext_authz(&json!({"rawHeaders": [["x-api-key", key]],
                                         "contextExtensions": {"project": "payments"}}));
    assert_eq!(raw["grpcCode"], 0, "{raw}");
    let denied = verifier.ext_authz(&json!({"headers": {"x-api-key": key},
                                            "contextExtensions": {"project": "billing"}}));
    assert_eq!(
        (&denied["grpcCode"], &denied["httpStatus"]),
        (&json!(7), &json!(403)),
        "{denied}"
    );
    let denied = verifier.ext_authz(&json!({"headers": {"authorization": wrong},
                                            "contextExtensions": payments}));
    assert_eq!(
        (&denied["grpcCode"], &denied["httpStatus"]),
        (&json!(16), &json!(401)),
        "{denied}"
    );
    assert!(
        denied["headers"]["www-authenticate"]
            .as_str()
            .is_some_and(|c| c.contains("invalid_token"))
    );
    let empty = verifier.ext_authz(&json!({"contextExtensions": payments}));
    assert_eq!(
        (&empty["grpcCode"], &empty["httpStatus"]),
        (&json!(16), &json!(401)),
        "{empty}"
    );
}

/// The key is nowhere but in the requests that carried it.
async fn nothing_leaks(setup: &Setup) {
    let (verifier, key, stranger) = (&setup.verifier, &setup.key, &setup.stranger);
    let key_id = setup.key_id.as_str();
    let metrics = raw_http::get(verifier.probe, "/metrics", &[]).await.text();
    assert!(
        metrics.contains(
            "keymint_verifier_verifications_total{protocol=\"Json\",outcome=\"valid\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("keymint_verifier_index_keys 1"),
        "{metrics}"
    );
    let body = &key[key::PREFIX.len()..];
    for (what, text) in [("metrics", &metrics), ("log", &verifier.log())] {
        assert!(!text.contains(body), "the key is in the verifier's {what}");
        assert!(
            !text.contains(&stranger.expose()[4..]),
            "a presented key is in the {what}"
        );
    }
    assert!(
        verifier.log().contains(key_id),
        "log lines carry the key id"
    );
}

#[tokio::test]
async fn verifier_refuses_keys_that_are_not_active() {
    let ns = TestNamespace::new("verify-tamper").await;
    let _operator = Operator::start(&ns.name, &[]);
    let key = active_key(&ns, &api_key("ci", "payments", "alice@example.com")).await;
    let verifier = Verifier::start(&ns).await;
    assert_eq!(verifier.verify_json(&key, "payments").await["valid"], true);

    // Someone replaces the key's Secret: the ApiKey turns SecretTampered,
    // and its key no longer verifies (nor does the look-alike in the
    // Secret): only Active ApiKeys are indexed, so it is unknown.
    let secrets = ns.api::<k8s_openapi::api::core::v1::Secret>();
    let original = secrets.get("ci").await.expect("Secret");
    crate::support::replace_secret(&secrets, &original, true).await;
    let api = ns.api::<keymint::apikey::ApiKey>();
    crate::support::wait_for_phase(
        &api,
        "ci",
        keymint::apikey::Phase::SecretTampered,
        std::time::Duration::from_secs(30),
    )
    .await;
    crate::support::eventually(std::time::Duration::from_secs(5), || async {
        verifier.verify_json(&key, "payments").await["reason"] == "unknown"
    })
    .await;
    ns.delete().await;
}
