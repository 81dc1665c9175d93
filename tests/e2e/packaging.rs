//! Production packaging: the Helm chart in `charts/keymint` renders objects
//! the real API server accepts, its pod meets the "restricted" Pod Security
//! Standard, its RBAC is least privilege (the operator can never list, watch
//! or update Secrets), its owner-binding admission policy refuses ApiKeys for
//! someone else unless the requester is granted `impersonate-owner`, and the
//! operator never writes an ApiKey's spec (no drift for GitOps tools).
//!
//! helm is built from its Go module (tests/tools) into
//! target/controlplane/bin/helm; `make test` does that first, and a test
//! builds it on first use otherwise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use keymint::apikey::{ApiKey, Phase};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchParams,
};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::support::access::{Check, may};
use crate::support::chart::{CHART, helm, render};
use crate::support::manifests::{
    container_args, create, delete_cluster_scoped, dry_run, dry_run_create_warnings,
    enforce_restricted_pod_security, find, kind_of, name_of, pod_from_template, release_name,
    render_bound_to,
};
use crate::support::operator::Operator;
use crate::support::{
    TestNamespace, api_key, apiserver_audit, control_plane, eventually, http_get,
    json_log_http_addr, wait_for_phase,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

// ---------------------------------------------------------------------------
// The chart on its own (no cluster)

#[test]
fn helm_lint_passes_and_the_values_schema_refuses_typos() {
    let lint = helm(&["lint", "--strict", CHART]).expect("helm lint --strict passes");
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let typo = helm(&["template", "x", CHART, "--set", "replicaz=3"])
        .expect_err("an unknown value is refused");
    assert!(typo.contains("replicaz"), "{typo}");
    let bad_duration = helm(&["template", "x", CHART, "--set", "config.expiryWarning=soon"])
        .expect_err("a malformed duration is refused");
    assert!(bad_duration.contains("expiryWarning"), "{bad_duration}");
    let unelected = helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "leaderElection.enabled=false",
    ])
    .expect_err("two replicas without leader election are refused");
    assert!(unelected.contains("leaderElection"), "{unelected}");
}

#[test]
fn the_chart_ships_the_generated_crds() {
    for file in [
        "crds/apikeys.keymint.dev.yaml",
        "crds/projectgrants.keymint.dev.yaml",
    ] {
        let generated = std::fs::read(Path::new(REPO).join(file)).expect(file);
        let shipped = std::fs::read(Path::new(REPO).join(CHART).join(file))
            .unwrap_or_else(|e| panic!("the chart's {file}: {e}"));
        assert!(
            generated == shipped,
            "charts/keymint/{file} must be the generated {file} (a symlink to it)"
        );
    }
}

// ---------------------------------------------------------------------------
// (a) Accepted by the API server

#[tokio::test]
async fn the_chart_renders_objects_the_api_server_accepts() {
    let ns = TestNamespace::new("chart").await;
    let release = release_name(&ns);
    let objects = render(&release, &ns.name, &["--include-crds"]);

    let kinds: BTreeSet<&str> = objects.iter().map(kind_of).collect();
    for expected in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.contains(expected), "no {expected} in {kinds:?}");
    }
    let deployment = find(&objects, "Deployment", &release);
    assert_eq!(deployment["spec"]["replicas"], 2, "HA by default");
    let args = container_args(deployment);
    for arg in ["run", "--leader-elect=true", "--lease-name=keymint"] {
        assert!(args.iter().any(|a| a == arg), "{arg} not in {args:?}");
    }

    for object in &objects {
        dry_run(&ns.client, object, &ns.name).await;
    }
    ns.delete().await;
}

#[tokio::test]
async fn chart_values_narrow_the_scope_and_switch_features() {
    let ns = TestNamespace::new("chartvals").await;
    let release = release_name(&ns);
    let objects = render(
        &release,
        &ns.name,
        &[
            "--set",
            &format!("config.watchNamespace={}", ns.name),
            "--set",
            "replicaCount=1",
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "ownerBinding.enabled=false",
            "--set",
            "projectBinding.enabled=false",
            "--set",
            "finalizerPolicy.enabled=false",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "config.maxKeysPerOwner=5",
        ],
    );
    let kinds: BTreeSet<&str> = objects.iter().map(kind_of).collect();
    assert!(!kinds.contains("ValidatingAdmissionPolicy"), "{kinds:?}");
    assert!(!kinds.contains("MutatingAdmissionPolicy"), "{kinds:?}");
    // Cluster-wide, only the right to read admission policies (they are
    // cluster-scoped), to check the owner binding.
    for object in objects
        .iter()
        .filter(|o| kind_of(o) == "ClusterRoleBinding")
    {
        assert!(name_of(object).ends_with("-read-owner-binding"), "{object}");
    }
    for object in objects.iter().filter(|o| kind_of(o) == "ClusterRole") {
        if name_of(object).ends_with("-read-owner-binding") {
            assert_eq!(
                object["rules"],
                json!([{"apiGroups": ["admissionregistration.k8s.io"],
                    "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
                    "verbs": ["get", "list"]}]),
            );
        }
    }
    // With a watch namespace, the operator's ApiKey and Secret rights are a
    // Role there, not a ClusterRole; no Lease rights without election.
    assert!(
        objects
            .iter()
            .all(|o| !(kind_of(o) == "ClusterRole" && name_of(o) == release)),
        "no cluster-wide role for the operator"
    );
    let roles: Vec<&Value> = objects
        .iter()
        .filter(|o| kind_of(o) == "Role" && name_of(o) == release)
        .collect();
    let rules = serde_json::to_string(&roles).expect("json");
    assert!(
        rules.contains("secrets") && !rules.contains("leases"),
        "{rules}"
    );
    // The provenance seal key is in the release namespace, whatever the
    // watch namespace: its Role reads it by name.
    assert!(rules.contains("keymint-provenance"), "{rules}");
    let args = container_args(find(&objects, "Deployment", &release));
    for arg in [
        "--leader-elect=false".to_string(),
        format!("--watch-namespace={}", ns.name),
        "--max-keys-per-owner=5".to_string(),
    ] {
        assert!(args.contains(&arg), "{arg} not in {args:?}");
    }
    let monitor = find(&objects, "ServiceMonitor", &release);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-metrics");

    // Everything but the ServiceMonitor (its CRD belongs to
    // prometheus-operator, absent here) is accepted.
    for object in objects.iter().filter(|o| kind_of(o) != "ServiceMonitor") {
        dry_run(&ns.client, object, &ns.name).await;
    }
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// (b) Pod Security Standard "restricted"

#[tokio::test]
async fn the_operator_pod_meets_the_restricted_pod_security_standard() {
    let ns = TestNamespace::new("psa").await;
    enforce_restricted_pod_security(&ns).await;
    let release = release_name(&ns);
    let objects = render(&release, &ns.name, &[]);
    let deployment = find(&objects, "Deployment", &release).clone();

    // What "restricted" requires, and a read-only root filesystem besides.
    let pod_spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod_spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod_spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod_spec["containers"][0]["securityContext"];
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["capabilities"]["drop"], json!(["ALL"]));

    // The PodSecurity admission plugin judges a Deployment's pod template in
    // warn mode: a clean template draws no warning.
    let warnings = dry_run_create_warnings(&ns.client, &ns.name, &deployment).await;
    assert!(warnings.is_empty(), "PodSecurity warnings: {warnings:?}");

    // It enforces on Pods: a Pod made from the template is admitted (its
    // ServiceAccount must exist for that).
    let service_account = find(&objects, "ServiceAccount", &release);
    create(&ns.client, service_account, &ns.name).await;
    let pods: Api<Pod> = ns.api();
    let pod = pod_from_template(&deployment);
    pods.create(
        &PostParams {
            dry_run: true,
            ..Default::default()
        },
        &pod,
    )
    .await
    .expect("a Pod from the chart's template is admitted in a restricted namespace");

    // Control: the namespace really enforces (a weakened copy is refused and
    // its Deployment warned about).
    let mut weak = deployment.clone();
    weak["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
        json!(true);
    let err = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod_from_template(&weak),
        )
        .await
        .expect_err("a Pod allowing privilege escalation is refused");
    assert!(
        err.to_string()
            .contains("violates PodSecurity \"restricted"),
        "{err}"
    );
    let warnings = dry_run_create_warnings(&ns.client, &ns.name, &weak).await;
    assert!(
        warnings.iter().any(|w| w.contains("PodSecurity")),
        "{warnings:?}"
    );
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// (c) Least privilege

#[tokio::test]
async fn the_operator_service_account_cannot_list_watch_or_update_secrets() {
    let ns = TestNamespace::new("rbac").await;
    let release = release_name(&ns);
    let objects = render(
        &release,
        &ns.name,
        &["--set", "serviceAccount.name=keymint"],
    );
    let installed = install_operator_rbac(&ns, &objects, &release).await;
    let (user, groups) = service_account_identity(&ns);

    let here = Some(ns.name.as_str());
    let elsewhere = Some("default");
    let checks = [
        // Secrets: get, create, delete anywhere ApiKeys live; nothing else.
        (Check::new("get", "", "secrets", elsewhere), true),
        (Check::new("create", "", "secrets", elsewhere), true),
        (Check::new("delete", "", "secrets", elsewhere), true),
        (Check::new("list", "", "secrets", here), false),
        (Check::new("list", "", "secrets", None), false),
        (Check::new("watch", "", "secrets", here), false),
        (Check::new("watch", "", "secrets", None), false),
        (Check::new("update", "", "secrets", here), false),
        (Check::new("patch", "", "secrets", here), false),
        (Check::new("deletecollection", "", "secrets", here), false),
        // ApiKeys: read and watch, finalizer and status; never create one.
        (Check::new("list", "keymint.dev", "apikeys", None), true),
        (Check::new("watch", "keymint.dev", "apikeys", None), true),
        (
            Check::new("patch", "keymint.dev", "apikeys", elsewhere),
            true,
        ),
        (
            Check::new("patch", "keymint.dev", "apikeys", elsewhere).sub("status"),
            true,
        ),
        (
            Check::new("update", "keymint.dev", "apikeys", elsewhere).sub("finalizers"),
            true,
        ),
        (
            Check::new("create", "keymint.dev", "apikeys", elsewhere),
            false,
        ),
        (
            Check::new("delete", "keymint.dev", "apikeys", elsewhere),
            false,
        ),
        (
            Check::new("impersonate-owner", "keymint.dev", "apikeys", elsewhere),
            false,
        ),
        // Events through events.k8s.io, as kube's Recorder writes them.
        (
            Check::new("create", "events.k8s.io", "events", elsewhere),
            true,
        ),
        (
            Check::new("patch", "events.k8s.io", "events", elsewhere),
            true,
        ),
        (
            Check::new("delete", "events.k8s.io", "events", elsewhere),
            false,
        ),
        // ConfigMaps (ledgers, audit) and the Lease: its own namespace only.
        (Check::new("create", "", "configmaps", here), true),
        (Check::new("list", "", "configmaps", here), true),
        (Check::new("update", "", "configmaps", here), true),
        (Check::new("delete", "", "configmaps", here), true),
        (Check::new("get", "", "configmaps", elsewhere), false),
        (Check::new("list", "", "configmaps", None), false),
        (
            Check::new("create", "coordination.k8s.io", "leases", here),
            true,
        ),
        (
            Check::new("update", "coordination.k8s.io", "leases", here).name("keymint"),
            true,
        ),
        (
            Check::new("watch", "coordination.k8s.io", "leases", here).name("keymint"),
            true,
        ),
        (
            Check::new("update", "coordination.k8s.io", "leases", here).name("other"),
            false,
        ),
        (
            Check::new("list", "coordination.k8s.io", "leases", here),
            false,
        ),
        (
            Check::new("create", "coordination.k8s.io", "leases", elsewhere),
            false,
        ),
    ];
    let mut wrong = Vec::new();
    for (check, expected) in &checks {
        if may(&ns.client, &user, &groups, check).await != *expected {
            wrong.push(format!("{check:?}: expected allowed={expected}"));
        }
    }
    assert!(wrong.is_empty(), "RBAC differs:\n{}", wrong.join("\n"));

    // The same, for real, as the ServiceAccount.
    let sa = control_plane()
        .as_service_account(&ns.name, "keymint")
        .await;
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &ns.name);
    for (what, result) in [
        ("list", secrets.list(&ListParams::default()).await.map(drop)),
        (
            "list in all namespaces",
            Api::<Secret>::all(sa.clone())
                .list(&ListParams::default())
                .await
                .map(drop),
        ),
        (
            "watch",
            secrets.watch(&WatchParams::default(), "0").await.map(drop),
        ),
    ] {
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403),
            "{what}: {:?}",
            result.err()
        );
    }
    let probe: Secret = serde_json::from_value(json!({
        "metadata": {"name": "probe"}, "stringData": {"k": "v"}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &probe)
        .await
        .expect("the operator may create a Secret");
    let got = secrets.get("probe").await.expect("and get it");
    let err = secrets
        .patch(
            "probe",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect_err("but not patch it");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    let err = secrets
        .replace("probe", &PostParams::default(), &got)
        .await
        .expect_err("nor update it");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    secrets
        .delete("probe", &DeleteParams::default())
        .await
        .expect("and may delete it");

    delete_cluster_scoped(&ns.client, &installed).await;
    ns.delete().await;
}

#[tokio::test]
async fn the_operator_works_with_only_the_charts_rbac() {
    let ns = TestNamespace::new("chartrun").await;
    let release = release_name(&ns);
    // The chart's default (cluster-wide) RBAC; the process itself watches
    // only this namespace, so it leaves other tests' ApiKeys alone.
    let objects = render(
        &release,
        &ns.name,
        &[
            "--set",
            "serviceAccount.name=keymint",
            "--set-json",
            &format!("extraArgs=[\"--watch-namespace={}\"]", ns.name),
        ],
    );
    let installed = install_operator_rbac(&ns, &objects, &release).await;
    // The chart's owner binding, as rendered (cluster-wide, Deny), which
    // the Deployment's arguments name: keymint checks it at start-up. It
    // judges every ApiKey in the shared cluster, so it stays only until
    // keymint has seen it.
    let binding: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            kind_of(o).starts_with("ValidatingAdmissionPolicy")
                && name_of(o) == format!("{release}-owner-binding")
        })
        .collect();
    assert_eq!(binding.len(), 2, "the owner binding: policy and binding");
    for object in &binding {
        create(&ns.client, object, &ns.name).await;
    }

    // `keymint run` with the Deployment's own arguments (but a free port)
    // and environment, as the chart's ServiceAccount.
    let args: Vec<String> = container_args(find(&objects, "Deployment", &release))
        .into_iter()
        .map(|a| match a.starts_with("--http-addr=") {
            true => "--http-addr=127.0.0.1:0".to_string(),
            false => a,
        })
        .collect();
    assert!(
        args.contains(&format!("--owner-binding-policy={release}-owner-binding")),
        "{args:?}"
    );
    let operator = ChartOperator::start(&ns, &args);
    let addr = operator.http_addr().await;
    assert_eq!(http_get(addr, "/healthz").0, 200, "liveness probe path");
    eventually(Duration::from_secs(20), || async {
        http_get(addr, "/readyz").0 == 200
    })
    .await;
    let (_, metrics) = http_get(addr, "/metrics");
    assert!(
        metrics.contains("keymint_owner_binding_enforced 1"),
        "{metrics}"
    );
    delete_cluster_scoped(&ns.client, &binding).await;

    let api: Api<ApiKey> = ns.api();
    api.create(
        &PostParams::default(),
        &crate::support::api_key("least-privilege", "payments", "alice@example.com"),
    )
    .await
    .expect("create");
    wait_for_phase(
        &api,
        "least-privilege",
        Phase::Active,
        Duration::from_secs(30),
    )
    .await;
    let secrets: Api<Secret> = ns.api();
    secrets.get("least-privilege").await.expect("its Secret");
    eventually(Duration::from_secs(10), || async {
        crate::support::events_for(&ns.client, &ns.name, "least-privilege")
            .await
            .iter()
            .any(|(reason, _)| reason == "Minted")
    })
    .await;
    let segments =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(ns.client.clone(), &ns.name)
            .list(&ListParams::default().labels("keymint.dev/audit=segment"))
            .await
            .expect("list audit segments");
    assert!(!segments.items.is_empty(), "an audit segment was written");
    let lease =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(ns.client.clone(), &ns.name)
            .get("keymint")
            .await
            .expect("the leader-election Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(ChartOperator::POD_NAME)
    );
    let (status, metrics) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("keymint_leader"), "{metrics}");

    api.delete("least-privilege", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(Duration::from_secs(30), || async {
        api.get_opt("least-privilege").await.expect("get").is_none()
            && secrets
                .get_opt("least-privilege")
                .await
                .expect("get")
                .is_none()
    })
    .await;

    let log = operator.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
    delete_cluster_scoped(&ns.client, &installed).await;
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// (d) Owner binding at admission

#[tokio::test]
async fn owner_binding_admits_own_keys_and_granted_impersonators_only() {
    let ns = TestNamespace::new("owner").await;
    let release = release_name(&ns);
    let objects = render_bound_to(
        &ns,
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
    let impersonate = format!("{release}-impersonate-owner");
    let installed: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            [
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            ]
            .contains(&kind_of(o))
                || (kind_of(o) == "ClusterRole"
                    && [edit.as_str(), impersonate.as_str()].contains(&name_of(o)))
        })
        .collect();
    assert_eq!(installed.len(), 4, "policy, binding, two ClusterRoles");
    for object in &installed {
        create(&ns.client, object, &ns.name).await;
    }
    // bob may create ApiKeys here; carol may too, and is granted
    // impersonate-owner (a RoleBinding: the grant is per namespace).
    for (subject, role) in [
        ("bob@example.com", &edit),
        ("carol@example.com", &edit),
        ("carol@example.com", &impersonate),
    ] {
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"generateName": "grant-", "namespace": ns.name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": subject}],
        });
        create(&ns.client, &binding, &ns.name).await;
    }

    let bob: Api<ApiKey> = Api::namespaced(
        control_plane().as_user("bob@example.com", &[]).await,
        &ns.name,
    );
    let carol: Api<ApiKey> = Api::namespaced(
        control_plane().as_user("carol@example.com", &[]).await,
        &ns.name,
    );
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // The policy and RBAC take effect asynchronously: poll with a dry run
    // until bob's key for alice is refused by the policy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = bob
            .create(
                &dry,
                &crate::support::api_key("probe", "payments", "alice@example.com"),
            )
            .await;
        if matches!(&attempt, Err(kube::Error::Api(s)) if s.message.contains("spec.owner")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the owner binding is not enforced after 30s; last attempt: {:?}",
            attempt.map(|k| k.spec.owner)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let groups = ["system:authenticated".to_string()];
    let granted = Check::new(
        "impersonate-owner",
        "keymint.dev",
        "apikeys",
        Some(&ns.name),
    );
    eventually(Duration::from_secs(30), || async {
        may(&ns.client, "carol@example.com", &groups, &granted).await
    })
    .await;

    // A plain user: refused for another owner, admitted for itself.
    let err = bob
        .create(
            &PostParams::default(),
            &crate::support::api_key("for-alice", "payments", "alice@example.com"),
        )
        .await
        .expect_err("bob cannot create a key owned by alice");
    let kube::Error::Api(status) = &err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 403, "{status:?}");
    for words in ["spec.owner", "bob@example.com", "impersonate-owner"] {
        assert!(status.message.contains(words), "{}", status.message);
    }
    bob.create(
        &PostParams::default(),
        &crate::support::api_key("bobs-own", "payments", "bob@example.com"),
    )
    .await
    .expect("bob creates his own key");

    // A granted user (think: the GitOps controller) creates keys for others.
    carol
        .create(
            &PostParams::default(),
            &crate::support::api_key("for-alice", "payments", "alice@example.com"),
        )
        .await
        .expect("carol, granted impersonate-owner, creates a key for alice");
    // Cluster admins are granted every verb, impersonate-owner included.
    Api::<ApiKey>::namespaced(ns.client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &crate::support::api_key("by-admin", "payments", "dave@example.com"),
        )
        .await
        .expect("a cluster admin creates a key for dave");
    // Updates that keep the owner (edits, finalizers) are not the policy's
    // business: bob may edit the description of alice's key here.
    bob.patch(
        "for-alice",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"description": "rotated monthly"}})),
    )
    .await
    .expect("an update that keeps the owner is admitted");

    delete_cluster_scoped(&ns.client, &installed).await;
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// (e) GitOps: no drift

#[tokio::test]
async fn the_operator_never_writes_an_api_key_spec() {
    let ns = TestNamespace::new("gitops").await;
    let api: Api<ApiKey> = ns.api();
    let manifest = json!({
        "apiVersion": "keymint.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {
            "name": "gitops-key",
            "namespace": ns.name,
            "labels": {"app.kubernetes.io/instance": "payments"},
            "annotations": {
                "argocd.argoproj.io/tracking-id": format!("payments:keymint.dev/ApiKey:{}/gitops-key", ns.name)
            },
        },
        "spec": {
            "project": "payments",
            "owner": "alice@example.com",
            "description": "deployed by Argo CD",
            "expiresAt": "2099-01-31T00:00:00Z",
            "secretName": "payments-gitops",
            "secretTemplate": {"labels": {"team": "payments"}},
        },
    });
    let argocd = PatchParams::apply("argocd");
    api.patch("gitops-key", &argocd, &Patch::Apply(&manifest))
        .await
        .expect("server-side apply as argocd");

    let _operator = Operator::start(&ns.name, &[]);
    wait_for_phase(&api, "gitops-key", Phase::Active, Duration::from_secs(20)).await;
    // Let a verification cycle (every 2 s in tests) pass too.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let raw: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::erase::<ApiKey>(&()),
    );
    let live = raw.get("gitops-key").await.expect("get");
    assert_eq!(
        serde_json::to_string(&live.data["spec"]).expect("json"),
        serde_json::to_string(&manifest["spec"]).expect("json"),
        "the spec is exactly what was applied"
    );
    assert_eq!(live.metadata.generation, Some(1), "spec never written");
    assert!(
        live.finalizers().iter().any(|f| f == "keymint.dev/cleanup"),
        "keymint did its work: {:?}",
        live.finalizers()
    );

    // managedFields: nobody but argocd owns anything under spec; keymint
    // owns the status and its finalizer.
    let managed = live.metadata.managed_fields.clone().unwrap_or_default();
    let describe = serde_json::to_string_pretty(&managed).expect("json");
    for entry in &managed {
        let fields = entry
            .fields_v1
            .as_ref()
            .map(|f| &f.0)
            .cloned()
            .unwrap_or_default();
        let manager = entry.manager.as_deref().unwrap_or_default();
        if manager == "argocd" {
            assert!(fields.get("f:spec").is_some(), "{describe}");
        } else {
            assert!(
                fields.get("f:spec").is_none(),
                "{manager} owns spec fields: {describe}"
            );
        }
    }
    let owns = |subresource: Option<&str>, path: &[&str]| {
        managed.iter().any(|e| {
            e.manager.as_deref() == Some("keymint")
                && e.subresource.as_deref() == subresource
                && path
                    .iter()
                    .try_fold(e.fields_v1.as_ref().map(|f| &f.0), |v, k| {
                        v.and_then(|v| v.get(*k)).map(Some)
                    })
                    .flatten()
                    .is_some()
        })
    };
    assert!(owns(Some("status"), &["f:status", "f:phase"]), "{describe}");
    assert!(owns(None, &["f:metadata", "f:finalizers"]), "{describe}");

    // Argo CD's server-side diff (a dry-run apply) sees nothing to change,
    // and a real re-apply is a no-op.
    let diff = raw
        .patch(
            "gitops-key",
            &argocd.clone().dry_run(),
            &Patch::Apply(&manifest),
        )
        .await
        .expect("dry-run apply");
    assert_eq!(diff.data["spec"], manifest["spec"]);
    assert_eq!(diff.metadata.generation, Some(1));
    let again = raw
        .patch("gitops-key", &argocd, &Patch::Apply(&manifest))
        .await
        .expect("re-apply");
    assert_eq!(
        again.metadata.resource_version, live.metadata.resource_version,
        "re-applying the same manifest writes nothing"
    );

    // The ApiKey's own (tracking) labels are not copied onto the Secret, so
    // Argo CD never takes the Secret for part of its app and prunes it.
    let secret: Secret = ns.api().get("payments-gitops").await.expect("Secret");
    assert!(
        !secret.labels().contains_key("app.kubernetes.io/instance"),
        "{:?}",
        secret.labels()
    );
    assert_eq!(
        secret.labels().get("team").map(String::as_str),
        Some("payments")
    );
    ns.delete().await;
}

// ---------------------------------------------------------------------------
// Helpers

/// helm, built from tests/tools on first use.
/// The chart's MutatingAdmissionPolicy puts keymint's finalizer on every
/// ApiKey as it is created, so keymint never patches an ApiKey to add it.
#[tokio::test]
async fn the_finalizer_policy_adds_the_finalizer_at_creation() {
    const KEYS: usize = 5;
    let ns = TestNamespace::new("finalizer").await;
    let release = release_name(&ns);
    let objects = render_bound_to(&ns, &release, "finalizerPolicy", &[]);
    let policy: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"].contains(&kind_of(o))
        })
        .collect();
    assert_eq!(policy.len(), 2, "policy and binding");
    for object in &policy {
        create(&ns.client, object, &ns.name).await;
    }
    let api: Api<ApiKey> = ns.api();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // Policies take effect once the API server has loaded them.
    let mut held = api_key("held", "p", "alice@example.com");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    eventually(Duration::from_secs(20), || {
        let (api, dry, held) = (api.clone(), dry.clone(), held.clone());
        async move {
            api.create(&dry, &held).await.is_ok_and(|k| {
                k.finalizers() == ["example.com/hold", keymint::reconcile::FINALIZER]
            })
        }
    })
    .await;

    let operator = Operator::start(&ns.name, &[]);
    let mark = apiserver_audit::mark();
    for i in 0..KEYS {
        let created = api
            .create(
                &PostParams::default(),
                &api_key(&format!("k{i}"), "p", "alice@example.com"),
            )
            .await
            .expect("create");
        assert_eq!(created.finalizers(), [keymint::reconcile::FINALIZER]);
    }
    for i in 0..KEYS {
        wait_for_phase(
            &api,
            &format!("k{i}"),
            Phase::Active,
            Duration::from_secs(20),
        )
        .await;
    }
    api.delete("k0", &DeleteParams::default())
        .await
        .expect("delete");
    eventually(Duration::from_secs(20), || {
        let api = api.clone();
        async move { matches!(api.get_opt("k0").await, Ok(None)) }
    })
    .await;
    let secrets: Api<Secret> = ns.api();
    assert!(secrets.get_opt("k0").await.expect("get").is_none());

    if apiserver_audit::path().is_some() {
        let writes = apiserver_audit::keymint_writes_since(mark, &ns.name);
        let count = |verb: &str, resource: &str, subresource: &str| {
            writes
                .iter()
                .filter(|w| {
                    w.verb == verb
                        && w.object_ref.resource == resource
                        && w.object_ref.subresource == subresource
                })
                .count()
        };
        // Only k0's finalizer removal patches an ApiKey itself.
        assert_eq!(count("patch", "apikeys", ""), 1, "{writes:#?}");
        assert_eq!(count("patch", "apikeys", "status"), KEYS, "{writes:#?}");
        // One per key; the operator may also create its provenance seal key
        // in this (its own) namespace after the mark.
        let minted = writes
            .iter()
            .filter(|w| w.verb == "create" && w.object_ref.resource == "secrets")
            .filter(|w| !keymint::runtime::key_secret::ALL.contains(&w.object_ref.name.as_str()))
            .count();
        assert_eq!(minted, KEYS);
    }
    // The finalizers go with keymint's cleanup, before keymint stops.
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete the keys");
    eventually(Duration::from_secs(20), || {
        let api = api.clone();
        async move {
            api.list(&ListParams::default())
                .await
                .is_ok_and(|l| l.items.is_empty())
        }
    })
    .await;
    drop(operator);
    delete_cluster_scoped(&ns.client, &policy).await;
    ns.delete().await;
}

/// Creates the operator's own RBAC from the rendered chart (not the
/// user-facing ClusterRoles): its ServiceAccount, ClusterRole(Binding) and
/// Role(Binding). Waits until the authorizer has them; returns them.
async fn install_operator_rbac<'a>(
    ns: &TestNamespace,
    objects: &'a [Value],
    release: &str,
) -> Vec<&'a Value> {
    let reader = format!("{release}-read-owner-binding");
    let installed: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            (kind_of(o) == "ServiceAccount" && name_of(o) == "keymint")
                || (["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
                    .contains(&kind_of(o))
                    && name_of(o) == release)
                || (["ClusterRole", "ClusterRoleBinding"].contains(&kind_of(o))
                    && name_of(o) == reader)
        })
        .collect();
    assert_eq!(
        installed.len(),
        7,
        "SA, ClusterRole(Binding), Role(Binding), the owner binding's reader"
    );
    for object in &installed {
        create(&ns.client, object, &ns.name).await;
    }
    // RBAC reaches the authorizer through an informer: wait until it has.
    let (user, groups) = service_account_identity(ns);
    let here = Some(ns.name.as_str());
    eventually(Duration::from_secs(30), || async {
        may(
            &ns.client,
            &user,
            &groups,
            &Check::new("create", "", "secrets", here),
        )
        .await
            && may(
                &ns.client,
                &user,
                &groups,
                &Check::new("create", "", "configmaps", here),
            )
            .await
            && may(
                &ns.client,
                &user,
                &groups,
                &Check::new(
                    "list",
                    "admissionregistration.k8s.io",
                    "validatingadmissionpolicybindings",
                    None,
                ),
            )
            .await
    })
    .await;
    installed
}

/// The user and groups of the ServiceAccount `keymint` in the test namespace.
fn service_account_identity(ns: &TestNamespace) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{}:keymint", ns.name),
        vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{}", ns.name),
            "system:authenticated".to_string(),
        ],
    )
}

/// `keymint run` as the chart runs it: the ServiceAccount `keymint` of the
/// test namespace (the admin kubeconfig, impersonating it), KEYMINT_NAMESPACE
/// and POD_NAME as the downward API sets them.
struct ChartOperator {
    child: std::process::Child,
    log_path: PathBuf,
}

impl ChartOperator {
    const POD_NAME: &'static str = "keymint-7d9f8-abcde";

    fn start(ns: &TestNamespace, args: &[String]) -> ChartOperator {
        let dir = control_plane()
            .kubeconfig()
            .parent()
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join("operators");
        std::fs::create_dir_all(&dir).expect("operator directory");
        let (user, groups) = service_account_identity(ns);
        let admin = std::fs::read_to_string(control_plane().kubeconfig()).expect("kubeconfig");
        let mut kubeconfig: Value = serde_norway::from_str(&admin).expect("kubeconfig YAML");
        for entry in kubeconfig["users"].as_array_mut().expect("users") {
            entry["user"]["as"] = json!(user);
            entry["user"]["as-groups"] = json!(groups);
        }
        let kubeconfig_path = dir.join(format!("{}-sa.kubeconfig", ns.name));
        std::fs::write(
            &kubeconfig_path,
            serde_norway::to_string(&kubeconfig).expect("YAML"),
        )
        .expect("write kubeconfig");
        let log_path = dir.join(format!("{}-chart.log", ns.name));
        let log = std::fs::File::create(&log_path).expect("log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keymint"));
        command
            .args(args)
            .env("KUBECONFIG", &kubeconfig_path)
            .env("KEYMINT_NAMESPACE", &ns.name)
            .env("POD_NAME", Self::POD_NAME)
            .env("RUST_LOG", "keymint=debug,kube=info")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        crate::support::dies_with_the_test(&mut command);
        let child = command.spawn().expect("start keymint run");
        ChartOperator { child, log_path }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The address it serves /metrics, /healthz and /readyz on, from its log.
    async fn http_addr(&self) -> std::net::SocketAddr {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(addr) = json_log_http_addr(&self.log()) {
                return addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operator never served HTTP:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
