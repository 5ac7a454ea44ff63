//! The `mlkube-sidecar` library: everything the binaries in this crate run, behind thin `main`s.
//!
//! The crate owns the per-pod data path of a model deployment: [`proxy`] is `mlkube-sidecar`, a
//! streaming HTTP/1.1 reverse proxy that sits in front of any model server, measures every request
//! with Prometheus metrics labelled by model name and version, samples request/response payloads for
//! the tracking server's quality metrics, and drains gracefully on SIGTERM. [`serve`] and
//! [`telemetry`] are the pieces every binary here shares (the node sampler's will too). It does not
//! own the tracking server's API (that is `mlkube-server`) nor anything Kubernetes-shaped (that is
//! `mlkube-operator`, which starts this binary with the flags in DESIGN.md).

pub mod exposition;
pub mod node;
pub mod proxy;
pub mod serve;
pub mod telemetry;

pub use proxy::{Sidecar, run};
