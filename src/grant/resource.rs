//! The `ProjectGrant` custom resource (`keymint.dev/v1alpha1`): the projects
//! the ApiKeys of one namespace may name. Written by cluster admins only —
//! no chart role aggregates it into `edit` or `admin`, so a tenant who may
//! create ApiKeys (or namespaces) cannot grant themselves a project.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The one name a grant may have: the admission policy looks its parameters
/// up by this name in the ApiKey's namespace, and keymint watches only it.
pub const GRANT_NAME: &str = "projects";

/// The projects one namespace's ApiKeys may name.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keymint.dev",
    version = "v1alpha1",
    kind = "ProjectGrant",
    namespaced,
    category = "keymint",
    doc = "The projects the ApiKeys of this namespace may name; written by cluster admins. One per namespace, named `projects`.",
    validation = Rule::new("self.metadata.name == 'projects'")
        .message("a ProjectGrant must be named projects (one per namespace: the admission policy and keymint read only that name)"),
    printcolumn(name = "Projects", type_ = "string", json_path = ".spec.projects"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectGrantSpec {
    /// The projects ApiKeys in this namespace may name (DNS labels), or
    /// exactly `["*"]` for any project. At most 256: a bound on what the
    /// admission policy and keymint search, far above what a namespace needs.
    #[schemars(length(min = 1, max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("!('*' in self) || size(self) == 1")
        .message("projects: \"*\" (any project) must be the only entry"))]
    pub projects: Vec<GrantedProject>,
}

/// A project a grant names: a DNS label (what `ApiKey.spec.project` must
/// be), or `*` for any.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct GrantedProject(
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = "^([*]|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$")
    )]
    pub String,
);
