//! One serving thread's keep-alive connections to the model server.
//!
//! A connection is leased to one request at a time and returns to the pool when that request's
//! response has been read to the end; connections that the upstream closed, or that are still busy,
//! are dropped instead. The pool lives on one thread, so its lock is never contended, and the
//! connections' tasks run on that same thread.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::Authority;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::RequestBody;

/// Connections idle for longer are not reused: model servers close idle keep-alive connections after
/// a few seconds (uvicorn: 5 s), and reusing one just as it closes would fail the request.
const MAX_IDLE_AGE: Duration = Duration::from_secs(4);
/// Idle connections kept per thread.
const MAX_IDLE: usize = 256;

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the upstream")]
    Connect(#[source] io::Error),
    #[error("HTTP handshake with the upstream failed")]
    Handshake(#[source] hyper::Error),
    #[error("the exchange with the upstream failed")]
    Exchange(#[source] hyper::Error),
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// The pool of one serving thread.
pub(crate) struct UpstreamPool {
    authority: Authority,
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
}

/// A connection in use; [`Lease::release`] returns it once the response has been read.
pub(crate) struct Lease {
    sender: SendRequest<RequestBody>,
    pool: Arc<UpstreamPool>,
}

impl Lease {
    /// Returns the connection to the pool, if it can take another request.
    pub(crate) fn release(self) {
        if self.sender.is_ready() {
            self.pool.put(self.sender);
        }
    }
}

impl UpstreamPool {
    pub(crate) fn new(authority: Authority) -> Self {
        let host = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        UpstreamPool {
            authority,
            host,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (origin-form URI) on an idle connection, or on a new one.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, self.host.clone());
        }
        while let Some(mut sender) = self.checkout() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(sender))),
                Err(mut err) => match err.take_message() {
                    // The connection closed before the request went out: try the next one.
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::Exchange(err.into_error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(UpstreamError::Exchange)?;
        Ok((response, self.lease(sender)))
    }

    fn lease(self: &Arc<Self>, sender: SendRequest<RequestBody>) -> Lease {
        Lease {
            sender,
            pool: Arc::clone(self),
        }
    }

    /// The most recently used idle connection that is still fit for a request.
    fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(Idle { sender, since }) = idle.pop() {
            if sender.is_ready() && since.elapsed() < MAX_IDLE_AGE {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<RequestBody>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, UpstreamError> {
        // IPv6 literals come bracketed in an authority.
        let host = self
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(UpstreamError::Connect)?;
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY on the upstream connection");
        }
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}
