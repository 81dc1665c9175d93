//! The controller's workers: `--concurrency` of them, each taking the next
//! due ApiKey from the work queue and reconciling it, one key at a time.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::ObjectRef;
use tokio::task::{JoinError, JoinSet};
use tracing::{debug, error, warn};

use crate::apikey::GuardedApiKey;
use crate::reconcile::{self, Context, Next};
use crate::runtime::cache::ApiKeyCache;
use crate::runtime::queue::WorkQueue;

/// A queued key is held twice (in line, and in the set that keeps it
/// queued once): shared, it costs one copy of its name and namespace.
pub type Queue = WorkQueue<Arc<ObjectRef<GuardedApiKey>>>;

/// Queues every key the triggers name, until they end.
pub async fn feed<E: std::fmt::Display>(
    triggers: impl Stream<Item = Result<ObjectRef<GuardedApiKey>, E>>,
    queue: Arc<Queue>,
) {
    futures::pin_mut!(triggers);
    while let Some(trigger) = triggers.next().await {
        match trigger {
            Ok(key) => queue.add(Arc::new(key)),
            Err(e) => warn!(error = %e, "watching ApiKeys"),
        }
    }
}

/// Runs the workers until the queue is shut down and their reconciles in
/// flight are done.
pub async fn work(queue: Arc<Queue>, cache: Arc<ApiKeyCache>, ctx: Arc<Context>, concurrency: u16) {
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(worker(queue.clone(), cache.clone(), ctx.clone()));
    }
    workers.join_all().await;
}

async fn worker(queue: Arc<Queue>, cache: Arc<ApiKeyCache>, ctx: Arc<Context>) {
    while let Some(key) = queue.next().await {
        // Gone from the cache: deleted, nothing left to do.
        if let Some(api_key) = cache.get(&key)
            && let Next::After(delay) = run(api_key, &key, &ctx).await
        {
            queue.add_after(key.clone(), delay);
        }
        queue.done(&key);
    }
}

/// One reconcile, in a task of its own: a panic in it is this key's
/// failure (logged, retried after the longest backoff), not the worker's.
async fn run(
    api_key: Arc<GuardedApiKey>,
    key: &ObjectRef<GuardedApiKey>,
    ctx: &Arc<Context>,
) -> Next {
    let reconciled = tokio::spawn(reconcile::reconcile(api_key.clone(), ctx.clone())).await;
    let on_error = |e| reconcile::error_policy(api_key, &e, ctx.clone());
    next_after(reconciled, key, on_error, ctx.max_backoff)
}

/// What comes next for a key, from how its reconcile's task ended.
fn next_after(
    ended: Result<Result<Next, reconcile::Error>, JoinError>,
    key: &ObjectRef<GuardedApiKey>,
    on_error: impl FnOnce(reconcile::Error) -> Duration,
    longest_backoff: Duration,
) -> Next {
    match ended {
        Ok(Ok(next)) => {
            debug!(apikey = %key, "reconciled");
            next
        }
        Ok(Err(e)) => Next::After(on_error(e)),
        Err(panicked) => {
            error!(apikey = %key, error = %panicked, "reconcile panicked");
            Next::After(longest_backoff)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reconcile_that_panics_is_retried_after_the_longest_backoff() {
        let key = ObjectRef::new("k").within("ns");
        let longest = Duration::from_secs(300);
        let panicked = tokio::spawn(async { panic!("a bug in one reconcile") }).await;
        let next = next_after(panicked, &key, |_| Duration::ZERO, longest);
        assert_eq!(next, Next::After(longest));
    }

    #[tokio::test]
    async fn a_failed_reconcile_is_retried_when_the_error_policy_says() {
        let key = ObjectRef::new("k").within("ns");
        let failed = tokio::spawn(async { Err(reconcile::Error::Stale) }).await;
        let next = next_after(failed, &key, |_| Duration::from_secs(4), Duration::MAX);
        assert_eq!(next, Next::After(Duration::from_secs(4)));
        let done = tokio::spawn(async { Ok(Next::OnChange) }).await;
        assert_eq!(
            next_after(done, &key, |_| Duration::ZERO, Duration::MAX),
            Next::OnChange
        );
    }
}
