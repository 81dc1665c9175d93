//! Projects bound to namespaces (invariant 11): the chart's
//! ValidatingAdmissionPolicy admits a new ApiKey only if its namespace allows
//! `spec.project` — the namespace annotation `keymint.dev/projects`, or
//! without it the project named like the namespace — judged by the real API
//! server for impersonated users. The policy is bound to each test's own
//! namespace only, so other tests' ApiKeys with arbitrary projects are not
//! its business.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use keymint::apikey::ApiKey;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::kubectl::kubectl;
use crate::support::manifests::{
    create, delete_cluster_scoped, kind_of, name_of, release_name, render_bound_to,
};
use crate::support::{TestNamespace, api_key, control_plane, eventually};

const ANNOTATION: &str = "keymint.dev/projects";
const BOB: &str = "bob@example.com";

#[tokio::test]
async fn a_namespace_admits_only_its_own_project_or_the_ones_it_lists() {
    let ns = TestNamespace::new("projects").await;
    let binding = ProjectBinding::install(&ns).await;
    let bob = binding.bob.clone();

    // Without the annotation: only the project named like the namespace.
    bob.create(&PostParams::default(), &api_key("own", &ns.name, BOB))
        .await
        .expect("the project named like the namespace is admitted");
    let refusal = refused(&bob, "payments").await;
    for words in ["spec.project", &ns.name, "not payments", ANNOTATION] {
        assert!(refusal.contains(words), "{words:?} not in {refusal}");
    }
    // What bob sees from `kubectl apply`.
    let manifest = serde_json::to_string(&api_key("ci-deploy", "payments", BOB)).expect("json");
    let out = kubectl(
        &["apply", "-n", &ns.name, "--as", BOB, "-f", "-"],
        &manifest,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl apply admitted it: {stderr}");
    let words = format!("denied request: {}", reason(&refusal));
    assert!(stderr.contains(&words), "{words:?} not in {stderr}");

    // The namespace lists its projects; the list replaces the default.
    annotate(&ns, Some(" payments, billing ")).await;
    eventually(Duration::from_secs(20), || admitted(&bob, "payments")).await;
    bob.create(&PostParams::default(), &api_key("billing", "billing", BOB))
        .await
        .expect("a listed project is admitted");
    for project in [ns.name.as_str(), "shop"] {
        let refusal = refused(&bob, project).await;
        for words in [
            "spec.project".to_string(),
            "(payments, billing;".to_string(),
            format!("not {project}"),
        ] {
            assert!(refusal.contains(&words), "{words:?} not in {refusal}");
        }
    }

    // Taking the annotation away brings the default back.
    annotate(&ns, None).await;
    eventually(Duration::from_secs(20), || admitted(&bob, &ns.name)).await;
    refused(&bob, "payments").await;
    binding.remove(ns).await;
}

#[tokio::test]
async fn a_wildcard_allows_any_project_an_empty_list_none_and_edits_always_pass() {
    let ns = TestNamespace::new("projwild").await;
    let binding = ProjectBinding::install(&ns).await;
    let bob = binding.bob.clone();
    // A key with a finalizer of its own, so that it outlives its project.
    let mut held = api_key("held", &ns.name, BOB);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    bob.create(&PostParams::default(), &held)
        .await
        .expect("create");

    annotate(&ns, Some("*")).await;
    eventually(Duration::from_secs(20), || admitted(&bob, "anything")).await;

    annotate(&ns, Some("")).await;
    eventually(Duration::from_secs(20), || async {
        bob.create(&dry_run(), &api_key("probe", &ns.name, BOB))
            .await
            .is_err()
    })
    .await;
    let refusal = refused(&bob, &ns.name).await;
    assert!(refusal.contains("allows no project"), "{refusal}");
    // Cluster admins are refused too: the namespace is the authority.
    let admin: Api<ApiKey> = ns.api();
    let err = admin
        .create(&dry_run(), &api_key("by-admin", "payments", BOB))
        .await
        .expect_err("a cluster admin cannot claim a project either");
    assert!(err.to_string().contains("spec.project"), "{err}");

    // The key's project is no longer allowed, but edits and the removal of
    // its finalizer (what keymint does on delete) are not the policy's
    // business.
    bob.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"description": "kept"}})),
    )
    .await
    .expect("an edit of an existing key is admitted");
    bob.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("removing its finalizer is admitted");
    binding.remove(ns).await;
}

/// The chart's project-binding policy bound to one test namespace, and bob,
/// who may create ApiKeys there (the chart's edit ClusterRole).
struct ProjectBinding {
    installed: Vec<Value>,
    client: Client,
    bob: Api<ApiKey>,
}

impl ProjectBinding {
    async fn install(ns: &TestNamespace) -> ProjectBinding {
        let release = release_name(ns);
        let objects = render_bound_to(
            ns,
            &release,
            "projectBinding",
            &[
                "--set",
                "ownerBinding.enabled=false",
                "--set",
                "rbac.aggregateToDefaultRoles=false",
            ],
        );
        let policy = format!("{release}-project-binding");
        let edit = format!("{release}-edit");
        let installed: Vec<Value> = objects
            .into_iter()
            .filter(|o| {
                (kind_of(o).starts_with("ValidatingAdmissionPolicy") && name_of(o) == policy)
                    || (kind_of(o) == "ClusterRole" && name_of(o) == edit)
            })
            .collect();
        assert_eq!(installed.len(), 3, "policy, binding, edit ClusterRole");
        for object in &installed {
            create(&ns.client, object, &ns.name).await;
        }
        let grant = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "bob-edits", "namespace": ns.name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": edit},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": BOB}],
        });
        create(&ns.client, &grant, &ns.name).await;
        let bob = Api::namespaced(control_plane().as_user(BOB, &[]).await, &ns.name);
        // RBAC and the policy take effect asynchronously: wait until bob is
        // refused by the policy (not by RBAC) for a project of elsewhere.
        eventually(Duration::from_secs(30), || async {
            let attempt = bob
                .create(&dry_run(), &api_key("probe", "elsewhere", BOB))
                .await;
            matches!(&attempt, Err(kube::Error::Api(s)) if s.message.contains("spec.project"))
        })
        .await;
        ProjectBinding {
            installed,
            client: ns.client.clone(),
            bob,
        }
    }

    async fn remove(self, ns: TestNamespace) {
        let installed: Vec<&Value> = self.installed.iter().collect();
        delete_cluster_scoped(&self.client, &installed).await;
        ns.delete().await;
    }
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

/// Whether a (dry-run) ApiKey for `project` is admitted.
async fn admitted(api: &Api<ApiKey>, project: &str) -> bool {
    api.create(&dry_run(), &api_key("probe", project, BOB))
        .await
        .is_ok()
}

/// Creates an ApiKey for `project` and expects the policy to refuse it with
/// 403 Forbidden: the API server's message, as `kubectl apply` prints it.
async fn refused(api: &Api<ApiKey>, project: &str) -> String {
    let err = api
        .create(&PostParams::default(), &api_key("refused", project, BOB))
        .await
        .expect_err("the project is refused");
    let kube::Error::Api(status) = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status.message.contains("ValidatingAdmissionPolicy"),
        "{status:?}"
    );
    status.message.clone()
}

/// Sets (or, with `None`, removes) the namespace's list of projects, as a
/// platform admin would.
async fn annotate(ns: &TestNamespace, projects: Option<&str>) {
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ANNOTATION: projects}}})),
        )
        .await
        .expect("annotate the namespace");
}

/// The policy's own words in an API server refusal.
fn reason(refusal: &str) -> &str {
    refusal
        .split_once("denied request: ")
        .map_or(refusal, |(_, reason)| reason)
}
