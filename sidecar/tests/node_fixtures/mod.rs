//! Shared fixtures for the node sampler's integration tests: a fake host (procfs, sysfs and a
//! cgroup v2 tree with the systemd driver and containerd naming, in a temporary directory), a fake
//! MLflow tracking server that records `runs/log-batch` bodies and answers `runs/get`, a scraper and
//! a parser for the exposition.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mlkube_sidecar::node::{Args, Config};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub const NODE: &str = "node-a";

/// A container ID as containerd makes them (64 hex digits), distinct per `n`.
pub fn container_id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

// === the fake host ===

/// procfs, sysfs, the cgroup mount and a root filesystem, all under one temporary directory.
pub struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    pub fn new() -> FakeHost {
        let host = FakeHost {
            dir: tempfile::tempdir().unwrap(),
        };
        write(
            &host.cgroup_root().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        );
        host.set_nic("eth0", true, 123_456_789, 987_654_321);
        host.set_nic("veth12ab", false, 5_000, 6_000);
        host.set_nic("lo", false, 1_000_000, 1_000_000);
        host
    }

    pub fn proc_root(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    pub fn sys_root(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    pub fn cgroup_root(&self) -> PathBuf {
        self.sys_root().join("fs/cgroup")
    }

    pub fn root_fs(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Sets an interface's lifetime counters (`physical`: backed by a device).
    pub fn set_nic(&self, name: &str, physical: bool, rx: u64, tx: u64) {
        let dir = self.sys_root().join("class/net").join(name);
        write(&dir.join("statistics/rx_bytes"), &format!("{rx}\n"));
        write(&dir.join("statistics/tx_bytes"), &format!("{tx}\n"));
        if physical {
            fs::create_dir_all(dir.join("device")).unwrap();
        }
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        let underscored = uid.replace('-', "_");
        self.cgroup_root().join(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice"
        ))
    }

    /// A pod with containers `(container id, pids)`: cgroup directories with accounting files
    /// (working set 250 MB of a 1000 MB limit, 1.5 CPUs) and each pid's `/proc/<pid>/cgroup`.
    pub fn add_pod(&self, uid: &str, containers: &[(&str, &[u32])]) {
        let pod_dir = self.pod_dir(uid);
        write(
            &pod_dir.join("cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        );
        write(&pod_dir.join("cpu.max"), "150000 100000\n");
        write(&pod_dir.join("memory.current"), "300000000\n");
        write(
            &pod_dir.join("memory.stat"),
            "anon 200000000\nfile 100000000\ninactive_file 50000000\n",
        );
        write(&pod_dir.join("memory.max"), "1000000000\n");
        let relative = pod_dir.strip_prefix(self.cgroup_root()).unwrap().to_owned();
        for (id, pids) in containers {
            let scope = format!("cri-containerd-{id}.scope");
            let procs: String = pids.iter().map(|p| format!("{p}\n")).collect();
            write(&pod_dir.join(&scope).join("cgroup.procs"), &procs);
            for pid in *pids {
                write(
                    &self.proc_root().join(pid.to_string()).join("cgroup"),
                    &format!("0::/{}/{scope}\n", relative.display()),
                );
                self.set_net_dev(*pid, 5_000_000, 2_000_000);
            }
        }
    }

    /// Changes the pod's CPU time.
    pub fn set_pod_cpu_usec(&self, uid: &str, usec: u64) {
        write(
            &self.pod_dir(uid).join("cpu.stat"),
            &format!("usage_usec {usec}\n"),
        );
    }

    /// A process outside Kubernetes.
    pub fn add_host_process(&self, pid: u32) {
        write(
            &self.proc_root().join(pid.to_string()).join("cgroup"),
            "0::/system.slice/nvidia-persistenced.service\n",
        );
    }

    /// The network namespace counters of `pid` (eth0 plus loopback).
    pub fn set_net_dev(&self, pid: u32, rx: u64, tx: u64) {
        write_net_dev(&self.proc_root(), pid, rx, tx);
    }

    /// A validated configuration reading this host, with more flags appended.
    pub fn config(&self, extra: &[&str]) -> Config {
        let proc_root = self.proc_root();
        let sys_root = self.sys_root();
        let root_fs = self.root_fs();
        let mut args: Vec<String> = [
            "mlkube-node-sampler",
            "--listen",
            "127.0.0.1:0",
            "--node-name",
            NODE,
            "--disable-pod-watch",
            "--proc-root",
            proc_root.to_str().unwrap(),
            "--sys-root",
            sys_root.to_str().unwrap(),
            "--root-fs",
            root_fs.to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Args::try_parse_from(args).unwrap().validate().unwrap()
    }
}

/// `/proc/<pid>/net/dev` below `proc_root`, as the kernel writes it.
pub fn write_net_dev(proc_root: &Path, pid: u32, rx: u64, tx: u64) {
    let text = format!(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
         lo:  777777     100    0    0    0     0          0         0   777777     100    0    0    0     0       0          0\n  \
         eth0: {rx}    4000    0    0    0     0          0         0  {tx}    3000    0    0    0     0       0          0\n"
    );
    write(&proc_root.join(pid.to_string()).join("net/dev"), &text);
}

pub fn write(path: &Path, contents: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Write then rename, so that a sampler reading concurrently never sees half a file.
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, contents).unwrap();
    fs::rename(&tmp, path).unwrap();
}

// === scraping ===

pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Like [`get`], `None` while nothing listens.
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<(StatusCode, String)> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .ok()?;
    let status = response.status();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Every sample of an exposition: `name{label="value",…}` (labels sorted) → value.
pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut series = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (key, value) = line.rsplit_once(' ').unwrap();
        let key = match key.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').unwrap();
                let mut pairs: Vec<&str> = split_labels(labels);
                pairs.sort();
                format!("{name}{{{}}}", pairs.join(","))
            }
            None => key.to_owned(),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(series.insert(key, value).is_none(), "duplicate series {line:?}");
    }
    series
}

/// `a="x",b="y,z"` → [`a="x"`, `b="y,z"`] (no escaped quotes in our values).
fn split_labels(labels: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in labels.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}

/// The series of one metric name, by their (sorted) label sets.
pub fn family(series: &BTreeMap<String, f64>, name: &str) -> BTreeMap<String, f64> {
    series
        .iter()
        .filter_map(|(key, value)| {
            let labels = if key == name {
                ""
            } else {
                key.strip_prefix(name)?.strip_prefix('{')?.strip_suffix('}')?
            };
            Some((labels.to_owned(), *value))
        })
        .collect()
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
pub async fn eventually<F: FnMut() -> bool>(what: &str, timeout: Duration, mut check: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === the fake tracking server ===

/// Called with the number of batches received so far, after each one is recorded.
pub type OnBatch = Box<dyn FnMut(usize) + Send>;

pub struct TrackerState {
    pub run_id: String,
    pub status: String,
    /// A `system/` metric already in the run at this step (a sampler restart), if any.
    pub existing_system_step: Option<i64>,
    /// Bodies of `runs/log-batch`, in order.
    pub batches: Vec<Value>,
    /// `runs/get` calls so far.
    pub gets: usize,
    /// The run turns FINISHED once this many batches have arrived.
    pub finish_after: Option<usize>,
    pub on_batch: Option<OnBatch>,
}

/// An in-process MLflow tracking server that knows one run.
pub struct Tracker {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<TrackerState>>,
    pub batch_arrived: Arc<Notify>,
}

impl Tracker {
    pub async fn start(run_id: &str) -> Tracker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(TrackerState {
            run_id: run_id.to_owned(),
            status: "RUNNING".to_owned(),
            existing_system_step: None,
            batches: Vec::new(),
            gets: 0,
            finish_after: None,
            on_batch: None,
        }));
        let batch_arrived = Arc::new(Notify::new());
        let (shared, notify) = (Arc::clone(&state), Arc::clone(&batch_arrived));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (shared, notify) = (Arc::clone(&shared), Arc::clone(&notify));
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (shared, notify) = (Arc::clone(&shared), Arc::clone(&notify));
                        async move { Ok::<_, Infallible>(answer(request, &shared, &notify).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Tracker {
            addr,
            state,
            batch_arrived,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn batches(&self) -> Vec<Value> {
        self.state.lock().unwrap().batches.clone()
    }

    pub fn gets(&self) -> usize {
        self.state.lock().unwrap().gets
    }

    pub fn set_status(&self, status: &str) {
        self.state.lock().unwrap().status = status.to_owned();
    }

    /// Waits until at least `n` batches have arrived.
    pub async fn wait_for_batches(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.batch_arrived.notified();
            let batches = self.batches();
            if batches.len() >= n {
                return batches;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {n} log-batch calls; got {}",
                    self.batches().len()
                );
            }
        }
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

async fn answer(
    request: Request<Incoming>,
    state: &Mutex<TrackerState>,
    notify: &Notify,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let method = request.method().clone();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    match (method.as_str(), path.as_str()) {
        ("GET", "/api/2.0/mlflow/runs/get") => {
            let mut state = state.lock().unwrap();
            state.gets += 1;
            if query != format!("run_id={}", state.run_id) {
                return json_response(
                    StatusCode::NOT_FOUND,
                    json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": format!("Run with id={query} not found")}),
                );
            }
            let mut metrics = vec![json!({"key": "loss", "value": 0.5, "timestamp": 1, "step": 40})];
            if let Some(step) = state.existing_system_step {
                metrics.push(json!({"key": "system/cpu_utilization_percentage", "value": 3.0, "timestamp": 1, "step": step}));
            }
            json_response(
                StatusCode::OK,
                json!({"run": {
                    "info": {"run_id": state.run_id, "run_uuid": state.run_id, "experiment_id": "0", "status": state.status, "lifecycle_stage": "active"},
                    "data": {"metrics": metrics, "params": [], "tags": []}
                }}),
            )
        }
        ("POST", "/api/2.0/mlflow/runs/log-batch") => {
            let value: Value = serde_json::from_slice(&body).unwrap();
            let mut state = state.lock().unwrap();
            state.batches.push(value);
            let n = state.batches.len();
            if let Some(on_batch) = state.on_batch.as_mut() {
                on_batch(n);
            }
            if state.finish_after.is_some_and(|after| n >= after) {
                state.status = "FINISHED".to_owned();
            }
            drop(state);
            notify.notify_waiters();
            json_response(StatusCode::OK, json!({}))
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"error_code": "ENDPOINT_NOT_FOUND"})),
    }
}

/// The metrics of one log-batch body: key → (value, step).
pub fn batch_metrics(batch: &Value) -> BTreeMap<String, (f64, i64)> {
    batch["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["key"].as_str().unwrap().to_owned(),
                (m["value"].as_f64().unwrap(), m["step"].as_i64().unwrap()),
            )
        })
        .collect()
}
