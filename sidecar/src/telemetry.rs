//! Logging setup shared by the binaries of this crate: `tracing` with a filter from `MLKUBE_LOG` (or
//! `RUST_LOG`) and text or JSON lines on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors in a cluster.
    Json,
}

const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber. A second call (tests) keeps the first subscriber.
pub fn init(format: LogFormat) {
    let filter = std::env::var("MLKUBE_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// An error and its causes on one line, `err: cause: cause…`, for the `error` field of a log line.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_joins_causes() {
        let outer = crate::proxy::Error::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: std::io::Error::other("refused"),
        };
        assert_eq!(error_chain(&outer), "cannot listen on 127.0.0.1:1: refused");
    }
}
