//! The server's Prometheus exporter (`--expose-prometheus`): request metrics named and labelled as
//! `mlflow server --expose-prometheus` names them (plus a bounded `endpoint` label: the route
//! template, `unmatched` otherwise), and usage statistics (`--enable-statistics`) refreshed by a
//! background task — a scrape only encodes the last snapshot, it never queries the database.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::{Statistics, Store};
use crate::version::MLFLOW_COMPAT_VERSION;

/// Metric names (a public interface: dashboards and alerts use them).
pub mod names {
    pub const REQUEST_DURATION: &str = "mlflow_http_request_duration_seconds";
    /// Exposed as `mlflow_http_request_total` (the client library appends `_total`).
    pub const REQUESTS: &str = "mlflow_http_request";
    /// Exposed as `mlflow_http_request_exceptions_total`.
    pub const EXCEPTIONS: &str = "mlflow_http_request_exceptions";
    pub const EXPORTER_INFO: &str = "mlflow_exporter_info";
    pub const EXPERIMENTS: &str = "mlflow_experiment_count";
    pub const RUNS: &str = "mlflow_run_count";
    pub const REGISTERED_MODELS: &str = "mlflow_registered_model_count";
    pub const MODEL_VERSIONS: &str = "mlflow_model_version_count";
    pub const USERS: &str = "mlflow_user_count";
    pub const DATASETS: &str = "mlflow_dataset_count";
    pub const STATISTICS_AGE: &str = "mlkube_statistics_last_update_timestamp_seconds";
}

/// prometheus_client's (Python) default buckets, as upstream's histogram uses.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Paths upstream leaves out of request metrics.
const EXCLUDED_PATHS: [&str; 3] = ["/health", "/version", "/metrics"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    method: String,
    mlflow_version: &'static str,
    status: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    mlflow_version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExporterLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
    mlflow_version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
    mlflow_version: &'static str,
}

/// Every metric the server exports, and the registry that encodes them.
pub struct ServerMetrics {
    registry: Registry,
    durations: Family<DurationLabels, Histogram>,
    requests: Family<RequestLabels, Counter>,
    exceptions: Family<RequestLabels, Counter>,
    experiments: Family<VersionLabel, Gauge>,
    runs: Family<StatusLabels, Gauge>,
    registered_models: Family<VersionLabel, Gauge>,
    model_versions: Family<StageLabels, Gauge>,
    users: Family<VersionLabel, Gauge>,
    datasets: Family<VersionLabel, Gauge>,
    statistics_updated: Gauge,
    /// The model-quality series (`mlflow_model_quality*`), set by monitor evaluations.
    pub quality: crate::quality::exporter::QualityMetrics,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let durations = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS.iter().copied())
        });
        registry.register(
            names::REQUEST_DURATION,
            "HTTP request duration in seconds",
            durations.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(names::REQUESTS, "Total number of HTTP requests", requests.clone());
        let exceptions = Family::<RequestLabels, Counter>::default();
        registry.register(
            names::EXCEPTIONS,
            "Total number of HTTP requests which failed with a server error",
            exceptions.clone(),
        );
        let info = Family::<ExporterLabel, Gauge>::default();
        info.get_or_create(&ExporterLabel {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register(
            names::EXPORTER_INFO,
            "Information about the Prometheus exporter",
            info,
        );

        let experiments = Family::<VersionLabel, Gauge>::default();
        registry.register(names::EXPERIMENTS, "Number of experiments", experiments.clone());
        let runs = Family::<StatusLabels, Gauge>::default();
        registry.register(names::RUNS, "Number of runs by status", runs.clone());
        let registered_models = Family::<VersionLabel, Gauge>::default();
        registry.register(
            names::REGISTERED_MODELS,
            "Number of registered models",
            registered_models.clone(),
        );
        let model_versions = Family::<StageLabels, Gauge>::default();
        registry.register(
            names::MODEL_VERSIONS,
            "Number of model versions by stage",
            model_versions.clone(),
        );
        let users = Family::<VersionLabel, Gauge>::default();
        registry.register(names::USERS, "Number of users", users.clone());
        let datasets = Family::<VersionLabel, Gauge>::default();
        registry.register(
            names::DATASETS,
            "Number of distinct datasets logged as run inputs",
            datasets.clone(),
        );
        let statistics_updated = Gauge::default();
        registry.register(
            names::STATISTICS_AGE,
            "Unix time of the last successful statistics refresh",
            statistics_updated.clone(),
        );
        let quality = crate::quality::exporter::QualityMetrics::register(&mut registry);
        Self {
            registry,
            durations,
            requests,
            exceptions,
            experiments,
            runs,
            registered_models,
            model_versions,
            users,
            datasets,
            statistics_updated,
            quality,
        }
    }

    fn observe(&self, method: &str, endpoint: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        self.durations
            .get_or_create(&DurationLabels {
                method: method.to_owned(),
                mlflow_version: MLFLOW_COMPAT_VERSION,
                status: status.clone(),
                endpoint: endpoint.to_owned(),
            })
            .observe(seconds);
        let labels = RequestLabels {
            method: method.to_owned(),
            status,
            endpoint: endpoint.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        if status_is_exception(&labels.status) {
            self.exceptions.get_or_create(&labels).inc();
        }
    }

    /// Replace the statistics snapshot.
    pub fn set_statistics(&self, stats: &Statistics) {
        let v = MLFLOW_COMPAT_VERSION;
        self.experiments
            .get_or_create(&VersionLabel { mlflow_version: v })
            .set(stats.experiments);
        self.registered_models
            .get_or_create(&VersionLabel { mlflow_version: v })
            .set(stats.registered_models);
        self.users
            .get_or_create(&VersionLabel { mlflow_version: v })
            .set(stats.users);
        self.datasets
            .get_or_create(&VersionLabel { mlflow_version: v })
            .set(stats.datasets);
        self.runs.clear();
        for (status, n) in &stats.runs_by_status {
            self.runs
                .get_or_create(&StatusLabels {
                    status: status.clone(),
                    mlflow_version: v,
                })
                .set(*n);
        }
        self.model_versions.clear();
        for (stage, n) in &stats.model_versions_by_stage {
            self.model_versions
                .get_or_create(&StageLabels {
                    stage: stage.clone(),
                    mlflow_version: v,
                })
                .set(*n);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.statistics_updated
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    /// Drop the statistics series (another replica exports them now); the refresh timestamp
    /// keeps its last value, which dashboards' `max()` passes over.
    pub fn clear_statistics(&self) {
        self.experiments.clear();
        self.registered_models.clear();
        self.users.clear();
        self.datasets.clear();
        self.runs.clear();
        self.model_versions.clear();
    }

    /// The exposition in Prometheus' classic text format (what upstream serves and promtool
    /// checks).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(openmetrics_to_prometheus_text(&out))
    }
}

/// The client library writes OpenMetrics: counter families are named without `_total`, and the
/// text ends in `# EOF`. Prometheus' classic format names the family like its sample.
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn status_is_exception(status: &str) -> bool {
    status.starts_with('5')
}

/// Middleware recording one request's duration and outcome under its route template.
pub async fn track(State(metrics): State<Arc<ServerMetrics>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if EXCLUDED_PATHS.contains(&path.as_str()) {
        return next.run(req).await;
    }
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics.observe(
        &method,
        &endpoint,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// `GET /metrics`.
pub async fn serve(State(metrics): State<Arc<ServerMetrics>>) -> Response {
    match metrics.encode() {
        Ok(body) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed",
        )
            .into_response(),
    }
}

/// Refresh the statistics gauges once per `schedule` interval across the replicas on one database:
/// the replica that takes the turn counts and exports them, the others drop theirs, so every
/// dashboard `max()` reads the newest counts and the database is counted once per interval.
pub fn spawn_statistics(
    store: Arc<dyn Store>,
    auth: Option<Arc<crate::auth::Auth>>,
    metrics: Arc<ServerMetrics>,
    schedule: crate::store::schedule::Schedule,
) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(schedule.poll_period());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut exporting = false;
        loop {
            ticker.tick().await;
            match schedule.claim(crate::store::now_ms()).await {
                Ok(true) => {
                    refresh_statistics(store.as_ref(), auth.as_deref(), &metrics).await;
                    exporting = true;
                }
                Ok(false) if exporting => {
                    // Another replica took a turn since: its numbers are the newer ones.
                    match schedule.last_holder().await {
                        Ok(Some(holder)) if holder != schedule.replica() => {
                            metrics.clear_statistics();
                            exporting = false;
                        }
                        Ok(_) => {}
                        Err(err) => tracing::debug!(error = %err, "statistics schedule unavailable"),
                    }
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "statistics schedule unavailable"),
            }
        }
    });
}

/// Count everything once. With basic auth on, `mlflow_user_count` is the number of accounts;
/// otherwise the number of distinct users that created runs.
async fn refresh_statistics(store: &dyn Store, auth: Option<&crate::auth::Auth>, metrics: &ServerMetrics) {
    let started = Instant::now();
    match store.statistics().await {
        Ok(mut stats) => {
            if let Some(auth) = auth {
                match auth.user_count().await {
                    Ok(users) => stats.users = users,
                    Err(err) => tracing::warn!(error = %err, "counting auth users failed"),
                }
            }
            metrics.set_statistics(&stats);
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "statistics refreshed"
            );
        }
        Err(err) => tracing::warn!(error = %err, reason = err.reason(), "statistics refresh failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_match_upstream() {
        let m = ServerMetrics::new();
        m.observe("GET", "/api/2.0/mlflow/runs/get", 200, 0.003);
        m.observe("POST", "/api/2.0/mlflow/runs/log-batch", 500, 0.2);
        m.set_statistics(&Statistics {
            experiments: 3,
            runs_by_status: vec![("FINISHED".into(), 2)],
            registered_models: 1,
            model_versions_by_stage: vec![("Production".into(), 1)],
            users: 1,
            datasets: 0,
        });
        let text = m.encode().unwrap();
        for needle in [
            "# TYPE mlflow_http_request_duration_seconds histogram",
            "mlflow_http_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",mlflow_version=\"2.17.2\",status=\"200\",endpoint=\"/api/2.0/mlflow/runs/get\"} 1",
            "# TYPE mlflow_http_request_total counter",
            "mlflow_http_request_total{method=\"POST\",status=\"500\",endpoint=\"/api/2.0/mlflow/runs/log-batch\"} 1",
            "mlflow_http_request_exceptions_total{method=\"POST\",status=\"500\"",
            "mlflow_exporter_info{version=",
            "mlflow_experiment_count{mlflow_version=\"2.17.2\"} 3",
            "mlflow_run_count{status=\"FINISHED\",mlflow_version=\"2.17.2\"} 2",
            "mlflow_model_version_count{stage=\"Production\",mlflow_version=\"2.17.2\"} 1",
            "mlflow_registered_model_count{mlflow_version=\"2.17.2\"} 1",
            "mlflow_user_count{mlflow_version=\"2.17.2\"} 1",
            "mlflow_dataset_count{mlflow_version=\"2.17.2\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("mlflow_http_request_exceptions_total{method=\"GET\""));
        assert!(!text.contains("# EOF"));
    }
}
