//! `mlkube-node-sampler`: parse the configuration, start logging, sample the node until SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use mlkube_node_sampler::{self as node, Args};
use mlkube_sidecar::telemetry::{self, LogFormat};

/// `EX_USAGE` from sysexits.h: the command line or environment was wrong.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => err.exit(),
        Err(err) => {
            telemetry::init(LogFormat::Text);
            let rendered = err.to_string();
            let line = rendered.lines().next().unwrap_or_default();
            tracing::error!("invalid configuration: {}", line.trim_start_matches("error: "));
            return ExitCode::from(EX_USAGE);
        }
    };
    telemetry::init(args.log_format);
    let config = match args.validate() {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("invalid configuration: {err}");
            return ExitCode::from(EX_USAGE);
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        git_sha = option_env!("MLKUBE_GIT_SHA").unwrap_or("unknown"),
        config = ?config,
        "starting mlkube-node-sampler"
    );
    // One thread for sampling, scrapes, the pod watch and the run monitors; file reads and NVML
    // calls go to a small blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(node::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let chain = telemetry::error_chain(&err);
            tracing::error!(error = %chain, reason = err.reason(), "mlkube-node-sampler failed");
            ExitCode::FAILURE
        }
    }
}
