//! Operator-wide defaults: what a spec that names no image gets, and where runbooks live.

/// Operator-wide defaults: images used when a spec names none, and where runbooks live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub server_image: String,
    pub sidecar_image: String,
    pub node_sampler_image: String,
    pub model_server_image: String,
    /// Base URL of the alert runbooks; each alert appends `#<alertname-lowercase>`.
    pub runbook_base_url: String,
}

impl Defaults {
    /// Images tagged with this operator's version.
    pub fn for_version(version: &str) -> Self {
        Self {
            server_image: format!("ghcr.io/mlkube/mlkube-server:v{version}"),
            sidecar_image: format!("ghcr.io/mlkube/mlkube-sidecar:v{version}"),
            node_sampler_image: format!("ghcr.io/mlkube/mlkube-node-sampler:v{version}"),
            model_server_image: format!("ghcr.io/mlkube/mlflow-model-server:v{version}"),
            runbook_base_url: "https://github.com/mlkube/mlkube/blob/main/docs/runbooks.md".to_owned(),
        }
    }
}
