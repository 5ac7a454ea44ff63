//! Command-line flags of `mlkube-operator`; every flag also reads an `MLKUBE_*` variable.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// mlkube-operator: reconciles TrackingServer and ModelDeployment resources. Uses the in-cluster
/// service account, or the current kubeconfig context outside a cluster.
#[derive(Debug, Parser)]
#[command(name = "mlkube-operator", version)]
pub struct Args {
    /// Address of `/metrics`.
    #[arg(long, env = "MLKUBE_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    pub metrics_listen: SocketAddr,
    /// Address of `/healthz` and `/readyz`.
    #[arg(long, env = "MLKUBE_HEALTH_LISTEN", default_value = "0.0.0.0:8081")]
    pub health_listen: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "MLKUBE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image of mlkube-server when a TrackingServer names none.
    #[arg(long, env = "MLKUBE_SERVER_IMAGE")]
    pub server_image: Option<String>,
    /// Image of mlkube-sidecar when a ModelDeployment names none.
    #[arg(long, env = "MLKUBE_SIDECAR_IMAGE")]
    pub sidecar_image: Option<String>,
    /// Image of mlkube-node-sampler when a TrackingServer names none.
    #[arg(long, env = "MLKUBE_NODE_SAMPLER_IMAGE")]
    pub node_sampler_image: Option<String>,
    /// Image of the default model server (MLflow's scoring server).
    #[arg(long, env = "MLKUBE_MODEL_SERVER_IMAGE")]
    pub model_server_image: Option<String>,
    /// Base URL of the alert runbooks.
    #[arg(long, env = "MLKUBE_RUNBOOK_BASE_URL")]
    pub runbook_base_url: Option<String>,
    /// Seconds between registry lookups of a healthy ModelDeployment (how fast an alias move is
    /// picked up).
    #[arg(long, env = "MLKUBE_RESOLVE_INTERVAL", default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=86400))]
    pub resolve_interval: u64,
    /// Timeout of one registry request, in seconds.
    #[arg(long, env = "MLKUBE_REGISTRY_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub registry_timeout: u64,
    /// URL of the Prometheus server that scrapes the model sidecars, e.g.
    /// `http://prometheus-operated.monitoring.svc:9090`: canary analyses read the serving metrics
    /// from it. Without it every canary analysis is inconclusive, so no canary is promoted.
    #[arg(long, env = "MLKUBE_PROMETHEUS_URL", value_parser = http_url)]
    pub prometheus_url: Option<String>,
    /// Elect a leader through a `coordination.k8s.io` Lease, so several replicas can run and only
    /// one reconciles. Without it, run exactly one replica.
    #[arg(long, env = "MLKUBE_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the Lease (default: `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "MLKUBE_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Log filter (`RUST_LOG` syntax).
    #[arg(long, env = "MLKUBE_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, env = "MLKUBE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn http_url(text: &str) -> Result<String, String> {
    if (text.starts_with("http://") || text.starts_with("https://")) && !text.contains(char::is_whitespace) {
        Ok(text.trim_end_matches('/').to_owned())
    } else {
        Err(format!("{text:?} is not an http:// or https:// URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_configuration() {
        let args = Args::try_parse_from(["mlkube-operator"]).unwrap();
        assert_eq!(args.metrics_listen.port(), 8080);
        assert_eq!(args.health_listen.port(), 8081);
        assert_eq!(args.resolve_interval, 60);
        assert!(args.namespace.is_none());
        assert!(!args.leader_election);
        let args =
            Args::try_parse_from(["mlkube-operator", "--leader-election", "--namespace", "ml"]).unwrap();
        assert!(args.leader_election);
        assert_eq!(args.namespace.as_deref(), Some("ml"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Args::try_parse_from(["mlkube-operator", "--resolve-interval", "1"]).is_err());
        assert!(Args::try_parse_from(["mlkube-operator", "--metrics-listen", "nope"]).is_err());
        assert!(Args::try_parse_from(["mlkube-operator", "--prometheus-url", "prometheus:9090"]).is_err());
        let args =
            Args::try_parse_from(["mlkube-operator", "--prometheus-url", "http://prometheus:9090/"]).unwrap();
        assert_eq!(args.prometheus_url.as_deref(), Some("http://prometheus:9090"));
    }
}
