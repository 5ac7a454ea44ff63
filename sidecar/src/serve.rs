//! The HTTP/1.1 accept loop shared by every listener in this crate, with graceful drain.
//!
//! On shutdown the listener is closed first (new connections are refused), every open connection is
//! told to finish the request it is serving and close (idle keep-alive connections close at once), and
//! whatever is still open when the drain deadline passes is aborted.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// How a listener's drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections still open at the deadline, aborted mid-request; 0 means a clean drain.
    pub aborted_connections: usize,
}

impl DrainReport {
    /// Whether every connection finished before the deadline.
    pub fn is_clean(&self) -> bool {
        self.aborted_connections == 0
    }
}

/// Serves HTTP/1.1 connections from `listener` until `shutdown` is cancelled, then drains them within
/// `drain_timeout`. `make_service` builds one service per connection from the peer address.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    make_service: M,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> DrainReport
where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let builder = http1::Builder::new();
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                };
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(error = %err, "cannot set TCP_NODELAY");
                }
                let conn = builder.serve_connection(TokioIo::new(stream), make_service(peer));
                let conn = graceful.watch(conn);
                connections.spawn(async move {
                    if let Err(err) = conn.await {
                        tracing::debug!(error = %err, %peer, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_ok();
    if !drained {
        connections.abort_all();
    }
    let mut aborted = 0;
    while let Some(joined) = connections.join_next().await {
        if joined.is_err_and(|err| err.is_cancelled()) {
            aborted += 1;
        }
    }
    DrainReport {
        aborted_connections: aborted,
    }
}
