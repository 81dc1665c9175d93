//! Exactly once: a key is minted at most once per ApiKey UID, whatever
//! happens to the operator. Creating the Secret under its deterministic name
//! is the commit point.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::{ApiKey, Phase};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::{
    TestNamespace, api_key, events_for, eventually, record_secret_uids, wait_for_phase,
};

/// Every ApiKey has exactly one Secret, owned by its UID, whose content
/// hashes to status.keyHash, and no Secret name ever had two UIDs.
async fn assert_each_key_minted_once(
    ns: &TestNamespace,
    seen: &Mutex<BTreeMap<String, BTreeSet<String>>>,
    count: usize,
) {
    let keys = ns
        .api::<ApiKey>()
        .list(&ListParams::default())
        .await
        .expect("list ApiKeys")
        .items;
    assert_eq!(keys.len(), count);
    let secrets = ns
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items;
    let minted: Vec<&Secret> = secrets
        .iter()
        .filter(|s| {
            s.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some("keymint")
        })
        .collect();
    assert_eq!(minted.len(), count, "one Secret per ApiKey");
    for key in &keys {
        let uid = key.uid().expect("uid");
        let owned: Vec<&&Secret> = minted
            .iter()
            .filter(|s| s.owner_references().iter().any(|o| o.uid == uid))
            .collect();
        assert_eq!(owned.len(), 1, "{}: exactly one Secret", key.name_any());
        let content = &owned[0].data.as_ref().expect("data")["api-key"].0;
        let status = key.status.as_ref().expect("status");
        assert_eq!(
            status.key_hash.as_deref(),
            Some(keymint::apikey::key::hash_bytes(content).as_str()),
            "{}: status.keyHash matches the Secret",
            key.name_any()
        );
    }
    let seen = seen.lock().expect("lock");
    for (name, uids) in seen.iter() {
        assert_eq!(uids.len(), 1, "Secret {name} was recreated: UIDs {uids:?}");
    }
}

#[tokio::test]
async fn sigkill_at_random_moments_never_mints_twice() {
    const KEYS: usize = 200;
    let ns = TestNamespace::new("sigkill").await;
    let api: Api<ApiKey> = ns.api();
    let seen = record_secret_uids(ns.api()).await;

    // Creates race with the first operator; owners are spread so that the
    // quota is not what limits minting.
    let creator = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..KEYS {
                let key = api_key(
                    &format!("key-{i:03}"),
                    "churn",
                    &format!("user-{}@example.com", i % 10),
                );
                api.create(&PostParams::default(), &key)
                    .await
                    .expect("create");
            }
        })
    };
    let mut kills = 0;
    let mut all_active = false;
    for _ in 0..40 {
        let mut operator = Operator::start(&ns.name, &[]);
        let lifetime = 200 + rand::random::<u64>() % 1300;
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        operator.kill();
        kills += 1;
        let keys = api.list(&ListParams::default()).await.expect("list").items;
        all_active = keys.len() == KEYS
            && keys
                .iter()
                .all(|k| k.status.as_ref().and_then(|s| s.phase) == Some(Phase::Active));
        if all_active && kills >= 5 {
            break;
        }
    }
    creator.await.expect("creator");
    if !all_active {
        // Let one operator finish undisturbed.
        let _operator = Operator::start(&ns.name, &[]);
        for i in 0..KEYS {
            wait_for_phase(
                &api,
                &format!("key-{i:03}"),
                Phase::Active,
                Duration::from_secs(60),
            )
            .await;
        }
    }
    assert!(kills >= 5, "the operator was killed {kills} times");
    assert_each_key_minted_once(&ns, &seen, KEYS).await;
    ns.delete().await;
}

#[tokio::test]
async fn two_operators_at_once_never_mint_twice() {
    const KEYS: usize = 60;
    let ns = TestNamespace::new("two-operators").await;
    let api: Api<ApiKey> = ns.api();
    let seen = record_secret_uids(ns.api()).await;
    let _first = Operator::start(&ns.name, &[]);
    let _second = Operator::start(&ns.name, &[]);
    for i in 0..KEYS {
        let key = api_key(
            &format!("key-{i:02}"),
            "twins",
            &format!("user-{}@example.com", i % 4),
        );
        api.create(&PostParams::default(), &key)
            .await
            .expect("create");
    }
    for i in 0..KEYS {
        wait_for_phase(
            &api,
            &format!("key-{i:02}"),
            Phase::Active,
            Duration::from_secs(60),
        )
        .await;
    }
    assert_each_key_minted_once(&ns, &seen, KEYS).await;
    ns.delete().await;
}

#[tokio::test]
async fn a_secret_that_is_not_ours_is_a_conflict_and_left_untouched() {
    let ns = TestNamespace::new("conflict").await;
    let secrets: Api<Secret> = ns.api();
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("taken".into());
    foreign.data = Some(BTreeMap::from([(
        "password".to_string(),
        ByteString(b"hunter2".to_vec()),
    )]));
    let foreign = secrets
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create foreign Secret");

    let _operator = Operator::start(&ns.name, &[]);
    let api: Api<ApiKey> = ns.api();
    let mut key = api_key("wants-taken", "payments", "alice@example.com");
    key.spec.secret_name = Some("taken".into());
    api.create(&PostParams::default(), &key)
        .await
        .expect("create");

    let key = wait_for_phase(
        &api,
        "wants-taken",
        Phase::Conflict,
        Duration::from_secs(20),
    )
    .await;
    let status = key.status.expect("status");
    assert_eq!(status.key_hash, None, "nothing minted");
    assert!(
        status.conditions[0].message.contains("taken"),
        "{:?}",
        status.conditions[0]
    );
    eventually(Duration::from_secs(10), || async {
        events_for(&ns.client, &ns.name, "wants-taken")
            .await
            .iter()
            .any(|(reason, _)| reason == "Conflict")
    })
    .await;
    let after = secrets.get("taken").await.expect("still there");
    assert_eq!(
        after.resource_version(),
        foreign.resource_version(),
        "the foreign Secret is untouched"
    );

    // Deleting the ApiKey leaves the foreign Secret alone too.
    api.delete("wants-taken", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(Duration::from_secs(20), || async {
        api.get_opt("wants-taken").await.expect("get").is_none()
    })
    .await;
    assert_eq!(
        secrets.get("taken").await.expect("still there").uid(),
        foreign.uid()
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_recreated_api_key_gets_a_new_key_and_the_old_secret_goes() {
    let ns = TestNamespace::new("recreate").await;
    let _operator = Operator::start(&ns.name, &[]);
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let key = api_key("rotating", "payments", "alice@example.com");

    api.create(&PostParams::default(), &key)
        .await
        .expect("create");
    let first = wait_for_phase(&api, "rotating", Phase::Active, Duration::from_secs(20)).await;
    let first_secret = secrets.get("rotating").await.expect("Secret");

    api.delete("rotating", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(Duration::from_secs(20), || async {
        api.get_opt("rotating").await.expect("get").is_none()
    })
    .await;
    assert!(
        secrets.get_opt("rotating").await.expect("get").is_none(),
        "old Secret deleted with its ApiKey"
    );

    api.create(&PostParams::default(), &key)
        .await
        .expect("re-create");
    let second = wait_for_phase(&api, "rotating", Phase::Active, Duration::from_secs(20)).await;
    let second_secret = secrets.get("rotating").await.expect("Secret");
    assert_ne!(first.uid(), second.uid());
    assert_ne!(first_secret.uid(), second_secret.uid());
    assert_ne!(
        first.status.and_then(|s| s.key_hash),
        second.status.and_then(|s| s.key_hash),
        "a new key"
    );
    ns.delete().await;
}

/// The crash window: the operator created the Secret and died before it
/// wrote the status. The next one finds keymint's Secret — its seal proves
/// it — and adopts that key: the same Secret, the same hash, the key id of
/// that hash, minted when the Secret was created. Nothing is minted again.
#[tokio::test]
async fn a_secret_minted_before_a_crash_is_adopted_by_its_seal() {
    let ns = TestNamespace::new("crash-window").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let mut operator = Operator::start(&ns.name, &[]);
    api.create(
        &PostParams::default(),
        &api_key("crashed", "payments", "alice@example.com"),
    )
    .await
    .expect("create");
    wait_for_phase(&api, "crashed", Phase::Active, Duration::from_secs(30)).await;
    operator.kill();
    let minted = secrets.get("crashed").await.expect("the minted Secret");
    assert!(
        minted
            .annotations()
            .get("keymint.dev/provenance")
            .is_some_and(|seal| seal.starts_with("v1:")),
        "the Secret carries keymint's seal"
    );
    // As if the status write had never happened.
    api.patch_status(
        "crashed",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": null})),
    )
    .await
    .expect("clear the status");
    assert!(api.get("crashed").await.expect("get").status.is_none());

    let _operator = Operator::start(&ns.name, &[]);
    let adopted = wait_for_phase(&api, "crashed", Phase::Active, Duration::from_secs(30)).await;
    let status = adopted.status.expect("status");
    let content = &minted.data.as_ref().expect("data")["api-key"].0;
    let key = keymint::apikey::key::parse(std::str::from_utf8(content).expect("text"))
        .expect("a well-formed key");
    assert_eq!(status.key_hash, Some(keymint::apikey::key::hash(&key)));
    assert_eq!(status.key_id, Some(keymint::apikey::key::key_id(&key)));
    assert_eq!(
        status.minted_at, minted.metadata.creation_timestamp,
        "minted when its Secret was created"
    );
    let after = secrets.get("crashed").await.expect("the Secret");
    assert_eq!(
        after.uid(),
        minted.uid(),
        "the same Secret, never re-minted"
    );
    ns.delete().await;
}
