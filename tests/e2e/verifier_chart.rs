//! The verifier in the Helm chart: its own Deployment, Service, budget and
//! ServiceAccount, apart from the operator's (no selector of one matches the
//! other's pods), accepted by the API server, a pod that meets the
//! "restricted" Pod Security Standard, and RBAC that lets it read and watch
//! ApiKeys and nothing else — no Secrets. `verifier.enabled=false` renders
//! none of it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use keymint::apikey::ApiKey;
use kube::Api;
use kube::api::{ListParams, PostParams, WatchParams};
use serde_json::{Value, json};

use crate::support::access::{Check, may};
use crate::support::chart::{CHART, helm, render};
use crate::support::manifests::{
    container_args, create, delete_cluster_scoped, dry_run, dry_run_create_warnings,
    enforce_restricted_pod_security, find, kind_of, name_of, pod_from_template, release_name,
};
use crate::support::{TestNamespace, control_plane, eventually};

/// The verifier's objects in a rendering: those labelled its component.
fn verifier_objects(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] == "verifier")
        .collect()
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

/// Whether `selector` (a label map) selects a pod with `pod_labels`.
fn selects(selector: &Value, pod_labels: &BTreeMap<String, String>) -> bool {
    labels(selector)
        .iter()
        .all(|(k, v)| pod_labels.get(k) == Some(v))
}

#[test]
fn verifier_enabled_false_renders_none_of_it_and_typos_are_refused() {
    let on = render("x", "keymint-system", &[]);
    let kinds: Vec<&str> = verifier_objects(&on).into_iter().map(kind_of).collect();
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ] {
        assert!(kinds.contains(&kind), "no verifier {kind} in {kinds:?}");
    }
    let off = render(
        "x",
        "keymint-system",
        &[
            "--set",
            "verifier.enabled=false",
            "--set",
            "verifier.serviceMonitor.enabled=true",
        ],
    );
    let left: Vec<String> = off
        .iter()
        .filter(|o| {
            name_of(o).contains("verifier")
                || o["metadata"]["labels"]["app.kubernetes.io/component"] == "verifier"
        })
        .map(|o| format!("{} {}", kind_of(o), name_of(o)))
        .collect();
    assert!(left.is_empty(), "rendered with the verifier off: {left:?}");
    assert_eq!(off.len() + kinds.len(), on.len(), "the rest is unchanged");

    for values in [
        "verifier.enabled=false",
        "verifier.serviceMonitor.enabled=true,verifier.watchNamespace=payments",
    ] {
        let lint = helm(&["lint", "--strict", CHART, "--set", values])
            .unwrap_or_else(|e| panic!("helm lint --strict --set {values}: {e}"));
        assert!(lint.contains("0 chart(s) failed"), "{lint}");
    }
    let typo = helm(&["template", "x", CHART, "--set", "verifier.replicas=3"])
        .expect_err("an unknown verifier value is refused");
    assert!(typo.contains("replicas"), "{typo}");
    let port = helm(&["template", "x", CHART, "--set", "verifier.grpcPort=70000"])
        .expect_err("a port out of range is refused");
    assert!(port.contains("grpcPort"), "{port}");
}

#[test]
fn the_verifier_indexes_the_operators_watch_namespace_unless_told_otherwise() {
    let args_with = |values: &[&str]| {
        let objects = render("x", "keymint-system", values);
        container_args(find(&objects, "Deployment", "x-keymint-verifier"))
    };
    let narrowed = args_with(&["--set", "config.watchNamespace=payments"]);
    assert!(
        narrowed.contains(&"--watch-namespace=payments".to_string()),
        "{narrowed:?}"
    );
    let own = args_with(&[
        "--set",
        "config.watchNamespace=payments",
        "--set",
        "verifier.watchNamespace=shop",
    ]);
    assert!(
        own.contains(&"--watch-namespace=shop".to_string()),
        "{own:?}"
    );
    let all = args_with(&[]);
    assert!(
        !all.iter().any(|a| a.starts_with("--watch-namespace")),
        "{all:?}"
    );
}

#[tokio::test]
async fn the_verifier_is_its_own_deployment_service_and_budget() {
    let ns = TestNamespace::new("vchart").await;
    let release = release_name(&ns);
    let objects = render(&release, &ns.name, &[]);
    let name = format!("{release}-verifier");
    let deployment = find(&objects, "Deployment", &name);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        container_args(deployment),
        [
            "verifier",
            "--http-addr=0.0.0.0:8081",
            "--grpc-addr=0.0.0.0:9001",
            "--probe-addr=0.0.0.0:8082",
            "--log-format=json",
            "--max-staleness=30s",
            &format!("--owner-binding-policy={release}-owner-binding"),
        ]
    );
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["ports"],
        json!([
            {"name": "http", "containerPort": 8081, "protocol": "TCP"},
            {"name": "grpc", "containerPort": 9001, "protocol": "TCP"},
            {"name": "http-metrics", "containerPort": 8082, "protocol": "TCP"},
        ])
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            container[probe]["httpGet"],
            json!({"path": path, "port": "http-metrics"}),
            "probes have a port of their own"
        );
    }
    assert_eq!(pod["spec"]["serviceAccountName"], name.as_str());
    let service = find(&objects, "Service", &name);
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "http", "port": 8081, "targetPort": "http", "protocol": "TCP"},
            {"name": "grpc", "port": 9001, "targetPort": "grpc", "protocol": "TCP"},
            {"name": "http-metrics", "port": 8082, "targetPort": "http-metrics", "protocol": "TCP"},
        ])
    );
    let budget = find(&objects, "PodDisruptionBudget", &name);
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_selectors_apart(&objects, &release);

    // Everything the verifier adds is accepted by the API server.
    for object in verifier_objects(&objects) {
        dry_run(&ns.client, object, &ns.name).await;
    }
    ns.delete().await;
}

/// The verifier's selectors (Deployment, Service, budget) pick its pods and
/// no operator pod, and the operator's pick none of the verifier's:
/// otherwise the operator's Service would send scrapes to verifier pods and
/// its budget would count them.
fn assert_selectors_apart(objects: &[Value], release: &str) {
    let pod_labels =
        |deployment: &Value| labels(&deployment["spec"]["template"]["metadata"]["labels"]);
    let verifier = format!("{release}-verifier");
    let verifier_pod = pod_labels(find(objects, "Deployment", &verifier));
    let operator_pod = pod_labels(find(objects, "Deployment", release));
    let metrics = format!("{release}-metrics");
    for (kind, name) in [
        ("Deployment", verifier.as_str()),
        ("Service", &verifier),
        ("PodDisruptionBudget", &verifier),
    ] {
        let selector = selector_of(find(objects, kind, name));
        assert!(selects(selector, &verifier_pod), "verifier {kind}");
        assert!(!selects(selector, &operator_pod), "verifier {kind}");
    }
    for (kind, name) in [
        ("Deployment", release),
        ("Service", &metrics),
        ("PodDisruptionBudget", release),
    ] {
        let selector = selector_of(find(objects, kind, name));
        assert!(selects(selector, &operator_pod), "operator {kind}");
        assert!(!selects(selector, &verifier_pod), "operator {kind}");
    }
}

/// A workload's or budget's `matchLabels`, or a Service's selector.
fn selector_of(object: &Value) -> &Value {
    let selector = &object["spec"]["selector"];
    match selector.get("matchLabels") {
        Some(labels) => labels,
        None => selector,
    }
}

#[tokio::test]
async fn the_verifier_narrows_to_a_namespace_and_offers_a_service_monitor() {
    let ns = TestNamespace::new("vchartns").await;
    let release = release_name(&ns);
    let objects = render(
        &release,
        &ns.name,
        &[
            "--set",
            &format!("verifier.watchNamespace={}", ns.name),
            "--set",
            "verifier.serviceMonitor.enabled=true",
        ],
    );
    let name = format!("{release}-verifier");
    let args = container_args(find(&objects, "Deployment", &name));
    assert!(
        args.contains(&format!("--watch-namespace={}", ns.name)),
        "{args:?}"
    );
    let mine = verifier_objects(&objects);
    let kinds: Vec<&str> = mine.iter().map(|o| kind_of(o)).collect();
    assert!(
        kinds.contains(&"Role") && kinds.contains(&"RoleBinding"),
        "{kinds:?}"
    );
    // Cluster-wide, only reading the (cluster-scoped) admission policies,
    // to check the owner binding.
    let cluster_wide: Vec<&str> = mine
        .iter()
        .filter(|o| kind_of(o).starts_with("Cluster"))
        .map(|o| name_of(o))
        .collect();
    let reader = format!("{name}-read-owner-binding");
    assert_eq!(
        cluster_wide,
        [reader.as_str(), reader.as_str()],
        "no other cluster-wide rights with a watch namespace"
    );
    let monitor = find(&objects, "ServiceMonitor", &name);
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"], "http-metrics",
        "/metrics is on the probe port"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let service = find(&objects, "Service", &name);
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &labels(&service["metadata"]["labels"])
    ));
    // The ServiceMonitor's CRD belongs to prometheus-operator (absent here).
    for object in mine.iter().filter(|o| kind_of(o) != "ServiceMonitor") {
        dry_run(&ns.client, object, &ns.name).await;
    }
    ns.delete().await;
}

#[tokio::test]
async fn the_verifier_pod_meets_the_restricted_pod_security_standard() {
    let ns = TestNamespace::new("vpsa").await;
    enforce_restricted_pod_security(&ns).await;
    let release = release_name(&ns);
    let objects = render(&release, &ns.name, &[]);
    let name = format!("{release}-verifier");
    let deployment = find(&objects, "Deployment", &name);

    let warnings = dry_run_create_warnings(&ns.client, &ns.name, deployment).await;
    assert!(warnings.is_empty(), "PodSecurity warnings: {warnings:?}");
    create(
        &ns.client,
        find(&objects, "ServiceAccount", &name),
        &ns.name,
    )
    .await;
    let pods: Api<Pod> = ns.api();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    pods.create(&dry, &pod_from_template(deployment))
        .await
        .expect("a verifier Pod is admitted in a restricted namespace");
    // Control: the namespace really enforces.
    let mut weak = deployment.clone();
    weak["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] =
        json!({"add": ["NET_RAW"]});
    let err = pods
        .create(&dry, &pod_from_template(&weak))
        .await
        .expect_err("a Pod adding a capability is refused");
    assert!(err.to_string().contains("violates PodSecurity"), "{err}");
    ns.delete().await;
}

#[tokio::test]
async fn the_verifier_service_account_reads_api_keys_and_no_secrets() {
    let ns = TestNamespace::new("vrbac").await;
    let release = release_name(&ns);
    let objects = render(&release, &ns.name, &[]);
    let name = format!("{release}-verifier");
    let installed = install(&ns, &objects, &name).await;
    let (user, groups) = service_account_identity(&ns.name, &name);
    let mut wrong = Vec::new();
    for (check, expected) in &verifier_checks(&ns.name) {
        if may(&ns.client, &user, &groups, check).await != *expected {
            wrong.push(format!("{check:?}: expected allowed={expected}"));
        }
    }
    assert!(wrong.is_empty(), "RBAC differs:\n{}", wrong.join("\n"));

    // The same, for real, as the ServiceAccount: it lists and watches
    // ApiKeys in every namespace, and no Secret anywhere.
    let sa = control_plane().as_service_account(&ns.name, &name).await;
    Api::<ApiKey>::all(sa.clone())
        .list(&ListParams::default())
        .await
        .expect("the verifier lists ApiKeys in all namespaces");
    Api::<ApiKey>::all(sa.clone())
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .map(drop)
        .expect("and watches them");
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &ns.name);
    for (what, result) in [
        ("list", secrets.list(&ListParams::default()).await.map(drop)),
        ("get", secrets.get("anything").await.map(drop)),
        (
            "list in all namespaces",
            Api::<Secret>::all(sa)
                .list(&ListParams::default())
                .await
                .map(drop),
        ),
    ] {
        assert!(
            matches!(&result, Err(kube::Error::Api(s)) if s.code == 403),
            "{what}: {:?}",
            result.err()
        );
    }
    delete_cluster_scoped(&ns.client, &installed).await;
    ns.delete().await;
}

/// What the verifier's ServiceAccount may do (true) and may not (false),
/// `here` being its own namespace: read ApiKeys anywhere, and the admission
/// policies (to check the owner binding), nothing else.
fn verifier_checks(here: &str) -> Vec<(Check, bool)> {
    let (here, elsewhere) = (Some(here), Some("default"));
    let mut checks: Vec<(Check, bool)> = ["get", "list", "watch"]
        .into_iter()
        .flat_map(|verb| {
            [
                (Check::new(verb, "keymint.dev", "apikeys", None), true),
                (Check::new(verb, "keymint.dev", "apikeys", elsewhere), true),
                (Check::new(verb, "", "secrets", here), false),
                (Check::new(verb, "", "secrets", elsewhere), false),
                (Check::new(verb, "", "secrets", None), false),
                (Check::new(verb, "", "configmaps", here), false),
            ]
        })
        .collect();
    for verb in ["create", "update", "patch", "delete", "deletecollection"] {
        checks.push((Check::new(verb, "keymint.dev", "apikeys", elsewhere), false));
        checks.push((Check::new(verb, "", "secrets", here), false));
    }
    let status = Check::new("patch", "keymint.dev", "apikeys", elsewhere).sub("status");
    let impersonate = Check::new("impersonate-owner", "keymint.dev", "apikeys", elsewhere);
    checks.extend([
        (status, false),
        (impersonate, false),
        (Check::new("create", "events.k8s.io", "events", here), false),
        (
            Check::new("get", "coordination.k8s.io", "leases", here),
            false,
        ),
    ]);
    for resource in [
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    ] {
        for (verb, expected) in [
            ("get", true),
            ("list", true),
            ("create", false),
            ("update", false),
            ("delete", false),
        ] {
            let check = Check::new(verb, "admissionregistration.k8s.io", resource, None);
            checks.push((check, expected));
        }
    }
    checks
}

/// Creates the verifier's ServiceAccount and RBAC (named `name`) from the
/// rendering and waits until the authorizer has them; returns them.
async fn install<'a>(ns: &TestNamespace, objects: &'a [Value], name: &str) -> Vec<&'a Value> {
    let reader = format!("{name}-read-owner-binding");
    let installed: Vec<&Value> = verifier_objects(objects)
        .into_iter()
        .filter(|o| {
            ["ServiceAccount", "ClusterRole", "ClusterRoleBinding"].contains(&kind_of(o))
                && (name_of(o) == name || name_of(o) == reader)
        })
        .collect();
    assert_eq!(
        installed.len(),
        5,
        "ServiceAccount, ClusterRole(Binding), the owner binding's reader"
    );
    for object in &installed {
        create(&ns.client, object, &ns.name).await;
    }
    let (user, groups) = service_account_identity(&ns.name, name);
    let list = Check::new("list", "keymint.dev", "apikeys", None);
    let policies = Check::new(
        "list",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        None,
    );
    eventually(Duration::from_secs(30), || async {
        may(&ns.client, &user, &groups, &list).await
            && may(&ns.client, &user, &groups, &policies).await
    })
    .await;
    installed
}

/// The user and groups the API server gives a ServiceAccount's token.
fn service_account_identity(namespace: &str, name: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{namespace}:{name}"),
        vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_string(),
        ],
    )
}
