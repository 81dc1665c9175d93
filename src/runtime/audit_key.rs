//! The audit key (`audit::seal`), which seals the stream's own entries:
//! read once at start-up from the Secret `keymint-audit-key` in keymint's
//! own namespace — and created there, with 32 fresh random bytes, the first
//! time (`key_secret`). Its own Secret, not the provenance seal key's, so
//! that an auditor granted `get` on it (`keymint audit verify` needs it)
//! can check prunings without being able to forge a minted key's
//! provenance. Whoever may write the audit segments but not read this
//! Secret cannot forge a pruning.

use kube::Client;

use crate::apikey::provenance::{self, SealKeyError};
use crate::audit::AuditKey;
use crate::audit::seal::WrongLength;
use crate::runtime::key_secret::{KeySecret, KeySecretError};

/// The Secret that holds the audit key, in keymint's namespace.
pub const SECRET: KeySecret = KeySecret {
    name: "keymint-audit-key",
    data_key: "audit-key",
    what: "the audit key that seals prunings",
};

#[derive(Debug, thiserror::Error)]
pub enum AuditKeyLoadError {
    #[error(transparent)]
    Secret(#[from] KeySecretError),
    #[error("Secret {namespace}/{} holds no usable audit key in data.{}: {source}", SECRET.name, SECRET.data_key)]
    Invalid {
        namespace: String,
        #[source]
        source: WrongLength,
    },
    #[error("the audit key: {0}")]
    Entropy(SealKeyError),
}

/// The audit key: read, or created on first run (keymint).
pub async fn load(client: &Client, namespace: &str) -> Result<AuditKey, AuditKeyLoadError> {
    let fresh = provenance::fresh_key_bytes().map_err(AuditKeyLoadError::Entropy)?;
    let bytes = SECRET.load_or_create(client, namespace, &fresh).await?;
    parse(&bytes, namespace)
}

/// The audit key, read only (`keymint audit verify`).
pub async fn read(client: &Client, namespace: &str) -> Result<AuditKey, AuditKeyLoadError> {
    let bytes = SECRET.read(client, namespace).await?;
    parse(&bytes, namespace)
}

fn parse(bytes: &[u8], namespace: &str) -> Result<AuditKey, AuditKeyLoadError> {
    AuditKey::from_bytes(bytes).map_err(|source| AuditKeyLoadError::Invalid {
        namespace: namespace.to_string(),
        source,
    })
}
