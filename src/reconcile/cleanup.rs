//! An ApiKey being deleted: delete its Secret (only one it controls — the
//! garbage collector would delete that one too — by UID), record
//! the deletion, and let the finalizer go. Its ledger entry is dropped when
//! an admission needs the slot and finds the ApiKey gone; its deletion from
//! the watch wakes the keys waiting for it.

use super::act::KeySecret;
use super::{Context, Error};
use crate::apikey::ApiKey;
use crate::apikey::secret::Observed;

pub async fn cleanup(api_key: &ApiKey, ctx: &Context) -> Result<(), Error> {
    ctx.reporter.catch_up(api_key).await?;
    let secret = KeySecret::of(&ctx.client, &ctx.seal_key, api_key);
    let secret_deleted = match secret.observe().await? {
        Observed::Controlled {
            uid: Some(secret_uid),
            ..
        } => {
            secret.delete(secret_uid).await?;
            true
        }
        _ => false,
    };
    // Durable before the finalizer goes: the last word on this ApiKey.
    ctx.reporter.deleted(api_key, secret_deleted).await?;
    Ok(())
}
