//! Robustness: one bad ApiKey (unreadable, or failing every reconcile)
//! never stalls the others; failing reconciles back off per object and
//! recover on their own once the cause is repaired.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use keymint::apikey::{ApiKey, Phase};
use keymint::quota::Pair;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, eventually, wait_for_phase, wait_for_warning};

/// ApiKeys as untyped objects: to write what the typed struct cannot.
fn untyped(ns: &TestNamespace) -> Api<DynamicObject> {
    Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::erase::<ApiKey>(&()),
    )
}

#[tokio::test]
async fn a_malformed_api_key_does_not_stall_the_others() {
    let ns = TestNamespace::new("malformed").await;
    let api: Api<ApiKey> = ns.api();
    // The schema refuses every malformed spec, but the API server's
    // date-time *format* check lets "00:00:00x5Z" through (any character may
    // stand before a fraction) and the typed struct does not. Status has no
    // extra pattern (it is keymint's to write), so a status written by
    // someone else with such a time makes an object keymint cannot read.
    api.create(
        &PostParams::default(),
        &api_key("malformed", "robust", "alice@example.com"),
    )
    .await
    .expect("create");
    untyped(&ns)
        .patch_status(
            "malformed",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "Garbage", "message": "",
                "lastTransitionTime": "2099-01-31T00:00:00x5Z",
            }]}})),
        )
        .await
        .expect("the API server accepts the malformed time in status");
    assert!(
        api.get("malformed").await.is_err(),
        "the typed struct must fail to read it, or this test proves nothing"
    );

    // Created after the malformed one, so they queue behind it.
    let _operator = Operator::start(&ns.name, &[]);
    let started = tokio::time::Instant::now();
    for i in 0..4 {
        api.create(
            &PostParams::default(),
            &api_key(&format!("good-{i}"), "robust", "alice@example.com"),
        )
        .await
        .expect("create");
    }
    for i in 0..4 {
        wait_for_phase(
            &api,
            &format!("good-{i}"),
            Phase::Active,
            Duration::from_secs(15),
        )
        .await;
    }
    assert!(started.elapsed() < Duration::from_secs(15));

    let note = wait_for_warning(&ns, "malformed", "InvalidSpec").await;
    assert!(
        note.contains("cannot read this ApiKey")
            && note.contains("status.conditions[0].lastTransitionTime"),
        "the note says what is wrong, and where: {note}"
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("malformed")
            .await
            .expect("get")
            .is_none(),
        "nothing was minted for the malformed ApiKey"
    );

    // Fixed, it is minted like any other.
    untyped(&ns)
        .patch_status(
            "malformed",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": null})),
        )
        .await
        .expect("clear the status");
    wait_for_phase(&api, "malformed", Phase::Active, Duration::from_secs(15)).await;
    ns.delete().await;
}

/// One line of the operator's text log: its time and text without colours.
fn log_lines(log: &str) -> Vec<(jiff::Timestamp, String)> {
    log.lines()
        .filter_map(|line| {
            let mut plain = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    // Skip an ANSI colour sequence: ESC [ ... m
                    for c in chars.by_ref() {
                        if c == 'm' {
                            break;
                        }
                    }
                } else {
                    plain.push(c);
                }
            }
            let (time, _) = plain.split_once(' ')?;
            Some((time.parse().ok()?, plain))
        })
        .collect()
}

/// The failed attempts the operator logged for ApiKey `name`: when, and
/// the retry delay it announced.
fn failed_attempts(log: &str, namespace: &str, name: &str) -> Vec<(jiff::Timestamp, Duration)> {
    let reference = format!("apikey=ApiKey.v1alpha1.keymint.dev/{name}.{namespace} ");
    log_lines(log)
        .into_iter()
        .filter(|(_, line)| line.contains(&reference) && line.contains("LedgerUnreadable"))
        .filter_map(|(time, line)| {
            let retry = line.split("retry_in=").nth(1)?.split_whitespace().next()?;
            let delay = if let Some(ms) = retry.strip_suffix("ms") {
                Duration::from_millis(ms.parse().ok()?)
            } else {
                Duration::from_secs_f64(retry.strip_suffix('s')?.parse().ok()?)
            };
            Some((time, delay))
        })
        .collect()
}

/// Checks the announced delays grow 1 s, 2 s, ... up to `cap`, and that the
/// attempts really were that far apart.
fn assert_backs_off(attempts: &[(jiff::Timestamp, Duration)], cap: Duration, name: &str) {
    for (i, (_, delay)) in attempts.iter().enumerate() {
        let expected = Duration::from_secs(1 << i.min(20)).min(cap);
        assert_eq!(
            *delay,
            expected,
            "{name}: attempt {} announced a retry in {delay:?}",
            i + 1
        );
    }
    for pair in attempts.windows(2) {
        let ((t0, delay), (t1, _)) = (pair[0], pair[1]);
        let gap = Duration::try_from(t1.duration_since(t0)).expect("later");
        assert!(
            gap + Duration::from_millis(50) >= delay && gap <= delay + Duration::from_millis(1500),
            "{name}: retried {gap:?} after announcing {delay:?}"
        );
    }
}

#[tokio::test]
async fn failing_reconciles_back_off_per_object() {
    // The harness's --max-backoff.
    const CAP: Duration = Duration::from_secs(2);
    let ns = TestNamespace::new("backoff").await;
    let api: Api<ApiKey> = ns.api();
    let ledgers: Api<ConfigMap> = ns.api();
    let pair = Pair {
        project: "broken",
        owner: "mallory@example.com",
    };
    let ledger_name = pair.ledger_name();
    let garbage: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": ledger_name},
        "data": {"admitted": "this is not a ledger"},
    }))
    .expect("ConfigMap");
    ledgers
        .create(&PostParams::default(), &garbage)
        .await
        .expect("create the unreadable ledger");

    let operator = Operator::start(&ns.name, &[]);
    api.create(
        &PostParams::default(),
        &api_key("stuck-0", pair.project, pair.owner),
    )
    .await
    .expect("create");
    let note = wait_for_warning(&ns, "stuck-0", "LedgerUnreadable").await;
    assert!(
        note.contains(&ledger_name) && note.contains("repaired") && note.len() <= 500,
        "a short note that names the ledger and says what to do: {note}"
    );

    // While stuck-0 keeps failing, keys of other pairs are minted promptly.
    eventually(Duration::from_secs(10), || async {
        failed_attempts(&operator.log(), &ns.name, "stuck-0").len() >= 3
    })
    .await;
    let started = tokio::time::Instant::now();
    for i in 0..3 {
        api.create(
            &PostParams::default(),
            &api_key(
                &format!("fine-{i}"),
                "fine",
                &format!("user-{i}@example.com"),
            ),
        )
        .await
        .expect("create");
    }
    // A second key of the broken pair starts its own backoff from 1 s.
    api.create(
        &PostParams::default(),
        &api_key("stuck-1", pair.project, pair.owner),
    )
    .await
    .expect("create");
    for i in 0..3 {
        wait_for_phase(
            &api,
            &format!("fine-{i}"),
            Phase::Active,
            Duration::from_secs(10),
        )
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "minting the others took {:?}",
        started.elapsed()
    );
    eventually(Duration::from_secs(15), || async {
        let log = operator.log();
        failed_attempts(&log, &ns.name, "stuck-0").len() >= 6
            && failed_attempts(&log, &ns.name, "stuck-1").len() >= 3
    })
    .await;
    let log = operator.log();
    assert_backs_off(&failed_attempts(&log, &ns.name, "stuck-0"), CAP, "stuck-0");
    assert_backs_off(&failed_attempts(&log, &ns.name, "stuck-1"), CAP, "stuck-1");
    for name in ["stuck-0", "stuck-1"] {
        let status = api.get(name).await.expect("get").status;
        assert!(
            status.as_ref().and_then(|s| s.key_hash.as_ref()).is_none(),
            "{name} was minted despite the unreadable ledger: {status:?}"
        );
    }

    // Repaired (as an empty ledger: nothing of this pair was minted), both
    // recover at their next retry, with no one touching the ApiKeys.
    ledgers
        .patch(
            &ledger_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"admitted": "{}"}})),
        )
        .await
        .expect("repair the ledger");
    for name in ["stuck-0", "stuck-1"] {
        wait_for_phase(&api, name, Phase::Active, CAP + Duration::from_secs(8)).await;
    }
    drop(operator);
    ns.delete().await;
}

#[tokio::test]
async fn reconcile_concurrency_is_bounded() {
    const KEYS: usize = 20;
    let ns = TestNamespace::new("concurrency").await;
    let api: Api<ApiKey> = ns.api();
    let _operator = Operator::start(&ns.name, &["--concurrency", "1"]);
    for i in 0..KEYS {
        api.create(
            &PostParams::default(),
            &api_key(&format!("key-{i:02}"), "serial", "alice@example.com"),
        )
        .await
        .expect("create");
    }
    for i in 0..KEYS {
        wait_for_phase(
            &api,
            &format!("key-{i:02}"),
            Phase::Active,
            Duration::from_secs(45),
        )
        .await;
    }
    let secrets = ns
        .api::<Secret>()
        .list(&ListParams::default())
        .await
        .expect("list Secrets")
        .items;
    // Besides the operator's seal key (its namespace is the test's).
    let minted = secrets
        .iter()
        .filter(|s| !keymint::runtime::key_secret::ALL.contains(&s.name_any().as_str()))
        .count();
    assert_eq!(minted, KEYS, "one Secret per key");
    ns.delete().await;
}

#[tokio::test]
async fn an_unreadable_api_keys_deletion_does_not_hang_and_is_audited() {
    let ns = TestNamespace::new("unreadable-delete").await;
    let api: Api<ApiKey> = ns.api();
    let _operator = Operator::start(&ns.name, &[]);
    api.create(
        &PostParams::default(),
        &api_key("garbled", "robust", "alice@example.com"),
    )
    .await
    .expect("create");
    let active = wait_for_phase(&api, "garbled", Phase::Active, Duration::from_secs(30)).await;
    let uid = active.uid().expect("uid");
    untyped(&ns)
        .patch_status(
            "garbled",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "Garbage", "message": "",
                "lastTransitionTime": "2099-01-31T00:00:00x5Z",
            }]}})),
        )
        .await
        .expect("the API server accepts the malformed time in status");
    wait_for_warning(&ns, "garbled", "InvalidSpec").await;

    untyped(&ns)
        .delete("garbled", &Default::default())
        .await
        .expect("delete the unreadable ApiKey");
    eventually(Duration::from_secs(30), || async {
        untyped(&ns)
            .get_opt("garbled")
            .await
            .expect("get")
            .is_none()
    })
    .await;
    let segments = ns
        .api::<ConfigMap>()
        .list(&ListParams::default().labels("keymint.dev/audit=segment"))
        .await
        .expect("list the audit segments");
    let deleted = segments
        .items
        .iter()
        .flat_map(|cm| {
            let content = cm.data.as_ref().and_then(|d| d.get("entries"));
            keymint::audit::parse_segment(content.map_or("", String::as_str)).expect("parses")
        })
        .filter(|e| e.uid == uid && e.action == keymint::audit::Action::Deleted)
        .count();
    assert_eq!(deleted, 1, "one deleted entry for the unreadable ApiKey");
    eventually(Duration::from_secs(60), || async {
        ns.api::<Secret>()
            .get_opt("garbled")
            .await
            .expect("get")
            .is_none()
    })
    .await;
    ns.delete().await;
}
