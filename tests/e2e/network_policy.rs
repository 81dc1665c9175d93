//! The chart's optional NetworkPolicies: none by default; when on, the
//! verifier's serving ports admit only the gateways' namespaces, and both
//! processes' probe and metrics port only the monitoring namespace; on
//! without gateway namespaces, the render fails and says why. Accepted by
//! the API server.

use serde_json::{Value, json};

use crate::support::TestNamespace;
use crate::support::chart::{CHART, helm, render};
use crate::support::manifests::{dry_run, find, kind_of, release_name};

/// The container port names of `deployment`'s first container.
fn port_names(deployment: &Value) -> Vec<&str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect()
}

/// Whether `policy` selects the pods of `deployment`.
fn selects(policy: &Value, deployment: &Value) -> bool {
    let wanted = policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    !wanted.is_empty() && wanted.iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn no_network_policy_unless_asked() {
    let objects = render("x", "keymint-system", &[]);
    assert!(!objects.iter().any(|o| kind_of(o) == "NetworkPolicy"));
}

#[test]
fn network_policies_without_gateway_namespaces_are_refused() {
    let refused = helm(&[
        "template",
        "x",
        CHART,
        "--set",
        "networkPolicy.enabled=true",
    ])
    .expect_err("a policy that would shut every gateway out");
    assert!(
        refused.contains("networkPolicy.gatewayNamespaces"),
        "{refused}"
    );
}

#[tokio::test]
async fn the_verifier_admits_the_gateways_and_both_processes_admit_monitoring_to_metrics() {
    let ns = TestNamespace::new("netpol").await;
    let release = release_name(&ns);
    let objects = render(
        &release,
        &ns.name,
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.gatewayNamespaces={ingress-nginx,istio-system}",
            "--set",
            "networkPolicy.monitoringNamespace=observability",
        ],
    );
    let monitoring = json!({"from": [{"namespaceSelector": {"matchLabels":
        {"kubernetes.io/metadata.name": "observability"}}}],
        "ports": [{"port": "http-metrics", "protocol": "TCP"}]});

    let verifier_name = format!("{release}-verifier");
    let verifier = find(&objects, "Deployment", &verifier_name);
    let policy = find(&objects, "NetworkPolicy", &verifier_name);
    assert!(selects(policy, verifier), "{policy}");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["ingress"],
        json!([
            {"from": [{"namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In",
                "values": ["ingress-nginx", "istio-system"]}]}}],
             "ports": [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}]},
            monitoring,
        ])
    );
    for port in ["http", "grpc", "http-metrics"] {
        assert!(
            port_names(verifier).contains(&port),
            "{port} is a verifier port"
        );
    }

    let operator = find(&objects, "Deployment", &release);
    let policy = find(&objects, "NetworkPolicy", &release);
    assert!(selects(policy, operator), "{policy}");
    assert!(
        !selects(policy, verifier),
        "the operator's policy leaves the verifier alone"
    );
    assert_eq!(policy["spec"]["ingress"], json!([monitoring]));
    assert!(port_names(operator).contains(&"http-metrics"));

    for policy in objects.iter().filter(|o| kind_of(o) == "NetworkPolicy") {
        dry_run(&ns.client, policy, &ns.name).await;
    }
    ns.delete().await;
}
