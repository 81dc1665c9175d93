//! An ApiKey that is not being deleted: observe, decide, act, record.

use jiff::Timestamp;
use kube::ResourceExt;

use super::act::{self, KeySecret, Minted};
use super::{Context, Error, Next};
use crate::apikey::lifecycle::reveal::{self, ShowOnce};
use crate::apikey::lifecycle::{self, Outcome, StatusInput, Step};
use crate::apikey::secret::Observed;
use crate::apikey::{ApiKey, ApiKeyStatus, Phase, TransitionTime};
use crate::grant::NotGranted;
use crate::quota::slots::Slot;

/// Observes, decides, acts, and writes the status the outcome calls for.
pub async fn apply(api_key: &ApiKey, ctx: &Context) -> Result<Next, Error> {
    let now = Timestamp::now();
    // Transitions of an earlier reconcile that never reached the audit
    // stream (keymint stopped in between) come first.
    ctx.reporter.catch_up(api_key).await?;
    let secret = KeySecret::of(&ctx.client, &ctx.seal_key, api_key);
    let granted = ctx.grants.check(api_key);
    // A key waiting for a slot has no Secret, unless an attempt stopped
    // right after creating it: then its slot is already in the ledger and
    // creating the Secret finds it (AlreadyExists). Either way reading the
    // Secret first would only cost a request per attempt. A key whose
    // project is not granted has it read all the same: an attempt that
    // minted just before the grant went away is adopted, and keeps its
    // slot, rather than released while its Secret holds a key.
    let observed = match lifecycle::waits_for_slot(api_key, now) && granted.is_ok() {
        true => Observed::Missing,
        false => secret.observe().await?,
    };
    let (outcome, observed) = act_on(api_key, ctx, &secret, observed, granted, now).await?;
    let shown = record(api_key, ctx, &secret.name, &outcome, &observed, now).await?;
    Ok(next(api_key, ctx, &shown))
}

/// What a show-once ApiKey says besides its status: the owner's
/// acknowledgement, and the window keymint gives for it.
fn show_once<'a>(api_key: &'a ApiKey, ctx: &Context) -> Option<ShowOnce<'a>> {
    (api_key.spec.show_once == Some(true)).then(|| ShowOnce {
        acknowledged: api_key
            .annotations()
            .get(reveal::REVEALED_ANNOTATION)
            .map(String::as_str),
        window: ctx.reveal_window,
    })
}

/// Acts on what `decide` says until the outcome is settled: at most one
/// mint, and if the Secret turns out to exist already, one more decision on
/// what was found there. A key whose project its namespace is not granted
/// (`granted`) requests no slot and mints nothing. Returns the outcome and
/// the Secret as last seen.
async fn act_on(
    api_key: &ApiKey,
    ctx: &Context,
    secret: &KeySecret<'_>,
    mut observed: Observed,
    granted: Result<(), NotGranted>,
    now: Timestamp,
) -> Result<(Outcome, Observed), Error> {
    let status = api_key.status.as_ref();
    let expires_at = api_key.spec.expires_at.as_ref().map(|t| t.0);
    let mut tried_to_mint = false;
    let show_once = show_once(api_key, ctx);
    loop {
        let decided = lifecycle::decide(status, expires_at, now, &observed, show_once.as_ref());
        let outcome = match decided {
            Step::Settled(outcome) => outcome,
            // The Secret that made the create fail is gone again: start over.
            Step::RequestSlot if tried_to_mint => return Err(Error::Stale),
            Step::RequestSlot => match &granted {
                // A key admitted along with another just before its grant
                // went away gives that slot back.
                Err(not_granted) => {
                    ctx.slots.release(api_key).await?;
                    Outcome::ProjectNotGranted {
                        message: not_granted.to_string(),
                    }
                }
                Ok(()) => match ctx.slots.request(api_key).await? {
                    Slot::Denied { message } => Outcome::Rejected { message },
                    Slot::Granted => match secret.mint(api_key).await? {
                        Minted::Created { outcome, observed } => return Ok((outcome, observed)),
                        Minted::Exists(found) => {
                            (observed, tried_to_mint) = (found, true);
                            continue;
                        }
                    },
                },
            },
            // Deleted first; the ledger entry is dropped when an admission
            // needs the slot and finds the status Expired (written next).
            Step::Expire { delete_secret } => {
                if let Some(uid) = delete_secret {
                    secret.delete(uid).await?;
                }
                Outcome::Expired
            }
            Step::Conflict => {
                ctx.slots.release(api_key).await?;
                Outcome::Conflict
            }
            // Deleted before the status says so: a key nobody acknowledged
            // is left nowhere.
            Step::NeverShown { delete_secret } => {
                if let Some(uid) = delete_secret {
                    secret.delete(uid).await?;
                }
                Outcome::NeverShown
            }
        };
        return Ok((outcome, observed));
    }
}

/// Writes the status the outcome calls for (only if it changed), carrying
/// its transitions — the audit stream's outbox, should keymint stop before
/// appending them — then reports them. Returns the status it shows.
async fn record(
    api_key: &ApiKey,
    ctx: &Context,
    secret_name: &str,
    outcome: &Outcome,
    observed: &Observed,
    now: Timestamp,
) -> Result<ApiKeyStatus, Error> {
    let status = api_key.status.as_ref();
    let input = StatusInput {
        current: status,
        unrecorded_key: lifecycle::decide::unrecorded_key(status, observed),
        generation: api_key.metadata.generation,
        secret_name,
        expires_at: api_key.spec.expires_at.as_ref().map(|t| t.0),
        expiry_warning: ctx.expiry_warning,
        now,
    };
    let mut desired = lifecycle::status(&input, outcome);
    let transitions = lifecycle::transitions(status, &desired);
    if !transitions.is_empty() {
        let instance = &ctx.reporter.audit.instance;
        desired.last_transitions =
            lifecycle::number_transitions(status, &transitions, TransitionTime(now), instance);
    }
    if !lifecycle::needs_write(status, &desired) {
        return Ok(desired);
    }
    if !transitions.is_empty() {
        // Registered before the write that makes them: should keymint stop
        // before appending them, no audit write vouches for them meanwhile.
        ctx.reporter.expect(api_key, &desired.last_transitions);
    }
    act::write_status(&ctx.client, &ctx.own_writes, api_key, &desired).await?;
    if !transitions.is_empty() {
        let records = &desired.last_transitions;
        ctx.reporter.transitions(api_key, &desired, records).await?;
    }
    Ok(desired)
}

/// When to look at the key again.
fn next(api_key: &ApiKey, ctx: &Context, shown: &ApiKeyStatus) -> Next {
    let expires_at = api_key.spec.expires_at.as_ref().map(|t| t.0);
    let after = lifecycle::next_check(
        shown.phase.unwrap_or(Phase::Pending),
        expires_at,
        reveal::deadline(show_once(api_key, ctx).as_ref(), shown),
        Timestamp::now(),
        ctx.expiry_warning,
        ctx.verify_interval,
    );
    match after {
        Some(after) => Next::After(after),
        None => Next::OnChange,
    }
}
