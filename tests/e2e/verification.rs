//! Verification: a minted key's Secret is re-read on every reconcile and
//! every --verify-interval. A Secret that disappeared or was replaced is
//! reported (status, Warning Event) and never re-minted or overwritten; the
//! operator needs no watch on Secrets to find out.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::{ApiKey, Phase};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use crate::support::operator::Operator;
use crate::support::{
    TestNamespace, api_key, apiserver_audit, eventually, record_secret_uids, replace_secret,
    wait_for_phase, wait_for_warning, warnings,
};

/// The harness runs the operator with `--verify-interval 2s`.
const VERIFY_INTERVAL: Duration = Duration::from_secs(2);

/// Mints `name` and returns the ApiKey (Active) and its Secret.
async fn minted(ns: &TestNamespace, name: &str) -> (ApiKey, Secret) {
    let api: Api<ApiKey> = ns.api();
    api.create(
        &PostParams::default(),
        &api_key(name, "verify", "alice@example.com"),
    )
    .await
    .expect("create ApiKey");
    let key = wait_for_phase(&api, name, Phase::Active, Duration::from_secs(20)).await;
    let secret = ns.api::<Secret>().get(name).await.expect("Secret exists");
    (key, secret)
}

/// The Ready condition of `key`: (status, reason, message).
fn ready(key: &ApiKey) -> (String, String, String) {
    let status = key.status.as_ref().expect("status");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(status.conditions[0].type_, "Ready", "Ready comes first");
    (
        ready.status.clone(),
        ready.reason.clone(),
        ready.message.clone(),
    )
}

/// Lets a few verification rounds pass, then checks the Secret under
/// `replacement`'s name is still exactly `replacement`.
async fn assert_left_alone(secrets: &Api<Secret>, replacement: &Secret) {
    tokio::time::sleep(VERIFY_INTERVAL * 3).await;
    let now = secrets
        .get(&replacement.name_any())
        .await
        .expect("the replacement Secret still exists");
    assert_eq!(now.uid(), replacement.uid(), "the replacement was deleted");
    assert_eq!(
        now.resource_version(),
        replacement.resource_version(),
        "the replacement was modified"
    );
    assert_eq!(now.data, replacement.data);
}

#[tokio::test]
async fn a_secret_deleted_out_of_band_is_lost_and_never_reminted() {
    let ns = TestNamespace::new("lost").await;
    let secrets: Api<Secret> = ns.api();
    let seen = record_secret_uids(secrets.clone()).await;
    let mut operator = Operator::start(&ns.name, &[]);
    let api: Api<ApiKey> = ns.api();
    let (key, secret) = minted(&ns, "ci-deploy").await;
    let key_hash = key.status.as_ref().and_then(|s| s.key_hash.clone());
    assert!(key_hash.is_some());

    let mark = apiserver_audit::mark();
    secrets
        .delete("ci-deploy", &DeleteParams::default())
        .await
        .expect("delete the Secret out of band");

    let lost = wait_for_phase(
        &api,
        "ci-deploy",
        Phase::SecretLost,
        Duration::from_secs(10),
    )
    .await;
    let (status, reason, message) = ready(&lost);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "SecretLost"));
    assert!(
        message.contains("ci-deploy") && message.contains("create a new one"),
        "the message names the Secret and says what to do: {message}"
    );
    let note = wait_for_warning(&ns, "ci-deploy", "SecretLost").await;
    assert!(note.contains("create a new one"), "{note}");

    // Several verification rounds, then a restart (a fresh list of every
    // ApiKey): nothing brings a key back under that name.
    tokio::time::sleep(VERIFY_INTERVAL * 3).await;
    operator.kill();
    let operator = Operator::start(&ns.name, &[]);
    eventually(Duration::from_secs(20), || async {
        operator.log().matches("reconciled").count() >= 2
    })
    .await;
    tokio::time::sleep(VERIFY_INTERVAL * 2).await;

    assert!(
        secrets.get_opt("ci-deploy").await.expect("get").is_none(),
        "a Secret was re-created under the lost key's name"
    );
    let uids = seen.lock().expect("lock").get("ci-deploy").cloned();
    assert_eq!(
        uids,
        Some(BTreeSet::from([secret.uid().expect("uid")])),
        "only the original Secret ever existed under that name"
    );
    if apiserver_audit::path().is_some() {
        let creates: Vec<_> = apiserver_audit::keymint_writes_since(mark, &ns.name)
            .into_iter()
            .filter(|w| w.verb == "create" && w.object_ref.resource == "secrets")
            .collect();
        assert!(creates.is_empty(), "keymint created Secrets: {creates:?}");
    }
    let after = api.get("ci-deploy").await.expect("ApiKey");
    let status = after.status.expect("status");
    assert_eq!(status.phase, Some(Phase::SecretLost));
    assert_eq!(status.key_hash, key_hash, "the recorded hash is kept");
    assert_eq!(
        warnings(&ns.client, &ns.name, "ci-deploy", "SecretLost")
            .await
            .len(),
        1,
        "one SecretLost Event, not one per verification or restart"
    );
    drop(operator);
    ns.delete().await;
}

#[tokio::test]
async fn a_replaced_secret_is_tampered_and_never_overwritten() {
    let ns = TestNamespace::new("tamper").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let (key, original) = minted(&ns, "ci-deploy").await;
    let key_hash = key.status.as_ref().and_then(|s| s.key_hash.clone());

    let replacement = replace_secret(&secrets, &original, true).await;

    let tampered = wait_for_phase(
        &api,
        "ci-deploy",
        Phase::SecretTampered,
        Duration::from_secs(10),
    )
    .await;
    let (status, reason, message) = ready(&tampered);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SecretTampered")
    );
    assert!(
        message.contains("compromised") && message.contains("create a new one"),
        "the message says what to do: {message}"
    );
    assert_eq!(
        tampered.status.as_ref().and_then(|s| s.key_hash.clone()),
        key_hash,
        "the recorded hash is kept, not replaced by the forged one"
    );
    let note = wait_for_warning(&ns, "ci-deploy", "SecretTampered").await;
    assert!(note.contains("ci-deploy"), "{note}");

    assert_left_alone(&secrets, &replacement).await;
    let later = api.get("ci-deploy").await.expect("ApiKey");
    assert_eq!(
        later.status.and_then(|s| s.phase),
        Some(Phase::SecretTampered),
        "it stays tampered"
    );
    ns.delete().await;
}

#[tokio::test]
async fn tampering_is_found_by_periodic_verification_alone() {
    let ns = TestNamespace::new("periodic").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();

    // Without a verification due, nothing notices a replaced Secret: the
    // operator has no watch on Secrets (it needs only get/create/delete).
    let operator = Operator::start(&ns.name, &["--verify-interval", "1h"]);
    let (_, original) = minted(&ns, "unwatched").await;
    // Let the Minted reconcile's follow-ups settle before taking the version.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = api.get("unwatched").await.expect("ApiKey");
    replace_secret(&secrets, &original, true).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = api.get("unwatched").await.expect("ApiKey");
    assert_eq!(
        after.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Active),
        "something reacted to the Secret change before any verification was due"
    );
    assert_eq!(after.resource_version(), before.resource_version());
    drop(operator);

    // With --verify-interval 2s the periodic check alone finds it: the test
    // touches only the Secret, never the ApiKey.
    let _operator = Operator::start(&ns.name, &[]);
    let (_, original) = minted(&ns, "ci-deploy").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let untouched = api.get("ci-deploy").await.expect("ApiKey");
    let replaced_at = tokio::time::Instant::now();
    replace_secret(&secrets, &original, true).await;
    loop {
        let now = api.get("ci-deploy").await.expect("ApiKey");
        let phase = now.status.as_ref().and_then(|s| s.phase);
        if phase == Some(Phase::SecretTampered) {
            break;
        }
        // Only the operator's own status write may change the ApiKey.
        if phase == Some(Phase::Active) {
            assert_eq!(
                now.resource_version(),
                untouched.resource_version(),
                "the ApiKey changed while it was still Active"
            );
        }
        assert!(
            replaced_at.elapsed() < Duration::from_secs(5),
            "not detected within 5 s of the replacement (verify interval 2s); phase {phase:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_warning(&ns, "ci-deploy", "SecretTampered").await;
    ns.delete().await;
}

#[tokio::test]
async fn a_secret_replaced_by_a_foreign_one_is_lost() {
    let ns = TestNamespace::new("foreign").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let (key, original) = minted(&ns, "ci-deploy").await;
    let key_hash = key.status.as_ref().and_then(|s| s.key_hash.clone());

    let foreign = replace_secret(&secrets, &original, false).await;

    let lost = wait_for_phase(
        &api,
        "ci-deploy",
        Phase::SecretLost,
        Duration::from_secs(10),
    )
    .await;
    let (status, reason, message) = ready(&lost);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "SecretLost"));
    assert!(message.contains("create a new one"), "{message}");
    assert_eq!(
        lost.status.as_ref().and_then(|s| s.key_hash.clone()),
        key_hash
    );
    wait_for_warning(&ns, "ci-deploy", "SecretLost").await;

    assert_left_alone(&secrets, &foreign).await;
    let later = api.get("ci-deploy").await.expect("ApiKey");
    assert_eq!(
        later.status.and_then(|s| s.phase),
        Some(Phase::SecretLost),
        "a minted key whose Secret was replaced is lost, never a Conflict"
    );
    assert!(
        warnings(&ns.client, &ns.name, "ci-deploy", "Conflict")
            .await
            .is_empty()
    );
    ns.delete().await;
}
