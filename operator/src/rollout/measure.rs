//! Reading a canary's [`Snapshot`]: the serving numbers from Prometheus's HTTP API
//! (`/api/v1/query`) and quality from the tracking server's `quality/get`, both over the
//! registry's HTTP client. Whatever cannot be read is recorded in the snapshot (an error or a
//! missing number), so the analysis sees it as inconclusive; reading never fails a reconcile.

use std::sync::Arc;

use serde::Deserialize;

use super::analysis::{QualityReading, Snapshot};
use super::{QualityQuery, SnapshotQuery};
use crate::registry::{Endpoint, HttpRegistry, RegistryError};

/// Reads canary snapshots. The controller holds a `dyn MeasurementSource`, so tests can fake it.
#[async_trait::async_trait]
pub trait MeasurementSource: Send + Sync {
    /// The numbers of `query`; `tracking` is the deployment's tracking server.
    async fn snapshot(&self, tracking: &Endpoint<'_>, query: &SnapshotQuery) -> Snapshot;
}

/// No Prometheus configured: serving gates are inconclusive, so no canary is ever promoted.
pub struct NotConfigured;

#[async_trait::async_trait]
impl MeasurementSource for NotConfigured {
    async fn snapshot(&self, _tracking: &Endpoint<'_>, _query: &SnapshotQuery) -> Snapshot {
        Snapshot {
            prometheus_error: Some("the operator has no --prometheus-url".to_owned()),
            quality_error: Some("the operator has no --prometheus-url".to_owned()),
            ..Default::default()
        }
    }
}

/// Prometheus and the quality API over HTTP.
pub struct HttpMeasurements {
    http: Arc<HttpRegistry>,
    prometheus_url: String,
}

impl HttpMeasurements {
    pub fn new(http: Arc<HttpRegistry>, prometheus_url: impl Into<String>) -> Self {
        Self {
            http,
            prometheus_url: prometheus_url.into(),
        }
    }

    /// One instant query: the first sample's value (`None` for an empty vector), NaN kept (the
    /// analysis treats it as missing).
    pub async fn query(&self, promql: &str) -> Result<Option<f64>, String> {
        let path = format!(
            "/api/v1/query?query={}",
            percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC)
        );
        let answer: PromAnswer = self
            .http
            .send(
                &Endpoint::new(&self.prometheus_url),
                http::Method::GET,
                path,
                None,
                "a Prometheus query",
                false,
            )
            .await
            .map_err(|e| prometheus_error(&self.prometheus_url, &e))?;
        if answer.status != "success" {
            return Err(format!(
                "Prometheus at {} answered {}: {}",
                self.prometheus_url,
                answer.status,
                answer.error.unwrap_or_default()
            ));
        }
        let sample = answer.data.and_then(|d| d.result.into_iter().next());
        Ok(sample.and_then(|s| s.value.1.parse::<f64>().ok()))
    }

    async fn quality(
        &self,
        tracking: &Endpoint<'_>,
        q: &QualityQuery,
        version: &str,
    ) -> Result<QualityReading, String> {
        let metric = q.metric.clone();
        let answer: QualityAnswer = self
            .http
            .send(
                tracking,
                http::Method::GET,
                q.path(version),
                None,
                "quality/get",
                false,
            )
            .await
            .map_err(|e| format!("quality of version {version}: {e}"))?;
        Ok(QualityReading {
            value: answer.quality.metrics.get(&metric).copied(),
            labelled: answer.quality.evaluated,
        })
    }
}

fn prometheus_error(url: &str, e: &RegistryError) -> String {
    match e {
        RegistryError::Unreachable { source, .. } => {
            format!("Prometheus at {url} is unreachable ({source})")
        }
        RegistryError::Status { status, message, .. } => {
            format!("Prometheus at {url} answered {status}: {message}")
        }
        other => format!("Prometheus at {url}: {other}"),
    }
}

#[derive(Deserialize)]
struct PromAnswer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<PromData>,
}

#[derive(Deserialize)]
struct PromData {
    #[serde(default)]
    result: Vec<PromSample>,
}

#[derive(Deserialize)]
struct PromSample {
    value: (serde_json::Value, String),
}

#[derive(Deserialize)]
struct QualityAnswer {
    quality: QualityBody,
}

#[derive(Deserialize)]
struct QualityBody {
    #[serde(default)]
    evaluated: i64,
    #[serde(default)]
    metrics: std::collections::BTreeMap<String, f64>,
}

#[async_trait::async_trait]
impl MeasurementSource for HttpMeasurements {
    async fn snapshot(&self, tracking: &Endpoint<'_>, query: &SnapshotQuery) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let serving = async {
            let requests = self.query(&query.canary_requests).await?;
            let errors = self.query(&query.canary_errors).await?;
            let canary_p99 = self.query(&query.canary_p99).await?;
            let stable_p99 = self.query(&query.stable_p99).await?;
            Ok::<_, String>((requests, errors, canary_p99, stable_p99))
        };
        match serving.await {
            Ok((requests, errors, canary_p99, stable_p99)) => {
                snapshot.canary_requests = requests;
                snapshot.canary_errors = errors;
                snapshot.canary_p99 = canary_p99;
                snapshot.stable_p99 = stable_p99;
            }
            Err(err) => snapshot.prometheus_error = Some(err),
        }
        if let Some(q) = &query.quality {
            let both = async {
                let canary = self.quality(tracking, q, &q.canary_version).await?;
                let stable = self.quality(tracking, q, &q.stable_version).await?;
                Ok::<_, String>((canary, stable))
            };
            match both.await {
                Ok((canary, stable)) => {
                    snapshot.canary_quality = Some(canary);
                    snapshot.stable_quality = Some(stable);
                }
                Err(err) => snapshot.quality_error = Some(err),
            }
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    //! The real HTTP client against sources that fail: whatever it reads must become an error in
    //! the snapshot that the analysis holds on (inconclusive), quickly and without a panic.

    use std::time::{Duration, Instant};

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::model_deployment::QualityMetric;
    use crate::crd::rollout::{CanaryFailureAction, RolloutPhase, RolloutStatus, VerdictResult};
    use crate::rollout::analysis::{self, Step, analyze};
    use crate::rollout::{CanaryParams, QualityGateParams, StepParams, snapshot_query};

    /// The registry client's timeout in these tests: a source that never answers costs this much
    /// per read.
    const TIMEOUT: Duration = Duration::from_secs(1);

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    /// A canary with every gate on, the quality gate included, so that both sources are read.
    fn params() -> CanaryParams {
        let step = |weight| StepParams {
            weight,
            hold_ms: 300_000,
        };
        CanaryParams {
            steps: vec![step(10), step(50)],
            interval: "1m".into(),
            interval_ms: 60_000,
            failure_limit: 2,
            min_requests: 100.0,
            max_error_rate: Some(0.01),
            max_latency_p99_ratio: Some(1.2),
            quality: Some(QualityGateParams {
                metric: QualityMetric::Accuracy,
                window: "1h".into(),
                window_ms: 3_600_000,
                label_delay: "30m".into(),
                label_delay_ms: 1_800_000,
                min_labelled: 10,
                max_drop: 0.02,
                higher_is_better: true,
                task: "classification",
                score_field: None,
                positive_label: None,
            }),
            on_failure: CanaryFailureAction::Rollback,
            set_alias: None,
        }
    }

    /// Canary 4 at its first step for an hour (labels are due), no failed analysis yet.
    fn state() -> RolloutStatus {
        RolloutStatus {
            phase: RolloutPhase::Canary,
            stable_version: Some("3".into()),
            canary_version: Some("4".into()),
            current_weight: 10,
            current_step: Some(0),
            canary_started_at: Some(t("2026-03-01T12:00:00Z")),
            step_started_at: Some(t("2026-03-01T12:00:00Z")),
            ..Default::default()
        }
    }

    /// Reads a snapshot from `url` (as both Prometheus and the tracking server) and analyses it:
    /// the snapshot, the decision, and how long the reading took.
    async fn read_and_analyze(url: &str) -> (Snapshot, analysis::Next, Duration) {
        let params = params();
        let now = t("2026-03-01T13:00:00Z");
        let query = snapshot_query(&params, "ml", "churn", "3", "4", &now);
        let source = HttpMeasurements::new(Arc::new(HttpRegistry::new(TIMEOUT).unwrap()), url);
        let started = Instant::now();
        // Bounded: a hang fails the test instead of blocking it.
        let snapshot = tokio::time::timeout(
            Duration::from_secs(10),
            source.snapshot(&Endpoint::new(url), &query),
        )
        .await
        .expect("reading a snapshot from a failing source must end");
        let elapsed = started.elapsed();
        let next = analyze(&params, &state(), &snapshot, &now);
        (snapshot, next, elapsed)
    }

    fn assert_holds(snapshot: &Snapshot, next: &analysis::Next) {
        assert_eq!(next.step, Step::Hold, "{next:?}");
        assert_eq!(next.verdict.result, VerdictResult::Inconclusive, "{next:?}");
        assert!(
            next.verdict
                .message
                .contains("inconclusive: serving metrics unavailable: Prometheus at"),
            "{}",
            next.verdict.message
        );
        // No number was made up from the failure.
        assert_eq!(snapshot.canary_requests, None);
        assert_eq!(snapshot.canary_quality, None);
        assert_eq!(snapshot.stable_quality, None);
    }

    /// A listener on 127.0.0.1 that runs `answer` for every connection; its base URL.
    async fn listen<F, Fut>(answer: F) -> String
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream));
            }
        });
        url
    }

    #[tokio::test]
    async fn a_closed_port_is_inconclusive() {
        // Bind and drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let (snapshot, next, elapsed) = read_and_analyze(&url).await;
        assert_holds(&snapshot, &next);
        let err = snapshot.prometheus_error.as_deref().unwrap();
        assert!(
            err.starts_with(&format!("Prometheus at {url} is unreachable (")),
            "{err}"
        );
        let err = snapshot.quality_error.as_deref().unwrap();
        assert!(err.starts_with("quality of version 4: "), "{err}");
        assert!(err.contains("unreachable"), "{err}");
        assert!(elapsed < TIMEOUT, "a refused connection took {elapsed:?}");
    }

    #[tokio::test]
    async fn a_500_is_inconclusive() {
        let answers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = answers.clone();
        let app = axum::Router::new().fallback(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (snapshot, next, elapsed) = read_and_analyze(&url).await;
        assert_holds(&snapshot, &next);
        let err = snapshot.prometheus_error.as_deref().unwrap();
        assert!(
            err.starts_with(&format!("Prometheus at {url} answered 500")),
            "{err}"
        );
        let err = snapshot.quality_error.as_deref().unwrap();
        assert!(err.starts_with("quality of version 4: "), "{err}");
        assert!(err.contains("500"), "{err}");
        // The first failing read of each source ends that source's reading: one Prometheus query,
        // one quality/get.
        assert_eq!(answers.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(elapsed < TIMEOUT, "two 500s took {elapsed:?}");
    }

    #[tokio::test]
    async fn a_source_that_never_answers_is_inconclusive_after_the_timeout() {
        // Accepts the connection, reads nothing, answers nothing, keeps it open.
        let url = listen(|stream| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(stream);
        })
        .await;
        let (snapshot, next, elapsed) = read_and_analyze(&url).await;
        assert_holds(&snapshot, &next);
        let err = snapshot.prometheus_error.as_deref().unwrap();
        assert!(
            err.starts_with(&format!("Prometheus at {url} is unreachable (")),
            "{err}"
        );
        assert!(snapshot.quality_error.is_some());
        // One timeout per source.
        assert!(elapsed >= 2 * TIMEOUT, "{elapsed:?}");
        assert!(elapsed < 4 * TIMEOUT, "a stalled source took {elapsed:?}");
    }
}
