use clap::Parser;
use mlkube_server::config::Args;
use mlkube_server::{run, telemetry};

const EX_USAGE: i32 = 64;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    telemetry::init(&args.log_format);
    let settings = match args.resolve(|k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            std::process::exit(EX_USAGE);
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), settings = ?settings, "starting mlkube-server");
    if let Err(err) = run(settings).await {
        let chain: Vec<String> = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect();
        tracing::error!(error = %chain.join(": "), "mlkube-server failed");
        std::process::exit(1);
    }
}
