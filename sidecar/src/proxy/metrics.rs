//! The sidecar's Prometheus metrics. Names are a public interface (DESIGN.md, dashboards, alert rules):
//! they live here as constants and nowhere else.
//!
//! The sidecar serves exactly one model version, so `model_name` and `model_version` are registry-wide
//! labels fixed at startup and every series is a plain handle: the request path never looks a label
//! set up.

use std::borrow::Cow;

use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::config::ModelIdentity;

// Names as registered. prometheus-client appends `_total` to counters, so the exposed series of
// `PREDICTIONS` is `mlflow_predictions_total`.

/// Histogram of seconds from receiving a request to the last byte of its response.
pub const INFERENCE_LATENCY_SECONDS: &str = "mlflow_inference_latency_seconds";
/// Counter of requests answered (every status, errors included): `mlflow_predictions_total`.
pub const PREDICTIONS: &str = "mlflow_predictions";
/// Counter of failed requests by `reason`: `mlflow_prediction_errors_total`.
pub const PREDICTION_ERRORS: &str = "mlflow_prediction_errors";
/// Gauge of requests between arrival and the end of their response.
pub const INFERENCE_IN_FLIGHT: &str = "mlflow_inference_in_flight";
/// Histogram of request body bytes read from clients.
pub const REQUEST_SIZE_BYTES: &str = "mlflow_inference_request_size_bytes";
/// Histogram of response body bytes sent to clients.
pub const RESPONSE_SIZE_BYTES: &str = "mlflow_inference_response_size_bytes";
/// Gauge fixed at 1, carrying `run_id`.
pub const MODEL_INFO: &str = "mlflow_model_info";
/// Counter of captured request/response pairs queued for upload: `mlkube_capture_enqueued_total`.
pub const CAPTURE_ENQUEUED: &str = "mlkube_capture_enqueued";
/// Counter of captured pairs the tracking server accepted: `mlkube_capture_sent_total`.
pub const CAPTURE_SENT: &str = "mlkube_capture_sent";
/// Counter of captured pairs lost, by `reason` (`queue_full`, `send_failed`):
/// `mlkube_capture_dropped_total`.
pub const CAPTURE_DROPPED: &str = "mlkube_capture_dropped";
/// Counter of sampled requests not captured, by `reason` (`too_large`, `not_text`):
/// `mlkube_capture_skipped_total`.
pub const CAPTURE_SKIPPED: &str = "mlkube_capture_skipped";

pub const LABEL_MODEL_NAME: &str = "model_name";
pub const LABEL_MODEL_VERSION: &str = "model_version";
pub const LABEL_RUN_ID: &str = "run_id";
pub const LABEL_REASON: &str = "reason";

/// Exposition formats `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, what Prometheus asks for.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for everything else (`promtool check metrics`, curl).
    PrometheusText,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Latency buckets from 1 ms to 30 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Why a request counts in `mlflow_prediction_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    /// The model server answered 5xx.
    Upstream5xx,
    /// The model server could not be reached, or dropped the connection.
    UpstreamUnavailable,
    /// No response headers within `--request-timeout`.
    Timeout,
    /// The client's fault: a 4xx from the model server, a body over the limit, an unreadable body.
    Client4xx,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 4] = [
        ErrorReason::Upstream5xx,
        ErrorReason::UpstreamUnavailable,
        ErrorReason::Timeout,
        ErrorReason::Client4xx,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::Upstream5xx => "upstream_5xx",
            ErrorReason::UpstreamUnavailable => "upstream_unavailable",
            ErrorReason::Timeout => "timeout",
            ErrorReason::Client4xx => "client_4xx",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Every series the sidecar exports, with labels resolved.
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Registry,
    pub(crate) predictions: Counter,
    errors: [Counter; 4],
    pub(crate) in_flight: Gauge,
    pub(crate) latency: Histogram,
    pub(crate) request_size: Histogram,
    pub(crate) response_size: Histogram,
    pub(crate) capture: CaptureMetrics,
}

/// Payload capture counters.
#[derive(Clone, Debug)]
pub(crate) struct CaptureMetrics {
    pub enqueued: Counter,
    pub sent: Counter,
    pub dropped_queue_full: Counter,
    pub dropped_send_failed: Counter,
    pub skipped_too_large: Counter,
    pub skipped_not_text: Counter,
}

impl ProxyMetrics {
    /// Registers every series with the model's labels.
    pub fn new(model: &ModelIdentity) -> Self {
        let labels = [
            (Cow::Borrowed(LABEL_MODEL_NAME), Cow::Owned(model.name.clone())),
            (
                Cow::Borrowed(LABEL_MODEL_VERSION),
                Cow::Owned(model.version.clone()),
            ),
        ];
        let mut registry = Registry::with_labels(labels.into_iter());

        let predictions = Counter::default();
        registry.register(
            PREDICTIONS,
            "Requests answered, errors included",
            predictions.clone(),
        );

        let error_family = Family::<ReasonLabel, Counter>::default();
        let errors = ErrorReason::ALL.map(|reason| {
            error_family.get_or_create_owned(&ReasonLabel {
                reason: reason.as_str(),
            })
        });
        registry.register(
            PREDICTION_ERRORS,
            "Failed requests by reason (upstream_5xx, upstream_unavailable, timeout, client_4xx)",
            error_family,
        );

        let in_flight = Gauge::default();
        registry.register(INFERENCE_IN_FLIGHT, "Requests in progress", in_flight.clone());

        let latency = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            INFERENCE_LATENCY_SECONDS,
            "Seconds from receiving a request to the end of its response",
            latency.clone(),
        );

        let request_size = Histogram::new(size_buckets());
        registry.register(REQUEST_SIZE_BYTES, "Request body bytes", request_size.clone());
        let response_size = Histogram::new(size_buckets());
        registry.register(RESPONSE_SIZE_BYTES, "Response body bytes", response_size.clone());

        let info = Gauge::<i64>::default();
        info.set(1);
        registry
            .sub_registry_with_label((
                Cow::Borrowed(LABEL_RUN_ID),
                Cow::Owned(model.run_id.clone().unwrap_or_default()),
            ))
            .register(MODEL_INFO, "The served model version; value 1", info);

        let capture = CaptureMetrics::register(&mut registry);

        ProxyMetrics {
            registry,
            predictions,
            errors,
            in_flight,
            latency,
            request_size,
            response_size,
            capture,
        }
    }

    /// The counter for one error reason.
    pub(crate) fn error(&self, reason: ErrorReason) -> &Counter {
        let index = match reason {
            ErrorReason::Upstream5xx => 0,
            ErrorReason::UpstreamUnavailable => 1,
            ErrorReason::Timeout => 2,
            ErrorReason::Client4xx => 3,
        };
        &self.errors[index]
    }

    /// Every series, in the given exposition format.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        text::encode(&mut out, &self.registry)?;
        Ok(match format {
            Format::OpenMetrics => out,
            Format::PrometheusText => openmetrics_to_prometheus_text(&out),
        })
    }
}

impl CaptureMetrics {
    fn register(registry: &mut Registry) -> Self {
        let enqueued = Counter::default();
        registry.register(
            CAPTURE_ENQUEUED,
            "Captured request/response pairs queued for upload to the tracking server",
            enqueued.clone(),
        );
        let sent = Counter::default();
        registry.register(
            CAPTURE_SENT,
            "Captured pairs accepted by the tracking server",
            sent.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        let dropped_queue_full = dropped.get_or_create_owned(&ReasonLabel { reason: "queue_full" });
        let dropped_send_failed = dropped.get_or_create_owned(&ReasonLabel {
            reason: "send_failed",
        });
        registry.register(
            CAPTURE_DROPPED,
            "Captured pairs lost, by reason (queue_full, send_failed)",
            dropped,
        );
        let skipped = Family::<ReasonLabel, Counter>::default();
        let skipped_too_large = skipped.get_or_create_owned(&ReasonLabel { reason: "too_large" });
        let skipped_not_text = skipped.get_or_create_owned(&ReasonLabel { reason: "not_text" });
        registry.register(
            CAPTURE_SKIPPED,
            "Sampled requests whose payloads were not captured, by reason (too_large, not_text)",
            skipped,
        );
        CaptureMetrics {
            enqueued,
            sent,
            dropped_queue_full,
            dropped_send_failed,
            skipped_too_large,
            skipped_not_text,
        }
    }
}

/// Rewrites prometheus-client's OpenMetrics output (it encodes nothing else) as the Prometheus text
/// format 0.0.4. The samples are the same; what differs is that a counter family is named with its
/// `_total` suffix in `# HELP`/`# TYPE`, there are no `# UNIT` lines and no `# EOF`.
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(&name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// 64 B to 64 MiB in powers of 4.
fn size_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(64.0, 4.0, 11)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelIdentity {
        ModelIdentity {
            name: "iris".into(),
            version: "7".into(),
            run_id: Some("r1".into()),
        }
    }

    #[test]
    fn every_promised_series_is_exported_with_the_model_labels() {
        let metrics = ProxyMetrics::new(&model());
        metrics.predictions.inc();
        metrics.error(ErrorReason::Timeout).inc();
        let out = metrics.encode(Format::OpenMetrics).unwrap();
        let labels = r#"model_name="iris",model_version="7""#;
        for line in [
            format!("mlflow_predictions_total{{{labels}}} 1"),
            format!(r#"mlflow_prediction_errors_total{{{labels},reason="timeout"}} 1"#),
            format!(r#"mlflow_prediction_errors_total{{{labels},reason="upstream_5xx"}} 0"#),
            format!(r#"mlflow_prediction_errors_total{{{labels},reason="upstream_unavailable"}} 0"#),
            format!(r#"mlflow_prediction_errors_total{{{labels},reason="client_4xx"}} 0"#),
            format!("mlflow_inference_in_flight{{{labels}}} 0"),
            format!(r#"mlflow_inference_latency_seconds_bucket{{{labels},le="0.001"}} 0"#),
            format!(r#"mlflow_inference_latency_seconds_bucket{{{labels},le="30.0"}} 0"#),
            format!("mlflow_inference_request_size_bytes_count{{{labels}}} 0"),
            format!("mlflow_inference_response_size_bytes_count{{{labels}}} 0"),
            format!(r#"mlflow_model_info{{{labels},run_id="r1"}} 1"#),
            format!("mlkube_capture_enqueued_total{{{labels}}} 0"),
            format!("mlkube_capture_sent_total{{{labels}}} 0"),
            format!(r#"mlkube_capture_dropped_total{{{labels},reason="queue_full"}} 0"#),
            format!(r#"mlkube_capture_skipped_total{{{labels},reason="too_large"}} 0"#),
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
        assert!(out.ends_with("# EOF\n"));
    }

    #[test]
    fn the_prometheus_text_format_names_counters_with_their_suffix() {
        let metrics = ProxyMetrics::new(&model());
        metrics.predictions.inc_by(3);
        let out = metrics.encode(Format::PrometheusText).unwrap();
        let labels = r#"model_name="iris",model_version="7""#;
        let expected = format!(
            "# HELP mlflow_predictions_total Requests answered, errors included.\n\
             # TYPE mlflow_predictions_total counter\n\
             mlflow_predictions_total{{{labels}}} 3\n"
        );
        assert!(out.contains(&expected), "{out}");
        assert!(out.contains("# TYPE mlflow_inference_latency_seconds histogram\n"));
        assert!(out.contains("# TYPE mlflow_model_info gauge\n"));
        assert!(!out.contains("# EOF"));
        assert_eq!(Format::from_accept(None), Format::PrometheusText);
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
    }

    #[test]
    fn error_reasons_map_to_their_own_counters() {
        let metrics = ProxyMetrics::new(&model());
        for (n, reason) in ErrorReason::ALL.into_iter().enumerate() {
            metrics.error(reason).inc_by(n as u64 + 1);
        }
        for (n, reason) in ErrorReason::ALL.into_iter().enumerate() {
            assert_eq!(metrics.error(reason).get(), n as u64 + 1, "{}", reason.as_str());
        }
    }
}
