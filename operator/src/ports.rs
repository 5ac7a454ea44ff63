//! Port numbers and names (docs/architecture.md, "Ports"): what the builders put on containers and
//! Services, and what validation keeps a model server off.

/// mlkube-server: REST API, artifact proxy, `/metrics`, `/health`.
pub const SERVER: i32 = 5000;
/// Sidecar: serving traffic, proxied to the model server.
pub const SIDECAR_HTTP: i32 = 8000;
/// Sidecar: `/metrics`, `/healthz`, `/readyz`.
pub const SIDECAR_METRICS: i32 = 8001;
/// Node sampler: `/metrics`.
pub const NODE_SAMPLER: i32 = 9400;

/// Name of serving ports (server 5000, sidecar 8000).
pub const HTTP: &str = "http";
/// Name of metrics ports (sidecar 8001, node sampler 9400).
pub const METRICS: &str = "metrics";

pub const METRICS_PATH: &str = "/metrics";
/// The tracking server's readiness: 503 while its database is unreachable, so the pod leaves the
/// Service but is not restarted.
pub const SERVER_HEALTH_PATH: &str = "/health";
/// The tracking server's liveness: answers whenever the process serves requests.
pub const SERVER_LIVENESS_PATH: &str = "/version";
pub const SIDECAR_HEALTHZ_PATH: &str = "/healthz";
pub const SIDECAR_READYZ_PATH: &str = "/readyz";
