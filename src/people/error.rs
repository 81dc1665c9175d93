//! What went wrong, in words a person can act on: one line each. The API
//! server's answer is classified here (pure) from what the call was doing
//! and the status it returned.

use std::time::Duration;

use kube::core::Status;

/// The failures of the people's commands.
#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    #[error("no kubeconfig: {0}; set KUBECONFIG or pass --kubeconfig")]
    NoKubeconfig(String),
    #[error("cannot use the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("cannot reach the API server{at}: {reason}", at = at_server(.server))]
    Unreachable {
        server: Option<String>,
        reason: String,
    },
    #[error(
        "the API server refused your credentials (401): log in again or check the kubeconfig's user"
    )]
    Unauthenticated,
    #[error("no permission to {verb} {resource}{where_}: {message}", where_ = in_namespace(.namespace))]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        namespace: Option<String>,
        message: String,
    },
    #[error(
        "the ApiKey CRD (apikeys.keymint.dev) is not installed in this cluster: install keymint's chart, or `keymint crd | kubectl apply --server-side -f -`"
    )]
    CrdMissing,
    #[error("refused by the API server: {0}")]
    Refused(String),
    #[error("ApiKey {name} not found in namespace {namespace}")]
    NotFound { name: String, namespace: String },
    #[error("ApiKey {name} already exists in namespace {namespace}: pick another name")]
    AlreadyExists { name: String, namespace: String },
    #[error("{verb} {resource} failed: {message}")]
    Api {
        verb: &'static str,
        resource: &'static str,
        message: String,
    },
    #[error("the API server did not say who you are (SelfSubjectReview without a username)")]
    NoIdentity,
    #[error("--expires {0}")]
    Expires(String),
    #[error("{0}")]
    NotCreated(String),
    #[error(
        "keymint did not answer within {}: ApiKey {name} has no status{removed} — is the keymint operator running?",
        humantime::format_duration(*.waited)
    )]
    NotRunning {
        name: String,
        waited: Duration,
        removed: String,
    },
    #[error("refusing to delete ApiKey {0} without --yes: standard input is not a terminal")]
    NotConfirmed(String),
    #[error("ApiKey {0} not deleted")]
    Declined(String),
    #[error("Secret {secret} does not hold the key keymint minted for ApiKey {name}: {reason}")]
    BadSecret {
        name: String,
        secret: String,
        reason: String,
    },
    #[error(
        "Secret {secret} in namespace {namespace} was deleted but is still there: finalizer(s) {finalizers} hold it, key and all, for anyone who may read Secrets there — so the key was not printed. Find out who added the finalizer, remove it (kubectl patch secret {secret} -n {namespace} --type=json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]'), then create a new key"
    )]
    SecretHeld {
        secret: String,
        namespace: String,
        finalizers: String,
    },
    #[error("the show-once key of ApiKey {name} was not shown: {reason}{removed}")]
    NotShown {
        name: String,
        reason: String,
        removed: String,
    },
    #[error(
        "the key above was shown, but recording that you saw it failed ({reason}); within keymint's reveal window run `kubectl annotate apikey {name} -n {namespace} keymint.dev/revealed={key_id}`, or keymint records the key as never shown and it stops verifying"
    )]
    NotAcknowledged {
        name: String,
        namespace: String,
        key_id: String,
        reason: String,
    },
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl PeopleError {
    /// Names the API server in an [`PeopleError::Unreachable`].
    pub fn at_server(self, url: &str) -> PeopleError {
        match self {
            PeopleError::Unreachable { reason, .. } => PeopleError::Unreachable {
                server: Some(url.to_string()),
                reason,
            },
            other => other,
        }
    }
}

fn at_server(server: &Option<String>) -> String {
    server
        .as_deref()
        .map(|s| format!(" at {s}"))
        .unwrap_or_default()
}

fn in_namespace(namespace: &Option<String>) -> String {
    namespace
        .as_deref()
        .map(|n| format!(" in namespace {n}"))
        .unwrap_or_default()
}

/// What a failed call was doing: the words of its error.
#[derive(Clone, Debug)]
pub struct Call {
    pub verb: &'static str,
    /// `apikeys.keymint.dev`, `secrets`, ...
    pub resource: &'static str,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

pub const API_KEYS: &str = "apikeys.keymint.dev";

impl Call {
    pub fn new(verb: &'static str, resource: &'static str) -> Call {
        Call {
            verb,
            resource,
            name: None,
            namespace: None,
        }
    }

    pub fn named(mut self, name: &str) -> Call {
        self.name = Some(name.to_string());
        self
    }

    pub fn in_namespace(mut self, namespace: &str) -> Call {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// The error of this call failing with `error`.
    pub fn failed(self, error: kube::Error) -> PeopleError {
        match error {
            kube::Error::Api(status) => self.refused_with(&status),
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => {
                PeopleError::Unreachable {
                    server: None,
                    reason: with_sources(&e),
                }
            }
            e @ kube::Error::Auth(_) => {
                PeopleError::Kubeconfig(format!("cannot get credentials: {}", with_sources(&e)))
            }
            other => PeopleError::Api {
                verb: self.verb,
                resource: self.resource,
                message: with_sources(&other),
            },
        }
    }

    /// The error of this call answered with `status`. An admission refusal
    /// and a missing permission are both 403: the admission's message says
    /// "denied request" (policies, webhooks), the authorizer's does not.
    pub fn refused_with(self, status: &Status) -> PeopleError {
        let message = status.message.clone();
        match status.code {
            401 => PeopleError::Unauthenticated,
            403 if is_admission(&message) => PeopleError::Refused(message),
            403 => PeopleError::Forbidden {
                verb: self.verb,
                resource: self.resource,
                namespace: self.namespace,
                message,
            },
            // A resource type the server does not serve answers a bare 404
            // ("404 page not found"; discovery says "could not find the
            // requested resource"); a missing object names itself instead.
            404 if message.contains("page not found")
                || message.contains("could not find the requested resource") =>
            {
                PeopleError::CrdMissing
            }
            404 if self.resource == API_KEYS && self.name.is_some() => PeopleError::NotFound {
                name: self.name.unwrap_or_default(),
                namespace: self.namespace.unwrap_or_default(),
            },
            409 if status.reason == "AlreadyExists" && self.resource == API_KEYS => {
                PeopleError::AlreadyExists {
                    name: self.name.unwrap_or_default(),
                    namespace: self.namespace.unwrap_or_default(),
                }
            }
            400 | 422 => PeopleError::Refused(message),
            _ => PeopleError::Api {
                verb: self.verb,
                resource: self.resource,
                message,
            },
        }
    }
}

/// An error and its causes on one line: kube's transport errors say what
/// failed only in their sources ("client error (Connect)" ... "Connection
/// refused").
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

fn is_admission(message: &str) -> bool {
    message.contains("denied request") || message.contains("admission webhook")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> Status {
        let mut s = Status::failure(message, reason);
        s.code = code;
        s
    }

    fn create_key() -> Call {
        Call::new("create", API_KEYS)
            .named("demo")
            .in_namespace("payments")
    }

    #[test]
    fn a_missing_permission_names_the_verb_and_resource() {
        let e = create_key().refused_with(&status(
            403,
            "Forbidden",
            r#"apikeys.keymint.dev is forbidden: User "bob" cannot create resource "apikeys" in API group "keymint.dev" in the namespace "payments""#,
        ));
        let line = e.to_string();
        assert!(
            line.starts_with("no permission to create apikeys.keymint.dev in namespace payments: "),
            "{line}"
        );
        assert!(line.contains(r#"User "bob""#), "{line}");
    }

    #[test]
    fn an_admission_refusal_is_the_servers_message() {
        let message = "apikeys.keymint.dev \"demo\" is forbidden: ValidatingAdmissionPolicy 'keymint-owner-binding' with binding 'keymint-owner-binding' denied request: only the owner may delete";
        let e = create_key().refused_with(&status(403, "Forbidden", message));
        assert_eq!(
            e.to_string(),
            format!("refused by the API server: {message}")
        );
        let invalid = "ApiKey.keymint.dev \"demo\" is invalid: spec.project: Invalid value";
        let e = create_key().refused_with(&status(422, "Invalid", invalid));
        assert_eq!(
            e.to_string(),
            format!("refused by the API server: {invalid}")
        );
    }

    #[test]
    fn a_resource_the_server_does_not_serve_is_a_missing_crd() {
        let e = Call::new("list", API_KEYS)
            .in_namespace("x")
            .refused_with(&status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        assert!(matches!(e, PeopleError::CrdMissing), "{e}");
        let e = create_key().refused_with(&status(
            404,
            "NotFound",
            r#"apikeys.keymint.dev "demo" not found"#,
        ));
        assert_eq!(e.to_string(), "ApiKey demo not found in namespace payments");
    }

    #[test]
    fn other_answers_keep_the_call_and_message() {
        let e = create_key().refused_with(&status(409, "AlreadyExists", "exists"));
        assert!(e.to_string().contains("already exists"), "{e}");
        let e = create_key().refused_with(&status(500, "InternalError", "etcd is down"));
        assert_eq!(
            e.to_string(),
            "create apikeys.keymint.dev failed: etcd is down"
        );
        let e = create_key().refused_with(&status(401, "Unauthorized", "Unauthorized"));
        assert!(matches!(e, PeopleError::Unauthenticated));
    }
}
