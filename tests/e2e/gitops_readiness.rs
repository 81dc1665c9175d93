//! Readable state (invariant 13): what kubectl, Flux, kpt and Argo CD show
//! for an ApiKey in each phase. Every object is read from the API server as
//! raw JSON and judged by the real code those tools run: kstatus from
//! sigs.k8s.io/cli-utils (Flux's kustomize- and helm-controller, kpt), and
//! docs/argocd-health.lua run by gopher-lua as Argo CD runs a health check
//! (both in tests/gitops: keymint-readiness), and `kubectl wait`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keymint::apikey::{ApiKey, LabelValue, Phase, SecretTemplate};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::kubectl::kubectl;
use crate::support::operator::Operator;
use crate::support::{
    TestNamespace, admit_secrets_again, api_key, eventually, raw, refuse_secrets_labelled,
    replace_secret, wait_for_phase,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Secrets with this label are refused at admission while the test wants a
/// key whose Secret cannot be written (a transient failure).
const REFUSED: (&str, &str) = ("gitops-readiness", "refuse");

/// One tool's verdict on an object.
#[derive(Deserialize, Debug, PartialEq)]
struct Verdict {
    status: String,
    message: String,
}

/// What keymint-readiness prints.
#[derive(Deserialize, Debug)]
struct Readiness {
    kstatus: Verdict,
    argocd: Verdict,
}

fn readiness_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let path = Path::new(REPO).join("target/tools/bin/keymint-readiness");
        if !path.exists() {
            eprintln!("building keymint-readiness (first run only; see tests/gitops/build.sh)");
            let status = Command::new(Path::new(REPO).join("tests/gitops/build.sh"))
                .status()
                .expect("run tests/gitops/build.sh");
            assert!(status.success(), "building keymint-readiness failed");
        }
        path
    })
}

/// kstatus's and Argo CD's verdicts on `object`.
fn judge(object: &Value) -> Readiness {
    let mut child = Command::new(readiness_binary())
        .arg("--argocd-health")
        .arg(Path::new(REPO).join("docs/argocd-health.lua"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keymint-readiness");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(object.to_string().as_bytes())
        .expect("write the object");
    let out = child
        .wait_with_output()
        .expect("keymint-readiness finishes");
    assert!(
        out.status.success(),
        "keymint-readiness: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("keymint-readiness prints JSON")
}

/// The ApiKey `name` exactly as the API server serves it.
async fn read(ns: &TestNamespace, name: &str) -> Value {
    let path = format!(
        "/apis/keymint.dev/v1alpha1/namespaces/{}/apikeys/{name}",
        ns.name
    );
    serde_json::from_str(&raw(&ns.client, &path).await).expect("an ApiKey as JSON")
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// The phases that need a person: kstatus's Stalled, Argo CD's Degraded.
const NEEDS_A_PERSON: [&str; 6] = [
    "Rejected",
    "Conflict",
    "SecretLost",
    "SecretTampered",
    "NeverShown",
    "Expired",
];

/// The conditions of `object` follow kstatus's conventions for `phase`:
/// Ready first, True only when Active; Reconciling=True only while Pending,
/// Stalled=True only when a person must act (absent otherwise); every
/// observedGeneration is the object's generation.
fn assert_conditions(object: &Value, phase: &str) {
    let name = text(&object["metadata"]["name"]);
    let status = &object["status"];
    assert_eq!(text(&status["phase"]), phase, "{name}: {status}");
    let generation = &object["metadata"]["generation"];
    assert_eq!(
        &status["observedGeneration"], generation,
        "{name}: {status}"
    );
    let conditions = status["conditions"].as_array().expect("conditions");
    assert_eq!(conditions[0]["type"], "Ready", "{name}: Ready first");
    for c in conditions {
        assert_eq!(&c["observedGeneration"], generation, "{name}: {c}");
    }
    let status_of = |type_| condition(object, type_).map(|c| text(&c["status"]));
    let ready = if phase == "Active" { "True" } else { "False" };
    assert_eq!(
        status_of("Ready").as_deref(),
        Some(ready),
        "{name}: {status}"
    );
    let expect = |holds: bool| holds.then(|| "True".to_string());
    assert_eq!(
        status_of("Reconciling"),
        expect(phase == "Pending"),
        "{name}: Reconciling; {status}"
    );
    assert_eq!(
        status_of("Stalled"),
        expect(NEEDS_A_PERSON.contains(&phase)),
        "{name}: Stalled; {status}"
    );
    if let Some(stalled) = condition(object, "Stalled") {
        assert_eq!(
            stalled["message"], status["conditions"][0]["message"],
            "{name}: Stalled says what Ready says"
        );
    }
}

/// kstatus and Argo CD read `object`, which is in `phase`, as the design
/// says: Active is Current and Healthy; Pending is InProgress and
/// Progressing; a phase that needs a person is Failed and Degraded; the last
/// three with keymint's message (the Ready condition's).
fn assert_readable(object: &Value, phase: &str) {
    assert_conditions(object, phase);
    let name = text(&object["metadata"]["name"]);
    let ready_message = text(&condition(object, "Ready").expect("Ready")["message"]);
    assert!(!ready_message.is_empty(), "{name}: Ready has a message");
    let verdicts = judge(object);
    let (kstatus, argocd) = match phase {
        "Active" => ("Current", "Healthy"),
        "Pending" => ("InProgress", "Progressing"),
        _ => ("Failed", "Degraded"),
    };
    assert_eq!(
        verdicts.kstatus.status, kstatus,
        "{name} ({phase}): {verdicts:?}"
    );
    assert_eq!(
        verdicts.argocd.status, argocd,
        "{name} ({phase}): {verdicts:?}"
    );
    if phase != "Active" {
        assert_eq!(
            verdicts.kstatus.message, ready_message,
            "{name} ({phase}): kstatus"
        );
        assert_eq!(
            verdicts.argocd.message, ready_message,
            "{name} ({phase}): Argo CD"
        );
    }
}

/// `kubectl wait --for=condition=CONDITION apikey/NAME`: whether it succeeded.
fn kubectl_wait(namespace: &str, name: &str, condition: &str, timeout: &str) -> bool {
    let (object, wanted) = (
        format!("apikey/{name}"),
        format!("--for=condition={condition}"),
    );
    let args = [
        "wait",
        &wanted,
        &object,
        "-n",
        namespace,
        "--timeout",
        timeout,
    ];
    kubectl(&args, "").status.success()
}

async fn create(api: &Api<ApiKey>, key: ApiKey) {
    api.create(&PostParams::default(), &key)
        .await
        .expect("create ApiKey");
}

/// A Secret that keymint did not create, in the way of `name`'s.
async fn foreign_secret(client: &Client, namespace: &str, name: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some([("api-key".to_string(), ByteString(b"not keymint's".to_vec()))].into()),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create a foreign Secret");
}

/// Keys in every phase but Active (quota 1: `active` holds alice's slot).
async fn create_one_per_phase(ns: &TestNamespace, api: &Api<ApiKey>) {
    create(api, api_key("rejected", "gitops", "alice@example.com")).await;
    foreign_secret(&ns.client, &ns.name, "conflict").await;
    create(api, api_key("conflict", "gitops", "bob@example.com")).await;
    create(api, api_key("lost", "gitops", "carol@example.com")).await;
    create(api, api_key("tampered", "gitops", "dave@example.com")).await;
    let mut expired = api_key("expired", "gitops", "erin@example.com");
    expired.spec.expires_at = Some(Time(
        jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60),
    ));
    create(api, expired).await;
    // Nobody acknowledges this show-once key within the reveal window.
    let mut never_shown = api_key("never-shown", "gitops", "grace@example.com");
    never_shown.spec.show_once = Some(true);
    create(api, never_shown).await;
    let mut pending = api_key("pending", "gitops", "frank@example.com");
    pending.spec.secret_template = Some(SecretTemplate {
        labels: Some([(REFUSED.0.to_string(), LabelValue(REFUSED.1.into()))].into()),
        annotations: None,
    });
    create(api, pending).await;

    let secrets: Api<Secret> = ns.api();
    let wait = Duration::from_secs(20);
    wait_for_phase(api, "lost", Phase::Active, wait).await;
    secrets
        .delete("lost", &Default::default())
        .await
        .expect("delete the Secret out of band");
    wait_for_phase(api, "tampered", Phase::Active, wait).await;
    let original = secrets.get("tampered").await.expect("Secret");
    replace_secret(&secrets, &original, true).await;
    for (name, phase) in [
        ("rejected", Phase::Rejected),
        ("conflict", Phase::Conflict),
        ("lost", Phase::SecretLost),
        ("tampered", Phase::SecretTampered),
        ("expired", Phase::Expired),
        ("never-shown", Phase::NeverShown),
        ("pending", Phase::Pending),
    ] {
        wait_for_phase(api, name, phase, wait).await;
    }
}

#[tokio::test]
async fn every_phase_reads_as_kstatus_and_argo_cd_are_told() {
    let ns = TestNamespace::new("gitops").await;
    let api: Api<ApiKey> = ns.api();

    // Before keymint has seen it: no status at all. kstatus takes an object
    // without conditions for Current (its rule for unknown kinds); Argo CD's
    // script waits.
    create(&api, api_key("active", "gitops", "alice@example.com")).await;
    let unseen = read(&ns, "active").await;
    assert_eq!(unseen.get("status"), None, "{unseen}");
    let verdicts = judge(&unseen);
    assert_eq!(verdicts.kstatus.status, "Current", "{verdicts:?}");
    assert_eq!(verdicts.argocd.status, "Progressing", "{verdicts:?}");

    refuse_secrets_labelled(&ns, REFUSED.0, REFUSED.1).await;
    let flags = ["--max-keys-per-owner", "1", "--reveal-window", "3s"];
    let mut operator = Operator::start(&ns.name, &flags);
    wait_for_phase(&api, "active", Phase::Active, Duration::from_secs(20)).await;
    create_one_per_phase(&ns, &api).await;
    for (name, phase) in [
        ("active", "Active"),
        ("pending", "Pending"),
        ("rejected", "Rejected"),
        ("conflict", "Conflict"),
        ("lost", "SecretLost"),
        ("tampered", "SecretTampered"),
        ("expired", "Expired"),
        ("never-shown", "NeverShown"),
    ] {
        assert_readable(&read(&ns, name).await, phase);
    }
    assert!(
        kubectl_wait(&ns.name, "active", "Ready", "20s"),
        "kubectl wait --for=condition=Ready apikey/active"
    );
    assert!(
        !kubectl_wait(&ns.name, "conflict", "Ready", "2s"),
        "kubectl wait took a Conflict for Ready"
    );
    assert!(
        kubectl_wait(&ns.name, "conflict", "Stalled", "20s"),
        "kubectl wait --for=condition=Stalled apikey/conflict"
    );

    // A spec change keymint has not observed yet (the operator is down):
    // both tools wait for it, then take the new generation as it comes.
    operator.kill();
    api.patch(
        "active",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"description": "changed while keymint was down"}})),
    )
    .await
    .expect("change the description");
    let unobserved = read(&ns, "active").await;
    assert_eq!(unobserved["metadata"]["generation"], 2, "{unobserved}");
    let verdicts = judge(&unobserved);
    assert_eq!(verdicts.kstatus.status, "InProgress", "{verdicts:?}");
    assert_eq!(verdicts.argocd.status, "Progressing", "{verdicts:?}");
    assert!(
        !kubectl_wait(&ns.name, "active", "Ready", "2s"),
        "kubectl wait took a Ready condition of generation 1 for generation 2"
    );
    let _operator = Operator::start(&ns.name, &flags);
    eventually(Duration::from_secs(20), || async {
        read(&ns, "active").await["status"]["observedGeneration"] == 2
    })
    .await;
    assert_readable(&read(&ns, "active").await, "Active");

    // The transient failure ends: the Pending key is minted on a retry.
    admit_secrets_again(&ns, REFUSED.0, REFUSED.1).await;
    wait_for_phase(&api, "pending", Phase::Active, Duration::from_secs(20)).await;
    assert_readable(&read(&ns, "pending").await, "Active");
    ns.delete().await;
}
