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
