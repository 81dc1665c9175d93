//! Why the audit stream could not be read or written: one variant per
//! call, naming the segment ConfigMap and its namespace, with the API
//! server's error kept as the source (so a refusal and a timeout stay
//! apart) and shown in its own words.

use std::sync::Arc;

use crate::api_error::describe;

/// `Clone`, with the API error behind an `Arc`: one failed write fails
/// every request of its batch with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("cannot list the audit segment ConfigMaps in namespace {namespace}: {}", describe(.source))]
    List {
        namespace: String,
        #[source]
        source: Arc<kube::Error>,
    },
    #[error("cannot read audit segment ConfigMap {namespace}/{segment}: {}", describe(.source))]
    Read {
        namespace: String,
        segment: String,
        #[source]
        source: Arc<kube::Error>,
    },
    #[error("cannot write audit segment ConfigMap {namespace}/{segment}: {}", describe(.source))]
    Write {
        namespace: String,
        segment: String,
        #[source]
        source: Arc<kube::Error>,
    },
    #[error("cannot delete audit segment ConfigMap {namespace}/{segment}: {}", describe(.source))]
    Delete {
        namespace: String,
        segment: String,
        #[source]
        source: Arc<kube::Error>,
    },
    /// Every attempt of one batch lost the compare-and-swap race.
    #[error(
        "audit segment ConfigMap {namespace}/{segment} was changed by another writer before each of {attempts} writes"
    )]
    Contention {
        namespace: String,
        segment: String,
        attempts: usize,
    },
    #[error(
        "audit segment ConfigMap {namespace}/{segment} is unreadable ({reason}); run `keymint audit verify`"
    )]
    Corrupt {
        namespace: String,
        segment: String,
        reason: String,
    },
    #[error("the audit appender has stopped")]
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(
                "configmaps \"keymint-audit-0000000002\" is forbidden: User \"x\" cannot update resource \"configmaps\"",
                "Forbidden",
            )
            .with_code(403)
            .boxed(),
        )
    }

    #[test]
    fn errors_name_the_call_and_the_segment_and_keep_the_cause() {
        let e = AuditError::Write {
            namespace: "keymint-system".to_string(),
            segment: "keymint-audit-0000000002".to_string(),
            source: Arc::new(forbidden()),
        };
        let shown = e.to_string();
        assert!(
            shown.starts_with(
                "cannot write audit segment ConfigMap keymint-system/keymint-audit-0000000002: configmaps"
            ),
            "{shown}"
        );
        assert!(shown.ends_with("(403 Forbidden)"), "{shown}");
        assert!(!shown.contains("Status {"), "no debug dump: {shown}");
        let source = std::error::Error::source(&e).expect("the cause is kept");
        let cause = source
            .downcast_ref::<Arc<kube::Error>>()
            .expect("the API error");
        assert!(matches!(cause.as_ref(), kube::Error::Api(s) if s.code == 403));
    }
}
