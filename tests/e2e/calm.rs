//! Calm: a steady state costs no writes. Restarting the operator (a fresh
//! list of every ApiKey) and its periodic verifications change nothing.

use std::time::Duration;

use keymint::apikey::{ApiKey, Phase};
use kube::Api;
use kube::api::PostParams;

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, apiserver_audit, eventually, wait_for_phase};

const KEYS: usize = 20;

/// Waits until the operator has reconciled every key at least `rounds`
/// times (from its debug log), so that "no writes" is not "no work yet".
async fn wait_for_reconciles(operator: &Operator, rounds: usize) {
    eventually(Duration::from_secs(30), || async {
        operator.log().matches("reconciled").count() >= KEYS * rounds
    })
    .await;
}

#[tokio::test]
async fn restarts_and_relists_of_a_steady_state_write_nothing() {
    if apiserver_audit::path().is_none() {
        eprintln!("skipped: needs the local control plane's audit log");
        return;
    }
    let ns = TestNamespace::new("calm").await;
    let api: Api<ApiKey> = ns.api();
    let setup = apiserver_audit::mark();
    let mut first = Operator::start(&ns.name, &[]);
    for i in 0..KEYS {
        let mut key = api_key(&format!("key-{i:02}"), "calm", "alice@example.com");
        if i % 2 == 0 {
            // Some keys expire (far away) so that their expiry bookkeeping
            // is part of the steady state too.
            key.spec.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365),
            ));
        }
        api.create(&PostParams::default(), &key)
            .await
            .expect("create");
    }
    for i in 0..KEYS {
        wait_for_phase(
            &api,
            &format!("key-{i:02}"),
            Phase::Active,
            Duration::from_secs(30),
        )
        .await;
    }
    // Let the first operator finish what minting set off (Events).
    wait_for_reconciles(&first, 2).await;
    assert!(first.terminate(), "graceful shutdown exits 0");
    // The audit log does see keymint's writes: minting made some.
    let minting = apiserver_audit::keymint_writes_since(setup, &ns.name);
    let secret_creates: Vec<&str> = minting
        .iter()
        .filter(|w| w.verb == "create" && w.object_ref.resource == "secrets")
        .map(|w| w.object_ref.name.as_str())
        .collect();
    // The operator's namespace is the test's: its provenance seal key is
    // created there once, on the first start.
    let (own_keys, minted): (Vec<&str>, Vec<&str>) = secret_creates
        .into_iter()
        .partition(|name| keymint::runtime::key_secret::ALL.contains(name));
    assert_eq!(minted.len(), KEYS, "one Secret create per key");
    assert_eq!(
        own_keys.len(),
        keymint::runtime::key_secret::ALL.len(),
        "the seal key and the audit key are created once"
    );

    let mark = apiserver_audit::mark();
    for _ in 0..2 {
        // A restart lists every ApiKey afresh; with --verify-interval 2s each
        // key is also re-verified at least once while it runs.
        let operator = Operator::start(&ns.name, &[]);
        wait_for_reconciles(&operator, 2).await;
        drop(operator);
    }
    let writes = apiserver_audit::keymint_writes_since(mark, &ns.name);
    assert!(
        writes.is_empty(),
        "{} writes in a steady state: {:#?}",
        writes.len(),
        writes
            .iter()
            .map(|w| format!(
                "{} {}/{} {}",
                w.verb, w.object_ref.resource, w.object_ref.subresource, w.object_ref.name
            ))
            .collect::<Vec<_>>()
    );
    ns.delete().await;
}
