//! burst: the peer's shape of work. N ApiKeys (1,000 in `make bench`)
//! created with the bench client's 32 creates in flight, in alternating
//! rounds (floor, keymint, floor, keymint, ...), each round in a fresh
//! namespace with a fresh process; every figure is the median of its
//! rounds. Writes per key are split at the moment the last key was seen
//! Active: the path to Active, and what follows it (Events, audit appends).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use keymint::apikey::Phase;
use serde_json::{Value, json};

use super::{Applied, Ctx, apply_all, latencies, merge, round3, selected_metrics, summary};
use crate::Result;
use crate::cluster::{self, Writes};
use crate::observe::{Observer, Seen};
use crate::procs::Kind;
use crate::report::f;

/// Keys/s of the tuned mittwald kubernetes-secret-generator with the same
/// request shape (1,000 objects at once, 32 creates in flight), measured
/// on another machine: a reference point, not a same-run baseline.
pub const SECRET_GENERATOR_KEYS_PER_S: f64 = 924.0;

/// Figures taken as the median of the rounds: (name, where in a round).
const FIGURES: &[(&str, &str)] = &[
    ("keys_per_s", "/keys_per_s"),
    ("seconds_to_all_active", "/seconds_to_all_active"),
    ("apply_seconds", "/apply_seconds"),
    ("apply_to_active_p50_ms", "/apply_to_active/p50_ms"),
    ("apply_to_active_p99_ms", "/apply_to_active/p99_ms"),
    ("apply_to_active_max_ms", "/apply_to_active/max_ms"),
    (
        "first_tenth_created_p99_ms",
        "/apply_to_active_first_tenth_created/p99_ms",
    ),
    ("writes_per_key_to_active", "/writes_per_key_to_active"),
    ("events_per_key_to_active", "/events_per_key_to_active"),
    (
        "writes_per_key_after_active",
        "/writes_per_key_after_active",
    ),
    (
        "events_per_key_after_active",
        "/events_per_key_after_active",
    ),
    ("own_cpu_seconds", "/own_cpu_seconds"),
    ("kube_apiserver_cpu_seconds", "/cpu_seconds/kube_apiserver"),
    ("etcd_cpu_seconds", "/cpu_seconds/etcd"),
    (
        "other_processes_cpu_seconds",
        "/cpu_seconds/other_processes",
    ),
    ("peak_rss_mib", "/peak_rss_mib"),
];

pub async fn scenario(ctx: &mut Ctx) -> Result<Value> {
    let (n, rounds) = (ctx.plan.burst_keys, ctx.plan.burst_rounds);
    let mut by_kind = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        for (i, kind) in [Kind::Floor, Kind::Keymint].into_iter().enumerate() {
            by_kind[i].push(round(ctx, kind, n, r + 1).await?);
        }
    }
    let [floor, keymint] = by_kind;
    let (fm, km) = (medians(&floor), medians(&keymint));
    let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(round3(a / b)),
        _ => Value::Null,
    };
    let per_round: Vec<Value> = keymint
        .iter()
        .zip(&floor)
        .map(|(k, f)| ratio(&k["keys_per_s"], &f["keys_per_s"]))
        .collect();
    let reference = json!(SECRET_GENERATOR_KEYS_PER_S);
    Ok(json!({
        "keys": n,
        "rounds": rounds,
        "apply_concurrency": ctx.plan.apply_concurrency,
        "order": "floor, keymint, alternating; a fresh namespace and process per round",
        "throughput_ratio_to_floor": ratio(&km["keys_per_s"], &fm["keys_per_s"]),
        "throughput_ratio_to_floor_by_round": per_round,
        "p99_ratio_to_floor": ratio(&km["apply_to_active_p99_ms"], &fm["apply_to_active_p99_ms"]),
        "secret_generator_keys_per_s": reference,
        "ratio_to_secret_generator": ratio(&km["keys_per_s"], &reference),
        "floor_ratio_to_secret_generator": ratio(&fm["keys_per_s"], &reference),
        "keymint": {"median": km, "rounds": keymint},
        "floor": {"median": fm, "rounds": floor},
    }))
}

/// One round: a fresh namespace and process, N creates, until all are
/// Active and the writes that follow have stopped.
async fn round(ctx: &mut Ctx, kind: Kind, n: usize, index: usize) -> Result<Value> {
    eprintln!("bench: burst {n}, round {index} ({})", kind.label());
    let tag = format!("burst{n}-{}-{index}", kind.label());
    let ns = ctx.namespace(kind, &tag).await?;
    let observer = Observer::start(&ctx.client, &ns).await?;
    let mut extra = vec!["--max-keys-per-owner", "1000000"];
    extra.retain(|_| kind == Kind::Keymint);
    let mut proc = ctx.start(kind, &ns, &tag, &extra).await?;
    let m0 = ctx.meter(Some(&proc)).await;
    let Applied {
        sent,
        apply_seconds,
        all,
    } = apply_all(ctx, &ns, &observer, "b", n).await?;
    let (active, last_active) = observer.with(|s| (s.count(Phase::Active), last_active(s, &sent)));
    let lat = observer.with(|s| latencies(s, &sent, Phase::Active));
    let first_tenth = first_created(&sent, n / 10);
    let first_tenth = observer.with(|s| latencies(s, &first_tenth, Phase::Active));
    let settled = settle(ctx, m0.audit, &ns, kind.agent()).await;
    let measured = ctx.measure(&m0, Some(&proc), &ns, kind.agent()).await;
    let at = last_active.unwrap_or_else(Timestamp::now);
    let (to_active, after) = cluster::writes_split(&ctx.cp, m0.audit, &ns, kind.agent(), at);
    let first_sent = sent.values().min().copied().unwrap_or(at);
    let seconds = at.duration_since(first_sent).as_secs_f64();
    let mut value = json!({
        "round": index,
        "namespace": ns,
        "all_active": all,
        "active": active,
        "writes_settled": settled,
        "seconds_to_all_active": round3(seconds),
        "apply_seconds": round3(apply_seconds),
        "keys_per_s": (seconds > 0.0).then(|| round3(active as f64 / seconds)),
        "apply_to_active": summary(lat),
        "apply_to_active_first_tenth_created": summary(first_tenth),
        "peak_rss_mib": round3(proc.peak_rss_mib()),
        "own_cpu_seconds": measured["cpu_seconds"][kind.label()].clone(),
    });
    split_figures(&mut value, &to_active, &after, n);
    merge(&mut value, measured);
    if kind == Kind::Keymint {
        value["keymint_metrics"] = selected_metrics(&mut proc).await;
    }
    proc.terminate();
    Ok(value)
}

/// When the last of the keys was seen Active.
fn last_active(seen: &Seen, sent: &HashMap<String, Timestamp>) -> Option<Timestamp> {
    sent.keys()
        .filter_map(|name| seen.first_in(name, Phase::Active))
        .max()
}

/// The `count` keys whose creates were sent first: a consumer that takes
/// keys in the order they were created has them Active first.
fn first_created(sent: &HashMap<String, Timestamp>, count: usize) -> HashMap<String, Timestamp> {
    let mut by_time: Vec<(&String, &Timestamp)> = sent.iter().collect();
    by_time.sort_by_key(|(_, at)| **at);
    by_time
        .into_iter()
        .take(count)
        .map(|(name, at)| (name.clone(), *at))
        .collect()
}

fn split_figures(value: &mut Value, to_active: &Writes, after: &Writes, n: usize) {
    let per_key = |count: u64| round3(count as f64 / n as f64);
    value["writes_per_key_to_active"] = json!(per_key(to_active.total_excluding_events));
    value["events_per_key_to_active"] = json!(per_key(to_active.events));
    value["writes_per_key_after_active"] = json!(per_key(after.total_excluding_events));
    value["events_per_key_after_active"] = json!(per_key(after.events));
    value["writes_to_active"] = json!(to_active);
    value["writes_after_active"] = json!(after);
}

/// Waits until `agent` has written nothing in `ns` for a second (the writes
/// that follow a key's status: Events, audit appends); false when it was
/// still writing after 30 s.
async fn settle(ctx: &Ctx, mark: u64, ns: &str, agent: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = cluster::writes_since(&ctx.cp, mark, ns, agent).total();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cluster::writes_since(&ctx.cp, mark, ns, agent).total();
        if now == last {
            return true;
        }
        last = now;
    }
    false
}

/// The median of each figure over the rounds that have it.
fn medians(rounds: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    for (name, pointer) in FIGURES {
        let values: Vec<f64> = rounds
            .iter()
            .filter_map(|r| r.pointer(pointer).and_then(Value::as_f64))
            .collect();
        out.insert((*name).to_string(), json!(median(values).map(round3)));
    }
    let all = rounds.iter().filter(|r| r["all_active"] == true).count();
    out.insert("rounds_all_active".into(), json!(all));
    Value::Object(out)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

type Row<'a> = (&'a str, String, String, String);

/// The table's rows: medians, keymint beside the floor.
pub fn rows(b: &Value, row: &mut impl FnMut(&str, &str, String, String, String)) {
    if b.is_null() {
        return;
    }
    if let Some(e) = b["error"].as_str() {
        row(
            "burst",
            "",
            format!("error: {e}"),
            String::new(),
            String::new(),
        );
        return;
    }
    let s = format!("burst {} (median of {})", b["keys"], b["rounds"]);
    let reference = format!("keys/s / {SECRET_GENERATOR_KEYS_PER_S} (secret-generator)");
    for (figure, keymint, floor, ratio) in rate_rows(b, &reference).into_iter().chain(cost_rows(b))
    {
        row(&s, figure, keymint, floor, ratio);
    }
}

/// Keys/s and apply->Active latency, with their ratios.
fn rate_rows<'a>(b: &Value, reference: &'a str) -> Vec<Row<'a>> {
    let (k, fl) = (&b["keymint"]["median"], &b["floor"]["median"]);
    let by_round = |kind: &str| {
        let rounds = b[kind]["rounds"].as_array().into_iter().flatten();
        let rates: Vec<String> = rounds.map(|r| f(&r["keys_per_s"], 0)).collect();
        rates.join(", ")
    };
    let lat = |m: &Value| {
        let (p50, p99) = (&m["apply_to_active_p50_ms"], &m["apply_to_active_p99_ms"]);
        format!("{} / {} ms", f(p50, 0), f(p99, 0))
    };
    let rate = |v: &Value| f(v, 1);
    vec![
        (
            "keys/s",
            rate(&k["keys_per_s"]),
            rate(&fl["keys_per_s"]),
            f(&b["throughput_ratio_to_floor"], 2),
        ),
        (
            "keys/s by round",
            by_round("keymint"),
            by_round("floor"),
            String::new(),
        ),
        (
            "p99 of the first tenth created",
            f(&k["first_tenth_created_p99_ms"], 0),
            f(&fl["first_tenth_created_p99_ms"], 0),
            String::new(),
        ),
        (
            "creates done after (s)",
            f(&k["apply_seconds"], 1),
            f(&fl["apply_seconds"], 1),
            String::new(),
        ),
        (
            reference,
            f(&b["ratio_to_secret_generator"], 2),
            f(&b["floor_ratio_to_secret_generator"], 2),
            String::new(),
        ),
        (
            "apply->Active p50 / p99",
            lat(k),
            lat(fl),
            f(&b["p99_ratio_to_floor"], 2),
        ),
    ]
}

/// Writes per key on the path to Active and after it; CPU.
fn cost_rows(b: &Value) -> Vec<Row<'static>> {
    let (k, fl) = (&b["keymint"]["median"], &b["floor"]["median"]);
    let writes = |m: &Value, phase: &str| {
        let w = &m[format!("writes_per_key_{phase}").as_str()];
        let e = &m[format!("events_per_key_{phase}").as_str()];
        format!("{} (+{})", f(w, 2), f(e, 2))
    };
    let cpu = |m: &Value| {
        let (own, api) = (&m["own_cpu_seconds"], &m["kube_apiserver_cpu_seconds"]);
        format!("{} / {}", f(own, 1), f(api, 1))
    };
    let (to, after) = ("to_active", "after_active");
    vec![
        (
            "writes per key to Active (+ Events)",
            writes(k, to),
            writes(fl, to),
            String::new(),
        ),
        (
            "writes per key after it (+ Events)",
            writes(k, after),
            writes(fl, after),
            String::new(),
        ),
        ("CPU s: own / apiserver", cpu(k), cpu(fl), String::new()),
    ]
}

/// The targets for the burst, each a ratio within this run.
pub fn targets(b: &Value, push: &mut impl FnMut(&str, &str, Option<f64>, Option<bool>)) {
    if b.is_null() {
        return;
    }
    let keys = b["keys"].as_u64().unwrap_or(0);
    let ratio = b["throughput_ratio_to_floor"].as_f64();
    push(
        &format!("burst {keys}: keys/s / floor"),
        ">= 0.8",
        ratio,
        ratio.map(|x| x >= 0.8),
    );
    let p99 = b["p99_ratio_to_floor"].as_f64();
    push(
        &format!("burst {keys}: apply->Active p99 / floor's"),
        "<= 2",
        p99,
        p99.map(|x| x <= 2.0),
    );
}
