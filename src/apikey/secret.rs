//! The Secret that holds a minted key: how it is built and how an observed
//! Secret is judged. Pure: no API calls.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::apikey::ApiKey;
use crate::apikey::key::{self, MintedKey};

/// Data key that holds the key, as DESIGN.md names it.
pub const DATA_KEY: &str = "api-key";
/// Secret type: says what the Secret is to anyone listing Secrets.
pub const SECRET_TYPE: &str = "keymint.dev/api-key";

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "keymint";
/// Label naming the ApiKey (names are at most 63 characters, so they fit).
pub const LABEL_API_KEY: &str = "keymint.dev/api-key";
pub const ANNOTATION_KEY_ID: &str = "keymint.dev/key-id";
pub const ANNOTATION_KEY_HASH: &str = "keymint.dev/key-hash";

/// The Secret's name: `spec.secretName`, or the ApiKey's own name.
pub fn name(api_key: &ApiKey) -> String {
    api_key
        .spec
        .secret_name
        .clone()
        .unwrap_or_else(|| api_key.name_any())
}

/// The Secret for a freshly minted key. It is created once and never
/// updated: `immutable` makes the API server refuse any change to its data,
/// so the only way to alter it is to delete it, which keymint detects.
pub fn build(api_key: &ApiKey, minted: &MintedKey) -> Secret {
    let key_id = key::key_id(minted);
    let template = api_key.spec.secret_template.clone().unwrap_or_default();
    // Template first, keymint's own keys last: ours win (the schema already
    // refuses `keymint.dev/` keys in the template; managed-by is ours too).
    let mut labels: BTreeMap<String, String> = template
        .labels
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    labels.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    labels.insert(LABEL_API_KEY.into(), api_key.name_any());
    let mut annotations: BTreeMap<String, String> = template
        .annotations
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    annotations.insert(ANNOTATION_KEY_ID.into(), key_id.clone());
    annotations.insert(ANNOTATION_KEY_HASH.into(), key::hash(minted));

    let data = BTreeMap::from([
        (
            DATA_KEY.to_string(),
            ByteString(minted.expose().as_bytes().to_vec()),
        ),
        ("key-id".to_string(), ByteString(key_id.into_bytes())),
        (
            "project".to_string(),
            ByteString(api_key.spec.project.clone().into_bytes()),
        ),
        (
            "owner".to_string(),
            ByteString(api_key.spec.owner.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name(api_key)),
            namespace: api_key.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: api_key.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.into()),
        immutable: Some(true),
        data: Some(data),
        ..Secret::default()
    }
}

/// What keymint finds under the Secret's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// No Secret with that name.
    Missing,
    /// A Secret controlled by this ApiKey (owner reference with its UID).
    Ours {
        /// `sha256:` of what `data.api-key` holds now; None if it is gone.
        content_hash: Option<String>,
        /// The hash recorded on the Secret when it was minted.
        annotated_hash: Option<String>,
        /// The Secret's UID, to delete exactly this Secret and no other.
        uid: Option<String>,
        /// The key id recorded on the Secret, and when it was created: what
        /// adopting a Secret whose status was never written needs.
        key_id: Option<String>,
        created: Option<jiff::Timestamp>,
    },
    /// A Secret with that name that this ApiKey does not control.
    Foreign,
}

/// Judges a Secret found under the target name for the ApiKey with `uid`.
pub fn observe(secret: Option<&Secret>, api_key_uid: &str) -> Observed {
    let Some(secret) = secret else {
        return Observed::Missing;
    };
    let ours = secret
        .owner_references()
        .iter()
        .any(|r| is_controller_ref_to(r, api_key_uid));
    if !ours {
        return Observed::Foreign;
    }
    Observed::Ours {
        content_hash: secret
            .data
            .as_ref()
            .and_then(|d| d.get(DATA_KEY))
            .map(|v| key::hash_bytes(&v.0)),
        annotated_hash: secret.annotations().get(ANNOTATION_KEY_HASH).cloned(),
        uid: secret.uid(),
        key_id: secret.annotations().get(ANNOTATION_KEY_ID).cloned(),
        created: secret.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

fn is_controller_ref_to(r: &OwnerReference, uid: &str) -> bool {
    r.controller == Some(true) && r.uid == uid && r.kind == ApiKey::kind(&())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::{AnnotationValue, ApiKeySpec, LabelValue, SecretTemplate};

    fn api_key() -> ApiKey {
        let mut k = ApiKey::new(
            "ci-deploy",
            ApiKeySpec {
                project: "payments".into(),
                owner: "alice@example.com".into(),
                description: None,
                expires_at: None,
                secret_name: None,
                show_once: None,
                secret_template: Some(SecretTemplate {
                    labels: Some(BTreeMap::from([(
                        "team".into(),
                        LabelValue("payments".into()),
                    )])),
                    annotations: Some(BTreeMap::from([(
                        "example.com/note".into(),
                        AnnotationValue("hi".into()),
                    )])),
                }),
            },
        );
        k.metadata.namespace = Some("payments".into());
        k.metadata.uid = Some("uid-1".into());
        k
    }

    #[test]
    fn secret_name_defaults_to_the_api_key_name() {
        let mut k = api_key();
        assert_eq!(name(&k), "ci-deploy");
        k.spec.secret_name = Some("payments-ci".into());
        assert_eq!(name(&k), "payments-ci");
    }

    #[test]
    fn built_secret_carries_key_ownership_and_metadata() {
        let k = api_key();
        let minted = key::mint().expect("mint");
        let s = build(&k, &minted);
        assert_eq!(s.metadata.name.as_deref(), Some("ci-deploy"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("payments"));
        assert_eq!(s.immutable, Some(true));
        let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
        let labels = s.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["team"], "payments");
        assert_eq!(labels[LABEL_API_KEY], "ci-deploy");
        assert_eq!(labels[LABEL_MANAGED_BY], "keymint");
        let annotations = s.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations["example.com/note"], "hi");
        assert_eq!(annotations[ANNOTATION_KEY_HASH], key::hash(&minted));
        let data = s.data.as_ref().expect("data");
        assert_eq!(data[DATA_KEY].0, minted.expose().as_bytes());
        assert_eq!(
            observe(Some(&s), "uid-1"),
            Observed::Ours {
                content_hash: Some(key::hash(&minted)),
                annotated_hash: Some(key::hash(&minted)),
                uid: None,
                key_id: Some(key::key_id(&minted)),
                created: None,
            }
        );
    }

    #[test]
    fn a_secret_of_another_owner_is_foreign() {
        let k = api_key();
        let s = build(&k, &key::mint().expect("mint"));
        assert_eq!(observe(Some(&s), "uid-2"), Observed::Foreign);
        let mut plain = s.clone();
        plain.metadata.owner_references = None;
        assert_eq!(observe(Some(&plain), "uid-1"), Observed::Foreign);
        assert_eq!(observe(None, "uid-1"), Observed::Missing);
    }

    #[test]
    fn changed_content_shows_in_the_content_hash() {
        let k = api_key();
        let minted = key::mint().expect("mint");
        let mut s = build(&k, &minted);
        s.data
            .as_mut()
            .expect("data")
            .insert(DATA_KEY.into(), ByteString(b"something else".to_vec()));
        let Observed::Ours {
            content_hash,
            annotated_hash,
            ..
        } = observe(Some(&s), "uid-1")
        else {
            panic!("ours");
        };
        assert_ne!(content_hash, annotated_hash);
    }
}
