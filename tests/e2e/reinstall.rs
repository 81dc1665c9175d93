//! State that survives a reinstall: keymint's namespace deleted with keys
//! Active and re-created, keymint started again — the quota ledgers are
//! rebuilt from the ApiKeys that hold a minted key, never read as empty, so
//! no owner mints beyond the quota.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use keymint::apikey::{ApiKey, Phase};
use keymint::quota::{Ledger, Pair};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, eventually, wait_for_phase};

const PROJECT: &str = "payments";
const OWNER: &str = "alice@example.com";

/// Deletes keymint's namespace and waits until it is gone (its ConfigMaps
/// with it), then creates it again, empty.
async fn lose_and_recreate(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete keymint's namespace");
    eventually(Duration::from_secs(120), || async {
        namespaces
            .get_opt(name)
            .await
            .expect("get keymint's namespace")
            .is_none()
    })
    .await;
    let again: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"keymint.dev/test": "true"}}
    }))
    .expect("namespace");
    namespaces
        .create(&PostParams::default(), &again)
        .await
        .expect("create keymint's namespace again");
}

/// The UIDs the pair's ledger holds, as stored.
async fn ledger_uids(ledgers: &Api<ConfigMap>) -> BTreeSet<String> {
    let name = Pair {
        project: PROJECT,
        owner: OWNER,
    }
    .ledger_name();
    let cm = ledgers.get(&name).await.expect("the ledger exists");
    let json = cm
        .data
        .as_ref()
        .and_then(|d| d.get(Ledger::DATA_KEY))
        .expect("the ledger has its data key");
    let ledger = Ledger::from_json(json).expect("the ledger parses");
    ledger.iter().map(|(uid, _)| uid.to_string()).collect()
}

#[tokio::test]
async fn a_reinstall_after_the_namespace_is_lost_mints_nothing_beyond_the_quota() {
    let ns = TestNamespace::new("reinstall").await;
    let home = TestNamespace::ungranted("reinstall-home").await;
    let keys: Api<ApiKey> = ns.api();
    let limit = ["--max-keys-per-owner", "2"];
    let mut operator = Operator::start_apart(&home.name, &ns.name, &limit);
    let mut survivors = BTreeSet::new();
    for name in ["first", "second"] {
        keys.create(&PostParams::default(), &api_key(name, PROJECT, OWNER))
            .await
            .expect("create an ApiKey");
        let active = wait_for_phase(&keys, name, Phase::Active, Duration::from_secs(30)).await;
        survivors.insert(active.uid().expect("uid"));
    }
    assert!(operator.terminate(), "keymint stops cleanly");

    lose_and_recreate(&home.client, &home.name).await;
    let ledgers: Api<ConfigMap> = home.api();
    let _operator = Operator::start_apart(&home.name, &ns.name, &limit);
    for name in ["later-a", "later-b"] {
        keys.create(&PostParams::default(), &api_key(name, PROJECT, OWNER))
            .await
            .expect("create an ApiKey after the reinstall");
    }
    for name in ["later-a", "later-b"] {
        let rejected = wait_for_phase(&keys, name, Phase::Rejected, Duration::from_secs(30)).await;
        let ready = rejected
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.reason.clone());
        assert_eq!(ready.as_deref(), Some("QuotaExceeded"), "{name}");
    }
    assert_eq!(ledger_uids(&ledgers).await, survivors);
    for name in ["first", "second"] {
        let key = keys.get(name).await.expect("get a surviving key");
        let phase = key.status.and_then(|s| s.phase);
        assert_eq!(phase, Some(Phase::Active), "{name} survives the reinstall");
    }

    // The rebuilt ledger works as any other: a deleted key frees its slot
    // for the oldest waiting key (created in the same second: by name).
    keys.delete("first", &DeleteParams::default())
        .await
        .expect("delete a surviving key");
    wait_for_phase(&keys, "later-a", Phase::Active, Duration::from_secs(30)).await;
    let last = keys.get("later-b").await.expect("get the last key");
    assert_eq!(
        last.status.and_then(|s| s.phase),
        Some(Phase::Rejected),
        "one slot freed, one key admitted"
    );
    ns.delete().await;
    home.delete().await;
}
