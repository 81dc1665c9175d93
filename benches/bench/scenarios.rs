//! The scenarios. Each runs keymint (and, where there is one, the floor) in
//! a namespace of its own on the shared control plane, drives it the way a
//! user would (creates as fast as the bench client can), and records what
//! the watches saw, the writes in the audit log, CPU and memory.

pub(crate) mod burst;
pub(crate) mod hostile;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use keymint::apikey::{ApiKey, ApiKeySpec, Phase};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::cluster::{self, ControlPlane};
use crate::observe::{Observer, Seen};
use crate::procs::{Kind, Perf, Proc};
use crate::{Plan, Result, report};

pub struct Ctx {
    pub plan: Plan,
    pub cp: ControlPlane,
    pub client: Client,
    apiserver_pid: u32,
    kcm_pid: Option<u32>,
    etcd: Option<std::net::SocketAddr>,
    namespaces: usize,
    pub results: serde_json::Map<String, Value>,
    environment: Value,
    started: Timestamp,
    path: PathBuf,
}

pub async fn run(plan: Plan) -> Result<()> {
    let root = PathBuf::from(cluster::REPO).join("target/bench");
    std::fs::create_dir_all(&root)?;
    eprintln!("bench: {} run; starting a local control plane", plan.mode);
    let cp = ControlPlane::start(&root)?;
    let client = cp.client(cluster::DRIVER_AGENT).await?;
    cluster::install_crd(&client).await?;
    if plan.finalizer_policy {
        cluster::install_finalizer_policy(&client).await?;
    }
    let apiserver_pid = cp
        .child_pid("kube-apiserver")
        .ok_or("no kube-apiserver process")?;
    let kcm_pid = cp.child_pid("kube-controller");
    let environment = report::environment(&client).await;
    let mut ctx = Ctx {
        plan: plan.clone(),
        cp,
        client,
        apiserver_pid,
        kcm_pid,
        etcd: cluster::etcd_addr(apiserver_pid),
        namespaces: 0,
        results: serde_json::Map::new(),
        environment,
        started: Timestamp::now(),
        // `make bench` runs a second build into a file of its own.
        path: std::env::var_os("KEYMINT_BENCH_RESULTS")
            .map_or_else(|| root.join("results.json"), PathBuf::from),
    };

    // The first keys after a start are slower (the API server warms its
    // caches and connections): mint some with both before measuring.
    eprintln!("bench: warming up");
    mint_one(&mut ctx, Kind::Floor, 100).await?;
    mint_one(&mut ctx, Kind::Keymint, 100).await?;

    // Quiet-system figures first, the big waves last.
    if plan.wants("steady") {
        let v = steady(&mut ctx).await.unwrap_or_else(failed);
        ctx.record("steady", v).await?;
    }
    if plan.wants("quota") {
        let v = quota(&mut ctx).await.unwrap_or_else(failed);
        ctx.record("quota_contention", v).await?;
    }
    if plan.wants("expiry") {
        let n = plan.expiry_burst;
        let v = expiry(&mut ctx, n, None).await.unwrap_or_else(failed);
        ctx.record("expiry_burst", v).await?;
    }
    if plan.wants("lifecycle") {
        let v = lifecycle(&mut ctx).await.unwrap_or_else(failed);
        ctx.record("writes_per_key", v).await?;
    }
    if plan.wants("burst") && plan.burst_keys > 0 {
        let v = burst::scenario(&mut ctx).await.unwrap_or_else(failed);
        ctx.record("burst", v).await?;
    }
    if plan.wants("audit-history") {
        let v = crate::history::scenario(&mut ctx)
            .await
            .unwrap_or_else(failed);
        ctx.record("audit_history", v).await?;
    }
    let mut largest: Option<(Proc, String, usize)> = None;
    let mut mint_rates: HashMap<&'static str, f64> = HashMap::new();
    if plan.wants("mint") || plan.wants("restart") {
        let mut runs = Vec::new();
        for &n in &plan.mint_sizes {
            match mint(&mut ctx, n).await {
                Ok((value, proc, ns)) => {
                    for kind in ["keymint", "floor"] {
                        if let Some(r) = value[kind]["keys_per_s"].as_f64() {
                            mint_rates.insert(kind, r);
                        }
                    }
                    runs.push(value);
                    largest = Some((proc, ns, n));
                }
                Err(e) => runs.push(failed(e)),
            }
            ctx.record("mint", Value::Array(runs.clone())).await?;
        }
    }
    if plan.wants("restart")
        && let Some((proc, ns, n)) = largest.take()
    {
        let v = restart(&mut ctx, proc, &ns, n).await.unwrap_or_else(failed);
        ctx.record("restart", v).await?;
    }
    drop(largest);
    if plan.wants("expiry") && plan.expiry_wave > 0 {
        let n = plan.expiry_wave;
        let v = expiry(&mut ctx, n, Some(&mint_rates))
            .await
            .unwrap_or_else(failed);
        ctx.record("expiry_wave", v).await?;
    }
    if plan.wants("memory") && plan.big_secrets > 0 {
        let v = big_secrets(&mut ctx).await.unwrap_or_else(failed);
        ctx.record("memory_big_secrets", v).await?;
    }
    if plan.wants("hostile") && plan.hostile_keys > 0 {
        let v = hostile::scenario(&mut ctx).await.unwrap_or_else(failed);
        ctx.record("hostile", v).await?;
    }
    // Last: its ApiKeys stay in etcd for the rest of the run.
    if plan.wants("verify") && plan.verify_keys > 0 {
        let v = crate::verify::scenario(&mut ctx)
            .await
            .unwrap_or_else(failed);
        ctx.record("verify", v).await?;
    }

    let document = ctx.save()?;
    println!("{}", report::table(&document));
    eprintln!("bench: results in {}", ctx.path.display());
    Ok(())
}

fn failed(e: crate::BoxError) -> Value {
    eprintln!("bench: scenario failed: {e}");
    json!({"error": e.to_string()})
}

// ---------------------------------------------------------------------------
// Helpers.

impl Ctx {
    /// Writes results.json as it stands.
    fn save(&self) -> Result<Value> {
        let document = report::document(
            &self.plan,
            self.environment.clone(),
            self.started,
            Timestamp::now(),
            self.results.clone(),
        );
        std::fs::write(&self.path, serde_json::to_string_pretty(&document)?)?;
        Ok(document)
    }

    /// Records a scenario's figures (saved at once: a run that dies later
    /// keeps them). An etcd that ran out of space ends the run: every later
    /// figure would measure refused writes.
    async fn record(&mut self, name: &str, value: Value) -> Result<()> {
        self.results.insert(name.to_string(), value);
        self.save()?;
        let alarms = cluster::etcd_alarms(self.etcd).await;
        if !alarms.is_empty() {
            self.results.insert(
                "etcd_alarms".into(),
                json!({"after": name, "alarms": alarms}),
            );
            self.save()?;
            return Err(format!(
                "etcd raised {alarms:?} during {name}: the control plane refuses writes; results so far are in {}",
                self.path.display()
            )
            .into());
        }
        Ok(())
    }

    /// Compacts and defragments etcd so that what follows is measured from
    /// a clean database.
    async fn fresh_etcd(&self) {
        if !cluster::etcd_compact(self.etcd).await {
            eprintln!("bench: could not compact etcd (its figures include earlier history)");
        }
    }

    /// A fresh namespace for `kind` (the finalizer policy binds to
    /// keymint's).
    pub(crate) async fn namespace(&mut self, kind: Kind, tag: &str) -> Result<String> {
        self.fresh_etcd().await;
        self.namespaces += 1;
        let name = format!("bench-{}-{tag}", self.namespaces);
        cluster::create_namespace(&self.client, &name, kind.label()).await?;
        Ok(name)
    }

    async fn start(&self, kind: Kind, ns: &str, tag: &str, extra: &[&str]) -> Result<Proc> {
        let mut proc = match kind {
            Kind::Keymint => Proc::keymint(&self.cp, ns, tag, &self.keymint_flags(extra))?,
            Kind::Floor => Proc::floor(&self.cp, ns, tag, self.plan.concurrency)?,
        };
        proc.ready().await?;
        Ok(proc)
    }

    fn keymint_flags<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut flags = extra.to_vec();
        flags.extend(self.plan.keymint_args.iter().map(String::as_str));
        flags
    }

    async fn meter(&self, proc: Option<&Proc>) -> Meter {
        Meter {
            audit: cluster::audit_mark(&self.cp),
            etcd: cluster::etcd_stats(self.etcd).await,
            requests: cluster::apiserver_requests(&self.client).await,
            cpu: self.cpu(proc),
            at: Instant::now(),
        }
    }

    fn cpu(&self, proc: Option<&Proc>) -> BTreeMap<&'static str, f64> {
        let mut cpu = BTreeMap::from([
            ("kube_apiserver", cluster::cpu_seconds(self.apiserver_pid)),
            ("etcd", cluster::cpu_seconds(self.cp.etcd_pid())),
            ("bench_client", cluster::cpu_seconds(std::process::id())),
            ("machine_total", cluster::machine_busy_seconds()),
        ]);
        if let Some(pid) = self.kcm_pid {
            cpu.insert("kube_controller_manager", cluster::cpu_seconds(pid));
        }
        if let Some(p) = proc {
            cpu.insert(p.kind.label(), p.cpu_seconds());
        }
        cpu
    }

    /// What happened since `m0`: CPU by process, API server requests by
    /// verb (all clients), and `agent`'s writes in `ns`.
    async fn measure(&self, m0: &Meter, proc: Option<&Proc>, ns: &str, agent: &str) -> Value {
        let cpu1 = self.cpu(proc);
        let wall = m0.at.elapsed().as_secs_f64();
        let requests = cluster::apiserver_requests(&self.client).await;
        let writes = cluster::writes_since(&self.cp, m0.audit, ns, agent);
        let etcd1 = cluster::etcd_stats(self.etcd).await;
        let etcd_delta = |k: &str| {
            etcd1
                .get(k)
                .map(|v| v - m0.etcd.get(k).copied().unwrap_or(0.0))
        };
        let mib = |b: Option<f64>| b.map(|b| round3(b / 1048576.0));
        let mut cpu: BTreeMap<&str, f64> = cpu1
            .iter()
            .map(|(k, v)| (*k, round3(v - m0.cpu.get(k).copied().unwrap_or(0.0))))
            .collect();
        let ours: f64 = cpu
            .iter()
            .filter(|(k, _)| **k != "machine_total")
            .map(|(_, v)| v)
            .sum();
        let total = cpu.get("machine_total").copied().unwrap_or(0.0);
        cpu.insert("other_processes", round3((total - ours).max(0.0)));
        json!({
            "wall_seconds": round3(wall),
            "cpu_seconds": cpu,
            "apiserver_requests": cluster::requests_delta(&m0.requests, &requests),
            "writes": writes,
            "etcd": {
                "wal_written_mib": mib(etcd_delta("wal_write_bytes")),
                "puts": etcd_delta("puts"),
                "deletes": etcd_delta("deletes"),
                "db_size_mib_at_end": mib(etcd1.get("db_size_bytes").copied()),
                "db_in_use_mib_at_end": mib(etcd1.get("db_in_use_bytes").copied()),
            },
        })
    }
}

struct Meter {
    audit: u64,
    etcd: BTreeMap<&'static str, f64>,
    requests: cluster::Requests,
    cpu: BTreeMap<&'static str, f64>,
    at: Instant,
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: SignedDuration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

/// p50, p99 (nearest rank) and max of milliseconds.
fn summary(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        return json!({"n": 0});
    }
    values.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    json!({"n": values.len(), "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)})
}

/// Keys spread over (project, owner) pairs, ten per pair, so that the quota
/// (and its per-pair ledger) is never what limits a throughput figure.
fn spread_key(name: String, i: usize, n: usize, expires_at: Option<Timestamp>) -> ApiKey {
    let pairs = (n / 10).max(1);
    let pair = i % pairs;
    key(
        name,
        &format!("proj{}", pair % 4),
        &format!("user{pair}@example.com"),
        expires_at,
    )
}

fn key(name: String, project: &str, owner: &str, expires_at: Option<Timestamp>) -> ApiKey {
    ApiKey::new(
        &name,
        ApiKeySpec {
            project: project.into(),
            owner: owner.into(),
            description: Some("keymint benchmark".into()),
            expires_at: expires_at.map(Time),
            secret_name: None,
            secret_template: None,
            show_once: None,
        },
    )
}

/// What [`apply_all`] saw.
struct Applied {
    /// When each create was sent, by name.
    sent: HashMap<String, Timestamp>,
    /// How long the creates took.
    apply_seconds: f64,
    /// Whether every key was seen Active before the timeout.
    all: bool,
}

/// Creates `n` spread keys named `<prefix>NNNNN` in `ns` at the plan's
/// concurrency and waits until the observer sees them all Active.
async fn apply_all(
    ctx: &Ctx,
    ns: &str,
    observer: &Observer,
    prefix: &str,
    n: usize,
) -> Result<Applied> {
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), ns);
    let keys = (0..n)
        .map(|i| spread_key(format!("{prefix}{i:05}"), i, n, None))
        .collect();
    let applied = Instant::now();
    let sent = create_keys(&api, keys, ctx.plan.apply_concurrency).await?;
    let apply_seconds = applied.elapsed().as_secs_f64();
    let all = observer
        .wait(timeout_for(n), |s| s.count(Phase::Active) >= n)
        .await;
    Ok(Applied {
        sent,
        apply_seconds,
        all,
    })
}

/// Creates the keys with `concurrency` requests in flight; returns when each
/// create was sent.
async fn create_keys(
    api: &Api<ApiKey>,
    keys: Vec<ApiKey>,
    concurrency: usize,
) -> Result<HashMap<String, Timestamp>> {
    let results: Vec<Result<(String, Timestamp)>> = futures::stream::iter(keys)
        .map(|k| {
            let api = api.clone();
            async move {
                let name = k.metadata.name.clone().unwrap_or_default();
                let mut attempt = 0;
                loop {
                    let sent = Timestamp::now();
                    match api.create(&PostParams::default(), &k).await {
                        Ok(_) => return Ok((name, sent)),
                        Err(e) if attempt < 4 => {
                            eprintln!("bench: create {name}: {e}; retrying");
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// apply→`phase` latencies of the keys that reached it.
fn latencies(seen: &Seen, sent: &HashMap<String, Timestamp>, phase: Phase) -> Vec<f64> {
    sent.iter()
        .filter_map(|(name, at)| {
            seen.first_in(name, phase)
                .map(|t| ms(t.duration_since(*at)))
        })
        .collect()
}

fn timeout_for(n: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(100) * n as u32
}

// ---------------------------------------------------------------------------
// mint: N keys applied as fast as the client can; keymint, then the floor.

async fn mint(ctx: &mut Ctx, n: usize) -> Result<(Value, Proc, String)> {
    let floor = if ctx.plan.mint_without_floor {
        Value::Null
    } else {
        mint_one(ctx, Kind::Floor, n).await?.0
    };
    let (keymint, proc, ns) = mint_one(ctx, Kind::Keymint, n).await?;
    let ratio = match (keymint["keys_per_s"].as_f64(), floor["keys_per_s"].as_f64()) {
        (Some(k), Some(f)) if f > 0.0 => json!(round3(k / f)),
        _ => Value::Null,
    };
    Ok((
        json!({"keys": n, "keymint": keymint, "floor": floor, "throughput_ratio_to_floor": ratio}),
        proc,
        ns,
    ))
}

async fn mint_one(ctx: &mut Ctx, kind: Kind, n: usize) -> Result<(Value, Proc, String)> {
    eprintln!("bench: mint {n} ({})", kind.label());
    let tag = format!("mint{n}-{}", kind.label());
    let ns = ctx.namespace(kind, &tag).await?;
    let observer = Observer::start(&ctx.client, &ns).await?;
    let mut extra = vec!["--max-keys-per-owner", "1000000"];
    extra.retain(|_| kind == Kind::Keymint);
    let proc = ctx.start(kind, &ns, &tag, &extra).await?;
    // keymint's own CPU profile (the API server's binary has no symbols:
    // its side is read from its request counters and CPU time instead).
    let perf = (ctx.plan.profile && kind == Kind::Keymint)
        .then(|| Perf::start(proc.pid(), &tag))
        .flatten();
    let m0 = ctx.meter(Some(&proc)).await;
    let Applied {
        sent,
        apply_seconds,
        all,
    } = apply_all(ctx, &ns, &observer, "k", n).await?;
    // Let the writes that follow a status (audit append, Event) land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut measured = ctx.measure(&m0, Some(&proc), &ns, kind.agent()).await;
    if let Some(report) = perf.and_then(Perf::finish) {
        measured["perf_report"] = json!(report.display().to_string());
    }
    let first_sent = sent.values().min().copied().unwrap_or_else(Timestamp::now);
    let (active, last_active, lat) = observer.with(|s| {
        let last = sent
            .keys()
            .filter_map(|name| s.first_in(name, Phase::Active))
            .max();
        (
            s.count(Phase::Active),
            last,
            latencies(s, &sent, Phase::Active),
        )
    });
    let seconds = last_active.map(|t| t.duration_since(first_sent).as_secs_f64());
    let writes_per_key = measured["writes"]["total_excluding_events"]
        .as_f64()
        .map(|w| round3(w / n as f64));
    let events_per_key = measured["writes"]["events"]
        .as_f64()
        .map(|w| round3(w / n as f64));
    let mut value = json!({
        "all_active": all,
        "active": active,
        "seconds_to_all_active": seconds.map(round3),
        "keys_per_s": seconds.filter(|s| *s > 0.0).map(|s| round3(active as f64 / s)),
        "apply_seconds": round3(apply_seconds),
        "apply_to_active": summary(lat),
        "writes_per_key": writes_per_key,
        "events_per_key": events_per_key,
        "peak_rss_mib": round3(proc.peak_rss_mib()),
        "rss_mib": round3(proc.rss_mib()),
    });
    merge(&mut value, measured);
    let mut proc = proc;
    value["keymint_metrics"] = selected_metrics(&mut proc).await;
    Ok((value, proc, ns))
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

/// The keymint metrics that explain a figure: errors by category, reconcile
/// counts and time, audit appends.
async fn selected_metrics(proc: &mut Proc) -> Value {
    let metrics = proc.metrics().await;
    let keep: BTreeMap<String, f64> = metrics
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("keymint_reconcile_errors_total")
                || k.starts_with("keymint_reconcile_duration_seconds_count")
                || k.starts_with("keymint_reconcile_duration_seconds_sum")
                || k.starts_with("keymint_audit_appends_total")
                || k.starts_with("keymint_mints_total")
                || k.starts_with("keymint_expiries_total")
                || k.starts_with("keymint_expiry_lag_seconds_sum")
                || k.starts_with("keymint_expiry_lag_seconds_count")
                || k.starts_with("keymint_events_dropped_total")
        })
        .collect();
    json!(keep)
}

// ---------------------------------------------------------------------------
// steady: one key at a time into a quiet system.

async fn steady(ctx: &mut Ctx) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for kind in [Kind::Floor, Kind::Keymint] {
        let reps = ctx.plan.steady_repetitions;
        eprintln!("bench: steady x{reps} ({})", kind.label());
        let tag = format!("steady-{}", kind.label());
        let ns = ctx.namespace(kind, &tag).await?;
        let observer = Observer::start(&ctx.client, &ns).await?;
        let proc = ctx.start(kind, &ns, &tag, &[]).await?;
        let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &ns);
        let m0 = ctx.meter(Some(&proc)).await;
        let mut sent = HashMap::new();
        let mut timeouts = 0;
        for r in 0..reps {
            // Quiet: the previous key's follow-up work has long finished.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let name = format!("s{r:04}");
            let k = key(
                name.clone(),
                "steady",
                &format!("user{r}@example.com"),
                None,
            );
            sent.extend(create_keys(&api, vec![k], 1).await?);
            let done = observer
                .wait(Duration::from_secs(10), |s| {
                    s.first_in(&name, Phase::Active).is_some()
                })
                .await;
            if !done {
                timeouts += 1;
            }
        }
        let lat = observer.with(|s| latencies(s, &sent, Phase::Active));
        let mut value = json!({
            "repetitions": reps,
            "timeouts": timeouts,
            "apply_to_active": summary(lat),
            "peak_rss_mib": round3(proc.peak_rss_mib()),
        });
        merge(
            &mut value,
            ctx.measure(&m0, Some(&proc), &ns, kind.agent()).await,
        );
        out.insert(kind.label().to_string(), value);
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------
// quota contention: concurrent creates for one (project, owner).

async fn quota(ctx: &mut Ctx) -> Result<Value> {
    let n = ctx.plan.quota_creates;
    let limit = 25;
    eprintln!("bench: quota contention, {n} creates for one owner (quota {limit})");
    let ns = ctx.namespace(Kind::Keymint, "quota").await?;
    let observer = Observer::start(&ctx.client, &ns).await?;
    let mut proc = ctx.start(Kind::Keymint, &ns, "quota", &[]).await?;
    let m0 = ctx.meter(Some(&proc)).await;
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &ns);
    let keys = (0..n)
        .map(|i| key(format!("q{i:03}"), "quota", "alice@example.com", None))
        .collect();
    let sent = create_keys(&api, keys, n).await?;
    let expected_active = n.min(limit);
    let settled = observer
        .wait(Duration::from_secs(120), |s| {
            s.count(Phase::Active) == expected_active
                && s.count(Phase::Rejected) == n - expected_active
        })
        .await;
    let first_sent = sent.values().min().copied().unwrap_or_else(Timestamp::now);
    let settle_at = observer.with(|s| {
        s.phase
            .iter()
            .filter_map(|(name, p)| s.first_in(name, *p))
            .max()
    });
    // Settled means it stays so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (active, rejected, max_secrets) = observer.with(|s| {
        (
            s.count(Phase::Active),
            s.count(Phase::Rejected),
            s.secrets_live_max,
        )
    });
    let mut value = json!({
        "creates": n,
        "quota": limit,
        "settled": settled,
        "seconds_to_settle": settle_at.map(|t| round3(t.duration_since(first_sent).as_secs_f64())),
        "active": active,
        "rejected": rejected,
        "max_secrets_at_once": max_secrets,
    });
    merge(
        &mut value,
        ctx.measure(&m0, Some(&proc), &ns, Kind::Keymint.agent())
            .await,
    );
    value["keymint_metrics"] = selected_metrics(&mut proc).await;
    Ok(value)
}

// ---------------------------------------------------------------------------
// expiry: N keys expiring at the same instant; lag and drain rate.

async fn expiry(ctx: &mut Ctx, n: usize, mint_rates: Option<&HashMap<&str, f64>>) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for kind in [Kind::Floor, Kind::Keymint] {
        // Time enough to mint them all before they expire: from the mint
        // rate measured earlier in this run, or a generous guess.
        let rate = mint_rates
            .and_then(|r| r.get(kind.label()).copied())
            .unwrap_or(20.0)
            .max(1.0);
        let lead = Duration::from_secs_f64(n as f64 / rate * 1.4 + 10.0);
        eprintln!(
            "bench: expiry of {n} keys at one instant ({}; expiring in {:.0?})",
            kind.label(),
            lead
        );
        let tag = format!("expiry{n}-{}", kind.label());
        let ns = ctx.namespace(kind, &tag).await?;
        let observer = Observer::start(&ctx.client, &ns).await?;
        let mut extra = vec!["--max-keys-per-owner", "1000000"];
        extra.retain(|_| kind == Kind::Keymint);
        let mut proc = ctx.start(kind, &ns, &tag, &extra).await?;
        let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &ns);
        let expires_at = (Timestamp::now() + SignedDuration::try_from(lead)?).round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Second)
                .mode(jiff::RoundMode::Ceil),
        )?;
        let keys = (0..n)
            .map(|i| spread_key(format!("e{i:05}"), i, n, Some(expires_at)))
            .collect();
        create_keys(&api, keys, ctx.plan.apply_concurrency).await?;
        let until_expiry =
            Duration::try_from(expires_at.duration_since(Timestamp::now())).unwrap_or_default();
        observer
            .wait(until_expiry, |s| s.count(Phase::Active) >= n)
            .await;
        let active_before = observer.with(|s| s.count(Phase::Active));
        let minted = observer.with(|s| s.secret_created.len());
        // Measure the expiry on a clean etcd, unless it is too close.
        if expires_at.duration_since(Timestamp::now()) > SignedDuration::from_secs(15) {
            ctx.fresh_etcd().await;
        }
        // Measure the expiry alone: from a moment before expiresAt.
        let wait = Duration::try_from(expires_at.duration_since(Timestamp::now()))
            .unwrap_or_default()
            .saturating_sub(Duration::from_millis(500));
        tokio::time::sleep(wait).await;
        let m0 = ctx.meter(Some(&proc)).await;
        let drained = observer
            .wait(timeout_for(n), |s| {
                s.secret_deleted.len() >= minted && s.count(Phase::Expired) >= n
            })
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut measured = ctx.measure(&m0, Some(&proc), &ns, kind.agent()).await;
        let (deleted, lags, expired_lags, last) = observer.with(|s| {
            let lags: Vec<f64> = s
                .secret_deleted
                .values()
                .map(|t| ms(t.duration_since(expires_at)))
                .collect();
            let expired: Vec<f64> = s
                .first
                .keys()
                .filter_map(|name| s.first_in(name, Phase::Expired))
                .map(|t| ms(t.duration_since(expires_at)))
                .collect();
            (
                s.secret_deleted.len(),
                lags,
                expired,
                s.secret_deleted.values().max().copied(),
            )
        });
        let drain_seconds = last.map(|t| t.duration_since(expires_at).as_secs_f64());
        let writes = &measured["writes"];
        let mut value = json!({
            "keys": n,
            "expires_at": expires_at.to_string(),
            "active_before_expiry": active_before,
            "secrets_deleted": deleted,
            "all_drained": drained,
            "secret_deletion_lag": summary(lags),
            "expired_status_lag": summary(expired_lags),
            "drain_seconds": drain_seconds.map(round3),
            "deletes_per_s": drain_seconds.filter(|s| *s > 0.0).map(|s| round3(deleted as f64 / s)),
            "writes_per_key": writes["total_excluding_events"].as_f64().map(|w| round3(w / n as f64)),
            "events_per_key": writes["events"].as_f64().map(|w| round3(w / n as f64)),
            "peak_rss_mib": round3(proc.peak_rss_mib()),
        });
        if kind == Kind::Keymint {
            value["keymint_metrics"] = selected_metrics(&mut proc).await;
        }
        merge(&mut value, measured.take());
        out.insert(kind.label().to_string(), value);
    }
    let ratio = match (
        out.get("keymint").and_then(|v| v["deletes_per_s"].as_f64()),
        out.get("floor").and_then(|v| v["deletes_per_s"].as_f64()),
    ) {
        (Some(k), Some(f)) if f > 0.0 => json!(round3(k / f)),
        _ => Value::Null,
    };
    out.insert("drain_ratio_to_floor".into(), ratio);
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------
// writes per key: create → Active → delete, from the audit log.

async fn lifecycle(ctx: &mut Ctx) -> Result<Value> {
    let n = ctx.plan.lifecycle_keys;
    let mut out = serde_json::Map::new();
    for kind in [Kind::Floor, Kind::Keymint] {
        eprintln!("bench: lifecycle of {n} keys ({})", kind.label());
        let tag = format!("lifecycle-{}", kind.label());
        let ns = ctx.namespace(kind, &tag).await?;
        let observer = Observer::start(&ctx.client, &ns).await?;
        let proc = ctx.start(kind, &ns, &tag, &[]).await?;
        let m0 = ctx.meter(Some(&proc)).await;
        let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &ns);
        let keys = (0..n)
            .map(|i| spread_key(format!("l{i:04}"), i, n, None))
            .collect();
        create_keys(&api, keys, ctx.plan.apply_concurrency).await?;
        let active = observer
            .wait(timeout_for(n), |s| s.count(Phase::Active) >= n)
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let names: Vec<String> = (0..n).map(|i| format!("l{i:04}")).collect();
        let deletes: Vec<(String, Timestamp)> = futures::stream::iter(names)
            .map(|name| {
                let api = api.clone();
                async move {
                    let sent = Timestamp::now();
                    let _ = api.delete(&name, &DeleteParams::default()).await;
                    (name, sent)
                }
            })
            .buffer_unordered(ctx.plan.apply_concurrency)
            .collect()
            .await;
        let gone = observer
            .wait(timeout_for(n), |s| {
                s.gone.len() >= n && s.secret_deleted.len() >= s.secret_created.len()
            })
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let delete_lat = observer.with(|s| {
            deletes
                .iter()
                .filter_map(|(name, at)| s.gone.get(name).map(|t| ms(t.duration_since(*at))))
                .collect::<Vec<f64>>()
        });
        let measured = ctx.measure(&m0, Some(&proc), &ns, kind.agent()).await;
        let gc = cluster::writes_since(&ctx.cp, m0.audit, &ns, "kube-controller-manager");
        let writes = &measured["writes"];
        let per_kind: BTreeMap<String, f64> = writes["by_kind"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), round3(v.as_f64().unwrap_or(0.0) / n as f64)))
                    .collect()
            })
            .unwrap_or_default();
        let mut value = json!({
            "keys": n,
            "all_active": active,
            "all_gone": gone,
            "writes_per_key": writes["total_excluding_events"].as_f64().map(|w| round3(w / n as f64)),
            "events_per_key": writes["events"].as_f64().map(|w| round3(w / n as f64)),
            "writes_per_key_by_kind": per_kind,
            "garbage_collector_writes_per_key": round3(gc.total_excluding_events as f64 / n as f64),
            "delete_to_gone": summary(delete_lat),
        });
        merge(&mut value, measured);
        out.insert(kind.label().to_string(), value);
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------
// restart: keymint over N Active keys is restarted.

async fn restart(ctx: &mut Ctx, mut old: Proc, ns: &str, n: usize) -> Result<Value> {
    eprintln!("bench: restart over {n} Active keys");
    let shutdown = old.terminate();
    drop(old);
    let m0 = ctx.meter(None).await;
    let mut proc = Proc::keymint(
        &ctx.cp,
        ns,
        &format!("restart{n}"),
        &ctx.keymint_flags(&["--max-keys-per-owner", "1000000"]),
    )?;
    let ready = proc.ready().await?;
    // Every key is reconciled once after a start: wait for all of them.
    let deadline = Instant::now() + timeout_for(n);
    let mut reconciled = None;
    while Instant::now() < deadline {
        let count = proc
            .metrics()
            .await
            .get("keymint_reconcile_duration_seconds_count")
            .copied()
            .unwrap_or(0.0);
        if count >= n as f64 {
            reconciled = Some(proc.started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut value = json!({
        "keys": n,
        "previous_shutdown_seconds": round3(shutdown.as_secs_f64()),
        "seconds_to_ready": round3(ready.as_secs_f64()),
        "seconds_to_all_reconciled": reconciled.map(|d| round3(d.as_secs_f64())),
        "rss_mib_at_rest": round3(proc.rss_mib()),
        "peak_rss_mib": round3(proc.peak_rss_mib()),
    });
    let measured = ctx
        .measure(&m0, Some(&proc), ns, Kind::Keymint.agent())
        .await;
    value["writes_excluding_events"] = measured["writes"]["total_excluding_events"].clone();
    value["events"] = measured["writes"]["events"].clone();
    merge(&mut value, measured);
    value["keymint_metrics"] = selected_metrics(&mut proc).await;
    proc.terminate();
    Ok(value)
}

// ---------------------------------------------------------------------------
// memory next to 1 MiB Secrets keymint has nothing to do with.

async fn big_secrets(ctx: &mut Ctx) -> Result<Value> {
    let count = ctx.plan.big_secrets;
    let n = ctx.plan.big_secrets_keys;
    eprintln!("bench: memory with {count} unrelated 1 MiB Secrets and {n} keys");
    let ns = ctx.namespace(Kind::Keymint, "bigsecrets").await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let started = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..count)
        .map(|i| {
            let secrets = secrets.clone();
            async move {
                let mut data = vec![0u8; 1024 * 1024];
                rand::fill(&mut data[..]);
                let secret = Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(format!("bulk-{i:04}")),
                        labels: Some(BTreeMap::from([("bench".into(), "bulk".into())])),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([("blob".into(), ByteString(data))])),
                    ..Secret::default()
                };
                secrets.create(&PostParams::default(), &secret).await?;
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let fill_seconds = started.elapsed().as_secs_f64();
    let observer = Observer::start(&ctx.client, &ns).await?;
    let mut proc = ctx
        .start(
            Kind::Keymint,
            &ns,
            "bigsecrets",
            &["--max-keys-per-owner", "1000000"],
        )
        .await?;
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &ns);
    let keys = (0..n)
        .map(|i| spread_key(format!("b{i:05}"), i, n, None))
        .collect();
    create_keys(&api, keys, ctx.plan.apply_concurrency).await?;
    let all = observer
        .wait(timeout_for(n), |s| s.count(Phase::Active) >= n)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let value = json!({
        "big_secrets": count,
        "big_secret_bytes": 1024 * 1024,
        "fill_seconds": round3(fill_seconds),
        "keys": n,
        "all_active": all,
        "peak_rss_mib": round3(proc.peak_rss_mib()),
        "rss_mib": round3(proc.rss_mib()),
    });
    proc.terminate();
    // Free etcd of the gigabyte.
    secrets
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("bench=bulk"),
        )
        .await?;
    Ok(value)
}
