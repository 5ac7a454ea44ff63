//! Monitoring flags (flattened into the server's `Args`) and the settings they resolve to.

use std::time::Duration;

use super::webhook::WebhookSettings;
use super::windows::parse_retention;

/// Model quality monitoring.
#[derive(Debug, Clone, clap::Args)]
pub struct MonitoringArgs {
    /// Seconds between scheduled evaluations of all quality monitors (retention pruning runs on the
    /// same schedule).
    #[arg(long, env = "MLKUBE_MONITORING_EVALUATION_INTERVAL", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..), value_name = "SECS")]
    pub monitoring_evaluation_interval: u64,
    /// Delete logged predictions and ground truth older than this (by their timestamps), e.g.
    /// 12h, 30d; 0 keeps them forever.
    #[arg(
        long,
        env = "MLKUBE_MONITORING_RETENTION_AGE",
        default_value = "30d",
        value_name = "AGE"
    )]
    pub monitoring_retention_age: String,
    /// Keep at most this many predictions (and as many labels), deleting the oldest first; 0 for
    /// no limit.
    #[arg(
        long,
        env = "MLKUBE_MONITORING_RETENTION_ROWS",
        default_value_t = 10_000_000,
        value_name = "N"
    )]
    pub monitoring_retention_rows: u64,
    /// Allow webhook URLs on loopback, private and link-local addresses (for receivers inside the
    /// cluster).
    #[arg(long, env = "MLKUBE_MONITORING_ALLOW_PRIVATE_WEBHOOKS")]
    pub monitoring_allow_private_webhooks: bool,
    /// Most predictions or labels one log-batch request may carry.
    #[arg(long, env = "MLKUBE_MONITORING_MAX_BATCH_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000), value_name = "N")]
    pub monitoring_max_batch_size: u64,
    /// Most bytes of JSON one prediction's inputs and outputs may take together.
    #[arg(long, env = "MLKUBE_MONITORING_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024,
          value_parser = clap::value_parser!(u64).range(64..), value_name = "BYTES")]
    pub monitoring_max_payload_bytes: u64,
    /// How many of a model version's first predictions make its drift reference when none was
    /// uploaded.
    #[arg(long, env = "MLKUBE_MONITORING_REFERENCE_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000), value_name = "N")]
    pub monitoring_reference_size: u64,
}

/// Monitoring settings with every default resolved.
#[derive(Debug, Clone)]
pub struct MonitoringSettings {
    pub evaluation_interval: Duration,
    /// Milliseconds; `None` keeps data forever.
    pub retention_age_ms: Option<i64>,
    pub retention_rows: Option<u64>,
    pub max_batch_size: usize,
    pub max_payload_bytes: usize,
    pub reference_size: usize,
    pub webhook: WebhookSettings,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        Self {
            evaluation_interval: Duration::from_secs(60),
            retention_age_ms: Some(30 * super::windows::DAY_MS),
            retention_rows: Some(10_000_000),
            max_batch_size: 1000,
            max_payload_bytes: 256 * 1024,
            reference_size: 1000,
            webhook: WebhookSettings::default(),
        }
    }
}

impl MonitoringArgs {
    pub fn resolve(self) -> Result<MonitoringSettings, String> {
        let MonitoringArgs {
            monitoring_evaluation_interval,
            monitoring_retention_age,
            monitoring_retention_rows,
            monitoring_allow_private_webhooks,
            monitoring_max_batch_size,
            monitoring_max_payload_bytes,
            monitoring_reference_size,
        } = self;
        let retention_age_ms = parse_retention(&monitoring_retention_age)
            .map_err(|e| format!("--monitoring-retention-age: {e}"))?;
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Ok(MonitoringSettings {
            evaluation_interval: Duration::from_secs(monitoring_evaluation_interval),
            retention_age_ms,
            retention_rows: (monitoring_retention_rows > 0).then_some(monitoring_retention_rows),
            max_batch_size: size(monitoring_max_batch_size),
            max_payload_bytes: size(monitoring_max_payload_bytes),
            reference_size: size(monitoring_reference_size),
            webhook: WebhookSettings {
                allow_private: monitoring_allow_private_webhooks,
                ..WebhookSettings::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        monitoring: MonitoringArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let d = Cli::try_parse_from(["x"]).unwrap().monitoring.resolve().unwrap();
        assert_eq!(d.evaluation_interval, Duration::from_secs(60));
        assert_eq!(d.retention_age_ms, Some(30 * 86_400_000));
        assert_eq!(d.retention_rows, Some(10_000_000));
        assert!(!d.webhook.allow_private);
        let s = Cli::try_parse_from([
            "x",
            "--monitoring-evaluation-interval",
            "5",
            "--monitoring-retention-age",
            "0",
            "--monitoring-retention-rows",
            "0",
            "--monitoring-allow-private-webhooks",
            "--monitoring-max-batch-size",
            "10",
        ])
        .unwrap()
        .monitoring
        .resolve()
        .unwrap();
        assert_eq!(s.evaluation_interval, Duration::from_secs(5));
        assert_eq!((s.retention_age_ms, s.retention_rows), (None, None));
        assert!(s.webhook.allow_private);
        assert_eq!(s.max_batch_size, 10);
        let bad_age = Cli::try_parse_from(["x", "--monitoring-retention-age", "forever"]).unwrap();
        assert!(bad_age.monitoring.resolve().is_err());
        assert!(Cli::try_parse_from(["x", "--monitoring-evaluation-interval", "0"]).is_err());
    }
}
