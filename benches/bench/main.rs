//! `make bench` / `make bench-quick`: how fast and how lean keymint is,
//! against the API server's own floor, on a local control plane started for
//! this run (see BENCHMARKS.md for what each figure means and a recorded run).
//!
//! Not a test: `cargo test --all-targets` runs this binary without `--bench`,
//! and it then does nothing. `cargo bench --bench bench -- [--quick|--full]
//! [--only a,b] [--profile]` runs it; the same binary, started with
//! `KEYMINT_BENCH_ROLE=floor`, is the floor client (see `floor.rs`).
//! `KEYMINT_BENCH_BIN=/path/to/keymint` measures another build of keymint
//! (a candidate change, or the size build that `make bench` measures too)
//! against the same floor, and `KEYMINT_BENCH_RESULTS=path` writes its
//! results there; `--keymint-args "..."` adds flags to every `keymint run`.

mod cluster;
mod floor;
mod history;
mod observe;
mod procs;
mod report;
mod scenarios;
mod verify;

use std::time::Instant;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BoxError>;

/// What one run covers.
#[derive(Clone, Debug)]
pub struct Plan {
    pub mode: &'static str,
    /// Mint scenarios: numbers of ApiKeys.
    pub mint_sizes: Vec<usize>,
    /// Single keys into a quiet system.
    pub steady_repetitions: usize,
    /// Keys expiring at one instant (lag).
    pub expiry_burst: usize,
    /// Keys expiring at one instant (drain rate); 0 skips it.
    pub expiry_wave: usize,
    /// Keys taken through a whole lifecycle to count writes.
    pub lifecycle_keys: usize,
    /// Unrelated 1 MiB Secrets for the memory scenario; 0 skips it.
    pub big_secrets: usize,
    /// Keys minted next to the big Secrets.
    pub big_secrets_keys: usize,
    /// Concurrent creates for one (project, owner).
    pub quota_creates: usize,
    /// The burst scenario: ApiKeys per round, rounds of each (floor and
    /// keymint alternating); 0 keys skips it.
    pub burst_keys: usize,
    pub burst_rounds: usize,
    /// Concurrent creates by the bench client ("as fast as it can").
    pub apply_concurrency: usize,
    /// Keys in flight in keymint (`--concurrency`) and in the floor alike.
    pub concurrency: usize,
    /// Run only these scenarios (all when empty).
    pub only: Vec<String>,
    /// Record perf profiles of keymint and the API server during mint.
    pub profile: bool,
    /// Mint with keymint alone (no floor, so no ratio): memory profiles
    /// at 100,000 keys in half the time.
    pub mint_without_floor: bool,
    /// Extra flags for every `keymint run` (experiments, e.g.
    /// `--keymint-args "--audit-segment-bytes 131072"`).
    pub keymint_args: Vec<String>,
    /// ApiKeys indexed by the verifier in the `verify` scenario; 0 skips it.
    pub verify_keys: usize,
    /// ApiKeys indexed by the verifier in the `hostile` scenario; 0 skips it.
    pub hostile_keys: usize,
    /// Seconds of each load-generator run in the `verify` scenario.
    pub load_seconds: u64,
    /// Install the chart's finalizer policy for keymint's namespaces, as
    /// the chart does by default (off: an older cluster, or the chart's
    /// `finalizerPolicy.enabled=false`).
    pub finalizer_policy: bool,
}

impl Plan {
    fn quick() -> Plan {
        Plan {
            mode: "quick",
            mint_sizes: vec![200],
            steady_repetitions: 10,
            expiry_burst: 100,
            expiry_wave: 0,
            lifecycle_keys: 20,
            big_secrets: 0,
            big_secrets_keys: 0,
            quota_creates: 100,
            burst_keys: 200,
            burst_rounds: 3,
            apply_concurrency: 32,
            concurrency: procs::CONCURRENCY,
            only: Vec::new(),
            profile: false,
            mint_without_floor: false,
            keymint_args: Vec::new(),
            verify_keys: 1_000,
            hostile_keys: 1_000,
            load_seconds: 3,
            finalizer_policy: true,
        }
    }

    fn full() -> Plan {
        Plan {
            mode: "full",
            mint_sizes: vec![1_000, 10_000],
            steady_repetitions: 100,
            expiry_burst: 100,
            expiry_wave: 10_000,
            lifecycle_keys: 100,
            big_secrets: 1_000,
            big_secrets_keys: 1_000,
            quota_creates: 100,
            burst_keys: 1_000,
            burst_rounds: 3,
            apply_concurrency: 32,
            concurrency: procs::CONCURRENCY,
            only: Vec::new(),
            profile: false,
            mint_without_floor: false,
            keymint_args: Vec::new(),
            verify_keys: 100_000,
            hostile_keys: 10_000,
            load_seconds: 10,
            finalizer_policy: true,
        }
    }

    pub fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn main() -> std::process::ExitCode {
    match std::env::var(floor::ROLE_ENV).as_deref() {
        Ok("floor") => return floor::main(),
        Ok(verify::FLOOR_ROLE) => return verify::floor_main(),
        _ => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` passes nothing.
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "keymint benchmarks: run them with `make bench` or `make bench-quick` (skipped under cargo test)"
        );
        return std::process::ExitCode::SUCCESS;
    }
    let mut plan = if args.iter().any(|a| a == "--full") {
        Plan::full()
    } else {
        Plan::quick()
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--only" => {
                plan.only = iter
                    .next()
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
            }
            "--profile" => plan.profile = true,
            "--mint-without-floor" => plan.mint_without_floor = true,
            "--without-finalizer-policy" => plan.finalizer_policy = false,
            "--mint-sizes" => {
                plan.mint_sizes = iter
                    .next()
                    .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
                    .unwrap_or_default();
            }
            "--burst-keys" => {
                plan.burst_keys = iter.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            }
            "--verify-keys" => {
                plan.verify_keys = iter.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            }
            "--hostile-keys" => {
                plan.hostile_keys = iter.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            }
            "--keymint-args" => {
                let args = iter
                    .next()
                    .map(|s| s.split_whitespace().map(str::to_string));
                plan.keymint_args.extend(args.into_iter().flatten());
            }
            "--concurrency" => {
                plan.concurrency = iter.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            }
            _ => {}
        }
    }
    if plan.concurrency == 0 {
        eprintln!("bench: --concurrency takes a number of keys in flight, at least 1");
        return std::process::ExitCode::FAILURE;
    }
    if plan.concurrency != procs::CONCURRENCY {
        let flag = ["--concurrency".to_string(), plan.concurrency.to_string()];
        plan.keymint_args.extend(flag);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    match runtime.block_on(scenarios::run(plan)) {
        Ok(()) => {
            eprintln!("bench: done in {:.0?}", started.elapsed());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
