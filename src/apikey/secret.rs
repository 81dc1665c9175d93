//! The Secret that holds a minted key: how it is built and how an observed
//! Secret is judged. Pure: no API calls.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::apikey::ApiKey;
use crate::apikey::key::{self, MintedKey};
use crate::apikey::provenance::{self, SealKey};

/// Data key that holds the key: what workloads read.
pub const DATA_KEY: &str = "api-key";
/// Secret type: says what the Secret is to anyone listing Secrets.
pub const SECRET_TYPE: &str = "keymint.dev/api-key";

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "keymint";
/// Label naming the ApiKey (names are at most 63 characters, so they fit).
pub const LABEL_API_KEY: &str = "keymint.dev/api-key";
/// Key id and hash, for humans and secret scanners. Never read back: a
/// tenant may write anything here (keymint reads the key itself).
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
/// so the only way to alter it is to delete it, which keymint detects. It
/// carries the seal that proves keymint minted it for this ApiKey
/// (`provenance`): computed here, in memory, at no extra API call.
pub fn build(api_key: &ApiKey, minted: &MintedKey, seal_key: &SealKey) -> Secret {
    let key_id = key::key_id(minted);
    let key_hash = key::hash(minted);
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
    annotations.insert(
        provenance::ANNOTATION.into(),
        seal_key.seal(&api_key.uid().unwrap_or_default(), &key_hash),
    );
    annotations.insert(ANNOTATION_KEY_ID.into(), key_id.clone());
    annotations.insert(ANNOTATION_KEY_HASH.into(), key_hash);

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
    /// A Secret whose controller ownerReference names this ApiKey. That
    /// alone proves nothing (the UID is public): `proven` says whether
    /// keymint minted what it holds.
    Controlled {
        /// `sha256:` of what `data.api-key` holds now; None if it is gone.
        content_hash: Option<String>,
        /// The key it holds, if its seal proves keymint minted that key for
        /// this ApiKey: what adopting a Secret whose status was never
        /// written needs.
        proven: Option<ProvenKey>,
        /// The Secret's UID, to delete exactly this Secret and no other.
        uid: Option<String>,
    },
    /// A Secret with that name that this ApiKey does not control.
    Foreign,
}

/// A key keymint proved it minted for this ApiKey, as read from the key
/// itself (never from an annotation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenKey {
    pub key_id: String,
    pub key_hash: String,
    /// When its Secret was created: when the key was minted.
    pub created: Option<jiff::Timestamp>,
}

/// Judges a Secret found under the target name for the ApiKey with `uid`.
/// Hash and key id come from the content; annotations other than the seal
/// are never read.
pub fn observe(secret: Option<&Secret>, api_key_uid: &str, seal_key: &SealKey) -> Observed {
    let Some(secret) = secret else {
        return Observed::Missing;
    };
    let controlled = secret
        .owner_references()
        .iter()
        .any(|r| is_controller_ref_to(r, api_key_uid));
    if !controlled {
        return Observed::Foreign;
    }
    let content = secret.data.as_ref().and_then(|d| d.get(DATA_KEY));
    let content_hash = content.map(|v| key::hash_bytes(&v.0));
    let proven = match (content, &content_hash) {
        (Some(content), Some(hash)) => prove(secret, &content.0, hash, api_key_uid, seal_key),
        _ => None,
    };
    Observed::Controlled {
        content_hash,
        proven,
        uid: secret.uid(),
    }
}

/// The key in `content`, if it is a well-formed key and the Secret's seal
/// verifies over this ApiKey's UID and the content's hash.
fn prove(
    secret: &Secret,
    content: &[u8],
    content_hash: &str,
    api_key_uid: &str,
    seal_key: &SealKey,
) -> Option<ProvenKey> {
    let seal = secret.annotations().get(provenance::ANNOTATION)?;
    if !seal_key.proves(seal, api_key_uid, content_hash) {
        return None;
    }
    // Sealed by keymint, so a key keymint minted; parsed all the same, so
    // that the key id is always that of a well-formed key.
    let minted = key::parse(std::str::from_utf8(content).ok()?).ok()?;
    Some(ProvenKey {
        key_id: key::key_id(&minted),
        key_hash: content_hash.to_string(),
        created: secret.metadata.creation_timestamp.as_ref().map(|t| t.0),
    })
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

    fn seal_key() -> SealKey {
        SealKey::from_bytes(&[7; provenance::SEAL_KEY_BYTES]).expect("seal key")
    }

    #[test]
    fn built_secret_carries_key_ownership_metadata_and_seal() {
        let k = api_key();
        let minted = key::mint().expect("mint");
        let s = build(&k, &minted, &seal_key());
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
        assert_eq!(annotations[ANNOTATION_KEY_ID], key::key_id(&minted));
        let data = s.data.as_ref().expect("data");
        assert_eq!(data[DATA_KEY].0, minted.expose().as_bytes());
        assert_eq!(
            observe(Some(&s), "uid-1", &seal_key()),
            Observed::Controlled {
                content_hash: Some(key::hash(&minted)),
                proven: Some(ProvenKey {
                    key_id: key::key_id(&minted),
                    key_hash: key::hash(&minted),
                    created: None,
                }),
                uid: None,
            }
        );
    }

    #[test]
    fn a_secret_of_another_owner_is_foreign() {
        let k = api_key();
        let s = build(&k, &key::mint().expect("mint"), &seal_key());
        assert_eq!(observe(Some(&s), "uid-2", &seal_key()), Observed::Foreign);
        let mut plain = s.clone();
        plain.metadata.owner_references = None;
        assert_eq!(
            observe(Some(&plain), "uid-1", &seal_key()),
            Observed::Foreign
        );
        assert_eq!(observe(None, "uid-1", &seal_key()), Observed::Missing);
    }

    /// What a tenant can write: our ownerReference, a well-formed key,
    /// keymint's annotations (even a real seal copied from another Secret).
    #[test]
    fn an_owner_reference_and_annotations_prove_nothing() {
        let k = api_key();
        let theirs = key::mint().expect("mint");
        let mut planted = build(&k, &theirs, &seal_key());
        let annotations = planted.metadata.annotations.as_mut().expect("annotations");
        // No seal: only annotations saying what the key is.
        annotations.remove(provenance::ANNOTATION);
        annotations.insert(ANNOTATION_KEY_HASH.into(), "sha256:victim".into());
        annotations.insert(ANNOTATION_KEY_ID.into(), "km_victim".into());
        let judged = observe(Some(&planted), "uid-1", &seal_key());
        assert_eq!(
            judged,
            Observed::Controlled {
                content_hash: Some(key::hash(&theirs)),
                proven: None,
                uid: None,
            },
            "hash from the content, no proof"
        );
        // A seal made with another key (another cluster's keymint).
        let elsewhere = SealKey::from_bytes(&[8; provenance::SEAL_KEY_BYTES]).expect("key");
        let sealed_elsewhere = build(&k, &theirs, &elsewhere);
        assert!(matches!(
            observe(Some(&sealed_elsewhere), "uid-1", &seal_key()),
            Observed::Controlled { proven: None, .. }
        ));
        // A real seal, for another ApiKey's key, copied with its content to
        // this ApiKey: it names the other UID.
        let mut other = api_key();
        other.metadata.uid = Some("uid-2".into());
        let mut copied = build(&other, &theirs, &seal_key());
        copied.metadata.owner_references = planted.metadata.owner_references.clone();
        assert!(matches!(
            observe(Some(&copied), "uid-1", &seal_key()),
            Observed::Controlled { proven: None, .. }
        ));
    }

    #[test]
    fn changed_content_breaks_the_proof_and_shows_in_the_content_hash() {
        let k = api_key();
        let minted = key::mint().expect("mint");
        let mut s = build(&k, &minted, &seal_key());
        let other = key::mint().expect("mint");
        s.data.as_mut().expect("data").insert(
            DATA_KEY.into(),
            ByteString(other.expose().as_bytes().to_vec()),
        );
        assert_eq!(
            observe(Some(&s), "uid-1", &seal_key()),
            Observed::Controlled {
                content_hash: Some(key::hash(&other)),
                proven: None,
                uid: None,
            }
        );
        s.data.as_mut().expect("data").remove(DATA_KEY);
        assert_eq!(
            observe(Some(&s), "uid-1", &seal_key()),
            Observed::Controlled {
                content_hash: None,
                proven: None,
                uid: None,
            }
        );
    }
}
