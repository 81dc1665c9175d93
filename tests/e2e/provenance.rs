//! Provenance, played by the attacker: a tenant with the built-in `edit`
//! role in their namespace (and the ApiKey rights the chart's user role
//! adds to it) writes the Secret an ApiKey will be judged by — with a
//! controller ownerReference to the ApiKey, keymint's annotations, even a
//! seal copied from a real Secret. keymint adopts only a key it proves it
//! minted for that UID: each of these is a Conflict, takes no quota slot,
//! and puts no hash or key id into status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use keymint::apikey::{ApiKey, ApiKeyStatus, Phase};
use keymint::runtime::seal_key::SECRET_NAME as SEAL_KEY_SECRET;

use crate::support::access::grant_edit;
use crate::support::chart::grant_apikey_edit;
use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, control_plane, eventually, wait_for_phase};

const MALLORY: &str = "mallory@example.com";

/// A client for mallory, bound in `ns` to the built-in `edit` role and the
/// chart's ApiKey edit role (what the chart aggregates into `edit`) —
/// nothing else.
async fn mallory(ns: &TestNamespace) -> Client {
    grant_edit(&ns.client, &ns.name, MALLORY).await;
    grant_apikey_edit(&ns.client, &ns.name, MALLORY).await;
    control_plane().as_user(MALLORY, &[]).await
}

/// A well-formed key of zero entropy: a body of zeros and a valid CRC32,
/// built the way keymint's format says (`apikey::key`).
fn zero_entropy_key() -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let head = format!("kmk_{}", "0".repeat(43));
    let mut crc = crc32fast::hash(head.as_bytes());
    let mut checksum = [b'0'; 6];
    for digit in checksum.iter_mut().rev() {
        *digit = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    let key = format!("{head}{}", String::from_utf8_lossy(&checksum));
    keymint::apikey::key::parse(&key).expect("a well-formed key");
    key
}

/// The Secret a tenant writes for `owner` (an ApiKey as read back, with its
/// UID): a controller ownerReference to it, keymint's labels, `annotations`
/// and `content` in `api-key`.
fn planted(owner: &ApiKey, content: Option<&str>, annotations: &[(&str, &str)]) -> Secret {
    let mut reference = owner.controller_owner_ref(&()).expect("owner reference");
    // Setting blockOwnerDeletion needs rights on the ApiKey's finalizers
    // where that admission plugin runs; the attack does not need it.
    reference.block_owner_deletion = None;
    Secret {
        metadata: ObjectMeta {
            name: Some(owner.name_any()),
            owner_references: Some(vec![reference]),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "keymint".into()),
                ("keymint.dev/api-key".into(), owner.name_any()),
            ])),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("keymint.dev/api-key".into()),
        data: content
            .map(|c| BTreeMap::from([("api-key".to_string(), ByteString(c.as_bytes().to_vec()))])),
        ..Secret::default()
    }
}

/// Asserts the Conflict a planted Secret must produce: the message says
/// keymint did not mint it, and status records no key.
fn assert_conflict_records_nothing(key: &ApiKey) {
    let status: &ApiKeyStatus = key.status.as_ref().expect("status");
    assert_eq!(status.phase, Some(Phase::Conflict));
    assert_eq!(
        (status.key_hash.as_deref(), status.key_id.as_deref()),
        (None, None),
        "{}: nothing from the Secret in status",
        key.name_any()
    );
    let ready = &status.conditions[0];
    assert!(
        ready.message.contains("keymint did not mint it"),
        "{}: {ready:?}",
        key.name_any()
    );
}

#[tokio::test]
async fn a_planted_secret_is_a_conflict_and_takes_no_slot() {
    let ns = TestNamespace::new("planted").await;
    let tenant = mallory(&ns).await;
    let keys: Api<ApiKey> = Api::namespaced(tenant.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(tenant.clone(), &ns.name);

    // No operator yet: the tenant has all the time they need.
    let created = keys
        .create(
            &PostParams::default(),
            &api_key("chosen", "payments", MALLORY),
        )
        .await
        .expect("mallory creates an ApiKey");
    let chosen = zero_entropy_key();
    let hash = keymint::apikey::key::hash_bytes(chosen.as_bytes());
    let forged_seal = format!("v1:{}", "0".repeat(64));
    let planted = secrets
        .create(
            &PostParams::default(),
            &planted(
                &created,
                Some(&chosen),
                &[
                    ("keymint.dev/key-hash", &hash),
                    ("keymint.dev/key-id", "km_chosen"),
                    ("keymint.dev/provenance", &forged_seal),
                ],
            ),
        )
        .await
        .expect("mallory plants the Secret");

    // One key per owner and project: a planted key that took the slot
    // would leave none for the next.
    // keymint in a namespace of its own, as in production: its seal key is
    // out of the tenant's reach, so the seal cannot be forged.
    let home = TestNamespace::ungranted("planted-keymint").await;
    let _operator = Operator::start_apart(&home.name, &ns.name, &["--max-keys-per-owner", "1"]);
    let judged = wait_for_phase(&keys, "chosen", Phase::Conflict, Duration::from_secs(30)).await;
    assert_conflict_records_nothing(&judged);
    let theirs: Api<Secret> = Api::namespaced(tenant, &home.name);
    let refused = theirs.get(SEAL_KEY_SECRET).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403),
        "a tenant with edit must not read keymint's seal key: {refused:?}"
    );
    assert!(
        Api::<Secret>::namespaced(home.client.clone(), &home.name)
            .get_opt(SEAL_KEY_SECRET)
            .await
            .expect("get the seal key as admin")
            .is_some(),
        "keymint keeps its seal key at home"
    );

    keys.create(
        &PostParams::default(),
        &api_key("honest", "payments", MALLORY),
    )
    .await
    .expect("create a second ApiKey");
    let honest = wait_for_phase(&keys, "honest", Phase::Active, Duration::from_secs(30)).await;
    assert_ne!(
        honest.status.and_then(|s| s.key_hash).as_deref(),
        Some(hash.as_str())
    );

    // Still a Conflict a few verification rounds later, the Secret as the
    // tenant wrote it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_conflict_records_nothing(&keys.get("chosen").await.expect("get"));
    let after = secrets
        .get("chosen")
        .await
        .expect("the Secret is still there");
    assert_eq!(after.resource_version(), planted.resource_version());
    ns.delete().await;
    home.delete().await;
}

#[tokio::test]
async fn a_planted_hash_never_reaches_status() {
    let ns = TestNamespace::new("plantedhash").await;
    let mut operator = Operator::start(&ns.name, &[]);
    let admin: Api<ApiKey> = ns.api();
    admin
        .create(
            &PostParams::default(),
            &api_key("victim", "payments", "alice@example.com"),
        )
        .await
        .expect("create the victim's key");
    let victim = wait_for_phase(&admin, "victim", Phase::Active, Duration::from_secs(30)).await;
    let victim_status = victim.status.clone().expect("status");
    let victim_hash = victim_status.key_hash.clone().expect("hash");
    let victim_id = victim_status.key_id.clone().expect("key id");
    let victim_secret = ns
        .api::<Secret>()
        .get("victim")
        .await
        .expect("the victim's Secret");
    operator.kill();

    let tenant = mallory(&ns).await;
    let keys: Api<ApiKey> = Api::namespaced(tenant.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(tenant, &ns.name);
    // The victim's hash and key id in annotations, no key: once judged
    // Tampered, and the annotation copied into status.
    let by_hash = keys
        .create(
            &PostParams::default(),
            &api_key("by-hash", "payments", MALLORY),
        )
        .await
        .expect("create");
    secrets
        .create(
            &PostParams::default(),
            &planted(
                &by_hash,
                None,
                &[
                    ("keymint.dev/key-hash", &victim_hash),
                    ("keymint.dev/key-id", &victim_id),
                ],
            ),
        )
        .await
        .expect("plant");
    // The victim's whole Secret — key, annotations, keymint's real seal —
    // under the attacker's ApiKey: once adopted as the attacker's key.
    let by_copy = keys
        .create(
            &PostParams::default(),
            &api_key("by-copy", "payments", MALLORY),
        )
        .await
        .expect("create");
    let copied: Vec<(&str, &str)> = victim_secret
        .annotations()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let content = victim_secret.data.as_ref().expect("data")["api-key"]
        .0
        .clone();
    secrets
        .create(
            &PostParams::default(),
            &planted(
                &by_copy,
                Some(std::str::from_utf8(&content).expect("a key is text")),
                &copied,
            ),
        )
        .await
        .expect("plant");

    let _operator = Operator::start(&ns.name, &[]);
    for name in ["by-hash", "by-copy"] {
        let judged = wait_for_phase(&keys, name, Phase::Conflict, Duration::from_secs(30)).await;
        assert_conflict_records_nothing(&judged);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for name in ["by-hash", "by-copy"] {
        let status = keys.get(name).await.expect("get").status.expect("status");
        assert_ne!(status.key_hash.as_deref(), Some(victim_hash.as_str()));
        assert_ne!(status.key_id.as_deref(), Some(victim_id.as_str()));
    }
    // The victim's key is untouched.
    let victim = admin.get("victim").await.expect("get");
    assert_eq!(victim.status.expect("status").key_hash, Some(victim_hash));
    ns.delete().await;
}

#[tokio::test]
async fn a_conflict_secret_replaced_with_an_owner_reference_is_still_a_conflict() {
    let ns = TestNamespace::new("replaced").await;
    let tenant = mallory(&ns).await;
    let keys: Api<ApiKey> = Api::namespaced(tenant.clone(), &ns.name);
    let secrets: Api<Secret> = Api::namespaced(tenant, &ns.name);
    let mut squatter = Secret::default();
    squatter.metadata.name = Some("taken".into());
    secrets
        .create(&PostParams::default(), &squatter)
        .await
        .expect("a Secret in the way");

    let _operator = Operator::start(&ns.name, &[]);
    keys.create(
        &PostParams::default(),
        &api_key("taken", "payments", MALLORY),
    )
    .await
    .expect("create");
    let conflict = wait_for_phase(&keys, "taken", Phase::Conflict, Duration::from_secs(30)).await;

    // Replaced by one with the ownerReference keymint used to trust.
    secrets
        .delete("taken", &DeleteParams::default())
        .await
        .expect("delete the squatter");
    let chosen = zero_entropy_key();
    let hash = keymint::apikey::key::hash_bytes(chosen.as_bytes());
    secrets
        .create(
            &PostParams::default(),
            &planted(
                &conflict,
                Some(&chosen),
                &[
                    ("keymint.dev/key-hash", &hash),
                    ("keymint.dev/key-id", "km_chosen"),
                ],
            ),
        )
        .await
        .expect("plant");
    // A change makes keymint look again at once (the rounds would too).
    let touched = keys
        .patch(
            "taken",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"description": "look again"}})),
        )
        .await
        .expect("touch");
    let generation = touched.meta().generation;
    eventually(Duration::from_secs(30), || async {
        let key = keys.get("taken").await.expect("get");
        key.status.and_then(|s| s.observed_generation) == generation
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_conflict_records_nothing(&keys.get("taken").await.expect("get"));
    ns.delete().await;
}

/// What losing the seal key (the Secret `keymint-provenance`) costs, as
/// docs/install.md says: keys recorded in status are checked by their content
/// and stay Active; a Secret from the crash window before the loss can no
/// longer be proven, so its ApiKey is a Conflict — never a second key.
#[tokio::test]
async fn a_lost_seal_key_costs_only_the_adoption_of_an_unrecorded_secret() {
    let ns = TestNamespace::new("sealkey").await;
    let api: Api<ApiKey> = ns.api();
    let secrets: Api<Secret> = ns.api();
    let mut operator = Operator::start(&ns.name, &[]);
    for name in ["recorded", "unrecorded"] {
        api.create(
            &PostParams::default(),
            &api_key(name, "payments", "alice@example.com"),
        )
        .await
        .expect("create");
    }
    let recorded = wait_for_phase(&api, "recorded", Phase::Active, Duration::from_secs(30)).await;
    wait_for_phase(&api, "unrecorded", Phase::Active, Duration::from_secs(30)).await;
    operator.kill();
    // The operator's namespace is the test's: its seal key is here.
    let old_seal_key = secrets.get("keymint-provenance").await.expect("seal key");
    assert_eq!(old_seal_key.immutable, Some(true));
    api.patch_status(
        "unrecorded",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": null})),
    )
    .await
    .expect("as if the status write had never happened");
    secrets
        .delete("keymint-provenance", &DeleteParams::default())
        .await
        .expect("delete the seal key");

    let _operator = Operator::start(&ns.name, &[]);
    let judged = wait_for_phase(&api, "unrecorded", Phase::Conflict, Duration::from_secs(30)).await;
    assert_conflict_records_nothing(&judged);
    let new_seal_key = secrets
        .get("keymint-provenance")
        .await
        .expect("a new seal key");
    assert_ne!(new_seal_key.uid(), old_seal_key.uid());
    // A few verification rounds: the recorded key is judged by its content.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let still = api.get("recorded").await.expect("get");
    assert_eq!(
        still.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Active)
    );
    assert_eq!(
        still.status.and_then(|s| s.key_hash),
        recorded.status.and_then(|s| s.key_hash)
    );
    ns.delete().await;
}
