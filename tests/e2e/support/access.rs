//! Authorization questions in tests: what the API server's authorizer
//! allows a user, asked with SubjectAccessReviews.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

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
