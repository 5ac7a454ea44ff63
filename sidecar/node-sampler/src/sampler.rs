//! One sample of the node: host readings, GPU readings, and the GPU memory of every process that
//! uses a GPU, attributed to its pod and container.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cgroup;
use super::gpu::{GpuReading, GpuSource};
use super::host::{HostReading, HostSampler};
use super::pods::PodIndex;

/// Everything one sample saw; `/metrics` is rendered from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub host: HostReading,
    /// Empty without a GPU source, or when reading the GPUs failed.
    pub gpus: Vec<GpuReading>,
    pub pod_gpu_memory: Vec<PodGpuMemory>,
}

/// GPU memory held by one container's processes on one GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodGpuMemory {
    pub namespace: String,
    /// The pod's name; its UID while the name is not known (no pod watch, or not caught up).
    pub pod: String,
    /// The container's name; empty when the container is not (yet) in the pod's status.
    pub container: String,
    /// NVML index of the GPU.
    pub gpu: u32,
    pub used_bytes: u64,
}

/// Attributes every GPU process to its pod and container through `/proc/<pid>/cgroup`, summing
/// per (pod, container, GPU). Processes outside pods (the host's own) are left out.
pub fn attribute(proc_root: &Path, gpus: &[GpuReading], pods: &PodIndex) -> Vec<PodGpuMemory> {
    let mut sums: BTreeMap<(String, String, String, u32), u64> = BTreeMap::new();
    for gpu in gpus {
        for process in &gpu.processes {
            let Ok(Some(found)) = cgroup::read_pid(proc_root, process.pid) else {
                continue;
            };
            let (namespace, pod, container) = match pods.get(&found.pod_uid) {
                Some(info) => {
                    let container = found
                        .container_id
                        .as_ref()
                        .and_then(|id| info.containers.get(id))
                        .cloned()
                        .unwrap_or_default();
                    (info.namespace, info.name, container)
                }
                None => (String::new(), found.pod_uid, String::new()),
            };
            *sums.entry((namespace, pod, container, gpu.index)).or_default() +=
                process.used_memory_bytes.unwrap_or(0);
        }
    }
    sums.into_iter()
        .map(|((namespace, pod, container, gpu), used_bytes)| PodGpuMemory {
            namespace,
            pod,
            container,
            gpu,
            used_bytes,
        })
        .collect()
}

/// NVML indices of the GPUs on which a process of the pod `pod_uid` runs.
pub fn gpus_of_pod(proc_root: &Path, gpus: &[GpuReading], pod_uid: &str) -> BTreeSet<u32> {
    gpus.iter()
        .filter(|gpu| {
            gpu.processes.iter().any(|p| {
                cgroup::read_pid(proc_root, p.pid)
                    .ok()
                    .flatten()
                    .is_some_and(|found| found.pod_uid == pod_uid)
            })
        })
        .map(|gpu| gpu.index)
        .collect()
}

// === impl Sampler ===

/// Takes node samples; owned by the sampling task, used from a blocking thread.
pub struct Sampler {
    host: HostSampler,
    gpu: Option<Arc<dyn GpuSource>>,
    proc_root: PathBuf,
    pods: PodIndex,
    gpu_failing: bool,
}

impl Sampler {
    pub fn new(
        host: HostSampler,
        gpu: Option<Arc<dyn GpuSource>>,
        proc_root: PathBuf,
        pods: PodIndex,
    ) -> Sampler {
        Sampler {
            host,
            gpu,
            proc_root,
            pods,
            gpu_failing: false,
        }
    }

    pub fn sample(&mut self) -> Snapshot {
        let host = self.host.sample();
        let gpus = match &self.gpu {
            None => Vec::new(),
            Some(source) => match source.sample() {
                Ok(readings) => {
                    if self.gpu_failing {
                        tracing::info!("reading the GPUs works again");
                        self.gpu_failing = false;
                    }
                    readings
                }
                Err(err) => {
                    if !self.gpu_failing {
                        tracing::warn!(
                            error = %mlkube_sidecar::telemetry::error_chain(&err),
                            "cannot read the GPUs; GPU series are absent until it works again"
                        );
                        self.gpu_failing = true;
                    }
                    Vec::new()
                }
            },
        };
        let pod_gpu_memory = attribute(&self.proc_root, &gpus, &self.pods);
        Snapshot {
            host,
            gpus,
            pod_gpu_memory,
        }
    }
}
