//! The quota ledgers in the API server: one ConfigMap per (project, owner)
//! in keymint's namespace, read directly (never from a cache) and written
//! with optimistic concurrency. A key is recorded here before it is minted
//! and removed only after its Secret is gone (lazily, when the slot is
//! needed), so the ledger never undercounts — across restarts and across
//! replicas. A missing ledger is reported as such, for the caller to
//! rebuild (`quota::rebuild`): never read as empty.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;

use crate::apikey::secret::{LABEL_MANAGED_BY, MANAGER};
use crate::configmap::{CasError, compare_and_swap};
use crate::quota::{Ledger, Pair};

pub const LABEL_LEDGER: &str = "keymint.dev/ledger";

/// A ledger as read, with the version to write it back against.
#[derive(Clone)]
pub struct Versioned {
    pub ledger: Ledger,
    resource_version: Option<String>,
    /// Rebuilt from the ApiKeys and not written yet: write it even when
    /// nothing else changes, so that it is rebuilt once.
    pub rebuilt: bool,
}

/// A ledger as found in the API server.
pub enum Loaded {
    Found(Versioned),
    /// The ConfigMap, or its data key, is missing: rebuild the entries.
    Missing(Missing),
}

/// Where a missing ledger is to be written: created, or (a ConfigMap
/// without its data key) replaced against the version read.
pub struct Missing {
    resource_version: Option<String>,
}

impl Missing {
    /// The ledger rebuilt from the ApiKeys, to be written.
    pub fn rebuilt(self, ledger: Ledger) -> Versioned {
        Versioned {
            ledger,
            resource_version: self.resource_version,
            rebuilt: true,
        }
    }
}

/// Why a ledger could not be read or written. Each names the ledger; the
/// API server's own words come from the source.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Someone else wrote the ledger since it was read: read it again.
    #[error("quota ledger {0} changed concurrently")]
    Conflict(String),
    #[error(
        "quota ledger {name} is unreadable ({reason}); keys of this owner and project wait until its `admitted` data is repaired (see docs/how-it-works.md, \"Repairing a ledger\": deleted while keymint is stopped, it is rebuilt from the ApiKeys)"
    )]
    Corrupt { name: String, reason: String },
    #[error("cannot read quota ledger ConfigMap {name}: {}", crate::api_error::describe(.source))]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write quota ledger ConfigMap {name}: {}", crate::api_error::describe(.source))]
    Write {
        name: String,
        #[source]
        source: kube::Error,
    },
}

pub async fn load(api: &Api<ConfigMap>, pair: &Pair<'_>) -> Result<Loaded, LedgerError> {
    let name = pair.ledger_name();
    let read = api.get_opt(&name).await;
    let Some(cm) = read.map_err(|source| LedgerError::Read {
        name: name.clone(),
        source,
    })?
    else {
        return Ok(Loaded::Missing(Missing {
            resource_version: None,
        }));
    };
    let json = cm.data.as_ref().and_then(|d| d.get(Ledger::DATA_KEY));
    let Some(json) = json else {
        return Ok(Loaded::Missing(Missing {
            resource_version: cm.metadata.resource_version,
        }));
    };
    let ledger = Ledger::from_json(json).map_err(|e| LedgerError::Corrupt {
        name: name.clone(),
        reason: e.to_string(),
    })?;
    Ok(Loaded::Found(Versioned {
        ledger,
        resource_version: cm.metadata.resource_version,
        rebuilt: false,
    }))
}

/// Writes the ledger back: create when it did not exist, replace with the
/// read resourceVersion otherwise. Either way a concurrent writer (or a
/// deletion since the read) makes this fail with [`LedgerError::Conflict`]
/// instead of losing its write.
/// On success `versioned` carries the version just written.
pub async fn save(
    api: &Api<ConfigMap>,
    pair: &Pair<'_>,
    versioned: &mut Versioned,
) -> Result<(), LedgerError> {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(pair.ledger_name()),
            resource_version: versioned.resource_version.clone(),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_string(), MANAGER.to_string()),
                (LABEL_LEDGER.to_string(), "quota".to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                ("keymint.dev/project".to_string(), pair.project.to_string()),
                ("keymint.dev/owner".to_string(), pair.owner.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            Ledger::DATA_KEY.to_string(),
            versioned.ledger.to_json(),
        )])),
        ..ConfigMap::default()
    };
    match compare_and_swap(api, &cm).await {
        Ok(version) => {
            versioned.resource_version = version;
            versioned.rebuilt = false;
            Ok(())
        }
        Err(CasError::Conflict(name)) => Err(LedgerError::Conflict(name)),
        // Replaced after it was deleted: read (and rebuild) it again. (A
        // create's 404 is a missing namespace, reported as it is.)
        Err(CasError::Api(kube::Error::Api(status)))
            if status.code == 404 && versioned.resource_version.is_some() =>
        {
            Err(LedgerError::Conflict(pair.ledger_name()))
        }
        Err(CasError::Api(source)) => Err(LedgerError::Write {
            name: pair.ledger_name(),
            source,
        }),
    }
}
