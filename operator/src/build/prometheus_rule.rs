//! Minimal typed `monitoring.coreos.com/v1` PrometheusRule and the builder of a model
//! deployment's alerts. Every alert carries `severity`, `summary`, `description` and
//! `runbook_url`; thresholds and selectors come from [`AlertParams`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::validate::AlertParams;

/// Spec of a Prometheus Operator PrometheusRule.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PrometheusRule",
    plural = "prometheusrules",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

/// A rule group: the unit Prometheus evaluates together. Also the format of a promtool rules
/// file (`groups: [...]`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct RuleGroup {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// An alerting rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Rule {
    pub alert: String,
    pub expr: String,
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

// Alert names (a public interface: routes and silences match on them).
pub const ALERT_LATENCY_P99: &str = "MlkubeModelLatencyP99High";
pub const ALERT_ERROR_RATE: &str = "MlkubeModelErrorRateHigh";
pub const ALERT_QUALITY_LOW: &str = "MlkubeModelQualityBelowThreshold";
pub const ALERT_QUALITY_HIGH: &str = "MlkubeModelQualityAboveThreshold";

fn promql_string(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

fn number(value: f64) -> String {
    // `{}` prints the shortest representation that round-trips (0.5, 0.01, 1).
    format!("{value}")
}

fn alert(
    name: &str,
    expr: String,
    for_: &str,
    params: &AlertParams,
    extra: &[(&str, String)],
    summary: String,
    description: String,
) -> Rule {
    let mut labels = params.labels.clone();
    labels.insert("severity".to_owned(), params.severity.as_str().to_owned());
    labels.insert("model_deployment".to_owned(), params.deployment.clone());
    for (k, v) in extra {
        labels.insert((*k).to_owned(), v.clone());
    }
    let annotations = BTreeMap::from([
        ("description".to_owned(), description),
        (
            "runbook_url".to_owned(),
            format!("{}#{}", params.runbook_base_url, name.to_ascii_lowercase()),
        ),
        ("summary".to_owned(), summary),
    ]);
    Rule {
        alert: name.to_owned(),
        expr,
        for_: Some(for_.to_owned()),
        labels,
        annotations,
    }
}

/// The alert rule groups of one model deployment.
pub fn build_rule_groups(params: &AlertParams) -> Vec<RuleGroup> {
    let selector = format!(
        "namespace={}, model_name={}",
        promql_string(&params.namespace),
        promql_string(&params.model_name)
    );
    let window = &params.rate_window;
    let mut groups = Vec::new();
    if params.serving {
        let latency = alert(
            ALERT_LATENCY_P99,
            format!(
                "histogram_quantile(0.99, sum by (namespace, model_name, model_version, le) (rate(mlflow_inference_latency_seconds_bucket{{{selector}}}[{window}]))) > {}",
                number(params.latency_p99_seconds)
            ),
            &params.for_,
            params,
            &[],
            "p99 inference latency of {{ $labels.model_name }} version {{ $labels.model_version }} is above the threshold".to_owned(),
            format!(
                "The 99th percentile of inference latency of model {{{{ $labels.model_name }}}} version {{{{ $labels.model_version }}}} in namespace {{{{ $labels.namespace }}}} is {{{{ $value | humanizeDuration }}}}, above {}s, for longer than {}.",
                number(params.latency_p99_seconds),
                params.for_
            ),
        );
        let errors = alert(
            ALERT_ERROR_RATE,
            format!(
                "sum by (namespace, model_name, model_version) (rate(mlflow_prediction_errors_total{{{selector}}}[{window}])) / sum by (namespace, model_name, model_version) (rate(mlflow_predictions_total{{{selector}}}[{window}])) > {}",
                number(params.error_rate)
            ),
            &params.for_,
            params,
            &[],
            "Error rate of {{ $labels.model_name }} version {{ $labels.model_version }} is above the threshold".to_owned(),
            format!(
                "{{{{ $value | humanizePercentage }}}} of predictions of model {{{{ $labels.model_name }}}} version {{{{ $labels.model_version }}}} in namespace {{{{ $labels.namespace }}}} failed over the last {window}, above {} for longer than {}.",
                number(params.error_rate),
                params.for_
            ),
        );
        groups.push(RuleGroup {
            name: format!(
                "mlkube.modeldeployment.{}.{}.serving",
                params.namespace, params.deployment
            ),
            rules: vec![latency, errors],
        });
    }
    if let Some(quality) = &params.quality {
        let mut rules = Vec::new();
        let mut thresholds = quality.thresholds.clone();
        thresholds.sort_by_key(|t| t.metric);
        for t in &thresholds {
            let metric = t.metric.as_str();
            let series = format!(
                "mlflow_model_quality{{model_name={}, metric={}, window={}}}",
                promql_string(&params.model_name),
                promql_string(metric),
                promql_string(&quality.window)
            );
            if let Some(min) = t.min {
                rules.push(alert(
                    ALERT_QUALITY_LOW,
                    format!("{series} < {}", number(min)),
                    &quality.for_,
                    params,
                    &[("metric", metric.to_owned())],
                    format!("{metric} of {{{{ $labels.model_name }}}} version {{{{ $labels.model_version }}}} is below {}", number(min)),
                    format!(
                        "Model {{{{ $labels.model_name }}}} version {{{{ $labels.model_version }}}} has {metric} {{{{ $value }}}} over the {} window, below the minimum {}.",
                        quality.window,
                        number(min)
                    ),
                ));
            }
            if let Some(max) = t.max {
                rules.push(alert(
                    ALERT_QUALITY_HIGH,
                    format!("{series} > {}", number(max)),
                    &quality.for_,
                    params,
                    &[("metric", metric.to_owned())],
                    format!("{metric} of {{{{ $labels.model_name }}}} version {{{{ $labels.model_version }}}} is above {}", number(max)),
                    format!(
                        "Model {{{{ $labels.model_name }}}} version {{{{ $labels.model_version }}}} has {metric} {{{{ $value }}}} over the {} window, above the maximum {}.",
                        quality.window,
                        number(max)
                    ),
                ));
            }
        }
        if !rules.is_empty() {
            groups.push(RuleGroup {
                name: format!(
                    "mlkube.modeldeployment.{}.{}.quality",
                    params.namespace, params.deployment
                ),
                rules,
            });
        }
    }
    groups
}

/// The PrometheusRule of a model deployment, or `None` when it would have no rule.
pub fn build_prometheus_rule(
    mut metadata: ObjectMeta,
    params: &AlertParams,
    extra_labels: &BTreeMap<String, String>,
) -> Option<PrometheusRule> {
    let groups = build_rule_groups(params);
    if groups.is_empty() {
        return None;
    }
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    for (k, v) in extra_labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Some(PrometheusRule {
        metadata,
        spec: PrometheusRuleSpec { groups },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::model_deployment::{QualityMetric, QualityThreshold, Severity};
    use crate::validate::QualityParams;

    fn params() -> AlertParams {
        AlertParams {
            namespace: "ml".into(),
            model_name: "churn".into(),
            deployment: "churn-prod".into(),
            serving: true,
            latency_p99_seconds: 0.25,
            error_rate: 0.02,
            for_: "10m".into(),
            rate_window: "2m".into(),
            severity: Severity::Critical,
            labels: BTreeMap::from([("team".to_owned(), "ml".to_owned())]),
            runbook_base_url: "https://runbooks.example/mlkube".into(),
            quality: Some(QualityParams {
                window: "1h".into(),
                for_: "15m".into(),
                thresholds: vec![QualityThreshold {
                    metric: QualityMetric::Accuracy,
                    min: Some(0.9),
                    max: Some(0.999),
                }],
            }),
        }
    }

    #[test]
    fn every_alert_has_severity_summary_description_and_runbook() {
        let groups = build_rule_groups(&params());
        let rules: Vec<&Rule> = groups.iter().flat_map(|g| &g.rules).collect();
        assert_eq!(rules.len(), 4);
        for rule in rules {
            assert_eq!(rule.labels["severity"], "critical", "{}", rule.alert);
            assert_eq!(rule.labels["team"], "ml");
            assert_eq!(rule.labels["model_deployment"], "churn-prod");
            for key in ["summary", "description", "runbook_url"] {
                assert!(!rule.annotations[key].is_empty(), "{} lacks {key}", rule.alert);
            }
            assert!(rule.annotations["runbook_url"].starts_with("https://runbooks.example/mlkube#mlkube"));
            assert!(rule.for_.is_some());
        }
    }

    #[test]
    fn thresholds_and_selectors_are_parameters() {
        let groups = build_rule_groups(&params());
        let serving = &groups[0];
        assert_eq!(serving.name, "mlkube.modeldeployment.ml.churn-prod.serving");
        assert_eq!(
            serving.rules[0].expr,
            "histogram_quantile(0.99, sum by (namespace, model_name, model_version, le) (rate(mlflow_inference_latency_seconds_bucket{namespace=\"ml\", model_name=\"churn\"}[2m]))) > 0.25"
        );
        assert_eq!(serving.rules[0].for_.as_deref(), Some("10m"));
        assert!(serving.rules[1].expr.ends_with(" > 0.02"));
        assert!(
            serving.rules[1]
                .expr
                .contains("mlflow_prediction_errors_total{namespace=\"ml\", model_name=\"churn\"}[2m]")
        );
        let quality = &groups[1];
        assert_eq!(quality.rules[0].alert, ALERT_QUALITY_LOW);
        assert_eq!(
            quality.rules[0].expr,
            "mlflow_model_quality{model_name=\"churn\", metric=\"accuracy\", window=\"1h\"} < 0.9"
        );
        assert_eq!(quality.rules[1].alert, ALERT_QUALITY_HIGH);
        assert_eq!(quality.rules[1].labels["metric"], "accuracy");
    }

    #[test]
    fn label_values_are_escaped_in_promql() {
        let mut p = params();
        p.model_name = "we\"ird\\name".into();
        let groups = build_rule_groups(&p);
        assert!(groups[0].rules[0].expr.contains(r#"model_name="we\"ird\\name""#));
    }

    #[test]
    fn no_groups_when_nothing_is_enabled() {
        let mut p = params();
        p.serving = false;
        p.quality = None;
        assert!(build_rule_groups(&p).is_empty());
    }
}
