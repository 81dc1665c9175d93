//! Minting: an ApiKey gets exactly one Secret with its key, and a status
//! that records the key's id and hash — never the key.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::{ApiKey, Phase};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, events_for, wait_for_phase};

#[tokio::test]
async fn an_api_key_is_minted_into_its_secret() {
    let ns = TestNamespace::new("mint").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api: Api<ApiKey> = ns.api();
    let mut key = api_key("ci-deploy", "payments", "alice@example.com");
    key.spec.secret_name = Some("payments-ci".into());
    key.spec.description = Some("CI deploy key".into());
    api.create(&PostParams::default(), &key)
        .await
        .expect("create");

    // Room for a machine busy with other tests (a release build, say).
    let key = wait_for_phase(&api, "ci-deploy", Phase::Active, Duration::from_secs(60)).await;
    let status = key.status.clone().expect("status");
    let secret: Secret = ns.api().get("payments-ci").await.expect("Secret exists");

    let plaintext =
        String::from_utf8(secret.data.as_ref().expect("data")["api-key"].0.clone()).expect("utf8");
    let parsed = keymint::apikey::key::parse(&plaintext).expect("a well-formed key");
    assert_eq!(
        status.key_hash.as_deref(),
        Some(keymint::apikey::key::hash(&parsed).as_str())
    );
    assert_eq!(
        status.key_id.as_deref(),
        Some(keymint::apikey::key::key_id(&parsed).as_str())
    );
    assert_eq!(status.secret_name.as_deref(), Some("payments-ci"));
    assert!(status.minted_at.is_some());
    assert_eq!(status.observed_generation, key.metadata.generation);
    assert_eq!(status.conditions[0].type_, "Ready");
    assert_eq!(status.conditions[0].status, "True");

    let owner = &secret.owner_references()[0];
    assert_eq!(owner.uid, key.uid().expect("uid"));
    assert_eq!(owner.controller, Some(true));
    assert_eq!(secret.labels()["keymint.dev/api-key"], "ci-deploy");
    assert_eq!(secret.labels()["app.kubernetes.io/managed-by"], "keymint");
    assert_eq!(
        secret.annotations()["keymint.dev/key-hash"],
        status.key_hash.clone().expect("hash")
    );
    assert_eq!(secret.immutable, Some(true));

    crate::support::eventually(Duration::from_secs(10), || async {
        events_for(&ns.client, &ns.name, "ci-deploy")
            .await
            .iter()
            .any(|(reason, _)| reason == "Minted")
    })
    .await;

    // Deleting the ApiKey deletes its Secret first (finalizer).
    api.delete("ci-deploy", &DeleteParams::default())
        .await
        .expect("delete");
    crate::support::eventually(Duration::from_secs(20), || async {
        api.get_opt("ci-deploy").await.expect("get").is_none()
    })
    .await;
    assert!(
        ns.api::<Secret>()
            .get_opt("payments-ci")
            .await
            .expect("get")
            .is_none()
    );
    ns.delete().await;
}
