//! The CustomResourceDefinition that `keymint crd` prints and
//! `crds/apikeys.keymint.dev.yaml` holds.

use crate::apikey::ApiKey;

/// Where the generated CRD is committed; a unit test fails when it drifts.
pub const CRD_PATH: &str = "crds/apikeys.keymint.dev.yaml";

/// The ApiKey CRD as YAML, exactly as committed under `crds/`.
pub fn yaml() -> Result<String, serde_norway::Error> {
    crate::crds::yaml::<ApiKey>()
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn committed_crd_matches_the_types() {
        crate::crds::assert_committed::<ApiKey>(CRD_PATH);
    }

    /// Defaults in the schema would make the API server fill fields the user
    /// never wrote, and GitOps tools would report drift.
    #[test]
    fn schema_has_no_defaults() {
        fn walk(v: &serde_json::Value, path: &str, found: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, child) in map {
                        if k == "default" {
                            found.push(path.to_string());
                        }
                        walk(child, &format!("{path}.{k}"), found);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        walk(child, &format!("{path}[{i}]"), found);
                    }
                }
                _ => {}
            }
        }
        let crd = serde_json::to_value(ApiKey::crd()).expect("CRD serialises");
        let mut found = Vec::new();
        walk(&crd["spec"]["versions"], "versions", &mut found);
        assert!(found.is_empty(), "schema defaults at {found:?}");
    }

    #[test]
    fn names_and_columns_follow_the_design() {
        let crd = ApiKey::crd();
        assert_eq!(crd.spec.group, "keymint.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["ak".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["keymint".to_string()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Project", "Owner", "Phase", "Expires", "Key ID", "Age"]
        );
    }
}
