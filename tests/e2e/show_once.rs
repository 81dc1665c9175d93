//! A person's key shown once. `keymint create --show-once` deletes the
//! key's Secret, prints the key once it has seen that Secret gone, and
//! acknowledges the reveal (`keymint.dev/revealed: <key id>` on the ApiKey);
//! keymint records `revealed` — not SecretLost — only then, and the key
//! stays Active (it verifies by its hash). A Secret held by a finalizer
//! keeps the key from being printed; a key nobody acknowledged within the
//! reveal window is recorded as never shown and stops verifying.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::{ApiKey, Phase};
use keymint::audit::Action;
use keymint::audit::store::Segments;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use crate::support::access::grant_edit;
use crate::support::operator::Operator;
use crate::support::verifier::Verifier;
use crate::support::{
    TestNamespace, api_key, control_plane, events_for, eventually, wait_for_phase,
};

/// What the CLI does once it has read the key: delete exactly that Secret.
async fn delete_secret(secrets: &Api<Secret>, name: &str) {
    let secret = secrets.get(name).await.expect("the Secret");
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    secrets.delete(name, &params).await.expect("delete");
}

/// The key in the ApiKey's Secret, read as admin.
async fn key_in(secrets: &Api<Secret>, name: &str) -> String {
    let data = secrets
        .get(name)
        .await
        .expect("the Secret")
        .data
        .expect("data");
    String::from_utf8(data["api-key"].0.clone()).expect("text")
}

#[tokio::test]
async fn an_acknowledged_reveal_is_recorded_revealed_and_a_bare_delete_is_not() {
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

    delete_secret(&secrets, "mine").await;
    // A missing Secret alone is no reveal: anyone who may delete Secrets
    // could have deleted it. Two verification rounds (2 s each) later the
    // key is still Active and not revealed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = api.get("mine").await.expect("get").status.expect("status");
    assert_eq!(status.revealed_at, None, "not acknowledged: not revealed");
    assert_eq!(status.phase, Some(Phase::Active));

    // The owner's acknowledgement names the key id.
    let ack = json!({"metadata": {"annotations": {"keymint.dev/revealed": minted.key_id}}});
    api.patch("mine", &PatchParams::default(), &Patch::Merge(&ack))
        .await
        .expect("acknowledge");
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
async fn a_show_once_key_nobody_acknowledged_is_never_shown_after_the_window_and_stops_verifying() {
    let ns = TestNamespace::new("never-shown").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let _operator = Operator::start(&ns.name, &["--reveal-window", "8s"]);
    let verifier = Verifier::start(&ns).await;
    for name in ["deleted", "kept"] {
        let mut key = api_key(name, "never-shown", "alice@example.com");
        key.spec.show_once = Some(true);
        api.create(&PostParams::default(), &key)
            .await
            .expect("create");
        wait_for_phase(&api, name, Phase::Active, Duration::from_secs(20)).await;
    }
    let deleted_key = key_in(&secrets, "deleted").await;
    let kept_key = key_in(&secrets, "kept").await;
    // Someone who may delete Secrets deletes one (after reading it, say);
    // nobody acknowledges either key.
    delete_secret(&secrets, "deleted").await;
    // Within the window the key is left as it is: the CLI deletes, prints,
    // then acknowledges, and keymint must not race it.
    let answer = verifier.verify_json(&deleted_key, "never-shown").await;
    assert_eq!(answer["valid"], true, "{answer}");

    for name in ["deleted", "kept"] {
        wait_for_phase(&api, name, Phase::NeverShown, Duration::from_secs(30)).await;
        let status = api.get(name).await.expect("get").status.expect("status");
        assert_eq!(status.conditions[0].reason, "NeverShown");
        assert_eq!(status.conditions[0].status, "False");
        assert_eq!(status.revealed_at, None);
    }
    assert!(
        secrets.get_opt("kept").await.expect("get").is_none(),
        "keymint deleted the Secret nobody took the key from"
    );
    for key in [&deleted_key, &kept_key] {
        let answer = verifier.verify_json(key, "never-shown").await;
        assert_eq!(answer["valid"], false, "{answer}");
    }

    let segments = Segments::new(ns.client.clone(), &ns.name);
    for name in ["deleted", "kept"] {
        let uid = api.get(name).await.expect("get").uid().expect("uid");
        eventually(Duration::from_secs(10), || async {
            audit_actions(&segments, &uid).await == [Action::Minted, Action::NeverShown]
        })
        .await;
        eventually(Duration::from_secs(10), || async {
            events_for(&ns.client, &ns.name, name)
                .await
                .iter()
                .any(|(reason, _)| reason == "NeverShown")
        })
        .await;
    }
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
    let acknowledged = api.get("mine").await.expect("get");
    let status = acknowledged.status.clone().expect("status");
    assert_eq!(
        status.key_hash.as_deref(),
        Some(keymint::apikey::key::hash(&key).as_str()),
        "the key shown is the one that verifies"
    );
    assert_eq!(
        acknowledged.annotations().get("keymint.dev/revealed"),
        status.key_id.as_ref(),
        "the CLI acknowledged the key it showed"
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_finalizer_on_the_show_once_secret_keeps_the_key_from_being_printed() {
    const PEER: &str = "mallory@example.com";
    const HOLD: &str = "example.com/hold";
    let ns = TestNamespace::new("show-once-held").await;
    let api: Api<ApiKey> = ns.api();
    grant_edit(&ns.client, &ns.name, PEER).await;
    let _operator = Operator::start(&ns.name, &[]);
    let peer: Api<Secret> = Api::namespaced(control_plane().as_user(PEER, &[]).await, &ns.name);

    // The namespace peer holds the show-once Secret as soon as it appears.
    let holder = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = peer.get_opt("mine").await.expect("peer reads Secrets") {
                let hold = json!({"metadata": {
                    "uid": found.uid(), "finalizers": [HOLD],
                }});
                peer.patch("mine", &PatchParams::default(), &Patch::Merge(&hold))
                    .await
                    .expect("the peer adds a finalizer before the CLI deletes");
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "no Secret appeared");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let namespace = ns.name.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keymint"))
            .args([
                "create",
                "mine",
                "--project",
                "show-once-held",
                "--show-once",
            ])
            .args(["-n", &namespace, "-o", "json"])
            .env("KUBECONFIG", control_plane().kubeconfig())
            .output()
            .expect("keymint create")
    })
    .await
    .expect("the CLI ran");
    holder.await.expect("the peer held the Secret");

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "printed a key a finalizer keeps: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no key on stdout");
    for words in ["finalizer", HOLD, "not printed", "Secret mine"] {
        assert!(stderr.contains(words), "{words:?} not in {stderr}");
    }
    // The key the peer can still read never verifies: its ApiKey is gone.
    eventually(Duration::from_secs(20), || async {
        api.get_opt("mine").await.expect("get").is_none()
    })
    .await;

    let secrets: Api<Secret> = ns.api();
    let held = secrets.get("mine").await.expect("still held");
    assert!(held.metadata.deletion_timestamp.is_some());
    let release = json!({"metadata": {"finalizers": null}});
    secrets
        .patch("mine", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("release the Secret");
    ns.delete().await;
}
