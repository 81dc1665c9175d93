//! The owner binding: `X-Keymint-Owner` is a fact only if an admission
//! policy binds each ApiKey's `spec.owner` to the user who created it (the
//! chart's `<release>-owner-binding`). keymint cannot check an owner itself —
//! who created an object is known only at admission — so `keymint run` and
//! `keymint verifier` check that the policy is installed and enforcing, and
//! refuse to start without it unless told `--allow-unbound-owners`.
//!
//! `judge` decides from the fetched objects (pure); this module fetches
//! them, gates start-up, and keeps checking every minute while running:
//! the gauge `keymint_owner_binding_enforced` follows, and a change is
//! logged. A policy removed while running is a warning and an alert, not an
//! exit: stopping the verifier would refuse every key, a worse outage than
//! the one it reports.

pub mod judge;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::ListParams;
use kube::{Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::api_error::describe;
use judge::Gap;

/// How often the binding is checked again while running.
const RECHECK: Duration = Duration::from_secs(60);

#[derive(clap::Args, Clone, Debug)]
pub struct OwnerBindingOptions {
    /// The ValidatingAdmissionPolicy that binds each ApiKey's owner to the
    /// user who creates it (the Helm chart's `<release>-owner-binding`).
    /// keymint starts only if it exists and one of its bindings denies, for
    /// every namespace.
    #[arg(
        long,
        env = "KEYMINT_OWNER_BINDING_POLICY",
        default_value = "keymint-owner-binding"
    )]
    pub owner_binding_policy: String,

    /// Start even if the owner binding is not enforced. Owners are then
    /// whatever the creator writes: anyone who may create an ApiKey mints
    /// one that verifies as any owner.
    #[arg(long, env = "KEYMINT_ALLOW_UNBOUND_OWNERS")]
    pub allow_unbound_owners: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnerBindingError {
    #[error(
        "the owner binding is not enforced: {0}. Without it an ApiKey's owner is whatever its creator writes. Install the Helm chart's owner binding (ownerBinding.validationActions [Deny], no namespaceSelector), name your own policy with --owner-binding-policy, or run with --allow-unbound-owners (owners are then whatever the creator writes)"
    )]
    NotEnforced(#[source] Gap),
    #[error(
        "cannot read the owner binding (get validatingadmissionpolicies {policy}, list validatingadmissionpolicybindings): {}; grant both, as the Helm chart's RBAC does, or run with --allow-unbound-owners (owners are then whatever the creator writes)", describe(.source)
    )]
    Read {
        policy: String,
        #[source]
        source: kube::Error,
    },
}

/// Registers the gauge `keymint_owner_binding_enforced` in `registry`
/// (whose prefix is `keymint`): the same series on both processes.
pub fn register(registry: &mut Registry) -> Gauge {
    let gauge = Gauge::default();
    registry.register(
        "owner_binding_enforced",
        "1 while the owner-binding admission policy is installed and denying for every ApiKey, else 0 (owners are then whatever the creator writes)",
        gauge.clone(),
    );
    gauge
}

/// Checks the binding once, before serving: sets `enforced`, logs the
/// outcome, and refuses unless it is enforced or `--allow-unbound-owners`
/// says to run anyway. Then keeps checking in the background.
pub async fn gate(
    client: &Client,
    options: &OwnerBindingOptions,
    enforced: &Gauge,
) -> Result<(), OwnerBindingError> {
    let outcome = check(client, &options.owner_binding_policy).await;
    enforced.set(i64::from(matches!(outcome, Ok(Ok(_)))));
    match outcome {
        Ok(Ok(binding)) => info!(
            policy = %options.owner_binding_policy,
            %binding,
            "owner binding enforced: an ApiKey's owner is the user who created it"
        ),
        Ok(Err(gap)) if !options.allow_unbound_owners => {
            return Err(OwnerBindingError::NotEnforced(gap));
        }
        Err(source) if !options.allow_unbound_owners => {
            return Err(OwnerBindingError::Read {
                policy: options.owner_binding_policy.clone(),
                source,
            });
        }
        Ok(Err(gap)) => warn!(
            "owner binding not enforced ({gap}); running anyway (--allow-unbound-owners): owners are whatever the creator writes"
        ),
        Err(e) => warn!(
            "owner binding unknown (cannot read it: {}); running anyway (--allow-unbound-owners): owners are whatever the creator writes",
            describe(&e)
        ),
    }
    tokio::spawn(keep_checking(
        client.clone(),
        options.owner_binding_policy.clone(),
        enforced.clone(),
    ));
    Ok(())
}

/// Every minute: the gauge follows, and a change is logged.
async fn keep_checking(client: Client, policy: String, enforced: Gauge) {
    loop {
        tokio::time::sleep(RECHECK).await;
        let outcome = check(&client, &policy).await;
        let now = i64::from(matches!(outcome, Ok(Ok(_))));
        if enforced.set(now) == now {
            continue;
        }
        match outcome {
            Ok(Ok(binding)) => info!(%policy, %binding, "owner binding enforced again"),
            Ok(Err(gap)) => {
                warn!("owner binding no longer enforced ({gap}): new ApiKeys may name any owner")
            }
            Err(e) => warn!(
                "owner binding unknown (cannot read it: {}): treated as not enforced",
                describe(&e)
            ),
        }
    }
}

/// Fetches the policy and every binding, and judges them.
async fn check(client: &Client, policy: &str) -> Result<Result<String, Gap>, kube::Error> {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let found = policies.get_opt(policy).await?;
    // Bindings name their policy in spec.policyName, which no field
    // selector serves: all of them are listed (a cluster has a few).
    let all = bindings.list(&ListParams::default()).await?;
    Ok(judge::judge(policy, found.as_ref(), &all.items))
}
