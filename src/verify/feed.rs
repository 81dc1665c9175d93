//! The ApiKey watch that feeds the index (list and watch ApiKeys, nothing
//! else). Each object is projected the moment it arrives and then dropped:
//! the verifier keeps 32 bytes of hash and a few strings per key, never the
//! ApiKey.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

use crate::apikey::GuardedApiKey;
use crate::runtime::watch::list_then_watch;
use crate::verify::index::{self, Change, Indexer, Projection};
use crate::verify::run::Shared;

/// Runs the watch for as long as the verifier runs; errors are retried with
/// kube's default backoff while the last complete index keeps answering.
pub async fn feed(api_keys: Api<GuardedApiKey>, shared: Arc<Shared>) {
    let mut indexer = Indexer::default();
    let mut events = list_then_watch(api_keys).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let change = match event {
            Ok(event) => change(event),
            Err(e) => {
                shared.metrics.watch_errors.inc();
                warn!(error = %e, "ApiKey watch failed; retrying (answers come from the last complete list)");
                continue;
            }
        };
        let listed = indexer.observe(change, &shared.index);
        let keys = index::read(&shared.index).len();
        shared
            .metrics
            .index_keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        if listed {
            crate::runtime::memory::return_freed_memory();
            shared.metrics.relists.inc();
            if !shared.synced.swap(true, Ordering::AcqRel) {
                info!(keys, "index synced; ready");
            } else {
                info!(keys, "index rebuilt from a fresh list");
            }
        }
    }
}

fn change(event: watcher::Event<GuardedApiKey>) -> Change {
    match event {
        watcher::Event::Init => Change::Reset,
        watcher::Event::InitApply(object) => {
            let (name, projection) = projected(object);
            Change::Listed(name, projection)
        }
        watcher::Event::InitDone => Change::ListDone,
        watcher::Event::Apply(object) => {
            let (name, projection) = projected(object);
            Change::Applied(name, projection)
        }
        watcher::Event::Delete(object) => Change::Deleted(index::object_name(&object)),
    }
}

/// An ApiKey that cannot be read has nothing the verifier could trust, so
/// it is not indexed (and any earlier entry for it goes).
fn projected(object: GuardedApiKey) -> (String, Option<Projection>) {
    let name = index::object_name(&object);
    let projection = match &object.0 {
        Ok(api_key) => index::project(api_key),
        Err(invalid) => {
            warn!(apikey = %name, error = %invalid.error, "unreadable ApiKey: not indexed");
            None
        }
    };
    (name, projection)
}
