//! mlkube-operator: parse flags, start logging, run the controllers.

use clap::Parser;
use mlkube_operator::config::Args;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    mlkube_operator::telemetry::init(&args.log, args.log_format);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "mlkube-operator starting");
    match mlkube_operator::run::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = ?err, "mlkube-operator stopped: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
