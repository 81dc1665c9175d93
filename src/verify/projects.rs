//! Which projects a check accepts, for every protocol alike. Pure.
//!
//! A check names its projects, always: a route that names none is refused
//! (it would otherwise let any tenant's key through), unless the verifier
//! runs with `--default-project` for a single-project deployment. `*` opts
//! into any project explicitly. Each protocol only says where its names
//! come from: the bare `/forward-auth`'s `?project=` parameters, the
//! prefixed route's `X-Keymint-Require-Project` header (set by the proxy),
//! the ext_authz `project` context extension, the `/v1/verify` body's
//! `"project"`. A value may list several projects, comma-separated.

use std::borrow::Cow;

/// The most projects one check may name: the list is the proxy's
/// configuration, so a longer one is a mistake or an attack.
pub const MAX_PROJECTS: usize = 16;

/// What opts a check into any project.
pub const ANY: &str = "*";

/// The one query parameter of the bare `/forward-auth`.
pub const PARAMETER: &str = "project";

/// The projects a check accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projects<'a> {
    /// `*`: any project (the route said so).
    Any,
    /// One of these; never empty.
    Named(Vec<Cow<'a, str>>),
}

impl Projects<'_> {
    /// Whether a key of `project` passes.
    #[must_use]
    pub fn accept(&self, project: &str) -> bool {
        match self {
            Projects::Any => true,
            Projects::Named(names) => names.iter().any(|p| p == project),
        }
    }
}

/// Where a protocol's check names its projects: said in every refusal, so
/// whoever configures the route knows what to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `?project=` of the bare `/forward-auth`.
    Query,
    /// `X-Keymint-Require-Project` on `/forward-auth/<original path>`.
    Header,
    /// The ext_authz route's `context_extensions`, key `project`.
    Extension,
    /// `"project"` in a `/v1/verify` body.
    Body,
}

impl Source {
    fn how(self) -> &'static str {
        match self {
            Source::Query => "?project=<name> (repeatable, or comma-separated)",
            Source::Header => {
                "the X-Keymint-Require-Project header, which the proxy must set (and never \
                 forward from the client)"
            }
            Source::Extension => "the route's ext_authz context_extensions, key \"project\"",
            Source::Body => "\"project\" in the body",
        }
    }
}

/// A check whose projects cannot be known: the route's configuration is
/// wrong, whatever the key (HTTP 400). Messages never quote a value the
/// client could have sent, beyond a short parameter name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "the route names no project: a check must name the project(s) it accepts in {}, or \"*\" for any project",
        .0.how()
    )]
    NotNamed(Source),
    #[error("an empty project name in {}", .0.how())]
    EmptyName(Source),
    #[error("at most {MAX_PROJECTS} projects may be named in one check")]
    TooMany,
    #[error("unknown parameter {0}: forward-auth takes only ?project=")]
    UnknownParameter(String),
}

/// The projects of the values `named` (each a comma-separated list) from
/// `source`; with no value at all, `default` (`--default-project`) or a
/// refusal.
pub fn accepted<'a>(
    source: Source,
    named: impl IntoIterator<Item = Cow<'a, str>>,
    default: Option<&'a str>,
) -> Result<Projects<'a>, RouteError> {
    // Every request passes here: one allocation (the list), none per name
    // unless the value itself was decoded into a new string.
    let mut names = Vec::new();
    let (mut any, mut seen) = (false, false);
    let mut take = |name: Cow<'a, str>| {
        if name.is_empty() {
            return Err(RouteError::EmptyName(source));
        }
        if name == ANY {
            any = true;
        } else if names.len() == MAX_PROJECTS {
            return Err(RouteError::TooMany);
        } else {
            names.push(name);
        }
        Ok(())
    };
    for value in named {
        seen = true;
        match value {
            Cow::Borrowed(text) => {
                for name in text.split(',') {
                    take(Cow::Borrowed(name.trim()))?;
                }
            }
            Cow::Owned(text) => {
                for name in text.split(',') {
                    take(Cow::Owned(name.trim().to_owned()))?;
                }
            }
        }
    }
    match (seen, any, default) {
        (_, true, _) => Ok(Projects::Any),
        (true, false, _) => Ok(Projects::Named(names)),
        (false, false, Some(default)) => Ok(Projects::Named(vec![Cow::Borrowed(default)])),
        (false, false, None) => Err(RouteError::NotNamed(source)),
    }
}

/// The projects of the bare `/forward-auth`'s query: `project` parameters
/// only, any other parameter (a misspelt `Project`, `projects`) refused
/// rather than ignored, since ignoring it would widen the route.
pub fn from_query<'a>(
    query: Option<&'a str>,
    default: Option<&'a str>,
) -> Result<Projects<'a>, RouteError> {
    let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes());
    if let Some((name, _)) = pairs.clone().find(|(name, _)| name != PARAMETER) {
        return Err(RouteError::UnknownParameter(shown(&name)));
    }
    accepted(Source::Query, pairs.map(|(_, value)| value), default)
}

/// A parameter name as a refusal may show it: a short name as it is, in
/// quotes; anything longer or stranger (it could be a key sent in the
/// wrong place) only described.
fn shown(name: &str) -> String {
    let plain = name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    match plain {
        true => format!("{name:?}"),
        false => "(a long or unusual name, not shown)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(names: &[&str]) -> Projects<'static> {
        Projects::Named(names.iter().map(|n| Cow::Owned((*n).to_owned())).collect())
    }

    fn values(list: &[&'static str]) -> Vec<Cow<'static, str>> {
        list.iter().map(|v| Cow::Borrowed(*v)).collect()
    }

    #[test]
    fn no_project_named_is_refused_on_every_source() {
        for source in [
            Source::Query,
            Source::Header,
            Source::Extension,
            Source::Body,
        ] {
            let refused = accepted(source, values(&[]), None);
            assert_eq!(refused, Err(RouteError::NotNamed(source)));
            let message = refused.map(|_| ()).unwrap_err().to_string();
            assert!(message.contains("names no project"), "{message}");
            assert!(message.contains("\"*\" for any"), "{message}");
        }
    }

    #[test]
    fn the_default_project_stands_in_only_when_none_is_named() {
        let default = Some("payments");
        assert_eq!(
            accepted(Source::Header, values(&[]), default),
            Ok(named(&["payments"]))
        );
        assert_eq!(
            accepted(Source::Header, values(&["billing"]), default),
            Ok(named(&["billing"]))
        );
        assert_eq!(
            accepted(Source::Header, values(&[""]), default),
            Err(RouteError::EmptyName(Source::Header)),
            "an empty value is a mistake, not an absence"
        );
    }

    #[test]
    fn a_star_means_any_project_and_only_a_star_does() {
        let any = accepted(Source::Extension, values(&["*"]), None);
        assert_eq!(any, Ok(Projects::Any));
        assert!(Projects::Any.accept("anything"));
        assert_eq!(
            accepted(Source::Extension, values(&["a", " * "]), None),
            Ok(Projects::Any)
        );
        let star_in_a_name = accepted(Source::Extension, values(&["pay*"]), None);
        assert_eq!(star_in_a_name, Ok(named(&["pay*"])));
        assert!(!named(&["pay*"]).accept("payments"));
    }

    #[test]
    fn names_are_comma_separated_trimmed_and_never_empty() {
        let projects = accepted(Source::Header, values(&[" a, b ", "c"]), None);
        assert_eq!(projects, Ok(named(&["a", "b", "c"])));
        let projects = projects.expect("named");
        assert!(projects.accept("b") && !projects.accept("d") && !projects.accept(""));
        for bad in ["", " ", "a,,b", "a,", ",a"] {
            assert_eq!(
                accepted(Source::Body, values(&[bad]), None),
                Err(RouteError::EmptyName(Source::Body)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn at_most_max_projects() {
        let list = vec!["p"; MAX_PROJECTS].join(",");
        assert!(accepted(Source::Body, [Cow::Owned(list.clone())], None).is_ok());
        let list = format!("{list},q");
        assert_eq!(
            accepted(Source::Body, [Cow::Owned(list)], None),
            Err(RouteError::TooMany)
        );
    }

    #[test]
    fn the_query_takes_project_parameters_only() {
        assert_eq!(
            from_query(Some("project=a&project=b%2Dc,d"), None),
            Ok(named(&["a", "b-c", "d"]))
        );
        assert_eq!(from_query(Some("project=%2A"), None), Ok(Projects::Any));
        assert_eq!(
            from_query(None, None),
            Err(RouteError::NotNamed(Source::Query))
        );
        assert_eq!(from_query(Some(""), Some("p")), Ok(named(&["p"])));
        assert_eq!(
            from_query(Some("project="), Some("p")),
            Err(RouteError::EmptyName(Source::Query))
        );
        for (query, name) in [
            ("Project=a", "Project"),
            ("project=a&projects=b", "projects"),
        ] {
            assert_eq!(
                from_query(Some(query), None),
                Err(RouteError::UnknownParameter(format!("{name:?}"))),
                "{query}"
            );
        }
        assert_eq!(
            from_query(Some("project"), None),
            Err(RouteError::EmptyName(Source::Query))
        );
        let message = from_query(Some("Project=a"), None)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(message.contains("\"Project\""), "{message}");
    }

    #[test]
    fn a_long_parameter_name_is_not_echoed() {
        let key_like = format!("kmk_{}", "A".repeat(49));
        let query = format!("{key_like}=1");
        let refused = from_query(Some(&query), None);
        let message = refused.map(|_| ()).unwrap_err().to_string();
        assert!(!message.contains(&key_like[4..]), "{message}");
        assert!(message.contains("not shown"), "{message}");
    }
}
