//! `mlkube-node-sampler`, the DaemonSet that measures one node.
//!
//! - A background task samples the node every `--interval` ([`sampler`]: [`host`] CPU, memory, disk
//!   and network; [`gpu`] readings through NVML; GPU memory per pod through [`cgroup`] and [`pods`])
//!   and encodes the result once ([`metrics`]); `/metrics` serves that encoding ([`serve`]).
//! - A watch of this node's pods keeps [`pods::PodIndex`] current: names for the per-pod series, and
//!   the MLflow runs that [`runs`] logs system metrics into.
//!
//! Without NVML or a GPU the GPU series are absent (one log line says why) and everything else works;
//! without Kubernetes credentials per-pod series carry the pod UID and no run is logged to.

pub mod cgroup;
pub mod config;
pub mod gpu;
pub mod host;
pub mod metrics;
pub mod pods;
pub mod runs;
pub mod sampler;
pub mod serve;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use config::{Args, Config, ConfigError, PodWatch};
pub use gpu::{FakeGpuSource, GpuProcess, GpuReading, GpuSource};
pub use pods::{PodIndex, PodInfo, RunTarget};

use self::cgroup::Cgroups;
use self::host::HostSampler;
use self::metrics::NodeMetrics;
use self::runs::{PodResources, RunSettings, TrackingClient};
use self::sampler::Sampler;
use self::serve::Exposition;
use mlkube_sidecar::telemetry::error_chain;

/// The first sample waits this long (or one interval if shorter), so that its CPU share covers a
/// measurable period.
const FIRST_SAMPLE_DELAY: Duration = Duration::from_millis(250);
/// How long open scrapes get to finish on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The sampler cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the host's CPU and memory")]
    Host(#[source] sysinfo::Error),
    #[error("cannot install the signal handlers")]
    Signal(#[source] io::Error),
}

impl Error {
    /// A stable word for logs and exit reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Bind { .. } => "bind",
            Error::Host(_) => "host",
            Error::Signal(_) => "signal",
        }
    }
}

// === impl NodeSampler ===

/// A running sampler: its sampling task, run monitors and metrics endpoint.
pub struct NodeSampler {
    addr: SocketAddr,
    exposition: Arc<Exposition>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeSampler {
    /// Binds `--listen` and starts sampling with these GPU and pod sources.
    pub async fn start(
        config: Config,
        gpu: Option<Arc<dyn gpu::GpuSource>>,
        pods: PodIndex,
    ) -> Result<NodeSampler, Error> {
        let Config {
            listen,
            interval,
            node_name,
            tracking_uri_default,
            tracking_auth,
            proc_root,
            sys_root,
            cgroup_root,
            root_fs,
            gpu: _,
            pod_watch: _,
            run_sampling_interval,
            run_samples_before_logging,
        } = config;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind { addr: listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr: listen, source })?;

        let cgroups = Cgroups::detect(&cgroup_root);
        match &cgroups {
            Some(found) => {
                tracing::info!(root = %cgroup_root.display(), version = found.version(), "reading pod cgroups")
            }
            None => {
                tracing::warn!(root = %cgroup_root.display(), "no cgroup mount here: runs get no per-pod CPU, memory or network")
            }
        }
        let host = HostSampler::new(sys_root, root_fs.clone()).map_err(Error::Host)?;
        let resources = Arc::new(PodResources {
            proc_root: proc_root.clone(),
            cgroups,
            gpu: gpu.clone(),
            root_fs,
            node_cpus: host::cpu_count(),
            node_memory_bytes: host.memory_total_bytes(),
        });
        let sampler = Sampler::new(host, gpu, proc_root, pods.clone());
        let exposition = Arc::new(Exposition::new(interval));
        let shutdown = CancellationToken::new();

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(sampling_loop(
            sampler,
            NodeMetrics::new(&node_name),
            Arc::clone(&exposition),
            interval,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(runs::supervise(
            pods,
            resources,
            RunSettings {
                default_tracking_uri: tracking_uri_default,
                sampling_interval: run_sampling_interval,
                samples_before_logging: run_samples_before_logging,
            },
            TrackingClient::new(tracking_auth),
            shutdown.clone(),
        )));
        let served = Arc::clone(&exposition);
        let server_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let report = mlkube_sidecar::serve::serve(
                listener,
                move |_peer| serve::service(Arc::clone(&served)),
                server_shutdown,
                DRAIN_TIMEOUT,
            )
            .await;
            if !report.is_clean() {
                tracing::debug!(
                    aborted = report.aborted_connections,
                    "scrapes cut off at shutdown"
                );
            }
        }));
        Ok(NodeSampler {
            addr,
            exposition,
            shutdown,
            tasks,
        })
    }

    /// The address `/metrics` is served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Samples taken so far.
    pub fn samples(&self) -> u64 {
        self.exposition.samples()
    }

    /// `/metrics` requests answered so far.
    pub fn scrapes(&self) -> u64 {
        self.exposition.scrapes()
    }

    /// Stops sampling, the run monitors and the endpoint.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Samples every `interval` on a blocking thread and publishes the encoding.
async fn sampling_loop(
    mut sampler: Sampler,
    mut metrics: NodeMetrics,
    exposition: Arc<Exposition>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval.min(FIRST_SAMPLE_DELAY), interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let joined = tokio::task::spawn_blocking(move || {
            let snapshot = sampler.sample();
            metrics.update(&snapshot);
            let text = metrics.encode();
            (sampler, metrics, text)
        })
        .await;
        let Ok((returned_sampler, returned_metrics, text)) = joined else {
            tracing::error!("the sampling thread failed; no more samples");
            return;
        };
        sampler = returned_sampler;
        metrics = returned_metrics;
        match text {
            Ok(text) => exposition.publish(Bytes::from(text)),
            Err(err) => tracing::warn!(error = %err, "cannot encode the metrics"),
        }
    }
}

/// Runs the sampler with NVML and the Kubernetes pod watch until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), Error> {
    let gpu = gpu::open(&config.gpu);
    let pods = PodIndex::new();
    let shutdown = CancellationToken::new();
    let mut watch = None;
    let kubeconfig = match &config.pod_watch {
        PodWatch::Disabled => {
            tracing::info!("pod watch disabled: per-pod series carry pod UIDs; no run logging");
            None
        }
        PodWatch::Infer => Some(None),
        PodWatch::Kubeconfig(path) => Some(Some(path.as_path())),
    };
    if let Some(kubeconfig) = kubeconfig {
        match pods::client(kubeconfig).await {
            Ok(client) => {
                watch = Some(tokio::spawn(pods::watch_pods(
                    client,
                    config.node_name.clone(),
                    pods.clone(),
                    shutdown.clone(),
                )));
            }
            Err(err) => tracing::warn!(
                error = %error_chain(&err),
                "no pod watch: per-pod series carry pod UIDs; no run logging"
            ),
        }
    }

    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(Error::Signal)?;
    let listen = config.listen;
    let sampler = NodeSampler::start(config, gpu, pods).await?;
    tracing::info!(%listen, addr = %sampler.local_addr(), "serving /metrics, /healthz and /readyz");
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
    sampler.shutdown().await;
    if let Some(watch) = watch {
        let _ = watch.await;
    }
    Ok(())
}
