//! The local control plane for one bench run (the test kit's launcher), the
//! clients that talk to it, and what the bench reads from it besides the
//! API: its audit log (every write, with the writer's user agent), its
//! request counters (/metrics) and the CPU time of its processes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use keymint::grant::ProjectGrant;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use serde::Deserialize;

use crate::Result;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// User agents that tell the bench's own writes apart in the audit log.
pub const DRIVER_AGENT: &str = "keymint-bench/driver";
pub const FLOOR_AGENT: &str = "keymint-floor/bench";
/// What keymint's requests start with (run.rs sets `keymint/<version>`).
pub const KEYMINT_AGENT_PREFIX: &str = "keymint/";

pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    launcher: Child,
    /// Held open: when the bench exits, however it exits, the pipe closes
    /// and the launcher stops everything (and, --ephemeral, removes `dir`).
    _stdin: ChildStdin,
}

impl ControlPlane {
    pub fn start(root: &Path) -> Result<ControlPlane> {
        let launcher = Path::new(REPO).join("target/controlplane/bin/keymint-controlplane");
        if !launcher.exists() {
            return Err(
                "target/controlplane/bin/keymint-controlplane is missing: run `make controlplane`"
                    .into(),
            );
        }
        let dir = root.join(format!("controlplane-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(root.join("controlplane.log"))?;
        let mut child = Command::new(&launcher)
            .arg("--dir")
            .arg(&dir)
            .arg("--watch-stdin")
            .arg("--ephemeral")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("launcher stdin")?;
        let stdout = child.stdout.take().ok_or("launcher stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(kubeconfig) = line.trim().strip_prefix("ready ") else {
            return Err(format!(
                "the control plane did not start ({line:?}); see target/bench/controlplane.log"
            )
            .into());
        };
        Ok(ControlPlane {
            dir,
            kubeconfig: PathBuf::from(kubeconfig),
            launcher: child,
            _stdin: stdin,
        })
    }

    /// A client as the admin user, with its own user agent; otherwise the
    /// settings every client here has (keymint's, the floor's): kube's.
    pub async fn client(&self, user_agent: &'static str) -> Result<Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let mut config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(user_agent),
        ));
        Ok(Client::try_from(config)?)
    }

    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs/audit.log")
    }

    /// The launcher process: it embeds etcd.
    pub fn etcd_pid(&self) -> u32 {
        self.launcher.id()
    }

    /// A process the launcher started, by the start of its name.
    pub fn child_pid(&self, comm_prefix: &str) -> Option<u32> {
        let parent = self.launcher.id();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let (comm, rest) = split_stat(&stat)?;
                let ppid: u32 = rest.get(1)?.parse().ok()?;
                (ppid == parent && comm.starts_with(comm_prefix)).then_some(pid)
            })
    }
}

const CONSUMER_LABEL: &str = "keymint.dev/bench-consumer";

/// Installs the chart's finalizer policy (rendered by helm, as the chart
/// installs it by default), bound to keymint's namespaces only: the floor
/// never removes finalizers. Waits until the API server applies it.
pub async fn install_finalizer_policy(client: &Client) -> Result<()> {
    let helm = Path::new(REPO).join("target/controlplane/bin/helm");
    let selector = serde_json::json!({"matchLabels": {CONSUMER_LABEL: "keymint"}});
    let output = std::process::Command::new(&helm)
        .args(["template", "keymint", "charts/keymint"])
        .args(["--show-only", "templates/finalizer-policy.yaml"])
        .arg("--set-json")
        .arg(format!("finalizerPolicy.namespaceSelector={selector}"))
        .current_dir(REPO)
        .output()
        .map_err(|e| format!("{}: {e} (run `make tools`)", helm.display()))?;
    if !output.status.success() {
        return Err(format!("helm template: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let yaml = String::from_utf8(output.stdout)?;
    for document in serde_norway::Deserializer::from_str(&yaml) {
        let object = serde_json::Value::deserialize(document)?;
        if object.is_null() {
            continue;
        }
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            &kind,
        ));
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let dynamic: DynamicObject = serde_json::from_value(object)?;
        api.patch(
            &dynamic.name_any(),
            &PatchParams::apply("keymint-bench").force(),
            &Patch::Apply(&dynamic),
        )
        .await?;
    }
    // Policies take effect once the API server has loaded them: probe with
    // a dry-run create in a keymint namespace.
    let probe_ns = "bench-policy-probe";
    if Api::<Namespace>::all(client.clone())
        .get_opt(probe_ns)
        .await?
        .is_none()
    {
        create_namespace(client, probe_ns, "keymint").await?;
    }
    let api_keys: Api<keymint::apikey::ApiKey> = Api::namespaced(client.clone(), probe_ns);
    let probe = keymint::apikey::ApiKey::new(
        "probe",
        serde_json::from_value(serde_json::json!({"project": "probe", "owner": "probe"}))?,
    );
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for _ in 0..300 {
        if let Ok(created) = api_keys.create(&dry, &probe).await
            && !created.finalizers().is_empty()
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err("the finalizer policy did not take effect within 30 s".into())
}

/// Installs the committed CRDs (ApiKey, ProjectGrant) and waits until both
/// are served.
pub async fn install_crd(client: &Client) -> Result<()> {
    for file in [
        "crds/apikeys.keymint.dev.yaml",
        "crds/projectgrants.keymint.dev.yaml",
    ] {
        let yaml = std::fs::read_to_string(Path::new(REPO).join(file))?;
        let crd: CustomResourceDefinition = serde_norway::from_str(&yaml)?;
        Api::<CustomResourceDefinition>::all(client.clone())
            .patch(
                &crd.name_any(),
                &PatchParams::apply("keymint-bench").force(),
                &Patch::Apply(&crd),
            )
            .await?;
    }
    let api_keys: Api<keymint::apikey::ApiKey> = Api::all(client.clone());
    let grants: Api<ProjectGrant> = Api::all(client.clone());
    for _ in 0..300 {
        if api_keys.list_metadata(&Default::default()).await.is_ok()
            && grants.list_metadata(&Default::default()).await.is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err("the ApiKey and ProjectGrant CRDs were not served within 30 s".into())
}

/// Namespaces are labelled with who consumes their ApiKeys (`keymint` or
/// `floor`), and granted any project (keymint mints only for granted ones).
pub async fn create_namespace(client: &Client, name: &str, consumer: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {
            "keymint.dev/bench": "true",
            CONSUMER_LABEL: consumer,
        }}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let grant: ProjectGrant = serde_json::from_value(serde_json::json!({
        "metadata": {"name": keymint::grant::GRANT_NAME},
        "spec": {"projects": ["*"]},
    }))?;
    Api::<ProjectGrant>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &grant)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The API server's audit log.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditLine {
    verb: String,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    object_ref: ObjectRef,
    #[serde(default)]
    response_status: ResponseStatus,
    /// When the API server received the request (microseconds).
    #[serde(default)]
    request_received_timestamp: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

/// Writes in one namespace by one client, from the audit log.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Writes {
    /// Every mutating request, Events included, by `resource[/subresource] verb`.
    pub by_kind: BTreeMap<String, u64>,
    /// All of them, Events excluded.
    pub total_excluding_events: u64,
    /// Event creates and patches.
    pub events: u64,
    /// Requests the API server refused (conflicts, not found, ...): they
    /// cost a round trip too and are included above.
    pub failed: u64,
}

/// The audit log's length now: count writes after this point.
pub fn audit_mark(cp: &ControlPlane) -> u64 {
    std::fs::metadata(cp.audit_log()).map_or(0, |m| m.len())
}

/// Writes after `mark` in `namespace` whose user agent starts with `agent`.
pub fn writes_since(cp: &ControlPlane, mark: u64, namespace: &str, agent: &str) -> Writes {
    let mut writes = Writes::default();
    for w in audit_lines(cp, mark, namespace, agent) {
        writes.count(&w);
    }
    writes
}

/// The same writes, split by when the API server received them: before
/// `at`, and at or after it.
pub fn writes_split(
    cp: &ControlPlane,
    mark: u64,
    namespace: &str,
    agent: &str,
    at: jiff::Timestamp,
) -> (Writes, Writes) {
    let (mut before, mut after) = (Writes::default(), Writes::default());
    for w in audit_lines(cp, mark, namespace, agent) {
        match w.request_received_timestamp.parse::<jiff::Timestamp>() {
            Ok(received) if received < at => before.count(&w),
            _ => after.count(&w),
        }
    }
    (before, after)
}

/// The audit log's entries after `mark` in `namespace` whose user agent
/// starts with `agent`.
fn audit_lines(cp: &ControlPlane, mark: u64, namespace: &str, agent: &str) -> Vec<AuditLine> {
    let Ok(mut file) = std::fs::File::open(cp.audit_log()) else {
        return Vec::new();
    };
    let mut text = String::new();
    if file.seek(SeekFrom::Start(mark)).is_err() || file.read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    text.lines()
        .filter_map(|line| serde_json::from_str::<AuditLine>(line).ok())
        .filter(|w| w.user_agent.starts_with(agent) && w.object_ref.namespace == namespace)
        .collect()
}

impl Writes {
    fn count(&mut self, w: &AuditLine) {
        // keymint's ConfigMaps are of two kinds: quota ledgers and audit
        // segments.
        let resource = if w.object_ref.resource == "configmaps" {
            match w.object_ref.name.as_str() {
                n if n.starts_with("keymint-audit-") => "configmaps[audit]".to_string(),
                n if n.starts_with("keymint-quota-") => "configmaps[ledger]".to_string(),
                _ => "configmaps".to_string(),
            }
        } else if w.object_ref.subresource.is_empty() {
            w.object_ref.resource.clone()
        } else {
            format!("{}/{}", w.object_ref.resource, w.object_ref.subresource)
        };
        *self
            .by_kind
            .entry(format!("{resource} {}", w.verb))
            .or_default() += 1;
        if w.object_ref.resource == "events" {
            self.events += 1;
        } else {
            self.total_excluding_events += 1;
        }
        if !(200..300).contains(&w.response_status.code) {
            self.failed += 1;
        }
    }

    /// All of them, Events included.
    pub fn total(&self) -> u64 {
        self.total_excluding_events + self.events
    }
}

// ---------------------------------------------------------------------------
// The API server's request counters (every client: the bench, keymint or the
// floor, kube-controller-manager).

pub type Requests = BTreeMap<String, f64>;

/// apiserver_request_total summed by verb, and the bytes of the API
/// server's responses (apiserver_response_sizes_sum) by `resource verb`
/// under keys starting with `bytes `.
pub async fn apiserver_requests(client: &Client) -> Requests {
    let request = http::Request::get("/metrics").body(Vec::new());
    let Ok(request) = request else {
        return Requests::new();
    };
    let Ok(text) = client.request_text(request).await else {
        return Requests::new();
    };
    let mut out = Requests::new();
    for line in text.lines() {
        let (labels, value, bytes) =
            if let Some(rest) = line.strip_prefix("apiserver_request_total{") {
                let Some((labels, value)) = rest.rsplit_once("} ") else {
                    continue;
                };
                (labels, value, false)
            } else if let Some(rest) = line.strip_prefix("apiserver_response_sizes_sum{") {
                let Some((labels, value)) = rest.rsplit_once("} ") else {
                    continue;
                };
                (labels, value, true)
            } else {
                continue;
            };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let key = if bytes {
            let sub = label("subresource");
            let resource = if sub.is_empty() {
                label("resource")
            } else {
                format!("{}/{sub}", label("resource"))
            };
            format!("bytes {resource} {}", label("verb"))
        } else {
            label("verb")
        };
        *out.entry(key).or_default() += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    out
}

pub fn requests_delta(before: &Requests, after: &Requests) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(verb, n)| {
            let d = n - before.get(verb).copied().unwrap_or(0.0);
            (verb.clone(), d.max(0.0).round() as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

// ---------------------------------------------------------------------------
// etcd: what keymint costs it, and keeping it alive across a long run.

/// etcd's client address, from the API server's command line.
pub fn etcd_addr(apiserver_pid: u32) -> Option<std::net::SocketAddr> {
    let cmdline = std::fs::read(format!("/proc/{apiserver_pid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .filter_map(|a| std::str::from_utf8(a).ok())
        .find_map(|a| a.strip_prefix("--etcd-servers=http://"))
        .and_then(|a| a.split(',').next())
        .and_then(|a| a.parse().ok())
}

/// etcd's counters: bytes written to its WAL, its database file's size
/// and the part of it in use.
pub async fn etcd_stats(addr: Option<std::net::SocketAddr>) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    let Some(addr) = addr else {
        return out;
    };
    let Ok((_, text)) = crate::procs::http_get(addr, "/metrics").await else {
        return out;
    };
    for (metric, name) in [
        ("etcd_disk_wal_write_bytes_total ", "wal_write_bytes"),
        ("etcd_mvcc_db_total_size_in_bytes ", "db_size_bytes"),
        (
            "etcd_mvcc_db_total_size_in_use_in_bytes ",
            "db_in_use_bytes",
        ),
        ("etcd_mvcc_put_total ", "puts"),
        ("etcd_mvcc_delete_total ", "deletes"),
    ] {
        if let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix(metric))
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            out.insert(name, v);
        }
    }
    out
}

/// Compacts etcd's history and defragments its database, as an operator
/// of a real cluster does regularly (the API server compacts every 5
/// minutes; defragmentation returns the space): each scenario then starts
/// from the same place, and a run of many scenarios stays under etcd's
/// 2 GiB default quota. Returns whether it worked.
pub async fn etcd_compact(addr: Option<std::net::SocketAddr>) -> bool {
    let Some(addr) = addr else {
        return false;
    };
    let post = |path: &'static str, body: String| async move {
        crate::procs::http_request(addr, "POST", path, &body).await
    };
    let Ok((200, range)) = post("/v3/kv/range", r#"{"key":"AA==","limit":1}"#.into()).await else {
        return false;
    };
    let revision = serde_json::from_str::<serde_json::Value>(&range)
        .ok()
        .and_then(|v| v["header"]["revision"].as_str().map(str::to_string));
    let Some(revision) = revision else {
        return false;
    };
    let compacted = post(
        "/v3/kv/compaction",
        format!(r#"{{"revision":"{revision}","physical":true}}"#),
    )
    .await;
    // Compacting to a revision already compacted is fine too.
    if !matches!(compacted, Ok((200, _)) | Ok((400, _))) {
        return false;
    }
    matches!(
        post("/v3/maintenance/defragment", "{}".into()).await,
        Ok((200, _))
    )
}

/// etcd alarms (NOSPACE once its database passed the quota: from then on
/// the whole control plane refuses writes).
pub async fn etcd_alarms(addr: Option<std::net::SocketAddr>) -> Vec<String> {
    let Some(addr) = addr else {
        return Vec::new();
    };
    let Ok((_, body)) =
        crate::procs::http_request(addr, "POST", "/v3/maintenance/alarm", r#"{"action":"GET"}"#)
            .await
    else {
        return Vec::new();
    };
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["alarms"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["alarm"].as_str().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------
// CPU time.

fn split_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    Some((comm, stat[close + 1..].split_whitespace().collect()))
}

/// User + system CPU seconds a process has used (0 when it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, fields)) = split_stat(&stat) else {
        return 0.0;
    };
    // Fields after the name start at `state` (field 3): utime is field 14.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds the whole machine has been busy (all processes, all cores).
pub fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(cpu) = stat.lines().next() else {
        return 0.0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, n)| n)
        .sum();
    busy as f64 / clock_ticks()
}

/// Peak and current resident memory of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
