//! The container image, built and run: `Dockerfile.host` over the static
//! binary (tests/image/build-static.sh, what `make image` uses), built with
//! podman, and `keymint run` started from it the way the chart's Deployment
//! runs it — its arguments and environment, its user, a read-only root
//! filesystem, no capabilities, no privilege escalation — against the local
//! control plane (host network, the kubeconfig mounted read-only), until an
//! ApiKey is Active.
//!
//! Without podman the test is skipped with a message, except in CI
//! (`CI=true`), where .ci/run installs podman and a missing one is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use keymint::apikey::{ApiKey, Phase};
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;

use crate::support::chart::{operator_kubeconfig, operator_release, render};
use crate::support::manifests::container_args;
use crate::support::{
    TestNamespace, api_key, control_plane, eventually, http_get, json_log_http_addr, wait_for_phase,
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Where the kubeconfig is mounted in the container.
const KUBECONFIG_IN_CONTAINER: &str = "/var/run/keymint/kubeconfig";
/// An upper bound for the image: one stripped static binary (about 15 MB).
const MAX_IMAGE_BYTES: u64 = 32 << 20;

/// Whether podman can be used; panics in CI, where it must be.
fn podman_present() -> bool {
    let present = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "podman is not installed, and CI must build and run the image (.ci/run installs podman and runc)"
        );
        eprintln!(
            "SKIPPED image::the_image_runs_keymint_as_the_chart_does: podman is not installed \
             (apt-get install podman runc); CI runs it"
        );
    }
    present
}

/// podman with the settings this kind of machine needs (no systemd, runc).
fn podman(args: &[&str]) -> Output {
    let out = podman_command().args(args).output().expect("run podman");
    assert!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn podman_command() -> Command {
    let mut command = Command::new("podman");
    command.env(
        "CONTAINERS_CONF",
        Path::new(REPO).join("tests/image/containers.conf"),
    );
    command
}

/// Builds the static binary (a no-op when `make test` already has) and the
/// image from it; returns the image ID. The build is reproducible
/// (`--timestamp 0`), so the same binary gives the same image.
fn build_image(dir: &Path) -> String {
    let out = Command::new(Path::new(REPO).join("tests/image/build-static.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/image/build-static.sh");
    assert!(out.status.success(), "building the static binary failed");
    let binary = PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim());
    let context = dir.join("image-context");
    std::fs::create_dir_all(&context).expect("image context");
    std::fs::copy(&binary, context.join("keymint")).expect("copy the binary");
    let dockerfile = Path::new(REPO).join("Dockerfile.host");
    let out = podman(&[
        "build",
        "--quiet",
        "--timestamp",
        "0",
        "--file",
        dockerfile.to_str().expect("path"),
        "--tag",
        "localhost/keymint:e2e",
        context.to_str().expect("path"),
    ]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!id.is_empty(), "podman build printed no image ID");
    id
}

/// The chart's Deployment for the test namespace's operator release,
/// watching only that namespace, without the owner binding (a cluster-wide
/// policy this test does not install).
fn deployment(ns: &TestNamespace) -> Value {
    let watch = format!(
        "extraArgs=[\"--watch-namespace={}\", \"--allow-unbound-owners\"]",
        ns.name
    );
    render(
        &operator_release(&ns.name),
        &ns.name,
        &["--set-json", &watch],
    )
    .into_iter()
    .find(|o| o["kind"] == "Deployment")
    .expect("the chart renders a Deployment")
}

/// podman flags for what the Deployment's pod and container security
/// contexts ask. A setting this does not know fails the test: the container
/// must run exactly as the chart says.
fn security_flags(deployment: &Value) -> Vec<String> {
    let pod = &deployment["spec"]["template"]["spec"];
    let (pod_sc, sc) = (
        &pod["securityContext"],
        &pod["containers"][0]["securityContext"],
    );
    let user = sc["runAsUser"].as_u64().or(pod_sc["runAsUser"].as_u64());
    let group = sc["runAsGroup"].as_u64().or(pod_sc["runAsGroup"].as_u64());
    let (Some(user), Some(group)) = (user, group) else {
        panic!("the chart sets runAsUser and runAsGroup: {pod_sc} {sc}");
    };
    assert_ne!(user, 0, "runAsNonRoot");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(
        sc["capabilities"],
        serde_json::json!({"drop": ["ALL"]}),
        "{sc}"
    );
    for profile in [&sc["seccompProfile"], &pod_sc["seccompProfile"]] {
        // RuntimeDefault is podman's default seccomp profile.
        assert!(
            profile.is_null() || profile["type"] == "RuntimeDefault",
            "{profile}"
        );
    }
    [
        format!("--user={user}:{group}"),
        "--read-only".into(),
        "--cap-drop=ALL".into(),
        "--security-opt=no-new-privileges".into(),
    ]
    .into()
}

/// The container's environment as the kubelet would set it for `pod_name`.
fn env_flags(deployment: &Value, namespace: &str, pod_name: &str) -> Vec<String> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_array().expect("env");
    let mut flags = vec![format!("--env=KUBECONFIG={KUBECONFIG_IN_CONTAINER}")];
    for var in env {
        let name = var["name"].as_str().expect("name");
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.namespace") => namespace.to_string(),
            Some("metadata.name") => pod_name.to_string(),
            Some(other) => panic!("{name}: a fieldRef to {other} this test does not set"),
            None => var["value"].as_str().expect("a value").to_string(),
        };
        flags.push(format!("--env={name}={value}"));
    }
    flags
}

/// The Deployment's arguments, with a free loopback port instead of the
/// pod's own 8080 (the container shares the host's network).
fn args_on_host_network(deployment: &Value) -> Vec<String> {
    container_args(deployment)
        .into_iter()
        .map(|a| match a.starts_with("--http-addr=") {
            true => "--http-addr=127.0.0.1:0".to_string(),
            false => a,
        })
        .collect()
}

/// A running container; removed when dropped.
struct Container {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Container {
    fn start(image: &str, flags: &[String], args: &[String], dir: &Path) -> Container {
        let name = format!("keymint-e2e-{}", std::process::id());
        let log_path = dir.join("container.log");
        let log = std::fs::File::create(&log_path).expect("container log");
        let mut command = podman_command();
        command
            .args(["run", "--rm", "--name", &name, "--network=host"])
            // A bound on its life even if this test process is killed.
            .arg("--timeout=600")
            .args(flags)
            .arg(image)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        crate::support::dies_with_the_test(&mut command);
        let child = command.spawn().expect("podman run");
        Container {
            name,
            child: Some(child),
            log_path,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The address keymint serves HTTP on, once it has logged it.
    async fn http_addr(&self) -> std::net::SocketAddr {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(addr) = json_log_http_addr(&self.log()) {
                return addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "keymint in the container never served HTTP:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `podman stop` (SIGTERM, as the kubelet does); whether keymint exited 0.
    fn stop(&mut self) -> bool {
        podman(&["stop", "--time", "20", &self.name]);
        self.child
            .take()
            .and_then(|mut c| c.wait().ok())
            .is_some_and(|s| s.success())
    }

    /// The main process's /proc/PID/status and the root mount's options.
    fn process_facts(&self) -> (String, String) {
        let out = podman(&["inspect", "--format", "{{.State.Pid}}", &self.name]);
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mounts");
        let root = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .expect("a root mount")
            .to_string();
        (status, root)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = podman_command()
                .args(["rm", "--force", "--time", "0", &self.name])
                .output();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The value of `field` in /proc/PID/status.
fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
}

#[tokio::test]
async fn the_image_runs_keymint_as_the_chart_does() {
    if !podman_present() {
        return;
    }
    let ns = TestNamespace::new("image").await;
    let dir = control_plane()
        .kubeconfig()
        .parent()
        .expect("state directory")
        .join("image")
        .join(&ns.name);
    std::fs::create_dir_all(&dir).expect("test directory");
    let image = build_image(&dir);
    let out = podman(&["image", "inspect", "--format", "{{.Size}}", &image]);
    let size: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a size");
    eprintln!("keymint image {image}: {size} bytes");
    assert!(size < MAX_IMAGE_BYTES, "the image is {size} bytes");

    let deployment = deployment(&ns);
    let kubeconfig = operator_kubeconfig(control_plane().kubeconfig(), &dir, &ns.name);
    let mut flags = security_flags(&deployment);
    flags.extend(env_flags(&deployment, &ns.name, "keymint-image-e2e"));
    flags.push(format!(
        "--volume={}:{KUBECONFIG_IN_CONTAINER}:ro",
        kubeconfig.display()
    ));
    let mut container = Container::start(&image, &flags, &args_on_host_network(&deployment), &dir);

    let addr = container.http_addr().await;
    assert_eq!(http_get(addr, "/healthz").0, 200, "{}", container.log());
    eventually(Duration::from_secs(30), || async {
        http_get(addr, "/readyz").0 == 200
    })
    .await;

    let (status, root) = container.process_facts();
    assert_eq!(
        status_field(&status, "Uid").split_whitespace().next(),
        Some("65532")
    );
    assert_eq!(
        status_field(&status, "Gid").split_whitespace().next(),
        Some("65532")
    );
    assert_eq!(
        status_field(&status, "CapEff"),
        "0000000000000000",
        "{status}"
    );
    assert_eq!(
        status_field(&status, "CapPrm"),
        "0000000000000000",
        "{status}"
    );
    assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{status}");
    let options = root.split_whitespace().nth(5).expect("mount options");
    assert!(options.split(',').any(|o| o == "ro"), "root mount: {root}");

    let api: Api<ApiKey> = ns.api();
    api.create(
        &PostParams::default(),
        &api_key("from-the-image", "image", "alice@example.com"),
    )
    .await
    .expect("create ApiKey");
    wait_for_phase(
        &api,
        "from-the-image",
        Phase::Active,
        Duration::from_secs(30),
    )
    .await;

    assert!(
        container.stop(),
        "keymint in the container did not exit 0 on SIGTERM:\n{}",
        container.log()
    );
    ns.delete().await;
}
