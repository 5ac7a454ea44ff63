//! Label and annotation keys and values the operator puts on the objects it creates.

use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MODEL_NAME: &str = "mlkube.io/model-name";
pub const MODEL_VERSION: &str = "mlkube.io/model-version";
/// Pod label of a ModelDeployment with `rollout.strategy: Canary`: which pods are which.
pub const TRACK: &str = "mlkube.io/track";
pub const TRACK_STABLE: &str = "stable";
pub const TRACK_CANARY: &str = "canary";

/// Value of `app.kubernetes.io/managed-by` (and `part-of`).
pub const MANAGER: &str = "mlkube";

/// `app.kubernetes.io/name` of tracking server objects.
pub const APP_SERVER: &str = "mlkube-server";
/// `app.kubernetes.io/name` of node sampler objects.
pub const APP_NODE_SAMPLER: &str = "mlkube-node-sampler";
/// `app.kubernetes.io/name` of model deployment objects.
pub const APP_MODEL: &str = "mlkube-model";

pub const COMPONENT_TRACKING_SERVER: &str = "tracking-server";
/// Component of a tracking server's dedicated artifact server (`artifactStore.dedicatedServer`).
pub const COMPONENT_ARTIFACTS: &str = "artifacts";
pub const COMPONENT_NODE_SAMPLER: &str = "node-sampler";
pub const COMPONENT_MODEL_SERVER: &str = "model-server";
/// Component of the Services that split a canary's traffic (not selected by the ServiceMonitor).
pub const COMPONENT_TRAFFIC_SPLIT: &str = "traffic-split";

// Pod annotations used when Prometheus Operator is absent.
pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";
/// Annotation on every child: a hash of the object the operator last applied (see
/// `apply::drift`).
pub const APPLIED_HASH: &str = "mlkube.io/applied-hash";
/// Annotation a user puts on an existing object to let the operator adopt it (take it over as a
/// child) instead of reporting `NameConflict`.
pub const ALLOW_ADOPTION: &str = "mlkube.io/allow-adoption";
/// Default container for `kubectl logs` / `exec` on model pods.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The labels that select one component's pods. They never change over an object's life, so
/// they are safe in immutable selectors.
pub fn selector(app: &str, instance: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPONENT.to_owned(), component.to_owned()),
        (INSTANCE.to_owned(), instance.to_owned()),
        (NAME.to_owned(), app.to_owned()),
    ])
}

/// The labels on every object of one component: the selector plus `managed-by` and `part-of`.
pub fn standard(app: &str, instance: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector(app, instance, component);
    labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels.insert(PART_OF.to_owned(), MANAGER.to_owned());
    labels
}

/// The selector the operator lists a resource's children with (owner references decide).
pub fn children_selector(instance: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{INSTANCE}={instance}")
}

/// Render a label map as a selector string (`k=v,k=v`, sorted).
pub fn to_selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Turn any string into a valid label value: at most 63 characters of `[A-Za-z0-9._-]`,
/// starting and ending with an alphanumeric character. Other characters become `-`.
pub fn sanitize_value(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let truncated: String = mapped.chars().take(63).collect();
    truncated
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_labels_are_exact() {
        let labels = standard(APP_MODEL, "churn", COMPONENT_MODEL_SERVER);
        let expected: BTreeMap<String, String> = [
            ("app.kubernetes.io/component", "model-server"),
            ("app.kubernetes.io/instance", "churn"),
            ("app.kubernetes.io/managed-by", "mlkube"),
            ("app.kubernetes.io/name", "mlkube-model"),
            ("app.kubernetes.io/part-of", "mlkube"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(labels, expected);
        assert_eq!(
            to_selector_string(&selector(APP_MODEL, "churn", COMPONENT_MODEL_SERVER)),
            "app.kubernetes.io/component=model-server,app.kubernetes.io/instance=churn,app.kubernetes.io/name=mlkube-model"
        );
    }

    #[test]
    fn label_values_are_sanitised() {
        assert_eq!(sanitize_value("Churn Model/v2"), "Churn-Model-v2");
        assert_eq!(sanitize_value("--x--"), "x");
        assert_eq!(sanitize_value(&"a".repeat(80)).len(), 63);
        assert_eq!(sanitize_value("3"), "3");
    }
}
