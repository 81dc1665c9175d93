//! The ProjectGrant watch: every namespace's grant (the one named
//! `projects`; the admission policy reads no other) into `grant::Grants`,
//! so that a reconcile checks a key's project without a request. When a
//! namespace's grant changes, its keys that wait — a key refused for its
//! project waits like one refused for a full quota — are reconciled again:
//! a new grant mints them, a withdrawn one refuses the ones not yet minted.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch::Sender;
use tracing::{info, warn};

use crate::apikey::{GuardedApiKey, Phase};
use crate::grant::{GRANT_NAME, Grants, ProjectGrant, Projects};
use crate::runtime::cache::ApiKeyCache;

/// Watches `api` into `grants` for as long as it runs; `listed` turns true
/// once the first list is in (keymint reconciles nothing before: a key
/// reconciled against no grants yet would be refused by mistake).
pub async fn watch_grants(
    api: Api<ProjectGrant>,
    grants: Arc<Grants>,
    cache: Arc<ApiKeyCache>,
    wake: UnboundedSender<ObjectRef<GuardedApiKey>>,
    listed: Sender<bool>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={GRANT_NAME}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut relist: Option<HashMap<String, Projects>> = None;
    while let Some(event) = events.next().await {
        let changed = match event {
            Ok(Event::Apply(grant)) => {
                let namespace = grant.namespace().unwrap_or_default();
                let projects = Projects::of(&grant.spec);
                match grants.set(&namespace, Some(projects)) {
                    true => vec![namespace],
                    false => Vec::new(),
                }
            }
            Ok(Event::Delete(grant)) => {
                let namespace = grant.namespace().unwrap_or_default();
                match grants.set(&namespace, None) {
                    true => vec![namespace],
                    false => Vec::new(),
                }
            }
            Ok(Event::Init) => {
                relist = Some(HashMap::new());
                Vec::new()
            }
            Ok(Event::InitApply(grant)) => {
                let namespace = grant.namespace().unwrap_or_default();
                relist
                    .get_or_insert_default()
                    .insert(namespace, Projects::of(&grant.spec));
                Vec::new()
            }
            Ok(Event::InitDone) => {
                let changed = grants.replace(relist.take().unwrap_or_default());
                if !listed.send_replace(true) {
                    info!("project grants listed");
                }
                changed
            }
            Err(e) => {
                warn!(error = %e, "watching ProjectGrants");
                Vec::new()
            }
        };
        for namespace in changed {
            wake_waiting(&cache, &namespace, &wake);
        }
    }
}

/// Reconciles the keys of `namespace` that may be waiting: never minted,
/// by their cached phase (the reconcile judges each by the one rule).
fn wake_waiting(
    cache: &ApiKeyCache,
    namespace: &str,
    wake: &UnboundedSender<ObjectRef<GuardedApiKey>>,
) {
    let waiting = cache.pick(|k| {
        k.namespace_word().is_some_and(|n| &**n == namespace)
            && matches!(k.phase(), None | Some(Phase::Pending | Phase::Rejected))
    });
    for reference in waiting.references() {
        let _ = wake.unbounded_send(reference);
    }
}
