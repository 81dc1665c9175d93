//! The ApiKey and everything decided about it from what keymint observed:
//! the resource and its CRD, the key format, the Secret that holds a key,
//! and the lifecycle (next step, status, transitions). Pure: no API calls.

pub mod action;
pub mod crd;
pub mod key;
pub mod lifecycle;
pub mod resource;
pub mod secret;

pub use resource::{
    AnnotationValue, ApiKey, ApiKeySpec, ApiKeyStatus, LabelValue, Phase, SecretTemplate,
    TransitionRecord, TransitionTime, unreadable_field,
};

/// An ApiKey as the controller's watch delivers it: one that cannot be read
/// is kept as an error instead of stalling the watch for every other key.
pub type GuardedApiKey = kube::core::DeserializeGuard<ApiKey>;
