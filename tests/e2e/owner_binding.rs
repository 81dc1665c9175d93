//! The owner binding (invariant 11), attacked by a namespace peer against
//! the real API server: mallory holds the built-in `edit` role and the
//! chart's ApiKey edit role in alice's namespace and is not alice. The
//! chart's policy, bound to the test's namespace only (the cluster is
//! shared), refuses every change of what decides the fate of alice's key —
//! its expiry, its Secret's metadata, its ownerReferences (the garbage
//! collector's path), foreign finalizers, keymint.dev/ annotations — and
//! alice makes each change herself. Then keymint (`run` and `verifier`)
//! refuses to start unless the policy is installed and denies everywhere.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use keymint::apikey::ApiKey;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::manifests::render_bound_to;
use crate::support::manifests::{create, delete_cluster_scoped, kind_of, name_of, release_name};
use crate::support::operator::Operator;
use crate::support::verifier::Verifier;
use crate::support::{TestNamespace, api_key, chart, control_plane, eventually, raw_http};

const ALICE: &str = "alice@example.com";
const MALLORY: &str = "mallory@example.com";

#[tokio::test]
async fn a_peer_cannot_revoke_prolong_hold_or_hand_over_an_owners_key() {
    let ns = TestNamespace::new("owners").await;
    let peers = Peers::install(&ns).await;
    let admin: Api<ApiKey> = ns.api();
    let mut key = api_key("alices", "payments", ALICE);
    key.spec.expires_at =
        Some(serde_json::from_value(json!("2099-01-31T00:00:00Z")).expect("time"));
    admin
        .create(&PostParams::default(), &key)
        .await
        .expect("create");
    admin
        .create(&PostParams::default(), &api_key("open", "payments", ALICE))
        .await
        .expect("create a key without expiry");

    // Each change of alice's fields, refused for mallory with the field
    // and the rule in the message.
    let attacks: [(&str, &str, Value); 7] = [
        (
            "alices",
            "spec.expiresAt",
            json!({"spec": {"expiresAt": "2020-01-01T00:00:00Z"}}),
        ),
        (
            "alices",
            "spec.expiresAt",
            json!({"spec": {"expiresAt": null}}),
        ),
        (
            "open",
            "spec.expiresAt",
            json!({"spec": {"expiresAt": "2030-01-01T00:00:00Z"}}),
        ),
        (
            "alices",
            "spec.secretTemplate",
            json!({"spec": {"secretTemplate": {"labels": {"exfiltrate": "yes"}}}}),
        ),
        (
            "alices",
            "metadata.finalizers other than keymint.dev/cleanup",
            json!({"metadata": {"finalizers": ["keymint.dev/cleanup", "example.com/hold"]}}),
        ),
        (
            "alices",
            "metadata.annotations under keymint.dev/",
            json!({"metadata": {"annotations": {"keymint.dev/revealed": "true"}}}),
        ),
        (
            "open",
            "metadata.annotations under keymint.dev/",
            json!({"metadata": {"annotations": {"keymint.dev/anything": "x"}}}),
        ),
    ];
    for (name, field, patch) in &attacks {
        let refusal = refused(&peers.mallory, name, patch).await;
        for words in [
            *field,
            "may be changed only by its owner (alice@example.com), not mallory@example.com",
            "impersonate-owner",
        ] {
            assert!(refusal.contains(words), "{words:?} not in {refusal}");
        }
    }
    // The description is a note for people: peers may edit it.
    merge(
        &peers.mallory,
        "alices",
        &json!({"spec": {"description": "noted"}}),
    )
    .await
    .expect("a peer edits the description");
    // keymint's own finalizer passes for keymint's ServiceAccount (its
    // status writes go through the status subresource, which the policy
    // does not match).
    let operator = Api::<ApiKey>::namespaced(
        control_plane()
            .as_service_account(&ns.name, &chart::operator_release(&ns.name))
            .await,
        &ns.name,
    );
    merge(
        &operator,
        "open",
        &json!({"metadata": {"finalizers": ["keymint.dev/cleanup"]}}),
    )
    .await
    .expect("keymint adds its finalizer");
    merge(
        &operator,
        "open",
        &json!({"metadata": {"finalizers": null}}),
    )
    .await
    .expect("keymint removes its finalizer");
    operator
        .patch_status(
            "open",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Pending"}})),
        )
        .await
        .expect("keymint writes status");

    // The owner makes every one of those changes herself.
    for (name, _, patch) in &attacks {
        merge(&peers.alice, name, patch)
            .await
            .unwrap_or_else(|e| panic!("alice changes {name} with {patch}: {e}"));
    }
    merge(
        &peers.alice,
        "alices",
        &json!({"metadata": {"finalizers": null}}),
    )
    .await
    .expect("alice removes the finalizer she added");
    peers.remove(ns).await;
}

#[tokio::test]
async fn a_peer_cannot_hand_a_key_to_the_garbage_collector() {
    let ns = TestNamespace::new("owners-gc").await;
    let peers = Peers::install(&ns).await;
    let admin: Api<ApiKey> = ns.api();
    admin
        .create(
            &PostParams::default(),
            &api_key("alices", "payments", ALICE),
        )
        .await
        .expect("create");
    // mallory's own ConfigMap, named the owner of alice's key, then deleted:
    // the garbage collector (exempt from the DELETE rule) would delete
    // the key after it.
    let configmaps: Api<ConfigMap> = Api::namespaced(peers.mallory_client.clone(), &ns.name);
    let bait: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "bait"}})).expect("cm");
    let bait = configmaps
        .create(&PostParams::default(), &bait)
        .await
        .expect("mallory creates a ConfigMap");
    let reference = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "bait",
        "uid": bait.metadata.uid.clone().expect("uid"),
    }]}});
    let handed = merge(&peers.mallory, "alices", &reference).await;
    configmaps
        .delete("bait", &DeleteParams::default())
        .await
        .expect("mallory deletes her ConfigMap");
    // The garbage collector acts within a second or two of the deletion.
    for _ in 0..50 {
        assert!(
            admin.get_opt("alices").await.expect("get").is_some(),
            "the garbage collector deleted alice's key for mallory"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refusal = match handed {
        Err(kube::Error::Api(s)) => s.message,
        other => panic!("mallory set an ownerReference: {other:?}"),
    };
    assert!(
        refusal
            .contains("metadata.ownerReferences of ApiKey alices may be changed only by its owner"),
        "{refusal}"
    );

    // alice may hand her own key to an object of hers: the collector
    // deletes it with that object, as she asked.
    let admin_cms: Api<ConfigMap> = ns.api();
    let hers: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "hers"}})).expect("cm");
    let hers = admin_cms
        .create(&PostParams::default(), &hers)
        .await
        .expect("alice's ConfigMap");
    let reference = json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "hers",
        "uid": hers.metadata.uid.clone().expect("uid"),
    }]}});
    merge(&peers.alice, "alices", &reference)
        .await
        .expect("alice sets an ownerReference on her key");
    admin_cms
        .delete("hers", &DeleteParams::default())
        .await
        .expect("delete alice's ConfigMap");
    eventually(Duration::from_secs(30), || async {
        admin.get_opt("alices").await.expect("get").is_none()
    })
    .await;
    peers.remove(ns).await;
}

#[tokio::test]
async fn keymint_refuses_to_start_unless_the_owner_binding_denies_everywhere() {
    let ns = TestNamespace::new("owners-start").await;
    let release = release_name(&ns);
    let policy_name = format!("{release}-owner-binding");
    let flag = format!("--owner-binding-policy={policy_name}");
    let verifier_reader = install_verifier_reader(&ns, &release).await;
    let render = |extra: &[&str]| {
        let mut args = vec!["--set", "projectBinding.enabled=false"];
        args.extend_from_slice(extra);
        chart::render(&release, &ns.name, &args)
    };
    let pick = |objects: &[Value], kind: &str| -> Value {
        objects
            .iter()
            .find(|o| kind_of(o) == kind && name_of(o) == policy_name)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };

    // No policy at all.
    refuses(
        &ns,
        &flag,
        &[&format!(
            "ValidatingAdmissionPolicy {policy_name} does not exist"
        )],
    )
    .await;

    // The policy, bound in Warn only (cluster-wide: warnings harm no other test).
    let warn = render(&["--set-json", "ownerBinding.validationActions=[\"Warn\"]"]);
    let policy = pick(&warn, "ValidatingAdmissionPolicy");
    create(&ns.client, &policy, &ns.name).await;
    let binding = pick(&warn, "ValidatingAdmissionPolicyBinding");
    create(&ns.client, &binding, &ns.name).await;
    refuses(&ns, &flag, &["validationActions [Warn] has no Deny"]).await;
    delete_cluster_scoped(&ns.client, &[&binding]).await;

    // Denying, but only in this namespace.
    let selected = render_bound_to(
        &ns,
        &release,
        "ownerBinding",
        &["--set", "projectBinding.enabled=false"],
    );
    let binding = pick(&selected, "ValidatingAdmissionPolicyBinding");
    create(&ns.client, &binding, &ns.name).await;
    refuses(&ns, &flag, &["its namespaceSelector leaves namespaces out"]).await;

    // Told to run without it: both start, and say 0.
    let unbound = [flag.as_str(), "--allow-unbound-owners"];
    let mut operator = Operator::start(&ns.name, &unbound);
    let addr = operator.http_addr().await;
    assert_enforced(addr, 0).await;
    assert!(operator.running(), "{}", operator.log());
    assert!(
        operator
            .log()
            .contains("running anyway (--allow-unbound-owners)"),
        "{}",
        operator.log()
    );
    drop(operator);
    let verifier = Verifier::start_with(&ns, &unbound).await;
    assert_enforced(verifier.probe, 0).await;
    drop(verifier);
    delete_cluster_scoped(&ns.client, &[&binding]).await;

    // The chart's binding as rendered by default: Deny, every namespace.
    // It judges every ApiKey in the shared cluster, so it stays only until
    // both have seen it.
    let default = render(&[]);
    let binding = pick(&default, "ValidatingAdmissionPolicyBinding");
    create(&ns.client, &binding, &ns.name).await;
    let mut operator = Operator::start(&ns.name, &[flag.as_str()]);
    let verifier = Verifier::start_with(&ns, &[flag.as_str()]).await;
    let addr = operator.http_addr().await;
    assert_enforced(addr, 1).await;
    assert_enforced(verifier.probe, 1).await;
    delete_cluster_scoped(&ns.client, &[&binding, &policy]).await;
    assert!(operator.running(), "{}", operator.log());
    assert!(
        operator.log().contains("owner binding enforced"),
        "{}",
        operator.log()
    );
    drop(operator);
    drop(verifier);
    delete_cluster_scoped(&ns.client, &verifier_reader.iter().collect::<Vec<_>>()).await;
    ns.delete().await;
}

/// Both processes, with `flag`, exit 1 with one error line naming each of
/// `words`, the missing piece and the flag that overrides.
async fn refuses(ns: &TestNamespace, flag: &str, words: &[&str]) {
    let mut operator = Operator::start(&ns.name, &[flag]);
    let code = operator.exit_code(Duration::from_secs(30)).await;
    let log = operator.log();
    assert_eq!(code, Some(1), "keymint run refuses to start:\n{log}");
    let mut verifier = Verifier::spawn(ns, &[flag]).await;
    let code = verifier.exit_code(Duration::from_secs(30)).await;
    let verifier_log = verifier.log();
    assert_eq!(
        code,
        Some(1),
        "keymint verifier refuses to start:\n{verifier_log}"
    );
    for log in [log, verifier_log] {
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "one line:\n{log}");
        for words in words.iter().chain(&[
            "the owner binding is not enforced",
            "--allow-unbound-owners",
        ]) {
            assert!(errors[0].contains(words), "{words:?} not in {}", errors[0]);
        }
    }
}

/// `/metrics` says `keymint_owner_binding_enforced <value>`.
async fn assert_enforced(addr: std::net::SocketAddr, value: u8) {
    let line = format!("keymint_owner_binding_enforced {value}\n");
    let text = raw_http::get(addr, "/metrics", &[]).await.text();
    assert!(text.contains(&line), "{line:?} not in\n{text}");
}

/// The chart's ClusterRole (and binding) with which the verifier reads the
/// owner binding, for the test verifier's account.
async fn install_verifier_reader(ns: &TestNamespace, release: &str) -> Vec<Value> {
    let objects = chart::render(
        release,
        &ns.name,
        &["--set", "verifier.serviceAccount.name=keymint-verifier"],
    );
    let name = format!("{release}-verifier-read-owner-binding");
    let reader: Vec<Value> = objects
        .iter()
        .filter(|o| name_of(o) == name)
        .cloned()
        .collect();
    assert_eq!(reader.len(), 2, "ClusterRole and ClusterRoleBinding {name}");
    for object in &reader {
        create(&ns.client, object, &ns.name).await;
    }
    let (user, groups) = crate::support::verifier::identity(&ns.name);
    let check = crate::support::access::Check::new(
        "list",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        None,
    );
    eventually(Duration::from_secs(30), || async {
        crate::support::access::may(&ns.client, &user, &groups, &check).await
    })
    .await;
    reader
}

/// The chart's owner binding bound to this namespace, alice and mallory
/// granted the chart's ApiKey edit role, mallory the built-in `edit` role
/// too.
struct Peers {
    installed: Vec<Value>,
    alice: Api<ApiKey>,
    mallory: Api<ApiKey>,
    mallory_client: Client,
}

impl Peers {
    async fn install(ns: &TestNamespace) -> Peers {
        let release = release_name(ns);
        let objects = render_bound_to(
            ns,
            &release,
            "ownerBinding",
            &[
                "--set",
                "rbac.aggregateToDefaultRoles=false",
                "--set",
                "projectBinding.enabled=false",
            ],
        );
        let edit = format!("{release}-edit");
        let installed: Vec<Value> = objects
            .iter()
            .filter(|o| {
                kind_of(o).starts_with("ValidatingAdmissionPolicy")
                    || (kind_of(o) == "ClusterRole" && name_of(o) == edit)
            })
            .cloned()
            .collect();
        assert_eq!(installed.len(), 3, "policy, binding, edit ClusterRole");
        for object in &installed {
            create(&ns.client, object, &ns.name).await;
        }
        for (user, role) in [
            (ALICE, edit.as_str()),
            (MALLORY, edit.as_str()),
            (MALLORY, "edit"),
        ] {
            let binding = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"generateName": "peers-", "namespace": ns.name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            });
            create(&ns.client, &binding, &ns.name).await;
        }
        let alice = Api::namespaced(control_plane().as_user(ALICE, &[]).await, &ns.name);
        let mallory_client = control_plane().as_user(MALLORY, &[]).await;
        let mallory: Api<ApiKey> = Api::namespaced(mallory_client.clone(), &ns.name);
        // RBAC and the policy take effect asynchronously: wait until
        // mallory may create ConfigMaps and her dry-run key for alice is
        // refused by the policy.
        let configmaps: Api<ConfigMap> = Api::namespaced(mallory_client.clone(), &ns.name);
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        eventually(Duration::from_secs(30), || async {
            let probe: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": "probe"}})).expect("cm");
            let refused = matches!(
                mallory.create(&dry, &api_key("probe", "payments", ALICE)).await,
                Err(kube::Error::Api(s)) if s.message.contains("spec.owner")
            );
            refused && configmaps.create(&dry, &probe).await.is_ok()
        })
        .await;
        Peers {
            installed,
            alice,
            mallory,
            mallory_client,
        }
    }

    async fn remove(self, ns: TestNamespace) {
        delete_cluster_scoped(&ns.client, &self.installed.iter().collect::<Vec<_>>()).await;
        ns.delete().await;
    }
}

async fn merge(api: &Api<ApiKey>, name: &str, patch: &Value) -> Result<ApiKey, kube::Error> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
}

/// The API server's refusal of `patch` (a 403 from the policy).
async fn refused(api: &Api<ApiKey>, name: &str, patch: &Value) -> String {
    match merge(api, name, patch).await {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("mallory's {patch} on {name} was not refused: {other:?}"),
    }
}
