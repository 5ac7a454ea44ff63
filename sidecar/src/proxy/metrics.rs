//! The sidecar's Prometheus metrics. Names are a public interface (docs/architecture.md, dashboards, alert rules):
//! they live here as constants and nowhere else.
//!
//! The sidecar serves exactly one model version, so `model_name` and `model_version` are registry-wide
//! labels fixed at startup: the request path never looks a label set up. The request-path series live
//! in one [`WorkerMetrics`] shard per serving thread (cache-line aligned, lock-free: a request costs a
//! handful of uncontended atomic adds on its own thread's cache lines) and are summed over the shards
//! when `/metrics` is scraped. prometheus-client's own `Histogram` takes a mutex per observation and
//! its handles are shared by every thread, which is what the shards avoid. The rarely updated series
//! (capture, model info) are plain prometheus-client handles.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Latency bucket bounds from 1 ms to 30 s, in nanoseconds.
const LATENCY_BOUNDS_NS: [u64; 14] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];
const NANOS_PER_SECOND: f64 = 1e9;

/// Size bucket bounds from 64 B to 64 MiB in powers of 4, in bytes.
const SIZE_BOUNDS: [u64; 11] = [
    64,
    256,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
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

    fn index(self) -> usize {
        match self {
            ErrorReason::Upstream5xx => 0,
            ErrorReason::UpstreamUnavailable => 1,
            ErrorReason::Timeout => 2,
            ErrorReason::Client4xx => 3,
        }
    }

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
    workers: Arc<[Arc<WorkerMetrics>]>,
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
    /// Registers every series with the model's labels, with one request-path shard per worker.
    pub fn new(model: &ModelIdentity, workers: usize) -> Self {
        let labels = [
            (Cow::Borrowed(LABEL_MODEL_NAME), Cow::Owned(model.name.clone())),
            (
                Cow::Borrowed(LABEL_MODEL_VERSION),
                Cow::Owned(model.version.clone()),
            ),
        ];
        let mut registry = Registry::with_labels(labels.into_iter());
        let shards: Arc<[Arc<WorkerMetrics>]> = (0..workers.max(1)).map(|_| Arc::default()).collect();
        let series = |which| Summed {
            shards: Arc::clone(&shards),
            which,
        };

        registry.register(
            PREDICTIONS,
            "Requests answered, errors included",
            series(Which::Predictions),
        );
        registry.register(
            PREDICTION_ERRORS,
            "Failed requests by reason (upstream_5xx, upstream_unavailable, timeout, client_4xx)",
            series(Which::Errors),
        );
        registry.register(
            INFERENCE_IN_FLIGHT,
            "Requests in progress",
            series(Which::InFlight),
        );
        registry.register(
            INFERENCE_LATENCY_SECONDS,
            "Seconds from receiving a request to the end of its response",
            series(Which::Latency),
        );
        registry.register(
            REQUEST_SIZE_BYTES,
            "Request body bytes",
            series(Which::RequestSize),
        );
        registry.register(
            RESPONSE_SIZE_BYTES,
            "Response body bytes",
            series(Which::ResponseSize),
        );

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
            workers: shards,
            capture,
        }
    }

    /// The request-path shard of worker `index` (wrapping, so any index is valid).
    pub(crate) fn worker(&self, index: usize) -> Arc<WorkerMetrics> {
        Arc::clone(&self.workers[index % self.workers.len()])
    }

    /// Every series, in the given exposition format.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        text::encode(&mut out, &self.registry)?;
        Ok(match format {
            Format::OpenMetrics => out,
            Format::PrometheusText => crate::exposition::to_prometheus_text(&out),
        })
    }
}

// === impl WorkerMetrics ===

/// The request-path series of one serving thread. Only that thread writes them; scrapes read them.
/// The alignment keeps two workers' shards off each other's cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct WorkerMetrics {
    predictions: AtomicU64,
    errors: [AtomicU64; 4],
    in_flight: AtomicI64,
    latency: AtomicHistogram<15>,
    request_size: AtomicHistogram<12>,
    response_size: AtomicHistogram<12>,
}

impl WorkerMetrics {
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answered request, and its error reason if it failed.
    pub(crate) fn answered(&self, error: Option<ErrorReason>) {
        self.predictions.fetch_add(1, Ordering::Relaxed);
        if let Some(reason) = error {
            self.error(reason);
        }
    }

    pub(crate) fn error(&self, reason: ErrorReason) {
        self.errors[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_finished(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.observe(&LATENCY_BOUNDS_NS, nanos);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn request_size(&self, bytes: u64) {
        self.request_size.observe(&SIZE_BOUNDS, bytes);
    }

    pub(crate) fn response_size(&self, bytes: u64) {
        self.response_size.observe(&SIZE_BOUNDS, bytes);
    }
}

/// A histogram over integer observations (nanoseconds, bytes) with `N - 1` fixed bounds and +Inf.
#[derive(Debug)]
struct AtomicHistogram<const N: usize> {
    counts: [AtomicU64; N],
    sum: AtomicU64,
}

impl<const N: usize> Default for AtomicHistogram<N> {
    fn default() -> Self {
        AtomicHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> AtomicHistogram<N> {
    /// `bounds` has `N - 1` ascending upper bounds; anything above the last lands in +Inf.
    fn observe(&self, bounds: &[u64], value: u64) {
        let bucket = bounds.partition_point(|&bound| bound < value).min(N - 1);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }
}

/// Which request-path series a [`Summed`] view encodes.
#[derive(Clone, Copy, Debug)]
enum Which {
    Predictions,
    Errors,
    InFlight,
    Latency,
    RequestSize,
    ResponseSize,
}

/// One request-path series, summed over the worker shards when encoded.
#[derive(Debug)]
struct Summed {
    shards: Arc<[Arc<WorkerMetrics>]>,
    which: Which,
}

impl Summed {
    fn sum(&self, read: impl Fn(&WorkerMetrics) -> u64) -> u64 {
        self.shards.iter().map(|w| read(w)).fold(0, u64::wrapping_add)
    }

    fn encode_histogram<const N: usize>(
        &self,
        mut encoder: MetricEncoder<'_>,
        histogram: impl Fn(&WorkerMetrics) -> &AtomicHistogram<N>,
        bounds: &[u64],
        scale: f64,
    ) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = (0..N)
            .map(|i| {
                let upper = bounds.get(i).map_or(f64::INFINITY, |&b| b as f64 / scale);
                (
                    upper,
                    self.sum(|w| histogram(w).counts[i].load(Ordering::Relaxed)),
                )
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum(|w| histogram(w).sum.load(Ordering::Relaxed)) as f64 / scale;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

impl EncodeMetric for Summed {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self.which {
            Which::Predictions => {
                let total = self.sum(|w| w.predictions.load(Ordering::Relaxed));
                encoder.encode_counter::<NoLabelSet, _, u64>(&total, None)
            }
            Which::Errors => {
                for reason in ErrorReason::ALL {
                    let total = self.sum(|w| w.errors[reason.index()].load(Ordering::Relaxed));
                    let label = ReasonLabel {
                        reason: reason.as_str(),
                    };
                    encoder
                        .encode_family(&label)?
                        .encode_counter::<NoLabelSet, _, u64>(&total, None)?;
                }
                Ok(())
            }
            Which::InFlight => {
                let total: i64 = self
                    .shards
                    .iter()
                    .map(|w| w.in_flight.load(Ordering::Relaxed))
                    .sum();
                encoder.encode_gauge(&total)
            }
            Which::Latency => {
                self.encode_histogram(encoder, |w| &w.latency, &LATENCY_BOUNDS_NS, NANOS_PER_SECOND)
            }
            Which::RequestSize => self.encode_histogram(encoder, |w| &w.request_size, &SIZE_BOUNDS, 1.0),
            Which::ResponseSize => self.encode_histogram(encoder, |w| &w.response_size, &SIZE_BOUNDS, 1.0),
        }
    }

    fn metric_type(&self) -> MetricType {
        match self.which {
            Which::Predictions | Which::Errors => MetricType::Counter,
            Which::InFlight => MetricType::Gauge,
            Which::Latency | Which::RequestSize | Which::ResponseSize => MetricType::Histogram,
        }
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
        let metrics = ProxyMetrics::new(&model(), 2);
        metrics.worker(1).answered(Some(ErrorReason::Timeout));
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
        let metrics = ProxyMetrics::new(&model(), 1);
        for _ in 0..3 {
            metrics.worker(0).answered(None);
        }
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
    fn worker_shards_are_summed_when_encoded() {
        let metrics = ProxyMetrics::new(&model(), 3);
        for (n, reason) in ErrorReason::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                metrics.worker(n).answered(Some(reason));
            }
        }
        metrics.worker(0).answered(None);
        metrics.worker(0).request_started();
        metrics.worker(1).request_started();
        metrics.worker(2).request_started();
        metrics.worker(1).request_finished(Duration::from_micros(900));
        metrics.worker(2).request_finished(Duration::from_millis(3));
        metrics.worker(0).request_size(64);
        metrics.worker(1).request_size(65);
        metrics.worker(2).response_size(1 << 40);

        let out = metrics.encode(Format::OpenMetrics).unwrap();
        let labels = r#"model_name="iris",model_version="7""#;
        for line in [
            format!("mlflow_predictions_total{{{labels}}} 11"),
            format!(r#"mlflow_prediction_errors_total{{{labels},reason="upstream_5xx"}} 1"#),
            format!(r#"mlflow_prediction_errors_total{{{labels},reason="upstream_unavailable"}} 2"#),
            format!(r#"mlflow_prediction_errors_total{{{labels},reason="timeout"}} 3"#),
            format!(r#"mlflow_prediction_errors_total{{{labels},reason="client_4xx"}} 4"#),
            format!("mlflow_inference_in_flight{{{labels}}} 1"),
            format!("mlflow_inference_latency_seconds_count{{{labels}}} 2"),
            format!("mlflow_inference_latency_seconds_sum{{{labels}}} 0.0039"),
            format!(r#"mlflow_inference_latency_seconds_bucket{{{labels},le="0.001"}} 1"#),
            format!(r#"mlflow_inference_latency_seconds_bucket{{{labels},le="0.0025"}} 1"#),
            format!(r#"mlflow_inference_latency_seconds_bucket{{{labels},le="0.005"}} 2"#),
            format!(r#"mlflow_inference_latency_seconds_bucket{{{labels},le="+Inf"}} 2"#),
            format!(r#"mlflow_inference_request_size_bytes_bucket{{{labels},le="64.0"}} 1"#),
            format!(r#"mlflow_inference_request_size_bytes_bucket{{{labels},le="256.0"}} 2"#),
            format!("mlflow_inference_request_size_bytes_sum{{{labels}}} 129.0"),
            format!(r#"mlflow_inference_response_size_bytes_bucket{{{labels},le="67108864.0"}} 0"#),
            format!(r#"mlflow_inference_response_size_bytes_bucket{{{labels},le="+Inf"}} 1"#),
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in\n{out}");
        }
    }

    #[test]
    fn worker_shards_do_not_share_cache_lines() {
        assert!(std::mem::align_of::<WorkerMetrics>() >= 128);
    }
}
