//! Minimal typed `monitoring.coreos.com/v1` ServiceMonitor (only the fields mlkube sets) and its
//! builder.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::crd::ServiceMonitorSettings;

/// Spec of a Prometheus Operator ServiceMonitor.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    plural = "servicemonitors",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_label: Option<String>,
}

/// One scrape endpoint of a ServiceMonitor.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Name of the Service port.
    pub port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_labels: Option<bool>,
}

/// A ServiceMonitor selecting the Services labelled `selector`, scraping `port`.
pub fn build_service_monitor(
    mut metadata: ObjectMeta,
    selector: BTreeMap<String, String>,
    port: &str,
    settings: &ServiceMonitorSettings,
    honor_labels: bool,
) -> ServiceMonitor {
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in &settings.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    ServiceMonitor {
        metadata,
        spec: ServiceMonitorSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            endpoints: vec![Endpoint {
                port: port.to_owned(),
                path: Some(super::ports::METRICS_PATH.to_owned()),
                interval: Some(settings.interval.clone()),
                scrape_timeout: settings.scrape_timeout.clone(),
                honor_labels: honor_labels.then_some(true),
            }],
            job_label: None,
        },
    }
}
