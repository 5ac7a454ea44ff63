//! The metrics port: `/metrics`, `/healthz` (the process is up) and `/readyz` (the upstream answers its
//! health path and the sidecar is not shutting down), plus the background check behind `/readyz`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio_util::sync::CancellationToken;

use super::metrics::{Format, ProxyMetrics};

/// Longest wait for one health check.
const MAX_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Readiness {
    upstream_ok: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Ready to take traffic: the upstream is healthy and no shutdown has begun.
    pub fn is_ready(&self) -> bool {
        self.upstream_ok.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// The per-connection service of the metrics port.
#[derive(Clone)]
pub(crate) struct AdminService {
    metrics: Arc<ProxyMetrics>,
    readiness: Arc<Readiness>,
}

impl AdminService {
    pub(crate) fn new(metrics: Arc<ProxyMetrics>, readiness: Arc<Readiness>) -> Self {
        AdminService { metrics, readiness }
    }

    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        match request.uri().path() {
            "/metrics" => {
                let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
                self.metrics_response(Format::from_accept(accept))
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.readiness.draining.load(Ordering::Relaxed) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                } else if self.readiness.upstream_ok.load(Ordering::Relaxed) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "upstream not ready\n")
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz or /readyz\n",
            ),
        }
    }
}

impl AdminService {
    fn metrics_response(&self, format: Format) -> Response<Full<Bytes>> {
        match self.metrics.encode(format) {
            Ok(body) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
                response
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot encode metrics");
                text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
            }
        }
    }
}

impl Service<Request<Incoming>> for AdminService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        ready(Ok(self.answer(&request)))
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Checks `health_uri` every `interval` until `shutdown`, keeping `readiness` up to date.
pub(crate) async fn watch_upstream(
    client: Client<HttpConnector, Empty<Bytes>>,
    health_uri: Uri,
    interval: Duration,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let timeout = interval.min(MAX_HEALTH_CHECK_TIMEOUT);
    tracing::info!(url = %health_uri, "waiting for the upstream to answer its health check");
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = check(&client, &health_uri, timeout) => outcome,
        };
        let ok = outcome.is_ok();
        let was_ok = readiness.upstream_ok.swap(ok, Ordering::Relaxed);
        match outcome {
            Ok(()) if !was_ok => tracing::info!(url = %health_uri, "upstream is ready"),
            Err(error) if was_ok => tracing::warn!(url = %health_uri, %error, "upstream is not ready"),
            Err(error) => tracing::debug!(url = %health_uri, %error, "upstream is still not ready"),
            Ok(()) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn check(
    client: &Client<HttpConnector, Empty<Bytes>>,
    uri: &Uri,
    timeout: Duration,
) -> Result<(), String> {
    let exchange = async {
        let response = client
            .get(uri.clone())
            .await
            .map_err(|err| crate::telemetry::error_chain(&err))?;
        let status = response.status();
        // Drain the answer so the connection is reused.
        let _body = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}
