//! The Helm chart in tests: rendering it with the helm built from its Go
//! module, and giving every test namespace the operator's ServiceAccount with
//! exactly the chart's RBAC — so the whole suite runs keymint with the
//! privileges it gets in production, never as cluster admin.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{REPO, eventually};

pub const CHART: &str = "charts/keymint";

pub fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let path = Path::new(REPO).join("target/controlplane/bin/helm");
        if !path.exists() {
            eprintln!("building helm (first run only; see tests/tools/build.sh)");
            let status = Command::new(Path::new(REPO).join("tests/tools/build.sh"))
                .status()
                .expect("run tests/tools/build.sh");
            assert!(status.success(), "building helm failed");
        }
        path
    })
}

/// Runs helm in the repository; stdout on success, stderr on failure.
pub fn helm(args: &[&str]) -> Result<String, String> {
    let output = Command::new(helm_binary())
        .args(args)
        .current_dir(REPO)
        .output()
        .expect("run helm");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `helm template` of the chart as `release` into `namespace`: the objects.
pub fn render(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    args.extend_from_slice(extra);
    let yaml = helm(&args).unwrap_or_else(|e| panic!("helm template: {e}"));
    serde_norway::Deserializer::from_str(&yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The release the suite's operator of `namespace` belongs to; also the
/// name of its ServiceAccount, roles and bindings (unique per namespace, so
/// cluster-scoped objects never clash).
pub fn operator_release(namespace: &str) -> String {
    let suffix = namespace.rsplit('-').next().unwrap_or(namespace);
    format!("keymint-op-{suffix}")
}

/// The user and groups the API server gives that ServiceAccount's token.
pub fn operator_identity(namespace: &str) -> (String, Vec<String>) {
    (
        format!(
            "system:serviceaccount:{namespace}:{}",
            operator_release(namespace)
        ),
        vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_string(),
        ],
    )
}

/// Creates the operator's ServiceAccount and the chart's RBAC for it, with
/// `namespace` as the release namespace, and waits until the authorizer
/// applies it.
pub async fn install_operator_rbac(client: &Client, namespace: &str) {
    let release = operator_release(namespace);
    let objects = render(&release, namespace, &[]);
    let wanted = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    // Its own roles, and the cluster-wide one that reads the owner binding.
    let names = [release.clone(), format!("{release}-read-owner-binding")];
    let mut installed = 0;
    for object in &objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        if !wanted.contains(&kind) || !names.iter().any(|n| n == name) {
            continue;
        }
        let api = api_for(client, object, namespace);
        let object: DynamicObject = serde_json::from_value(object.clone()).expect("object");
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => installed += 1,
            Err(kube::Error::Api(s)) if s.code == 409 => installed += 1,
            Err(e) => panic!("install the operator's {kind}: {e}"),
        }
    }
    assert_eq!(
        installed, 7,
        "ServiceAccount, ClusterRole(Binding), Role(Binding), ClusterRole(Binding) reading the owner binding"
    );
    let (user, groups) = operator_identity(namespace);
    let policies = super::access::Check::new(
        "list",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        None,
    );
    eventually(Duration::from_secs(30), || async {
        allowed(client, &user, &groups, "secrets", namespace).await
            && allowed(client, &user, &groups, "configmaps", namespace).await
            && super::access::may(client, &user, &groups, &policies).await
    })
    .await;
}

/// Whether `user` may create `resource` in `namespace` (core group).
async fn allowed(
    client: &Client,
    user: &str,
    groups: &[String],
    resource: &str,
    namespace: &str,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("create".into()),
                resource: Some(resource.into()),
                namespace: Some(namespace.into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed)
}

/// Gives `user` in `namespace` the chart's ApiKey edit role — the rules the
/// chart aggregates into the built-in `edit` — as a Role in that namespace
/// with the rendered rules, and waits until the authorizer applies it.
/// Aggregating it for real would change what `edit` means for every other
/// test in the run.
pub async fn grant_apikey_edit(client: &Client, namespace: &str, user: &str) {
    let release = "keymint-tenant";
    let edit = format!("{release}-edit");
    let rules = render(
        release,
        namespace,
        &["--set", "rbac.aggregateToDefaultRoles=false"],
    )
    .into_iter()
    .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == edit.as_str())
    .unwrap_or_else(|| panic!("no ClusterRole {edit} in the chart"))["rules"]
        .clone();
    let role: Role = serde_json::from_value(json!({
        "metadata": {"generateName": "keymint-edit-"},
        "rules": rules,
    }))
    .expect("a Role");
    let role = Api::<Role>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| panic!("create the chart's ApiKey edit Role in {namespace}: {e}"));
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"generateName": "keymint-edit-"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("bind {user} to the ApiKey edit Role in {namespace}: {e}"));
    let groups = ["system:authenticated".to_string()];
    let keys = super::access::Check::new("create", "keymint.dev", "apikeys", Some(namespace));
    eventually(Duration::from_secs(30), || async {
        super::access::may(client, user, &groups, &keys).await
    })
    .await;
}

fn api_for(client: &Client, object: &Value, namespace: &str) -> Api<DynamicObject> {
    let (group, version) = match object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .split_once('/')
    {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            object["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
    };
    let kind = object["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "ServiceAccount" => "serviceaccounts",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        other => panic!("unexpected kind {other}"),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), plural);
    if kind.starts_with("Cluster") {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), namespace, &resource)
    }
}

/// A kubeconfig that is the admin one, impersonating the operator's
/// ServiceAccount of `namespace`: written next to the operator logs.
pub fn operator_kubeconfig(admin: &Path, dir: &Path, namespace: &str) -> PathBuf {
    let (user, groups) = operator_identity(namespace);
    let admin = std::fs::read_to_string(admin).expect("kubeconfig");
    let mut kubeconfig: Value = serde_norway::from_str(&admin).expect("kubeconfig YAML");
    for entry in kubeconfig["users"].as_array_mut().expect("users") {
        entry["user"]["as"] = Value::String(user.clone());
        entry["user"]["as-groups"] =
            Value::Array(groups.iter().cloned().map(Value::String).collect());
    }
    let path = dir.join(format!("{namespace}-operator.kubeconfig"));
    std::fs::write(&path, serde_norway::to_string(&kubeconfig).expect("YAML"))
        .expect("write kubeconfig");
    path
}
