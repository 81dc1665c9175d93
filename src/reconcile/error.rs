//! Why a reconcile failed: one variant per call, each naming the call and
//! the object in words (the API server's own message, not a debug dump),
//! grouped into a bounded set of categories for Event reasons, condition
//! reasons and metric labels.

use crate::api_error::describe;
use crate::apikey::key::KeyError;
use crate::audit::AuditError;
use crate::quota::slots::SlotError;
use crate::quota::store::LedgerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read Secret {object}: {}", describe(.source))]
    GetSecret {
        /// `namespace/name`.
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot create Secret {object}: {}", describe(.source))]
    CreateSecret {
        /// `namespace/name`.
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot delete Secret {object}: {}", describe(.source))]
    DeleteSecret {
        /// `namespace/name`.
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot read ApiKey {object} for its secretTemplate: {}", describe(.source))]
    GetApiKey {
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot write the status of ApiKey {object}: {}", describe(.source))]
    WriteStatus {
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot {verb} the finalizer of ApiKey {object}: {}", describe(.source))]
    Finalizer {
        verb: &'static str,
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("the finalizer of ApiKey {0} could not be handled: {1}")]
    FinalizerRefused(String, String),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("cannot mint a key: {0}")]
    Mint(#[from] KeyError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The ApiKey changed since it was read (a stale cache): try again with
    /// the newer version, without backing off.
    #[error("the ApiKey changed while it was being reconciled")]
    Stale,
}

/// What kind of failure it is: bounded and stable, for Event reasons,
/// condition reasons and the `category` metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// A call to the API server failed (refused, forbidden, unreachable).
    KubernetesApi,
    /// Another writer changed a quota ledger at the same time: retry now.
    LedgerContention,
    /// A quota ledger's data cannot be read: a person must repair it.
    LedgerUnreadable,
    /// The operating system gave no random bytes.
    MintFailed,
    /// The audit stream could not be appended to.
    AuditStream,
    /// keymint's finalizer could not be added or removed.
    Finalizer,
    /// The object changed under the reconcile: retry now.
    Stale,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::KubernetesApi => "KubernetesApi",
            Category::LedgerContention => "LedgerContention",
            Category::LedgerUnreadable => "LedgerUnreadable",
            Category::MintFailed => "MintFailed",
            Category::AuditStream => "AuditStream",
            Category::Finalizer => "Finalizer",
            Category::Stale => "Stale",
        }
    }

    /// Whether the failure resolves itself in a moment (a race): retried at
    /// once, not backed off, not reported.
    pub fn is_race(self) -> bool {
        matches!(self, Category::LedgerContention | Category::Stale)
    }
}

impl Error {
    pub fn category(&self) -> Category {
        match self {
            Error::GetSecret { .. }
            | Error::CreateSecret { .. }
            | Error::DeleteSecret { .. }
            | Error::WriteStatus { .. }
            | Error::GetApiKey { .. }
            | Error::Slot(SlotError::GetApiKey { .. } | SlotError::ListApiKeys { .. }) => {
                Category::KubernetesApi
            }
            Error::Slot(SlotError::Ledger(e)) => ledger_category(e),
            Error::Finalizer { .. } | Error::FinalizerRefused(..) => Category::Finalizer,
            Error::Mint(_) => Category::MintFailed,
            // Lost every compare-and-swap to another writer: a race.
            Error::Audit(AuditError::Contention { .. }) => Category::Stale,
            Error::Audit(_) => Category::AuditStream,
            Error::Stale => Category::Stale,
        }
    }
}

fn ledger_category(error: &LedgerError) -> Category {
    match error {
        LedgerError::Conflict(_) => Category::LedgerContention,
        LedgerError::Corrupt { .. } => Category::LedgerUnreadable,
        LedgerError::Read { .. } | LedgerError::Write { .. } => Category::KubernetesApi,
    }
}

/// The object a call was about, to name it when the call fails.
pub(crate) struct Object<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

impl Object<'_> {
    fn named(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn get_secret(&self, source: kube::Error) -> Error {
        Error::GetSecret {
            object: self.named(),
            source: Box::new(source),
        }
    }

    pub fn create_secret(&self, source: kube::Error) -> Error {
        Error::CreateSecret {
            object: self.named(),
            source: Box::new(source),
        }
    }

    pub fn delete_secret(&self, source: kube::Error) -> Error {
        Error::DeleteSecret {
            object: self.named(),
            source: Box::new(source),
        }
    }

    pub fn get_api_key(&self, source: kube::Error) -> Error {
        Error::GetApiKey {
            object: self.named(),
            source: Box::new(source),
        }
    }

    pub fn write_status(&self, source: kube::Error) -> Error {
        Error::WriteStatus {
            object: self.named(),
            source: Box::new(source),
        }
    }

    pub fn finalizer(&self, verb: &'static str, source: kube::Error) -> Error {
        Error::Finalizer {
            verb,
            object: self.named(),
            source: Box::new(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_found() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(r#"namespaces "x" not found"#, "NotFound")
                .with_code(404)
                .boxed(),
        )
    }

    #[test]
    fn a_failed_call_reads_as_a_sentence_naming_call_and_object() {
        let object = Object {
            namespace: "payments",
            name: "ci",
        };
        let message = object.create_secret(not_found()).to_string();
        assert_eq!(
            message,
            r#"cannot create Secret payments/ci: namespaces "x" not found (404 NotFound)"#
        );
        assert!(!message.contains("Status {"), "no debug dump: {message}");
    }

    #[test]
    fn categories_follow_what_failed() {
        let object = Object {
            namespace: "n",
            name: "k",
        };
        assert_eq!(
            object.get_secret(not_found()).category(),
            Category::KubernetesApi
        );
        let contention = Error::Slot(SlotError::Ledger(LedgerError::Conflict("l".into())));
        assert_eq!(contention.category(), Category::LedgerContention);
        assert!(contention.category().is_race());
        let corrupt = Error::Slot(SlotError::Ledger(LedgerError::Corrupt {
            name: "l".into(),
            reason: "r".into(),
        }));
        assert_eq!(corrupt.category().as_str(), "LedgerUnreadable");
        assert!(!corrupt.category().is_race());
    }
}
