//! The ApiKey and everything decided about it from what keymint observed:
//! the resource and its CRD, the key format, the Secret that holds a key,
//! and the lifecycle (next step, status, transitions). Pure: no API calls.

pub mod action;
pub mod cached;
pub mod crd;
pub mod key;
pub mod lean;
pub mod lifecycle;
pub mod provenance;
pub mod resource;
pub mod secret;

pub use lean::GuardedApiKey;
pub use resource::{
    AnnotationValue, ApiKey, ApiKeySpec, ApiKeyStatus, LabelValue, Phase, SecretTemplate,
    TEMPLATE_MAX_CHARS, TransitionRecord, TransitionTime, unreadable_field,
};
