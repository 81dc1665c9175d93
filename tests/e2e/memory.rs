//! Memory grows with what is minted, not with what tenants declare: the
//! operator keeps an ApiKey's `secretTemplate` only while the key is about
//! to mint, and reads it from the API server for a key admitted later.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::{ApiKey, Phase};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, eventually, templates, wait_for_phase};

/// An ApiKey of `owner` in project `p` carrying `template`, expired at
/// creation if `expired`.
fn declared(name: &str, owner: &str, template: &Value, expired: bool) -> ApiKey {
    let mut key = api_key(name, "p", owner);
    key.spec.secret_template = Some(serde_json::from_value(template.clone()).expect("template"));
    if expired {
        key.spec.expires_at =
            Some(serde_json::from_value(json!("2020-01-01T00:00:00Z")).expect("time"));
    }
    key
}

#[tokio::test]
async fn a_key_admitted_from_the_waiting_line_gets_its_template() {
    let ns = TestNamespace::new("template-later").await;
    let api: Api<ApiKey> = ns.api();
    let _operator = Operator::start(&ns.name, &["--max-keys-per-owner", "1"]);
    let template =
        json!({"labels": {"team": "payments"}, "annotations": {"example.com/note": "waited"}});
    let create = |key: ApiKey| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &key)
                .await
                .expect("create")
        }
    };
    create(api_key("first", "p", "alice")).await;
    wait_for_phase(&api, "first", Phase::Active, Duration::from_secs(20)).await;
    create(declared("waiting", "alice", &template, false)).await;
    wait_for_phase(&api, "waiting", Phase::Rejected, Duration::from_secs(20)).await;

    api.delete("first", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for_phase(&api, "waiting", Phase::Active, Duration::from_secs(20)).await;
    let secret = ns.api::<Secret>().get("waiting").await.expect("its Secret");
    let labels = secret.metadata.labels.unwrap_or_default();
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
    assert_eq!(
        annotations.get("example.com/note").map(String::as_str),
        Some("waited")
    );
    ns.delete().await;
}

/// The chart's memory limit of the operator, in KiB.
fn chart_limit_kib() -> u64 {
    let values = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/keymint/values.yaml"
    ))
    .expect("the chart's values");
    let values: Value = serde_norway::from_str(&values).expect("values.yaml");
    let limit = values["resources"]["limits"]["memory"]
        .as_str()
        .expect("resources.limits.memory");
    let mebibytes: u64 = limit
        .strip_suffix("Mi")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("a limit in Mi: {limit}"));
    mebibytes * 1024
}

/// Phase of each ApiKey in the namespace, from the API server's table view
/// (the printer columns only: the objects are 32 KiB each).
async fn phases(ns: &TestNamespace) -> BTreeMap<String, usize> {
    let request = http::Request::get(format!(
        "/apis/keymint.dev/v1alpha1/namespaces/{}/apikeys",
        ns.name
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .expect("request");
    let table: Value = ns
        .client
        .request(request)
        .await
        .expect("list ApiKeys as a table");
    let columns = table["columnDefinitions"].as_array().expect("columns");
    let phase = columns
        .iter()
        .position(|c| c["name"] == "Phase")
        .expect("a Phase column");
    let mut counts = BTreeMap::new();
    for row in table["rows"].as_array().expect("rows") {
        let phase = row["cells"][phase].as_str().unwrap_or("").to_string();
        *counts.entry(phase).or_default() += 1;
    }
    counts
}

/// The bound on what 1,000 declared keys may add to the operator's resident
/// memory once they are settled: their cached state (about a KiB each) and
/// the allocator's slack — not their templates (32 KiB each at most, 32 MiB
/// in all).
const GROWTH_BOUND_KIB: u64 = 16 * 1024;

#[tokio::test]
async fn a_thousand_keys_with_the_largest_templates_stay_within_the_memory_limit() {
    // 10 owners with a full quota (250 minted), one owner with 25 minted and
    // 475 waiting (Rejected), and 250 keys expired at creation.
    const OWNERS: usize = 10;
    const QUOTA: usize = 25;
    const FLOOD: usize = 500;
    const EXPIRED: usize = 250;
    let ns = TestNamespace::new("memory").await;
    let api: Api<ApiKey> = ns.api();
    // Minted keys verified at the chart's pace, not the tests' 2 s: the
    // queue then drains after the burst, as in production.
    let operator = Operator::start(&ns.name, &["--verify-interval", "5m"]);
    operator.http_addr().await;
    let (_, at_rest) = operator.memory_kib();

    let template = templates::at_bound(0, '🔑');
    let mut keys = Vec::new();
    for owner in 0..OWNERS {
        for n in 0..QUOTA {
            keys.push(declared(
                &format!("o{owner}-{n}"),
                &format!("owner-{owner}"),
                &template,
                false,
            ));
        }
    }
    for n in 0..FLOOD {
        keys.push(declared(&format!("flood-{n}"), "flood", &template, false));
    }
    for n in 0..EXPIRED {
        keys.push(declared(&format!("gone-{n}"), "expired", &template, true));
    }
    let started = Instant::now();
    futures::stream::iter(keys)
        .for_each_concurrent(16, |key| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &key)
                    .await
                    .expect("create an ApiKey");
            }
        })
        .await;
    let created = started.elapsed();

    let settled: BTreeMap<String, usize> = [
        ("Active", OWNERS * QUOTA + QUOTA),
        ("Rejected", FLOOD - QUOTA),
        ("Expired", EXPIRED),
    ]
    .into_iter()
    .map(|(phase, n)| (phase.to_string(), n))
    .collect();
    eventually(Duration::from_secs(120), || async {
        phases(&ns).await == settled
    })
    .await;
    let settled_after = started.elapsed();
    // What the burst's reconciles freed is handed back to the kernel once
    // the queue drains (`runtime::memory`), or at the latest by the
    // periodic trim: the growth that remains is what the operator keeps.
    let deadline = Instant::now() + Duration::from_secs(45);
    let (peak, resident) = loop {
        let (peak, resident) = operator.memory_kib();
        if resident.saturating_sub(at_rest) < GROWTH_BOUND_KIB || Instant::now() > deadline {
            break (peak, resident);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let limit = chart_limit_kib();
    eprintln!(
        "1,000 keys created in {created:.1?}, settled in {settled_after:.1?}; operator at rest \
         {at_rest} KiB, then peak (VmHWM) {peak} KiB, resident (VmRSS) {resident} KiB; \
         the chart's limit {limit} KiB"
    );
    assert!(
        peak < limit,
        "peak {peak} KiB over the chart's limit of {limit} KiB"
    );
    assert!(
        resident.saturating_sub(at_rest) < GROWTH_BOUND_KIB,
        "1,000 settled keys added {} KiB to the operator's resident memory (bound {GROWTH_BOUND_KIB} KiB)",
        resident.saturating_sub(at_rest)
    );
    ns.delete().await;
}
