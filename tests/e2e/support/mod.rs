//! Test support: one real Kubernetes control plane per test run, a fresh
//! namespace per test, and clients for an admin, an impersonated user or a
//! ServiceAccount.
//!
//! The control plane is `keymint-controlplane` (tests/controlplane): embedded
//! etcd, upstream kube-apiserver and kube-controller-manager on free loopback
//! ports. It is started on first use and watches its standard input, which
//! this process holds for its whole life: when the test run ends — normally,
//! after a panic, on Ctrl-C or even SIGKILL — the pipe closes and the control
//! plane stops everything it started.
//!
//! Set `KEYMINT_TEST_KUBECONFIG` to run the same tests against an existing
//! cluster instead (the current context of that file is used).

#![allow(dead_code)] // each test module uses a different part of this kit

pub mod access;
pub mod apiserver_audit;
pub mod audit;
pub mod chart;
pub mod hostile;
pub mod kubectl;
pub mod manifests;
pub mod nginx;
pub mod operator;
pub mod raw_http;
pub mod templates;
pub mod traefik;
pub mod upstream;
pub mod verifier;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keymint::grant::ProjectGrant;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use tokio::sync::OnceCell;

pub const EXTERNAL_CLUSTER_ENV: &str = "KEYMINT_TEST_KUBECONFIG";
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The control plane this test run talks to.
pub struct ControlPlane {
    kubeconfig: PathBuf,
    /// Held, never used: dropping the pipe (at process exit) stops the
    /// launcher. The mutex only makes the type `Sync` for the static.
    _launcher: Option<Mutex<(Child, ChildStdin, ChildStdout)>>,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The shared control plane, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| match std::env::var_os(EXTERNAL_CLUSTER_ENV) {
        Some(path) => ControlPlane {
            kubeconfig: PathBuf::from(path),
            _launcher: None,
        },
        None => start_local_control_plane(),
    })
}

impl ControlPlane {
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client's configuration as the kubeconfig's (admin) user.
    pub async fn admin_config(&self) -> Config {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("readable kubeconfig");
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("valid kubeconfig")
    }

    /// A cluster-admin client. Made per test: a client belongs to the tokio
    /// runtime it was created on, and every `#[tokio::test]` has its own.
    pub async fn admin(&self) -> Client {
        Client::try_from(self.admin_config().await).expect("client")
    }

    /// A client that impersonates `user` with `groups` (plus
    /// `system:authenticated`), for RBAC and admission tests.
    pub async fn as_user(&self, user: &str, groups: &[&str]) -> Client {
        let mut config = self.admin_config().await;
        let mut all_groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        all_groups.push("system:authenticated".into());
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = Some(all_groups);
        Client::try_from(config).expect("client")
    }

    /// A client that impersonates a ServiceAccount, with the groups the API
    /// server would give its token.
    pub async fn as_service_account(&self, namespace: &str, name: &str) -> Client {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let ns_group = format!("system:serviceaccounts:{namespace}");
        self.as_user(&user, &["system:serviceaccounts", &ns_group])
            .await
    }
}

fn start_local_control_plane() -> ControlPlane {
    let root = Path::new(REPO).join("target/controlplane");
    let launcher = root.join("bin/keymint-controlplane");
    if !launcher.exists() {
        eprintln!(
            "building the local control plane (first run only; see tests/controlplane/build.sh)"
        );
        let status = Command::new(Path::new(REPO).join("tests/controlplane/build.sh"))
            .status()
            .expect("run tests/controlplane/build.sh");
        assert!(status.success(), "building the local control plane failed");
    }
    let runs = root.join("test-runs");
    prune_finished_runs(&runs);
    let dir = runs.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).expect("create the control plane's state directory");
    let log_path = dir.join("launcher.log");
    let log = std::fs::File::create(&log_path).expect("create launcher.log");

    let mut child = Command::new(&launcher)
        .arg("--dir")
        .arg(&dir)
        .arg("--watch-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start keymint-controlplane");
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let read = reader
        .read_line(&mut line)
        .expect("read the launcher's ready line");
    let Some(kubeconfig) = line.trim().strip_prefix("ready ") else {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!(
            "the control plane did not start (read {read} bytes: {line:?}); launcher log:\n{log}"
        );
    };
    ControlPlane {
        kubeconfig: PathBuf::from(kubeconfig),
        _launcher: Some(Mutex::new((child, stdin, reader.into_inner()))),
    }
}

/// Removes the state of earlier runs whose process is gone; a run that is
/// still going (another `cargo test`) keeps its directory.
fn prune_finished_runs(runs: &Path) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let alive = entry
            .file_name()
            .to_str()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The CRDs (ApiKey, ProjectGrant), installed once per run from the
/// committed YAML (what users install) and waited for until the API server
/// serves them.
pub async fn install_crd(client: &Client) {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            for file in [
                "crds/apikeys.keymint.dev.yaml",
                "crds/projectgrants.keymint.dev.yaml",
            ] {
                let yaml = std::fs::read_to_string(Path::new(REPO).join(file))
                    .expect("read the committed CRD");
                let crd: CustomResourceDefinition =
                    serde_norway::from_str(&yaml).expect("CRD YAML");
                let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
                crds.patch(
                    &crd.name_any(),
                    &PatchParams::apply("keymint-tests").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .unwrap_or_else(|e| panic!("apply {file}: {e}"));
            }
            // A new CRD is Established and then takes a moment before the
            // resource is served: poll until a list succeeds.
            let api_keys: Api<keymint::apikey::ApiKey> = Api::all(client.clone());
            let grants: Api<ProjectGrant> = Api::all(client.clone());
            eventually(Duration::from_secs(30), || async {
                api_keys.list_metadata(&Default::default()).await.is_ok()
                    && grants.list_metadata(&Default::default()).await.is_ok()
            })
            .await;
        })
        .await;
}

/// Polls `check` every 100 ms until it holds; panics after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A namespace of its own for one test, with an admin client.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Creates `kmt-<prefix>-<random>` (labelled `keymint.dev/test=true`, so
    /// leftovers on an external cluster are easy to find) with the CRDs
    /// installed, granted any project (a ProjectGrant of `["*"]`).
    pub async fn new(prefix: &str) -> TestNamespace {
        Self::with_projects(prefix, &["*"]).await
    }

    /// As [`TestNamespace::new`], granted only `projects` (none at all, no
    /// ProjectGrant, for `&[]`).
    pub async fn with_projects(prefix: &str, projects: &[&str]) -> TestNamespace {
        let ns = Self::ungranted(prefix).await;
        if !projects.is_empty() {
            ns.grant(projects).await;
        }
        ns
    }

    /// Grants the namespace `projects` as a cluster admin would: creates or
    /// replaces its ProjectGrant.
    pub async fn grant(&self, projects: &[&str]) {
        let grant: ProjectGrant = serde_json::from_value(serde_json::json!({
            "apiVersion": "keymint.dev/v1alpha1", "kind": "ProjectGrant",
            "metadata": {"name": keymint::grant::GRANT_NAME},
            "spec": {"projects": projects},
        }))
        .expect("ProjectGrant");
        self.api::<ProjectGrant>()
            .patch(
                keymint::grant::GRANT_NAME,
                &PatchParams::apply("keymint-tests").force(),
                &Patch::Apply(&grant),
            )
            .await
            .expect("grant the test namespace its projects");
    }

    pub async fn ungranted(prefix: &str) -> TestNamespace {
        let client = control_plane().admin().await;
        install_crd(&client).await;
        let suffix: u32 = rand::random();
        let name = format!("kmt-{prefix}-{suffix:08x}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"keymint.dev/test": "true"}}
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the test namespace");
        // The operator of this namespace runs as the chart's ServiceAccount,
        // with the chart's RBAC and nothing more.
        chart::install_operator_rbac(&client, &name).await;
        TestNamespace { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace. Called at the end of a passing test; a failing
    /// test leaves its namespace behind for inspection.
    pub async fn delete(self) {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await
            .expect("delete the test namespace");
    }
}

/// An ApiKey with the given project and owner, no expiry.
pub fn api_key(name: &str, project: &str, owner: &str) -> keymint::apikey::ApiKey {
    keymint::apikey::ApiKey::new(
        name,
        keymint::apikey::ApiKeySpec {
            project: project.into(),
            owner: owner.into(),
            description: None,
            expires_at: None,
            secret_name: None,
            secret_template: None,
            show_once: None,
        },
    )
}

/// Waits until the ApiKey `name` has `phase`; returns it.
pub async fn wait_for_phase(
    api: &Api<keymint::apikey::ApiKey>,
    name: &str,
    phase: keymint::apikey::Phase,
    timeout: Duration,
) -> keymint::apikey::ApiKey {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = api.get_opt(name).await.expect("get ApiKey");
        let seen = current
            .as_ref()
            .and_then(|k| k.status.as_ref())
            .and_then(|s| s.phase);
        if seen == Some(phase) {
            return current.expect("present");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: phase {seen:?}, expected {phase:?} within {timeout:?}; status: {:?}",
            current.and_then(|k| k.status)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Events about the ApiKey `name` in `namespace`, as (reason, message).
pub async fn events_for(client: &Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    let list = events
        .list(&kube::api::ListParams::default())
        .await
        .expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Watches `api` for the rest of the test, handing every event to
/// `on_event` in order, and returns once the initial list is done: nothing
/// that happens afterwards is missed. Watch errors are retried with kube's
/// default backoff.
pub async fn watch_from_here<K>(
    api: Api<K>,
    config: watcher::Config,
    mut on_event: impl FnMut(watcher::Event<K>) + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let listed = matches!(event, watcher::Event::InitDone);
            on_event(event);
            if listed && let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("the watch lists within 30 s")
        .expect("watch task alive");
    task
}

/// Every Secret UID ever seen under each Secret name in `secrets`, from a
/// watch that runs for the rest of the test (started before anything it
/// must see): a name with two UIDs was minted twice. The operator's seal
/// key is no key's Secret (a test's namespace is its operator's own).
pub async fn record_secret_uids(
    secrets: Api<Secret>,
) -> Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> {
    let seen: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let sink = seen.clone();
    watch_from_here(secrets, watcher::Config::default(), move |event| {
        if let watcher::Event::Apply(secret) | watcher::Event::InitApply(secret) = event
            && !keymint::runtime::key_secret::ALL.contains(&secret.name_any().as_str())
        {
            sink.lock()
                .expect("lock")
                .entry(secret.name_any())
                .or_default()
                .insert(secret.uid().unwrap_or_default());
        }
    })
    .await;
    seen
}

/// Warning Events about the ApiKey `name` with `reason`: their notes.
pub async fn warnings(client: &Client, namespace: &str, name: &str, reason: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    events
        .list(&kube::api::ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason))
        .map(|e| e.note.unwrap_or_default())
        .collect()
}

/// Waits for a Warning Event `reason` about `name`; returns its note.
pub async fn wait_for_warning(ns: &TestNamespace, name: &str, reason: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(note) = warnings(&ns.client, &ns.name, name, reason)
            .await
            .into_iter()
            .next()
        {
            return note;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: no Warning Event {reason} within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes `original` (that exact Secret) and creates another under the same
/// name: with the same labels, annotations and — if `keep_owner` — the same
/// controller ownerReference, but a different (well-formed) key. Returns the
/// replacement as created.
pub async fn replace_secret(secrets: &Api<Secret>, original: &Secret, keep_owner: bool) -> Secret {
    let name = original.name_any();
    secrets
        .delete(
            &name,
            &DeleteParams {
                preconditions: Some(Preconditions {
                    uid: original.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete the Secret");
    let forged = keymint::apikey::key::mint().expect("mint a look-alike key");
    let mut data = original.data.clone().unwrap_or_default();
    data.insert(
        "api-key".into(),
        ByteString(forged.expose().as_bytes().to_vec()),
    );
    let replacement = Secret {
        metadata: ObjectMeta {
            name: Some(name),
            labels: original.metadata.labels.clone(),
            annotations: original.metadata.annotations.clone(),
            owner_references: if keep_owner {
                original.metadata.owner_references.clone()
            } else {
                None
            },
            ..ObjectMeta::default()
        },
        type_: original.type_.clone(),
        // Left mutable on purpose: an operator that overwrote it could.
        immutable: None,
        data: Some(data),
        ..Secret::default()
    };
    // The old Secret has no finalizers, so its name is free at once.
    secrets
        .create(&PostParams::default(), &replacement)
        .await
        .expect("create the replacement Secret")
}

/// The raw JSON the API server returns for `path`: nothing dropped by a
/// typed struct.
pub async fn raw(client: &Client, path: &str) -> String {
    let request = http::Request::get(path).body(Vec::new()).expect("request");
    client.request_text(request).await.expect(path)
}

/// A ValidatingAdmissionPolicy (and binding) that refuses Secrets carrying
/// `label=value` in `ns`; returns once the API server enforces it.
pub async fn refuse_secrets_labelled(ns: &TestNamespace, label: &str, value: &str) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let name = format!("{}-refuse-secrets", ns.name);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["secrets"],
            }]},
            "validations": [{
                "expression": format!(
                    "!has(object.metadata.labels) || !('{label}' in object.metadata.labels) || object.metadata.labels['{label}'] != '{value}'"
                ),
                "message": "refused by a keymint test",
            }],
        },
    }))
    .expect("policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}}},
        },
    }))
    .expect("binding");
    let pp = kube::api::PostParams::default();
    Api::<ValidatingAdmissionPolicy>::all(ns.client.clone())
        .create(&pp, &policy)
        .await
        .expect("create policy");
    Api::<ValidatingAdmissionPolicyBinding>::all(ns.client.clone())
        .create(&pp, &binding)
        .await
        .expect("create binding");
    // A new policy is enforced within about a second: probe with dry runs.
    let secrets: Api<Secret> = ns.api();
    let mut probe = Secret::default();
    probe.metadata.name = Some("policy-probe".into());
    probe.metadata.labels = Some(
        [(label.to_string(), value.to_string())]
            .into_iter()
            .collect(),
    );
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(Duration::from_secs(20), || async {
        secrets.create(&dry_run, &probe).await.is_err()
    })
    .await;
}

/// Undoes [`refuse_secrets_labelled`]: deletes its policy and binding and
/// returns once the API server admits such Secrets again.
pub async fn admit_secrets_again(ns: &TestNamespace, label: &str, value: &str) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let name = format!("{}-refuse-secrets", ns.name);
    Api::<ValidatingAdmissionPolicyBinding>::all(ns.client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete binding");
    Api::<ValidatingAdmissionPolicy>::all(ns.client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete policy");
    let secrets: Api<Secret> = ns.api();
    let mut probe = Secret::default();
    probe.metadata.name = Some("policy-probe".into());
    probe.metadata.labels = Some([(label.to_string(), value.to_string())].into());
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(Duration::from_secs(20), || async {
        secrets.create(&dry_run, &probe).await.is_ok()
    })
    .await;
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The address `keymint run` serves /metrics, /healthz and /readyz on, from
/// its JSON log (the chart's format): {"fields":{"message":"serving
/// /metrics, ...","addr":"127.0.0.1:PORT"}}.
pub fn json_log_http_addr(log: &str) -> Option<std::net::SocketAddr> {
    log.lines().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = &entry["fields"];
        let serving = fields["message"].as_str()?.starts_with("serving /metrics");
        serving.then(|| fields["addr"].as_str()?.parse().ok())?
    })
}

/// target/tools/bin/`binary`, a test tool that `make test` builds; built
/// here by `script` when a test runs without it (first run only).
pub fn test_tool(binary: &str, script: &str) -> PathBuf {
    let path = Path::new(REPO).join("target/tools/bin").join(binary);
    if !path.exists() {
        eprintln!("building {binary} (first run only; see {script})");
        let status = Command::new(Path::new(REPO).join(script))
            .status()
            .unwrap_or_else(|e| panic!("run {script}: {e}"));
        assert!(status.success(), "{script} failed");
    }
    path
}

/// The kernel SIGKILLs `command`'s child if the thread that started it goes
/// away: a killed test run leaves no process behind.
pub fn dies_with_the_test(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, and it only asks the kernel for
    // the signal.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Waits up to `timeout` for `child` to exit: its exit code (None if it
/// still runs, or was killed by a signal).
pub async fn exit_code(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `status` (a request through a proxy) answers 401; fails if
/// that takes a second or more from now.
pub async fn refused_within_a_second<F, Fut>(status: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let started = tokio::time::Instant::now();
    loop {
        let status = status().await;
        if status == 401 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still {status} a second after the delete"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
