//! audit-history: what a long audit stream costs keymint's start-up. The
//! stream is filled with sealed segments of a burst (every entry made
//! within ten minutes, the case a 30-minute tail read does not bound),
//! written and marked with keymint's own library code as keymint writes
//! them; then `keymint run` is started over it and over an empty stream,
//! and time to /readyz and memory are compared in one run.

use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ConfigMap;
use keymint::audit::store::{self, Marks, newest_of};
use keymint::audit::{Action, Draft, Head, append_lines, chain_all};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::Result;
use crate::procs::{Kind, Proc};
use crate::scenarios::Ctx;

/// keymint's default segment size.
const SEGMENT_BYTES: usize = 64 * 1024;

/// Segments of history: quick runs a fifth of the default retention.
fn segments_for(mode: &str) -> usize {
    match mode {
        "full" => 1_000,
        _ => 200,
    }
}

pub async fn scenario(ctx: &mut Ctx) -> Result<Value> {
    let n = segments_for(ctx.plan.mode);
    eprintln!("bench: audit-history: start-up over {n} audit segments vs an empty stream");
    let empty = start_over(ctx, 0).await?;
    let long = start_over(ctx, n).await?;
    let ratio = |k: &str| match (long[k].as_f64(), empty[k].as_f64()) {
        (Some(l), Some(e)) if e > 0.0 => json!(super::scenarios::round3(l / e)),
        _ => Value::Null,
    };
    Ok(json!({
        "segments": n,
        "long": long,
        "empty": empty,
        "ready_ratio": ratio("seconds_to_ready"),
        "peak_rss_ratio": ratio("peak_rss_mib"),
    }))
}

/// Fills a fresh namespace with `segments` sealed segments, starts keymint
/// there and measures it once ready.
async fn start_over(ctx: &mut Ctx, segments: usize) -> Result<Value> {
    let ns = ctx
        .namespace(Kind::Keymint, &format!("history{segments}"))
        .await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let entries = fill(&config_maps, segments).await?;
    let flags: Vec<&str> = ctx.plan.keymint_args.iter().map(String::as_str).collect();
    let mut proc = Proc::keymint(&ctx.cp, &ns, &format!("history{segments}"), &flags)?;
    let ready = proc.ready().await?;
    let peak = proc.peak_rss_mib();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = proc.metrics().await;
    let value = json!({
        "segments": segments,
        "entries": entries,
        "seconds_to_ready": super::scenarios::round3(ready.as_secs_f64()),
        "peak_rss_mib": super::scenarios::round3(peak),
        "rss_mib": super::scenarios::round3(proc.rss_mib()),
        "segments_read_at_open": metrics.get("keymint_audit_segments_read_at_open"),
    });
    proc.terminate();
    Ok(value)
}

/// An entry of the burst: key `i` minted, at `at`.
fn draft(i: usize, at: Timestamp) -> Draft {
    Draft {
        time: at,
        action: Action::Minted,
        namespace: "payments".into(),
        name: format!("burst-{i:06}"),
        uid: format!("00000000-0000-4000-8000-{i:012}"),
        transition: 1,
        project: "payments".into(),
        owner: format!("user-{}@example.com", i % 100),
        key_id: Some(format!("km_{i:022}")),
        reason: "Minted".into(),
        message: format!("key km_{i:022} minted into Secret burst-{i:06}"),
        instance: "keymint-0".into(),
        pruned_through: None,
    }
}

/// Writes `segments` full, sealed segments of one burst ending two minutes
/// ago, marked as keymint marks them: the newest entry's time and the
/// watermark of the last write (made after the burst, nothing pending).
/// Returns the number of entries.
async fn fill(config_maps: &Api<ConfigMap>, segments: usize) -> Result<usize> {
    let (one, _) = chain_all(&Head::genesis(), &[draft(0, Timestamp::now())]);
    let per_segment = SEGMENT_BYTES / (one[0].encode().len() + 1);
    let total = segments * per_segment;
    let end = Timestamp::now() - SignedDuration::from_mins(2);
    let step = SignedDuration::from_mins(10) / i32::try_from(total.max(1)).unwrap_or(i32::MAX);
    let start = end - step * i32::try_from(total).unwrap_or(i32::MAX);
    let mut head = Head::genesis();
    let mut maps = Vec::with_capacity(segments);
    for s in 0..segments {
        let drafts: Vec<Draft> = (s * per_segment..(s + 1) * per_segment)
            .map(|i| draft(i, start + step * i32::try_from(i).unwrap_or(i32::MAX)))
            .collect();
        let (entries, next) = chain_all(&head, &drafts);
        let marks = Marks {
            newest: newest_of(&entries),
            watermark: Some(end - SignedDuration::from_secs(15)),
        };
        let name = store::segment_name(s as u64 + 1);
        let content = append_lines("", &entries);
        maps.push(store::configmap(&name, None, &head, &content, true, marks));
        head = next;
    }
    let created: Vec<std::result::Result<ConfigMap, kube::Error>> = futures::stream::iter(maps)
        .map(|cm| {
            let api = config_maps.clone();
            async move { api.create(&PostParams::default(), &cm).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for result in created {
        result?;
    }
    Ok(total)
}

/// The table's rows: long stream, empty stream, ratio.
pub fn rows(v: &Value, row: &mut impl FnMut(&str, &str, String, String, String)) {
    if v.is_null() {
        return;
    }
    if let Some(e) = v["error"].as_str() {
        row(
            "audit-history",
            "",
            format!("error: {e}"),
            String::new(),
            String::new(),
        );
        return;
    }
    let s = format!("audit-history {} segments", v["segments"]);
    let (long, empty) = (&v["long"], &v["empty"]);
    let f = |x: &Value, d: usize| x.as_f64().map_or("-".into(), |x| format!("{x:.d$}"));
    row(
        &s,
        "time to ready (s): long / empty stream",
        f(&long["seconds_to_ready"], 2),
        f(&empty["seconds_to_ready"], 2),
        f(&v["ready_ratio"], 2),
    );
    row(
        &s,
        "peak RSS at start (MiB): long / empty",
        f(&long["peak_rss_mib"], 1),
        f(&empty["peak_rss_mib"], 1),
        f(&v["peak_rss_ratio"], 2),
    );
    row(
        &s,
        "segments read at open: long / empty",
        f(&long["segments_read_at_open"], 0),
        f(&empty["segments_read_at_open"], 0),
        String::new(),
    );
}
