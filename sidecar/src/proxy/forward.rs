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
use hyper::body::{Body as _, Incoming};
use hyper::service::Service;

use super::body::{ClientWait, RequestBody, RequestBodyError, RequestGuard, ResponseBody};
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
    /// Longest total wait for the client's body bytes.
    pub(crate) request_body_timeout: Duration,
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
    const BODY_TIMEOUT: Local = Local {
        status: StatusCode::REQUEST_TIMEOUT,
        reason: ErrorReason::Client4xx,
        body: br#"{"error_code":"REQUEST_TIMEOUT","message":"the client did not send its request body in time"}"#,
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
    // No clock for a request without a body: it cannot keep anyone waiting.
    let wait = (!body.is_end_stream()).then(|| Arc::new(ClientWait::new()));
    let body = RequestBody::new(
        body,
        shared.max_request_body,
        Arc::clone(&shared.metrics),
        request_tap,
        wait.clone().map(|w| (w, shared.request_body_timeout)),
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
    let (response, lease) = match within_upstream_time(upstream, shared.request_timeout, wait.as_deref())
        .await
    {
        Some(Ok(exchange)) => exchange,
        Some(Err(err)) => {
            let answer = classify(&err);
            tracing::debug!(error = %error_chain(&err), status = %answer.status, "upstream request failed");
            return Ok(local(guard, answer, request_id));
        }
        None => {
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

/// Awaits `upstream` for `timeout` of the upstream's own time: whatever the request spent waiting for
/// its client's body (`wait`) moves the deadline on. `None` when the time ran out.
async fn within_upstream_time<F: Future>(
    upstream: F,
    timeout: Duration,
    wait: Option<&ClientWait>,
) -> Option<F::Output> {
    let Some(wait) = wait else {
        return tokio::time::timeout(timeout, upstream).await.ok();
    };
    let start = std::time::Instant::now();
    let mut upstream = std::pin::pin!(upstream);
    loop {
        let waited = wait.total(std::time::Instant::now());
        let deadline = tokio::time::Instant::from_std(start + timeout + waited);
        if let Ok(output) = tokio::time::timeout_at(deadline, upstream.as_mut()).await {
            return Some(output);
        }
        if wait.total(std::time::Instant::now()) == waited {
            return None;
        }
    }
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
            Some(RequestBodyError::TimedOut { .. }) => return Local::BODY_TIMEOUT,
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
        // Bytes, not `to_str`: a value with one non-ASCII byte must not hide the names beside it.
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends the client to `X-Forwarded-For`, as one value: every hop the client's headers list (in
/// all of its `X-Forwarded-For` lines, in order), then the client.
fn append_forwarded_for(headers: &mut HeaderMap, peer: HeaderValue) {
    let mut prior = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes().trim_ascii())
        .filter(|v| !v.is_empty())
        .peekable();
    if prior.peek().is_none() {
        headers.insert(X_FORWARDED_FOR, peer);
        return;
    }
    let mut joined = Vec::new();
    for hop in prior {
        joined.extend_from_slice(hop);
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(peer.as_bytes());
    // Valid header bytes joined by ", " stay valid; should that ever fail, the client's value stays.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// Fuzzing entry (`fuzz/`, cargo feature `fuzzing`): `data` read as `name:value` lines becomes a
/// header map that goes through the request path's header handling, and every promise the property
/// tests below check is asserted; a fuzzer hears of a broken one as a panic.
#[cfg(feature = "fuzzing")]
pub fn fuzz_headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(&value[1..])) {
            headers.append(name, value);
        }
    }

    let id = request_id(&headers);
    assert!(is_usable_request_id(&id));
    if let Some(sent) = headers.get(X_REQUEST_ID).filter(|v| is_usable_request_id(v)) {
        assert_eq!(&id, sent);
    }

    let named: Vec<Vec<u8>> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|n| n.trim_ascii().to_ascii_lowercase())
        .collect();
    let mut stripped = headers.clone();
    strip_hop_by_hop(&mut stripped);
    for name in headers.keys() {
        let named_here = named.iter().any(|n| n.as_slice() == name.as_str().as_bytes());
        if HOP_BY_HOP.contains(name) || named_here {
            assert!(!stripped.contains_key(name), "{name} forwarded");
        } else {
            assert!(
                headers.get_all(name).iter().eq(stripped.get_all(name).iter()),
                "{name} changed"
            );
        }
    }

    let hops = |value: &[u8]| -> Vec<Vec<u8>> {
        value
            .split(|&b| b == b',')
            .map(|hop| hop.trim_ascii().to_vec())
            .filter(|hop| !hop.is_empty())
            .collect()
    };
    let mut expected: Vec<Vec<u8>> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|v| hops(v.as_bytes()))
        .collect();
    expected.push(b"10.0.0.1".to_vec());
    append_forwarded_for(&mut headers, HeaderValue::from_static("10.0.0.1"));
    let forwarded: Vec<&HeaderValue> = headers.get_all(X_FORWARDED_FOR).iter().collect();
    assert_eq!(forwarded.len(), 1);
    assert!(forwarded.first().is_some_and(|v| hops(v.as_bytes()) == expected));
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

    // Found by the property tests below.

    #[test]
    fn every_forwarded_for_line_is_kept() {
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2, 10.0.0.3"));
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static(" "));
        append_forwarded_for(&mut headers, HeaderValue::from_static("10.0.0.9"));
        let values: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(values, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.9"]);
    }

    #[test]
    fn a_non_ascii_byte_in_connection_does_not_hide_the_names_beside_it() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_bytes(b"x-secret, caf\xe9").unwrap());
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }
}

#[cfg(test)]
mod proptests {
    //! Properties of the header handling, for any header names and values a client or model server
    //! can send: hop-by-hop headers and those `Connection` names are never forwarded and everything
    //! else is forwarded unchanged; the request id is the client's when usable, else a fresh UUID v4;
    //! `X-Forwarded-For` lists every earlier hop, then the client.

    use proptest::prelude::*;

    use super::*;

    /// Any valid header name, often one of the hop-by-hop ones (in any case).
    fn header_name() -> impl Strategy<Value = HeaderName> {
        let hop = prop::sample::select(HOP_BY_HOP.to_vec()).prop_map(|n| n.as_str().to_owned());
        let well_known = prop::sample::select(vec![
            "content-type",
            "content-length",
            "x-request-id",
            "x-forwarded-for",
            "expect",
            "host",
            "x-a",
            "x-b",
        ])
        .prop_map(str::to_owned);
        let token = "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}";
        prop_oneof![hop, well_known, token]
            .prop_flat_map(|name| {
                proptest::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
                    name.chars()
                        .zip(upper)
                        .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                        .collect::<String>()
                })
            })
            .prop_filter_map("a valid header name", |name| {
                HeaderName::from_bytes(name.as_bytes()).ok()
            })
    }

    /// Any valid header value: visible ASCII, spaces, tabs, obs-text bytes; often a list of names.
    fn header_value() -> impl Strategy<Value = HeaderValue> {
        let bytes = proptest::collection::vec(
            prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff, Just(b',')],
            0..40,
        );
        // A list of names, sometimes with a token that is not ASCII.
        let names = (
            proptest::collection::vec(
                (header_name(), prop::sample::select(vec!["", " ", "\t", "  "])),
                1..4,
            ),
            prop::option::of(prop::sample::select(vec!["caf\u{e9}", "\u{ff}", "x\u{80}y"])),
        )
            .prop_map(|(names, odd)| {
                let mut text: Vec<u8> = names
                    .iter()
                    .map(|(n, ws)| format!("{ws}{}{ws}", n.as_str()))
                    .collect::<Vec<_>>()
                    .join(",")
                    .into_bytes();
                if let Some(odd) = odd {
                    // Latin-1 bytes, as obs-text arrives on the wire.
                    text.extend(b", ");
                    text.extend(odd.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')));
                }
                text
            });
        prop_oneof![bytes, names]
            .prop_filter_map("a valid header value", |b| HeaderValue::from_bytes(&b).ok())
    }

    fn header_map() -> impl Strategy<Value = HeaderMap> {
        proptest::collection::vec((header_name(), header_value()), 0..16).prop_map(|pairs| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(name, value);
            }
            headers
        })
    }

    /// The names `Connection` lists, lower-cased.
    fn connection_names(headers: &HeaderMap) -> Vec<String> {
        headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|name| String::from_utf8_lossy(name.trim_ascii()).to_ascii_lowercase())
            .collect()
    }

    fn hops(value: &[u8]) -> Vec<Vec<u8>> {
        value
            .split(|&b| b == b',')
            .map(|hop| hop.trim_ascii().to_vec())
            .filter(|hop| !hop.is_empty())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn only_end_to_end_headers_are_forwarded_and_unchanged(headers in header_map()) {
            let named = connection_names(&headers);
            let mut stripped = headers.clone();
            strip_hop_by_hop(&mut stripped);
            for name in headers.keys() {
                let hop_by_hop = HOP_BY_HOP.contains(name) || named.iter().any(|n| n == name.as_str());
                if hop_by_hop {
                    prop_assert!(!stripped.contains_key(name), "{name} was kept");
                } else {
                    let before: Vec<_> = headers.get_all(name).iter().collect();
                    let after: Vec<_> = stripped.get_all(name).iter().collect();
                    prop_assert_eq!(before, after, "{} changed", name);
                }
            }
            prop_assert!(stripped.keys().all(|name| headers.contains_key(name)));
            let mut again = stripped.clone();
            strip_hop_by_hop(&mut again);
            prop_assert_eq!(again, stripped);
        }

        #[test]
        fn request_ids_are_the_clients_when_usable_else_a_uuid(headers in header_map(), id in header_value()) {
            let mut headers = headers;
            headers.insert(X_REQUEST_ID, id.clone());
            let chosen = request_id(&headers);
            prop_assert!(is_usable_request_id(&chosen));
            let usable = !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.as_bytes().iter().all(u8::is_ascii_graphic);
            if usable {
                prop_assert_eq!(chosen, id);
            } else {
                let text = chosen.to_str().map_err(|e| TestCaseError::fail(e.to_string()))?;
                let uuid = uuid::Uuid::parse_str(text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(uuid.get_version_num(), 4);
            }
        }

        #[test]
        fn forwarded_for_lists_every_hop_then_the_client(
            headers in header_map(),
            prior in proptest::collection::vec(header_value(), 0..4),
            peer in prop_oneof![Just("10.1.2.3"), Just("::1"), Just("2001:db8::7")],
        ) {
            let mut headers = headers;
            headers.remove(X_FORWARDED_FOR);
            for value in &prior {
                headers.append(X_FORWARDED_FOR, value.clone());
            }
            let others: Vec<(HeaderName, HeaderValue)> = headers
                .iter()
                .filter(|(n, _)| **n != X_FORWARDED_FOR)
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            append_forwarded_for(&mut headers, HeaderValue::from_static(peer));
            let values: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
            prop_assert_eq!(values.len(), 1);
            let mut expected: Vec<Vec<u8>> = prior.iter().flat_map(|v| hops(v.as_bytes())).collect();
            expected.push(peer.as_bytes().to_vec());
            prop_assert_eq!(hops(values[0].as_bytes()), expected);
            let after: Vec<(HeaderName, HeaderValue)> = headers
                .iter()
                .filter(|(n, _)| **n != X_FORWARDED_FOR)
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            prop_assert_eq!(after, others);
        }
    }
}
