//! MLflow system metrics logged into the runs of the pods on this node, without psutil or pynvml in
//! the training image.
//!
//! A pod names its run with the annotation `mlkube.io/run-id` (or `MLFLOW_RUN_ID` in a container's
//! env) and its tracking server with `mlkube.io/tracking-uri` (or `MLFLOW_TRACKING_URI`; else
//! `--tracking-uri-default`). While the pod runs, one task per run does what MLflow's
//! `SystemMetricsMonitor` does: every sampling interval (10 s, or the pod's
//! `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`) it takes a sample and asks `runs/get` whether the run
//! is still `RUNNING`; after `MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING` samples (1) it logs their
//! mean, rounded to one decimal, as `system/<key>` at steps 0, 1, 2, … through `runs/log-batch`.
//! Network keys are not averaged: they are the megabytes moved since logging started. Steps continue
//! after the run's last `system/` step, so a restarted sampler does not log step 0 twice.
//!
//! What a sample holds, with MLflow's keys:
//! - `cpu_utilization_percentage`: the pod cgroup's CPU time over the interval, as a share of its CPU
//!   limit (of all the node's CPUs when it has none);
//! - `system_memory_usage_megabytes`, `system_memory_usage_percentage`: the pod's working set (what
//!   the kubelet counts), of its limit (of the node's memory when it has none);
//! - `disk_usage_percentage`, `disk_usage_megabytes`, `disk_available_megabytes`: the node's root
//!   filesystem, where the pod's writable layer lives;
//! - `network_receive_megabytes`, `network_transmit_megabytes`: the pod's network namespace,
//!   loopback left out;
//! - `gpu_<i>_{memory_usage_percentage, memory_usage_megabytes, utilization_percentage,
//!   power_usage_watts, power_usage_percentage}` for each GPU a process of the pod runs on,
//!   numbered 0, 1, … in NVML order as the pod itself sees them.
//!
//! The task stops when the run is no longer `RUNNING` (or does not exist), or when the pod stops
//! running or leaves the node.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::cgroup::{Cgroups, PodCgroup};
use super::config::validate_tracking_uri;
use super::gpu::GpuSource;
use super::host::{self, NetworkTotals};
use super::metrics::{MEGABYTE, ratio_percent};
use super::pods::{PodIndex, PodInfo, RunTarget};
use super::sampler::gpus_of_pod;
use mlkube_sidecar::telemetry::error_chain;

/// Longest wait for one tracking server call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `runs/get` answer read.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Pause before asking again when the tracking server cannot be reached at the start.
const RETRY_START: Duration = Duration::from_secs(10);
/// The prefix of every key, as MLflow writes it.
pub const SYSTEM_PREFIX: &str = "system/";
/// Keys reported as they are (MB since logging started), not averaged.
const NETWORK_KEYS: [&str; 2] = ["network_receive_megabytes", "network_transmit_megabytes"];

// === the tracking client ===

/// Talking to a tracking server failed.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("invalid tracking URL {0:?}")]
    Url(String),
    #[error("https needs CA certificates, and none were found on this machine")]
    NoTls,
    #[error("request failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot read the answer")]
    Body(#[source] Box<dyn StdError + Send + Sync>),
    #[error("the run does not exist")]
    NotFound,
    #[error("HTTP {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("unexpected answer")]
    Json(#[source] serde_json::Error),
}

/// A run as `runs/get` describes it, reduced to what the monitor needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunState {
    pub status: String,
    /// One past the largest step of the run's `system/` metrics; 0 when it has none.
    pub next_system_step: i64,
}

impl RunState {
    pub fn is_running(&self) -> bool {
        self.status == "RUNNING"
    }
}

#[derive(Deserialize)]
struct GetRunResponse {
    run: RunJson,
}
#[derive(Deserialize)]
struct RunJson {
    info: RunInfoJson,
    #[serde(default)]
    data: RunDataJson,
}
#[derive(Deserialize)]
struct RunInfoJson {
    #[serde(default)]
    status: String,
}
#[derive(Default, Deserialize)]
struct RunDataJson {
    #[serde(default)]
    metrics: Vec<MetricJson>,
}
#[derive(Deserialize)]
struct MetricJson {
    key: String,
    #[serde(default)]
    step: i64,
}

/// One metric of a `runs/log-batch` body.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
}

#[derive(Serialize)]
struct LogBatch<'a> {
    run_id: &'a str,
    metrics: &'a [Metric],
}

/// MLflow REST calls of the run monitors: `runs/get` and `runs/log-batch`.
#[derive(Clone)]
pub struct TrackingClient {
    http: Client<HttpConnector, Full<Bytes>>,
    /// `None` when the machine has no CA certificates.
    https: Option<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
    auth: Option<HeaderValue>,
}

impl TrackingClient {
    pub fn new(auth: Option<HeaderValue>) -> TrackingClient {
        let builder = Client::builder(TokioExecutor::new());
        let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(tls) => Some(builder.build(tls.https_or_http().enable_http1().build())),
            Err(err) => {
                tracing::debug!(error = %err, "no CA certificates: https tracking servers cannot be reached");
                None
            }
        };
        TrackingClient {
            http: builder.build_http(),
            https,
            auth,
        }
    }

    async fn call(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Result<Bytes, TrackingError> {
        let uri: Uri = url.parse().map_err(|_| TrackingError::Url(url.to_owned()))?;
        let https = uri.scheme_str() == Some("https");
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| TrackingError::Url(url.to_owned()))?;
        let exchange = async {
            let response = if https {
                let client = self.https.as_ref().ok_or(TrackingError::NoTls)?;
                client.request(request).await
            } else {
                self.http.request(request).await
            }
            .map_err(TrackingError::Request)?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(TrackingError::Body)?
                .to_bytes();
            Ok::<_, TrackingError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| TrackingError::Timeout(REQUEST_TIMEOUT))??;
        if status == StatusCode::NOT_FOUND {
            return Err(TrackingError::NotFound);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(TrackingError::Status {
                status,
                body: text.chars().take(300).collect(),
            });
        }
        Ok(body)
    }

    /// `GET {base}/api/2.0/mlflow/runs/get?run_id=…`.
    pub async fn get_run(&self, base: &str, run_id: &str) -> Result<RunState, TrackingError> {
        let url = format!("{base}/api/2.0/mlflow/runs/get?run_id={run_id}");
        let body = self.call(Method::GET, &url, None).await?;
        let parsed: GetRunResponse = serde_json::from_slice(&body).map_err(TrackingError::Json)?;
        let next_system_step = parsed
            .run
            .data
            .metrics
            .iter()
            .filter(|m| m.key.starts_with(SYSTEM_PREFIX))
            .map(|m| m.step + 1)
            .max()
            .unwrap_or(0);
        Ok(RunState {
            status: parsed.run.info.status,
            next_system_step,
        })
    }

    /// `POST {base}/api/2.0/mlflow/runs/log-batch`.
    pub async fn log_batch(&self, base: &str, run_id: &str, metrics: &[Metric]) -> Result<(), TrackingError> {
        let url = format!("{base}/api/2.0/mlflow/runs/log-batch");
        let body = serde_json::to_vec(&LogBatch { run_id, metrics }).map_err(TrackingError::Json)?;
        self.call(Method::POST, &url, Some(body)).await.map(drop)
    }
}

// === sampling one pod ===

/// What the run monitors share: where to read pods from.
pub struct PodResources {
    pub proc_root: PathBuf,
    /// `None` when no cgroup mount was recognised.
    pub cgroups: Option<Cgroups>,
    pub gpu: Option<Arc<dyn GpuSource>>,
    pub root_fs: PathBuf,
    /// The node's logical CPUs and memory: the share of a pod without limits.
    pub node_cpus: usize,
    pub node_memory_bytes: u64,
}

/// One sample: MLflow key (without `system/`) → value.
pub type Sample = BTreeMap<String, f64>;

/// Samples one pod the way MLflow's monitors sample a machine.
pub struct PodSampler {
    uid: String,
    resources: Arc<PodResources>,
    cgroup: Option<PodCgroup>,
    last_cpu: Option<(u64, Instant)>,
    network_start: Option<NetworkTotals>,
    /// NVML indices of the GPUs the pod has run on, in NVML order.
    gpus: BTreeSet<u32>,
    warned_cgroup: bool,
}

impl PodSampler {
    /// Takes the baselines (CPU time, network bytes) that the first sample is measured against.
    pub fn new(uid: &str, resources: Arc<PodResources>) -> PodSampler {
        let mut sampler = PodSampler {
            uid: uid.to_owned(),
            resources,
            cgroup: None,
            last_cpu: None,
            network_start: None,
            gpus: BTreeSet::new(),
            warned_cgroup: false,
        };
        sampler.find_cgroup();
        if let Some(cgroup) = &sampler.cgroup {
            sampler.last_cpu = cgroup.cpu_usage_usec().ok().map(|usec| (usec, Instant::now()));
        }
        sampler.network_start = sampler.network();
        sampler
    }

    fn find_cgroup(&mut self) {
        if self.cgroup.is_some() {
            return;
        }
        self.cgroup = self
            .resources
            .cgroups
            .as_ref()
            .and_then(|c| c.find_pod(&self.uid));
        if self.cgroup.is_none() && !self.warned_cgroup {
            tracing::warn!(
                pod_uid = %self.uid,
                "the pod's cgroup is not under the cgroup root: its CPU, memory and network are not logged"
            );
            self.warned_cgroup = true;
        }
    }

    /// The pod's network namespace counters, through any of its processes.
    fn network(&self) -> Option<NetworkTotals> {
        let pid = self.cgroup.as_ref()?.any_pid()?;
        let text =
            std::fs::read_to_string(self.resources.proc_root.join(pid.to_string()).join("net/dev")).ok()?;
        let interfaces = host::parse_proc_net_dev(&text);
        Some(NetworkTotals {
            receive_bytes: interfaces.iter().map(|i| i.receive_bytes).sum(),
            transmit_bytes: interfaces.iter().map(|i| i.transmit_bytes).sum(),
        })
    }

    /// One sample (blocking: file reads and NVML calls).
    pub fn collect(&mut self) -> Sample {
        let mut sample = Sample::new();
        self.find_cgroup();
        if let Some(cgroup) = &self.cgroup {
            match cgroup.cpu_usage_usec() {
                Ok(usec) => {
                    let now = Instant::now();
                    if let Some((previous, at)) = self.last_cpu {
                        let wall_usec = now.duration_since(at).as_secs_f64() * 1e6;
                        let cores = cgroup
                            .cpu_limit_cores()
                            .unwrap_or(self.resources.node_cpus as f64)
                            .max(0.01);
                        if wall_usec > 0.0 {
                            let used = usec.saturating_sub(previous) as f64;
                            sample.insert(
                                "cpu_utilization_percentage".to_owned(),
                                (used / wall_usec / cores * 100.0).clamp(0.0, 100.0),
                            );
                        }
                    }
                    self.last_cpu = Some((usec, now));
                }
                // The pod's cgroup went away (restarted pod sandbox): look for it again next time.
                Err(_) => self.cgroup = None,
            }
        }
        if let Some(memory) = self.cgroup.as_ref().and_then(|c| c.memory().ok()) {
            sample.insert(
                "system_memory_usage_megabytes".to_owned(),
                memory.working_set_bytes as f64 / MEGABYTE,
            );
            let limit = memory.limit_bytes.unwrap_or(self.resources.node_memory_bytes);
            if let Some(percent) = ratio_percent(Some(memory.working_set_bytes), Some(limit)) {
                sample.insert("system_memory_usage_percentage".to_owned(), percent);
            }
        }
        if let Some(disk) = host::disk_usage(&self.resources.root_fs) {
            sample.insert("disk_usage_percentage".to_owned(), disk.used_percent());
            sample.insert(
                "disk_usage_megabytes".to_owned(),
                disk.used_bytes as f64 / MEGABYTE,
            );
            sample.insert(
                "disk_available_megabytes".to_owned(),
                disk.available_bytes as f64 / MEGABYTE,
            );
        }
        if let Some(now) = self.network() {
            let start = *self.network_start.get_or_insert(now);
            sample.insert(
                "network_receive_megabytes".to_owned(),
                now.receive_bytes.saturating_sub(start.receive_bytes) as f64 / MEGABYTE,
            );
            sample.insert(
                "network_transmit_megabytes".to_owned(),
                now.transmit_bytes.saturating_sub(start.transmit_bytes) as f64 / MEGABYTE,
            );
        }
        if let Some(source) = &self.resources.gpu
            && let Ok(readings) = source.sample()
        {
            self.gpus
                .extend(gpus_of_pod(&self.resources.proc_root, &readings, &self.uid));
            for (local, index) in self.gpus.iter().enumerate() {
                let Some(gpu) = readings.iter().find(|r| r.index == *index) else {
                    continue;
                };
                let mut put = |name: &str, value: Option<f64>| {
                    if let Some(value) = value.filter(|v| v.is_finite()) {
                        sample.insert(format!("gpu_{local}_{name}"), value);
                    }
                };
                put(
                    "memory_usage_percentage",
                    ratio_percent(gpu.memory_used_bytes, gpu.memory_total_bytes),
                );
                put(
                    "memory_usage_megabytes",
                    gpu.memory_used_bytes.map(|b| b as f64 / MEGABYTE),
                );
                put("utilization_percentage", gpu.utilization_percent);
                put(
                    "power_usage_watts",
                    gpu.power_milliwatts.map(|mw| mw as f64 / 1000.0),
                );
                put(
                    "power_usage_percentage",
                    ratio_percent(gpu.power_milliwatts, gpu.power_limit_milliwatts),
                );
            }
        }
        sample
    }
}

/// MLflow's aggregation of `samples`: the mean of each key over the samples that have it, rounded
/// to one decimal; network keys are the last value as it is.
pub fn aggregate(samples: &[Sample]) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<&str, (f64, usize, f64)> = BTreeMap::new();
    for sample in samples {
        for (key, value) in sample {
            let entry = sums.entry(key.as_str()).or_insert((0.0, 0, 0.0));
            entry.0 += value;
            entry.1 += 1;
            entry.2 = *value;
        }
    }
    sums.into_iter()
        .map(|(key, (sum, count, last))| {
            let value = if NETWORK_KEYS.contains(&key) {
                last
            } else {
                (sum / count as f64 * 10.0).round() / 10.0
            };
            (key.to_owned(), value)
        })
        .collect()
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// === one run ===

/// Why a run monitor ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The run is no longer `RUNNING` (its status).
    Finished(String),
    /// The tracking server does not know the run.
    NotFound,
    /// The pod names a run but no usable tracking server.
    Misconfigured,
    /// The pod stopped running or left the node, or the sampler is shutting down.
    Cancelled,
}

/// Settings shared by every monitor.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub default_tracking_uri: Option<String>,
    pub sampling_interval: Duration,
    pub samples_before_logging: u32,
}

/// Waits `duration`; `false` when cancelled first.
async fn sleep_or_cancel(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(duration) => true,
    }
}

/// Logs the system metrics of `pod` into `target`'s run until the run or the pod ends.
pub async fn monitor(
    pod: PodInfo,
    target: RunTarget,
    resources: Arc<PodResources>,
    settings: RunSettings,
    client: TrackingClient,
    cancel: CancellationToken,
) -> Outcome {
    let run_id = target.run_id.as_str();
    let pod_name = format!("{}/{}", pod.namespace, pod.name);
    let Some(base) = target
        .tracking_uri
        .as_deref()
        .or(settings.default_tracking_uri.as_deref())
        .map(|uri| uri.trim_end_matches('/').to_owned())
    else {
        tracing::warn!(pod = %pod_name, run_id, "the pod names a run but no tracking server (annotation mlkube.io/tracking-uri, env MLFLOW_TRACKING_URI or --tracking-uri-default): not logging its system metrics");
        return Outcome::Misconfigured;
    };
    if let Err(why) = validate_tracking_uri(&base) {
        tracing::warn!(pod = %pod_name, run_id, tracking_uri = %base, "unusable tracking URI ({why}): not logging the pod's system metrics");
        return Outcome::Misconfigured;
    }
    if !run_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        tracing::warn!(pod = %pod_name, run_id, "not an MLflow run id: not logging the pod's system metrics");
        return Outcome::Misconfigured;
    }
    let interval = target.sampling_interval.unwrap_or(settings.sampling_interval);
    let per_log = target
        .samples_before_logging
        .unwrap_or(settings.samples_before_logging)
        .max(1);
    let prefix = match &target.node_id {
        Some(node_id) => format!("{SYSTEM_PREFIX}{node_id}/"),
        None => SYSTEM_PREFIX.to_owned(),
    };

    // Where the run stands: finished already, or which step comes next.
    let mut warned = false;
    let mut step = loop {
        match client.get_run(&base, run_id).await {
            Ok(run) if run.is_running() => break run.next_system_step,
            Ok(run) => return Outcome::Finished(run.status),
            Err(TrackingError::NotFound) => return Outcome::NotFound,
            Err(err) => {
                if !warned {
                    tracing::warn!(pod = %pod_name, run_id, tracking_uri = %base, error = %error_chain(&err), "cannot reach the tracking server; retrying");
                    warned = true;
                }
                if !sleep_or_cancel(RETRY_START, &cancel).await {
                    return Outcome::Cancelled;
                }
            }
        }
    };
    tracing::info!(
        pod = %pod_name, run_id, tracking_uri = %base, interval_s = interval.as_secs_f64(),
        samples_before_logging = per_log, first_step = step,
        "logging the pod's system metrics to its run"
    );

    let uid = pod.uid.clone();
    let mut sampler = {
        let resources = Arc::clone(&resources);
        match tokio::task::spawn_blocking(move || PodSampler::new(&uid, resources)).await {
            Ok(sampler) => sampler,
            Err(_) => return Outcome::Cancelled,
        }
    };
    let mut failing = false;
    loop {
        let mut samples = Vec::with_capacity(per_log as usize);
        for _ in 0..per_log {
            if !sleep_or_cancel(interval, &cancel).await {
                return Outcome::Cancelled;
            }
            let Ok((returned, sample)) = tokio::task::spawn_blocking(move || {
                let sample = sampler.collect();
                (sampler, sample)
            })
            .await
            else {
                return Outcome::Cancelled;
            };
            sampler = returned;
            samples.push(sample);
            match client.get_run(&base, run_id).await {
                Ok(run) if run.is_running() => {}
                Ok(run) => return Outcome::Finished(run.status),
                Err(TrackingError::NotFound) => return Outcome::NotFound,
                Err(err) => {
                    if !failing {
                        tracing::warn!(pod = %pod_name, run_id, error = %error_chain(&err), "cannot check the run's status; going on");
                        failing = true;
                    }
                }
            }
        }
        let timestamp = now_millis();
        let metrics: Vec<Metric> = aggregate(&samples)
            .into_iter()
            .map(|(key, value)| Metric {
                key: format!("{prefix}{key}"),
                value,
                timestamp,
                step,
            })
            .collect();
        step += 1;
        if metrics.is_empty() {
            continue;
        }
        match client.log_batch(&base, run_id, &metrics).await {
            Ok(()) => {
                if failing {
                    tracing::info!(pod = %pod_name, run_id, "logging system metrics works again");
                    failing = false;
                }
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(pod = %pod_name, run_id, error = %error_chain(&err), "cannot log system metrics; this batch is dropped");
                    failing = true;
                }
            }
        }
    }
}

// === the supervisor ===

type RunKey = (String, String);

/// Starts a monitor for every running pod that names a run, and stops it when the pod stops
/// running or leaves; a run that ended is not monitored again while its pod lives.
pub async fn supervise(
    index: PodIndex,
    resources: Arc<PodResources>,
    settings: RunSettings,
    client: TrackingClient,
    shutdown: CancellationToken,
) {
    let mut changes = index.subscribe();
    let mut running: HashMap<RunKey, CancellationToken> = HashMap::new();
    let mut ended: HashSet<RunKey> = HashSet::new();
    let mut tasks: JoinSet<(RunKey, Outcome)> = JoinSet::new();
    loop {
        // Reconcile the monitors with the pods.
        let wanted: Vec<(RunKey, PodInfo, RunTarget)> = index
            .running_with_runs()
            .into_iter()
            .filter_map(|pod| {
                let target = pod.run.clone()?;
                Some(((pod.uid.clone(), target.run_id.clone()), pod, target))
            })
            .collect();
        let wanted_keys: HashSet<&RunKey> = wanted.iter().map(|(key, _, _)| key).collect();
        for (key, cancel) in &running {
            if !wanted_keys.contains(key) {
                cancel.cancel();
            }
        }
        ended.retain(|(uid, _)| index.get(uid).is_some());
        for (key, pod, target) in wanted {
            if running.contains_key(&key) || ended.contains(&key) {
                continue;
            }
            let cancel = shutdown.child_token();
            running.insert(key.clone(), cancel.clone());
            let (resources, settings, client) = (Arc::clone(&resources), settings.clone(), client.clone());
            tasks.spawn(async move {
                let outcome = monitor(pod, target, resources, settings, client, cancel).await;
                (key, outcome)
            });
        }

        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(((uid, run_id), outcome)) = joined {
                    running.remove(&(uid.clone(), run_id.clone()));
                    match &outcome {
                        Outcome::Cancelled => {}
                        Outcome::Finished(status) => {
                            tracing::info!(pod_uid = %uid, %run_id, %status, "the run ended: stopped logging its system metrics");
                            ended.insert((uid, run_id));
                        }
                        Outcome::NotFound => {
                            tracing::warn!(pod_uid = %uid, %run_id, "the tracking server does not know the run: not logging its system metrics");
                            ended.insert((uid, run_id));
                        }
                        Outcome::Misconfigured => {
                            ended.insert((uid, run_id));
                        }
                    }
                }
            }
        }
    }
    for cancel in running.values() {
        cancel.cancel();
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pairs: &[(&str, f64)]) -> Sample {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn aggregation_is_a_rounded_mean_except_network() {
        let samples = [
            sample(&[
                ("cpu_utilization_percentage", 10.0),
                ("network_receive_megabytes", 1.23456),
            ]),
            sample(&[
                ("cpu_utilization_percentage", 20.07),
                ("network_receive_megabytes", 2.5),
                ("gpu_0_utilization_percentage", 99.0),
            ]),
        ];
        let aggregated = aggregate(&samples);
        assert_eq!(aggregated["cpu_utilization_percentage"], 15.0);
        assert_eq!(aggregated["network_receive_megabytes"], 2.5);
        // Present in one sample of two: the mean of that one.
        assert_eq!(aggregated["gpu_0_utilization_percentage"], 99.0);
        assert_eq!(aggregate(&[sample(&[("x", 1.0 / 3.0)])])["x"], 0.3);
    }
}
