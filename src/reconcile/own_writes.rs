//! The statuses keymint wrote, so that their echo on the watch does not
//! trigger another reconcile: the object that comes back is exactly what the
//! reconcile decided, and reconciling it again would only repeat the Secret
//! read (one GET per status write, a third of keymint's reads in a burst).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::apikey::{ApiKey, ApiKeyStatus, GuardedApiKey};

/// A status write in flight or just made.
struct Expected {
    /// The version the write was made against: a late event of it is not
    /// the echo, and does not end the wait.
    read: Option<String>,
    /// The version written, once the API server answered.
    written: Option<String>,
    generation: Option<i64>,
    status: ApiKeyStatus,
}

/// Shared between the reconciles (which record) and the watch stream (which
/// asks).
#[derive(Clone, Default)]
pub struct OwnWrites {
    expected: Arc<Mutex<HashMap<ObjectRef<GuardedApiKey>, Expected>>>,
}

impl OwnWrites {
    /// Before a status write: the echo may arrive on the watch before the
    /// write's answer does (seen under load, where it cut a failing key's
    /// backoff short), so it is recognised by its content too.
    pub fn expect(&self, api_key: &ApiKey, status: &ApiKeyStatus) {
        let expected = Expected {
            read: api_key.resource_version(),
            written: None,
            generation: api_key.metadata.generation,
            status: as_stored(status),
        };
        self.lock().insert(reference(api_key), expected);
    }

    /// The write landed as `version`.
    pub fn written(&self, api_key: &ApiKey, version: Option<String>) {
        if let Some(expected) = self.lock().get_mut(&reference(api_key)) {
            expected.written = version;
        }
    }

    /// The write failed: there is no echo to wait for.
    pub fn forget(&self, api_key: &ApiKey) {
        self.lock().remove(&reference(api_key));
    }

    /// Whether `watched` is the echo of keymint's own write: the version
    /// written, or — before the answer — the status written on the same
    /// generation. Any later event ends the wait (watch events come in
    /// order), which keeps the map as small as the writes in flight.
    pub fn is_echo(&self, watched: &GuardedApiKey) -> bool {
        let key = ObjectRef::from_obj(watched);
        let mut expected = self.lock();
        let version = watched.resource_version();
        match expected.get(&key) {
            None => return false,
            Some(e) if e.read.is_some() && e.read == version => return false,
            Some(_) => {}
        }
        let Some(e) = expected.remove(&key) else {
            return false;
        };
        if e.written.is_some() && e.written == version {
            return true;
        }
        watched.0.as_ref().is_ok_and(|k| {
            k.metadata.generation == e.generation && k.status.as_ref() == Some(&e.status)
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectRef<GuardedApiKey>, Expected>> {
        self.expected.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The status as it comes back from the API server: times are stored at
/// second precision (metav1.Time), so compare after the same round trip.
fn as_stored(status: &ApiKeyStatus) -> ApiKeyStatus {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_else(|| status.clone())
}

fn reference(api_key: &ApiKey) -> ObjectRef<GuardedApiKey> {
    ObjectRef::new(&api_key.name_any()).within(&api_key.namespace().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::{ApiKeySpec, Phase};

    fn api_key(name: &str, resource_version: &str, phase: Option<Phase>) -> ApiKey {
        let mut api_key = ApiKey::new(
            name,
            serde_json::from_value::<ApiKeySpec>(serde_json::json!({"project": "p", "owner": "o"}))
                .expect("spec"),
        );
        api_key.metadata.namespace = Some("ns".into());
        api_key.metadata.resource_version = Some(resource_version.into());
        api_key.metadata.generation = Some(1);
        api_key.status = phase.map(|phase| ApiKeyStatus {
            phase: Some(phase),
            ..ApiKeyStatus::default()
        });
        api_key
    }

    fn watched(k: ApiKey) -> GuardedApiKey {
        GuardedApiKey(Ok(k))
    }

    fn pending() -> ApiKeyStatus {
        api_key("a", "0", Some(Phase::Pending))
            .status
            .expect("status")
    }

    #[test]
    fn only_the_echo_of_a_recorded_write_is_skipped_and_only_once() {
        let own = OwnWrites::default();
        assert!(
            !own.is_echo(&watched(api_key("a", "10", None))),
            "nothing recorded"
        );
        let read = api_key("a", "10", None);
        own.expect(&read, &pending());
        own.written(&read, Some("11".into()));
        assert!(
            !own.is_echo(&watched(api_key("b", "11", None))),
            "another ApiKey"
        );
        assert!(own.is_echo(&watched(api_key("a", "11", Some(Phase::Pending)))));
        let again = watched(api_key("a", "11", Some(Phase::Pending)));
        assert!(!own.is_echo(&again), "a relist of it is not");
    }

    #[test]
    fn an_echo_before_the_answer_is_known_by_its_content() {
        let own = OwnWrites::default();
        let read = api_key("a", "10", None);
        own.expect(&read, &pending());
        // A late event of the version read keeps the wait.
        assert!(!own.is_echo(&watched(api_key("a", "10", None))));
        assert!(own.is_echo(&watched(api_key("a", "11", Some(Phase::Pending)))));
    }

    #[test]
    fn another_change_passes_and_ends_the_wait() {
        let own = OwnWrites::default();
        let read = api_key("a", "10", None);
        own.expect(&read, &pending());
        let mut changed = api_key("a", "11", Some(Phase::Pending));
        changed.metadata.generation = Some(2);
        assert!(!own.is_echo(&watched(changed)), "a spec change is no echo");
        assert!(own.lock().is_empty());
        own.expect(&read, &pending());
        own.forget(&read);
        assert!(own.lock().is_empty());
    }

    #[test]
    fn an_echo_matches_with_times_at_the_precision_the_api_server_keeps() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let own = OwnWrites::default();
        let read = api_key("a", "10", None);
        let at = |s: &str| Time(s.parse().expect("time"));
        let mut status = pending();
        status.conditions.push(Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "KubernetesApi".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: at("2027-01-01T00:00:00.123456Z"),
        });
        own.expect(&read, &status);
        let mut echo = api_key("a", "11", None);
        let mut stored = status.clone();
        stored.conditions[0].last_transition_time = at("2027-01-01T00:00:00Z");
        echo.status = Some(stored);
        assert!(own.is_echo(&watched(echo)));
    }
}
