//! The statuses keymint wrote, so that their echo on the watch does not
//! trigger another reconcile: the object that comes back is exactly what the
//! reconcile decided, and reconciling it again would only repeat the Secret
//! read (one GET per status write, a third of keymint's reads in a burst).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::apikey::GuardedApiKey;

/// Shared between the reconciles (which record) and the watch stream (which
/// asks).
#[derive(Clone, Default)]
pub struct OwnWrites {
    /// Per ApiKey, the resourceVersion of keymint's last status write whose
    /// echo has not arrived yet.
    written: Arc<Mutex<HashMap<ObjectRef<GuardedApiKey>, String>>>,
}

impl OwnWrites {
    pub fn record(&self, api_key: ObjectRef<GuardedApiKey>, resource_version: String) {
        self.lock().insert(api_key, resource_version);
    }

    /// Whether `api_key` as watched is the echo of keymint's own write. Any
    /// event for the object ends the wait for the echo (watch events come in
    /// order, so a different version means the echo was skipped by a relist
    /// or already superseded), which keeps the map as small as the writes in
    /// flight.
    pub fn is_echo(&self, api_key: &GuardedApiKey) -> bool {
        let Some(written) = self.lock().remove(&ObjectRef::from_obj(api_key)) else {
            return false;
        };
        api_key.resource_version().as_deref() == Some(written.as_str())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<GuardedApiKey>, String>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apikey::{ApiKey, ApiKeySpec};
    use kube::core::DeserializeGuard;

    fn api_key(name: &str, resource_version: &str) -> GuardedApiKey {
        let mut api_key = ApiKey::new(
            name,
            serde_json::from_value::<ApiKeySpec>(serde_json::json!({"project": "p", "owner": "o"}))
                .expect("spec"),
        );
        api_key.metadata.namespace = Some("ns".into());
        api_key.metadata.resource_version = Some(resource_version.into());
        DeserializeGuard(Ok(api_key))
    }

    #[test]
    fn only_the_echo_of_a_recorded_write_is_skipped_and_only_once() {
        let own = OwnWrites::default();
        assert!(!own.is_echo(&api_key("a", "10")), "nothing recorded");
        own.record(ObjectRef::from_obj(&api_key("a", "11")), "11".into());
        assert!(!own.is_echo(&api_key("b", "11")), "another ApiKey");
        assert!(own.is_echo(&api_key("a", "11")));
        assert!(!own.is_echo(&api_key("a", "11")), "a relist of it is not");
    }

    #[test]
    fn another_version_passes_and_ends_the_wait() {
        let own = OwnWrites::default();
        own.record(ObjectRef::from_obj(&api_key("a", "11")), "11".into());
        assert!(!own.is_echo(&api_key("a", "12")));
        assert!(!own.is_echo(&api_key("a", "11")));
        assert!(own.lock().is_empty());
    }
}
