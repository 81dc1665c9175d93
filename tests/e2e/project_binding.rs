//! Projects granted to namespaces (invariant 11): a namespace's ApiKeys may
//! name only the projects its ProjectGrant (named `projects`, written by
//! cluster admins) lists. The chart's ValidatingAdmissionPolicy, with the
//! grant as its parameter, refuses the others at admission, and keymint
//! checks the grant again before it mints, so a cluster without the policy
//! mints nothing for a project not granted either. Judged by the real API
//! server for impersonated users: a tenant with `edit` in their namespace,
//! and a user who may create namespaces. The policy is bound to each test's
//! own namespace only, so other tests' ApiKeys are not its business.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use keymint::apikey::{ApiKey, Phase};
use keymint::audit::{self, Action};
use keymint::grant::ProjectGrant;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::support::access::{Check, may};
use crate::support::chart::render;
use crate::support::kubectl::kubectl;
use crate::support::manifests::{
    create, delete_cluster_scoped, kind_of, name_of, release_name, render_bound_to,
};
use crate::support::operator::Operator;
use crate::support::{
    TestNamespace, api_key, control_plane, eventually, wait_for_phase, wait_for_warning,
};

const BOB: &str = "bob@example.com";
const MALLORY: &str = "mallory@example.com";

#[tokio::test]
async fn a_namespace_is_granted_only_the_projects_its_grant_lists() {
    let ns = TestNamespace::with_projects("projects", &[]).await;
    let binding = ProjectBinding::install(&ns, BOB).await;
    let bob = binding.user.clone();

    // No grant: no project, not even the one named like the namespace.
    // The API server refuses in its own words (a policy parameter missing).
    let refusal = refused(&bob, &ns.name).await;
    assert_no_grant(&refusal, &binding.policy);
    // What bob sees from `kubectl apply`.
    let manifest = serde_json::to_string(&api_key("ci-deploy", "payments", BOB)).expect("json");
    let out = kubectl(
        &["apply", "-n", &ns.name, "--as", BOB, "-f", "-"],
        &manifest,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "kubectl apply admitted it: {stderr}");
    assert_no_grant(&stderr, &binding.policy);

    // A cluster admin grants two projects: those, and no other.
    ns.grant(&["payments", "billing"]).await;
    eventually(Duration::from_secs(20), || admitted(&bob, "payments")).await;
    bob.create(&PostParams::default(), &api_key("billing", "billing", BOB))
        .await
        .expect("a granted project is admitted");
    for project in [ns.name.as_str(), "shop"] {
        let refusal = refused(&bob, project).await;
        for words in [
            format!("project {project} is not granted"),
            "its ProjectGrant lists payments, billing".to_string(),
            format!("a cluster admin adds {project} to spec.projects"),
        ] {
            assert!(refusal.contains(&words), "{words:?} not in {refusal}");
        }
    }

    // Any project, then none again once the grant is gone.
    ns.grant(&["*"]).await;
    eventually(Duration::from_secs(20), || admitted(&bob, "anything")).await;
    ns.api::<ProjectGrant>()
        .delete("projects", &DeleteParams::default())
        .await
        .expect("delete the grant");
    eventually(Duration::from_secs(20), || async {
        !admitted(&bob, "anything").await
    })
    .await;
    binding.remove(ns).await;
}

#[tokio::test]
async fn the_grant_binds_cluster_admins_too_but_never_edits_of_existing_keys() {
    let ns = TestNamespace::with_projects("projedit", &["payments"]).await;
    let binding = ProjectBinding::install(&ns, BOB).await;
    let bob = binding.user.clone();
    // A key with a finalizer of its own, so that it outlives its grant.
    let mut held = api_key("held", "payments", BOB);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    bob.create(&PostParams::default(), &held)
        .await
        .expect("create");

    ns.api::<ProjectGrant>()
        .delete("projects", &DeleteParams::default())
        .await
        .expect("delete the grant");
    eventually(Duration::from_secs(20), || async {
        !admitted(&bob, "payments").await
    })
    .await;
    // Cluster admins are refused too: the grant is the authority.
    let admin: Api<ApiKey> = ns.api();
    let err = admin
        .create(&dry_run(), &api_key("by-admin", "payments", BOB))
        .await
        .expect_err("a cluster admin cannot claim a project either");
    assert_no_grant(&err.to_string(), &binding.policy);

    // The key's project is no longer granted, but edits and the removal of
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

/// The namespace creator: a user who may create namespaces (and annotate
/// the one they created) gets no project by naming the namespace after it,
/// nor by annotating it. Before grants, a namespace without the
/// `keymint.dev/projects` annotation could use the project named like
/// itself, and the annotation `*` allowed any project.
#[tokio::test]
async fn a_namespace_creator_gets_no_project_by_its_name_or_an_annotation() {
    let admin = control_plane().admin().await;
    crate::support::install_crd(&admin).await;
    let name = format!("kmt-payments-{:08x}", rand::random::<u32>());
    let creator = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": format!("{name}-creator")},
        "rules": [
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [name], "verbs": ["get", "patch"]},
        ],
    });
    let creator_binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{name}-creator")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{name}-creator")},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": MALLORY}],
    });
    for object in [&creator, &creator_binding] {
        create(&admin, object, "").await;
    }
    // Mallory creates the namespace herself, and annotates it as the old
    // binding read it: every project.
    let mallory = control_plane().as_user(MALLORY, &[]).await;
    let namespaces: Api<Namespace> = Api::all(mallory.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"keymint.dev/test": "true"}}
    }))
    .expect("namespace");
    eventually(Duration::from_secs(30), || async {
        namespaces.create(&PostParams::default(), &ns).await.is_ok()
    })
    .await;
    namespaces
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"keymint.dev/projects": "*"}}})),
        )
        .await
        .expect("mallory annotates her namespace");
    let ns = TestNamespace {
        name: name.clone(),
        client: admin.clone(),
    };
    // What a self-service namespace gives its creator: edit rights in it.
    let binding = ProjectBinding::install(&ns, MALLORY).await;
    let keys = binding.user.clone();
    for project in [name.as_str(), "payments"] {
        assert_no_grant(&refused(&keys, project).await, &binding.policy);
    }
    // Nor can she grant it herself (see the test below for every verb).
    let grants: Api<ProjectGrant> = Api::namespaced(mallory, &name);
    let grant: ProjectGrant = serde_json::from_value(json!({
        "metadata": {"name": "projects"}, "spec": {"projects": ["*"]},
    }))
    .expect("grant");
    let err = grants
        .create(&PostParams::default(), &grant)
        .await
        .expect_err("mallory cannot grant her namespace a project");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    let cluster_scoped = [&creator, &creator_binding];
    delete_cluster_scoped(&admin, &cluster_scoped).await;
    binding.remove(ns).await;
}

/// A tenant with the built-in `edit` role and the chart's ApiKey roles in
/// their namespace may read the namespace's grant but never write one; the
/// chart's project-granter role may. No chart role that aggregates into the
/// built-in roles grants a write on grants (checked on the rendering:
/// installing roles that aggregate would change `edit` for every other test
/// in the run).
#[tokio::test]
async fn a_tenant_with_edit_cannot_write_a_project_grant() {
    let ns = TestNamespace::with_projects("grantrbac", &["payments"]).await;
    let release = release_name(&ns);
    let writes = [
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "*",
    ];
    for role in render(&release, &ns.name, &[]) {
        let aggregated = role["metadata"]["labels"].as_object().is_some_and(|l| {
            l.keys()
                .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
        });
        if kind_of(&role) != "ClusterRole" || !aggregated {
            continue;
        }
        for rule in role["rules"].as_array().into_iter().flatten() {
            let on_grants = rule["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r == "projectgrants" || r == "*");
            let writing = rule["verbs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| writes.iter().any(|w| v == *w));
            assert!(
                !(on_grants && writing),
                "{} aggregates a write on projectgrants: {rule}",
                name_of(&role)
            );
        }
    }
    let roles: Vec<Value> = render(
        &release,
        &ns.name,
        &["--set", "rbac.aggregateToDefaultRoles=false"],
    )
    .into_iter()
    .filter(|o| {
        kind_of(o) == "ClusterRole"
            && ["edit", "view", "project-granter"]
                .iter()
                .any(|n| name_of(o) == format!("{release}-{n}"))
    })
    .collect();
    assert_eq!(
        roles.len(),
        3,
        "edit, view and project-granter ClusterRoles"
    );
    for role in &roles {
        create(&ns.client, role, &ns.name).await;
    }
    let granter = format!("{release}-project-granter");
    for (user, role) in [
        (BOB, "edit".to_string()),
        (BOB, format!("{release}-edit")),
        (BOB, format!("{release}-view")),
        ("pat@example.com", granter),
    ] {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"generateName": "grant-", "namespace": ns.name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        });
        create(&ns.client, &binding, &ns.name).await;
    }
    let groups = ["system:authenticated".to_string()];
    let check = |verb: &str| Check::new(verb, "keymint.dev", "projectgrants", Some(&ns.name));
    let create_keys = Check::new("create", "keymint.dev", "apikeys", Some(&ns.name));
    eventually(Duration::from_secs(30), || async {
        may(&ns.client, BOB, &groups, &create_keys).await
            && may(&ns.client, BOB, &groups, &check("get")).await
    })
    .await;
    for verb in &writes[..5] {
        assert!(
            !may(&ns.client, BOB, &groups, &check(verb)).await,
            "a tenant with edit may {verb} projectgrants"
        );
    }
    let bob: Api<ProjectGrant> = Api::namespaced(control_plane().as_user(BOB, &[]).await, &ns.name);
    let read = bob.get("projects").await.expect("bob reads the grant");
    assert_eq!(read.spec.projects.len(), 1);
    let widened = json!({"spec": {"projects": ["*"]}});
    let err = bob
        .patch("projects", &PatchParams::default(), &Patch::Merge(&widened))
        .await
        .expect_err("bob cannot widen the grant");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    let err = bob
        .delete("projects", &DeleteParams::default())
        .await
        .expect_err("bob cannot delete the grant");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );

    // The project-granter may; and the schema holds a grant to its shape.
    let pat: Api<ProjectGrant> = Api::namespaced(
        control_plane().as_user("pat@example.com", &[]).await,
        &ns.name,
    );
    eventually(Duration::from_secs(30), || async {
        pat.patch("projects", &PatchParams::default(), &Patch::Merge(&widened))
            .await
            .is_ok()
    })
    .await;
    let misnamed: ProjectGrant = serde_json::from_value(json!({
        "metadata": {"name": "more"}, "spec": {"projects": ["billing"]},
    }))
    .expect("grant");
    let err = pat
        .create(&PostParams::default(), &misnamed)
        .await
        .expect_err("a second grant under another name is refused");
    assert!(err.to_string().contains("must be named projects"), "{err}");
    let mixed = json!({"spec": {"projects": ["*", "billing"]}});
    let err = pat
        .patch("projects", &PatchParams::default(), &Patch::Merge(&mixed))
        .await
        .expect_err("* beside a project is refused");
    assert!(err.to_string().contains("must be the only entry"), "{err}");
    let installed: Vec<&Value> = roles.iter().collect();
    delete_cluster_scoped(&ns.client, &installed).await;
    ns.delete().await;
}

/// Without the admission policy (the plain `keymint run` install, or the
/// policy in Warn mode), keymint itself refuses to mint a key whose project
/// its namespace is not granted — status, Event, audit entry, no Secret,
/// no quota slot — and mints it once a cluster admin grants the project.
#[tokio::test]
async fn without_the_policy_keymint_mints_nothing_for_a_project_not_granted() {
    let ns = TestNamespace::with_projects("projmint", &[]).await;
    let _operator = Operator::start(&ns.name, &[]);
    let tenant = Tenant::edit(&ns, BOB).await;
    let project = ns.name.clone(); // the project named like the namespace
    tenant
        .keys
        .create(&PostParams::default(), &api_key("payments", &project, BOB))
        .await
        .expect("nothing refuses it at admission");

    let api: Api<ApiKey> = ns.api();
    let key = wait_for_phase(&api, "payments", Phase::Rejected, Duration::from_secs(20)).await;
    let status = key.status.clone().expect("status");
    let ready = &status.conditions[0];
    assert_eq!(
        (
            ready.type_.as_str(),
            ready.status.as_str(),
            ready.reason.as_str()
        ),
        ("Ready", "False", "ProjectNotGranted")
    );
    let expected = format!("project {project} is not granted to namespace {}", ns.name);
    assert!(ready.message.contains(&expected), "{}", ready.message);
    assert!(
        status.key_hash.is_none() && status.key_id.is_none(),
        "{status:?}"
    );
    let note = wait_for_warning(&ns, "payments", "ProjectNotGranted").await;
    assert!(note.contains(&expected), "{note}");
    let entry = eventually_entry(&ns, "payments", Action::Rejected).await;
    assert_eq!(entry.reason, "ProjectNotGranted");
    assert!(entry.message.contains(&expected), "{}", entry.message);
    assert!(
        ns.api::<Secret>()
            .get_opt("payments")
            .await
            .expect("get")
            .is_none(),
        "no Secret"
    );
    let ledgers: Vec<ConfigMap> = ns
        .api::<ConfigMap>()
        .list(&ListParams::default().labels("keymint.dev/ledger=quota"))
        .await
        .expect("list ledgers")
        .items;
    assert!(ledgers.is_empty(), "no quota slot taken: {ledgers:?}");

    // Granted by a cluster admin: the waiting key mints, without a touch.
    ns.grant(&[&project]).await;
    let key = wait_for_phase(&api, "payments", Phase::Active, Duration::from_secs(20)).await;
    assert!(key.status.and_then(|s| s.key_hash).is_some());
    assert!(
        ns.api::<Secret>()
            .get_opt("payments")
            .await
            .expect("get")
            .is_some(),
        "the key is in its Secret"
    );
    tenant.remove(ns).await;
}

/// A granted namespace mints, and a grant taken away refuses the keys not
/// minted yet while the minted ones stay.
#[tokio::test]
async fn a_granted_namespace_mints_and_a_withdrawn_grant_refuses_the_next_key() {
    let ns = TestNamespace::with_projects("projgrant", &["payments"]).await;
    let _operator = Operator::start(&ns.name, &[]);
    let tenant = Tenant::edit(&ns, BOB).await;
    tenant
        .keys
        .create(&PostParams::default(), &api_key("first", "payments", BOB))
        .await
        .expect("create");
    let api: Api<ApiKey> = ns.api();
    wait_for_phase(&api, "first", Phase::Active, Duration::from_secs(20)).await;

    ns.grant(&["billing"]).await;
    // The operator sees the grant change through its watch a moment later:
    // a key created before that may still mint. The first one after is
    // refused, and says why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    let message = loop {
        n += 1;
        let probe = format!("next-{n}");
        tenant
            .keys
            .create(&PostParams::default(), &api_key(&probe, "payments", BOB))
            .await
            .expect("create");
        if let (Phase::Rejected, Some(message)) = settled_phase(&api, &probe).await {
            break message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still minting for payments"
        );
    };
    assert!(
        message.contains("its ProjectGrant lists billing"),
        "{message}"
    );
    let first = api.get("first").await.expect("get");
    assert_eq!(
        first.status.and_then(|s| s.phase),
        Some(Phase::Active),
        "a minted key is not taken back by a narrower grant"
    );
    tenant.remove(ns).await;
}

/// Waits until the ApiKey `name` is Active or Rejected: the phase, and the
/// Ready message.
async fn settled_phase(api: &Api<ApiKey>, name: &str) -> (Phase, Option<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = api.get(name).await.expect("get").status.unwrap_or_default();
        if let Some(phase @ (Phase::Active | Phase::Rejected)) = status.phase {
            return (phase, status.conditions.first().map(|c| c.message.clone()));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never settled: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The chart creates the grants of its `projectGrants` value, and its
/// values schema refuses a grant that is not a list of projects.
#[tokio::test]
async fn the_chart_creates_the_grants_it_is_given() {
    let ns = TestNamespace::with_projects("chartgrant", &[]).await;
    let grants = format!(
        r#"projectGrants={{"{}": ["payments", "billing"]}}"#,
        ns.name
    );
    let objects = render(&release_name(&ns), &ns.name, &["--set-json", &grants]);
    let grant = objects
        .iter()
        .find(|o| kind_of(o) == "ProjectGrant")
        .expect("a ProjectGrant");
    assert_eq!(name_of(grant), "projects");
    create(&ns.client, grant, &ns.name).await;
    let created = ns.api::<ProjectGrant>().get("projects").await.expect("get");
    let projects: Vec<&str> = created.spec.projects.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(projects, ["payments", "billing"]);
    let bad = crate::support::chart::helm(&[
        "template",
        "x",
        crate::support::chart::CHART,
        "--set-json",
        r#"projectGrants={"shop": "payments"}"#,
    ])
    .expect_err("a grant that is not a list is refused");
    assert!(bad.contains("projectGrants"), "{bad}");
    ns.delete().await;
}

// ---------------------------------------------------------------------------

/// A user with the built-in `edit` role and the chart's ApiKey roles in a
/// test namespace (the chart's edit ClusterRole of this test's release).
struct Tenant {
    keys: Api<ApiKey>,
    role: Value,
}

impl Tenant {
    async fn edit(ns: &TestNamespace, user: &str) -> Tenant {
        let release = release_name(ns);
        let edit = format!("{release}-edit");
        let objects = render(
            &release,
            &ns.name,
            &["--set", "rbac.aggregateToDefaultRoles=false"],
        );
        let role = objects
            .into_iter()
            .find(|o| kind_of(o) == "ClusterRole" && name_of(o) == edit)
            .expect("the chart's edit ClusterRole");
        create(&ns.client, &role, &ns.name).await;
        for role in ["edit", edit.as_str()] {
            let binding = json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"generateName": "tenant-", "namespace": ns.name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            });
            create(&ns.client, &binding, &ns.name).await;
        }
        let keys: Api<ApiKey> = Api::namespaced(control_plane().as_user(user, &[]).await, &ns.name);
        eventually(Duration::from_secs(30), || async {
            keys.create(&dry_run(), &api_key("probe", "payments", user))
                .await
                .is_ok()
        })
        .await;
        Tenant { keys, role }
    }

    /// Deletes its ClusterRole (the namespace does not take it along) and
    /// the namespace.
    async fn remove(self, ns: TestNamespace) {
        delete_cluster_scoped(&ns.client, &[&self.role]).await;
        ns.delete().await;
    }
}

/// The chart's project-binding policy bound to one test namespace, and
/// `user`, who may create ApiKeys there (the chart's edit ClusterRole).
struct ProjectBinding {
    /// The policy's name, which its refusals carry.
    policy: String,
    installed: Vec<Value>,
    client: Client,
    user: Api<ApiKey>,
}

impl ProjectBinding {
    async fn install(ns: &TestNamespace, user: &str) -> ProjectBinding {
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
            "metadata": {"name": "user-edits", "namespace": ns.name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": edit},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        });
        create(&ns.client, &grant, &ns.name).await;
        let keys = Api::namespaced(control_plane().as_user(user, &[]).await, &ns.name);
        // RBAC and the policy take effect asynchronously: wait until the
        // user is refused by the policy (not by RBAC) for a project that
        // no test grants.
        eventually(Duration::from_secs(30), || async {
            let attempt = keys
                .create(&dry_run(), &api_key("probe", "elsewhere", user))
                .await;
            matches!(&attempt, Err(kube::Error::Api(s)) if s.message.contains("project-binding"))
        })
        .await;
        ProjectBinding {
            policy,
            installed,
            client: ns.client.clone(),
            user: keys,
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

/// Creates an ApiKey for `project` and expects the policy to refuse it: 403
/// Forbidden for a project the grant does not list, 422 Invalid (the
/// binding's parameter is missing) without a grant. Returns the API
/// server's message, as `kubectl apply` prints it.
async fn refused(api: &Api<ApiKey>, project: &str) -> String {
    let err = api
        .create(&PostParams::default(), &api_key("refused", project, BOB))
        .await
        .expect_err("the project is refused");
    let kube::Error::Api(status) = &err else {
        panic!("{err}")
    };
    assert!(matches!(status.code, 403 | 422), "{status:?}");
    assert!(
        status.message.contains("ValidatingAdmissionPolicy"),
        "{status:?}"
    );
    status.message.clone()
}

/// The API server's refusal for a namespace without a ProjectGrant: the
/// policy's parameter is missing.
fn assert_no_grant(refusal: &str, policy: &str) {
    for words in [
        format!("{policy}' denied request"),
        "no params found for policy binding with `Deny` parameterNotFoundAction".to_string(),
    ] {
        assert!(refusal.contains(&words), "{words:?} not in {refusal}");
    }
}

/// Waits for the audit entry `action` about the ApiKey `name` in the
/// stream the test's operator keeps in its namespace.
async fn eventually_entry(ns: &TestNamespace, name: &str, action: Action) -> audit::Entry {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let segments = ns
            .api::<ConfigMap>()
            .list(&ListParams::default().labels("keymint.dev/audit=segment"))
            .await
            .expect("list audit segments")
            .items;
        let found = segments
            .iter()
            .filter_map(|cm| cm.data.as_ref()?.get("entries"))
            .flat_map(|content| audit::parse_segment(content).expect("a well-formed segment"))
            .find(|e| e.name == name && e.action == action);
        if let Some(entry) = found {
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit entry {action} for {name} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
