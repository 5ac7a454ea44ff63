//! Webhook notifications of monitor state changes, off every request path.
//!
//! [`Notifier::notify`] offers a notification to a bounded queue with `try_send`: when the queue is
//! full the notification is dropped and counted, so neither evaluation nor ingestion ever waits on
//! a webhook. A background worker delivers queued notifications (a few at a time), each POST
//! bounded by a timeout and retried with exponential backoff on connection errors, timeouts, 5xx,
//! 408 and 429.
//!
//! Targets on loopback, private, link-local and other non-public addresses are refused unless
//! `--monitoring-allow-private-webhooks` is set: literal addresses when the monitor is written and
//! again before sending, host names after DNS resolution — the connection goes only to the
//! addresses that passed the check, so a name cannot re-resolve to a private address in between.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, Uri, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, mpsc};

use super::exporter::QualityMetrics;
use super::monitors::Notification;

/// How notifications are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Allow loopback, private and link-local targets.
    pub allow_private: bool,
    /// Limit for one POST (connect included).
    pub timeout: Duration,
    /// Tries per notification, the first included.
    pub max_attempts: u32,
    /// Wait before the second try; doubled for each further one, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Notifications waiting for delivery; more are dropped and counted.
    pub queue_capacity: usize,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(5),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            queue_capacity: 1024,
            concurrency: 4,
        }
    }
}

/// Why a webhook could not be used or delivered.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("'{0}' is not an http:// or https:// URL with a host (and no user info)")]
    InvalidUrl(String),
    #[error(
        "webhook target '{0}' is a loopback, private, link-local or otherwise non-public address; \
         start the server with --monitoring-allow-private-webhooks to allow it"
    )]
    Private(String),
    #[error("https webhooks are unavailable: no TLS root certificates could be loaded")]
    NoTls,
    #[error("could not build the webhook request")]
    Build(#[source] axum::http::Error),
    #[error("webhook request failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("webhook did not answer within {0:?}")]
    Timeout(Duration),
    #[error("webhook answered HTTP {0}")]
    Status(u16),
}

impl WebhookError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => "invalid_url",
            Self::Private(_) => "private_target",
            Self::NoTls => "no_tls",
            Self::Build(_) => "build",
            Self::Request(_) => "request",
            Self::Timeout(_) => "timeout",
            Self::Status(_) => "status",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Self::Request(_) | Self::Timeout(_) => true,
            Self::Status(code) => *code >= 500 || *code == 408 || *code == 429,
            Self::InvalidUrl(_) | Self::Private(_) | Self::NoTls | Self::Build(_) => false,
        }
    }
}

/// What became of a notification (the `outcome` label of the notifications counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Failed,
    Refused,
    Dropped,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Self::Delivered, Self::Failed, Self::Refused, Self::Dropped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::Dropped => "dropped",
        }
    }
}

/// Whether an address is one webhooks may not reach by default: loopback, private (RFC 1918,
/// IPv6 unique local), link-local, unspecified, broadcast, multicast, shared (100.64/10),
/// documentation, benchmarking and reserved ranges, and IPv6 forms embedding such IPv4 addresses.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            let embedded_v4 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[..6] == [0; 6]) // IPv4-compatible ::a.b.c.d (deprecated)
                || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4] && forbidden_v4(embedded_v4()))
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved
}

/// Check a webhook URL: http(s), a host, no user info, and — unless private targets are allowed —
/// no literal non-public address and no `localhost`. Host names are checked again after DNS
/// resolution at delivery.
pub fn check_url(url: &str, allow_private: bool) -> Result<Uri, WebhookError> {
    let invalid = || WebhookError::InvalidUrl(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| invalid())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid());
    }
    let authority = uri.authority().ok_or_else(invalid)?;
    if authority.as_str().contains('@') {
        return Err(invalid());
    }
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(invalid)?;
    if !allow_private {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let lower = bare.to_ascii_lowercase();
        let forbidden = match bare.parse::<IpAddr>() {
            Ok(ip) => is_forbidden_ip(ip),
            Err(_) => lower == "localhost" || lower.ends_with(".localhost"),
        };
        if forbidden {
            return Err(WebhookError::Private(host.to_owned()));
        }
    }
    Ok(uri)
}

/// A resolved host name had only addresses webhooks may not reach.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to non-public addresses")]
struct PrivateTarget(String);

/// DNS through the system resolver, keeping only the addresses webhooks may reach.
#[derive(Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|a| allow_private || !is_forbidden_ip(a.ip()))
                .collect();
            if kept.is_empty() && !resolved.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    PrivateTarget(host),
                ));
            }
            Ok(kept.into_iter())
        })
    }
}

fn refused_by_resolver(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<PrivateTarget>())
        {
            return true;
        }
        current = e.source();
    }
    false
}

type Plain = HttpConnector<GuardedResolver>;

enum Transport {
    Tls(Client<hyper_rustls::HttpsConnector<Plain>, Full<Bytes>>),
    /// No TLS roots could be loaded: http only.
    Plain(Client<Plain, Full<Bytes>>),
}

impl Transport {
    fn new(settings: &WebhookSettings) -> Self {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            allow_private: settings.allow_private,
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.timeout));
        let builder = Client::builder(TokioExecutor::new());
        match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(tls) => Self::Tls(builder.build(tls.https_or_http().enable_http1().wrap_connector(http))),
            Err(err) => {
                tracing::warn!(error = %err, "no TLS root certificates: https webhooks will fail");
                Self::Plain(builder.build(http))
            }
        }
    }

    async fn post(&self, uri: Uri, body: Bytes, timeout: Duration) -> Result<(), WebhookError> {
        let request = Request::post(uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("mlkube-server/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(WebhookError::Build)?;
        let sent = match self {
            Self::Tls(client) => tokio::time::timeout(timeout, client.request(request)).await,
            Self::Plain(_) if uri.scheme_str() == Some("https") => return Err(WebhookError::NoTls),
            Self::Plain(client) => tokio::time::timeout(timeout, client.request(request)).await,
        };
        let response = match sent {
            Err(_) => return Err(WebhookError::Timeout(timeout)),
            Ok(Err(err)) => {
                if refused_by_resolver(&err) {
                    return Err(WebhookError::Private(uri.host().unwrap_or_default().to_owned()));
                }
                return Err(WebhookError::Request(err));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(WebhookError::Status(status.as_u16()))
        }
    }
}

struct Job {
    url: String,
    monitor_id: String,
    body: Bytes,
}

/// The sending half: cheap to call, never waits.
pub struct Notifier {
    tx: mpsc::Sender<Job>,
    metrics: Option<QualityMetrics>,
}

impl Notifier {
    /// Start the delivery worker (needs a Tokio runtime). It stops when the notifier is dropped.
    pub fn start(settings: WebhookSettings, metrics: Option<QualityMetrics>) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let transport = Arc::new(Transport::new(&settings));
        tokio::spawn(deliver_all(rx, transport, settings, metrics.clone()));
        Self { tx, metrics }
    }

    /// Queue a notification for `url`; dropped (and counted) when the queue is full.
    pub fn notify(&self, url: &str, notification: Notification) {
        let body = match serde_json::to_vec(&notification) {
            Ok(b) => Bytes::from(b),
            Err(err) => {
                tracing::error!(error = %err, "cannot encode a webhook notification");
                return;
            }
        };
        let job = Job {
            url: url.to_owned(),
            monitor_id: notification.monitor_id,
            body,
        };
        if let Err(err) = self.tx.try_send(job) {
            let monitor_id = match &err {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => {
                    j.monitor_id.clone()
                }
            };
            tracing::warn!(%monitor_id, "webhook queue full or closed; notification dropped");
            count(&self.metrics, Outcome::Dropped);
        }
    }
}

fn count(metrics: &Option<QualityMetrics>, outcome: Outcome) {
    if let Some(m) = metrics {
        m.count_notification(outcome);
    }
}

async fn deliver_all(
    mut rx: mpsc::Receiver<Job>,
    transport: Arc<Transport>,
    settings: WebhookSettings,
    metrics: Option<QualityMetrics>,
) {
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (transport, settings, metrics) = (transport.clone(), settings.clone(), metrics.clone());
        tokio::spawn(async move {
            let outcome = deliver(&transport, &settings, &job).await;
            count(&metrics, outcome);
            drop(permit);
        });
    }
}

async fn deliver(transport: &Transport, settings: &WebhookSettings, job: &Job) -> Outcome {
    let uri = match check_url(&job.url, settings.allow_private) {
        Ok(uri) => uri,
        Err(err) => {
            tracing::warn!(monitor_id = %job.monitor_id, error = %err, reason = err.reason(), "webhook refused");
            return Outcome::Refused;
        }
    };
    let mut backoff = settings.initial_backoff;
    let attempts = settings.max_attempts.max(1);
    for attempt in 1..=attempts {
        match transport
            .post(uri.clone(), job.body.clone(), settings.timeout)
            .await
        {
            Ok(()) => {
                tracing::debug!(monitor_id = %job.monitor_id, attempt, "webhook delivered");
                return Outcome::Delivered;
            }
            Err(err @ WebhookError::Private(_)) => {
                tracing::warn!(monitor_id = %job.monitor_id, error = %err, reason = err.reason(), "webhook refused");
                return Outcome::Refused;
            }
            Err(err) if err.retryable() && attempt < attempts => {
                tracing::debug!(monitor_id = %job.monitor_id, attempt, error = %err, "webhook failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(settings.max_backoff);
            }
            Err(err) => {
                tracing::warn!(
                    monitor_id = %job.monitor_id,
                    attempt,
                    error = %err,
                    reason = err.reason(),
                    "webhook delivery failed"
                );
                return Outcome::Failed;
            }
        }
    }
    Outcome::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_forbidden_ip(ip.parse().unwrap()), "{ip} should be forbidden");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!is_forbidden_ip(ip.parse().unwrap()), "{ip} should be allowed");
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://hooks.example.com/services/x", false).is_ok());
        assert!(check_url("http://8.8.8.8:8080/hook", false).is_ok());
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "http://",
            "http://user:pw@example.com/",
            "",
        ] {
            assert!(
                matches!(check_url(bad, true), Err(WebhookError::InvalidUrl(_))),
                "{bad:?} should be invalid"
            );
        }
        for private in [
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://api.localhost/hook",
            "http://[::1]:80/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(
                matches!(check_url(private, false), Err(WebhookError::Private(_))),
                "{private:?} should be refused"
            );
            assert!(
                check_url(private, true).is_ok(),
                "{private:?} allowed by the flag"
            );
        }
    }

    #[test]
    fn retry_policy() {
        assert!(WebhookError::Status(503).retryable());
        assert!(WebhookError::Status(429).retryable());
        assert!(!WebhookError::Status(404).retryable());
        assert!(WebhookError::Timeout(Duration::from_secs(1)).retryable());
        assert!(!WebhookError::Private("x".into()).retryable());
    }

    #[tokio::test]
    async fn resolver_refuses_names_of_private_addresses() {
        use tower::Service;
        let mut guarded = GuardedResolver { allow_private: false };
        let err = guarded
            .call("localhost".parse::<Name>().unwrap())
            .await
            .unwrap_err();
        assert!(refused_by_resolver(&err));
        let mut open = GuardedResolver { allow_private: true };
        assert!(
            open.call("localhost".parse::<Name>().unwrap())
                .await
                .unwrap()
                .next()
                .is_some()
        );
    }
}
