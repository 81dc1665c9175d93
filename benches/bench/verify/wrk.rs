//! wrk (Debian's package), one thread, as the load generator.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::round3;
use crate::Result;
use crate::cluster::REPO;

/// wrk's connections at peak load.
const PEAK_CONNECTIONS: usize = 64;
/// The pause of each paced connection between requests.
const PACED_GAP_MS: f64 = 1.0;
#[derive(Clone, Copy)]
pub(crate) enum Load {
    /// As fast as PEAK_CONNECTIONS connections go.
    Peak,
    /// About this many requests per second: connections that each pause
    /// PACED_GAP_MS between requests.
    Paced(f64),
}

pub(crate) struct Run {
    pub(crate) rps: f64,
    p50_ms: f64,
    pub(crate) p99_ms: f64,
    non_2xx: u64,
    connections: usize,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        json!({"requests_per_s": round3(self.rps), "p50_ms": round3(self.p50_ms),
               "p99_ms": round3(self.p99_ms), "non_2xx": self.non_2xx,
               "connections": self.connections})
    }
}

/// One wrk run (1 thread) against `url` with `header`.
pub(crate) fn wrk(url: &str, header: &str, load: Load, seconds: u64) -> Result<Run> {
    let (connections, script) = match load {
        Load::Peak => (PEAK_CONNECTIONS, None),
        Load::Paced(rate) => {
            let connections = ((rate * PACED_GAP_MS / 1000.0).ceil() as usize).max(1);
            (connections, Some(paced_script()?))
        }
    };
    let mut command = Command::new("wrk");
    command
        .args(["-t1", "--latency", "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "-H", header]);
    if let Some(script) = &script {
        command.arg("-s").arg(script);
    }
    let output = command.arg(url).output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("wrk failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    parse_wrk(&text, connections).ok_or_else(|| format!("unreadable wrk output:\n{text}").into())
}

/// A wrk script whose connections pause between requests.
fn paced_script() -> Result<PathBuf> {
    let path = Path::new(REPO).join("target/bench/paced.lua");
    std::fs::write(
        &path,
        format!("function delay() return {PACED_GAP_MS} end\n"),
    )?;
    Ok(path)
}

fn parse_wrk(text: &str, connections: usize) -> Option<Run> {
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let rps = value("Requests/sec:")?.parse().ok()?;
    let non_2xx = value("Non-2xx or 3xx responses:").map_or(Some(0), |v| v.parse().ok())?;
    Some(Run {
        rps,
        p50_ms: duration_ms(&value("50%")?)?,
        p99_ms: duration_ms(&value("99%")?)?,
        non_2xx,
        connections,
    })
}

/// wrk's `850.00us`, `1.40ms`, `1.02s`, `2.00m` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(number * factor)
}
