//! The grants as keymint last watched them: each namespace's projects. A
//! slot request and the batch admission that admits a pair's other waiting
//! keys both ask here, by the one rule (`rule::check`). Pure: the watch
//! that fills it is `runtime::grants`.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::rule::{self, NotGranted, Projects};
use crate::apikey::ApiKey;

/// Each namespace's grant. A namespace missing here has none.
#[derive(Default)]
pub struct Grants {
    by_namespace: RwLock<HashMap<String, Projects>>,
}

impl Grants {
    /// Whether `api_key`'s namespace may use its project.
    pub fn check(&self, api_key: &ApiKey) -> Result<(), NotGranted> {
        let namespace = api_key.metadata.namespace.as_deref().unwrap_or_default();
        let grants = self.read();
        rule::check(namespace, grants.get(namespace), &api_key.spec.project)
    }

    /// Sets (or with None, removes) one namespace's grant; whether that
    /// changed what it allows.
    pub fn set(&self, namespace: &str, projects: Option<Projects>) -> bool {
        let mut grants = self.write();
        match projects {
            Some(projects) => {
                grants
                    .insert(namespace.to_string(), projects.clone())
                    .as_ref()
                    != Some(&projects)
            }
            None => grants.remove(namespace).is_some(),
        }
    }

    /// Replaces every grant with a complete list (a relist); returns the
    /// namespaces whose grant changed, added or went away.
    pub fn replace(&self, listed: HashMap<String, Projects>) -> Vec<String> {
        let mut grants = self.write();
        let mut changed: Vec<String> = grants
            .iter()
            .filter(|(namespace, projects)| listed.get(*namespace) != Some(*projects))
            .map(|(namespace, _)| namespace.clone())
            .collect();
        changed.extend(
            listed
                .keys()
                .filter(|namespace| !grants.contains_key(*namespace))
                .cloned(),
        );
        *grants = listed;
        changed.sort();
        changed
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Projects>> {
        self.by_namespace.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, Projects>> {
        self.by_namespace.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::ApiKeySpec;

    fn key(namespace: &str, project: &str) -> ApiKey {
        let mut key = ApiKey::new(
            "k",
            ApiKeySpec {
                project: project.into(),
                owner: "alice@example.com".into(),
                description: None,
                expires_at: None,
                secret_name: None,
                secret_template: None,
                show_once: None,
            },
        );
        key.metadata.namespace = Some(namespace.into());
        key
    }

    fn only(projects: &[&str]) -> Projects {
        Projects::Only(projects.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn a_key_is_checked_against_its_own_namespaces_grant() {
        let grants = Grants::default();
        assert!(grants.check(&key("shop", "shop")).is_err(), "no grant yet");
        assert!(grants.set("shop", Some(only(&["payments"]))));
        assert!(grants.check(&key("shop", "payments")).is_ok());
        assert!(grants.check(&key("other", "payments")).is_err());
        assert!(!grants.set("shop", Some(only(&["payments"]))), "unchanged");
        assert!(grants.set("shop", None));
        assert!(!grants.set("shop", None), "nothing to remove");
        assert!(grants.check(&key("shop", "payments")).is_err());
    }

    #[test]
    fn a_relist_reports_the_namespaces_whose_grant_changed() {
        let grants = Grants::default();
        grants.set("same", Some(Projects::Any));
        grants.set("narrowed", Some(only(&["a", "b"])));
        grants.set("gone", Some(Projects::Any));
        let listed = HashMap::from([
            ("same".to_string(), Projects::Any),
            ("narrowed".to_string(), only(&["a"])),
            ("new".to_string(), only(&["c"])),
        ]);
        assert_eq!(grants.replace(listed), ["gone", "narrowed", "new"]);
        assert!(grants.check(&key("new", "c")).is_ok());
        assert!(grants.check(&key("gone", "c")).is_err());
    }
}
