//! The provenance seal key (`apikey::provenance`), read once at start-up
//! from the Secret `keymint-provenance` in keymint's own namespace — and
//! created there, with 32 fresh random bytes, the first time. Tenants never
//! read keymint's namespace; the verifier never needs the key. Minting
//! costs no extra call: every seal is computed in memory.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::api_error::describe;
use crate::apikey::provenance::{self, SealKey, SealKeyError};
use crate::apikey::secret::MANAGER;

/// The Secret that holds the seal key, in keymint's namespace.
pub const SECRET_NAME: &str = "keymint-provenance";
/// Its data key.
pub const DATA_KEY: &str = "seal-key";

#[derive(Debug, thiserror::Error)]
pub enum SealKeyLoadError {
    #[error("cannot read Secret {namespace}/{SECRET_NAME} (the provenance seal key): {}", describe(.source))]
    Get {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot create Secret {namespace}/{SECRET_NAME} (the provenance seal key): {}", describe(.source))]
    Create {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{SECRET_NAME} holds no usable provenance seal key in data.{DATA_KEY}: {source}"
    )]
    Invalid {
        namespace: String,
        #[source]
        source: SealKeyError,
    },
    #[error(
        "Secret {namespace}/{SECRET_NAME} (the provenance seal key) already existed when keymint created it, and was gone when it read it back: restart keymint"
    )]
    Vanished { namespace: String },
    #[error(transparent)]
    Entropy(SealKeyError),
}

/// The seal key: read, or created on first run. Two replicas starting at
/// once both create; the API server keeps one, and the loser reads it back.
pub async fn load(client: &Client, namespace: &str) -> Result<SealKey, SealKeyLoadError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(found) = get(&api, namespace).await? {
        return read(&found, namespace);
    }
    let bytes = provenance::fresh_key_bytes().map_err(SealKeyLoadError::Entropy)?;
    let params = PostParams {
        field_manager: Some(MANAGER.to_string()),
        ..PostParams::default()
    };
    match api.create(&params, &secret(&bytes)).await {
        Ok(created) => read(&created, namespace),
        Err(kube::Error::Api(s)) if s.code == 409 => match get(&api, namespace).await? {
            Some(found) => read(&found, namespace),
            None => Err(SealKeyLoadError::Vanished {
                namespace: namespace.to_string(),
            }),
        },
        Err(source) => Err(SealKeyLoadError::Create {
            namespace: namespace.to_string(),
            source,
        }),
    }
}

async fn get(api: &Api<Secret>, namespace: &str) -> Result<Option<Secret>, SealKeyLoadError> {
    api.get_opt(SECRET_NAME)
        .await
        .map_err(|source| SealKeyLoadError::Get {
            namespace: namespace.to_string(),
            source,
        })
}

/// The key a stored Secret holds.
fn read(secret: &Secret, namespace: &str) -> Result<SealKey, SealKeyLoadError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .map_or(&[][..], |v| v.0.as_slice());
    SealKey::from_bytes(bytes).map_err(|source| SealKeyLoadError::Invalid {
        namespace: namespace.to_string(),
        source,
    })
}

/// The Secret for a new seal key: immutable, so that it is never changed
/// under keymint (a changed key would prove nothing keymint sealed before).
fn secret(bytes: &[u8]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            // No managed-by label: that one marks the Secrets of minted keys.
            name: Some(SECRET_NAME.to_string()),
            ..ObjectMeta::default()
        },
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            DATA_KEY.to_string(),
            ByteString(bytes.to_vec()),
        )])),
        ..Secret::default()
    }
}
