//! The request path: one request in, one request to the upstream, its response streamed back.
//!
//! Per request this does a fixed, small amount of work: a request id, a header clean-up, one upstream
//! call from a keep-alive pool, and a handful of atomic metric updates through handles resolved at
//! startup.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::Service;

use super::body::{RequestBody, RequestBodyError, RequestGuard, ResponseBody};
use super::capture::Capturer;
use super::metrics::{ErrorReason, WorkerMetrics};
use super::upstream::{UpstreamError, UpstreamPool};
use crate::telemetry::error_chain;

/// The request id header: taken from the client when it sends a usable one, else generated (UUID v4);
/// always forwarded upstream and returned to the client.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Longest client-supplied request id kept.
const MAX_REQUEST_ID_LEN: usize = 200;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `Expect`, which the
/// sidecar answers itself.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// State shared by every request.
pub(crate) struct Shared {
    pub(crate) upstream: Arc<UpstreamPool>,
    pub(crate) request_timeout: Duration,
    pub(crate) max_request_body: u64,
    /// This worker's shard of the request-path metrics.
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) capture: Option<Capturer>,
}

/// The per-connection service of the serving port.
#[derive(Clone)]
pub(crate) struct ProxyService {
    shared: Arc<Shared>,
    /// The client's address as an `X-Forwarded-For` value, formatted once per connection.
    peer: HeaderValue,
}

impl ProxyService {
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        let peer = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ProxyService { shared, peer }
    }
}

impl Service<Request<Incoming>> for ProxyService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        Box::pin(forward(Arc::clone(&self.shared), self.peer.clone(), request))
    }
}

/// An answer made by the sidecar itself, in MLflow's error shape so clients that parse MLflow errors
/// read it too.
#[derive(Clone, Copy, Debug)]
struct Local {
    status: StatusCode,
    reason: ErrorReason,
    body: &'static [u8],
}

impl Local {
    const TOO_LARGE: Local = Local {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        reason: ErrorReason::Client4xx,
        body: br#"{"error_code":"REQUEST_TOO_LARGE","message":"the request body is larger than the sidecar accepts"}"#,
    };
    const BAD_REQUEST: Local = Local {
        status: StatusCode::BAD_REQUEST,
        reason: ErrorReason::Client4xx,
        body: br#"{"error_code":"BAD_REQUEST","message":"the request body could not be read"}"#,
    };
    const NOT_ALLOWED: Local = Local {
        status: StatusCode::METHOD_NOT_ALLOWED,
        reason: ErrorReason::Client4xx,
        body: br#"{"error_code":"METHOD_NOT_ALLOWED","message":"the sidecar does not tunnel CONNECT"}"#,
    };
    const UNAVAILABLE: Local = Local {
        status: StatusCode::BAD_GATEWAY,
        reason: ErrorReason::UpstreamUnavailable,
        body: br#"{"error_code":"UPSTREAM_UNAVAILABLE","message":"the model server could not be reached"}"#,
    };
    const TIMEOUT: Local = Local {
        status: StatusCode::GATEWAY_TIMEOUT,
        reason: ErrorReason::Timeout,
        body: br#"{"error_code":"UPSTREAM_TIMEOUT","message":"the model server did not answer in time"}"#,
    };
}

async fn forward(
    shared: Arc<Shared>,
    peer: HeaderValue,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let guard = RequestGuard::start(shared);
    let shared = &*guard.shared;
    let (mut parts, body) = request.into_parts();
    let request_id = request_id(&parts.headers);

    if parts.method == Method::CONNECT {
        return Ok(local(guard, Local::NOT_ALLOWED, request_id));
    }
    let declared_len = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|len| len > shared.max_request_body) {
        return Ok(local(guard, Local::TOO_LARGE, request_id));
    }

    let sampled = shared
        .capture
        .as_ref()
        .and_then(|c| c.sample(&request_id, declared_len).map(|s| (c, s)));
    let request_tap = sampled.as_ref().map(|(c, s)| (Arc::clone(s), c.tap()));
    let body = RequestBody::new(
        body,
        shared.max_request_body,
        Arc::clone(&shared.metrics),
        request_tap,
    );

    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::EXPECT);
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    append_forwarded_for(&mut parts.headers, peer);
    // Origin-form towards the upstream, whatever form the client used.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
    }

    let upstream = shared.upstream.send(Request::from_parts(parts, body));
    let (response, lease) = match tokio::time::timeout(shared.request_timeout, upstream).await {
        Ok(Ok(exchange)) => exchange,
        Ok(Err(err)) => {
            let answer = classify(&err);
            tracing::debug!(error = %error_chain(&err), status = %answer.status, "upstream request failed");
            return Ok(local(guard, answer, request_id));
        }
        Err(_elapsed) => {
            tracing::debug!(timeout = ?shared.request_timeout, "upstream did not answer in time");
            return Ok(local(guard, Local::TIMEOUT, request_id));
        }
    };

    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(X_REQUEST_ID, request_id);
    let error = status_error(parts.status);
    guard.count(error);
    let capture = match sampled {
        Some((capturer, sampled)) if parts.status.is_success() => Some((sampled, capturer.tap())),
        _ => None,
    };
    let body = ResponseBody::upstream(body, guard, lease, error.is_none(), capture);
    Ok(Response::from_parts(parts, body))
}

/// Answers the client without the upstream.
fn local(guard: RequestGuard, answer: Local, request_id: HeaderValue) -> Response<ResponseBody> {
    guard.count(Some(answer.reason));
    let mut response = Response::new(ResponseBody::local(Bytes::from_static(answer.body), guard));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(X_REQUEST_ID, request_id);
    response
}

/// The error reason an upstream status counts as, if any.
fn status_error(status: StatusCode) -> Option<ErrorReason> {
    if status.is_server_error() {
        Some(ErrorReason::Upstream5xx)
    } else if status.is_client_error() {
        Some(ErrorReason::Client4xx)
    } else {
        None
    }
}

/// The answer to a failed upstream call: the client's fault when its body was the problem.
fn classify(err: &UpstreamError) -> Local {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        match cause.downcast_ref::<RequestBodyError>() {
            Some(RequestBodyError::TooLarge { .. }) => return Local::TOO_LARGE,
            Some(RequestBodyError::Read(_)) => return Local::BAD_REQUEST,
            None => source = cause.source(),
        }
    }
    Local::UNAVAILABLE
}

fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        Some(id) if is_usable_request_id(id) => id.clone(),
        _ => new_request_id(),
    }
}

fn is_usable_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID_LEN && bytes.iter().all(u8::is_ascii_graphic)
}

/// A random (v4) UUID, hyphenated.
fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buffer = uuid::Uuid::encode_buffer();
    let text = id.hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present beats nine lookups.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: HeaderValue) {
    let value = match headers.get(X_FORWARDED_FOR) {
        None => peer,
        Some(prior) => {
            let mut joined = Vec::with_capacity(prior.len() + 2 + peer.len());
            joined.extend_from_slice(prior.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(peer.as_bytes());
            match HeaderValue::from_maybe_shared(Bytes::from(joined)) {
                Ok(value) => value,
                Err(_) => return,
            }
        }
    };
    headers.insert(X_FORWARDED_FOR, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        headers.append(CONNECTION, HeaderValue::from_static("x-other"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("content-length", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "content-type"]);
    }

    #[test]
    fn request_ids_are_kept_when_usable_and_generated_otherwise() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&headers), "has space");
        headers.insert(X_REQUEST_ID, HeaderValue::from_str(&"a".repeat(201)).unwrap());
        assert_eq!(request_id(&headers).len(), 36);
        let generated = request_id(&HeaderMap::new());
        let parsed = uuid::Uuid::parse_str(generated.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn upstream_statuses_map_to_error_reasons() {
        assert_eq!(status_error(StatusCode::OK), None);
        assert_eq!(status_error(StatusCode::FOUND), None);
        assert_eq!(status_error(StatusCode::NOT_FOUND), Some(ErrorReason::Client4xx));
        assert_eq!(
            status_error(StatusCode::INTERNAL_SERVER_ERROR),
            Some(ErrorReason::Upstream5xx)
        );
        // An upstream's own 502/504 is its error, not the sidecar's view of it.
        assert_eq!(
            status_error(StatusCode::BAD_GATEWAY),
            Some(ErrorReason::Upstream5xx)
        );
        assert_eq!(
            status_error(StatusCode::GATEWAY_TIMEOUT),
            Some(ErrorReason::Upstream5xx)
        );
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, HeaderValue::from_static("10.0.0.1"));
        append_forwarded_for(&mut headers, HeaderValue::from_static("10.0.0.2"));
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2");
    }
}
