//! The provenance seal key (`apikey::provenance`), read once at start-up
//! from the Secret `keymint-provenance` in keymint's own namespace — and
//! created there, with 32 fresh random bytes, the first time
//! (`key_secret`). Tenants never read keymint's namespace; the verifier
//! never needs the key. Minting costs no extra call: every seal is computed
//! in memory.

use kube::Client;

use crate::apikey::provenance::{self, SealKey, SealKeyError};
use crate::runtime::key_secret::{KeySecret, KeySecretError};

/// The Secret that holds the seal key, in keymint's namespace.
pub const SECRET: KeySecret = KeySecret {
    name: SECRET_NAME,
    data_key: DATA_KEY,
    what: "the provenance seal key",
};
pub const SECRET_NAME: &str = "keymint-provenance";
/// Its data key.
pub const DATA_KEY: &str = "seal-key";

#[derive(Debug, thiserror::Error)]
pub enum SealKeyLoadError {
    #[error(transparent)]
    Secret(#[from] KeySecretError),
    #[error(
        "Secret {namespace}/{SECRET_NAME} holds no usable provenance seal key in data.{DATA_KEY}: {source}"
    )]
    Invalid {
        namespace: String,
        #[source]
        source: SealKeyError,
    },
    #[error(transparent)]
    Entropy(SealKeyError),
}

/// The seal key: read, or created on first run.
pub async fn load(client: &Client, namespace: &str) -> Result<SealKey, SealKeyLoadError> {
    let fresh = provenance::fresh_key_bytes().map_err(SealKeyLoadError::Entropy)?;
    let bytes = SECRET.load_or_create(client, namespace, &fresh).await?;
    SealKey::from_bytes(&bytes).map_err(|source| SealKeyLoadError::Invalid {
        namespace: namespace.to_string(),
        source,
    })
}
