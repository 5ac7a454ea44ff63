//! The `mlkube-sidecar` library: everything the binaries in this crate run, behind thin `main`s.
//!
//! The crate owns the per-pod data path of a model deployment: [`proxy`] is `mlkube-sidecar`, a
//! streaming HTTP/1.1 reverse proxy that sits in front of any model server, measures every request
//! with Prometheus metrics labelled by model name and version, samples request/response payloads for
//! the tracking server's quality metrics, and drains gracefully on SIGTERM. [`serve`] and
//! [`telemetry`] (and [`exposition`], the OpenMetrics-to-Prometheus text converter) are shared with
//! the node sampler (`sidecar/node-sampler/`, its own crate, so this proxy never builds against
//! kube, NVML or sysinfo). It does not own the tracking server's API (that is `mlkube-server`) nor
//! anything Kubernetes-shaped (that is `mlkube-operator`, which starts this binary with the flags in
//! docs/architecture.md).

pub mod exposition;
pub mod proxy;
pub mod serve;
pub mod telemetry;

pub use proxy::{Sidecar, run};
