//! mlkube-operator: the `TrackingServer` and `ModelDeployment` custom resources, the controllers
//! that reconcile them, and the pure builders that turn a validated spec into Kubernetes objects.
//! It owns everything the cluster sees of mlkube; it does not serve models or metrics itself (the
//! server, sidecar and node sampler binaries do).

pub mod apply;
pub mod build;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod crd;
pub mod fingerprint;
pub mod http;
pub mod metrics;
pub mod ports;
pub mod registry;
pub mod render;
pub mod rollout;
pub mod run;
pub mod telemetry;
pub mod validate;
