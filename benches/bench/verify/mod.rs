//! The `verify` scenario: `keymint verifier` with N keys indexed, under a
//! real HTTP load generator (wrk, Debian's package), against a floor — the
//! same server stack (`keymint::listener` and its limits) answering
//! 200 without a check — and nginx with `auth_request` against nginx alone,
//! all in one run; the index's start against the API server's own time to
//! serve the list. The ApiKeys are created by the bench with an Active
//! status of its own (no operator: only the verifier reads them).
//!
//! The same bench binary, started with `KEYMINT_BENCH_ROLE=verify-floor`,
//! is the floor server.

mod nginx;
pub(crate) mod server;
pub(crate) mod wrk;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use keymint::apikey::key;
use keymint::apikey::{ApiKey, ApiKeySpec};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::Result;
use crate::procs::{Kind, http_request};
use crate::scenarios::Ctx;
use server::Server;
use wrk::{Load, Run, wrk};

pub use server::{FLOOR_ROLE, floor_main};

/// Keys deleted one after another to measure the revocation lag.
const REVOCATIONS: usize = 100;
/// Load runs of each server, taking turns (see [`Rounds`]).
const LOAD_ROUNDS: usize = 3;
/// Requests in flight while the bench creates the ApiKeys.
const CREATE_CONCURRENCY: usize = 64;

pub async fn scenario(ctx: &mut Ctx) -> Result<Value> {
    for tool in ["wrk", "/usr/sbin/nginx"] {
        if Command::new(tool).arg("-v").output().is_err() {
            return Err(format!("{tool} is missing: apt-get install wrk nginx-light").into());
        }
    }
    let n = ctx.plan.verify_keys;
    let seconds = ctx.plan.load_seconds;
    // Not one of keymint's namespaces: no finalizer policy, since no
    // operator runs here to remove a finalizer.
    let ns = ctx.namespace(Kind::Floor, "verify").await?;
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &ns);
    eprintln!("bench: verify: creating {n} Active ApiKeys");
    let created = Instant::now();
    let mut keys = populate(&api, n).await?;
    let create_seconds = created.elapsed().as_secs_f64();
    let (name, presented) = keys.pop().ok_or("no key")?;
    let bearer = format!("Authorization: Bearer {presented}");
    // A check names its project, as every gateway's must: the presented
    // key's, so every request takes the whole path to a grant.
    let check = format!("/forward-auth?project={}", project_of_name(&name)?);

    let list_floor = list_floor(&api).await?;
    let mut verifier = Server::verifier(&ctx.cp, &ns, "verifier")?;
    let ready = verifier.ready().await?;
    let rss_ready = verifier.rss_mib();
    let indexed = verifier.metric("keymint_verifier_index_keys").await;
    // The first start follows the creates at once, while the API server is
    // still digesting them; a second replica started now is what a rollout
    // or a restart sees.
    let mut second = Server::verifier(&ctx.cp, &ns, "verifier-second")?;
    let ready_again = second.ready().await?;
    second.stop();
    let mut floor = Server::floor()?;
    floor.ready().await?;

    let urls = [floor.url(&check), verifier.url(&check)];
    eprintln!("bench: verify: peak load, {LOAD_ROUNDS} rounds of {seconds} s each");
    let peak = Rounds::run(&urls, &bearer, Load::Peak, seconds)?;
    let half = Load::Paced(median(&peak.verifier, |r| r.rps) / 2.0);
    eprintln!("bench: verify: half the peak, {LOAD_ROUNDS} rounds of {seconds} s each");
    let paced = Rounds::run(&urls, &bearer, half, seconds)?;
    let rss_loaded = verifier.rss_mib();
    let peak_rss = verifier.peak_rss_mib();

    eprintln!("bench: verify: revocation lag over {} deletes", keys.len());
    let lag = revocation_lag(&api, verifier.addr, &keys).await?;
    eprintln!("bench: verify: nginx with and without auth_request");
    let nginx = nginx::compare(verifier.addr, &check, &bearer, seconds)?;
    floor.stop();
    verifier.stop();

    Ok(json!({
        "keys": n,
        "indexed": indexed,
        "create_seconds": round3(create_seconds),
        "index_ready_seconds": round3(ready.as_secs_f64()),
        "index_ready_seconds_second_start": round3(ready_again.as_secs_f64()),
        "list_floor_seconds": round3(list_floor.as_secs_f64()),
        "index_ready_ratio_to_list_floor": ratio(ready_again.as_secs_f64(), list_floor.as_secs_f64()),
        "rss_mib_ready": round3(rss_ready),
        "rss_mib_after_load": round3(rss_loaded),
        "peak_rss_mib": round3(peak_rss),
        "peak": peak.json(|r| r.rps),
        "half_peak": paced.json(|r| r.p99_ms),
        "revocation_lag": lag,
        "nginx": nginx,
    }))
}

/// Floor and verifier under the same load, taking turns: wrk, both servers
/// and the control plane share two cores, and one run each swung the
/// throughput ratio from 0.81 to 1.16 between bench runs. Each side's run
/// with the median of a figure is what is reported.
struct Rounds {
    floor: Vec<Run>,
    verifier: Vec<Run>,
}

impl Rounds {
    /// LOAD_ROUNDS runs of each of `urls` (floor, verifier), who goes first
    /// alternating from round to round.
    fn run(urls: &[String; 2], bearer: &str, load: Load, seconds: u64) -> Result<Rounds> {
        let mut runs = [Vec::new(), Vec::new()];
        for round in 0..LOAD_ROUNDS {
            for side in [round % 2, 1 - round % 2] {
                runs[side].push(wrk(&urls[side], bearer, load, seconds)?);
            }
        }
        let [floor, verifier] = runs;
        Ok(Rounds { floor, verifier })
    }

    /// Each side's median run by `figure`, the verifier's median over the
    /// floor's, and every round's figures.
    fn json(&self, figure: fn(&Run) -> f64) -> Value {
        let (v, fl) = (
            median_run(&self.verifier, figure),
            median_run(&self.floor, figure),
        );
        let each = |runs: &[Run]| runs.iter().map(|r| round3(figure(r))).collect::<Vec<_>>();
        json!({
            "verifier": v.json(),
            "floor": fl.json(),
            "ratio_to_floor": ratio(figure(v), figure(fl)),
            "rounds": {"verifier": each(&self.verifier), "floor": each(&self.floor)},
        })
    }
}

fn median_run(runs: &[Run], figure: fn(&Run) -> f64) -> &Run {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by(|a, b| figure(a).total_cmp(&figure(b)));
    sorted[sorted.len() / 2]
}

fn median(runs: &[Run], figure: fn(&Run) -> f64) -> f64 {
    figure(median_run(runs, figure))
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) fn ratio(a: f64, b: f64) -> Value {
    match b > 0.0 {
        true => json!(round3(a / b)),
        false => Value::Null,
    }
}

/// The project of the `i`th key: keys come ten to an owner, owners spread
/// over four projects.
fn project_of(i: usize) -> String {
    format!("proj{}", (i / 10) % 4)
}

/// The project of the key named `name` by [`populate`]: the keys come back
/// in the order their creates finished, so the name, not the position,
/// says which key it is.
pub(crate) fn project_of_name(name: &str) -> Result<String> {
    name.strip_prefix("vk-")
        .and_then(|i| i.parse().ok())
        .map(project_of)
        .ok_or_else(|| format!("unexpected ApiKey name {name}").into())
}

/// Creates `n` ApiKeys and gives each an Active status with the hash of a
/// freshly minted key; returns (name, key) of the last REVOCATIONS + 1.
pub(crate) async fn populate(api: &Api<ApiKey>, n: usize) -> Result<Vec<(String, String)>> {
    let kept = n.saturating_sub(REVOCATIONS + 1);
    let results: Vec<Result<Option<(String, String)>>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let minted = key::mint()?;
                let name = format!("vk-{i:06}");
                let pair = i / 10;
                let api_key = ApiKey::new(
                    &name,
                    ApiKeySpec {
                        project: project_of(i),
                        owner: format!("user{pair}@example.com"),
                        description: None,
                        expires_at: None,
                        secret_name: None,
                        secret_template: None,
                        show_once: None,
                    },
                );
                let status = json!({"status": {
                    "phase": "Active", "keyId": key::key_id(&minted),
                    "keyHash": key::hash(&minted), "secretName": name,
                }});
                let (post, patch) = (PostParams::default(), PatchParams::default());
                let merge = Patch::Merge(&status);
                retry(|| api.create(&post, &api_key)).await?;
                retry(|| api.patch_status(&name, &patch, &merge)).await?;
                if i > 0 && i % 10_000 == 0 {
                    eprintln!("bench: verify: {i} ApiKeys");
                }
                Ok((i >= kept).then(|| (name, minted.expose().to_string())))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    let mut keys = Vec::new();
    for r in results {
        keys.extend(r?);
    }
    Ok(keys)
}

/// The floor of "index ready": the API server's own time to serve every
/// ApiKey in the namespace, in one request, read to the end and dropped.
async fn list_floor(api: &Api<ApiKey>) -> Result<Duration> {
    use futures::AsyncReadExt;
    let request = kube::core::Request::new(api.resource_url()).list(&Default::default())?;
    let started = Instant::now();
    let mut body = kube::Client::from(api.clone())
        .request_stream(request)
        .await?;
    let mut piece = vec![0; 1 << 16];
    while body.read(&mut piece).await? > 0 {}
    Ok(started.elapsed())
}

async fn retry<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < 4 => {
                eprintln!("bench: verify: {e}; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// From the delete call to the first refusal, key by key.
async fn revocation_lag(
    api: &Api<ApiKey>,
    verifier: SocketAddr,
    keys: &[(String, String)],
) -> Result<Value> {
    let mut lags = Vec::new();
    for (name, key) in keys {
        let body = json!({ "key": key, "project": "*" }).to_string();
        let started = Instant::now();
        api.delete(name, &DeleteParams::default()).await?;
        loop {
            let (_, answer) = http_request(verifier, "POST", "/v1/verify", &body).await?;
            if !answer.contains("\"valid\":true") {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("{name} still verifies 10 s after its delete").into());
            }
        }
        lags.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    lags.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        let rank = ((q * lags.len() as f64).ceil() as usize).clamp(1, lags.len());
        round3(lags[rank - 1])
    };
    Ok(json!({"n": lags.len(), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0)}))
}
