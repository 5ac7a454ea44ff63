//! `mlkube-sidecar`: the proxy in front of a model server.
//!
//! [`Sidecar::start`] binds the serving and metrics ports. Traffic is served by `--worker-threads`
//! threads, each with its own single-threaded event loop and upstream keep-alive pool (the nginx
//! worker model); a dispatcher hands each new connection to the worker with the fewest open ones.
//! A request and its upstream call never leave their worker, so there is no cross-thread wake-up on
//! the request path.
//! The caller's runtime runs the rest: the metrics port ([`admin`]), the upstream health check behind
//! `/readyz` and, when capture is on, the [`capture`] uploader. [`Sidecar::shutdown`] stops them in the
//! order that loses nothing: readiness off, stop accepting, drain in-flight requests, flush captured
//! payloads, close the metrics port last so the final numbers can still be scraped during the drain.

pub mod admin;
mod body;
pub mod capture;
pub mod config;
mod forward;
pub mod metrics;
mod upstream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::admin::Readiness;
pub use self::config::{Args, Config, ConfigError};
pub use self::forward::X_REQUEST_ID;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use self::forward::fuzz_headers;
pub use self::metrics::ProxyMetrics;
use crate::serve::{ConnectionLimits, Dispatcher, DrainReport, WorkerQueue, serve_with_limits};

/// How long an idle keep-alive connection to the upstream stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout for the upstream and the tracking server (both are near).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Drain time for the metrics port once everything else has stopped.
const ADMIN_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the sidecar could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot install the signal handler")]
    Signal(#[source] io::Error),
    #[error("cannot start a worker thread")]
    Worker(#[source] io::Error),
}

impl Error {
    /// A bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Bind { .. } => "bind",
            Error::Signal(_) => "signal",
            Error::Worker(_) => "worker",
        }
    }
}

/// How a shutdown went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The serving port's drain; aborted connections had requests cut off at the deadline.
    pub proxy: DrainReport,
}

/// A running sidecar.
pub struct Sidecar {
    proxy_addr: SocketAddr,
    metrics_addr: SocketAddr,
    readiness: Arc<Readiness>,
    proxy_shutdown: CancellationToken,
    workers: Vec<oneshot::Receiver<DrainReport>>,
    capture_shutdown: CancellationToken,
    capture_task: Option<JoinHandle<()>>,
    background_shutdown: CancellationToken,
    health_task: JoinHandle<()>,
    admin_task: JoinHandle<DrainReport>,
}

impl Sidecar {
    /// Binds both ports and starts serving.
    #[tracing::instrument(skip_all, fields(listen = %config.listen, upstream = %config.upstream.authority))]
    pub async fn start(config: Config) -> Result<Sidecar, Error> {
        let Config {
            listen,
            metrics_listen,
            upstream,
            model,
            request_timeout,
            max_request_body_bytes,
            header_read_timeout,
            request_body_timeout,
            max_connections,
            shutdown_timeout,
            worker_threads,
            capture,
            log_format: _,
        } = config;
        let limits = ConnectionLimits { header_read_timeout };

        let proxy_listener = bind(listen).await?;
        let admin_listener = bind(metrics_listen).await?;
        let proxy_addr = local_addr(&proxy_listener, listen)?;
        let metrics_addr = local_addr(&admin_listener, metrics_listen)?;

        let metrics = Arc::new(ProxyMetrics::new(&model, worker_threads.get()));
        let readiness = Arc::new(Readiness::default());
        let proxy_shutdown = CancellationToken::new();
        let capture_shutdown = CancellationToken::new();
        let background_shutdown = CancellationToken::new();

        let (capturer, capture_task) = match &capture {
            Some(capture) => {
                let (tx, rx) = mpsc::channel(capture.queue_size);
                let queue = capture::QueueBytes::new(capture.max_queue_bytes);
                let uploader = capture::Uploader::new(
                    capture,
                    model.clone(),
                    http_client(),
                    queue.clone(),
                    metrics.capture.clone(),
                );
                let task = tokio::spawn(uploader.run(rx, capture_shutdown.clone()));
                tracing::info!(
                    endpoint = %capture.endpoint,
                    sample_rate = capture.sample_rate,
                    max_payload_bytes = capture.max_payload_bytes,
                    "payload capture on"
                );
                (
                    Some(capture::Capturer::new(
                        capture.sample_rate,
                        capture.max_payload_bytes,
                        tx,
                        queue,
                        metrics.capture.clone(),
                    )),
                    Some(task),
                )
            }
            None => (None, None),
        };

        let (dispatcher, queues) = Dispatcher::with_max_connections(worker_threads.get(), max_connections);
        let mut workers = Vec::with_capacity(queues.len());
        for (index, queue) in queues.into_iter().enumerate() {
            let worker = Worker {
                authority: upstream.authority.clone(),
                request_timeout,
                request_body_timeout,
                max_request_body: max_request_body_bytes,
                limits,
                metrics: metrics.worker(index),
                capture: capturer.clone(),
                shutdown: proxy_shutdown.clone(),
                drain_timeout: shutdown_timeout,
            };
            workers.push(worker.spawn(index, queue)?);
        }
        tokio::spawn(dispatcher.run(proxy_listener, proxy_shutdown.clone()));

        let health_task = tokio::spawn(admin::watch_upstream(
            http_client(),
            upstream.health_uri,
            upstream.health_interval,
            Arc::clone(&readiness),
            background_shutdown.clone(),
        ));
        let admin = admin::AdminService::new(metrics, Arc::clone(&readiness));
        let admin_task = tokio::spawn(serve_with_limits(
            admin_listener,
            move |_peer| admin.clone(),
            limits,
            background_shutdown.clone(),
            ADMIN_DRAIN_TIMEOUT,
        ));

        tracing::info!(
            %proxy_addr, %metrics_addr, model_name = %model.name, model_version = %model.version,
            worker_threads, max_connections, "mlkube-sidecar serving"
        );
        Ok(Sidecar {
            proxy_addr,
            metrics_addr,
            readiness,
            proxy_shutdown,
            workers,
            capture_shutdown,
            capture_task,
            background_shutdown,
            health_task,
            admin_task,
        })
    }

    /// The bound serving address (useful with port 0).
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// What `/readyz` currently says.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Stops accepting, drains in-flight requests within the shutdown timeout, flushes captured
    /// payloads, then closes the metrics port.
    pub async fn shutdown(self) -> ShutdownReport {
        let Sidecar {
            readiness,
            proxy_shutdown,
            workers,
            capture_shutdown,
            capture_task,
            background_shutdown,
            health_task,
            admin_task,
            ..
        } = self;
        readiness.start_draining();
        proxy_shutdown.cancel();
        let mut proxy = DrainReport {
            aborted_connections: 0,
        };
        for worker in workers {
            if let Ok(report) = worker.await {
                proxy.aborted_connections += report.aborted_connections;
            }
        }
        if proxy.is_clean() {
            tracing::info!("in-flight requests drained");
        } else {
            tracing::warn!(
                aborted_connections = proxy.aborted_connections,
                "shutdown deadline passed; cut off the requests still in flight"
            );
        }
        capture_shutdown.cancel();
        if let Some(task) = capture_task {
            let _flushed = task.await;
        }
        background_shutdown.cancel();
        let _health = health_task.await;
        let _admin = admin_task.await;
        ShutdownReport { proxy }
    }
}

/// One serving thread: its own runtime, upstream pool and share of the serving socket.
struct Worker {
    authority: Authority,
    request_timeout: Duration,
    request_body_timeout: Duration,
    max_request_body: u64,
    limits: ConnectionLimits,
    metrics: Arc<metrics::WorkerMetrics>,
    capture: Option<capture::Capturer>,
    shutdown: CancellationToken,
    drain_timeout: Duration,
}

impl Worker {
    /// Starts the thread; the receiver gets its drain report when it stops.
    fn spawn(self, index: usize, queue: WorkerQueue) -> Result<oneshot::Receiver<DrainReport>, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Worker)?;
        let (report_tx, report_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("mlkube-proxy-{index}"))
            .spawn(move || {
                let report = runtime.block_on(self.serve(queue));
                let _receiver_gone = report_tx.send(report);
            })
            .map_err(Error::Worker)?;
        Ok(report_rx)
    }

    async fn serve(self, queue: WorkerQueue) -> DrainReport {
        let Worker {
            authority,
            request_timeout,
            request_body_timeout,
            max_request_body,
            limits,
            metrics,
            capture,
            shutdown,
            drain_timeout,
        } = self;
        let shared = Arc::new(forward::Shared {
            upstream: Arc::new(upstream::UpstreamPool::new(authority)),
            request_timeout,
            request_body_timeout,
            max_request_body,
            metrics,
            capture,
        });
        serve_with_limits(
            queue,
            move |peer| forward::ProxyService::new(Arc::clone(&shared), peer),
            limits,
            shutdown,
            drain_timeout,
        )
        .await
    }
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(config: Config) -> Result<ShutdownReport, Error> {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(Error::Signal)?;
    let open_files = raise_open_files_limit();
    let wanted = u64::try_from(config.max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(OPEN_FILES_SLACK);
    if open_files.is_some_and(|limit| limit < wanted) {
        tracing::warn!(
            open_files_limit = open_files,
            max_connections = config.max_connections,
            "the open-files limit is below --max-connections plus room for upstream connections; \
             accepting will fail before the connection limit is reached"
        );
    } else {
        tracing::debug!(open_files_limit = open_files, "open-files limit");
    }
    let sidecar = Sidecar::start(config).await?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        result = tokio::signal::ctrl_c() => match result {
            Ok(()) => tracing::info!("SIGINT: shutting down"),
            Err(err) => tracing::warn!(error = %err, "cannot wait for SIGINT; shutting down"),
        },
    }
    Ok(sidecar.shutdown().await)
}

/// File descriptors wanted beyond one per client connection: upstream connections, listeners,
/// the capture client.
const OPEN_FILES_SLACK: u64 = 1024;
/// Linux's default `fs.nr_open`, the most a hard limit of "unlimited" can be raised to.
const MAX_OPEN_FILES: u64 = 1 << 20;

/// Raises the soft limit on open files to the hard one, as Go programs do at start: container
/// runtimes may start processes at 1024, which a thousand idle clients would use up. Returns the
/// limit in force (`None`: unlimited).
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let current = current?;
    let target = maximum.unwrap_or(MAX_OPEN_FILES);
    if target <= current {
        return Some(current);
    }
    let raised = Rlimit {
        current: Some(target),
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Some(target),
        Err(err) => {
            tracing::warn!(error = %err, current, target, "cannot raise the open-files limit");
            Some(current)
        }
    }
}

/// Connections the kernel completes and queues while the dispatcher is busy (capped by
/// `net.core.somaxconn`); tokio's default of 1024 overflows in a 100 ms stall under a connection
/// burst, and each overflow costs the client a 1 s SYN retransmit.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As std's TcpListener::bind does on Unix: a restarted sidecar can rebind at once.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| Error::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, Error> {
    listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })
}

/// An HTTP/1.1 client with a keep-alive pool, for health checks and capture uploads (the request
/// path uses the per-thread [`upstream::UpstreamPool`]).
fn http_client<B>() -> Client<HttpConnector, B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector)
}
