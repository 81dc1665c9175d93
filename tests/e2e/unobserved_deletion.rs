//! Every deletion audited: an ApiKey deleted while keymint is stopped, its
//! finalizer removed by an admin, still gets one audit entry saying what
//! happened (`deleted-unobserved`, with its key id; never the key) once
//! keymint starts again — exactly one, also across a second restart. Its
//! Secret is deleted by the garbage collector (ownerReference).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keymint::apikey::{ApiKey, Phase};
use keymint::audit::stream::{DATA_ENTRIES, LABEL_AUDIT};
use keymint::audit::{self, Action, Entry};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, eventually, wait_for_phase};

/// The stream's entries, in order.
async fn entries(ns: &TestNamespace) -> Vec<Entry> {
    let config_maps: Api<ConfigMap> = ns.api();
    let params = ListParams::default().labels(&format!("{LABEL_AUDIT}=segment"));
    let mut segments = config_maps
        .list(&params)
        .await
        .expect("list the audit segments")
        .items;
    segments.sort_by_key(|cm| cm.name_any());
    segments
        .iter()
        .flat_map(|cm| {
            let content = cm.data.as_ref().and_then(|d| d.get(DATA_ENTRIES));
            audit::parse_segment(content.map_or("", String::as_str)).expect("segment parses")
        })
        .collect()
}

fn unobserved_of<'a>(entries: &'a [Entry], uid: &str) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| e.uid == uid && e.action == Action::DeletedUnobserved)
        .collect()
}

/// Waits until the operator has looked for unobserved deletions.
async fn looked(operator: &Operator) {
    eventually(Duration::from_secs(60), || async {
        operator
            .log()
            .contains("looked for deletions keymint did not see")
    })
    .await;
}

/// What an admin can do that keymint does not see: remove its finalizer,
/// then delete the ApiKey.
async fn delete_behind_keymints_back(keys: &Api<ApiKey>, name: &str) {
    let no_finalizers = serde_json::json!({"metadata": {"finalizers": null}});
    keys.patch(name, &PatchParams::default(), &Patch::Merge(&no_finalizers))
        .await
        .expect("remove the finalizer as an admin");
    keys.delete(name, &DeleteParams::default())
        .await
        .expect("delete the ApiKey");
}
#[tokio::test]
async fn a_deletion_behind_keymints_back_is_audited_exactly_once() {
    let ns = TestNamespace::new("unobserved").await;
    let keys: Api<ApiKey> = ns.api();
    let mut operator = Operator::start(&ns.name, &[]);
    keys.create(
        &PostParams::default(),
        &api_key("bypassed", "payments", "alice"),
    )
    .await
    .expect("create an ApiKey");
    let active = wait_for_phase(&keys, "bypassed", Phase::Active, Duration::from_secs(30)).await;
    let uid = active.uid().expect("uid");
    let key_id = active.status.and_then(|s| s.key_id).expect("key id");
    assert!(operator.terminate(), "keymint stops cleanly");

    // An admin removes keymint's finalizer and deletes the ApiKey while
    // keymint is stopped.
    delete_behind_keymints_back(&keys, "bypassed").await;
    eventually(Duration::from_secs(30), || async {
        keys.get_opt("bypassed").await.expect("get").is_none()
    })
    .await;
    let secrets: Api<Secret> = ns.api();
    eventually(Duration::from_secs(60), || async {
        secrets.get_opt("bypassed").await.expect("get").is_none()
    })
    .await;
    assert!(unobserved_of(&entries(&ns).await, &uid).is_empty());

    for restart in 1..=2 {
        let mut operator = Operator::start(&ns.name, &[]);
        looked(&operator).await;
        let entries = entries(&ns).await;
        let recorded = unobserved_of(&entries, &uid);
        assert_eq!(recorded.len(), 1, "restart {restart}: {recorded:?}");
        let entry = recorded[0];
        assert_eq!(entry.key_id.as_deref(), Some(key_id.as_str()));
        assert_eq!(
            (entry.namespace.as_str(), entry.name.as_str()),
            (ns.name.as_str(), "bypassed")
        );
        assert_eq!(
            (entry.project.as_str(), entry.owner.as_str()),
            ("payments", "alice")
        );
        assert!(
            !entries
                .iter()
                .any(|e| e.uid == uid && e.action == Action::Deleted),
            "keymint never saw this deletion: no `deleted` entry"
        );
        assert!(operator.terminate(), "keymint stops cleanly");
    }
    ns.delete().await;
}

#[tokio::test]
async fn a_deletion_behind_a_running_keymints_back_is_audited_once_and_a_normal_one_only_as_deleted()
 {
    let ns = TestNamespace::new("unobserved-live").await;
    let keys: Api<ApiKey> = ns.api();
    let mut operator = Operator::start(&ns.name, &[]);
    let mut uids = Vec::new();
    for name in ["bypassed", "normal"] {
        keys.create(&PostParams::default(), &api_key(name, "payments", "alice"))
            .await
            .expect("create an ApiKey");
        let active = wait_for_phase(&keys, name, Phase::Active, Duration::from_secs(30)).await;
        uids.push(active.uid().expect("uid"));
    }
    let (bypassed, normal) = (&uids[0], &uids[1]);
    keys.delete("normal", &DeleteParams::default())
        .await
        .expect("delete an ApiKey the usual way");
    delete_behind_keymints_back(&keys, "bypassed").await;
    eventually(Duration::from_secs(30), || async {
        let entries = entries(&ns).await;
        unobserved_of(&entries, bypassed).len() == 1
            && entries
                .iter()
                .any(|e| &e.uid == normal && e.action == Action::Deleted)
    })
    .await;
    let addr = operator.http_addr().await;
    let (_, metrics) = crate::support::http_get(addr, "/metrics");
    assert!(
        metrics.contains("keymint_deletions_unobserved_total 1"),
        "counted once: {metrics}"
    );

    // A restart finds both gone in the ledger: neither is recorded again.
    assert!(operator.terminate(), "keymint stops cleanly");
    operator = Operator::start(&ns.name, &[]);
    looked(&operator).await;
    let entries = entries(&ns).await;
    assert_eq!(unobserved_of(&entries, bypassed).len(), 1);
    assert!(unobserved_of(&entries, normal).is_empty());
    let deletions = |uid: &str| {
        entries
            .iter()
            .filter(|e| {
                e.uid == uid && matches!(e.action, Action::Deleted | Action::DeletedUnobserved)
            })
            .count()
    };
    assert_eq!((deletions(bypassed), deletions(normal)), (1, 1));
    assert!(operator.terminate(), "keymint stops cleanly");
    ns.delete().await;
}
