//! `/metrics`, `/healthz` and `/readyz` of the node sampler.
//!
//! `/metrics` answers with the exposition encoded after the last sample (a copy of shared bytes: a
//! scrape never samples). `/readyz` is 200 once there has been a sample. `/healthz` is 200 while
//! samples keep coming; if sampling stalls (a hung driver call) for three intervals and at least
//! 30 s, it answers 503 so that the kubelet restarts the container.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

/// The content type of Prometheus' classic text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the sampling task publishes and the HTTP handlers read.
pub struct Exposition {
    text: RwLock<Bytes>,
    samples: AtomicU64,
    scrapes: AtomicU64,
    last_sample: Mutex<Option<Instant>>,
    stale_after: Duration,
}

impl Exposition {
    pub fn new(interval: Duration) -> Exposition {
        Exposition {
            text: RwLock::new(Bytes::new()),
            samples: AtomicU64::new(0),
            scrapes: AtomicU64::new(0),
            last_sample: Mutex::new(None),
            stale_after: (interval * 3).max(Duration::from_secs(30)),
        }
    }

    /// Publishes the exposition of a new sample.
    pub fn publish(&self, text: Bytes) {
        if let Ok(mut current) = self.text.write() {
            *current = text;
        }
        if let Ok(mut last) = self.last_sample.lock() {
            *last = Some(Instant::now());
        }
        self.samples.fetch_add(1, Ordering::Release);
    }

    /// Samples taken so far.
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Acquire)
    }

    /// `/metrics` requests answered so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }

    fn healthy(&self) -> bool {
        match self.last_sample.lock().ok().and_then(|last| *last) {
            Some(at) => at.elapsed() <= self.stale_after,
            // Before the first sample: alive (readiness says whether it is ready).
            None => true,
        }
    }

    /// Answers one request.
    pub fn handle<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz or /readyz\n",
            );
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/metrics" => {
                if self.samples() == 0 {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "no sample yet\n");
                }
                self.scrapes.fetch_add(1, Ordering::Relaxed);
                let body = self.text.read().map(|t| t.clone()).unwrap_or_default();
                let mut response = Response::new(Full::new(body));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, http::HeaderValue::from_static(PROMETHEUS_TEXT));
                response
            }
            "/readyz" if self.samples() == 0 => text(StatusCode::SERVICE_UNAVAILABLE, "no sample yet\n"),
            "/healthz" if !self.healthy() => text(StatusCode::SERVICE_UNAVAILABLE, "sampling has stalled\n"),
            _ => text(StatusCode::OK, "ok\n"),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

type Answer = Response<Full<Bytes>>;

/// A hyper service over `exposition`.
pub fn service(
    exposition: std::sync::Arc<Exposition>,
) -> impl hyper::service::Service<
    Request<hyper::body::Incoming>,
    Response = Answer,
    Error = Infallible,
    Future = std::future::Ready<Result<Answer, Infallible>>,
> + Clone {
    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        std::future::ready(Ok(exposition.handle(&request)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(exposition: &Exposition, path: &str) -> Response<Full<Bytes>> {
        exposition.handle(&Request::get(path).body(()).unwrap())
    }

    #[test]
    fn before_the_first_sample_nothing_is_ready() {
        let exposition = Exposition::new(Duration::from_secs(1));
        assert_eq!(
            get(&exposition, "/metrics").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            get(&exposition, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(&exposition, "/healthz").status(), StatusCode::OK);
        exposition.publish(Bytes::from_static(b"x 1\n"));
        assert_eq!(get(&exposition, "/metrics").status(), StatusCode::OK);
        assert_eq!(get(&exposition, "/readyz").status(), StatusCode::OK);
        assert_eq!(get(&exposition, "/nope").status(), StatusCode::NOT_FOUND);
        let post = exposition.handle(&Request::post("/metrics").body(()).unwrap());
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(exposition.scrapes(), 1);
    }
}
