//! An ApiKey as the controller's cache holds it: the lean ApiKey of
//! `apikey::lean` (the fields keymint reads), packed. A whole `ApiKey`
//! carries an `ObjectMeta` of some 30 optional fields and a `String` for
//! every word of its status; most of those bytes are empty fields and words
//! that every key repeats ("Ready", "True", the project, the owner, the
//! replica's name). Here the empty fields are not there, repeated words are
//! shared (`Words`), a key's own strings share one allocation (`Texts`), and
//! times take 12 bytes (`When`). A reconcile gets the `ApiKey` back, rebuilt
//! field for field (`api_key`) — but its `secretTemplate`, kept only while
//! the key is about to mint (`lifecycle::about_to_mint`): up to 64
//! annotations a key, declared by the thousand on keys that will never
//! mint (Rejected, Expired) or never mint again (Active), would make the
//! cache grow with what tenants declare rather than with what is minted.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::core::error_boundary::InvalidObject;

use crate::apikey::lifecycle::reveal::REVEALED_ANNOTATION;
use crate::apikey::lifecycle::{self, conditions};
use crate::apikey::{
    ApiKey, ApiKeySpec, ApiKeyStatus, GuardedApiKey, Phase, SecretTemplate, TransitionRecord,
};
use crate::texts::{Span, Texts, text};

/// Words that many cached keys repeat, held once. A word no key uses any
/// more is let go when the table has doubled since it was last swept.
#[derive(Default)]
pub struct Words {
    table: HashSet<Arc<str>>,
    swept_at: usize,
}

impl Words {
    pub fn word(&mut self, text: &str) -> Arc<str> {
        if let Some(word) = self.table.get(text) {
            return word.clone();
        }
        if self.table.len() >= 2 * self.swept_at.max(64) {
            self.table.retain(|w| Arc::strong_count(w) > 1);
            self.swept_at = self.table.len();
        }
        let word: Arc<str> = Arc::from(text);
        self.table.insert(word.clone());
        word
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }
}

/// An optional time in 12 bytes, where jiff's `Option<Timestamp>` takes 24:
/// a cached key holds five (created, deleted, expires, minted, revealed).
#[derive(Clone, Copy, Debug)]
struct When {
    /// Seconds since the Unix epoch, as two halves so that the type aligns
    /// to 4 bytes and packs beside the key's other small fields.
    seconds: [u32; 2],
    /// The nanoseconds (negative before the epoch); `NO_TIME` for none.
    nanos: i32,
}

/// Outside jiff's range of nanoseconds (±999,999,999).
const NO_TIME: i32 = i32::MIN;

impl When {
    fn of(time: Option<&Time>) -> When {
        match time {
            Some(Time(t)) => {
                let seconds = t.as_second().cast_unsigned();
                When {
                    seconds: [seconds as u32, (seconds >> 32) as u32],
                    nanos: t.subsec_nanosecond(),
                }
            }
            None => When {
                seconds: [0, 0],
                nanos: NO_TIME,
            },
        }
    }

    fn time(self) -> Option<Time> {
        let [low, high] = self.seconds.map(u64::from);
        let seconds = (high << 32 | low).cast_signed();
        (self.nanos != NO_TIME)
            .then(|| Timestamp::new(seconds, self.nanos).ok())
            .flatten()
            .map(Time)
    }
}

/// One cached ApiKey: who it is, and its spec and status (or why they
/// cannot be read).
#[derive(Debug)]
pub struct CachedApiKey {
    namespace: Option<Arc<str>>,
    /// The key's own strings (name, UID, resource version, key id and hash,
    /// Secret name, condition messages, unreadable reason), joined: eight
    /// strings apart would be eight allocations per key.
    texts: Box<str>,
    name: Span,
    uid: Option<Span>,
    resource_version: Option<Span>,
    generation: Option<i64>,
    created: When,
    deleting: When,
    finalizers: Option<Box<[Arc<str>]>>,
    /// The owner's acknowledgement of a show-once key's reveal (the key id
    /// of its `keymint.dev/revealed` annotation).
    revealed: Option<Span>,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Readable(Readable),
    /// Why the key cannot be read.
    Unreadable(Span),
}

#[derive(Debug)]
struct Readable {
    spec: Spec,
    status: Option<Status>,
}

#[derive(Debug)]
struct Spec {
    project: Arc<str>,
    owner: Arc<str>,
    expires_at: When,
    show_once: Option<bool>,
    /// What most keys leave out, boxed so that leaving it out costs a word.
    rest: Option<Box<SpecRest>>,
}

#[derive(Debug)]
struct SpecRest {
    description: Option<String>,
    secret_name: Option<String>,
    /// Only while the key is about to mint; None otherwise (the mint
    /// reads it from the API server should it come to one after all).
    secret_template: Option<SecretTemplate>,
}

#[derive(Debug)]
struct Status {
    phase: Option<Phase>,
    observed_generation: Option<i64>,
    conditions: Box<[CachedCondition]>,
    key_id: Option<Span>,
    key_hash: Option<Span>,
    secret_name: Option<Span>,
    minted_at: When,
    revealed_at: When,
    expiry_warned_at: When,
    last_transitions: Box<[CachedTransition]>,
}

#[derive(Debug)]
struct CachedCondition {
    type_: Arc<str>,
    status: Arc<str>,
    reason: Arc<str>,
    message: Span,
    observed_generation: Option<i64>,
    last_transition_time: Timestamp,
}

#[derive(Debug)]
struct CachedTransition {
    record: TransitionRecordWithoutInstance,
    instance: Arc<str>,
}

/// A transition record but its instance, which `CachedTransition` shares.
#[derive(Debug)]
struct TransitionRecordWithoutInstance {
    number: u64,
    action: crate::apikey::action::Transition,
    time: crate::apikey::TransitionTime,
}

impl CachedApiKey {
    pub fn new(watched: &GuardedApiKey, words: &mut Words) -> CachedApiKey {
        let metadata = match &watched.0 {
            Ok(api_key) => &api_key.metadata,
            Err(invalid) => &invalid.metadata,
        };
        let mut texts = Texts::default();
        let name = texts.add(metadata.name.as_deref().unwrap_or_default());
        let uid = texts.add_some(metadata.uid.as_deref());
        let resource_version = texts.add_some(metadata.resource_version.as_deref());
        let revealed = texts.add_some(
            metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVEALED_ANNOTATION))
                .map(String::as_str),
        );
        let body = match &watched.0 {
            Ok(api_key) => Body::Readable(Readable {
                spec: Spec::new(&api_key.spec, lifecycle::about_to_mint(api_key), words),
                status: api_key
                    .status
                    .as_ref()
                    .map(|s| Status::new(s, words, &mut texts)),
            }),
            Err(invalid) => Body::Unreadable(texts.add(&invalid.error)),
        };
        CachedApiKey {
            namespace: metadata.namespace.as_deref().map(|n| words.word(n)),
            texts: texts.joined(),
            name,
            uid,
            resource_version,
            generation: metadata.generation,
            created: When::of(metadata.creation_timestamp.as_ref()),
            deleting: When::of(metadata.deletion_timestamp.as_ref()),
            finalizers: metadata
                .finalizers
                .as_ref()
                .map(|f| f.iter().map(|f| words.word(f)).collect()),
            revealed,
            body,
        }
    }

    /// Namespace and name: the key's identity in the cache.
    pub fn name_pair(&self) -> (Option<&str>, &str) {
        (self.namespace.as_deref(), self.name())
    }

    /// The watched ApiKey again, as `apikey::lean` parsed it.
    pub fn api_key(&self) -> GuardedApiKey {
        let metadata = self.metadata();
        GuardedApiKey(match &self.body {
            Body::Readable(readable) => Ok(ApiKey {
                metadata,
                spec: readable.spec.spec(),
                status: readable.status.as_ref().map(|s| s.status(&self.texts)),
            }),
            Body::Unreadable(error) => Err(InvalidObject {
                error: text(&self.texts, *error).to_string(),
                metadata,
            }),
        })
    }

    /// The namespace as the cache's shared word for it.
    pub fn namespace_word(&self) -> Option<&Arc<str>> {
        self.namespace.as_ref()
    }

    pub fn name(&self) -> &str {
        text(&self.texts, self.name)
    }

    /// The phase of a readable key (Pending before keymint wrote one);
    /// None for an unreadable one.
    pub fn phase(&self) -> Option<Phase> {
        match &self.body {
            Body::Readable(r) => Some(
                r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .unwrap_or(Phase::Pending),
            ),
            Body::Unreadable(_) => None,
        }
    }

    /// Whether a key was ever minted for this project and owner (its hash
    /// is recorded), read without rebuilding the key.
    pub fn minted_for(&self, project: &str, owner: &str) -> bool {
        let Body::Readable(r) = &self.body else {
            return false;
        };
        *r.spec.project == *project
            && *r.spec.owner == *owner
            && r.status.as_ref().is_some_and(|s| s.key_hash.is_some())
    }

    /// Whether the key's `ExpiringSoon` condition is True (the rule is
    /// `conditions::expiring_soon`'s, read without rebuilding the status).
    pub fn expiring_soon(&self) -> bool {
        let Body::Readable(r) = &self.body else {
            return false;
        };
        r.status.as_ref().is_some_and(|s| {
            conditions::true_among(
                s.conditions.iter().map(|c| (&*c.type_, &*c.status)),
                conditions::EXPIRING_SOON,
            )
        })
    }

    fn metadata(&self) -> ObjectMeta {
        let owned = |span: Option<Span>| span.map(|s| text(&self.texts, s).to_string());
        ObjectMeta {
            name: Some(self.name().to_string()),
            namespace: self.namespace.as_deref().map(str::to_string),
            uid: owned(self.uid),
            resource_version: owned(self.resource_version),
            generation: self.generation,
            creation_timestamp: self.created.time(),
            deletion_timestamp: self.deleting.time(),
            finalizers: self
                .finalizers
                .as_ref()
                .map(|f| f.iter().map(|f| f.to_string()).collect()),
            annotations: owned(self.revealed)
                .map(|v| [(REVEALED_ANNOTATION.to_string(), v)].into()),
            ..ObjectMeta::default()
        }
    }
}

impl Spec {
    fn new(spec: &ApiKeySpec, about_to_mint: bool, words: &mut Words) -> Spec {
        let secret_template = spec.secret_template.as_ref().filter(|_| about_to_mint);
        let rest =
            (spec.description.is_some() || spec.secret_name.is_some() || secret_template.is_some())
                .then(|| {
                    Box::new(SpecRest {
                        description: spec.description.clone(),
                        secret_name: spec.secret_name.clone(),
                        secret_template: secret_template.cloned(),
                    })
                });
        Spec {
            project: words.word(&spec.project),
            owner: words.word(&spec.owner),
            expires_at: When::of(spec.expires_at.as_ref()),
            show_once: spec.show_once,
            rest,
        }
    }

    fn spec(&self) -> ApiKeySpec {
        let rest = self.rest.as_deref();
        ApiKeySpec {
            project: self.project.to_string(),
            owner: self.owner.to_string(),
            description: rest.and_then(|r| r.description.clone()),
            expires_at: self.expires_at.time(),
            secret_name: rest.and_then(|r| r.secret_name.clone()),
            secret_template: rest.and_then(|r| r.secret_template.clone()),
            show_once: self.show_once,
        }
    }
}

impl Status {
    fn new<'a>(status: &'a ApiKeyStatus, words: &mut Words, texts: &mut Texts<'a>) -> Status {
        Status {
            phase: status.phase,
            observed_generation: status.observed_generation,
            conditions: status
                .conditions
                .iter()
                .map(|c| CachedCondition {
                    type_: words.word(&c.type_),
                    status: words.word(&c.status),
                    reason: words.word(&c.reason),
                    message: texts.add(&c.message),
                    observed_generation: c.observed_generation,
                    last_transition_time: c.last_transition_time.0,
                })
                .collect(),
            key_id: texts.add_some(status.key_id.as_deref()),
            key_hash: texts.add_some(status.key_hash.as_deref()),
            secret_name: texts.add_some(status.secret_name.as_deref()),
            minted_at: When::of(status.minted_at.as_ref()),
            revealed_at: When::of(status.revealed_at.as_ref()),
            expiry_warned_at: When::of(status.expiry_warned_at.as_ref()),
            last_transitions: status
                .last_transitions
                .iter()
                .map(|t| CachedTransition {
                    instance: words.word(&t.instance),
                    record: TransitionRecordWithoutInstance {
                        number: t.number,
                        action: t.action,
                        time: t.time,
                    },
                })
                .collect(),
        }
    }

    fn status(&self, texts: &str) -> ApiKeyStatus {
        let owned = |span: Option<Span>| span.map(|s| text(texts, s).to_string());
        ApiKeyStatus {
            phase: self.phase,
            conditions: self
                .conditions
                .iter()
                .map(|c| Condition {
                    type_: c.type_.to_string(),
                    status: c.status.to_string(),
                    reason: c.reason.to_string(),
                    message: text(texts, c.message).to_string(),
                    observed_generation: c.observed_generation,
                    last_transition_time: Time(c.last_transition_time),
                })
                .collect(),
            observed_generation: self.observed_generation,
            key_id: owned(self.key_id),
            key_hash: owned(self.key_hash),
            secret_name: owned(self.secret_name),
            minted_at: self.minted_at.time(),
            revealed_at: self.revealed_at.time(),
            expiry_warned_at: self.expiry_warned_at.time(),
            last_transitions: self
                .last_transitions
                .iter()
                .map(|t| TransitionRecord {
                    number: t.record.number,
                    action: t.record.action,
                    time: t.record.time,
                    instance: t.instance.to_string(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    #[test]
    fn a_time_comes_back_exactly_in_its_twelve_bytes() {
        let times = [
            Timestamp::MIN,
            Timestamp::MAX,
            Timestamp::UNIX_EPOCH,
            Timestamp::new(-1, -1).expect("before the epoch"),
            Timestamp::new(1_796_000_000, 123_456_789).expect("a time"),
        ];
        for t in times {
            assert_eq!(When::of(Some(&Time(t))).time(), Some(Time(t)), "{t}");
        }
        assert_eq!(When::of(None).time(), None);
        assert_eq!(std::mem::size_of::<When>(), 12);
    }

    /// An ApiKey with every field keymint reads set, as the watch parses it.
    fn watched(status: serde_json::Value) -> GuardedApiKey {
        let object = json!({
            "apiVersion": "keymint.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {
                "name": "ci", "namespace": "payments", "uid": "0b7c6e2a-1111-4222-8333-444455556666",
                "resourceVersion": "42", "generation": 2,
                "creationTimestamp": "2026-12-01T10:00:00Z",
                "deletionTimestamp": "2026-12-02T10:00:00Z",
                "finalizers": ["keymint.dev/cleanup", "example.com/hold"],
                "annotations": {"keymint.dev/revealed": "km_Sdz7gm2XJHwC"}
            },
            "spec": {
                "project": "payments", "owner": "alice@example.com", "description": "CI",
                "expiresAt": "2027-01-01T00:00:00Z", "secretName": "ci-key", "showOnce": false,
                "secretTemplate": {"labels": {"team": "payments"}, "annotations": {"a": "b"}}
            },
            "status": status
        });
        serde_json::from_str(&object.to_string()).expect("parses")
    }

    fn full_status() -> serde_json::Value {
        json!({
            "phase": "Active", "observedGeneration": 2,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Minted", "message": "the key is in Secret ci-key",
                 "observedGeneration": 2, "lastTransitionTime": "2026-12-01T10:00:01Z"},
                {"type": "ExpiringSoon", "status": "True", "reason": "ExpiresSoon", "message": "soon",
                 "observedGeneration": 2, "lastTransitionTime": "2026-12-01T10:00:02Z"}
            ],
            "keyId": "km_Sdz7gm2XJHwC", "keyHash": "sha256:00ff", "secretName": "ci-key",
            "mintedAt": "2026-12-01T10:00:01Z", "revealedAt": "2026-12-01T10:00:03Z",
            "lastTransitions": [{"number": 1, "action": "minted", "time": "2026-12-01T10:00:01.123456789Z",
                                 "instance": "keymint-7d9f-abcde"}]
        })
    }

    fn assert_same(before: &ApiKey, after: &ApiKey) {
        assert_eq!(before.metadata, after.metadata);
        assert_eq!(before.spec, after.spec);
        assert_eq!(before.status, after.status);
    }

    fn round_trip(watched: GuardedApiKey) -> (GuardedApiKey, GuardedApiKey) {
        let mut words = Words::default();
        let cached = CachedApiKey::new(&watched, &mut words);
        (watched, cached.api_key())
    }

    #[test]
    fn gives_back_the_api_key_it_was_given_but_a_template_that_will_not_mint() {
        let (before, after) = round_trip(watched(full_status()));
        let (Ok(mut before), Ok(after)) = (before.0, after.0) else {
            panic!("readable");
        };
        assert!(after.status.is_some() && after.spec.secret_template.is_none());
        before.spec.secret_template = None;
        assert_same(&before, &after);
        assert!(after.annotations().contains_key(REVEALED_ANNOTATION));
    }

    #[test]
    fn a_key_about_to_mint_keeps_its_template_and_loses_it_once_decided() {
        let mut fresh = watched(serde_json::Value::Null);
        if let Ok(api_key) = &mut fresh.0 {
            api_key.metadata.deletion_timestamp = None;
        }
        let (before, after) = round_trip(fresh);
        let (Ok(before), Ok(after)) = (before.0, after.0) else {
            panic!("readable");
        };
        assert!(lifecycle::about_to_mint(&after));
        assert_same(&before, &after);
        assert!(after.spec.secret_template.is_some());
        for phase in ["Rejected", "Expired", "Conflict"] {
            let mut decided = watched(json!({"phase": phase}));
            if let Ok(api_key) = &mut decided.0 {
                api_key.metadata.deletion_timestamp = None;
            }
            let (_, after) = round_trip(decided);
            let Ok(after) = after.0 else {
                panic!("readable");
            };
            assert_eq!(after.spec.secret_template, None, "{phase}");
            assert_eq!(after.spec.secret_name.as_deref(), Some("ci-key"));
        }
    }

    #[test]
    fn gives_back_a_key_without_status_or_optional_fields() {
        let mut words = Words::default();
        let object = json!({
            "metadata": {"name": "bare", "namespace": "ns"},
            "spec": {"project": "p", "owner": "o"}
        });
        let bare: GuardedApiKey = serde_json::from_str(&object.to_string()).expect("parses");
        let cached = CachedApiKey::new(&bare, &mut words);
        let (Ok(before), Ok(after)) = (bare.0, cached.api_key().0) else {
            panic!("readable");
        };
        assert_same(&before, &after);
        assert_eq!(cached.phase(), Some(Phase::Pending));
        assert!(!cached.expiring_soon());
    }

    #[test]
    fn an_unreadable_key_stays_unreadable_with_its_name_and_reason() {
        let (before, after) = round_trip(watched(json!({"phase": "Sideways"})));
        let (Err(before), Err(after)) = (before.0, after.0) else {
            panic!("unreadable");
        };
        assert_eq!(before.error, after.error);
        assert_eq!(before.metadata, after.metadata);
    }

    #[test]
    fn reads_name_phase_and_expiry_warning_without_rebuilding() {
        let mut words = Words::default();
        let cached = CachedApiKey::new(&watched(full_status()), &mut words);
        assert_eq!(cached.phase(), Some(Phase::Active));
        assert!(cached.expiring_soon());
        assert_eq!(cached.name_pair(), (Some("payments"), "ci"));
        let unreadable = CachedApiKey::new(&watched(json!({"phase": 3})), &mut words);
        assert_eq!(unreadable.phase(), None);
    }

    #[test]
    fn keys_share_their_repeated_words_and_unused_ones_are_let_go() {
        let mut words = Words::default();
        let a = CachedApiKey::new(&watched(full_status()), &mut words);
        let b = CachedApiKey::new(&watched(full_status()), &mut words);
        let (Body::Readable(ra), Body::Readable(rb)) = (&a.body, &b.body) else {
            panic!("readable");
        };
        assert!(Arc::ptr_eq(&ra.spec.owner, &rb.spec.owner));
        drop((a, b));
        for n in 0..200 {
            words.word(&format!("owner-{n}"));
        }
        assert!(words.len() < 200, "{} words kept", words.len());
    }
}
