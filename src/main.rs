use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keymint::options::{LogFormat, RunOptions};
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
    /// Print the ApiKey CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller against the cluster in KUBECONFIG (or in-cluster).
    Run(RunOptions),
    /// Read, export and verify the audit stream.
    Audit(keymint::audit_cli::AuditArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match keymint::crd::yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Audit(args) => match keymint::audit_cli::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(options) => {
            init_logging(options.log_format);
            match keymint::run::run(options).await {
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
