//! The floor: a direct client doing only the writes a key essentially needs
//! — create its Secret (the same Secret keymint builds, ownerReference
//! included) and patch the ApiKey's status to Active; at `expiresAt`, delete
//! the Secret and patch the status to Expired. Same language and client
//! library as keymint, same client settings (kubeconfig, kube's defaults; a
//! user agent of its own), same concurrency (16 keys in flight).
//!
//! No finalizer, no quota ledger, no audit stream, no Events, no
//! verification reads: it is what the API server and etcd cost for the
//! user-visible outcome, and every keymint figure is a ratio to it.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::lifecycle::{self, Outcome, StatusInput};
use keymint::apikey::provenance::{self, SealKey};
use keymint::apikey::{ApiKey, ApiKeyStatus};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Api, Client, Config, ResourceExt};
use tokio::sync::Semaphore;

use crate::Result;

pub const ROLE_ENV: &str = "KEYMINT_BENCH_ROLE";
pub const NAMESPACE_ENV: &str = "KEYMINT_BENCH_NAMESPACE";
pub const CONCURRENCY_ENV: &str = "KEYMINT_BENCH_CONCURRENCY";
pub const READY_LINE: &str = "floor: watch synced; ready";

/// keymint's default warning lead: the floor's status has the same shape.
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);

pub fn main() -> ExitCode {
    // The same runtime keymint's #[tokio::main] builds.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Floor {
    api_keys: Api<ApiKey>,
    secrets: Api<Secret>,
    permits: Semaphore,
    /// Seals each Secret as keymint does (in memory: no call of its own).
    seal_key: SealKey,
}

async fn run() -> Result<()> {
    let namespace = std::env::var(NAMESPACE_ENV)?;
    let concurrency: usize = std::env::var(CONCURRENCY_ENV)?.parse()?;
    let mut config = Config::infer().await?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(crate::cluster::FLOOR_AGENT),
    ));
    let client = Client::try_from(config)?;
    let floor = Arc::new(Floor {
        api_keys: Api::namespaced(client.clone(), &namespace),
        secrets: Api::namespaced(client, &namespace),
        permits: Semaphore::new(concurrency),
        seal_key: SealKey::from_bytes(&provenance::fresh_key_bytes()?)?,
    });
    let mut seen: HashSet<String> = HashSet::new();
    let mut events = watcher(floor.api_keys.clone(), watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(key) | watcher::Event::InitApply(key)) => {
                let uid = key.uid().unwrap_or_default();
                let fresh = key.status.as_ref().and_then(|s| s.phase).is_none()
                    && key.metadata.deletion_timestamp.is_none();
                if fresh && seen.insert(uid) {
                    tokio::spawn(handle(floor.clone(), key));
                }
            }
            Ok(watcher::Event::InitDone) => eprintln!("{READY_LINE}"),
            Ok(_) => {}
            Err(e) => eprintln!("floor: watch: {e}"),
        }
    }
    Ok(())
}

/// Mints, then (with an expiry) waits for it and expires.
async fn handle(floor: Arc<Floor>, key: ApiKey) {
    let name = key.name_any();
    let active = {
        let _permit = floor.permits.acquire().await;
        retry(&name, "mint", || mint(&floor, &key)).await
    };
    let (Some(active), Some(expires_at)) = (active, key.spec.expires_at.as_ref()) else {
        return;
    };
    let wait = expires_at.0.duration_since(Timestamp::now());
    if let Ok(wait) = Duration::try_from(wait) {
        tokio::time::sleep(wait).await;
    }
    let _permit = floor.permits.acquire().await;
    retry(&name, "expire", || expire(&floor, &key, &active)).await;
}

async fn retry<T, F, Fut>(name: &str, what: &str, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    for attempt in 1..=5 {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => {
                eprintln!("floor: {what} {name} (attempt {attempt}): {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    None
}

async fn mint(floor: &Floor, key: &ApiKey) -> Result<(ApiKeyStatus, String)> {
    let minted = keymint::apikey::key::mint()?;
    let secret = keymint::apikey::secret::build(key, &minted, &floor.seal_key);
    let secret_name = keymint::apikey::secret::name(key);
    let created = match floor.secrets.create(&PostParams::default(), &secret).await {
        Ok(created) => created,
        // A retry after a lost response: the Secret is there.
        Err(kube::Error::Api(s)) if s.code == 409 => floor.secrets.get(&secret_name).await?,
        Err(e) => return Err(e.into()),
    };
    let status = lifecycle::status(
        &StatusInput {
            unrecorded_key: None,
            current: None,
            generation: key.metadata.generation,
            secret_name: &secret_name,
            expires_at: key.spec.expires_at.as_ref().map(|t| t.0),
            expiry_warning: EXPIRY_WARNING,
            now: Timestamp::now(),
        },
        &Outcome::Active {
            key_id: keymint::apikey::key::key_id(&minted),
            key_hash: keymint::apikey::key::hash(&minted),
            minted_at: created.metadata.creation_timestamp.as_ref().map(|t| t.0),
        },
    );
    patch_status(floor, key, &status).await?;
    Ok((status, created.uid().unwrap_or_default()))
}

async fn expire(floor: &Floor, key: &ApiKey, active: &(ApiKeyStatus, String)) -> Result<()> {
    let (status, secret_uid) = active;
    let secret_name = keymint::apikey::secret::name(key);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(secret_uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match floor.secrets.delete(&secret_name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let expired = lifecycle::status(
        &StatusInput {
            unrecorded_key: None,
            current: Some(status),
            generation: key.metadata.generation,
            secret_name: &secret_name,
            expires_at: key.spec.expires_at.as_ref().map(|t| t.0),
            expiry_warning: EXPIRY_WARNING,
            now: Timestamp::now(),
        },
        &Outcome::Expired,
    );
    patch_status(floor, key, &expired).await
}

async fn patch_status(floor: &Floor, key: &ApiKey, status: &ApiKeyStatus) -> Result<()> {
    let patch = serde_json::json!({ "status": status });
    floor
        .api_keys
        .patch_status(
            &key.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}
