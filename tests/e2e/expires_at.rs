//! Every `expiresAt` the API server accepts is one keymint reads: a fixed
//! corpus of RFC 3339 forms (and near misses) sent to the real API server.
//! Each is either refused with a message naming `spec.expiresAt`, or
//! accepted and then read by keymint — the ApiKey is minted, so it was
//! neither dropped from the watch nor left unreadable. The property test
//! over generated forms is `apikey::resource`'s
//! `every_date_time_the_schema_admits_is_read`.

use std::time::Duration;

use keymint::apikey::{ApiKey, Phase};
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::{TestNamespace, wait_for_phase};

/// Forms RFC 3339 allows, in the future: the API server must accept each.
const WELL_FORMED: &[&str] = &[
    "2099-01-31T00:00:00Z",
    "2099-01-31t00:00:00z",
    "2099-01-31T00:00:00.5Z",
    "2099-01-31T00:00:00.123456789Z",
    "2099-01-31T09:30:00.250+02:00",
    "2099-01-31T00:00:00-00:00",
    "2096-02-29T23:59:59+23:59",
    "9998-12-31T23:59:59.999999999-23:59",
];

/// Near misses, some of which `format: date-time` alone lets through
/// (measured: a fraction of any length, any two digits of offset, year 9999
/// past keymint's last instant).
const NEAR_MISSES: &[&str] = &[
    "2099-01-31T00:00:00.1234567890Z",
    "2099-01-31T00:00:00+99:99",
    "2099-01-31T00:00:00+24:00",
    "2099-01-31T00:00:00+00:60",
    "9999-12-31T23:59:59-23:59",
    "2099-01-31T23:59:60Z",
    "2099-01-31T24:00:00Z",
    "2099-02-29T00:00:00Z",
    "2099-13-01T00:00:00Z",
    "2099-01-31 00:00:00Z",
    "2099-01-31T00:00Z",
    "2099-01-31T00:00:00",
    "2099-01-31T00:00:00.Z",
];

#[tokio::test]
async fn every_expires_at_the_api_server_accepts_is_one_keymint_reads() {
    let ns = TestNamespace::new("expires-at").await;
    let gvk = GroupVersionKind::gvk("keymint.dev", "v1alpha1", "ApiKey");
    let raw: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk));
    let _operator = Operator::start(&ns.name, &[]);
    let mut accepted = Vec::new();
    for (n, form) in WELL_FORMED.iter().chain(NEAR_MISSES).enumerate() {
        // One owner per key: the quota plays no part here.
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "keymint.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": format!("form-{n}")},
            "spec": {"project": "payments", "owner": format!("owner-{n}"), "expiresAt": form},
        }))
        .expect("ApiKey object");
        match raw.create(&PostParams::default(), &object).await {
            Ok(_) => accepted.push((format!("form-{n}"), *form)),
            Err(kube::Error::Api(status)) => {
                assert!(
                    !WELL_FORMED.contains(form),
                    "{form} is RFC 3339 and must be accepted: {}",
                    status.message
                );
                assert!(
                    status.message.contains("spec.expiresAt"),
                    "{form}: the refusal names the field: {}",
                    status.message
                );
            }
            Err(other) => panic!("create with expiresAt {form}: {other}"),
        }
    }
    let keys: Api<ApiKey> = ns.api();
    for (name, form) in &accepted {
        let key = wait_for_phase(&keys, name, Phase::Active, Duration::from_secs(30)).await;
        assert!(
            key.spec.expires_at.is_some(),
            "{form}: keymint reads the expiry it was given"
        );
    }
    ns.delete().await;
}
