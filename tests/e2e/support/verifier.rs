//! Runs the real `keymint verifier` binary for one test, against the test
//! control plane, as a user that may only list and watch the ApiKeys of the
//! test namespace — so a verifier that tried to read a Secret would fail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::Value;

use super::{TestNamespace, control_plane, eventually, raw_http};

static STARTED: AtomicUsize = AtomicUsize::new(0);

/// The name the verifier runs as in a test namespace.
const ACCOUNT: &str = "keymint-verifier";

pub struct Verifier {
    child: Option<Child>,
    pub log_path: PathBuf,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// /healthz, /readyz and /metrics.
    pub probe: SocketAddr,
}

/// How a test starts the verifier, beyond the defaults.
#[derive(Default)]
pub struct Launch<'a> {
    /// Further command-line arguments.
    pub args: &'a [&'a str],
    /// Further environment variables.
    pub env: &'a [(&'a str, &'a str)],
    /// The API server address its kubeconfig names instead of the real
    /// one (a proxy the test controls; TLS passes through it).
    pub api_server: Option<SocketAddr>,
    /// Return once it serves, without waiting for `/readyz`.
    pub unready: bool,
}

/// The real API server's address, from the admin kubeconfig.
pub fn api_server() -> SocketAddr {
    let admin = std::fs::read_to_string(control_plane().kubeconfig()).expect("kubeconfig");
    let kubeconfig: Value = serde_norway::from_str(&admin).expect("kubeconfig YAML");
    let server = kubeconfig["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("a server URL");
    server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .expect("the server is an IP address and port")
}

impl Verifier {
    /// Grants the verifier's account list/watch on the ApiKeys of `ns`,
    /// starts `keymint verifier` watching `ns` on free loopback ports, and
    /// waits until `/readyz` says its index is synced.
    pub async fn start(ns: &TestNamespace) -> Verifier {
        Verifier::launch(ns, Launch::default()).await
    }

    /// As [`Verifier::start`], with `extra` flags.
    pub async fn start_with(ns: &TestNamespace, extra: &[&str]) -> Verifier {
        let launch = Launch {
            args: extra,
            ..Launch::default()
        };
        Verifier::launch(ns, launch).await
    }

    /// [`Verifier::start`] as `launch` says.
    pub async fn launch(ns: &TestNamespace, launch: Launch<'_>) -> Verifier {
        let unready = launch.unready;
        let mut verifier = Verifier::spawn_as(ns, launch).await;
        verifier.http = verifier.logged_addr("serving HTTP").await;
        verifier.grpc = verifier.logged_addr("serving gRPC").await;
        verifier.probe = verifier.logged_addr("serving probes").await;
        if unready {
            return verifier;
        }
        let probe = verifier.probe;
        eventually(Duration::from_secs(20), || async move {
            raw_http::get(probe, "/readyz", &[]).await.status == 200
        })
        .await;
        verifier
    }

    /// Starts the process with `extra` flags and returns at once (its
    /// addresses unknown): for tests of a verifier that refuses to start.
    pub async fn spawn(ns: &TestNamespace, extra: &[&str]) -> Verifier {
        let launch = Launch {
            args: extra,
            ..Launch::default()
        };
        Verifier::spawn_as(ns, launch).await
    }

    /// Starts the process as `launch` says and returns at once. Without the
    /// chart's owner binding in the test cluster, it runs with
    /// `--allow-unbound-owners` unless the test names a policy.
    async fn spawn_as(ns: &TestNamespace, launch: Launch<'_>) -> Verifier {
        grant_list_watch(&ns.client, &ns.name).await;
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = control_plane()
            .kubeconfig()
            .parent()
            .map_or_else(std::env::temp_dir, PathBuf::from)
            .join("verifiers");
        std::fs::create_dir_all(&dir).expect("verifier log directory");
        let log_path = dir.join(format!("{}-{n}.log", ns.name));
        let log = std::fs::File::create(&log_path).expect("verifier log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keymint"));
        command
            .args(["verifier", "--watch-namespace", &ns.name])
            .args(["--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .args(["--probe-addr", "127.0.0.1:0"])
            .args(launch.args)
            .env(
                "KUBECONFIG",
                kubeconfig(&dir, &ns.name, n, launch.api_server),
            )
            .env("RUST_LOG", "keymint=debug,kube=info")
            .envs(launch.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        crate::support::dies_with_the_test(&mut command);
        if !super::operator::names_owner_binding(launch.args) {
            command.arg("--allow-unbound-owners");
        }
        let child = command.spawn().expect("start keymint verifier");
        Verifier {
            child: Some(child),
            log_path,
            http: "0.0.0.0:0".parse().expect("addr"),
            grpc: "0.0.0.0:0".parse().expect("addr"),
            probe: "0.0.0.0:0".parse().expect("addr"),
        }
    }

    /// Waits up to `timeout` for the process to exit: its exit code (None
    /// if it still runs, or was killed by a signal).
    pub async fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        super::exit_code(self.child.as_mut()?, timeout).await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id, to read its memory from /proc.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the verifier's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// `POST /v1/verify` with `key` for `project` (`*` for any): the JSON
    /// answer.
    pub async fn verify_json(&self, key: &str, project: &str) -> Value {
        let body = serde_json::json!({ "key": key, "project": project });
        let reply = raw_http::post_json(self.http, "/v1/verify", &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    /// Asks Envoy's `Authorization/Check` through the ext_authz client
    /// built from Envoy's protos: `request` is its JSON input.
    pub fn ext_authz(&self, request: &Value) -> Value {
        use std::io::Write as _;
        let mut child = Command::new(ext_authz_client())
            .args(["-addr", &self.grpc.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run keymint-extauthz-check");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(request.to_string().as_bytes())
            .expect("send the request");
        let output = child.wait_with_output().expect("ext_authz client");
        assert!(
            output.status.success(),
            "ext_authz client: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("the client's JSON")
    }

    async fn logged_addr(&self, marker: &str) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.log().lines().find_map(|line| {
                let rest = line.split(marker).nth(1)?;
                rest.split("addr=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the verifier never logged {marker:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The ext_authz v3 client (tests/extauthz), built on first use.
fn ext_authz_client() -> &'static Path {
    static CLIENT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| super::test_tool("keymint-extauthz-check", "tests/extauthz/build.sh"))
}

pub fn identity(namespace: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{namespace}:{ACCOUNT}"),
        vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_string(),
        ],
    )
}

/// A Role that may list and watch ApiKeys — nothing else — bound to the
/// verifier's account; waits until the authorizer applies it.
async fn grant_list_watch(client: &Client, namespace: &str) {
    let meta = ObjectMeta {
        name: Some(ACCOUNT.into()),
        namespace: Some(namespace.into()),
        ..ObjectMeta::default()
    };
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["keymint.dev".into()]),
            resources: Some(vec!["apikeys".into()]),
            verbs: vec!["list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: ACCOUNT.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: ACCOUNT.into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };
    created_or_exists(
        "Role",
        Api::<Role>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &role)
            .await,
    );
    created_or_exists(
        "RoleBinding",
        Api::<RoleBinding>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &binding)
            .await,
    );
    let (user, groups) = identity(namespace);
    eventually(Duration::from_secs(30), || async {
        may_list_api_keys(client, &user, &groups, namespace).await
    })
    .await;
}

fn created_or_exists<K>(what: &str, result: Result<K, kube::Error>) {
    match result {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("create the verifier's {what}: {e}"),
    }
}

async fn may_list_api_keys(
    client: &Client,
    user: &str,
    groups: &[String],
    namespace: &str,
) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("watch".into()),
                group: Some("keymint.dev".into()),
                resource: Some("apikeys".into()),
                namespace: Some(namespace.into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()
        .and_then(|r| r.status)
        .is_some_and(|s| s.allowed)
}

/// The admin kubeconfig, impersonating the verifier's account (the `n`th
/// verifier started), with `api_server` for the server's address if given.
fn kubeconfig(dir: &Path, namespace: &str, n: usize, api_server: Option<SocketAddr>) -> PathBuf {
    let (user, groups) = identity(namespace);
    let admin = std::fs::read_to_string(control_plane().kubeconfig()).expect("kubeconfig");
    let mut kubeconfig: Value = serde_norway::from_str(&admin).expect("kubeconfig YAML");
    for entry in kubeconfig["users"].as_array_mut().expect("users") {
        entry["user"]["as"] = Value::String(user.clone());
        entry["user"]["as-groups"] =
            Value::Array(groups.iter().cloned().map(Value::String).collect());
    }
    if let Some(addr) = api_server {
        for entry in kubeconfig["clusters"].as_array_mut().expect("clusters") {
            entry["cluster"]["server"] = Value::String(format!("https://{addr}"));
        }
    }
    let path = dir.join(format!("{namespace}-verifier-{n}.kubeconfig"));
    std::fs::write(&path, serde_norway::to_string(&kubeconfig).expect("YAML"))
        .expect("write kubeconfig");
    path
}

/// Creates `api_key` in `ns`, waits (for the operator) until it is Active
/// and returns its key, read from its Secret as a workload would.
pub async fn active_key(ns: &TestNamespace, api_key: &keymint::apikey::ApiKey) -> String {
    use kube::ResourceExt as _;
    let api: Api<keymint::apikey::ApiKey> = ns.api();
    api.create(&PostParams::default(), api_key)
        .await
        .expect("create the ApiKey");
    let name = api_key.name_any();
    super::wait_for_phase(
        &api,
        &name,
        keymint::apikey::Phase::Active,
        Duration::from_secs(30),
    )
    .await;
    let secret = ns
        .api::<k8s_openapi::api::core::v1::Secret>()
        .get(&name)
        .await
        .expect("the key's Secret");
    let bytes = secret.data.as_ref().expect("data")["api-key"].0.clone();
    String::from_utf8(bytes).expect("a UTF-8 key")
}

/// An Active ApiKey `name` of project `payments` in `ns`, its status written
/// by the admin through the status subresource (no operator needed); the
/// key it names.
pub async fn admin_active_key(ns: &TestNamespace, name: &str) -> keymint::apikey::key::MintedKey {
    use keymint::apikey::key;
    use kube::api::{Patch, PatchParams};
    let api: Api<keymint::apikey::ApiKey> = ns.api();
    let minted = key::mint().expect("mint");
    api.create(
        &PostParams::default(),
        &super::api_key(name, "payments", "alice@example.com"),
    )
    .await
    .expect("create the ApiKey");
    let status = serde_json::json!({"status": {
        "phase": "Active", "keyId": key::key_id(&minted), "keyHash": key::hash(&minted),
        "secretName": name,
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write the status as the admin");
    minted
}
