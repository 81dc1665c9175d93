//! Rendered chart objects as JSON values in tests: finding them in a
//! rendering, and dry-running, creating and deleting them through APIs found
//! by discovery.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::{self, Scope};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::TestNamespace;
use super::chart::render;

/// Renders the chart with the admission policy under `values` (its
/// `namespaceSelector`) bound to this test's namespace only: the cluster is
/// shared by parallel tests.
pub fn render_bound_to(
    ns: &TestNamespace,
    release: &str,
    values: &str,
    extra: &[&str],
) -> Vec<Value> {
    let selector = json!({"matchLabels": {"kubernetes.io/metadata.name": ns.name}});
    let bind = format!("{values}.namespaceSelector={selector}");
    let mut args = vec!["--set-json", bind.as_str()];
    args.extend_from_slice(extra);
    render(release, &ns.name, &args)
}

/// A release name of this test's own, so cluster-scoped objects never clash.
pub fn release_name(ns: &TestNamespace) -> String {
    let suffix = ns.name.rsplit('-').next().expect("suffix");
    format!("keymint-{suffix}")
}

pub fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().expect("kind")
}

pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind_of(o) == kind && name_of(o) == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

pub fn container_args(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// A Pod with the Deployment's pod template.
pub fn pod_from_template(deployment: &Value) -> Pod {
    let template = &deployment["spec"]["template"];
    serde_json::from_value(json!({
        "metadata": {"name": "keymint-probe", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }))
    .expect("a Pod")
}

/// The API for an arbitrary object, found by discovery.
pub async fn api_for(client: &Client, object: &Value, namespace: &str) -> Api<DynamicObject> {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind_of(object));
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discover {gvk:?}: {e}"));
    match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(namespace);
            Api::namespaced_with(client.clone(), ns, &resource)
        }
    }
}

/// Server-side dry run: created (or, for a CRD that already exists,
/// applied) with dryRun=All, so every admission step runs and nothing is
/// stored.
pub async fn dry_run(client: &Client, object: &Value, namespace: &str) {
    let api = api_for(client, object, namespace).await;
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).expect("object");
    let what = format!("{} {}", kind_of(object), name_of(object));
    let result = if kind_of(object) == "CustomResourceDefinition" {
        api.patch(
            name_of(object),
            &PatchParams::apply("keymint-tests").force().dry_run(),
            &Patch::Apply(&dynamic),
        )
        .await
    } else {
        api.create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &dynamic,
        )
        .await
    };
    if let Err(e) = result {
        panic!("the API server refused {what}: {e}");
    }
}

/// Creates the object for real.
pub async fn create(client: &Client, object: &Value, namespace: &str) {
    let api = api_for(client, object, namespace).await;
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).expect("object");
    api.create(&PostParams::default(), &dynamic)
        .await
        .unwrap_or_else(|e| panic!("create {} {}: {e}", kind_of(object), name_of(object)));
}

/// Deletes the cluster-scoped ones among `objects` (the namespace takes the
/// rest with it).
pub async fn delete_cluster_scoped(client: &Client, objects: &[&Value]) {
    for object in objects {
        if object["metadata"]["namespace"].is_null() && kind_of(object) != "ServiceAccount" {
            let api = api_for(client, object, "").await;
            api.delete(name_of(object), &DeleteParams::default())
                .await
                .unwrap_or_else(|e| panic!("delete {}: {e}", name_of(object)));
        }
    }
}

/// Creates `object` (a Deployment) with dryRun=All through a raw request, to
/// read the API server's Warning headers, where PodSecurity reports what a
/// workload's pod template would violate.
pub async fn dry_run_create_warnings(
    client: &Client,
    namespace: &str,
    object: &Value,
) -> Vec<String> {
    let request =
        kube::core::Request::new(format!("/apis/apps/v1/namespaces/{namespace}/deployments"))
            .create(
                &PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                serde_json::to_vec(object).expect("json"),
            )
            .expect("request");
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .expect("send");
    assert!(
        response.status().is_success(),
        "dry-run create of the Deployment: {}",
        response.status()
    );
    response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// Labels the test namespace to enforce (and warn about) the "restricted"
/// Pod Security Standard, latest version.
pub async fn enforce_restricted_pod_security(ns: &TestNamespace) {
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/warn-version": "latest",
            }}})),
        )
        .await
        .expect("label the namespace restricted");
}
