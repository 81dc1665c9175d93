//! Deletion: deleting an ApiKey deletes its Secret and reports it *before*
//! the ApiKey goes away (the finalizer `keymint.dev/cleanup`); the Secret's
//! ownerReference is the safety net when the operator is not there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::{ApiKey, Phase};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::watch_from_here;
use crate::support::{
    TestNamespace, api_key, apiserver_audit, events_for, eventually, wait_for_phase,
};

const FINALIZER: &str = "keymint.dev/cleanup";

/// The (local) instant a watch reported each deletion of a `K`, by name.
/// Returns once the watch has listed, so no later deletion is missed.
async fn record_deletions<K>(api: Api<K>) -> Arc<Mutex<BTreeMap<String, Timestamp>>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let deleted: Arc<Mutex<BTreeMap<String, Timestamp>>> = Arc::default();
    let sink = deleted.clone();
    watch_from_here(api, watcher::Config::default(), move |event| {
        if let watcher::Event::Delete(k) = event {
            sink.lock()
                .expect("lock")
                .entry(k.name_any())
                .or_insert_with(Timestamp::now);
        }
    })
    .await;
    deleted
}

async fn wait_until_gone(api: &Api<ApiKey>, name: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Some(key) = api.get_opt(name).await.expect("get ApiKey") else {
            return;
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} still exists {timeout:?} after it was deleted: finalizers {:?}, status {:?}",
            key.finalizers(),
            key.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_event(ns: &TestNamespace, name: &str, reason: &str) -> String {
    let timeout = Duration::from_secs(10);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let events = events_for(&ns.client, &ns.name, name).await;
        if let Some((_, note)) = events.iter().find(|(r, _)| r == reason) {
            return note.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: no {reason} Event within {timeout:?}; Events: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(api: &Api<ApiKey>, key: &ApiKey) {
    api.create(&PostParams::default(), key)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", key.name_any()));
}

#[tokio::test]
async fn deleting_an_api_key_deletes_its_secret_first() {
    let ns = TestNamespace::new("delete").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let _operator = Operator::start(&ns.name, &[]);
    let mut doomed = api_key("doomed", "deletion", "alice@example.com");
    doomed.spec.secret_name = Some("doomed-key".into());
    create(&api, &doomed).await;
    create(&api, &api_key("bystander", "deletion", "alice@example.com")).await;
    let key = wait_for_phase(&api, "doomed", Phase::Active, Duration::from_secs(30)).await;
    wait_for_phase(&api, "bystander", Phase::Active, Duration::from_secs(30)).await;
    assert!(
        key.finalizers().iter().any(|f| f == FINALIZER),
        "a minted ApiKey carries the finalizer {FINALIZER}: {:?}",
        key.finalizers()
    );
    secrets.get("doomed-key").await.expect("the Secret exists");
    let bystander_secret = secrets.get("bystander").await.expect("the Secret exists");

    let secret_deletions = record_deletions(secrets.clone()).await;
    let key_deletions = record_deletions(api.clone()).await;
    let mark = apiserver_audit::mark();
    api.delete("doomed", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&api, "doomed", Duration::from_secs(20)).await;
    assert!(
        secrets.get_opt("doomed-key").await.expect("get").is_none(),
        "the Secret is gone once the ApiKey is"
    );

    // The Secret went first: the watches saw it deleted before the ApiKey.
    eventually(Duration::from_secs(5), || async {
        key_deletions.lock().expect("lock").contains_key("doomed")
    })
    .await;
    let secret_deleted = secret_deletions
        .lock()
        .expect("lock")
        .get("doomed-key")
        .copied()
        .expect("the watch saw the Secret deleted");
    let key_deleted = key_deletions.lock().expect("lock")["doomed"];
    assert!(
        secret_deleted <= key_deleted,
        "the Secret was deleted at {secret_deleted}, after the ApiKey ({key_deleted})"
    );

    // And keymint deleted it (not the garbage collector), by UID, before it
    // let the finalizer go.
    if apiserver_audit::path().is_some() {
        let mut writes = Vec::new();
        eventually(Duration::from_secs(10), || {
            writes = apiserver_audit::keymint_writes_since(mark, &ns.name);
            let done = writes
                .iter()
                .any(|w| w.object_ref.resource == "apikeys" && w.object_ref.name == "doomed");
            async move { done }
        })
        .await;
        let position = |resource: &str, name: &str, verb: &str| {
            writes.iter().position(|w| {
                w.object_ref.resource == resource
                    && w.object_ref.name == name
                    && w.object_ref.subresource.is_empty()
                    && w.verb == verb
            })
        };
        let summary: Vec<String> = writes
            .iter()
            .map(|w| format!("{} {} {}", w.verb, w.object_ref.resource, w.object_ref.name))
            .collect();
        let secret_delete = position("secrets", "doomed-key", "delete")
            .unwrap_or_else(|| panic!("keymint deleted the Secret; its writes: {summary:?}"));
        let finalizer_removal = position("apikeys", "doomed", "patch")
            .or_else(|| position("apikeys", "doomed", "update"))
            .unwrap_or_else(|| panic!("keymint removed its finalizer; its writes: {summary:?}"));
        assert!(
            secret_delete < finalizer_removal,
            "the Secret is deleted before the finalizer is removed: {summary:?}"
        );
        assert!(
            !summary.iter().any(|w| w.contains("bystander")),
            "nothing else is touched: {summary:?}"
        );
    }

    let note = wait_for_event(&ns, "doomed", "Deleted").await;
    let key_id = key.status.and_then(|s| s.key_id).expect("key id");
    assert!(
        note.contains(&key_id),
        "the Deleted Event names the key: {note:?}"
    );
    assert_eq!(
        secrets.get("bystander").await.expect("still there").uid(),
        bystander_secret.uid(),
        "other keys keep their Secrets"
    );
    wait_for_phase(&api, "bystander", Phase::Active, Duration::from_secs(1)).await;
    ns.delete().await;
}

#[tokio::test]
async fn deletion_completes_when_the_secret_is_already_gone() {
    let ns = TestNamespace::new("delete-lost").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let _operator = Operator::start(&ns.name, &[]);
    create(&api, &api_key("orphan", "deletion", "alice@example.com")).await;
    wait_for_phase(&api, "orphan", Phase::Active, Duration::from_secs(30)).await;

    secrets
        .delete("orphan", &DeleteParams::default())
        .await
        .expect("delete the Secret out of band");
    // Verified every 2 s: the loss shows.
    wait_for_phase(&api, "orphan", Phase::SecretLost, Duration::from_secs(20)).await;

    api.delete("orphan", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&api, "orphan", Duration::from_secs(20)).await;
    wait_for_event(&ns, "orphan", "Deleted").await;
    assert!(
        secrets.get_opt("orphan").await.expect("get").is_none(),
        "the key was never re-minted"
    );
    ns.delete().await;
}

#[tokio::test]
async fn the_owner_reference_is_the_safety_net() {
    let ns = TestNamespace::new("delete-gc").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let mut operator = Operator::start(&ns.name, &[]);
    create(&api, &api_key("abandoned", "deletion", "alice@example.com")).await;
    let key = wait_for_phase(&api, "abandoned", Phase::Active, Duration::from_secs(30)).await;
    let secret = secrets.get("abandoned").await.expect("the Secret exists");
    let owner = secret
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .expect("a controller ownerReference");
    assert_eq!(Some(&owner.uid), key.uid().as_ref());

    // Without the operator and without its finalizer, nothing but the
    // ownerReference ties the Secret to the ApiKey.
    operator.kill();
    let current = api.get("abandoned").await.expect("get");
    assert_eq!(current.finalizers(), [FINALIZER]);
    let patch = json!({"metadata": {
        "finalizers": null,
        "resourceVersion": current.resource_version(),
    }});
    api.patch("abandoned", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("remove the finalizer");
    api.delete("abandoned", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&api, "abandoned", Duration::from_secs(10)).await;

    // kube-controller-manager's garbage collector deletes the dependent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while secrets.get_opt("abandoned").await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the garbage collector did not delete the orphaned Secret within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ns.delete().await;
}

#[tokio::test]
async fn deleting_a_never_minted_key_works() {
    let ns = TestNamespace::new("delete-unminted").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();

    // A Secret that is not keymint's, under the name an ApiKey wants.
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("taken".into());
    foreign.data = Some(BTreeMap::from([(
        "password".to_string(),
        ByteString(b"hunter2".to_vec()),
    )]));
    let foreign = secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create the foreign Secret");

    let _operator = Operator::start(&ns.name, &["--max-keys-per-owner", "1"]);
    create(&api, &api_key("first", "deletion", "alice@example.com")).await;
    let first = wait_for_phase(&api, "first", Phase::Active, Duration::from_secs(30)).await;
    create(&api, &api_key("second", "deletion", "alice@example.com")).await;
    wait_for_phase(&api, "second", Phase::Rejected, Duration::from_secs(20)).await;
    create(&api, &api_key("taken", "deletion", "bob@example.com")).await;
    wait_for_phase(&api, "taken", Phase::Conflict, Duration::from_secs(20)).await;
    let first_secret = secrets.get("first").await.expect("first's Secret");

    let mark = apiserver_audit::mark();
    for name in ["second", "taken"] {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in ["second", "taken"] {
        wait_until_gone(&api, name, Duration::from_secs(10)).await;
    }

    // Nothing else was touched: the foreign Secret, the minted key and its
    // Secret are as they were, and no Secret appeared.
    let after = secrets
        .get("taken")
        .await
        .expect("the foreign Secret stays");
    assert_eq!(after.uid(), foreign.uid());
    assert_eq!(
        after.resource_version(),
        foreign.resource_version(),
        "the foreign Secret is unchanged"
    );
    assert!(secrets.get_opt("second").await.expect("get").is_none());
    let first_now = wait_for_phase(&api, "first", Phase::Active, Duration::from_secs(1)).await;
    assert_eq!(first_now.status, first.status);
    assert_eq!(
        secrets.get("first").await.expect("still there").uid(),
        first_secret.uid()
    );
    let secret_writes: Vec<String> = apiserver_audit::keymint_writes_since(mark, &ns.name)
        .into_iter()
        .filter(|w| w.object_ref.resource == "secrets")
        .map(|w| format!("{} {}", w.verb, w.object_ref.name))
        .collect();
    assert!(
        secret_writes.is_empty(),
        "keymint wrote Secrets: {secret_writes:?}"
    );

    // The rejected key held no slot: alice's one slot is still first's.
    create(&api, &api_key("third", "deletion", "alice@example.com")).await;
    wait_for_phase(&api, "third", Phase::Rejected, Duration::from_secs(20)).await;

    // The audit trail must not claim a Secret was deleted when none was
    // (and the one named "taken" belongs to someone else).
    let mut false_claims = Vec::new();
    for name in ["second", "taken"] {
        let note = wait_for_event(&ns, name, "Deleted").await;
        if note.contains(&format!("Secret {name} deleted")) {
            false_claims.push(format!("{name}: {note:?}"));
        }
    }
    assert!(
        false_claims.is_empty(),
        "Deleted Events say a Secret was deleted, but nothing was minted and no Secret was deleted: {false_claims:?}"
    );
    ns.delete().await;
}
