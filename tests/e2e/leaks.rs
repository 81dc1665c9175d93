//! No leaks: a minted key appears in its Secret and nowhere else — not in
//! ApiKey objects (status, managedFields), Events, quota ledgers, the
//! operator's debug log or the API server's audit log — whatever path the
//! key took (minted, rejected then admitted, expired, deleted, lost,
//! tampered, in conflict, failing to be written).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keymint::apikey::{ApiKey, Phase, SecretTemplate};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::watcher;

use crate::support::operator::Operator;
use crate::support::watch_from_here;
use crate::support::{
    TestNamespace, api_key, apiserver_audit, eventually, raw, refuse_secrets_labelled,
    wait_for_phase,
};

/// Every `api-key` value any Secret in the namespace ever held, from a watch
/// that runs for the whole test: keys that expired or were deleted count too.
async fn record_key_values(secrets: Api<Secret>) -> Arc<Mutex<BTreeSet<String>>> {
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let sink = seen.clone();
    watch_from_here(secrets, watcher::Config::default(), move |event| {
        if let watcher::Event::Apply(s) | watcher::Event::InitApply(s) = event
            && let Some(v) = s.data.as_ref().and_then(|d| d.get("api-key"))
        {
            sink.lock()
                .expect("lock")
                .insert(String::from_utf8_lossy(&v.0).into_owned());
        }
    })
    .await;
    seen
}

/// Key-shaped strings in `text` that are real keys (their checksum holds):
/// `kmk_` + 49 base62 characters, or the 49 characters alone. Finds keys the
/// test never saw (e.g. minted in memory by an attempt that failed).
fn checksummed_keys(text: &str) -> BTreeSet<String> {
    const BODY: usize = keymint::apikey::key::KEY_LEN - keymint::apikey::key::PREFIX.len();
    let mut found = BTreeSet::new();
    for run in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|run| run.len() >= BODY)
    {
        for start in 0..=run.len() - BODY {
            let candidate = format!(
                "{}{}",
                keymint::apikey::key::PREFIX,
                &run[start..start + BODY]
            );
            if keymint::apikey::key::parse(&candidate).is_ok() {
                found.insert(candidate);
            }
        }
    }
    found
}

/// The forms a key could take when leaked: as written, without its prefix,
/// base64 (a dumped Secret) and as Rust prints bytes (`{:?}` of a Secret).
fn forms(key: &str) -> Vec<(&'static str, String)> {
    use std::fmt::Write as _;
    let body = key
        .strip_prefix(keymint::apikey::key::PREFIX)
        .unwrap_or(key)
        .to_string();
    let bytes = key.bytes().fold(String::new(), |mut s, b| {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "{b}");
        s
    });
    vec![
        ("plaintext", key.to_string()),
        ("body without prefix", body),
        ("base64", base64_encode(key.as_bytes())),
        ("debug bytes", bytes),
    ]
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn with_expiry(mut key: ApiKey, from_now: Duration) -> ApiKey {
    key.spec.expires_at = Some(Time(
        jiff::Timestamp::now() + jiff::SignedDuration::try_from(from_now).expect("duration"),
    ));
    key
}

/// A foreign Secret (no ownerReference) holding a well-formed key.
fn foreign_secret(name: &str) -> Secret {
    let forged = keymint::apikey::key::mint().expect("mint a look-alike key");
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "api-key".to_string(),
            ByteString(forged.expose().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[tokio::test]
async fn the_key_appears_only_in_its_secret() {
    let ns = TestNamespace::new("leaks").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let key_values = record_key_values(secrets.clone()).await;
    let audit_start = apiserver_audit::mark();
    let operator = Operator::start(&ns.name, &["--max-keys-per-owner", "2"]);
    let create = |key: ApiKey| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &key)
                .await
                .expect("create ApiKey");
        }
    };

    // A Secret that is in the way before its ApiKey exists: Conflict.
    secrets
        .create(&PostParams::default(), &foreign_secret("conflicted"))
        .await
        .expect("create a foreign Secret");
    // Two keys fill alice's quota; a third waits (Rejected).
    for name in ["alice-0", "alice-1"] {
        create(api_key(name, "leaks", "alice@example.com")).await;
        wait_for_phase(&api, name, Phase::Active, Duration::from_secs(20)).await;
    }
    create(api_key("alice-2", "leaks", "alice@example.com")).await;
    create(with_expiry(
        api_key("expiring", "leaks", "bob@example.com"),
        Duration::from_secs(8),
    ))
    .await;
    create(api_key("lost", "leaks", "carol@example.com")).await;
    create(api_key("tampered", "leaks", "carol@example.com")).await;
    create(api_key("conflicted", "leaks", "dave@example.com")).await;
    // A key that cannot be written: an admission policy refuses its Secret,
    // so every attempt mints a key in memory and fails with an error (a
    // Warning Event and an error log line).
    refuse_secrets_labelled(&ns, "leaks-canary", "refuse").await;
    let mut unwritable = api_key("unwritable", "leaks", "erin@example.com");
    unwritable.spec.secret_template = Some(SecretTemplate {
        labels: Some(
            [(
                "leaks-canary".to_string(),
                keymint::apikey::LabelValue("refuse".into()),
            )]
            .into_iter()
            .collect(),
        ),
        annotations: None,
    });
    create(unwritable).await;

    wait_for_phase(&api, "alice-2", Phase::Rejected, Duration::from_secs(20)).await;
    for name in ["expiring", "lost", "tampered"] {
        wait_for_phase(&api, name, Phase::Active, Duration::from_secs(20)).await;
    }
    wait_for_phase(&api, "conflicted", Phase::Conflict, Duration::from_secs(20)).await;

    // Lost: its Secret deleted out of band. Tampered: replaced by one that
    // looks like ours but holds another key.
    secrets
        .delete("lost", &DeleteParams::default())
        .await
        .expect("delete Secret");
    let original = secrets.get("tampered").await.expect("Secret");
    secrets
        .delete("tampered", &DeleteParams::default())
        .await
        .expect("delete Secret");
    let mut replacement = foreign_secret("tampered");
    replacement.metadata.owner_references = original.metadata.owner_references.clone();
    replacement.metadata.annotations = original.metadata.annotations.clone();
    secrets
        .create(&PostParams::default(), &replacement)
        .await
        .expect("create the replacement");
    // Deleting alice-0 frees a slot: alice-2 is admitted and minted.
    api.delete("alice-0", &DeleteParams::default())
        .await
        .expect("delete ApiKey");

    wait_for_phase(&api, "lost", Phase::SecretLost, Duration::from_secs(20)).await;
    wait_for_phase(
        &api,
        "tampered",
        Phase::SecretTampered,
        Duration::from_secs(20),
    )
    .await;
    wait_for_phase(&api, "alice-2", Phase::Active, Duration::from_secs(20)).await;
    wait_for_phase(&api, "expiring", Phase::Expired, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(20), || async {
        api.get_opt("alice-0").await.expect("get").is_none()
    })
    .await;
    // Several failed attempts to write the unwritable key.
    eventually(Duration::from_secs(20), || async {
        operator
            .log()
            .lines()
            .filter(|l| l.contains("unwritable") && l.contains("KubernetesApi"))
            .count()
            >= 3
    })
    .await;
    // Let the last Events and log lines land.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Every key that was ever in a Secret: 2 for alice-0/1, alice-2,
    // expiring, lost, tampered (the minted one and the forged one) and the
    // forged one in `conflicted`.
    let keys: BTreeSet<String> = key_values.lock().expect("lock").clone();
    assert!(keys.len() >= 8, "{} keys seen in Secrets", keys.len());
    assert!(
        keys.iter().all(|k| keymint::apikey::key::parse(k).is_ok()),
        "every Secret holds a well-formed key"
    );

    let path = |rest: &str| format!("/api/v1/namespaces/{}/{rest}", ns.name);
    let mut sinks: Vec<(String, String)> = vec![
        (
            "ApiKeys".into(),
            raw(
                &ns.client,
                &format!("/apis/keymint.dev/v1alpha1/namespaces/{}/apikeys", ns.name),
            )
            .await,
        ),
        (
            "Events (events.k8s.io/v1)".into(),
            raw(
                &ns.client,
                &format!("/apis/events.k8s.io/v1/namespaces/{}/events", ns.name),
            )
            .await,
        ),
        (
            "Events (core/v1)".into(),
            raw(&ns.client, &path("events")).await,
        ),
        (
            "ConfigMaps".into(),
            raw(&ns.client, &path("configmaps")).await,
        ),
        ("the operator's log".into(), operator.log()),
    ];
    // The sinks are not empty: the search looks where the key would be.
    assert!(sinks[0].1.contains("keyHash") && sinks[0].1.contains("managedFields"));
    assert!(sinks[1].1.contains("SecretTampered") && sinks[1].1.contains("KubernetesApi"));
    assert!(sinks[3].1.contains("keymint-quota-"));
    assert!(sinks[4].1.contains("reconciled"));
    if let Some(audit) = apiserver_audit::path() {
        let bytes = std::fs::read(audit).expect("read the audit log");
        let start = usize::try_from(audit_start).unwrap_or(0).min(bytes.len());
        let text = String::from_utf8_lossy(&bytes[start..]).into_owned();
        assert!(text.contains(&ns.name));
        sinks.push(("the API server's audit log".into(), text));
    }

    let mut leaks = Vec::new();
    for (sink, text) in &sinks {
        for key in &keys {
            for (form, value) in forms(key) {
                if text.contains(&value) {
                    // Name the key by its id, never print it.
                    let id = keymint::apikey::key::key_id(
                        &keymint::apikey::key::parse(key).expect("key"),
                    );
                    leaks.push(format!("key {id} ({form}) in {sink}"));
                }
            }
        }
        // Keys the test never saw, e.g. minted by a failed attempt.
        for found in checksummed_keys(text) {
            let id =
                keymint::apikey::key::key_id(&keymint::apikey::key::parse(&found).expect("key"));
            leaks.push(format!(
                "a key-shaped string with a valid checksum (key {id}) in {sink}"
            ));
        }
    }
    assert!(
        leaks.is_empty(),
        "key material outside Secrets:\n{}",
        leaks.join("\n")
    );

    drop(operator);
    for kind in [
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicies",
    ] {
        let gvk = kube::core::GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", "");
        let resource = kube::core::ApiResource::from_gvk_with_plural(&gvk, kind);
        let api: Api<kube::api::DynamicObject> = Api::all_with(ns.client.clone(), &resource);
        api.delete(
            &format!("{}-refuse-secrets", ns.name),
            &DeleteParams::default(),
        )
        .await
        .expect("delete the admission policy");
    }
    ns.delete().await;
}

#[test]
fn the_canary_search_recognises_every_form_of_a_key() {
    let minted = keymint::apikey::key::mint().expect("mint");
    let key = minted.expose();
    let body = &key[keymint::apikey::key::PREFIX.len()..];
    assert_eq!(checksummed_keys(&format!("x {key} y")).len(), 1);
    assert_eq!(checksummed_keys(&format!("value={body}\"")).len(), 1);
    let last = if key.ends_with('0') { '1' } else { '0' };
    assert!(checksummed_keys(&format!("{}{last}", &key[..key.len() - 1])).is_empty());
    assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
    assert_eq!(base64_encode(b"hell"), "aGVsbA==");
    assert_eq!(base64_encode(b"hel"), "aGVs");
    let secret = format!("{:?}", ByteString(key.as_bytes().to_vec()));
    let debug = &forms(key)[3].1;
    assert!(secret.contains(debug.as_str()), "{secret} vs {debug}");
}
