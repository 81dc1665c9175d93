//! Authorization questions in tests: what the API server's authorizer
//! allows a user, asked with SubjectAccessReviews.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

use super::eventually;

/// One authorization question for a SubjectAccessReview.
#[derive(Debug)]
pub struct Check {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Check {
    pub fn new(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Check {
        Check {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: namespace.map(Into::into),
            name: None,
        }
    }

    pub fn sub(mut self, subresource: &str) -> Check {
        self.subresource = Some(subresource.into());
        self
    }

    pub fn name(mut self, name: &str) -> Check {
        self.name = Some(name.into());
        self
    }
}

/// Whether the API server's authorizer allows `user` (in `groups`) `check`.
pub async fn may(client: &Client, user: &str, groups: &[String], check: &Check) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(check.verb.clone()),
                group: Some(check.group.clone()),
                resource: Some(check.resource.clone()),
                subresource: check.subresource.clone(),
                namespace: check.namespace.clone(),
                name: check.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// Binds `user` to the built-in `edit` ClusterRole in `namespace` (a
/// RoleBinding: what a tenant is given in their own namespace) and waits
/// until the authorizer applies it. The test control plane runs the role
/// aggregation controller, so this is the real `edit` with its Secret and
/// ConfigMap rights; no test installs a chart that aggregates keymint's
/// roles into it, so it grants nothing on ApiKeys.
pub async fn grant_edit(client: &Client, namespace: &str, user: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"generateName": "edit-"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("bind {user} to edit in {namespace}: {e}"));
    let groups = ["system:authenticated".to_string()];
    let secrets = Check::new("create", "", "secrets", Some(namespace));
    eventually(Duration::from_secs(30), || async {
        may(client, user, &groups, &secrets).await
    })
    .await;
}
