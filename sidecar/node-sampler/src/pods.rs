//! The pods on this node, by UID: names for GPU attribution and the MLflow runs to log into.
//!
//! The index is fed by a watch of the pods whose `spec.nodeName` is this node (the API server filters,
//! so a node sees only its own ~100 pods) and keeps only what the sampler needs from each: namespace,
//! name, phase, container IDs and names, and the run it belongs to.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Pod annotation naming the MLflow run a pod's system metrics go to.
pub const RUN_ID_ANNOTATION: &str = "mlkube.io/run-id";
/// Pod annotation naming that run's tracking server.
pub const TRACKING_URI_ANNOTATION: &str = "mlkube.io/tracking-uri";
/// Container env read when the annotation is absent, as the MLflow client reads it.
pub const RUN_ID_ENV: &str = "MLFLOW_RUN_ID";
pub const TRACKING_URI_ENV: &str = "MLFLOW_TRACKING_URI";
/// MLflow's own knobs for system metrics, honoured when set (as literal values) in the pod spec.
pub const SAMPLING_INTERVAL_ENV: &str = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL";
pub const SAMPLES_BEFORE_LOGGING_ENV: &str = "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING";
pub const NODE_ID_ENV: &str = "MLFLOW_SYSTEM_METRICS_NODE_ID";

/// What the sampler keeps of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: String,
    /// Container ID (without the `containerd://` scheme) → container name.
    pub containers: BTreeMap<String, String>,
    /// The MLflow run this pod's system metrics are logged to, if any.
    pub run: Option<RunTarget>,
}

impl PodInfo {
    pub fn is_running(&self) -> bool {
        self.phase == "Running"
    }
}

/// An MLflow run to log a pod's system metrics to, with MLflow's sampling settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RunTarget {
    pub run_id: String,
    /// From the annotation or the container env; `None`: `--tracking-uri-default`.
    pub tracking_uri: Option<String>,
    /// `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL` from the pod spec (MLflow's default is 10 s).
    pub sampling_interval: Option<Duration>,
    /// `MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING` from the pod spec (default 1).
    pub samples_before_logging: Option<u32>,
    /// `MLFLOW_SYSTEM_METRICS_NODE_ID` from the pod spec: keys become `system/<node_id>/…`.
    pub node_id: Option<String>,
}

/// Strips the runtime scheme from a `containerStatuses[].containerID`.
fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, bare)| bare)
}

/// The literal value of `name` in the first container that sets it.
fn env_value<'a>(containers: &'a [Container], name: &str) -> Option<&'a str> {
    containers.iter().find_map(|c| {
        c.env
            .as_ref()?
            .iter()
            .find(|e| e.name == name)?
            .value
            .as_deref()
            .filter(|v| !v.is_empty())
    })
}

/// What the sampler keeps of `pod`; `None` for a pod without a UID.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let uid = meta.uid.clone()?;
    let mut containers = BTreeMap::new();
    if let Some(status) = &pod.status {
        let lists = [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for status in lists.into_iter().flatten().flatten() {
            if let Some(id) = &status.container_id {
                containers.insert(bare_container_id(id).to_owned(), status.name.clone());
            }
        }
    }
    let spec_containers: &[Container] = pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice());
    let annotation = |key: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let run = annotation(RUN_ID_ANNOTATION)
        .or_else(|| env_value(spec_containers, RUN_ID_ENV))
        .map(|run_id| RunTarget {
            run_id: run_id.to_owned(),
            tracking_uri: annotation(TRACKING_URI_ANNOTATION)
                .or_else(|| env_value(spec_containers, TRACKING_URI_ENV))
                .map(str::to_owned),
            sampling_interval: env_value(spec_containers, SAMPLING_INTERVAL_ENV)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .filter(|d| !d.is_zero()),
            samples_before_logging: env_value(spec_containers, SAMPLES_BEFORE_LOGGING_ENV)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .filter(|&n| n > 0),
            node_id: env_value(spec_containers, NODE_ID_ENV).map(str::to_owned),
        });
    Some(PodInfo {
        uid,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        phase: pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Unknown".to_owned()),
        containers,
        run,
    })
}

// === impl PodIndex ===

/// The pods on this node, by UID. Cheap to clone; every clone sees the same pods.
#[derive(Clone)]
pub struct PodIndex {
    pods: Arc<RwLock<HashMap<String, PodInfo>>>,
    /// Bumped on every change, so that the run supervisor wakes up.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for PodIndex {
    fn default() -> Self {
        PodIndex {
            pods: Arc::default(),
            changes: Arc::new(watch::channel(0).0),
        }
    }
}

impl std::fmt::Debug for PodIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodIndex").field("pods", &self.len()).finish()
    }
}

impl PodIndex {
    pub fn new() -> PodIndex {
        PodIndex::default()
    }

    /// Adds or replaces a pod.
    pub fn apply(&self, pod: PodInfo) {
        if let Ok(mut pods) = self.pods.write() {
            if pods.get(&pod.uid) == Some(&pod) {
                return;
            }
            pods.insert(pod.uid.clone(), pod);
        }
        self.changed();
    }

    pub fn delete(&self, uid: &str) {
        if let Ok(mut pods) = self.pods.write() {
            pods.remove(uid);
        }
        self.changed();
    }

    /// Replaces every pod (after a re-list).
    pub fn replace_all(&self, all: Vec<PodInfo>) {
        if let Ok(mut pods) = self.pods.write() {
            *pods = all.into_iter().map(|p| (p.uid.clone(), p)).collect();
        }
        self.changed();
    }

    pub fn get(&self, uid: &str) -> Option<PodInfo> {
        self.pods.read().ok()?.get(uid).cloned()
    }

    pub fn len(&self) -> usize {
        self.pods.read().map_or(0, |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Running pods that name an MLflow run, sorted by UID.
    pub fn running_with_runs(&self) -> Vec<PodInfo> {
        let mut found: Vec<PodInfo> = self
            .pods
            .read()
            .map(|pods| {
                pods.values()
                    .filter(|p| p.is_running() && p.run.is_some())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by(|a, b| a.uid.cmp(&b.uid));
        found
    }

    /// Wakes up when the index changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }
}

// === the watch ===

/// Starting the Kubernetes client failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (not in a cluster, no kubeconfig)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, or the in-cluster service account, or the usual kubeconfig.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(Error::Infer)?,
    };
    Client::try_from(config).map_err(Error::Client)
}

/// The list-then-watch field selector: only this node's pods.
pub fn field_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Keeps `index` in step with the pods on `node` until `shutdown`. Errors are logged and retried
/// with backoff; the index keeps its last contents meanwhile.
pub async fn watch_pods(client: Client, node: String, index: PodIndex, shutdown: CancellationToken) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&field_selector(&node));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut relist: Option<Vec<PodInfo>> = None;
    let mut healthy = true;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.next() => event,
        };
        let Some(event) = event else {
            return;
        };
        match event {
            Ok(event) => {
                if !healthy {
                    tracing::info!(%node, "pod watch recovered");
                    healthy = true;
                }
                match event {
                    watcher::Event::Init => relist = Some(Vec::new()),
                    watcher::Event::InitApply(pod) => {
                        if let (Some(buffer), Some(info)) = (relist.as_mut(), pod_info(&pod)) {
                            buffer.push(info);
                        }
                    }
                    watcher::Event::InitDone => {
                        let pods = relist.take().unwrap_or_default();
                        tracing::info!(%node, pods = pods.len(), "listed the pods on this node");
                        index.replace_all(pods);
                    }
                    watcher::Event::Apply(pod) => {
                        if let Some(info) = pod_info(&pod) {
                            index.apply(info);
                        }
                    }
                    watcher::Event::Delete(pod) => {
                        if let Some(uid) = &pod.metadata.uid {
                            index.delete(uid);
                        }
                    }
                }
            }
            Err(err) => {
                // Logged once per outage at warn, then at debug while the backoff retries.
                if healthy {
                    tracing::warn!(%node, error = %mlkube_sidecar::telemetry::error_chain(&err), "pod watch failed; retrying");
                    healthy = false;
                } else {
                    tracing::debug!(%node, error = %err, "pod watch still failing");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"{
      "apiVersion": "v1", "kind": "Pod",
      "metadata": {
        "name": "train-0", "namespace": "ml", "uid": "1b2c3d4e-5f6a-7b8c-9d0e-f1a2b3c4d5e6",
        "annotations": {"mlkube.io/run-id": "abc123", "mlkube.io/tracking-uri": "http://mlflow.ml:5000"}
      },
      "spec": {
        "nodeName": "gpu-node-1",
        "containers": [
          {"name": "trainer", "env": [
            {"name": "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "value": "2.5"},
            {"name": "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "value": "3"},
            {"name": "MLFLOW_SYSTEM_METRICS_NODE_ID", "value": "node_0"}
          ]},
          {"name": "logs"}
        ]
      },
      "status": {
        "phase": "Running",
        "containerStatuses": [
          {"name": "trainer", "containerID": "containerd://aaaa", "image": "x", "imageID": "", "ready": true, "restartCount": 0},
          {"name": "logs", "containerID": "cri-o://bbbb", "image": "x", "imageID": "", "ready": true, "restartCount": 0}
        ],
        "initContainerStatuses": [
          {"name": "fetch", "containerID": "docker://cccc", "image": "x", "imageID": "", "ready": false, "restartCount": 0}
        ]
      }
    }"#;

    fn pod(json: &str) -> Pod {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_pod_with_run_annotations() {
        let info = pod_info(&pod(POD)).unwrap();
        assert_eq!(
            info,
            PodInfo {
                uid: "1b2c3d4e-5f6a-7b8c-9d0e-f1a2b3c4d5e6".to_owned(),
                namespace: "ml".to_owned(),
                name: "train-0".to_owned(),
                phase: "Running".to_owned(),
                containers: [("aaaa", "trainer"), ("bbbb", "logs"), ("cccc", "fetch")]
                    .into_iter()
                    .map(|(id, name)| (id.to_owned(), name.to_owned()))
                    .collect(),
                run: Some(RunTarget {
                    run_id: "abc123".to_owned(),
                    tracking_uri: Some("http://mlflow.ml:5000".to_owned()),
                    sampling_interval: Some(Duration::from_millis(2500)),
                    samples_before_logging: Some(3),
                    node_id: Some("node_0".to_owned()),
                }),
            }
        );
    }

    #[test]
    fn the_run_can_come_from_the_container_env() {
        let json = r#"{"metadata": {"name": "p", "namespace": "n", "uid": "u"},
          "spec": {"containers": [
            {"name": "a", "env": [{"name": "OTHER", "value": "1"}]},
            {"name": "b", "env": [{"name": "MLFLOW_RUN_ID", "value": "r9"},
                                  {"name": "MLFLOW_TRACKING_URI", "value": "http://t:5000"},
                                  {"name": "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "value": "nonsense"}]}
          ]}}"#;
        let info = pod_info(&pod(json)).unwrap();
        assert_eq!(info.phase, "Unknown");
        assert_eq!(
            info.run,
            Some(RunTarget {
                run_id: "r9".to_owned(),
                tracking_uri: Some("http://t:5000".to_owned()),
                sampling_interval: None,
                samples_before_logging: None,
                node_id: None,
            })
        );
    }

    #[test]
    fn pods_without_a_run_or_a_uid() {
        let plain = r#"{"metadata": {"name": "p", "namespace": "n", "uid": "u",
          "annotations": {"mlkube.io/run-id": "  "}},
          "spec": {"containers": [{"name": "a", "env": [{"name": "MLFLOW_RUN_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}"#;
        assert_eq!(pod_info(&pod(plain)).unwrap().run, None);
        assert!(pod_info(&pod(r#"{"metadata": {"name": "p"}}"#)).is_none());
    }

    #[test]
    fn the_index_tracks_running_pods_with_runs() {
        let index = PodIndex::new();
        let mut changes = index.subscribe();
        let info = pod_info(&pod(POD)).unwrap();
        index.apply(info.clone());
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        index.apply(info.clone()); // no change, no wake-up
        assert!(!changes.has_changed().unwrap());
        assert_eq!(index.running_with_runs(), vec![info.clone()]);
        index.apply(PodInfo {
            phase: "Succeeded".to_owned(),
            ..info.clone()
        });
        assert!(index.running_with_runs().is_empty());
        index.replace_all(vec![]);
        assert!(index.get(&info.uid).is_none());
        assert!(index.is_empty());
    }

    #[test]
    fn only_this_nodes_pods_are_watched() {
        assert_eq!(field_selector("gpu-node-1"), "spec.nodeName=gpu-node-1");
    }
}
