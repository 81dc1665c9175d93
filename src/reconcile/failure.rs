//! When a reconcile fails: retry with per-object backoff, log and count
//! every failure, publish a Warning Event when a failure starts or changes
//! its kind (not on every retry: a failing control plane is not sent an
//! Event per attempt — 30,000 in two minutes in the benchmark's etcd
//! outage), and show a key that is not minted yet as Pending with the
//! failure's words, so `kubectl get` says why within a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use super::error::{Category, Error};
use super::{Context, act, report};
use crate::apikey::lifecycle::{self, Outcome, StatusInput};
use crate::apikey::{ApiKey, GuardedApiKey, Phase, secret};

/// Consecutive failures, and the category of the last one.
type Streak = (u32, Option<Category>);

/// Per ApiKey: its current streak of failures.
#[derive(Default)]
pub struct Failures {
    by_key: Mutex<HashMap<ObjectRef<GuardedApiKey>, Streak>>,
}

impl Failures {
    /// Records a failure; returns how many in a row, and whether its kind
    /// differs from the previous one's.
    fn record(&self, key: ObjectRef<GuardedApiKey>, category: Category) -> (u32, bool) {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let (n, last) = by_key.entry(key).or_insert((0, None));
        *n = n.saturating_add(1);
        let new_kind = *last != Some(category);
        *last = Some(category);
        (*n, new_kind)
    }

    /// Whether the key is between failed attempts: its retry is scheduled,
    /// and waking it sooner would cut the backoff short.
    pub fn backing_off(&self, key: &ObjectRef<GuardedApiKey>) -> bool {
        let by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key.contains_key(key)
    }

    /// A reconcile succeeded: the next failure starts afresh.
    pub fn clear(&self, api_key: &ApiKey) {
        let reference =
            ObjectRef::new(&api_key.name_any()).within(&api_key.namespace().unwrap_or_default());
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key.remove(&reference);
    }
}

/// The controller's error policy. Retries back off exponentially per
/// ApiKey, from 1 s to `max_backoff`; a race is retried at once. Returns
/// when to retry.
pub fn error_policy(obj: Arc<GuardedApiKey>, error: &Error, ctx: Arc<Context>) -> Duration {
    let reference = ObjectRef::from_obj(&*obj);
    let category = error.category();
    if category.is_race() {
        debug!(apikey = %reference, "{error}; retrying");
        return Duration::from_millis(50);
    }
    ctx.reporter.metrics.count_failure(category.as_str());
    let (failures, new_kind) = ctx.failures.record(reference.clone(), category);
    let delay = backoff(failures, ctx.max_backoff);
    warn!(apikey = %reference, category = category.as_str(), retry_in = ?delay, "{error}");
    if new_kind {
        let message = error.to_string();
        tokio::spawn(async move { report_failure(&obj, category, &message, delay, &ctx).await });
    }
    delay
}

/// The failure in the key's status (if it is not minted yet) and in a
/// Warning Event, in the same words.
async fn report_failure(
    obj: &GuardedApiKey,
    category: Category,
    message: &str,
    delay: Duration,
    ctx: &Context,
) {
    if let Ok(api_key) = &obj.0 {
        show_pending(api_key, category, message, ctx).await;
    }
    let note = format!("{message}; retrying in {}s", delay.as_secs());
    let reference = obj.object_ref(&());
    report::warning(&ctx.reporter.recorder, &reference, category.as_str(), &note).await;
}

/// A key that is not minted yet and not otherwise decided shows the
/// failure as phase Pending, `Ready=False` and `Reconciling=True`, reason
/// the category, message the failure. Written only when it changes; a
/// write that loses to a newer version is dropped (the next reconcile
/// decides again).
async fn show_pending(api_key: &ApiKey, category: Category, message: &str, ctx: &Context) {
    let status = api_key.status.as_ref();
    let undecided = matches!(status.and_then(|s| s.phase), None | Some(Phase::Pending));
    if !undecided || lifecycle::minted(status) || api_key.metadata.deletion_timestamp.is_some() {
        return;
    }
    let input = StatusInput {
        current: status,
        unrecorded_key: None,
        generation: api_key.metadata.generation,
        secret_name: &secret::name(api_key),
        expires_at: api_key.spec.expires_at.as_ref().map(|t| t.0),
        expiry_warning: ctx.expiry_warning,
        now: Timestamp::now(),
    };
    let outcome = Outcome::Retrying {
        reason: category.as_str(),
        message: message.to_string(),
    };
    let desired = lifecycle::status(&input, &outcome);
    if lifecycle::needs_write(status, &desired)
        && let Err(e) = act::write_status(&ctx.client, &ctx.own_writes, api_key, &desired).await
    {
        debug!(error = %e, "could not show the failure in the status");
    }
}

/// 1 s, 2 s, 4 s, ... capped at `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    Duration::from_secs(1u64 << exp).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        let delays: Vec<u64> = (1..=11).map(|n| backoff(n, cap).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX, cap), cap);
    }

    #[test]
    fn a_failure_of_another_kind_is_new() {
        let failures = Failures::default();
        let key = ObjectRef::new("k").within("ns");
        assert_eq!(
            failures.record(key.clone(), Category::KubernetesApi),
            (1, true)
        );
        assert_eq!(
            failures.record(key.clone(), Category::KubernetesApi),
            (2, false)
        );
        assert_eq!(failures.record(key, Category::AuditStream), (3, true));
    }
}
