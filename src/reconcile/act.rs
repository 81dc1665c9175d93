//! The API calls a reconcile makes on an ApiKey's Secret and status. Each
//! failure names its call and object ([`Error`]).

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::error::{Error, Object};
use super::own_writes::OwnWrites;
use crate::apikey::key::{self, MintedKey};
use crate::apikey::lifecycle::{self, Outcome};
use crate::apikey::provenance::SealKey;
use crate::apikey::secret::{self, MANAGER, Observed};
use crate::apikey::{ApiKey, ApiKeyStatus};

/// An ApiKey's Secret, under its deterministic name.
pub struct KeySecret<'a> {
    api: Api<Secret>,
    /// The ApiKeys of its namespace: a key's template is read from there
    /// when the cache did not keep it.
    api_keys: Api<ApiKey>,
    namespace: String,
    pub name: String,
    /// The ApiKey's UID: what the Secret's controller reference and seal
    /// must name.
    uid: String,
    /// Seals what is minted, proves what is found.
    seal_key: &'a SealKey,
}

/// What creating the Secret found.
pub enum Minted {
    /// Created: the key exists now, exactly once.
    Created {
        outcome: Outcome,
        observed: Observed,
    },
    /// A Secret with the name exists already: "already minted" if keymint
    /// proves it minted it for this ApiKey, a conflict if not — for
    /// `decide` to judge, never overwritten.
    Exists(Observed),
}

impl<'a> KeySecret<'a> {
    pub fn of(client: &Client, seal_key: &'a SealKey, api_key: &ApiKey) -> KeySecret<'a> {
        let namespace = api_key.namespace().unwrap_or_default();
        KeySecret {
            api: Api::namespaced(client.clone(), &namespace),
            api_keys: Api::namespaced(client.clone(), &namespace),
            namespace,
            name: secret::name(api_key),
            uid: api_key.uid().unwrap_or_default(),
            seal_key,
        }
    }

    fn object(&self) -> Object<'_> {
        Object {
            namespace: &self.namespace,
            name: &self.name,
        }
    }

    /// Reads and judges the Secret.
    pub async fn observe(&self) -> Result<Observed, Error> {
        let found = self.api.get_opt(&self.name).await;
        let found = found.map_err(|e| self.object().get_secret(e))?;
        Ok(secret::observe(found.as_ref(), &self.uid, self.seal_key))
    }

    /// Mints the key and creates its Secret: the commit point. The key is
    /// dropped if the Secret exists, never written anywhere.
    pub async fn mint(&self, api_key: &ApiKey) -> Result<Minted, Error> {
        let api_key = self.with_template(api_key).await?;
        let minted = key::mint()?;
        let params = PostParams {
            field_manager: Some(MANAGER.to_string()),
            ..PostParams::default()
        };
        let created = self
            .api
            .create(&params, &secret::build(&api_key, &minted, self.seal_key))
            .await;
        match created {
            Ok(created) => Ok(Minted::Created {
                outcome: active(&minted, &created),
                observed: secret::observe(Some(&created), &self.uid, self.seal_key),
            }),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Minted::Exists(self.observe().await?))
            }
            Err(e) => Err(self.object().create_secret(e)),
        }
    }

    /// The ApiKey with its `secretTemplate`. The controller's cache keeps
    /// the template only of a key about to mint (`lifecycle::about_to_mint`);
    /// one admitted later from the waiting line, or a Conflict whose Secret
    /// went away, has it read from the API server now — never taken as
    /// empty. An ApiKey gone or replaced (another UID) meanwhile mints
    /// nothing.
    async fn with_template<'k>(&self, api_key: &'k ApiKey) -> Result<Cow<'k, ApiKey>, Error> {
        if lifecycle::about_to_mint(api_key) {
            return Ok(Cow::Borrowed(api_key));
        }
        let name = api_key.name_any();
        let stored = match self.api_keys.get_opt(&name).await {
            Ok(Some(stored)) if stored.uid() == api_key.uid() => stored,
            Ok(_) => return Err(Error::Stale),
            Err(e) => {
                let object = Object {
                    namespace: &self.namespace,
                    name: &name,
                };
                return Err(object.get_api_key(e));
            }
        };
        let mut api_key = api_key.clone();
        api_key.spec.secret_template = stored.spec.secret_template;
        Ok(Cow::Owned(api_key))
    }

    /// Deletes the Secret only if it is still the one observed (same UID).
    pub async fn delete(&self, secret_uid: String) -> Result<(), Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(secret_uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by another Secret we must not touch.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(self.object().delete_secret(e)),
        }
    }
}

fn active(minted: &MintedKey, created: &Secret) -> Outcome {
    Outcome::Active {
        key_id: key::key_id(minted),
        key_hash: key::hash(minted),
        minted_at: created.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

/// Status fields a merge patch must clear explicitly when absent, so the
/// status becomes exactly the one written.
const STATUS_FIELDS: [&str; 8] = [
    "phase",
    "conditions",
    "observedGeneration",
    "keyId",
    "keyHash",
    "secretName",
    "mintedAt",
    "revealedAt",
];

/// Writes the whole status, against the observed resourceVersion: if the
/// cache was stale the write fails (and the reconcile is retried with the
/// newer object) instead of overwriting a newer status. The write is
/// expected, so that its echo on the watch is not reconciled again.
pub async fn write_status(
    client: &Client,
    own_writes: &OwnWrites,
    api_key: &ApiKey,
    status: &ApiKeyStatus,
) -> Result<(), Error> {
    let namespace = api_key.namespace().unwrap_or_default();
    let name = api_key.name_any();
    let api: Api<ApiKey> = Api::namespaced(client.clone(), &namespace);
    // Strings, integers, times and unit enums: serialising cannot fail.
    let mut body = serde_json::to_value(status).expect("a status always serialises");
    if let Value::Object(map) = &mut body {
        for field in STATUS_FIELDS {
            map.entry(field).or_insert(Value::Null);
        }
    }
    let patch = json!({
        "metadata": {"resourceVersion": api_key.resource_version()},
        "status": body,
    });
    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..PatchParams::default()
    };
    own_writes.expect(api_key, status);
    let result = api
        .patch_status(&name, &params, &Patch::Merge(&patch))
        .await;
    if result.is_err() {
        own_writes.forget(api_key);
    }
    match result {
        Ok(written) => {
            own_writes.written(api_key, written.resource_version());
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Stale),
        Err(e) => Err(Object {
            namespace: &namespace,
            name: &name,
        }
        .write_status(e)),
    }
}
