//! The HTTP/1.1 accept loop shared by every listener in this crate, with graceful drain, and the
//! dispatcher that spreads one listener's connections over several single-threaded workers.
//!
//! On shutdown the listener is closed first (new connections are refused), every open connection is
//! told to finish the request it is serving and close (idle keep-alive connections close at once), and
//! whatever is still open when the drain deadline passes is aborted.
//!
//! Against idle and slow clients ([`ConnectionLimits`]): a new connection costs a task and a socket
//! until its first byte arrives (hyper's 16 KiB of buffers come only then), and is closed if that
//! byte does not come within the header read timeout; hyper then gives each request head that long
//! again. The dispatcher caps the connections open at once and answers those over the cap with a 503
//! of its own.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What one connection may do before it is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request head must be complete this long after the connection's first byte, or after the
    /// previous response; a connection that sends nothing for this long is closed.
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// hyper's own default header read timeout.
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

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

/// A source of accepted connections.
pub trait Accept: Send + 'static {
    /// Held for as long as the connection is open.
    type Guard: Send + 'static;

    /// The next connection; `None` when no more will come.
    fn accept(
        &mut self,
    ) -> impl Future<Output = Option<io::Result<(TcpStream, SocketAddr, Self::Guard)>>> + Send;
}

impl Accept for TcpListener {
    type Guard = ();

    async fn accept(&mut self) -> Option<io::Result<(TcpStream, SocketAddr, ())>> {
        Some(
            TcpListener::accept(self)
                .await
                .map(|(stream, peer)| (stream, peer, ())),
        )
    }
}

/// Serves HTTP/1.1 connections from `acceptor` until `shutdown` is cancelled (or the acceptor runs
/// dry), then drains them within `drain_timeout`. `make_service` builds one service per connection.
/// Connections get the default [`ConnectionLimits`].
pub async fn serve<A, M, S, B>(
    acceptor: A,
    make_service: M,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> DrainReport
where
    A: Accept,
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_with_limits(
        acceptor,
        make_service,
        ConnectionLimits::default(),
        shutdown,
        drain_timeout,
    )
    .await
}

/// [`serve`] with explicit per-connection limits.
pub async fn serve_with_limits<A, M, S, B>(
    mut acceptor: A,
    make_service: M,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    drain_timeout: Duration,
) -> DrainReport
where
    A: Accept,
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let ConnectionLimits { header_read_timeout } = limits;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = acceptor.accept() => {
                let (stream, peer, guard) = match accepted {
                    Some(Ok(accepted)) => accepted,
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                    None => break,
                };
                if let Err(err) = stream.set_nodelay(true) {
                    tracing::debug!(error = %err, "cannot set TCP_NODELAY");
                }
                let service = make_service(peer);
                let watcher = graceful.watcher();
                let builder = builder.clone();
                let closing = shutdown.clone();
                connections.spawn(async move {
                    let _guard = guard;
                    // Nothing of hyper's is allocated before the first byte, so idle connections
                    // cost little; they get the header read timeout to send it.
                    tokio::select! {
                        biased;
                        () = closing.cancelled() => return,
                        first = tokio::time::timeout(header_read_timeout, stream.readable()) => {
                            match first {
                                Ok(Ok(())) => {}
                                Ok(Err(err)) => {
                                    tracing::debug!(error = %err, %peer, "connection failed before its first byte");
                                    return;
                                }
                                Err(_elapsed) => {
                                    tracing::debug!(%peer, "closed a connection that sent nothing");
                                    return;
                                }
                            }
                        }
                    }
                    // Boxed: the task's future stays small while the connection waits above.
                    let conn = Box::pin(watcher.watch(builder.serve_connection(TokioIo::new(stream), service)));
                    if let Err(err) = conn.await {
                        tracing::debug!(error = %err, %peer, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(acceptor);
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

// === dispatch to workers ===

type Handoff = (std::net::TcpStream, SocketAddr);

/// A worker's end of the dispatcher: connections handed over from the accepting thread.
pub struct WorkerQueue {
    rx: mpsc::UnboundedReceiver<Handoff>,
    open: Arc<AtomicUsize>,
}

/// Counts a worker's open connection until dropped.
pub struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Accept for WorkerQueue {
    type Guard = OpenConnection;

    async fn accept(&mut self) -> Option<io::Result<(TcpStream, SocketAddr, OpenConnection)>> {
        let (stream, peer) = self.rx.recv().await?;
        // Counted by the dispatcher when it chose this worker; uncounted when this guard drops.
        let open = OpenConnection(Arc::clone(&self.open));
        let registered = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        Some(registered.map(|stream| (stream, peer, open)))
    }
}

/// Connections over the cap being answered 503 at once; beyond this many they are closed unanswered.
const MAX_REFUSING: usize = 256;
/// How long a refused connection is read from after its 503, so that closing it does not reset it
/// under the answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The answer to a connection over the cap, in MLflow's error shape.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 104\r\n\
\r\n\
{\"error_code\":\"TOO_MANY_CONNECTIONS\",\"message\":\"the sidecar has too many open connections; retry later\"}";

/// The accepting end: hands each connection to the worker with the fewest open connections, up to
/// `max_connections` open at once.
pub struct Dispatcher {
    workers: Vec<(mpsc::UnboundedSender<Handoff>, Arc<AtomicUsize>)>,
    next: usize,
    max_connections: usize,
    /// Whether the last connection was refused, to log once per episode rather than per refusal.
    refusing: bool,
    refusals: Arc<Semaphore>,
}

impl Dispatcher {
    /// A dispatcher and the queues of `workers` workers, with no connection cap.
    pub fn new(workers: usize) -> (Dispatcher, Vec<WorkerQueue>) {
        Self::with_max_connections(workers, usize::MAX)
    }

    /// A dispatcher that keeps at most `max_connections` open, and the queues of `workers` workers.
    pub fn with_max_connections(workers: usize, max_connections: usize) -> (Dispatcher, Vec<WorkerQueue>) {
        let (senders, queues) = (0..workers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let open = Arc::new(AtomicUsize::new(0));
                ((tx, Arc::clone(&open)), WorkerQueue { rx, open })
            })
            .unzip();
        (
            Dispatcher {
                workers: senders,
                next: 0,
                max_connections,
                refusing: false,
                refusals: Arc::new(Semaphore::new(MAX_REFUSING)),
            },
            queues,
        )
    }

    /// Connections the workers have open.
    fn open(&self) -> usize {
        self.workers
            .iter()
            .map(|(_, open)| open.load(Ordering::Relaxed))
            .sum()
    }

    /// Accepts on `listener` until `shutdown`, then closes it.
    pub async fn run(mut self, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            if self.open() >= self.max_connections {
                self.refuse(stream, peer);
                continue;
            }
            if self.refusing {
                self.refusing = false;
                tracing::info!(
                    max_connections = self.max_connections,
                    "accepting connections again"
                );
            }
            match stream.into_std() {
                Ok(stream) => self.hand_off((stream, peer)),
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }

    /// Answers a connection over the cap with a 503 and closes it (without an answer when too many
    /// are being refused already).
    fn refuse(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if !self.refusing {
            self.refusing = true;
            tracing::warn!(
                max_connections = self.max_connections,
                %peer,
                "connection limit reached; new connections are answered 503 until some close"
            );
        }
        let Ok(permit) = Arc::clone(&self.refusals).try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            if stream.write_all(TOO_MANY_CONNECTIONS).await.is_err() || stream.shutdown().await.is_err() {
                return;
            }
            // Read what the client sends until it closes (or the linger ends), so the close is a FIN
            // after the answer and not a reset that could discard it.
            let mut sink = [0u8; 512];
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        });
    }

    fn hand_off(&mut self, handoff: Handoff) {
        // Least open connections; ties go round-robin so idle workers share new connections.
        let count = self.workers.len();
        let start = self.next;
        self.next = (self.next + 1) % count;
        let chosen = (0..count)
            .map(|offset| (start + offset) % count)
            .min_by_key(|&i| self.workers[i].1.load(Ordering::Relaxed))
            .unwrap_or(0);
        let Some((tx, open)) = self.workers.get(chosen) else {
            return;
        };
        open.fetch_add(1, Ordering::Relaxed);
        if tx.send(handoff).is_err() {
            // The worker has stopped (shutdown): the connection is closed as it drops.
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_one_well_formed_response() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error_code"], "TOO_MANY_CONNECTIONS");
    }

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_worker() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = || {
            let client = std::net::TcpStream::connect(addr).unwrap();
            let (server, peer) = listener.accept().unwrap();
            (client, (server, peer))
        };
        let (mut dispatcher, mut queues) = Dispatcher::new(3);
        let mut clients = Vec::new();
        for _ in 0..6 {
            let (client, handoff) = connect();
            clients.push(client);
            dispatcher.hand_off(handoff);
        }
        let open: Vec<usize> = queues.iter().map(|q| q.open.load(Ordering::Relaxed)).collect();
        assert_eq!(open, [2, 2, 2]);

        // Worker 1 finishes both of its connections; the next two new ones go to it.
        let first = queues[1].accept().await.unwrap().unwrap();
        let second = queues[1].accept().await.unwrap().unwrap();
        drop((first, second));
        for _ in 0..2 {
            let (client, handoff) = connect();
            clients.push(client);
            dispatcher.hand_off(handoff);
        }
        let open: Vec<usize> = queues.iter().map(|q| q.open.load(Ordering::Relaxed)).collect();
        assert_eq!(open, [2, 2, 2]);
        assert_eq!(queues[1].rx.len(), 2);
    }
}
