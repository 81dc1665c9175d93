//! audit-history: what a long audit stream costs keymint's start-up. The
//! stream is filled with the default retention's worth of sealed segments
//! from a long burst (50 entries a second, so that a 30-minute tail read
//! is most of it), written and marked with keymint's own library code as
//! keymint writes them; then `keymint run` is started over it, over a short
//! stream and over an empty one, and time to /readyz and memory are
//! compared in one run.

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

/// Segments of history: the default retention, and a short stream.
const LONG: usize = 1_000;
const SHORT: usize = 20;
/// Starts measured per stream (the median is reported).
const STARTS: usize = 3;
/// Entries a second during the burst.
const RATE: i64 = 50;

pub async fn scenario(ctx: &mut Ctx) -> Result<Value> {
    eprintln!(
        "bench: audit-history: start-up over {LONG} and {SHORT} audit segments and an empty stream"
    );
    let empty = start_over(ctx, 0).await?;
    let short = start_over(ctx, SHORT).await?;
    let long = start_over(ctx, LONG).await?;
    let ratio = |k: &str, base: &Value| match (long[k].as_f64(), base[k].as_f64()) {
        (Some(l), Some(b)) if b > 0.0 => json!(super::scenarios::round3(l / b)),
        _ => Value::Null,
    };
    Ok(json!({
        "segments": LONG,
        "long": long,
        "short": short,
        "empty": empty,
        "ready_ratio_to_short": ratio("seconds_to_ready", &short),
        "peak_rss_ratio_to_short": ratio("peak_rss_mib", &short),
        "ready_ratio_to_empty": ratio("seconds_to_ready", &empty),
        "peak_rss_ratio_to_empty": ratio("peak_rss_mib", &empty),
    }))
}

/// Fills a fresh namespace with `segments` sealed segments, starts keymint
/// there [`STARTS`] times and takes the median of each figure.
async fn start_over(ctx: &mut Ctx, segments: usize) -> Result<Value> {
    let ns = ctx
        .namespace(Kind::Keymint, &format!("history{segments}"))
        .await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let entries = fill(&config_maps, segments).await?;
    let flags: Vec<&str> = ctx.plan.keymint_args.iter().map(String::as_str).collect();
    let (mut ready, mut peak, mut read) = (Vec::new(), Vec::new(), None);
    for i in 0..STARTS {
        let tag = format!("history{segments}-{i}");
        let mut proc = Proc::keymint(&ctx.cp, &ns, &tag, &flags)?;
        ready.push(proc.ready().await?.as_secs_f64());
        peak.push(proc.peak_rss_mib());
        read = proc
            .metrics()
            .await
            .get("keymint_audit_segments_read_at_open")
            .copied();
        proc.terminate();
    }
    Ok(json!({
        "segments": segments,
        "entries": entries,
        "starts": STARTS,
        "seconds_to_ready": median(ready),
        "peak_rss_mib": median(peak),
        "segments_read_at_open": read,
    }))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    super::scenarios::round3(values.get(values.len() / 2).copied().unwrap_or(0.0))
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

/// Writes `segments` full, sealed segments of one burst at [`RATE`]
/// ending two minutes ago, marked as keymint marks them: the newest entry's time and the
/// watermark of the last write (made after the burst, nothing pending).
/// Returns the number of entries.
async fn fill(config_maps: &Api<ConfigMap>, segments: usize) -> Result<usize> {
    let (one, _) = chain_all(&Head::genesis(), &[draft(0, Timestamp::now())]);
    let per_segment = SEGMENT_BYTES / (one[0].encode().len() + 1);
    let total = segments * per_segment;
    let end = Timestamp::now() - SignedDuration::from_mins(2);
    let step = SignedDuration::from_secs(1) / i32::try_from(RATE).unwrap_or(1);
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

/// The table's rows: long stream, short (empty) stream, long / short.
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
    let s = format!("audit-history {LONG} vs {SHORT} segments");
    let (long, short, empty) = (&v["long"], &v["short"], &v["empty"]);
    let f = |x: &Value, d: usize| x.as_f64().map_or("-".into(), |x| format!("{x:.d$}"));
    for (figure, key, ratio, digits) in [
        (
            "time to ready (s)",
            "seconds_to_ready",
            "ready_ratio_to_short",
            2,
        ),
        (
            "peak RSS at start (MiB)",
            "peak_rss_mib",
            "peak_rss_ratio_to_short",
            1,
        ),
        ("segments read at open", "segments_read_at_open", "", 0),
    ] {
        row(
            &s,
            &format!("{figure}: long / short (empty)"),
            f(&long[key], digits),
            format!("{} ({})", f(&short[key], digits), f(&empty[key], digits)),
            f(&v[ratio], 2),
        );
    }
}
