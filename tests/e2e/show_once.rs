//! A person's key shown once: once its Secret is read and deleted (what
//! `keymint create --show-once` does), the key exists nowhere in the
//! cluster, keymint records `revealed` — not SecretLost — and the key stays
//! Active (it still verifies by its hash).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::{ApiKey, Phase};
use keymint::audit::Action;
use keymint::audit::store::Segments;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, events_for, eventually, wait_for_phase};

#[tokio::test]
async fn a_show_once_key_whose_secret_is_deleted_is_revealed_not_lost() {
    let ns = TestNamespace::new("show-once").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let _operator = Operator::start(&ns.name, &[]);
    let mut key = api_key("mine", "show-once", "alice@example.com");
    key.spec.show_once = Some(true);
    api.create(&PostParams::default(), &key)
        .await
        .expect("create");
    wait_for_phase(&api, "mine", Phase::Active, Duration::from_secs(20)).await;
    let minted = api.get("mine").await.expect("get").status.expect("status");

    // What the CLI does once it has read the key: delete exactly that Secret.
    let secret = secrets.get("mine").await.expect("the Secret");
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    secrets.delete("mine", &params).await.expect("delete");

    eventually(Duration::from_secs(20), || async {
        let status = api.get("mine").await.expect("get").status;
        status.is_some_and(|s| s.revealed_at.is_some())
    })
    .await;
    let status = api.get("mine").await.expect("get").status.expect("status");
    assert_eq!(status.phase, Some(Phase::Active), "it still verifies");
    assert_eq!(
        status.key_hash, minted.key_hash,
        "the same key, by its hash"
    );
    assert_eq!(status.conditions[0].reason, "Revealed");
    assert_eq!(status.conditions[0].status, "True");
    assert!(
        secrets.get_opt("mine").await.expect("get").is_none(),
        "never re-minted"
    );

    let segments = Segments::new(ns.client.clone(), &ns.name);
    let uid = api.get("mine").await.expect("get").uid().expect("uid");
    eventually(Duration::from_secs(10), || async {
        let entries = audit_actions(&segments, &uid).await;
        entries == [Action::Minted, Action::Revealed]
    })
    .await;
    eventually(Duration::from_secs(10), || async {
        let reasons: Vec<String> = events_for(&ns.client, &ns.name, "mine")
            .await
            .into_iter()
            .map(|(reason, _)| reason)
            .collect();
        reasons.contains(&"Revealed".to_string()) && !reasons.contains(&"SecretLost".to_string())
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn show_once_cannot_be_turned_on_or_off_later() {
    let ns = TestNamespace::new("show-once-immutable").await;
    let api: Api<ApiKey> = ns.api();
    let key = api_key("workload", "show-once-immutable", "alice@example.com");
    api.create(&PostParams::default(), &key)
        .await
        .expect("create");
    let patch = serde_json::json!({"spec": {"showOnce": true}});
    let refused = api
        .patch("workload", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("immutable");
    assert!(
        refused.to_string().contains("showOnce is immutable"),
        "{refused}"
    );
    ns.delete().await;
}

/// The actions the audit stream holds for the ApiKey with `uid`, in order.
async fn audit_actions(segments: &Segments, uid: &str) -> Vec<Action> {
    let mut actions = Vec::new();
    for name in segments.names().await.expect("segment names") {
        let Some(cm) = segments.get_opt(&name).await.expect("segment") else {
            continue;
        };
        for entry in segments.entries_of(&cm).expect("entries") {
            if entry.uid == uid {
                actions.push(entry.action);
            }
        }
    }
    actions
}

#[tokio::test]
async fn keymint_create_show_once_prints_the_key_and_leaves_it_nowhere() {
    let ns = TestNamespace::new("show-once-cli").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let _operator = Operator::start(&ns.name, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keymint"))
        .args([
            "create",
            "mine",
            "--project",
            "show-once-cli",
            "--show-once",
        ])
        .args(["-n", &ns.name, "-o", "json"])
        .env("KUBECONFIG", crate::support::control_plane().kubeconfig())
        .output()
        .expect("keymint create");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(printed["showOnce"], true);
    let key = printed["key"].as_str().expect("the key, once");
    let key = keymint::apikey::key::parse(key).expect("a keymint key");
    assert!(
        secrets.get_opt("mine").await.expect("get").is_none(),
        "no Secret holds it"
    );
    eventually(Duration::from_secs(20), || async {
        let status = api.get("mine").await.expect("get").status;
        status.is_some_and(|s| s.revealed_at.is_some() && s.phase == Some(Phase::Active))
    })
    .await;
    let status = api.get("mine").await.expect("get").status.expect("status");
    assert_eq!(
        status.key_hash.as_deref(),
        Some(keymint::apikey::key::hash(&key).as_str()),
        "the key shown is the one that verifies"
    );
    ns.delete().await;
}
