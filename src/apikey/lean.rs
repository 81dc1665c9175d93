//! An ApiKey as keymint's watches deliver it — the controller's cache and
//! the verifier's index alike: the fields keymint reads, parsed straight
//! from the API server's JSON, and nothing else. `managedFields`, labels,
//! annotations (kubectl's last-applied copy of the whole object among them;
//! all but the owner's acknowledgement of a show-once key's reveal) and
//! owner references are skipped by the parser, never allocated: they
//! were most of a cached ApiKey's memory and most of the parsing of a
//! 100,000-key list.
//!
//! One ApiKey that cannot be read (garbage written into its status, most
//! likely) is kept as an error with its metadata, so that it never stalls
//! the watch for the others. kube's own `DeserializeGuard` does the same,
//! but buffers and clones the whole object — managedFields included — to do
//! it; here only `spec` and `status` are buffered, to retry them as errors.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::core::error_boundary::InvalidObject;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::apikey::lifecycle::reveal::REVEALED_ANNOTATION;
use crate::apikey::{ApiKey, ApiKeySpec, ApiKeyStatus};

/// A watched ApiKey: readable, or the reason it is not (with its metadata).
#[derive(Clone, Debug)]
pub struct GuardedApiKey(pub Result<ApiKey, InvalidObject>);

/// The metadata keymint reads: who the object is, which version, whether
/// it is being deleted and whose finalizers hold it, when it was created
/// (its place in a quota's waiting line).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    annotations: Option<LeanAnnotations>,
}

/// The one annotation keymint reads; the others are skipped unread.
#[derive(Deserialize)]
struct LeanAnnotations {
    #[serde(rename = "keymint.dev/revealed")]
    revealed: Option<String>,
}

impl From<LeanMeta> for ObjectMeta {
    fn from(m: LeanMeta) -> ObjectMeta {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            generation: m.generation,
            creation_timestamp: m.creation_timestamp,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            annotations: m
                .annotations
                .and_then(|a| a.revealed)
                .map(|v| [(REVEALED_ANNOTATION.to_string(), v)].into()),
            ..ObjectMeta::default()
        }
    }
}

/// The object as it arrives; `spec` and `status` are read in a second step
/// so that a bad one becomes this object's error, not the watch's.
#[derive(Deserialize)]
struct Wire {
    metadata: LeanMeta,
    #[serde(default)]
    spec: Option<Box<RawValue>>,
    #[serde(default)]
    status: Option<Box<RawValue>>,
}

impl<'de> Deserialize<'de> for GuardedApiKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let metadata = ObjectMeta::from(wire.metadata);
        let parsed = match &wire.spec {
            None => Err("spec: missing".to_string()),
            Some(spec) => read::<ApiKeySpec>(spec, "spec"),
        }
        .and_then(|spec| {
            let status = match &wire.status {
                None => None,
                Some(status) => Some(read::<ApiKeyStatus>(status, "status")?),
            };
            Ok((spec, status))
        });
        Ok(GuardedApiKey(match parsed {
            Ok((spec, status)) => Ok(ApiKey {
                metadata,
                spec,
                status,
            }),
            Err(error) => Err(InvalidObject { error, metadata }),
        }))
    }
}

/// `raw` as a `T`, or the parser's message naming the part that failed.
fn read<T: for<'a> Deserialize<'a>>(raw: &RawValue, part: &str) -> Result<T, String> {
    serde_json::from_str(raw.get()).map_err(|e| format!("{part}: {e}"))
}

impl Resource for GuardedApiKey {
    type DynamicType = ();
    type Scope = <ApiKey as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ApiKey::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        ApiKey::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        ApiKey::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        ApiKey::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|e| &e.metadata, ApiKey::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0
            .as_mut()
            .map_or_else(|e| &mut e.metadata, ApiKey::meta_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::Phase;
    use kube::ResourceExt;
    use serde_json::json;

    fn watched() -> serde_json::Value {
        json!({
            "apiVersion": "keymint.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {
                "name": "ci", "namespace": "payments", "uid": "0b7c6e2a-1111-4222-8333-444455556666",
                "resourceVersion": "42", "generation": 1,
                "creationTimestamp": "2026-12-01T10:00:00Z",
                "finalizers": ["keymint.dev/cleanup"],
                "labels": {"team": "payments"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{…}"},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:owner": {}, "f:project": {}}}}]
            },
            "spec": {"project": "payments", "owner": "alice@example.com"},
            "status": {"phase": "Active", "keyId": "km_Sdz7gm2XJHwC"}
        })
    }

    #[test]
    fn keeps_what_keymint_reads_and_skips_the_rest() {
        let GuardedApiKey(Ok(api_key)) = serde_json::from_value(watched()).expect("parses") else {
            panic!("readable");
        };
        let m = &api_key.metadata;
        assert_eq!(
            (
                m.name.as_deref(),
                m.namespace.as_deref(),
                m.resource_version.as_deref()
            ),
            (Some("ci"), Some("payments"), Some("42"))
        );
        assert_eq!(
            m.finalizers.as_deref(),
            Some(&["keymint.dev/cleanup".to_string()][..])
        );
        assert!(m.creation_timestamp.is_some() && m.generation == Some(1));
        assert_eq!(
            (&m.managed_fields, &m.labels, &m.annotations),
            (&None, &None, &None)
        );
        assert_eq!(api_key.spec.owner, "alice@example.com");
        let status = api_key.status.expect("status");
        assert_eq!(status.phase, Some(Phase::Active));
    }

    #[test]
    fn of_the_annotations_only_the_reveals_acknowledgement_is_kept() {
        let mut acknowledged = watched();
        acknowledged["metadata"]["annotations"][REVEALED_ANNOTATION] = json!("km_Sdz7gm2XJHwC");
        let GuardedApiKey(Ok(api_key)) = serde_json::from_value(acknowledged).expect("parses")
        else {
            panic!("readable");
        };
        let kept: Vec<(&String, &String)> = api_key.annotations().iter().collect();
        assert_eq!(
            kept,
            [(
                &REVEALED_ANNOTATION.to_string(),
                &"km_Sdz7gm2XJHwC".to_string()
            )]
        );
    }

    #[test]
    fn an_unreadable_status_is_this_objects_error_with_its_name() {
        let mut bad = watched();
        bad["status"]["lastTransitions"] = json!([{"number": 1, "action": "made-up"}]);
        let GuardedApiKey(Err(invalid)) = serde_json::from_value(bad).expect("parses") else {
            panic!("unreadable");
        };
        assert!(invalid.error.starts_with("status: "), "{}", invalid.error);
        assert_eq!(invalid.metadata.name.as_deref(), Some("ci"));
        let mut no_spec = watched();
        no_spec.as_object_mut().expect("object").remove("spec");
        let GuardedApiKey(Err(invalid)) = serde_json::from_value(no_spec).expect("parses") else {
            panic!("unreadable");
        };
        assert!(invalid.error.starts_with("spec: "), "{}", invalid.error);
    }

    #[test]
    fn an_api_key_keymint_has_not_seen_has_no_status() {
        let mut fresh = watched();
        fresh.as_object_mut().expect("object").remove("status");
        let GuardedApiKey(Ok(api_key)) = serde_json::from_value(fresh).expect("parses") else {
            panic!("readable");
        };
        assert_eq!(api_key.status, None);
    }
}
