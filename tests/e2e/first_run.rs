//! What a new user sees: start-up checks that fail in one readable line
//! (never a process that looks ready while every reconcile fails), and a
//! key that cannot be minted saying why in its status and an Event.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use keymint::apikey::{ApiKey, Phase};
use keymint::quota::Pair;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::support::operator::Operator;
use crate::support::{TestNamespace, api_key, control_plane, eventually, wait_for_warning};

/// A kubeconfig that acts as `user` (impersonated by the admin user).
fn kubeconfig_as(user: &str, dir: &Path) -> PathBuf {
    let admin = std::fs::read_to_string(control_plane().kubeconfig()).expect("kubeconfig");
    let mut kubeconfig: Value = serde_norway::from_str(&admin).expect("kubeconfig YAML");
    for entry in kubeconfig["users"].as_array_mut().expect("users") {
        entry["user"]["as"] = Value::String(user.to_string());
    }
    let path = dir.join(format!("{}.kubeconfig", user.replace(['@', ':'], "-")));
    std::fs::write(&path, serde_norway::to_string(&kubeconfig).expect("YAML")).expect("write");
    path
}

/// Runs `keymint run` to its exit (at most 30 s): exit code and output.
fn run_to_exit(kubeconfig: &Path, args: &[&str]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("keymint-first-run-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("out.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keymint"))
        .arg("run")
        .args(["--http-addr", "127.0.0.1:0"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .expect("start keymint run");
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// The lines keymint logged at error level.
fn error_lines(output: &str) -> Vec<&str> {
    output.lines().filter(|l| l.contains("ERROR")).collect()
}

#[tokio::test]
async fn a_missing_namespace_stops_keymint_with_one_line_saying_so() {
    let ns = TestNamespace::new("first-run-ns").await;
    let admin = control_plane().kubeconfig().to_path_buf();
    let (code, output) = run_to_exit(
        &admin,
        &[
            "--namespace",
            "keymint-nowhere",
            "--watch-namespace",
            &ns.name,
        ],
    );
    assert_eq!(code, Some(1), "exits non-zero:\n{output}");
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "one line:\n{output}");
    assert!(
        errors[0].contains("namespace keymint-nowhere does not exist")
            && errors[0].contains("kubectl create namespace keymint-nowhere"),
        "{}",
        errors[0]
    );
    assert!(!output.contains("Status {"), "no debug dump:\n{output}");
    ns.delete().await;
}

#[tokio::test]
async fn missing_permissions_stop_keymint_naming_each_verb() {
    let ns = TestNamespace::new("first-run-rbac").await;
    let dir = std::env::temp_dir();
    let nobody = kubeconfig_as("nobody@example.com", &dir);
    let (code, output) = run_to_exit(
        &nobody,
        &["--namespace", &ns.name, "--watch-namespace", &ns.name],
    );
    assert_eq!(code, Some(1), "exits non-zero:\n{output}");
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "one line:\n{output}");
    let line = errors[0];
    for verb in ["list apikeys", "create secrets", "update configmaps"] {
        let expected = format!("{verb} in namespace {}", ns.name);
        assert!(
            line.contains("keymint lacks permissions") && line.contains(&expected),
            "{line}"
        );
    }
    assert!(!line.contains("Status {"), "no debug dump: {line}");
    ns.delete().await;
}

#[tokio::test]
async fn a_permission_missing_from_the_chart_is_named() {
    let ns = TestNamespace::new("first-run-perm").await;
    // The chart's ServiceAccount may do everything in its namespace, but
    // an audit stream elsewhere needs ConfigMaps there too.
    let other = TestNamespace::new("first-run-audit").await;
    let dir = std::env::temp_dir();
    let kubeconfig =
        crate::support::chart::operator_kubeconfig(control_plane().kubeconfig(), &dir, &ns.name);
    let (code, output) = run_to_exit(
        &kubeconfig,
        &[
            "--namespace",
            &ns.name,
            "--watch-namespace",
            &ns.name,
            "--audit-namespace",
            &other.name,
        ],
    );
    assert_eq!(code, Some(1), "exits non-zero:\n{output}");
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "one line:\n{output}");
    assert!(
        errors[0].contains("keymint lacks permissions")
            && errors[0].contains(&format!("create configmaps in namespace {}", other.name)),
        "{}",
        errors[0]
    );
    ns.delete().await;
    other.delete().await;
}

#[tokio::test]
async fn a_key_that_cannot_be_minted_says_why_in_status_and_event() {
    let ns = TestNamespace::new("first-run-why").await;
    let api: Api<ApiKey> = ns.api();
    let pair = Pair {
        project: "broken",
        owner: "mallory@example.com",
    };
    let garbage: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": pair.ledger_name()},
        "data": {"admitted": "this is not a ledger"},
    }))
    .expect("ConfigMap");
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &garbage)
        .await
        .expect("create the unreadable ledger");
    let _operator = Operator::start(&ns.name, &[]);
    api.create(
        &PostParams::default(),
        &api_key("stuck", pair.project, pair.owner),
    )
    .await
    .expect("create");

    eventually(Duration::from_secs(10), || async {
        let key = api.get("stuck").await.expect("get");
        key.status.is_some_and(|s| s.phase == Some(Phase::Pending))
    })
    .await;
    let status = api.get("stuck").await.expect("get").status.expect("status");
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "False")
    );
    assert_eq!(ready.reason, "LedgerUnreadable");
    assert!(
        ready.message.contains(&pair.ledger_name()) && ready.message.contains("repaired"),
        "names the ledger and what to do: {}",
        ready.message
    );
    let reconciling = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciling")
        .expect("Reconciling");
    assert_eq!(reconciling.status, "True");
    assert_eq!(reconciling.message, ready.message);
    let note = wait_for_warning(&ns, "stuck", "LedgerUnreadable").await;
    assert!(
        note.starts_with(&ready.message),
        "the Event says the same: {note}"
    );
    ns.delete().await;
}
