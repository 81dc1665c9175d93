//! The ApiKey watch that feeds the index (list and watch ApiKeys, nothing
//! else). Each object is projected the moment it arrives and then dropped:
//! the verifier keeps 32 bytes of hash and a few strings per key, never the
//! ApiKey.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{debug, info, warn};

use crate::apikey::GuardedApiKey;
use crate::runtime::watch::{self, Pulse};
use crate::verify::index::{self, Change, Indexer, Projection};
use crate::verify::run::Shared;

/// Runs the watch for as long as the verifier runs; errors are retried with
/// kube's default backoff while the last complete index keeps answering,
/// for as long as `--max-staleness` allows. Every event and bookmark after
/// a complete list is a proof that the index is current (`freshness`).
pub async fn feed(api_keys: Api<GuardedApiKey>, shared: Arc<Shared>) {
    let mut indexer = Indexer::default();
    let pulsed = shared.clone();
    let on_pulse = Arc::new(move |pulse| match pulse {
        Pulse::WatchStarted => pulsed.freshness.watch_started(Instant::now()),
        Pulse::Bookmark => {
            debug!("ApiKey watch bookmark");
            pulsed.freshness.watched(Instant::now());
        }
    });
    let mut events = watch::with_pulse(api_keys, on_pulse)
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let change = match event {
            Ok(event) => change(event),
            Err(e) => {
                shared.freshness.watch_failed(Instant::now());
                shared.metrics.watch_errors.inc();
                warn!(error = %e, "ApiKey watch failed; retrying (answers come from the last complete list until --max-staleness)");
                continue;
            }
        };
        let proves = matches!(change, Change::Applied(..) | Change::Deleted(_));
        let observed = indexer.observe(change, &shared.index);
        if proves {
            shared.freshness.watched(Instant::now());
        }
        if let Some(contest) = observed.contest {
            warn!(
                holder = %contest.holder,
                claimant = %contest.claimant,
                key_id = contest.key_id.as_ref().map_or("-", |id| id.as_str()),
                "two Active ApiKeys claim one key hash: the key verifies for neither \
                 (keymint never mints a key twice, so one status was written by someone else)"
            );
        }
        let (keys, contested) = {
            let live = index::read(&shared.index);
            (live.len(), live.contested_hashes())
        };
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        shared.metrics.index_keys.set(gauge(keys));
        shared.metrics.contested_hashes.set(gauge(contested));
        if observed.listed {
            crate::runtime::memory::return_freed_memory();
            shared.metrics.relists.inc();
            if shared.freshness.listed(Instant::now()) {
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
