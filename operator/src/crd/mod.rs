//! The custom resources mlkube serves (`mlkube.io/v1alpha1`) and the small types they share.
//!
//! Doc comments on these types are user documentation: they become the CRD descriptions that
//! `kubectl explain` prints. Developer notes belong in `//` comments.

pub mod conditions;
pub mod model_deployment;
pub mod rollout;
pub mod tracking_server;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use model_deployment::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
pub use tracking_server::{TrackingServer, TrackingServerSpec, TrackingServerStatus};

/// The API group of every mlkube resource.
pub const GROUP: &str = "mlkube.io";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";

// A duration such as `30s`, `5m`, `1h30m`: valid for Prometheus and for CEL `duration()`.
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// Every CustomResourceDefinition the operator serves, in a stable order (used by `crdgen`).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![ModelDeployment::crd(), TrackingServer::crd()]
}

/// A key in a Secret in the same namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A key in a ConfigMap in the same namespace.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap, in the same namespace as this resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// How Prometheus Operator scrapes this component. Used only when the cluster serves the
/// `monitoring.coreos.com/v1` API; otherwise pods carry `prometheus.io/scrape` annotations.
#[derive(Clone, Debug, Deserialize, Serialize, kube::KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.scrapeTimeout) || duration(self.scrapeTimeout) <= duration(self.interval)").message("scrapeTimeout must not exceed interval"))]
pub struct ServiceMonitorSettings {
    /// Create a ServiceMonitor. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often Prometheus scrapes, as a duration such as `30s`. Default: `30s`.
    #[serde(default = "default_scrape_interval")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub interval: String,
    /// Scrape timeout, at most `interval`. Default: Prometheus' global setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub scrape_timeout: Option<String>,
    /// Extra labels on the ServiceMonitor (and PrometheusRule), for example
    /// `release: kube-prometheus-stack` so that kube-prometheus-stack's Prometheus selects it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for ServiceMonitorSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_scrape_interval(),
            scrape_timeout: None,
            labels: BTreeMap::new(),
        }
    }
}

pub(crate) fn default_true() -> bool {
    true
}

pub(crate) fn default_one() -> i32 {
    1
}

fn default_scrape_interval() -> String {
    "30s".to_owned()
}

/// Parse a Prometheus-style duration (`90s`, `5m`, `1h30m`, `250ms`) into milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_prometheus() {
        assert_eq!(parse_duration_ms("30s"), Some(30_000));
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("2d"), Some(172_800_000));
        assert_eq!(parse_duration_ms(""), None);
        assert_eq!(parse_duration_ms("5"), None);
        assert_eq!(parse_duration_ms("m5"), None);
        assert_eq!(parse_duration_ms("5x"), None);
    }
}
