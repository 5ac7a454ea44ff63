//! Sampled payload capture for model-quality monitoring.
//!
//! On the request path: [`Capturer::sample`] decides at arrival whether a request is captured; two
//! [`Tap`]s copy the bodies as they stream past (never more than `--capture-max-payload-bytes` each);
//! when the response ends, [`Capturer::submit`] offers the pair to a queue bounded in pairs and in
//! bytes with `try_send`, counting a drop when it is full. Nothing on the request path waits.
//!
//! Off the request path: [`Uploader::run`] drains the queue every 50 ms (so a request never has to wake
//! it), batches pairs and posts them to the tracking server's
//! `POST /api/2.0/mlkube/predictions/log-batch`; a failed post drops its batch and counts it. On
//! shutdown the queue is closed, drained and flushed within [`FLUSH_TIMEOUT`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{CaptureConfig, ModelIdentity};
use super::metrics::CaptureMetrics;
use crate::telemetry::error_chain;

/// How long the final flush may take after the proxy has drained.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the uploader looks at the queue.
const DRAIN_TICK: Duration = Duration::from_millis(50);
/// Longest wait for one upload.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// One captured prediction, as queued.
#[derive(Debug)]
pub struct CaptureRecord {
    pub request_id: String,
    pub timestamp_ms: i64,
    pub inputs: Bytes,
    pub outputs: Bytes,
}

/// A captured body: whole, or over the size cap.
#[derive(Debug)]
pub enum Payload {
    Complete(Bytes),
    TooLarge,
}

// === impl Capturer ===

/// The request-path half of capture (one per serving thread, all feeding the same queue).
#[derive(Clone)]
pub(crate) struct Capturer {
    sample_rate: f64,
    max_payload: usize,
    tx: mpsc::Sender<CaptureRecord>,
    queue: QueueBytes,
    metrics: CaptureMetrics,
}

/// Payload bytes waiting in the queue, shared by every [`Capturer`] and the [`Uploader`]: the queue
/// is bounded in pairs and in bytes.
#[derive(Clone, Debug)]
pub(crate) struct QueueBytes {
    queued: Arc<AtomicUsize>,
    max: usize,
}

impl QueueBytes {
    pub(crate) fn new(max: usize) -> Self {
        QueueBytes {
            queued: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Reserves room for `n` bytes, or says there is none.
    fn reserve(&self, n: usize) -> bool {
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > self.max {
            self.release(n);
            return false;
        }
        true
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Capturer {
    pub(crate) fn new(
        sample_rate: f64,
        max_payload: usize,
        tx: mpsc::Sender<CaptureRecord>,
        queue: QueueBytes,
        metrics: CaptureMetrics,
    ) -> Self {
        Capturer {
            sample_rate,
            max_payload,
            tx,
            queue,
            metrics,
        }
    }

    /// Decides whether this request is captured. `declared_len` is the request's Content-Length: a
    /// body known to be over the cap is skipped before any of it is seen.
    pub(crate) fn sample(&self, request_id: &HeaderValue, declared_len: Option<u64>) -> Option<Arc<Sampled>> {
        if self.sample_rate < 1.0 && rand::random::<f64>() >= self.sample_rate {
            return None;
        }
        if declared_len.is_some_and(|len| len > self.max_payload as u64) {
            self.metrics.skipped_too_large.inc();
            return None;
        }
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Some(Arc::new(Sampled {
            request_id: String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
            timestamp_ms,
            request: Mutex::new(None),
        }))
    }

    /// A fresh tap for one direction of a sampled request.
    pub(crate) fn tap(&self) -> Tap {
        Tap::new(self.max_payload)
    }

    /// Queues a finished pair, or counts why it is not queued. Never waits.
    pub(crate) fn submit(&self, sampled: &Sampled, response: Payload) {
        let metrics = &self.metrics;
        let request = sampled.request.lock().ok().and_then(|mut slot| slot.take());
        let (inputs, outputs) = match (request, response) {
            (Some(Payload::Complete(inputs)), Payload::Complete(outputs)) => (inputs, outputs),
            (Some(Payload::TooLarge), _) | (_, Payload::TooLarge) => {
                metrics.skipped_too_large.inc();
                return;
            }
            // The request body never ended (the upstream answered without reading it all).
            (None, _) => return,
        };
        let size = inputs.len() + outputs.len();
        if !self.queue.reserve(size) {
            metrics.dropped_queue_full.inc();
            return;
        }
        let record = CaptureRecord {
            request_id: sampled.request_id.clone(),
            timestamp_ms: sampled.timestamp_ms,
            inputs,
            outputs,
        };
        match self.tx.try_send(record) {
            Ok(()) => {
                metrics.enqueued.inc();
            }
            Err(err) => {
                self.queue.release(size);
                let counter = match err {
                    mpsc::error::TrySendError::Full(_) => &metrics.dropped_queue_full,
                    mpsc::error::TrySendError::Closed(_) => &metrics.dropped_send_failed,
                };
                counter.inc();
            }
        }
    }
}

/// What a sampled request shares between its request and response bodies.
#[derive(Debug)]
pub(crate) struct Sampled {
    request_id: String,
    timestamp_ms: i64,
    request: Mutex<Option<Payload>>,
}

impl Sampled {
    pub(crate) fn set_request(&self, payload: Payload) {
        if let Ok(mut slot) = self.request.lock() {
            *slot = Some(payload);
        }
    }
}

// === impl Tap ===

/// Copies one body while it streams, up to a cap. A copy rather than a handle to the chunk: a handle
/// would keep the connection's whole read buffer alive while the pair waits in the queue.
pub(crate) struct Tap {
    buf: BytesMut,
    max: usize,
    over: bool,
}

impl Tap {
    fn new(max: usize) -> Self {
        Tap {
            buf: BytesMut::new(),
            max,
            over: false,
        }
    }

    pub(crate) fn push(&mut self, data: &Bytes) {
        if self.over {
            return;
        }
        if self.buf.len() + data.len() > self.max {
            self.over = true;
            self.buf = BytesMut::new();
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    pub(crate) fn finish(self) -> Payload {
        if self.over {
            Payload::TooLarge
        } else {
            Payload::Complete(self.buf.freeze())
        }
    }
}

// === impl Uploader ===

#[derive(Serialize)]
struct LogBatch<'a> {
    predictions: Vec<PredictionRow<'a>>,
}

#[derive(Serialize)]
struct PredictionRow<'a> {
    request_id: &'a str,
    model_name: &'a str,
    model_version: &'a str,
    timestamp: i64,
    inputs: Value,
    outputs: Value,
}

/// A body as JSON: parsed when it is JSON, else a string when it is text, else `None`.
fn as_json(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok().or_else(|| {
        std::str::from_utf8(body)
            .ok()
            .map(|s| Value::String(s.to_owned()))
    })
}

/// Outcome of one upload, for logging state changes once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Health {
    Ok,
    Failing,
}

/// The uploader's HTTP client: plain for an `http://` tracking URI; for `https://`, TLS verified
/// against the system roots, which `SSL_CERT_FILE` / `SSL_CERT_DIR` replace (the operator points
/// `SSL_CERT_FILE` at a ModelDeployment's `trackingCaBundle`).
enum CaptureClient {
    Http(Client<HttpConnector, Full<Bytes>>),
    Https(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
    /// `https://` on a machine without CA certificates: every upload fails, and says why.
    NoRoots(String),
}

impl CaptureClient {
    fn for_endpoint(endpoint: &Uri, http: Client<HttpConnector, Full<Bytes>>) -> Self {
        if endpoint.scheme_str() != Some("https") {
            return CaptureClient::Http(http);
        }
        match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(tls) => CaptureClient::Https(
                Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(tls.https_only().enable_http1().build()),
            ),
            Err(err) => {
                let why = format!("no CA certificates to verify {endpoint} ({err}); set SSL_CERT_FILE");
                tracing::error!(%err, %endpoint, "no CA certificates: captured predictions cannot be uploaded over https");
                CaptureClient::NoRoots(why)
            }
        }
    }

    fn request(&self, request: Request<Full<Bytes>>) -> Result<ResponseFuture, String> {
        match self {
            CaptureClient::Http(client) => Ok(client.request(request)),
            CaptureClient::Https(client) => Ok(client.request(request)),
            CaptureClient::NoRoots(why) => Err(why.clone()),
        }
    }
}

/// The background half of capture.
pub(crate) struct Uploader {
    client: CaptureClient,
    queue: QueueBytes,
    endpoint: Uri,
    authorization: Option<HeaderValue>,
    model: ModelIdentity,
    batch_size: usize,
    flush_interval: Duration,
    metrics: CaptureMetrics,
    health: Health,
}

impl Uploader {
    pub(crate) fn new(
        config: &CaptureConfig,
        model: ModelIdentity,
        client: Client<HttpConnector, Full<Bytes>>,
        queue: QueueBytes,
        metrics: CaptureMetrics,
    ) -> Self {
        Uploader {
            client: CaptureClient::for_endpoint(&config.endpoint, client),
            queue,
            endpoint: config.endpoint.clone(),
            authorization: config.authorization.as_ref().map(|s| s.0.clone()),
            model,
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            metrics,
            health: Health::Ok,
        }
    }

    /// Uploads until `shutdown`, then flushes what is queued.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<CaptureRecord>, shutdown: CancellationToken) {
        // The queue is drained on a tick rather than awaited: a receiver that never waits registers
        // no waker, so `try_send` on the request path never has to wake this thread.
        let mut tick = tokio::time::interval(DRAIN_TICK.min(self.flush_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut oldest = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let disconnected = loop {
                match rx.try_recv() {
                    Ok(record) => {
                        self.queue.release(record.inputs.len() + record.outputs.len());
                        if batch.is_empty() {
                            oldest = Instant::now();
                        }
                        batch.push(record);
                        if batch.len() >= self.batch_size {
                            self.upload(&mut batch, None).await;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break false,
                    Err(mpsc::error::TryRecvError::Disconnected) => break true,
                }
            };
            if !batch.is_empty() && oldest.elapsed() >= self.flush_interval {
                self.upload(&mut batch, None).await;
            }
            if disconnected {
                break;
            }
        }
        rx.close();
        let flush_by = Instant::now() + FLUSH_TIMEOUT;
        while let Some(record) = rx.recv().await {
            self.queue.release(record.inputs.len() + record.outputs.len());
            batch.push(record);
            if batch.len() >= self.batch_size {
                self.upload(&mut batch, Some(flush_by)).await;
            }
        }
        self.upload(&mut batch, Some(flush_by)).await;
    }

    /// Posts and empties `batch`; on failure its pairs are counted as dropped.
    async fn upload(&mut self, batch: &mut Vec<CaptureRecord>, flush_by: Option<Instant>) {
        if batch.is_empty() {
            return;
        }
        let records = std::mem::take(batch);
        let rows: Vec<PredictionRow<'_>> = records
            .iter()
            .filter_map(|r| {
                let (Some(inputs), Some(outputs)) = (as_json(&r.inputs), as_json(&r.outputs)) else {
                    self.metrics.skipped_not_text.inc();
                    return None;
                };
                Some(PredictionRow {
                    request_id: &r.request_id,
                    model_name: &self.model.name,
                    model_version: &self.model.version,
                    timestamp: r.timestamp_ms,
                    inputs,
                    outputs,
                })
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let count = rows.len() as u64;
        let timeout = flush_by.map_or(UPLOAD_TIMEOUT, |by| {
            by.saturating_duration_since(Instant::now()).min(UPLOAD_TIMEOUT)
        });
        let result = match serde_json::to_vec(&LogBatch { predictions: rows }) {
            Ok(body) => self.post(body, timeout).await,
            Err(err) => Err(format!("cannot encode the batch: {err}")),
        };
        let health = match result {
            Ok(()) => {
                self.metrics.sent.inc_by(count);
                tracing::debug!(predictions = count, "uploaded captured predictions");
                Health::Ok
            }
            Err(error) => {
                self.metrics.dropped_send_failed.inc_by(count);
                if self.health == Health::Ok {
                    tracing::warn!(%error, endpoint = %self.endpoint, dropped = count,
                        "cannot upload captured predictions; dropping them until the tracking server answers");
                } else {
                    tracing::debug!(%error, dropped = count, "upload of captured predictions failed");
                }
                Health::Failing
            }
        };
        if health == Health::Ok && self.health == Health::Failing {
            tracing::info!(endpoint = %self.endpoint, "uploads of captured predictions work again");
        }
        self.health = health;
    }

    async fn post(&self, body: Vec<u8>, timeout: Duration) -> Result<(), String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| err.to_string())?;
        let exchange = async {
            let response = self
                .client
                .request(request)?
                .await
                .map_err(|err| error_chain(&err))?;
            let status = response.status();
            // Read the (small) answer so the connection goes back to the pool.
            let answer = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                let answer = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
                Err(format!("tracking server answered {status}: {answer}"))
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_https_tracking_server_is_spoken_to_in_tls() {
        // A bare TCP listener sees what the uploader sends: a TLS handshake record (0x16, then
        // version 3.x) for an https:// endpoint, never plain HTTP.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = CaptureConfig {
            endpoint: format!("https://127.0.0.1:{port}/api/2.0/mlkube/predictions/log-batch")
                .parse()
                .unwrap(),
            authorization: None,
            sample_rate: 1.0,
            max_payload_bytes: 1024,
            queue_size: 8,
            max_queue_bytes: 4096,
            batch_size: 1,
            flush_interval: Duration::from_millis(10),
        };
        let model = ModelIdentity {
            name: "m".into(),
            version: "1".into(),
            run_id: None,
        };
        let metrics = super::super::metrics::ProxyMetrics::new(&model, 1);
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new());
        let uploader = Uploader::new(
            &config,
            model,
            http,
            QueueBytes::new(4096),
            metrics.capture.clone(),
        );
        let server = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 3];
            stream.read_exact(&mut head).await.unwrap();
            head
        });
        let result = uploader.post(b"{}".to_vec(), Duration::from_secs(5)).await;
        assert!(result.is_err(), "the listener speaks no TLS");
        let head = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the uploader never connected to the https endpoint")
            .unwrap();
        assert_eq!(head[0], 0x16, "not a TLS handshake: {head:?}");
        assert_eq!(head[1], 0x03);
    }

    #[test]
    fn a_tap_keeps_chunks_up_to_the_cap() {
        let mut tap = Tap::new(6);
        tap.push(&Bytes::from_static(b"abc"));
        tap.push(&Bytes::from_static(b"def"));
        assert!(matches!(tap.finish(), Payload::Complete(b) if b == "abcdef"));

        let mut tap = Tap::new(5);
        tap.push(&Bytes::from_static(b"abc"));
        tap.push(&Bytes::from_static(b"def"));
        tap.push(&Bytes::from_static(b"g"));
        assert!(matches!(tap.finish(), Payload::TooLarge));
    }

    #[test]
    fn the_queue_byte_budget_is_reserved_and_released() {
        let queue = QueueBytes::new(10);
        assert!(queue.reserve(6));
        assert!(!queue.reserve(5), "over budget");
        assert!(queue.reserve(4));
        queue.release(6);
        assert!(queue.reserve(6));
        assert!(!queue.reserve(1));

        assert!(matches!(Tap::new(1).finish(), Payload::Complete(b) if b.is_empty()));
    }

    #[test]
    fn bodies_become_json_when_they_can() {
        assert_eq!(
            as_json(br#"{"a": [1, 2]}"#),
            Some(serde_json::json!({"a": [1, 2]}))
        );
        assert_eq!(as_json(b"x,y\n1,2\n"), Some(Value::String("x,y\n1,2\n".into())));
        assert_eq!(as_json(&[0xff, 0xfe]), None);
    }
}
