//! The outputs: one table on stdout and `target/bench/results.json`
//! (field names are stable; BENCHMARKS.md explains them).

use jiff::Timestamp;
use kube::Client;
use serde_json::{Value, json};

use crate::Plan;

/// The machine and the versions the figures were measured with.
pub async fn environment(client: &Client) -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let command = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .current_dir(crate::cluster::REPO)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let lock = read(&format!("{}/Cargo.lock", crate::cluster::REPO));
    let locked = |name: &str| {
        let needle = format!("name = \"{name}\"\nversion = \"");
        lock.find(&needle)
            .map(|i| {
                lock[i + needle.len()..]
                    .split('"')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let apiserver = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_default();
    let dirty = !command("git", &["status", "--porcelain", "--", "src"]).is_empty();
    json!({
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "memory_mib": mem_kib / 1024,
            "cpu": cpu_model,
            "kernel": read("/proc/sys/kernel/osrelease").trim(),
            "load_average_at_start": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        },
        "versions": {
            "keymint": env!("CARGO_PKG_VERSION"),
            "git_commit": command("git", &["rev-parse", "--short", "HEAD"]),
            "src_modified": dirty,
            "kube_apiserver": apiserver,
            "etcd": "embedded (go.etcd.io/etcd/server/v3, tests/controlplane/go.mod), fsync off",
            "rustc": command("rustc", &["--version"]),
            "kube_rs": locked("kube"),
            "k8s_openapi": locked("k8s-openapi"),
            "tokio": locked("tokio"),
        },
    })
}

pub fn document(
    plan: &Plan,
    environment: Value,
    started: Timestamp,
    finished: Timestamp,
    results: serde_json::Map<String, Value>,
) -> Value {
    let results = Value::Object(results);
    let targets = targets(&results);
    json!({
        "schema": "keymint-bench/1",
        "mode": plan.mode,
        "started_at": started.to_string(),
        "finished_at": finished.to_string(),
        "seconds": (finished.duration_since(started).as_secs_f64()).round(),
        "environment": environment,
        "plan": {
            "mint_sizes": plan.mint_sizes,
            "steady_repetitions": plan.steady_repetitions,
            "expiry_burst": plan.expiry_burst,
            "expiry_wave": plan.expiry_wave,
            "lifecycle_keys": plan.lifecycle_keys,
            "big_secrets": plan.big_secrets,
            "quota_creates": plan.quota_creates,
            "apply_concurrency": plan.apply_concurrency,
            "burst_keys": plan.burst_keys,
            "burst_rounds": plan.burst_rounds,
            "concurrency": plan.concurrency,
            "keymint_args": plan.keymint_args,
            "verify_keys": plan.verify_keys,
            "hostile_keys": plan.hostile_keys,
            "load_seconds": plan.load_seconds,
            "keymint_binary": std::env::var("KEYMINT_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_keymint").to_string()),
        },
        "scenarios": results,
        "targets": targets,
    })
}

/// The targets, judged on this run's figures.
fn targets(r: &Value) -> Value {
    let mut out = Vec::new();
    let mut push = |name: &str, target: &str, value: Option<f64>, met: Option<bool>| {
        out.push(json!({"name": name, "target": target, "value": value, "met": met}));
    };
    if let Some(runs) = r["mint"].as_array() {
        for run in runs {
            let keys = run["keys"].as_u64().unwrap_or(0);
            let ratio = run["throughput_ratio_to_floor"].as_f64();
            push(
                &format!("mint {keys}: throughput / floor"),
                ">= 0.8",
                ratio,
                ratio.map(|x| x >= 0.8),
            );
            let rss = run["keymint"]["peak_rss_mib"].as_f64();
            push(
                &format!("peak RSS at {keys} keys (MiB)"),
                "<= 40 at 10k keys",
                rss,
                rss.map(|x| x <= 40.0),
            );
        }
    }
    crate::scenarios::burst::targets(&r["burst"], &mut push);
    let p99 = r["steady"]["keymint"]["apply_to_active"]["p99_ms"].as_f64();
    push(
        "steady apply->Active p99 (ms)",
        "<= 250",
        p99,
        p99.map(|x| x <= 250.0),
    );
    let lag = r["expiry_burst"]["keymint"]["secret_deletion_lag"]["p99_ms"].as_f64();
    push(
        "expiry lag p99 (ms)",
        "<= 1000",
        lag,
        lag.map(|x| x <= 1000.0),
    );
    let writes = r["restart"]["writes_excluding_events"].as_f64();
    push("writes on restart", "0", writes, writes.map(|x| x == 0.0));
    let per_key = r["writes_per_key"]["keymint"]["writes_per_key"].as_f64();
    push(
        "writes per key lifecycle, excl. Events",
        "<= 5",
        per_key,
        per_key.map(|x| x <= 5.0),
    );
    let v = &r["verify"];
    if !v.is_null() {
        let keys = v["keys"].as_u64().unwrap_or(0);
        let ratio = v["peak"]["ratio_to_floor"].as_f64();
        push(
            &format!("verify {keys}: throughput / floor"),
            ">= 0.9",
            ratio,
            ratio.map(|x| x >= 0.9),
        );
        let p99 = v["half_peak"]["verifier"]["p99_ms"].as_f64();
        push(
            "verify p99 at half the peak (ms)",
            "<= 1",
            p99,
            p99.map(|x| x <= 1.0),
        );
        let rss = v["rss_mib_after_load"].as_f64();
        push(
            &format!("verifier RSS at {keys} keys (MiB)"),
            "<= 40 at 100k keys",
            rss,
            rss.map(|x| x <= 40.0),
        );
        let lag = v["revocation_lag"]["p99_ms"].as_f64();
        push(
            "revocation lag p99 (ms)",
            "<= 100",
            lag,
            lag.map(|x| x <= 100.0),
        );
        // Judged on a second start: the first one follows the creates at
        // once (see `verify::scenario`), which no rollout does.
        let ready = v["index_ready_seconds_second_start"].as_f64();
        push(
            &format!("index ready at {keys} keys, second start (s)"),
            "<= 5 at 100k keys",
            ready,
            ready.map(|x| x <= 5.0),
        );
    }
    Value::Array(out)
}

pub(crate) fn f(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    }
}

fn lat(v: &Value) -> String {
    if v["n"].as_u64().unwrap_or(0) == 0 {
        return "-".into();
    }
    format!("{} / {} ms", f(&v["p50_ms"], 0), f(&v["p99_ms"], 0))
}

fn lat3(v: &Value) -> String {
    if v["n"].as_u64().unwrap_or(0) == 0 {
        return "-".into();
    }
    format!(
        "{} / {} / {} ms",
        f(&v["p50_ms"], 0),
        f(&v["p99_ms"], 0),
        f(&v["max_ms"], 0)
    )
}

/// One table: scenario, figure, keymint, floor, ratio.
pub fn table(doc: &Value) -> String {
    let r = &doc["scenarios"];
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut row = |a: &str, b: &str, c: String, d: String, e: String| {
        rows.push([a.into(), b.into(), c, d, e]);
    };
    let err = |v: &Value| v["error"].as_str().map(|e| format!("error: {e}"));
    if let Some(runs) = r["mint"].as_array() {
        for run in runs {
            if let Some(e) = err(run) {
                row("mint", "", e, String::new(), String::new());
                continue;
            }
            let s = format!("mint {}", run["keys"]);
            let (k, fl) = (&run["keymint"], &run["floor"]);
            row(
                &s,
                "time to all Active (s)",
                f(&k["seconds_to_all_active"], 1),
                f(&fl["seconds_to_all_active"], 1),
                String::new(),
            );
            row(
                &s,
                "keys/s",
                f(&k["keys_per_s"], 1),
                f(&fl["keys_per_s"], 1),
                f(&run["throughput_ratio_to_floor"], 2),
            );
            row(
                &s,
                "apply->Active p50 / p99",
                lat(&k["apply_to_active"]),
                lat(&fl["apply_to_active"]),
                String::new(),
            );
            row(
                &s,
                "writes per key (+ Events)",
                format!(
                    "{} (+{})",
                    f(&k["writes_per_key"], 2),
                    f(&k["events_per_key"], 2)
                ),
                f(&fl["writes_per_key"], 2),
                String::new(),
            );
            row(
                &s,
                "CPU s: own / apiserver / etcd",
                cpu(k),
                cpu(fl),
                String::new(),
            );
            row(
                &s,
                "etcd WAL written (MiB)",
                f(&k["etcd"]["wal_written_mib"], 1),
                f(&fl["etcd"]["wal_written_mib"], 1),
                String::new(),
            );
            row(
                &s,
                "peak RSS (MiB)",
                f(&k["peak_rss_mib"], 1),
                f(&fl["peak_rss_mib"], 1),
                String::new(),
            );
        }
    }
    crate::scenarios::burst::rows(&r["burst"], &mut row);
    let s = &r["steady"];
    if !s.is_null() {
        row(
            &format!("steady x{}", s["keymint"]["repetitions"]),
            "apply->Active p50 / p99 / max",
            lat3(&s["keymint"]["apply_to_active"]),
            lat3(&s["floor"]["apply_to_active"]),
            String::new(),
        );
    }
    for (name, label) in [("expiry_burst", "expiry"), ("expiry_wave", "expiry wave")] {
        let e = &r[name];
        if e.is_null() {
            continue;
        }
        if let Some(msg) = err(e) {
            row(label, "", msg, String::new(), String::new());
            continue;
        }
        let s = format!("{label} {}", e["keymint"]["keys"]);
        row(
            &s,
            "Secret deleted after expiresAt p50/p99/max",
            lat3(&e["keymint"]["secret_deletion_lag"]),
            lat3(&e["floor"]["secret_deletion_lag"]),
            String::new(),
        );
        row(
            &s,
            "status Expired after expiresAt p50/p99/max",
            lat3(&e["keymint"]["expired_status_lag"]),
            lat3(&e["floor"]["expired_status_lag"]),
            String::new(),
        );
        row(
            &s,
            "drain rate (Secrets deleted/s)",
            f(&e["keymint"]["deletes_per_s"], 1),
            f(&e["floor"]["deletes_per_s"], 1),
            f(&e["drain_ratio_to_floor"], 2),
        );
        row(
            &s,
            "writes per key (+ Events)",
            format!(
                "{} (+{})",
                f(&e["keymint"]["writes_per_key"], 2),
                f(&e["keymint"]["events_per_key"], 2)
            ),
            f(&e["floor"]["writes_per_key"], 2),
            String::new(),
        );
        row(
            &s,
            "etcd WAL written (MiB)",
            f(&e["keymint"]["etcd"]["wal_written_mib"], 1),
            f(&e["floor"]["etcd"]["wal_written_mib"], 1),
            String::new(),
        );
    }
    let x = &r["restart"];
    if !x.is_null() {
        if let Some(msg) = err(x) {
            row("restart", "", msg, String::new(), String::new());
        } else {
            let s = format!("restart {}", x["keys"]);
            row(
                &s,
                "time to ready / all reconciled (s)",
                format!(
                    "{} / {}",
                    f(&x["seconds_to_ready"], 2),
                    f(&x["seconds_to_all_reconciled"], 2)
                ),
                String::new(),
                String::new(),
            );
            row(
                &s,
                "writes (+ Events)",
                format!(
                    "{} (+{})",
                    f(&x["writes_excluding_events"], 0),
                    f(&x["events"], 0)
                ),
                String::new(),
                String::new(),
            );
            row(
                &s,
                "RSS at rest / peak (MiB)",
                format!(
                    "{} / {}",
                    f(&x["rss_mib_at_rest"], 1),
                    f(&x["peak_rss_mib"], 1)
                ),
                String::new(),
                String::new(),
            );
        }
    }
    let w = &r["writes_per_key"];
    if !w.is_null() {
        let s = format!("lifecycle {}", w["keymint"]["keys"]);
        row(
            &s,
            "writes per key (+ Events)",
            format!(
                "{} (+{})",
                f(&w["keymint"]["writes_per_key"], 2),
                f(&w["keymint"]["events_per_key"], 2)
            ),
            f(&w["floor"]["writes_per_key"], 2),
            String::new(),
        );
        row(
            &s,
            "delete->gone p50 / p99",
            lat(&w["keymint"]["delete_to_gone"]),
            lat(&w["floor"]["delete_to_gone"]),
            String::new(),
        );
    }
    let q = &r["quota_contention"];
    if !q.is_null() {
        let s = format!("quota {} creates", q["creates"]);
        row(
            &s,
            "time to settle (s)",
            f(&q["seconds_to_settle"], 2),
            String::new(),
            String::new(),
        );
        row(
            &s,
            "Active / Rejected / most Secrets at once",
            format!(
                "{} / {} / {}",
                q["active"], q["rejected"], q["max_secrets_at_once"]
            ),
            String::new(),
            String::new(),
        );
    }
    if let Some(a) = r["etcd_alarms"].as_object() {
        row(
            "etcd",
            "ALARM: the run stopped",
            format!("{} after {}", a["alarms"], a["after"]),
            String::new(),
            String::new(),
        );
    }
    crate::history::rows(&r["audit_history"], &mut row);
    verify_rows(&r["verify"], &mut row);
    crate::scenarios::hostile::rows(&r["hostile"], &mut row);
    let m = &r["memory_big_secrets"];
    if !m.is_null() {
        let s = format!("memory +{} x 1 MiB Secrets", m["big_secrets"]);
        row(
            &s,
            &format!("peak RSS at {} keys (MiB)", m["keys"]),
            f(&m["peak_rss_mib"], 1),
            String::new(),
            String::new(),
        );
    }

    let header = ["scenario", "figure", "keymint", "floor", "ratio"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String; 5]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(&header), line(&widths.map(|w| "-".repeat(w)))];
    out.extend(rows.iter().map(line));
    out.push(String::new());
    out.push("targets:".into());
    for t in doc["targets"].as_array().into_iter().flatten() {
        let verdict = match t["met"].as_bool() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        out.push(format!(
            "  {:<45} {:>10}  target {:<18} {verdict}",
            t["name"].as_str().unwrap_or_default(),
            f(&t["value"], 2),
            t["target"].as_str().unwrap_or_default()
        ));
    }
    out.join("\n")
}

/// The `verify` scenario's rows: verifier and floor (or nginx with and
/// without auth_request) side by side.
fn verify_rows(v: &Value, row: &mut impl FnMut(&str, &str, String, String, String)) {
    if v.is_null() {
        return;
    }
    let s = format!("verify {} keys", v["keys"]);
    if let Some(e) = v["error"].as_str() {
        row(&s, "", format!("error: {e}"), String::new(), String::new());
        return;
    }
    let (peak, half) = (&v["peak"], &v["half_peak"]);
    row(
        &s,
        "forward-auth req/s (peak; median of the rounds)",
        f(&peak["verifier"]["requests_per_s"], 0),
        f(&peak["floor"]["requests_per_s"], 0),
        f(&peak["ratio_to_floor"], 2),
    );
    row(
        &s,
        "p50 / p99 at half the peak (ms; median p99 round)",
        format!(
            "{} / {}",
            f(&half["verifier"]["p50_ms"], 3),
            f(&half["verifier"]["p99_ms"], 3)
        ),
        format!(
            "{} / {}",
            f(&half["floor"]["p50_ms"], 3),
            f(&half["floor"]["p99_ms"], 3)
        ),
        String::new(),
    );
    let rounds = |side: &str, figure: &Value, digits: usize| {
        let each = figure["rounds"][side].as_array().into_iter().flatten();
        each.map(|x| f(x, digits)).collect::<Vec<_>>().join(", ")
    };
    row(
        &s,
        "  each round: req/s at peak; p99 at half (ms)",
        format!(
            "{}; {}",
            rounds("verifier", peak, 0),
            rounds("verifier", half, 2)
        ),
        format!("{}; {}", rounds("floor", peak, 0), rounds("floor", half, 2)),
        String::new(),
    );
    row(
        &s,
        "index ready, first / second start (s); floor: the list alone",
        format!(
            "{} / {}",
            f(&v["index_ready_seconds"], 2),
            f(&v["index_ready_seconds_second_start"], 2)
        ),
        f(&v["list_floor_seconds"], 2),
        f(&v["index_ready_ratio_to_list_floor"], 2),
    );
    row(
        &s,
        "RSS ready / after load (MiB)",
        format!(
            "{} / {}",
            f(&v["rss_mib_ready"], 1),
            f(&v["rss_mib_after_load"], 1)
        ),
        String::new(),
        String::new(),
    );
    row(
        &s,
        "revocation lag p50/p99/max",
        lat3(&v["revocation_lag"]),
        String::new(),
        String::new(),
    );
    let nginx = &v["nginx"];
    row(
        &s,
        "nginx req/s: auth_request / alone",
        f(&nginx["auth_request"]["requests_per_s"], 0),
        f(&nginx["alone"]["requests_per_s"], 0),
        f(&nginx["throughput_ratio"], 2),
    );
}

fn cpu(v: &Value) -> String {
    let c = &v["cpu_seconds"];
    let own = if c["keymint"].is_null() {
        &c["floor"]
    } else {
        &c["keymint"]
    };
    format!(
        "{} / {} / {}",
        f(own, 1),
        f(&c["kube_apiserver"], 1),
        f(&c["etcd"], 1)
    )
}
