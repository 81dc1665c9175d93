//! The ConfigMaps keymint keeps for itself — quota ledgers and audit
//! segments — are written the same way: created when they did not exist,
//! replaced against the resourceVersion they were read at otherwise, so
//! that of two writers that read the same version only one wins.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::apikey::secret::MANAGER;

/// Why a compare-and-swap write did not land.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// Someone else wrote (or created) it since it was read: read it again.
    #[error("ConfigMap {0} changed since it was read")]
    Conflict(String),
    /// The API server refused or could not be reached.
    #[error("{0}")]
    Api(#[source] kube::Error),
}

/// Writes `cm` (whose metadata carries the resourceVersion it was read at,
/// or none if it did not exist) and returns the version written.
pub async fn compare_and_swap(
    api: &Api<ConfigMap>,
    cm: &ConfigMap,
) -> Result<Option<String>, CasError> {
    let params = PostParams {
        field_manager: Some(MANAGER.to_string()),
        ..PostParams::default()
    };
    let name = cm.name_any();
    let result = match cm.metadata.resource_version {
        None => api.create(&params, cm).await,
        Some(_) => api.replace(&name, &params, cm).await,
    };
    match result {
        Ok(written) => Ok(written.resource_version()),
        Err(kube::Error::Api(status)) if status.code == 409 => Err(CasError::Conflict(name)),
        Err(e) => Err(CasError::Api(e)),
    }
}
