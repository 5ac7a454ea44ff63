//! The HTTP client object_store talks to S3, GCS and Azure with: the hyper + rustls (ring) stack
//! the server already links, instead of object_store's reqwest + aws-lc-rs default, which would add
//! a second TLS stack and a C build to every compile (docs/architecture.md, "Artifacts").

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as PlainConnector;
use hyper_util::rt::TokioExecutor;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};

/// How long the server waits on an object store (docs/architecture.md, "Artifacts"). A store that
/// accepts connections and then stalls costs one request `response` (no headers) or `body_idle`
/// (the body stopped) before the client's 503: object_store retries a timed-out request only
/// while less than `retry` has passed, and `retry` is shorter than both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the TCP (and TLS) connection.
    pub connect: Duration,
    /// From sending a request to the response's headers.
    pub response: Duration,
    /// The longest gap between two pieces of a response body while the server waits for it (a
    /// slow reader downstream is not the store's fault and does not count).
    pub body_idle: Duration,
    /// After this long since a request's first try, a failed try is not retried.
    pub retry: Duration,
}

impl Timeouts {
    /// What the server runs with.
    pub const SERVER: Self = Self {
        connect: Duration::from_secs(5),
        response: Duration::from_secs(30),
        body_idle: Duration::from_secs(30),
        retry: Duration::from_secs(15),
    };
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::SERVER
    }
}

/// Builds [`HyperService`]s for object_store's builders (`with_http_connector`).
#[derive(Debug, Default, Clone, Copy)]
pub struct HyperConnector {
    timeouts: Timeouts,
}

impl HyperConnector {
    pub fn new(timeouts: Timeouts) -> Self {
        Self { timeouts }
    }
}

impl HttpConnector for HyperConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(HyperService::new(self.timeouts)))
    }
}

#[derive(Debug)]
enum Transport {
    Tls(Client<hyper_rustls::HttpsConnector<PlainConnector>, HttpRequestBody>),
    /// No TLS root certificates could be loaded: plain http only (a local MinIO still works).
    Plain(Client<PlainConnector, HttpRequestBody>),
}

/// One pooled hyper client for a store.
#[derive(Debug)]
pub struct HyperService {
    transport: Transport,
    timeouts: Timeouts,
}

impl HyperService {
    pub fn new(timeouts: Timeouts) -> Self {
        let mut plain = PlainConnector::new();
        plain.enforce_http(false);
        plain.set_connect_timeout(Some(timeouts.connect));
        plain.set_nodelay(true);
        let builder = Client::builder(TokioExecutor::new());
        let transport = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(tls) => {
                Transport::Tls(builder.build(tls.https_or_http().enable_http1().wrap_connector(plain)))
            }
            Err(err) => {
                tracing::warn!(error = %err, "no TLS root certificates: https object stores will fail");
                Transport::Plain(builder.build(plain))
            }
        };
        Self { transport, timeouts }
    }
}

#[async_trait]
impl HttpService for HyperService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let limit = self.timeouts.response;
        let sent = match &self.transport {
            Transport::Tls(client) => tokio::time::timeout(limit, client.request(req)).await,
            Transport::Plain(client) => tokio::time::timeout(limit, client.request(req)).await,
        };
        let response = match sent {
            Err(elapsed) => return Err(HttpError::new(HttpErrorKind::Timeout, elapsed)),
            Ok(Err(err)) => {
                let kind = if err.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                return Err(HttpError::new(kind, err));
            }
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let body = IdleTimeout::new(body, self.timeouts.body_idle);
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

// === impl IdleTimeout ===

/// A response body that fails with [`HttpErrorKind::Timeout`] when the store sends nothing for
/// `idle` while it is being waited on, so a stalled body ends in an error instead of a hang.
struct IdleTimeout {
    inner: Incoming,
    idle: Duration,
    /// Set when a poll found nothing ready; cleared by the next frame.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleTimeout {
    fn new(inner: Incoming, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: None,
        }
    }
}

impl Body for IdleTimeout {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline = None;
                Poll::Ready(frame.map(|f| f.map_err(|err| HttpError::new(HttpErrorKind::Interrupted, err))))
            }
            Poll::Pending => {
                let idle = this.idle;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match deadline.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        this.deadline = None;
                        let stalled = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the store sent no data for {idle:?}"),
                        );
                        Poll::Ready(Some(Err(HttpError::new(HttpErrorKind::Timeout, stalled))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
