//! keymint's own key Secrets, in its own namespace: read at start-up, and
//! created there with fresh random bytes the first time. Two replicas
//! starting at once both create; the API server keeps one, and the loser
//! reads it back. The Secrets are immutable: a changed key would prove
//! nothing keymint signed before. Used for the provenance seal key
//! (`seal_key`) and the audit key (`audit_key`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::api_error::describe;
use crate::apikey::secret::MANAGER;

/// One of keymint's key Secrets.
#[derive(Clone, Copy, Debug)]
pub struct KeySecret {
    /// The Secret's name.
    pub name: &'static str,
    /// The data key that holds the key.
    pub data_key: &'static str,
    /// What the key is, for messages ("the provenance seal key").
    pub what: &'static str,
}

/// Every key Secret keymint keeps in its namespace (none of them a minted
/// key's Secret).
pub const ALL: [&str; 2] = [
    crate::runtime::seal_key::SECRET.name,
    crate::runtime::audit_key::SECRET.name,
];

#[derive(Debug, thiserror::Error)]
pub enum KeySecretError {
    #[error("cannot read Secret {namespace}/{} ({}): {}", .secret.name, .secret.what, describe(.source))]
    Get {
        secret: KeySecret,
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{} ({}) does not exist", .secret.name, .secret.what)]
    Missing {
        secret: KeySecret,
        namespace: String,
    },
    #[error("cannot create Secret {namespace}/{} ({}): {}", .secret.name, .secret.what, describe(.source))]
    Create {
        secret: KeySecret,
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "Secret {namespace}/{} ({}) already existed when keymint created it, and was gone when it read it back: restart keymint",
        .secret.name, .secret.what
    )]
    Vanished {
        secret: KeySecret,
        namespace: String,
    },
}

impl KeySecret {
    /// The stored key bytes, or `fresh` stored as a new key if there is none.
    pub async fn load_or_create(
        &self,
        client: &Client,
        namespace: &str,
        fresh: &[u8],
    ) -> Result<Vec<u8>, KeySecretError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        if let Some(found) = self.get(&api, namespace).await? {
            return Ok(self.bytes(&found));
        }
        let params = PostParams {
            field_manager: Some(MANAGER.to_string()),
            ..PostParams::default()
        };
        match api.create(&params, &self.secret(fresh)).await {
            Ok(created) => Ok(self.bytes(&created)),
            Err(kube::Error::Api(s)) if s.code == 409 => match self.get(&api, namespace).await? {
                Some(found) => Ok(self.bytes(&found)),
                None => Err(KeySecretError::Vanished {
                    secret: *self,
                    namespace: namespace.to_string(),
                }),
            },
            Err(source) => Err(KeySecretError::Create {
                secret: *self,
                namespace: namespace.to_string(),
                source: Box::new(source),
            }),
        }
    }

    /// The stored key bytes; never creates the Secret.
    pub async fn read(&self, client: &Client, namespace: &str) -> Result<Vec<u8>, KeySecretError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        match self.get(&api, namespace).await? {
            Some(found) => Ok(self.bytes(&found)),
            None => Err(KeySecretError::Missing {
                secret: *self,
                namespace: namespace.to_string(),
            }),
        }
    }

    async fn get(
        &self,
        api: &Api<Secret>,
        namespace: &str,
    ) -> Result<Option<Secret>, KeySecretError> {
        api.get_opt(self.name)
            .await
            .map_err(|source| KeySecretError::Get {
                secret: *self,
                namespace: namespace.to_string(),
                source: Box::new(source),
            })
    }

    /// The bytes a stored Secret holds (empty if none: the caller's length
    /// check reports it).
    fn bytes(&self, secret: &Secret) -> Vec<u8> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(self.data_key))
            .map_or_else(Vec::new, |v| v.0.clone())
    }

    /// The Secret for a new key: immutable, so that it is never changed
    /// under keymint.
    fn secret(&self, bytes: &[u8]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                // No managed-by label: that one marks the Secrets of minted keys.
                name: Some(self.name.to_string()),
                ..ObjectMeta::default()
            },
            immutable: Some(true),
            data: Some(BTreeMap::from([(
                self.data_key.to_string(),
                ByteString(bytes.to_vec()),
            )])),
            ..Secret::default()
        }
    }
}
