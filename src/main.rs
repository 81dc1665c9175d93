use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use keymint::runtime::options::{LogFormat, RunOptions};
use tracing_subscriber::EnvFilter;

/// keymint: API keys as Kubernetes custom resources.
#[derive(Parser)]
#[command(name = "keymint", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (ApiKey, ProjectGrant) as YAML.
    Crd {
        /// Only this one.
        name: Option<CrdName>,
    },
    /// Run the controller against the cluster in KUBECONFIG (or in-cluster).
    Run(RunOptions),
    /// Read, export and verify the audit stream.
    Audit(keymint::audit::cli::AuditArgs),
    #[command(flatten)]
    People(keymint::people::PeopleCommand),
    /// Verify keys for gateways (forward-auth, Envoy ext_authz, JSON) from an
    /// in-memory index of the ApiKeys' key hashes.
    Verifier(keymint::verify::options::VerifierOptions),
}

/// The CRDs `keymint crd` prints, by plural name.
#[derive(Clone, Copy, ValueEnum)]
enum CrdName {
    Apikeys,
    Projectgrants,
}

/// The YAML of one CRD, or of both as one stream (what `kubectl apply`
/// installs in one go).
fn crd_yaml(name: Option<CrdName>) -> Result<String, serde_norway::Error> {
    Ok(match name {
        Some(CrdName::Apikeys) => keymint::apikey::crd::yaml()?,
        Some(CrdName::Projectgrants) => keymint::grant::crd::yaml()?,
        None => format!(
            "{}---\n{}",
            keymint::apikey::crd::yaml()?,
            keymint::grant::crd::yaml()?
        ),
    })
}

fn main() -> ExitCode {
    tune_malloc();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(cli(parse())),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc malloc tuned for a process that mostly waits on the API server,
/// before the runtime's threads exist. Each setting yields to its
/// environment variable (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`).
///
/// - At most two arenas (the default is eight per core): after a burst more
///   arenas only hold more freed memory (peak RSS while minting 10,000 keys:
///   75 -> 59 MiB in the benchmark).
/// - Blocks of 128 KiB and more always mapped on their own. glibc otherwise
///   raises that threshold each time such a block is freed, and then puts
///   the watch's list pages and large responses in the heap among the
///   cache's small long-lived allocations, where they leave holes no trim
///   can return (RSS at rest with 10,000 keys: 27.1 -> 25.2 MiB).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (variable, parameter, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 128 * 1024),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt only changes allocator tuning; no other thread
            // exists yet.
            unsafe {
                libc::mallopt(parameter, value);
            }
        }
    }
}

/// The command line; as `kubectl-keymint` (a kubectl plugin) the usage
/// says `kubectl keymint`.
fn parse() -> Cli {
    let mut command = Cli::command();
    if keymint::people::invoked_as_plugin(std::env::args_os().next().as_deref()) {
        command = command.bin_name("kubectl keymint");
    }
    Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

async fn cli(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd { name } => match crd_yaml(name) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Audit(args) => match keymint::audit::cli::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::People(command) => match keymint::people::run(command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // The API server's messages quote what tenants wrote.
                let said = e.to_string();
                eprintln!("error: {}", keymint::people::terminal::escape(&said));
                ExitCode::FAILURE
            }
        },
        Command::Verifier(options) => {
            init_logging(options.log_format);
            match keymint::verify::run::run(options).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(options) => {
            init_logging(options.log_format);
            match keymint::runtime::run::run(options).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs go to stderr; the level comes from `RUST_LOG` (default `info`).
/// Colours only on a terminal: log files and `kubectl logs` get plain text.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
