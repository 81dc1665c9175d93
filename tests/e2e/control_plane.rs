//! The test kit itself: the control plane answers, impersonation is real, and
//! nothing outlives the test process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use keymint::apikey::ApiKey;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::access::grant_edit;
use crate::support::{EXTERNAL_CLUSTER_ENV, TestNamespace, control_plane};

#[tokio::test]
async fn impersonated_user_is_subject_to_rbac() {
    let ns = TestNamespace::new("rbac").await;
    let admin: Api<Secret> = ns.api();
    admin
        .list(&ListParams::default())
        .await
        .expect("admin lists Secrets");

    let alice = control_plane()
        .as_user("alice@example.com", &["developers"])
        .await;
    let err = Api::<Secret>::namespaced(alice, &ns.name)
        .list(&ListParams::default())
        .await
        .expect_err("a user without RBAC grants cannot list Secrets");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    assert!(err.to_string().contains("alice@example.com"), "{err}");

    let sa = control_plane()
        .as_service_account(&ns.name, "keymint")
        .await;
    let err = Api::<Secret>::namespaced(sa, &ns.name)
        .list(&ListParams::default())
        .await
        .expect_err("a ServiceAccount without grants cannot list Secrets");
    assert!(
        err.to_string()
            .contains(&format!("system:serviceaccount:{}:keymint", ns.name)),
        "{err}"
    );
    ns.delete().await;
}

/// The built-in `edit` role is the real one (the control plane aggregates
/// it): bound in one namespace it lets a tenant write Secrets there, read
/// none elsewhere, and never write an ApiKey's status.
#[tokio::test]
async fn the_builtin_edit_role_is_aggregated_and_namespaced() {
    const TENANT: &str = "erin@example.com";
    let ns = TestNamespace::new("edit").await;
    let other = TestNamespace::new("edit-other").await;
    grant_edit(&ns.client, &ns.name, TENANT).await;
    let tenant = control_plane().as_user(TENANT, &[]).await;

    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "mine"}})).expect("a Secret");
    Api::<Secret>::namespaced(tenant.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .expect("edit creates a Secret in its namespace");
    other
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("admin creates a Secret next door");
    let err = Api::<Secret>::namespaced(tenant.clone(), &other.name)
        .get("mine")
        .await
        .expect_err("edit in one namespace reads no Secret in another");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    let err = Api::<ApiKey>::namespaced(tenant, &ns.name)
        .patch_status(
            "any",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"keyId": "km_forged"}})),
        )
        .await
        .expect_err("edit never writes an ApiKey's status");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    other.delete().await;
    ns.delete().await;
}

/// Not run on its own: `control_plane_dies_with_its_test_process` starts the
/// test binary again with only this test, then SIGKILLs it.
#[test]
#[ignore = "helper for control_plane_dies_with_its_test_process"]
fn hold_control_plane_until_killed() {
    let cp = control_plane();
    println!("holding {}", cp.kubeconfig().display());
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn control_plane_dies_with_its_test_process() {
    if std::env::var_os(EXTERNAL_CLUSTER_ENV).is_some() {
        return; // nothing is started against an external cluster
    }
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "--ignored",
            "--exact",
            "--nocapture",
            "control_plane::hold_control_plane_until_killed",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the holder");
    let holder_pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.starts_with("holding ") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).expect("read") > 0,
            "the holder exited early"
        );
    }
    let state_dir = format!("test-runs/{holder_pid}");
    assert!(
        !processes_mentioning(&state_dir).is_empty(),
        "the holder's control plane is running"
    );

    child.kill().expect("SIGKILL the holder");
    child.wait().expect("reap the holder");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(&state_dir);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans after SIGKILL of the test process: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Command lines of live processes that contain `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}
