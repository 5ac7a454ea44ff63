//! The autoscaler of a ModelDeployment's Deployment: a HorizontalPodAutoscaler (`autoscaling/v2`)
//! or a KEDA ScaledObject (a minimal typed `keda.sh/v1alpha1` ScaledObject: only the fields mlkube
//! sets).

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricIdentifier,
    MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::validate::model_deployment::{Autoscaler, ScaleMetric};
pub use crate::validate::model_deployment::{IN_FLIGHT_METRIC, in_flight_query};

/// Spec of a KEDA ScaledObject.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    plural = "scaledobjects",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    pub scale_target_ref: ScaleTargetRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling_interval: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_period: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<ScaleTrigger>,
}

/// The workload a ScaledObject scales.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
}

/// One KEDA trigger (scaler).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTrigger {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A HorizontalPodAutoscaler of the Deployment named like `metadata`.
pub fn build_hpa(metadata: ObjectMeta, autoscaler: &Autoscaler) -> HorizontalPodAutoscaler {
    let target = metadata.name.clone().unwrap_or_default();
    let metric = match autoscaler.metric {
        ScaleMetric::InFlight(per_pod) => MetricSpec {
            type_: "Pods".to_owned(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: IN_FLIGHT_METRIC.to_owned(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".to_owned(),
                    average_value: Some(Quantity(per_pod.to_string())),
                    ..Default::default()
                },
            }),
            ..Default::default()
        },
        ScaleMetric::Cpu(percent) => MetricSpec {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricSource {
                name: "cpu".to_owned(),
                target: MetricTarget {
                    type_: "Utilization".to_owned(),
                    average_utilization: Some(percent),
                    ..Default::default()
                },
            }),
            ..Default::default()
        },
    };
    HorizontalPodAutoscaler {
        metadata,
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: target,
            },
            min_replicas: Some(autoscaler.min_replicas),
            max_replicas: autoscaler.max_replicas,
            metrics: Some(vec![metric]),
            behavior: None,
        },
        status: None,
    }
}

/// A KEDA ScaledObject of the Deployment named like `metadata`: a Prometheus trigger on requests
/// in flight (threshold: the per-pod target), or KEDA's CPU trigger.
pub fn build_scaled_object(metadata: ObjectMeta, autoscaler: &Autoscaler) -> ScaledObject {
    let target = metadata.name.clone().unwrap_or_default();
    let keda = autoscaler.keda.as_ref();
    let trigger = match autoscaler.metric {
        ScaleMetric::InFlight(per_pod) => ScaleTrigger {
            type_: "prometheus".to_owned(),
            metric_type: Some("AverageValue".to_owned()),
            metadata: BTreeMap::from([
                (
                    "serverAddress".to_owned(),
                    keda.map(|k| k.prometheus_address.clone()).unwrap_or_default(),
                ),
                (
                    "query".to_owned(),
                    keda.map(|k| k.query.clone()).unwrap_or_default(),
                ),
                ("threshold".to_owned(), per_pod.to_string()),
            ]),
        },
        ScaleMetric::Cpu(percent) => ScaleTrigger {
            type_: "cpu".to_owned(),
            metric_type: Some("Utilization".to_owned()),
            metadata: BTreeMap::from([("value".to_owned(), percent.to_string())]),
        },
    };
    ScaledObject {
        metadata,
        spec: ScaledObjectSpec {
            scale_target_ref: ScaleTargetRef {
                api_version: Some("apps/v1".to_owned()),
                kind: Some("Deployment".to_owned()),
                name: target,
            },
            polling_interval: keda.and_then(|k| k.polling_interval_seconds),
            cooldown_period: keda.and_then(|k| k.cooldown_period_seconds),
            min_replica_count: Some(autoscaler.min_replicas),
            max_replica_count: Some(autoscaler.max_replicas),
            triggers: vec![trigger],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_adapter_rule_serves_the_metric_the_hpa_reads() {
        let text = include_str!("../../../charts/mlkube/prometheus-adapter/config.yaml");
        let config: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        let rule = &config["rules"][0];
        assert_eq!(rule["name"]["as"], IN_FLIGHT_METRIC);
        assert!(
            rule["seriesQuery"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{IN_FLIGHT_METRIC}{{")),
            "{rule}"
        );
        // Per pod, the label an HPA's Pods metric is matched on.
        assert_eq!(rule["resources"]["overrides"]["pod"]["resource"], "pod");
        assert_eq!(
            rule["resources"]["overrides"]["namespace"]["resource"],
            "namespace"
        );
    }
}
