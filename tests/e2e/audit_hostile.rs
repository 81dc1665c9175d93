//! The audit trail under attack: a tenant who may only patch their own
//! ApiKey cannot flush the stream's history, and whoever may write the
//! segment ConfigMaps (but not read keymint's audit key) cannot forge a
//! pruning that `keymint audit verify --checkpoint` accepts.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use keymint::apikey::{ApiKey, Phase};
use keymint::audit::{self, Action, Head};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::support::access::grant_edit;
use crate::support::audit::{checkpoint_in, entries, segments};
use crate::support::chart::grant_apikey_edit;
use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, control_plane, eventually, http_get, wait_for_phase};

const MALLORY: &str = "mallory@example.com";
/// May write the audit segments, not read keymint's Secrets.
const WRITER: &str = "segment-writer@example.com";

/// Waits until the stream holds at least `n` entries.
async fn wait_for_entries(client: &Client, namespace: &str, n: usize) {
    eventually(Duration::from_secs(30), || async {
        entries(&segments(client, namespace).await).len() >= n
    })
    .await;
}

/// `keymint audit <args>`, as an auditor with the test's (admin)
/// kubeconfig, for the operator whose namespace is `namespace`:
/// (success, stdout and stderr).
async fn keymint_audit(namespace: &str, args: &[&str]) -> (bool, String) {
    keymint_audit_with(control_plane().kubeconfig(), namespace, args).await
}

/// A kubeconfig that impersonates `user` (what `kubectl --as` does), in a
/// file of its own.
fn kubeconfig_as(user: &str) -> std::path::PathBuf {
    let path = control_plane().kubeconfig();
    let mut config = kube::config::Kubeconfig::read_from(path).expect("readable kubeconfig");
    for named in &mut config.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(user.to_string());
        }
    }
    let out = path.with_file_name(format!("kubeconfig-as-{user}"));
    let text = serde_json::to_string(&config).expect("a kubeconfig serialises");
    std::fs::write(&out, text).expect("write the kubeconfig");
    out
}

/// [`keymint_audit`] with the kubeconfig at `kubeconfig`.
async fn keymint_audit_with(
    kubeconfig: &std::path::Path,
    namespace: &str,
    args: &[&str],
) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keymint"));
    command
        .arg("audit")
        .args(args)
        .args([
            "--audit-namespace",
            namespace,
            "--keymint-namespace",
            namespace,
        ])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KEYMINT_AUDIT_NAMESPACE")
        .env_remove("KEYMINT_NAMESPACE");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run keymint audit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Creates the ApiKeys `names` (as admin, owner alice) and waits until
/// each is Active.
async fn mint(ns: &TestNamespace, names: &[String]) {
    let api: Api<ApiKey> = ns.api();
    for name in names {
        api.create(
            &PostParams::default(),
            &api_key(name, "history", "alice@example.com"),
        )
        .await
        .unwrap_or_else(|e| panic!("create ApiKey {name}: {e}"));
    }
    for name in names {
        wait_for_phase(&api, name, Phase::Active, Duration::from_secs(30)).await;
    }
}

fn expiring_soon(key: &ApiKey) -> bool {
    key.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "ExpiringSoon" && c.status == "True")
    })
}

/// Moves `expiresAt` of `name` to `at` as `api`'s user, then waits until
/// keymint's condition says whether it is inside the warning window, so
/// that keymint sees every move.
async fn move_expiry(api: &Api<ApiKey>, name: &str, at: Timestamp, inside: bool) {
    let patch = json!({"spec": {"expiresAt": at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patch expiresAt of {name}: {e}"));
    eventually(Duration::from_secs(20), || async {
        let key = api.get(name).await.expect("get ApiKey");
        expiring_soon(&key) == inside
    })
    .await;
}

/// The value of the sample `name` in a /metrics body.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_tenant_toggling_expiry_cannot_flush_the_audit_trail() {
    // keymint in a namespace of its own, as in production; mallory holds
    // the built-in edit role and the chart's ApiKey edit role in hers.
    let home = TestNamespace::ungranted("flush-keymint").await;
    let ns = TestNamespace::new("flush").await;
    grant_edit(&ns.client, &ns.name, MALLORY).await;
    grant_apikey_edit(&ns.client, &ns.name, MALLORY).await;
    let tenant = control_plane().as_user(MALLORY, &[]).await;
    // Small segments and a size bound of 3: the history below is over it.
    let operator = Operator::start_apart(
        &home.name,
        &ns.name,
        &["--audit-segment-bytes", "1024", "--audit-max-segments", "3"],
    );

    // History: eight keys minted one after the other (each its own
    // write), well over three segments.
    for i in 0..8 {
        mint(&ns, &[format!("history-{i}")]).await;
        wait_for_entries(&home.client, &home.name, i + 1).await;
    }
    let before = segments(&home.client, &home.name).await;
    assert!(before.len() > 3, "{} segments of history", before.len());

    // Mallory's key, moved into the 7-day warning window and out of it,
    // again and again.
    let theirs: Api<ApiKey> = Api::namespaced(tenant, &ns.name);
    theirs
        .create(
            &PostParams::default(),
            &api_key("toggled", "history", MALLORY),
        )
        .await
        .expect("mallory creates her ApiKey");
    let toggled =
        wait_for_phase(&ns.api(), "toggled", Phase::Active, Duration::from_secs(30)).await;
    let uid = toggled.uid().expect("uid");
    const ROUNDS: usize = 15;
    for _ in 0..ROUNDS {
        let now = Timestamp::now();
        move_expiry(
            &theirs,
            "toggled",
            now + SignedDuration::from_hours(24),
            true,
        )
        .await;
        move_expiry(
            &theirs,
            "toggled",
            now + SignedDuration::from_hours(24 * 60),
            false,
        )
        .await;
    }
    // Everything keymint did about it is in the stream by now: the status
    // write that made a transition comes before its entry, and keymint
    // appends it at once.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let after = segments(&home.client, &home.name).await;
    let stream = entries(&after);
    let warnings = stream
        .iter()
        .filter(|e| e.uid == uid && e.action == Action::ExpiringSoon)
        .count();
    assert_eq!(
        warnings, 1,
        "{ROUNDS} moves into the warning window made {warnings} expiring-soon entries"
    );
    // Retention pruned nothing young: over the size bound, every segment
    // of history is still there, and no pruning was recorded.
    for (name, content) in &before {
        let kept = after.iter().find(|(n, _)| n == name);
        let kept = kept.unwrap_or_else(|| panic!("segment {name} was pruned"));
        assert!(
            kept.1.starts_with(content.as_str()),
            "segment {name} changed"
        );
    }
    assert!(
        stream.iter().all(|e| e.action != Action::Pruned),
        "a pruning of young history"
    );
    assert_eq!(stream.first().map(|e| e.seq), Some(1));
    // ... and the bound says so.
    let addr = operator.http_addr().await;
    let (_, metrics) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .expect("join");
    assert_eq!(
        sample(&metrics, "keymint_audit_over_bound"),
        Some(1.0),
        "{metrics}"
    );
    let ours = format!(
        "keymint_audit_entries_total{{apikey_namespace=\"{}\"}}",
        ns.name
    );
    assert_eq!(
        sample(&metrics, &ours),
        Some(stream.len() as f64),
        "entries counted per namespace: {metrics}"
    );
    drop(operator);
    ns.delete().await;
    home.delete().await;
}

/// A user who may read and write ConfigMaps in `namespace`, and nothing
/// else: someone with access to the segments but not to keymint's Secrets.
async fn segment_writer(ns: &TestNamespace, user: &str) -> Client {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "segment-writer"},
        "rules": [{
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }],
    }))
    .expect("a Role");
    Api::<Role>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &role)
        .await
        .expect("create the Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "segment-writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "segment-writer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the RoleBinding");
    let client = control_plane().as_user(user, &[]).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    eventually(Duration::from_secs(30), || async {
        configmaps.list(&ListParams::default()).await.is_ok()
    })
    .await;
    client
}

#[tokio::test]
async fn a_pruning_forged_without_the_audit_key_fails_verify_against_the_checkpoint() {
    let ns = TestNamespace::new("forge").await;
    let mut operator = Operator::start(&ns.name, &["--audit-segment-bytes", "1024"]);
    mint(
        &ns,
        &(0..6).map(|i| format!("early-{i}")).collect::<Vec<_>>(),
    )
    .await;
    wait_for_entries(&ns.client, &ns.name, 6).await;
    let (ok, out) = keymint_audit(&ns.name, &["verify"]).await;
    assert!(ok, "{out}");
    let checkpoint = checkpoint_in(&out);
    let checkpoint_seq: u64 = checkpoint
        .split(':')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("a seq");
    mint(
        &ns,
        &(0..6).map(|i| format!("late-{i}")).collect::<Vec<_>>(),
    )
    .await;
    wait_for_entries(&ns.client, &ns.name, 12).await;
    assert!(operator.terminate(), "the operator stops cleanly");

    // The attacker may write the segments, not read keymint's Secrets.
    let writer = segment_writer(&ns, WRITER).await;
    let refused = Api::<Secret>::namespaced(writer.clone(), &ns.name)
        .get(keymint::runtime::audit_key::SECRET.name)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403),
        "the segment writer must not read the audit key: {refused:?}"
    );
    // Delete the segments through the one holding the checkpoint, and
    // append a pruned entry vouching for what is left.
    let segs = segments(&writer, &ns.name).await;
    let holds = |(_, content): &(String, String)| {
        audit::parse_segment(content)
            .expect("parses")
            .iter()
            .any(|e| e.seq == checkpoint_seq)
    };
    let through = segs
        .iter()
        .position(holds)
        .expect("the checkpoint's segment");
    assert!(
        through + 1 < segs.len(),
        "entries after the checkpoint's segment"
    );
    let last_removed = entries(&segs[through..=through]).pop().expect("entries");
    let (head_name, head_content) = segs.last().expect("a head segment");
    let newest = entries(&segs).pop().expect("entries");
    let draft = audit::pruned_draft(
        Timestamp::now(),
        "keymint-0",
        &Head::of(&last_removed),
        through + 1,
    );
    let (forged, _) = audit::chain(&Head::of(&newest), &draft);
    let configmaps: Api<ConfigMap> = Api::namespaced(writer, &ns.name);
    let appended = format!("{head_content}{}\n", forged.encode());
    let patch = json!({"data": {"entries": appended}});
    configmaps
        .patch(head_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("append the forged pruning");
    for (name, _) in &segs[..=through] {
        configmaps
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete a segment");
    }
    // The chain alone is fooled: what is left links up, and a pruned entry
    // vouches for its start.
    let left = segments(&ns.client, &ns.name).await;
    audit::verify(&left).expect("a well-linked chain");

    let (ok, out) = keymint_audit(&ns.name, &["verify", "--checkpoint", &checkpoint]).await;
    assert!(!ok, "verify --checkpoint accepted a forged pruning: {out}");
    assert!(out.contains("is forged"), "{out}");
    // Someone who cannot read the audit key learns that the stream relies
    // on a pruning it cannot check, and which Secret would tell.
    let as_writer = kubeconfig_as(WRITER);
    let (ok, out) = keymint_audit_with(&as_writer, &ns.name, &["verify"]).await;
    assert!(
        !ok,
        "verify without the audit key accepted a pruning: {out}"
    );
    assert!(out.contains("cannot be verified"), "{out}");
    assert!(out.contains("keymint-audit-key"), "{out}");
    ns.delete().await;
}

#[tokio::test]
async fn a_stream_started_over_is_reported_as_such_against_an_older_checkpoint() {
    let ns = TestNamespace::new("restart").await;
    let mut operator = Operator::start(&ns.name, &[]);
    mint(
        &ns,
        &(0..3).map(|i| format!("before-{i}")).collect::<Vec<_>>(),
    )
    .await;
    wait_for_entries(&ns.client, &ns.name, 3).await;
    let (ok, out) = keymint_audit(&ns.name, &["verify"]).await;
    assert!(ok, "{out}");
    let checkpoint = checkpoint_in(&out);
    assert!(operator.terminate(), "the operator stops cleanly");

    // The stream is lost (as with its namespace); keymint starts a new one.
    let configmaps: Api<ConfigMap> = ns.api();
    for (name, _) in segments(&ns.client, &ns.name).await {
        configmaps
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete a segment");
    }
    let _operator = Operator::start(&ns.name, &[]);
    mint(
        &ns,
        &(0..5).map(|i| format!("after-{i}")).collect::<Vec<_>>(),
    )
    .await;
    wait_for_entries(&ns.client, &ns.name, 5).await;
    let stream = entries(&segments(&ns.client, &ns.name).await);
    assert_eq!(stream.first().map(|e| e.seq), Some(1));
    assert!(
        stream[0].seal.is_some(),
        "entry 1 records the start: {:?}",
        stream[0]
    );

    let (ok, out) = keymint_audit(&ns.name, &["verify"]).await;
    assert!(ok, "the new stream verifies on its own: {out}");
    let (ok, out) = keymint_audit(&ns.name, &["verify", "--checkpoint", &checkpoint]).await;
    assert!(
        !ok,
        "verify --checkpoint accepted a checkpoint of the stream before: {out}"
    );
    assert!(out.contains("the stream started over"), "{out}");
    ns.delete().await;
}
