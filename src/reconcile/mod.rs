//! Reconciling one ApiKey: observe (the ApiKey and the Secret under its
//! name), decide (`apikey::lifecycle`, `quota::admission` — pure), act (a
//! short list of API calls, `act`), in this order:
//!
//! 1. The Secret is the commit point: creating it under its deterministic
//!    name is what "minted" means. AlreadyExists means "already minted" —
//!    adopt it if keymint proves it minted it for this ApiKey (its seal,
//!    `apikey::provenance`), report a conflict if not, never overwrite.
//! 2. A key is minted only for a project its namespace is granted (`grant`),
//!    and is recorded in its quota ledger before it is minted (`quota`).
//! 3. Secret first, then status (only when it changed, and only against the
//!    version that was observed), then the audit entry and the Event.

mod act;
mod apply;
mod cleanup;
pub mod error;
pub mod events;
mod failure;
pub mod own_writes;
pub mod report;
pub mod rounds;
pub mod unobserved;
mod unreadable;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Client, ResourceExt};

pub use error::{Category, Error};
pub use failure::{Failures, backoff, error_policy};

use crate::apikey::provenance::SealKey;
use crate::apikey::{ApiKey, GuardedApiKey};
use crate::grant::Grants;
use crate::quota::slots::Slots;
use own_writes::OwnWrites;
use report::Reporter;

/// Removed only after the Secret is deleted and the deletion reported.
pub const FINALIZER: &str = "keymint.dev/cleanup";

/// When to reconcile an ApiKey again, besides on its next change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    OnChange,
    After(Duration),
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// Audit entries and Events.
    pub reporter: Reporter,
    /// Quota slots: the ledgers, the cache of ApiKeys, the waiting index.
    pub slots: Slots,
    /// The projects each namespace is granted, as last watched (shared
    /// with `slots`, whose batch admissions ask it too).
    pub grants: Arc<Grants>,
    pub expiry_warning: Duration,
    pub verify_interval: Duration,
    /// How long after minting the owner of a show-once key has to
    /// acknowledge its reveal.
    pub reveal_window: Duration,
    pub max_backoff: Duration,
    /// Status writes whose echo on the watch is not reconciled.
    pub own_writes: OwnWrites,
    /// Consecutive failures per ApiKey, for backoff and one Event per kind.
    pub failures: Failures,
    /// Seals every minted Secret and proves a found one (read once at
    /// start-up, `runtime::seal_key`).
    pub seal_key: SealKey,
}

/// The controller's entry point for one ApiKey.
pub async fn reconcile(obj: Arc<GuardedApiKey>, ctx: Arc<Context>) -> Result<Next, Error> {
    let started = Instant::now();
    let result = match &obj.0 {
        Ok(api_key) => reconcile_readable(api_key, &ctx).await,
        Err(invalid) => unreadable::reconcile(&obj, &invalid.error, &ctx).await,
    };
    ctx.reporter
        .metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Apply, or clean up once the ApiKey is being deleted — keymint's
/// finalizer holds the object until the cleanup is done.
async fn reconcile_readable(api_key: &ApiKey, ctx: &Context) -> Result<Next, Error> {
    let api: Api<ApiKey> =
        Api::namespaced(ctx.client.clone(), &api_key.namespace().unwrap_or_default());
    // kube's finalizer helper passes only its own `Action` through; what
    // `apply` says comes next is kept here.
    let mut next = Next::OnChange;
    let result = finalizer(&api, FINALIZER, Arc::new(api_key.clone()), |event| {
        let next = &mut next;
        async move {
            match event {
                finalizer::Event::Apply(api_key) => *next = apply::apply(&api_key, ctx).await?,
                finalizer::Event::Cleanup(api_key) => cleanup::cleanup(&api_key, ctx).await?,
            }
            Ok(Action::await_change())
        }
    })
    .await;
    let result = match result {
        Ok(_) => {
            ctx.failures.clear(api_key);
            Ok(next)
        }
        Err(e) => finalizer_error(api_key, e),
    };
    // Done with an ApiKey being deleted: its finalizer is gone.
    if result.is_ok() && api_key.metadata.deletion_timestamp.is_some() {
        ctx.reporter.deletion_done(api_key);
    }
    result
}

/// What the finalizer helper's errors mean here.
fn finalizer_error(api_key: &ApiKey, error: finalizer::Error<Error>) -> Result<Next, Error> {
    let (namespace, name) = (api_key.namespace().unwrap_or_default(), api_key.name_any());
    let object = error::Object {
        namespace: &namespace,
        name: &name,
    };
    match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => Err(e),
        // Another instance finished the deletion first: nothing left to do.
        finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) if s.code == 404 => {
            Ok(Next::OnChange)
        }
        finalizer::Error::AddFinalizer(kube::Error::Api(s))
        | finalizer::Error::RemoveFinalizer(kube::Error::Api(s))
            if s.code == 409 || s.code == 422 =>
        {
            Err(Error::Stale)
        }
        finalizer::Error::AddFinalizer(e) => Err(object.finalizer("add", e)),
        finalizer::Error::RemoveFinalizer(e) => Err(object.finalizer("remove", e)),
        other => Err(Error::FinalizerRefused(
            api_key.name_any(),
            other.to_string(),
        )),
    }
}
