//! The HTTP/1.1 accept loop shared by every listener in this crate, with graceful drain, and the
//! dispatcher that spreads one listener's connections over several single-threaded workers.
//!
//! On shutdown the listener is closed first (new connections are refused), every open connection is
//! told to finish the request it is serving and close (idle keep-alive connections close at once), and
//! whatever is still open when the drain deadline passes is aborted.

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
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
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
pub async fn serve<A, M, S, B>(
    mut acceptor: A,
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
    let builder = http1::Builder::new();
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
                let conn = builder.serve_connection(TokioIo::new(stream), make_service(peer));
                let conn = graceful.watch(conn);
                connections.spawn(async move {
                    let _guard = guard;
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

/// The accepting end: hands each connection to the worker with the fewest open connections.
pub struct Dispatcher {
    workers: Vec<(mpsc::UnboundedSender<Handoff>, Arc<AtomicUsize>)>,
    next: usize,
}

impl Dispatcher {
    /// A dispatcher and the queues of `workers` workers.
    pub fn new(workers: usize) -> (Dispatcher, Vec<WorkerQueue>) {
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
            },
            queues,
        )
    }

    /// Accepts on `listener` until `shutdown`, then closes it.
    pub async fn run(mut self, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted.and_then(|(stream, peer)| Ok((stream.into_std()?, peer))) {
                Ok(handoff) => self.hand_off(handoff),
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
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
