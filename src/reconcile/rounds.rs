//! The periodic verification: every cached ApiKey that has key material is
//! reconciled once per `--verify-interval`, its keys spread evenly over the
//! interval, by one task walking the cache (a key backing off after a
//! failure is skipped: its retry is already scheduled). A requeue per key
//! would do the same, but the work queue would then hold a timer for every
//! key, for good; reconciles requeue only for deadlines the rounds could
//! miss (`lifecycle::next_check`), so at rest the queue is empty.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::apikey::cached::CachedApiKey;
use crate::apikey::lifecycle::verified_periodically;
use crate::reconcile::Context;

/// Runs rounds until the controller stops listening. The first round
/// starts one interval after start-up: every key was just reconciled by
/// the controller's initial list.
pub async fn verify_in_rounds(ctx: Arc<Context>) {
    let interval = ctx.verify_interval;
    tokio::time::sleep(interval).await;
    loop {
        let keys = ctx.slots.cache.pick(verified);
        if keys.is_empty() {
            tokio::time::sleep(interval).await;
            continue;
        }
        let count = u32::try_from(keys.len()).unwrap_or(u32::MAX);
        let mut pace = tokio::time::interval((interval / count).max(Duration::from_millis(1)));
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for reference in keys.references() {
            pace.tick().await;
            if ctx.failures.backing_off(&reference) {
                continue;
            }
            if ctx.slots.wake.unbounded_send(reference).is_err() {
                return;
            }
        }
    }
}

/// Unreadable keys are reported once and wait for a change; readable ones
/// are verified unless they have nothing left to verify.
fn verified(key: &CachedApiKey) -> bool {
    key.phase().is_some_and(verified_periodically)
}
