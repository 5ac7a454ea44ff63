//! The HTTP client object_store talks to S3, GCS and Azure with: the hyper + rustls (ring) stack
//! the server already links, instead of object_store's reqwest + aws-lc-rs default, which would add
//! a second TLS stack and a C build to every compile (docs/architecture.md, "Artifacts").

use std::time::Duration;

use async_trait::async_trait;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector as PlainConnector;
use hyper_util::rt::TokioExecutor;
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};

/// How long connecting to the store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the store may take to start answering a request (the body then streams at its own
/// pace); object_store retries idempotent requests that time out.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds [`HyperService`]s for object_store's builders (`with_http_connector`).
#[derive(Debug, Default, Clone, Copy)]
pub struct HyperConnector;

impl HttpConnector for HyperConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(HyperService::new()))
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
}

impl HyperService {
    pub fn new() -> Self {
        let mut plain = PlainConnector::new();
        plain.enforce_http(false);
        plain.set_connect_timeout(Some(CONNECT_TIMEOUT));
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
        Self { transport }
    }
}

impl Default for HyperService {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl HttpService for HyperService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let sent = match &self.transport {
            Transport::Tls(client) => tokio::time::timeout(RESPONSE_TIMEOUT, client.request(req)).await,
            Transport::Plain(client) => tokio::time::timeout(RESPONSE_TIMEOUT, client.request(req)).await,
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
        let body = body.map_err(|err| HttpError::new(HttpErrorKind::Interrupted, err));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}
