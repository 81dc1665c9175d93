//! The ProjectGrant CustomResourceDefinition that `keymint crd` prints and
//! `crds/projectgrants.keymint.dev.yaml` holds.

use super::ProjectGrant;

/// Where the generated CRD is committed; a unit test fails when it drifts.
pub const CRD_PATH: &str = "crds/projectgrants.keymint.dev.yaml";

/// The ProjectGrant CRD as YAML, exactly as committed under `crds/`.
pub fn yaml() -> Result<String, serde_norway::Error> {
    crate::crds::yaml::<ProjectGrant>()
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn committed_crd_matches_the_types() {
        crate::crds::assert_committed::<ProjectGrant>(CRD_PATH);
    }

    #[test]
    fn names_rules_and_columns_follow_the_design() {
        let crd = ProjectGrant::crd();
        assert_eq!(crd.spec.group, "keymint.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, "projectgrants");
        assert_eq!(crd.spec.names.categories, Some(vec!["keymint".to_string()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Projects", "Age"]);
        let schema = serde_json::to_value(&version.schema).expect("schema");
        let root = &schema["openAPIV3Schema"];
        assert_eq!(root["required"], serde_json::json!(["spec"]));
        let rules = root["x-kubernetes-validations"].to_string();
        assert!(
            rules.contains("self.metadata.name == 'projects'"),
            "{rules}"
        );
        let projects = &root["properties"]["spec"]["properties"]["projects"];
        assert_eq!(
            (projects["minItems"].as_u64(), projects["maxItems"].as_u64()),
            (Some(1), Some(256))
        );
        assert_eq!(projects["x-kubernetes-list-type"], "set");
        assert!(
            projects["x-kubernetes-validations"]
                .to_string()
                .contains("'*' in self")
        );
    }
}
