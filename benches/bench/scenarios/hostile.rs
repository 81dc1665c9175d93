//! The `hostile` scenario: the `verify` scenario's load (wrk at its peak,
//! then paced at half of it) against `keymint verifier`, calm and then
//! while a hostile client floods the verifier's serving ports from another
//! source address (`flood`). What the well-behaved client keeps under the
//! flood is reported as a ratio of the calm run of the same run:
//! throughput at peak, and p99 at half the calm peak.

mod flood;

use std::process::Command;
use std::time::{Duration, Instant};

use keymint::apikey::ApiKey;
use kube::Api;
use serde_json::{Value, json};

use crate::Result;
use crate::procs::{Kind, http_get};
use crate::scenarios::Ctx;
use crate::verify::server::Server;
use crate::verify::wrk::{Load, Run, wrk};
use crate::verify::{populate, project_of_name, ratio, round3};
use flood::{Flood, Size};

/// Time for the flood's connections to be established before measuring.
const FLOOD_SETTLE: Duration = Duration::from_secs(2);

pub async fn scenario(ctx: &mut Ctx) -> Result<Value> {
    if Command::new("wrk").arg("-v").output().is_err() {
        return Err("wrk is missing: apt-get install wrk".into());
    }
    let n = ctx.plan.hostile_keys;
    let seconds = ctx.plan.load_seconds;
    let size = match ctx.plan.mode {
        "quick" => Size {
            idle: 1_000,
            slowloris: 200,
            h2_connections: 2,
        },
        _ => Size {
            idle: 5_000,
            slowloris: 1_000,
            h2_connections: 4,
        },
    };
    let ns = ctx.namespace(Kind::Floor, "hostile").await?;
    let api: Api<ApiKey> = Api::namespaced(ctx.client.clone(), &ns);
    eprintln!("bench: hostile: creating {n} Active ApiKeys");
    let (name, presented) = populate(&api, n).await?.pop().ok_or("no key")?;
    let bearer = format!("Authorization: Bearer {presented}");
    let check = format!("/forward-auth?project={}", project_of_name(&name)?);
    let mut verifier = Server::verifier(&ctx.cp, &ns, "hostile-verifier")?;
    verifier.ready().await?;
    let url = verifier.url(&check);
    let grpc = verifier.grpc_addr()?;

    eprintln!("bench: hostile: calm, {seconds} s at peak and {seconds} s at half of it");
    let calm_peak = load(&url, &bearer, Load::Peak, seconds).await?;
    let half = Load::Paced(calm_peak.rps / 2.0);
    let calm_half = load(&url, &bearer, half, seconds).await?;
    let rss_calm = verifier.rss_mib();

    eprintln!(
        "bench: hostile: flooded ({} idle, {} slowloris, {} HTTP/2 rapid-reset connections from 127.0.0.2)",
        size.idle, size.slowloris, size.h2_connections
    );
    let flood = Flood::start(verifier.addr, grpc, size);
    tokio::time::sleep(FLOOD_SETTLE).await;
    let flooded_peak = load(&url, &bearer, Load::Peak, seconds).await?;
    let flooded_half = load(&url, &bearer, half, seconds).await?;
    // What a probe on the serving port sees meanwhile (the chart's probes
    // time out after a second).
    let asked = Instant::now();
    let readyz = http_get(verifier.addr, "/readyz").await;
    let readyz_ms = asked.elapsed().as_secs_f64() * 1000.0;
    let rss_flooded = verifier.rss_mib();
    let peak_rss = verifier.peak_rss_mib();
    let flood = flood.stop().await;
    verifier.stop();

    Ok(json!({
        "keys": n,
        "load_seconds": seconds,
        "calm": {"peak": calm_peak.json(), "half_peak": calm_half.json()},
        "flooded": {"peak": flooded_peak.json(), "half_peak": flooded_half.json()},
        "throughput_ratio_to_calm": ratio(flooded_peak.rps, calm_peak.rps),
        "p99_ratio_to_calm": ratio(flooded_half.p99_ms, calm_half.p99_ms),
        "readyz_under_flood": {
            "status": readyz.as_ref().map(|(code, _)| *code).ok(),
            "error": readyz.as_ref().err().map(|e| e.to_string()),
            "ms": round3(readyz_ms),
        },
        "rss_mib_calm": round3(rss_calm),
        "rss_mib_flooded": round3(rss_flooded),
        "peak_rss_mib": round3(peak_rss),
        "flood": flood,
    }))
}

/// One wrk run, off the runtime's threads: the flood's tasks keep running
/// meanwhile.
async fn load(url: &str, bearer: &str, load: Load, seconds: u64) -> Result<Run> {
    let (url, bearer) = (url.to_string(), bearer.to_string());
    tokio::task::spawn_blocking(move || wrk(&url, &bearer, load, seconds)).await?
}

/// The scenario's rows in the table: flooded in keymint's column, calm in
/// the floor's, flooded over calm as the ratio.
pub fn rows(v: &Value, row: &mut impl FnMut(&str, &str, String, String, String)) {
    use crate::report::f;
    if v.is_null() {
        return;
    }
    let s = format!("hostile {} keys", v["keys"]);
    if let Some(e) = v["error"].as_str() {
        row(&s, "", format!("error: {e}"), String::new(), String::new());
        return;
    }
    let (flooded, calm) = (&v["flooded"], &v["calm"]);
    row(
        &s,
        "forward-auth req/s at peak: flooded / calm",
        f(&flooded["peak"]["requests_per_s"], 0),
        f(&calm["peak"]["requests_per_s"], 0),
        f(&v["throughput_ratio_to_calm"], 2),
    );
    row(
        &s,
        "p99 at half the calm peak (ms): flooded / calm",
        f(&flooded["half_peak"]["p99_ms"], 3),
        f(&calm["half_peak"]["p99_ms"], 3),
        f(&v["p99_ratio_to_calm"], 2),
    );
    row(
        &s,
        "non-2xx answers at peak: flooded / calm",
        f(&flooded["peak"]["non_2xx"], 0),
        f(&calm["peak"]["non_2xx"], 0),
        String::new(),
    );
    let flood = &v["flood"];
    row(
        &s,
        "flood: idle / slowloris conns, h2 streams reset",
        format!(
            "{} / {} / {}",
            flood["idle"]["connected"],
            flood["slowloris"]["connected"],
            flood["h2_rapid_reset"]["streams_reset"]
        ),
        String::new(),
        String::new(),
    );
    row(
        &s,
        "RSS calm / flooded / peak (MiB); /readyz (ms)",
        format!(
            "{} / {} / {}; {}",
            f(&v["rss_mib_calm"], 1),
            f(&v["rss_mib_flooded"], 1),
            f(&v["peak_rss_mib"], 1),
            f(&v["readyz_under_flood"]["ms"], 1)
        ),
        String::new(),
        String::new(),
    );
}
