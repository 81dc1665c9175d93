//! The `ApiKey` custom resource (`keymint.dev/v1alpha1`).
//!
//! Validation lives in the generated schema (types, lengths, patterns and CEL
//! rules) so that the API server refuses a bad manifest at `kubectl apply`
//! time with a message naming the field. The schema carries no defaults and
//! the operator never writes `spec`: GitOps tools must never see drift.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apikey::action::Transition;

/// An RFC 3339 date-time that keymint can read. The API server's
/// `format: date-time` checks the date and the time of day but lets through
/// what keymint's parser (jiff, behind k8s-openapi's `Time`) refuses, and a
/// value keymint cannot read makes the whole ApiKey unreadable. Measured
/// against the real API server (`tests/e2e/expires_at.rs`), it accepts: any
/// character before a fraction; a fraction of any length (keymint reads at
/// most 9 digits); any two digits of offset (`+99:99`; RFC 3339 allows
/// hours 00–23, minutes 00–59); and year 9999 with a negative offset, which
/// lies past the last instant keymint can represent. So the pattern refuses
/// those, naming the field; `every_date_time_the_schema_admits_is_read`
/// proves the two agree.
const RFC3339: &str = "^([0-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";
/// A DNS label (RFC 1123): what `spec.project` must look like.
const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS subdomain (RFC 1123): what a Secret name must look like.
const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// An API key for one owner in one project. keymint mints the key once into a
/// Secret in the same namespace; the plaintext lives nowhere else.
// clippy reads the repeated `type_ = "string"` of the printer columns below as
// duplicated attributes; they are arguments of distinct `printcolumn`s.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "keymint.dev",
    version = "v1alpha1",
    kind = "ApiKey",
    namespaced,
    shortname = "ak",
    category = "keymint",
    status = "ApiKeyStatus",
    doc = "An API key: keymint mints it exactly once into a Secret that workloads mount.",
    // The name labels the Secret (keymint.dev/api-key), and label values are
    // at most 63 characters.
    validation = Rule::new("size(self.metadata.name) <= 63")
        .message("metadata.name must be at most 63 characters: it labels the key's Secret"),
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".spec.expiresAt"),
    printcolumn(name = "Key ID", type_ = "string", json_path = ".status.keyId"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
// `secretName` is optional, so a field-level `self == oldSelf` would not catch
// it being added or removed after creation; this rule compares presence too.
#[x_kube(validation = Rule::new(
    "has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)"
).message("secretName is immutable").field_path(".secretName"))]
#[x_kube(validation = Rule::new(
    "has(self.showOnce) == has(oldSelf.showOnce) && (!has(self.showOnce) || self.showOnce == oldSelf.showOnce)"
).message("showOnce is immutable").field_path(".showOnce"))]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// The project the key belongs to: a DNS label (lowercase letters, digits
    /// and '-', at most 63 characters). Immutable.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("project is immutable"))]
    pub project: String,

    /// Who the key is for: a username as the API server knows it (for example
    /// `alice@example.com` or `system:serviceaccount:ci:deployer`), at most
    /// 253 characters, no whitespace. Immutable.
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[^\\s]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("owner is immutable"))]
    pub owner: String,

    /// What the key is for, shown next to it; a single line of at most 256
    /// characters. May change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = "^\\P{Cc}*$"))]
    pub description: Option<String>,

    /// When the key stops working (RFC 3339, e.g. `2027-01-31T00:00:00Z`).
    /// keymint deletes the key material at that instant. Omit for a key that
    /// does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC3339))]
    pub expires_at: Option<Time>,

    /// Name of the Secret that receives the key; defaults to the ApiKey's
    /// name. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub secret_name: Option<String>,

    /// Labels and annotations to put on the generated Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// A person's key, shown once (`keymint create --show-once`): the CLI
    /// reads the key from its Secret, deletes the Secret, prints the key
    /// once it has seen the Secret gone, and acknowledges with the
    /// annotation `keymint.dev/revealed: <key id>`; keymint then records
    /// `revealed` — the key exists nowhere in the cluster and still
    /// verifies by its hash. A key not acknowledged within keymint's reveal
    /// window has its Secret deleted and becomes NeverShown (it no longer
    /// verifies). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_once: Option<bool>,
}

/// At most this many characters in a `secretTemplate`: its labels' and
/// annotations' keys and values together. What Secrets carry in practice
/// is far less — Reflector's or Replicator's few annotations with a list
/// of namespaces, Argo CD's tracking id, a team label: a few hundred
/// characters; 8,192 leaves room for a namespace list of a hundred names.
/// Without it, 64 annotations of 3,600 characters (about 230 KiB) were
/// admitted per ApiKey, and every replica of keymint holds what it reads.
pub const TEMPLATE_MAX_CHARS: usize = 8192;

/// Metadata copied onto the generated Secret. Keys under `keymint.dev/` are
/// reserved for keymint's own bookkeeping.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
// Each entry's key and value are bounded on their own below; this bounds the
// whole (CEL's `size` counts characters, as the message says).
#[x_kube(validation = Rule::new(format!(
    "(has(self.labels) ? self.labels.map(k, size(k) + size(self.labels[k])).sum() : 0) + \
     (has(self.annotations) ? self.annotations.map(k, size(k) + size(self.annotations[k])).sum() : 0) \
     <= {TEMPLATE_MAX_CHARS}"
)).message(format!(
    "secretTemplate's labels and annotations, keys and values together, must be at most {TEMPLATE_MAX_CHARS} characters"
).as_str()))]
pub struct SecretTemplate {
    /// Labels for the Secret (Kubernetes label syntax, at most 64 entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(
        validation = Rule::new(
            "self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))"
        ).message("label keys must be an optional DNS-subdomain prefix and '/', then a name of at most 63 alphanumerics, '-', '_' or '.'"),
        validation = Rule::new("self.all(k, !k.startsWith('keymint.dev/'))")
            .message("label keys under keymint.dev/ are reserved for keymint"),
    )]
    pub labels: Option<BTreeMap<String, LabelValue>>,

    /// Annotations for the Secret (at most 64 entries of at most 3,600
    /// characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(
        validation = Rule::new(
            "self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))"
        ).message("annotation keys must be an optional DNS-subdomain prefix and '/', then a name of at most 63 alphanumerics, '-', '_' or '.'"),
        validation = Rule::new("self.all(k, !k.startsWith('keymint.dev/'))")
            .message("annotation keys under keymint.dev/ are reserved for keymint"),
    )]
    pub annotations: Option<BTreeMap<String, AnnotationValue>>,
}

/// A Kubernetes label value. Checked by the schema rather than a CEL rule: a
/// rule over unbounded map values exceeds the API server's cost budget, and
/// the schema's message names the offending key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct LabelValue(
    #[schemars(
        length(max = 63),
        regex(pattern = "^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
    )]
    pub String,
);

/// A Secret annotation value: at most 3,600 characters, so that 64 of them
/// with their keys stay within the API server's 256 KiB annotation limit
/// and a manifest that could never become a Secret is refused at apply.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct AnnotationValue(#[schemars(length(max = 3600))] pub String);

/// Where an ApiKey is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, not minted yet.
    Pending,
    /// Minted: the key is in its Secret and usable.
    Active,
    /// Not minted because the owner's quota for the project is full; it is
    /// admitted, oldest first, when a slot frees.
    Rejected,
    /// Not minted because a Secret with the target name exists and is not
    /// this ApiKey's.
    Conflict,
    /// `expiresAt` passed; the key material was deleted.
    Expired,
    /// The Secret disappeared out of band; the key is never silently re-minted.
    SecretLost,
    /// The Secret's content no longer matches the minted key's hash.
    SecretTampered,
    /// A show-once key whose owner never acknowledged seeing it within the
    /// reveal window: its Secret was deleted and the key no longer verifies.
    NeverShown,
}

/// What keymint observed and did. Only the SHA-256 of the key and a public key
/// id appear here, never the key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Standard conditions; `Ready` first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Public identifier of the key: safe to show and log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// `sha256:<hex>` of the key, to verify the Secret against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    /// The Secret that holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// When the key was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minted_at: Option<Time>,
    /// When a show-once key was shown and its Secret deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revealed_at: Option<Time>,
    /// When keymint last warned that the key expires soon (an Event and an
    /// `expiring-soon` audit entry). The ExpiringSoon condition follows
    /// `expiresAt`; the warning is given again only a whole warning window
    /// later, however often the key moves in and out of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_warned_at: Option<Time>,
    /// The transitions made by the latest status change, numbered per
    /// ApiKey. Each is appended to the audit stream right after that change;
    /// if keymint stops in between, the next reconcile appends what the
    /// stream lacks — so every transition is recorded exactly once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_transitions: Vec<TransitionRecord>,
}

/// One lifecycle transition, as recorded in the audit stream.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionRecord {
    /// 1 for the ApiKey's first transition, then 2, 3, ...
    // "uint64" is not a format the API server knows (it warns on apply).
    #[schemars(extend("format" = "int64"))]
    pub number: u64,
    /// The audit action: minted, rejected, conflict, expiring-soon, expired,
    /// secret-lost, secret-tampered or secret-restored.
    pub action: Transition,
    /// When it happened (RFC 3339, UTC, nanoseconds).
    pub time: TransitionTime,
    /// The keymint instance that made it.
    pub instance: String,
}

/// When a transition happened. Written as RFC 3339 in UTC with exactly nine
/// fractional digits — the form audit entries store, so an entry appended
/// late (after a crash) carries the time its status recorded, exactly —
/// and refused by the schema in any shape keymint could not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TransitionTime(pub jiff::Timestamp);

impl TransitionTime {
    /// Fractional-second digits: jiff's own resolution, so a time survives
    /// encoding exactly; a fixed width also makes the texts sort in time order.
    pub const DIGITS: usize = 9;
}

impl std::fmt::Display for TransitionTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.prec$}", self.0, prec = Self::DIGITS)
    }
}

impl Serialize for TransitionTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TransitionTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map(TransitionTime)
            .map_err(|_| serde::de::Error::custom("not an RFC 3339 time"))
    }
}

impl JsonSchema for TransitionTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TransitionTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": RFC3339})
    }
}

/// Where a stored ApiKey that cannot be read as [`ApiKey`] goes wrong: the
/// path of the first offending field (e.g. `status.conditions[0].lastTransitionTime`)
/// and why. None if it reads. The schema refuses malformed specs, so this is
/// mostly a status written by someone else.
pub fn unreadable_field(object: &serde_json::Value) -> Option<String> {
    serde_path_to_error::deserialize::<_, ApiKey>(object)
        .err()
        .map(|e| format!("{}: {}", e.path(), e.inner()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What the API server admits for `spec.expiresAt`: the CRD's pattern,
    /// and `format: date-time`, which (as the real API server shows,
    /// `tests/e2e/expires_at.rs`) checks the date and the time of day and
    /// nothing else: not the offset, not the fraction's length.
    fn admitted(value: &str) -> bool {
        static PATTERN: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new(RFC3339).expect("the pattern compiles"));
        let pattern = &*PATTERN;
        let field = |from: usize, to: usize| value.get(from..to)?.parse::<u32>().ok();
        let valid_date_and_time = || -> Option<bool> {
            let (year, month, day) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
            let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let days = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                1..=12 => 31,
                _ => return Some(false),
            };
            Some((1..=days).contains(&day) && hour < 24 && minute < 60 && second < 60)
        };
        pattern.is_match(value) && valid_date_and_time() == Some(true)
    }

    fn read(value: &str) -> Result<Time, serde_json::Error> {
        serde_json::from_value(serde_json::Value::String(value.to_string()))
    }

    /// A date-time in any of the shapes RFC 3339 and the API server allow,
    /// with every field's digits drawn beyond their ranges too.
    fn date_time() -> impl Strategy<Value = String> {
        let date = (0u32..=9999, 0u32..=13, 0u32..=32);
        let time = (0u32..=24, 0u32..=60, 0u32..=60, "(\\.[0-9]{1,12})?");
        let zone = "[Zz]|[+-][0-9]{2}:[0-9]{2}";
        (date, "[Tt]", time, zone).prop_map(|((y, mo, d), t, (h, mi, s, fraction), zone)| {
            format!("{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}{fraction}{zone}")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn every_date_time_the_schema_admits_is_read(value in date_time()) {
            if admitted(&value) {
                prop_assert!(read(&value).is_ok(), "{value}: {:?}", read(&value));
            }
        }
    }

    #[test]
    fn the_edges_of_what_the_schema_admits_are_read() {
        for value in [
            "0000-01-01T00:00:00+23:59",
            "9998-12-31T23:59:59.999999999-23:59",
            "2096-02-29t23:59:59z",
            "2099-01-31T00:00:00-00:00",
        ] {
            assert!(admitted(value), "{value}");
            assert!(read(value).is_ok(), "{value}");
        }
        for value in [
            "9999-12-31T23:59:59-23:59",
            "2099-01-31T00:00:00.1234567890Z",
            "2099-01-31T00:00:00+24:00",
            "2099-01-31T00:00:00+00:60",
            "2099-01-31T00:00:00x5Z",
        ] {
            assert!(!admitted(value), "{value}");
        }
    }

    #[test]
    fn an_unreadable_api_key_names_the_field() {
        let mut object = serde_json::json!({
            "apiVersion": "keymint.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": "k", "namespace": "ns"},
            "spec": {"project": "p", "owner": "alice@example.com"},
        });
        assert_eq!(unreadable_field(&object), None);
        object["status"] = serde_json::json!({"conditions": [{
            "type": "Ready", "status": "False", "reason": "Garbage", "message": "",
            "lastTransitionTime": "2099-01-31T00:00:00x5Z",
        }]});
        let found = unreadable_field(&object).expect("unreadable");
        assert!(
            found.starts_with("status.conditions[0].lastTransitionTime: "),
            "{found}"
        );
    }
}
