//! The one rule for "may this namespace use this project": its grant lists
//! the project, or grants any. No grant, no project — a namespace is never
//! granted anything by its name or by whoever created it. Pure.

use std::collections::BTreeSet;

use super::resource::ProjectGrantSpec;

/// What a namespace's grant allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projects {
    /// `["*"]`: any project.
    Any,
    /// These projects only.
    Only(BTreeSet<String>),
}

/// A wildcard entry. The schema admits it only as the sole entry.
const ANY: &str = "*";

/// How many granted projects a refusal lists before it says "and N more":
/// the message lands in a status condition, an Event and an audit entry.
const LISTED: usize = 5;

impl Projects {
    /// What a grant's spec allows. A `*` anywhere means any project: the
    /// schema refuses it beside other entries, and reading it as "any" if
    /// one got in anyway is what its writer meant.
    pub fn of(spec: &ProjectGrantSpec) -> Projects {
        match spec.projects.iter().any(|p| p.0 == ANY) {
            true => Projects::Any,
            false => Projects::Only(spec.projects.iter().map(|p| p.0.clone()).collect()),
        }
    }

    fn allows(&self, project: &str) -> bool {
        match self {
            Projects::Any => true,
            Projects::Only(projects) => projects.contains(project),
        }
    }
}

/// Why a namespace may not use a project, in words that say how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotGranted {
    #[error(
        "project {project} is not granted to namespace {namespace}: the namespace has no ProjectGrant; a cluster admin grants it with a ProjectGrant named projects in namespace {namespace} listing {project} in spec.projects"
    )]
    NoGrant { namespace: String, project: String },
    #[error(
        "project {project} is not granted to namespace {namespace}: its ProjectGrant lists {listed}; a cluster admin adds {project} to spec.projects of ProjectGrant projects in namespace {namespace}"
    )]
    NotListed {
        namespace: String,
        project: String,
        listed: String,
    },
}

/// Whether `namespace`, whose grant is `granted` (None: it has none), may
/// use `project`.
pub fn check(namespace: &str, granted: Option<&Projects>, project: &str) -> Result<(), NotGranted> {
    match granted {
        Some(projects) if projects.allows(project) => Ok(()),
        Some(Projects::Only(projects)) => Err(NotGranted::NotListed {
            namespace: namespace.to_string(),
            project: project.to_string(),
            listed: listed(projects),
        }),
        // `Any` allows every project: only a missing grant is left.
        _ => Err(NotGranted::NoGrant {
            namespace: namespace.to_string(),
            project: project.to_string(),
        }),
    }
}

/// `billing, payments`, or `a, b, c, d, e and 3 more`.
fn listed(projects: &BTreeSet<String>) -> String {
    let shown: Vec<&str> = projects.iter().take(LISTED).map(String::as_str).collect();
    match projects.len().saturating_sub(LISTED) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::resource::GrantedProject;

    fn grant(projects: &[&str]) -> Projects {
        Projects::of(&ProjectGrantSpec {
            projects: projects
                .iter()
                .map(|p| GrantedProject(p.to_string()))
                .collect(),
        })
    }

    #[test]
    fn a_namespace_uses_the_projects_its_grant_lists_and_no_other() {
        let granted = grant(&["payments", "billing"]);
        assert_eq!(check("shop", Some(&granted), "payments"), Ok(()));
        assert_eq!(check("shop", Some(&granted), "billing"), Ok(()));
        let refused = check("shop", Some(&granted), "shop").expect_err("not listed");
        assert_eq!(
            refused.to_string(),
            "project shop is not granted to namespace shop: its ProjectGrant lists billing, payments; a cluster admin adds shop to spec.projects of ProjectGrant projects in namespace shop"
        );
    }

    #[test]
    fn without_a_grant_no_project_not_even_the_one_named_like_the_namespace() {
        let refused = check("payments", None, "payments").expect_err("no grant");
        assert_eq!(
            refused,
            NotGranted::NoGrant {
                namespace: "payments".into(),
                project: "payments".into()
            }
        );
        let words = refused.to_string();
        for expected in [
            "project payments is not granted to namespace payments",
            "has no ProjectGrant",
            "a cluster admin grants it with a ProjectGrant named projects in namespace payments",
        ] {
            assert!(words.contains(expected), "{expected:?} not in {words}");
        }
    }

    #[test]
    fn a_wildcard_grants_any_project() {
        let any = grant(&["*"]);
        assert_eq!(any, Projects::Any);
        assert_eq!(check("ns", Some(&any), "anything"), Ok(()));
        // Beside other entries (which the schema refuses) it still means any.
        assert_eq!(grant(&["payments", "*"]), Projects::Any);
    }

    #[test]
    fn a_long_grant_is_listed_in_part() {
        let many: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let refused = check("ns", Some(&grant(&many)), "other").expect_err("not listed");
        assert!(
            refused
                .to_string()
                .contains("lists p0, p1, p2, p3, p4 and 3 more;"),
            "{refused}"
        );
    }
}
