//! Whether the owner binding is enforced, judged from the admission policy
//! and its bindings as fetched: the policy exists, fails closed, matches
//! every create, update and delete of an ApiKey, and at least one binding
//! denies (not merely warns or audits) with nothing left out — no namespace
//! or object selector, no excluded or narrowed resources. Anything less
//! leaves some ApiKeys whose `spec.owner` is whatever their creator wrote.

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The operations the owner binding judges.
const OPERATIONS: [&str; 3] = ["CREATE", "UPDATE", "DELETE"];

/// Why the owner binding is not enforced, in words an administrator acts on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Gap {
    #[error("the ValidatingAdmissionPolicy {policy} does not exist")]
    PolicyMissing { policy: String },
    #[error(
        "the ValidatingAdmissionPolicy {policy} has failurePolicy Ignore: requests pass unchecked whenever it cannot be evaluated"
    )]
    PolicyFailsOpen { policy: String },
    #[error("the ValidatingAdmissionPolicy {policy} leaves ApiKeys out: {what}")]
    PolicyLeavesOut { policy: String, what: String },
    #[error("no ValidatingAdmissionPolicyBinding binds the ValidatingAdmissionPolicy {policy}")]
    Unbound { policy: String },
    #[error(
        "no ValidatingAdmissionPolicyBinding of the ValidatingAdmissionPolicy {policy} denies for every ApiKey: {}", .bindings.join("; ")
    )]
    NotDenying {
        policy: String,
        /// Each binding of the policy and what it lacks.
        bindings: Vec<String>,
    },
}

/// Judges the policy named `policy` (`None`: not found) and every binding
/// in the cluster; `Ok` names a binding that enforces it.
pub fn judge(
    policy: &str,
    found: Option<&ValidatingAdmissionPolicy>,
    bindings: &[ValidatingAdmissionPolicyBinding],
) -> Result<String, Gap> {
    let Some(found) = found else {
        return Err(Gap::PolicyMissing {
            policy: policy.to_string(),
        });
    };
    let spec = found.spec.clone().unwrap_or_default();
    if spec.failure_policy.as_deref() == Some("Ignore") {
        return Err(Gap::PolicyFailsOpen {
            policy: policy.to_string(),
        });
    }
    let constraints = spec.match_constraints.unwrap_or_default();
    let left_out = leaves_out(&constraints, false).or_else(|| {
        spec.match_conditions
            .as_ref()
            .is_some_and(|c| !c.is_empty())
            .then(|| "its matchConditions skip some requests".to_string())
    });
    if let Some(what) = left_out {
        return Err(Gap::PolicyLeavesOut {
            policy: policy.to_string(),
            what,
        });
    }
    let mut lacking = Vec::new();
    for binding in bindings {
        let spec = &binding.spec;
        if spec.policy_name != policy {
            continue;
        }
        let name = binding.metadata.name.clone().unwrap_or_default();
        let lacks = match spec.validation_actions.iter().any(|a| a == "Deny") {
            false => Some(format!(
                "validationActions [{}] has no Deny",
                spec.validation_actions.join(", ")
            )),
            true => spec
                .match_resources
                .as_ref()
                .and_then(|m| leaves_out(m, true)),
        };
        match lacks {
            None => return Ok(name),
            Some(lacks) => lacking.push(format!("binding {name}: {lacks}")),
        }
    }
    match lacking.is_empty() {
        true => Err(Gap::Unbound {
            policy: policy.to_string(),
        }),
        false => Err(Gap::NotDenying {
            policy: policy.to_string(),
            bindings: lacking,
        }),
    }
}

/// What `resources` leaves out of the ApiKeys' creates, updates and
/// deletes, if anything. A binding's `resourceRules` may be empty (the
/// policy's apply); a policy's must cover them.
fn leaves_out(resources: &MatchResources, may_omit_rules: bool) -> Option<String> {
    if selects(resources.namespace_selector.as_ref()) {
        return Some("its namespaceSelector leaves namespaces out".to_string());
    }
    if selects(resources.object_selector.as_ref()) {
        return Some("its objectSelector leaves ApiKeys out".to_string());
    }
    if resources
        .exclude_resource_rules
        .as_ref()
        .is_some_and(|r| !r.is_empty())
    {
        return Some("its excludeResourceRules leave requests out".to_string());
    }
    let rules = resources.resource_rules.as_deref().unwrap_or_default();
    if may_omit_rules && rules.is_empty() {
        return None;
    }
    let uncovered: Vec<&str> = OPERATIONS
        .into_iter()
        .filter(|op| !rules.iter().any(|r| covers(r, op)))
        .collect();
    match uncovered.is_empty() {
        true => None,
        false => Some(format!(
            "its resourceRules do not match {} of apikeys.keymint.dev",
            uncovered.join(", ")
        )),
    }
}

/// A selector that is set and not empty selects some objects only.
fn selects(selector: Option<&LabelSelector>) -> bool {
    selector.is_some_and(|s| {
        s.match_labels.as_ref().is_some_and(|l| !l.is_empty())
            || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
    })
}

/// Whether `rule` matches `operation` on every ApiKey.
fn covers(rule: &NamedRuleWithOperations, operation: &str) -> bool {
    let has = |list: &Option<Vec<String>>, wanted: &[&str]| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|v| wanted.contains(&v.as_str())))
    };
    has(&rule.api_groups, &["keymint.dev", "*"])
        && has(&rule.api_versions, &["v1alpha1", "*"])
        && has(&rule.resources, &["apikeys", "*", "*/*"])
        && has(&rule.operations, &[operation, "*"])
        && rule.resource_names.as_ref().is_none_or(Vec::is_empty)
        && rule.scope.as_deref().is_none_or(|s| s != "Cluster")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    const POLICY: &str = "keymint-owner-binding";

    fn policy(spec: serde_json::Value) -> ValidatingAdmissionPolicy {
        let mut full = json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["keymint.dev"], "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE", "DELETE"], "resources": ["apikeys"],
            }]},
        });
        if let (Some(full), Some(spec)) = (full.as_object_mut(), spec.as_object()) {
            full.extend(spec.clone());
        }
        ValidatingAdmissionPolicy {
            metadata: ObjectMeta {
                name: Some(POLICY.into()),
                ..ObjectMeta::default()
            },
            spec: Some(
                serde_json::from_value::<ValidatingAdmissionPolicySpec>(full).expect("spec"),
            ),
            status: None,
        }
    }

    fn binding(name: &str, spec: serde_json::Value) -> ValidatingAdmissionPolicyBinding {
        let mut full = json!({"policyName": POLICY, "validationActions": ["Deny"]});
        if let (Some(full), Some(spec)) = (full.as_object_mut(), spec.as_object()) {
            full.extend(spec.clone());
        }
        ValidatingAdmissionPolicyBinding {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: serde_json::from_value::<ValidatingAdmissionPolicyBindingSpec>(full)
                .expect("spec"),
        }
    }

    fn gap(
        found: Option<&ValidatingAdmissionPolicy>,
        bindings: &[ValidatingAdmissionPolicyBinding],
    ) -> String {
        judge(POLICY, found, bindings)
            .expect_err("not enforced")
            .to_string()
    }

    #[test]
    fn the_charts_policy_with_a_denying_binding_is_enforced() {
        let bound = [binding("keymint-owner-binding", json!({}))];
        assert_eq!(
            judge(POLICY, Some(&policy(json!({}))), &bound),
            Ok("keymint-owner-binding".to_string())
        );
        // A selector that is present but empty selects everything; a
        // binding's own resourceRules may repeat the policy's.
        let bound = [binding(
            "everywhere",
            json!({"validationActions": ["Warn", "Deny"], "matchResources": {
                "namespaceSelector": {}, "objectSelector": {"matchLabels": {}},
                "resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                    "operations": ["*"], "resources": ["*"]}],
            }}),
        )];
        assert_eq!(
            judge(POLICY, Some(&policy(json!({}))), &bound),
            Ok("everywhere".to_string())
        );
        // failurePolicy defaults to Fail.
        let unset = policy(json!({"failurePolicy": null}));
        assert!(judge(POLICY, Some(&unset), &bound).is_ok());
    }

    #[test]
    fn a_missing_policy_or_binding_is_not_enforced() {
        let bound = [binding("b", json!({}))];
        assert_eq!(
            gap(None, &bound),
            "the ValidatingAdmissionPolicy keymint-owner-binding does not exist"
        );
        assert_eq!(
            gap(Some(&policy(json!({}))), &[]),
            "no ValidatingAdmissionPolicyBinding binds the ValidatingAdmissionPolicy keymint-owner-binding"
        );
        let elsewhere = [binding("other", json!({"policyName": "someone-elses"}))];
        assert!(
            gap(Some(&policy(json!({}))), &elsewhere)
                .starts_with("no ValidatingAdmissionPolicyBinding binds")
        );
    }

    #[test]
    fn a_binding_that_warns_or_leaves_namespaces_out_is_not_enough() {
        let found = policy(json!({}));
        let bindings = [
            binding("warns", json!({"validationActions": ["Warn", "Audit"]})),
            binding(
                "some-namespaces",
                json!({"matchResources": {"namespaceSelector": {"matchLabels": {"team": "a"}}}}),
            ),
            binding(
                "some-keys",
                json!({"matchResources": {"objectSelector": {"matchExpressions": [
                    {"key": "checked", "operator": "Exists"}]}}}),
            ),
            binding(
                "excludes",
                json!({"matchResources": {"excludeResourceRules": [{"apiGroups": ["keymint.dev"],
                    "apiVersions": ["*"], "operations": ["UPDATE"], "resources": ["apikeys"]}]}}),
            ),
            binding(
                "creates-only",
                json!({"matchResources": {"resourceRules": [{"apiGroups": ["keymint.dev"],
                    "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["apikeys"]}]}}),
            ),
        ];
        let words = gap(Some(&found), &bindings);
        for part in [
            "no ValidatingAdmissionPolicyBinding of the ValidatingAdmissionPolicy keymint-owner-binding denies for every ApiKey",
            "binding warns: validationActions [Warn, Audit] has no Deny",
            "binding some-namespaces: its namespaceSelector leaves namespaces out",
            "binding some-keys: its objectSelector leaves ApiKeys out",
            "binding excludes: its excludeResourceRules leave requests out",
            "binding creates-only: its resourceRules do not match UPDATE, DELETE of apikeys.keymint.dev",
        ] {
            assert!(words.contains(part), "{part:?} not in {words}");
        }
        // One enforcing binding among them is enough.
        let mut with_one = bindings.to_vec();
        with_one.push(binding("all", json!({})));
        assert_eq!(
            judge(POLICY, Some(&found), &with_one),
            Ok("all".to_string())
        );
    }

    #[test]
    fn a_policy_that_fails_open_or_matches_too_little_is_not_enforced() {
        let bound = [binding("b", json!({}))];
        assert!(
            gap(Some(&policy(json!({"failurePolicy": "Ignore"}))), &bound)
                .contains("failurePolicy Ignore")
        );
        let creates_only = policy(json!({"matchConstraints": {"resourceRules": [{
            "apiGroups": ["keymint.dev"], "apiVersions": ["*"],
            "operations": ["CREATE"], "resources": ["apikeys"]}]}}));
        assert!(gap(Some(&creates_only), &bound).contains("do not match UPDATE, DELETE"));
        let status_only = policy(json!({"matchConstraints": {"resourceRules": [{
            "apiGroups": ["keymint.dev"], "apiVersions": ["*"],
            "operations": ["*"], "resources": ["apikeys/status"]}]}}));
        assert!(gap(Some(&status_only), &bound).contains("do not match CREATE, UPDATE, DELETE"));
        let named = policy(json!({"matchConstraints": {"resourceRules": [{
            "apiGroups": ["keymint.dev"], "apiVersions": ["*"], "resourceNames": ["one"],
            "operations": ["*"], "resources": ["apikeys"]}]}}));
        assert!(gap(Some(&named), &bound).contains("resourceRules"));
        let selective = policy(json!({"matchConstraints": {
            "namespaceSelector": {"matchLabels": {"a": "b"}},
            "resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                "operations": ["*"], "resources": ["*"]}]}}));
        assert!(gap(Some(&selective), &bound).contains("namespaceSelector"));
        let conditional =
            policy(json!({"matchConditions": [{"name": "c", "expression": "false"}]}));
        assert!(gap(Some(&conditional), &bound).contains("matchConditions"));
    }
}
