//! Which projects a namespace may use: the `ProjectGrant` resource that
//! cluster admins write (one per namespace, named `projects`), its CRD, the
//! rule "may this namespace use this project" (`rule`) and the grants as
//! keymint last watched them (`grants`). Pure: the watch that fills the
//! grants is `runtime::grants`.
//!
//! The chart's admission policy reads the same resource as its parameters,
//! so admission and keymint agree; keymint checks again before it mints, so
//! a cluster without the policy (or with it in Warn mode) still mints no
//! key for a project its namespace was not granted.

pub mod crd;
pub mod grants;
pub mod resource;
pub mod rule;

pub use grants::Grants;
pub use resource::{GRANT_NAME, ProjectGrant, ProjectGrantSpec};
pub use rule::{NotGranted, Projects};
