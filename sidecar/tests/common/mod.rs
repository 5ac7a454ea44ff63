//! Shared fixtures for the sidecar's integration tests: an in-process fake model server, a fake
//! tracking server that records prediction uploads, an HTTP client and a metrics scraper.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlkube_sidecar::proxy::{Args, Sidecar};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

pub type TestBody = BoxBody<Bytes, Box<dyn StdError + Send + Sync>>;
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pub const MODEL_NAME: &str = "iris";
pub const MODEL_VERSION: &str = "3";

pub fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body fed chunk by chunk from the test; an `Err` item makes it fail.
pub struct ChannelBody {
    rx: mpsc::UnboundedReceiver<Result<Bytes, String>>,
}

pub fn channel_body() -> (mpsc::UnboundedSender<Result<Bytes, String>>, TestBody) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, ChannelBody { rx }.boxed())
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|item| match item {
            Some(Ok(bytes)) => Some(Ok(Frame::data(bytes))),
            Some(Err(message)) => Some(Err(message.into())),
            None => None,
        })
    }
}

/// Serves HTTP/1.1 on 127.0.0.1 with `handler` until the test ends; the counter counts connections.
pub async fn serve_fn<F>(handler: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<Incoming>) -> BoxFuture<Response<TestBody>> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// === fake model server ===

/// What the fake model server saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Controls of the fake model server.
pub struct UpstreamState {
    pub seen: Mutex<Vec<Seen>>,
    /// `/hold` waits for a permit.
    pub hold: Semaphore,
    /// `/hold` and `/upload` report here when they have a request.
    pub entered: Mutex<Option<mpsc::UnboundedSender<Bytes>>>,
    /// `/stream` sends what arrives here.
    pub stream: Mutex<Option<mpsc::UnboundedReceiver<Result<Bytes, String>>>>,
    pub unhealthy: AtomicBool,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
    pub connections: Arc<AtomicUsize>,
}

impl Upstream {
    /// Routes: `POST /invocations` answers `{"predictions":[0.75],"received_bytes":N}`; `/ping` 200 (503
    /// when unhealthy); `/status/N`; `/hold` waits for a permit; `/upload` reports the first chunk
    /// before reading on; `/stream` streams what the test sends; `/big` answers 4096 bytes.
    pub async fn start() -> Upstream {
        let state = Arc::new(UpstreamState {
            seen: Mutex::default(),
            hold: Semaphore::new(0),
            entered: Mutex::default(),
            stream: Mutex::default(),
            unhealthy: AtomicBool::new(false),
        });
        let handler_state = Arc::clone(&state);
        let (addr, connections) = serve_fn(move |req| {
            let state = Arc::clone(&handler_state);
            Box::pin(async move { upstream_route(state, req).await })
        })
        .await;
        Upstream {
            addr,
            state,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns a receiver that gets a message when `/hold` or `/upload` has a request.
    pub fn on_enter(&self) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.state.entered.lock().unwrap() = Some(tx);
        rx
    }

    /// Returns the sender that feeds `/stream`.
    pub fn stream_feed(&self) -> mpsc::UnboundedSender<Result<Bytes, String>> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.state.stream.lock().unwrap() = Some(rx);
        tx
    }

    /// Requests seen, health checks left out.
    pub fn seen(&self) -> Vec<Seen> {
        let seen = self.state.seen.lock().unwrap();
        seen.iter().filter(|s| s.path != "/ping").cloned().collect()
    }

    pub fn health_checks(&self) -> usize {
        let seen = self.state.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == "/ping").count()
    }
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn notify_entered(state: &UpstreamState, what: Bytes) {
    if let Some(tx) = state.entered.lock().unwrap().as_ref() {
        let _ = tx.send(what);
    }
}

async fn upstream_route(state: Arc<UpstreamState>, req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let mut body = req.into_body();
    if path == "/upload" {
        let mut received = 0;
        let mut first = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                received += data.len();
                if first {
                    first = false;
                    notify_entered(&state, data.clone());
                }
            }
        }
        return respond(StatusCode::OK, format!(r#"{{"received_bytes":{received}}}"#));
    }
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return respond(StatusCode::BAD_REQUEST, "{}"),
    };
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    match path.as_str() {
        "/invocations" => respond(
            StatusCode::OK,
            format!(r#"{{"predictions":[0.75],"received_bytes":{}}}"#, body.len()),
        ),
        "/ping" if state.unhealthy.load(Ordering::SeqCst) => respond(StatusCode::SERVICE_UNAVAILABLE, "{}"),
        "/ping" => respond(StatusCode::OK, "{}"),
        "/hold" => {
            notify_entered(&state, body);
            let _permit = state.hold.acquire().await.unwrap();
            respond(StatusCode::OK, r#"{"held":true}"#)
        }
        "/stream" => {
            let rx = state.stream.lock().unwrap().take().expect("stream_feed() first");
            Response::new(ChannelBody { rx }.boxed())
        }
        "/big" => respond(
            StatusCode::OK,
            format!(r#"{{"predictions":"{}"}}"#, "x".repeat(4096)),
        ),
        other => match other.strip_prefix("/status/").and_then(|s| s.parse::<u16>().ok()) {
            Some(code) => respond(StatusCode::from_u16(code).unwrap(), r#"{"error_code":"TEST"}"#),
            None => respond(StatusCode::NOT_FOUND, "{}"),
        },
    }
}

// === fake tracking server ===

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrackerMode {
    Accept,
    /// Waits for a permit on `hold` before answering.
    Hold,
}

pub struct Tracker {
    pub addr: SocketAddr,
    pub batches: mpsc::UnboundedReceiver<Value>,
    pub entered: mpsc::UnboundedReceiver<()>,
    pub hold: Arc<Semaphore>,
}

impl Tracker {
    pub async fn start(mode: TrackerMode) -> Tracker {
        let (batch_tx, batches) = mpsc::unbounded_channel();
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let hold = Arc::new(Semaphore::new(0));
        let handler_hold = Arc::clone(&hold);
        let (addr, _connections) = serve_fn(move |req: Request<Incoming>| {
            let batch_tx = batch_tx.clone();
            let entered_tx = entered_tx.clone();
            let hold = Arc::clone(&handler_hold);
            Box::pin(async move {
                assert_eq!(req.uri().path(), "/api/2.0/mlkube/predictions/log-batch");
                assert_eq!(req.method(), http::Method::POST);
                assert_eq!(req.headers()["content-type"], "application/json");
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let batch: Value = serde_json::from_slice(&body).unwrap();
                let _ = entered_tx.send(());
                if mode == TrackerMode::Hold {
                    hold.acquire().await.unwrap().forget();
                }
                let _ = batch_tx.send(batch);
                respond(StatusCode::OK, "{}")
            })
        })
        .await;
        Tracker {
            addr,
            batches,
            entered,
            hold,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn next_batch(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), self.batches.recv())
            .await
            .expect("a batch within 10 s")
            .expect("tracker running")
    }
}

// === sidecar ===

/// Starts a sidecar on 127.0.0.1 for `upstream` with the test model labels and `extra` flags.
pub async fn start_sidecar(upstream: &str, extra: &[&str]) -> Sidecar {
    let mut argv = vec![
        "mlkube-sidecar",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--model-name",
        MODEL_NAME,
        "--model-version",
        MODEL_VERSION,
    ];
    if !extra.contains(&"--upstream-health-interval") {
        argv.extend_from_slice(&["--upstream-health-interval", "0.05"]);
    }
    argv.extend_from_slice(extra);
    Sidecar::start(config(&argv)).await.unwrap()
}

/// Parses and validates a command line the way `main` does.
pub fn config(argv: &[&str]) -> mlkube_sidecar::proxy::Config {
    use clap::Parser;
    Args::try_parse_from(argv).unwrap().validate().unwrap()
}

// === client ===

pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn request_id(&self) -> &str {
        self.headers["x-request-id"].to_str().unwrap()
    }
}

pub async fn send(addr: SocketAddr, request: Request<TestBody>) -> Answer {
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("http://{addr}{}", parts.uri).parse().unwrap();
    let response = client().request(Request::from_parts(parts, body)).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn post(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Answer {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap();
    send(addr, request).await
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, Request::get(path).body(empty()).unwrap()).await
}

// === metrics ===

/// A parsed scrape: `name{sorted labels}` → value.
pub struct Scrape {
    pub text: String,
    values: BTreeMap<String, f64>,
}

fn series_key(name: &str, labels: &mut [(String, String)]) -> String {
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

impl Scrape {
    pub fn parse(text: String) -> Scrape {
        let mut values = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut pairs: Vec<(String, String)> = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            values.insert(series_key(name, &mut pairs), value.parse().unwrap());
        }
        Scrape { text, values }
    }

    /// The value of `name` with the test model's labels plus `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut pairs: Vec<(String, String)> = [("model_name", MODEL_NAME), ("model_version", MODEL_VERSION)]
            .iter()
            .chain(labels)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let key = series_key(name, &mut pairs);
        *self
            .values
            .get(&key)
            .unwrap_or_else(|| panic!("no series {key} in\n{}", self.text))
    }

    pub fn error(&self, reason: &str) -> f64 {
        self.value("mlflow_prediction_errors_total", &[("reason", reason)])
    }
}

pub async fn scrape(sidecar: &Sidecar) -> Scrape {
    let answer = get(sidecar.metrics_addr(), "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    Scrape::parse(String::from_utf8(answer.body.to_vec()).unwrap())
}

/// Polls `check` until it holds (10 s at most: a bound against hangs, not a timing assertion).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}
