//! Start-up checks, before keymint reports ready: the ApiKey and
//! ProjectGrant CRDs serve the version keymint speaks, keymint's own and the audit namespace exist, and
//! every permission keymint needs is granted (one SelfSubjectAccessReview
//! per verb). A failed check is one readable line and a non-zero exit —
//! never a process that looks ready while every reconcile fails.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use crate::api_error::describe;
use crate::apikey::GuardedApiKey;
use crate::grant::ProjectGrant;
use crate::runtime::options::RunOptions;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "the ApiKey CRD (keymint.dev/v1alpha1) is not served; install it with `keymint crd | kubectl apply --server-side -f -`: {}", describe(.0)
    )]
    CrdMissing(#[source] kube::Error),
    #[error(
        "the ProjectGrant CRD (keymint.dev/v1alpha1) is not served, and keymint mints keys only for projects granted to their namespace; install it with `keymint crd | kubectl apply --server-side -f -`: {}", describe(.0)
    )]
    GrantCrdMissing(#[source] kube::Error),
    #[error(
        "namespace {0} does not exist: create it (`kubectl create namespace {0}`) or point --namespace / --audit-namespace at one that does"
    )]
    NamespaceMissing(String),
    #[error("keymint lacks permissions (grant them, as the Helm chart's RBAC does): {0}")]
    Forbidden(String),
    #[error("cannot check keymint's permissions (SelfSubjectAccessReview): {}", describe(.0))]
    Review(#[source] kube::Error),
    #[error("cannot check namespace {namespace}: {}", describe(.source))]
    Namespace {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// One permission keymint needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    /// None: every namespace (or a cluster-scoped resource).
    pub namespace: Option<String>,
    /// The one object it is needed for, where RBAC may name it (the Lease).
    pub name: Option<String>,
}

impl Need {
    /// `create secrets in namespace payments`, `patch apikeys/status in all namespaces`.
    fn describe(&self) -> String {
        let resource = match self.subresource {
            "" => self.resource.to_string(),
            sub => format!("{}/{sub}", self.resource),
        };
        let resource = match &self.name {
            Some(name) => format!("{resource} {name}"),
            None => resource,
        };
        match &self.namespace {
            Some(ns) => format!("{} {resource} in namespace {ns}", self.verb),
            None => format!("{} {resource} in all namespaces", self.verb),
        }
    }
}

/// Every permission `keymint run` with these options uses (the chart's RBAC
/// grants exactly these).
pub fn needs(options: &RunOptions) -> Vec<Need> {
    let watched = options.watch_namespace.clone();
    let own = Some(options.namespace.clone());
    let audit = Some(
        options
            .audit_namespace
            .clone()
            .unwrap_or_else(|| options.namespace.clone()),
    );
    let need = |verb, group, resource, subresource, namespace: &Option<String>| Need {
        verb,
        group,
        resource,
        subresource,
        namespace: namespace.clone(),
        name: None,
    };
    let mut out = Vec::new();
    for verb in ["get", "list", "watch", "patch", "update"] {
        out.push(need(verb, "keymint.dev", "apikeys", "", &watched));
    }
    // Read only: granting projects is for cluster admins.
    for verb in ["list", "watch"] {
        out.push(need(verb, "keymint.dev", "projectgrants", "", &watched));
    }
    out.push(need("patch", "keymint.dev", "apikeys", "status", &watched));
    for verb in ["get", "create", "delete"] {
        out.push(need(verb, "", "secrets", "", &watched));
    }
    // The provenance seal key and the audit key, in keymint's own
    // namespace: read at every start, created on the first
    // (`runtime::key_secret`).
    for name in crate::runtime::key_secret::ALL {
        out.push(Need {
            name: Some(name.to_string()),
            ..need("get", "", "secrets", "", &own)
        });
    }
    out.push(need("create", "", "secrets", "", &own));
    for verb in ["create", "patch"] {
        out.push(need(verb, "events.k8s.io", "events", "", &watched));
    }
    for namespace in [&own, &audit] {
        for verb in ["get", "list", "create", "update", "delete"] {
            out.push(need(verb, "", "configmaps", "", namespace));
        }
    }
    // The owner binding is read at start-up and every minute (`owner_binding`).
    out.push(Need {
        name: Some(options.owner_binding.owner_binding_policy.clone()),
        ..need(
            "get",
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
            "",
            &None,
        )
    });
    out.push(need(
        "list",
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        "",
        &None,
    ));
    if options.leader_elect {
        out.push(need("create", "coordination.k8s.io", "leases", "", &own));
        for verb in ["get", "update"] {
            out.push(Need {
                name: Some(options.lease_name.clone()),
                ..need(verb, "coordination.k8s.io", "leases", "", &own)
            });
        }
    }
    // The audit stream may share keymint's namespace: ask once.
    let mut unique: Vec<Need> = Vec::with_capacity(out.len());
    for need in out {
        if !unique.contains(&need) {
            unique.push(need);
        }
    }
    unique
}

/// Runs every check; the first that fails, in words.
pub async fn check(
    client: &Client,
    options: &RunOptions,
    api_keys: &Api<GuardedApiKey>,
    project_grants: &Api<ProjectGrant>,
) -> Result<(), PreflightError> {
    served(api_keys).await.map_err(PreflightError::CrdMissing)?;
    served(project_grants)
        .await
        .map_err(PreflightError::GrantCrdMissing)?;
    let audit = options
        .audit_namespace
        .as_ref()
        .unwrap_or(&options.namespace);
    for namespace in [&options.namespace, audit] {
        namespace_exists(client, namespace).await?;
    }
    // ~25 reviews: asked together, so start-up waits for one round trip.
    let needs = needs(options);
    let answers = futures::future::join_all(needs.iter().map(|n| allowed(client, n))).await;
    let mut missing = Vec::new();
    for (need, answer) in needs.iter().zip(answers) {
        if !answer? {
            missing.push(need.describe());
        }
    }
    match missing.is_empty() {
        true => Ok(()),
        false => Err(PreflightError::Forbidden(missing.join("; "))),
    }
}

/// Whether the API server serves `api`'s resource: a list of one. Forbidden
/// counts as served: the permission checks say which verbs are missing.
async fn served<K>(api: &Api<K>) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Checks that `namespace` exists — when keymint may look (the chart does
/// not grant reading namespaces: a pod's own namespace exists anyway).
async fn namespace_exists(client: &Client, namespace: &str) -> Result<(), PreflightError> {
    let may_look = Need {
        verb: "get",
        group: "",
        resource: "namespaces",
        subresource: "",
        namespace: None,
        name: Some(namespace.to_string()),
    };
    if !allowed(client, &may_look).await? {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(namespace).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(PreflightError::NamespaceMissing(namespace.to_string())),
        Err(source) => Err(PreflightError::Namespace {
            namespace: namespace.to_string(),
            source,
        }),
    }
}

async fn allowed(client: &Client, need: &Need) -> Result<bool, PreflightError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(need.verb.to_string()),
                group: Some(need.group.to_string()),
                resource: Some(need.resource.to_string()),
                subresource: Some(need.subresource.to_string()),
                namespace: need.namespace.clone(),
                name: need.name.clone(),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await;
    let answer = answer.map_err(PreflightError::Review)?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: RunOptions,
    }

    fn options(args: &[&str]) -> RunOptions {
        let mut all = vec!["keymint"];
        all.extend(args);
        Cli::parse_from(all).options
    }

    #[test]
    fn the_needs_follow_the_options_and_read_as_words() {
        let all = needs(&options(&[]));
        let words: Vec<String> = all.iter().map(Need::describe).collect();
        assert!(words.contains(&"create secrets in all namespaces".to_string()));
        assert!(words.contains(&"patch apikeys/status in all namespaces".to_string()));
        assert!(words.contains(&"watch projectgrants in all namespaces".to_string()));
        assert!(
            !words.iter().any(|w| w.contains("projectgrants")
                && !(w.starts_with("list ") || w.starts_with("watch "))),
            "projectgrants are read, never written"
        );
        assert!(words.contains(&"update configmaps in namespace keymint-system".to_string()));
        assert!(
            !words.iter().any(|w| w.contains("leases")),
            "no lease without election"
        );
        assert!(
            !words
                .iter()
                .any(|w| w.starts_with("list secrets") || w.starts_with("watch secrets"))
        );

        let scoped = needs(&options(&[
            "--watch-namespace=team",
            "--audit-namespace=audit",
            "--leader-elect=true",
        ]));
        let words: Vec<String> = scoped.iter().map(Need::describe).collect();
        assert!(words.contains(&"get secrets in namespace team".to_string()));
        assert!(words.contains(&"list projectgrants in namespace team".to_string()));
        assert!(words.contains(&"create configmaps in namespace audit".to_string()));
        assert!(words.contains(&"update leases keymint in namespace keymint-system".to_string()));
        assert!(words.contains(
            &"get validatingadmissionpolicies keymint-owner-binding in all namespaces".to_string()
        ));
        assert!(
            words.contains(&"list validatingadmissionpolicybindings in all namespaces".to_string())
        );
        assert!(
            words.contains(
                &"get secrets keymint-provenance in namespace keymint-system".to_string()
            )
        );
        assert!(words.contains(&"create secrets in namespace keymint-system".to_string()));
    }
}
