//! `spec.rollout` and `status.rollout` of a ModelDeployment: canary rollouts of a new model
//! version, judged on serving metrics and on prediction quality from delayed ground truth.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model_deployment::{QualityMetric, ResolvedModel};

/// How a new model version reaches the traffic.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.strategy == 'Canary') == has(self.canary)").message("rollout.canary goes with (and is needed by) strategy: Canary"))]
pub struct RolloutSpec {
    /// `Rolling`: the pods roll to a new version all at once (Kubernetes' rolling update), as
    /// without `rollout`. `Canary`: a new version first runs in separate pods that take a growing
    /// share of the traffic (`canary.steps`) while an analysis compares them with the stable
    /// version; the stable pods are never restarted by a canary. Default: `Rolling`.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// The canary's steps, analysis and what success and failure do (`strategy: Canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
}

/// The rollout strategy.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RolloutStrategy {
    #[default]
    Rolling,
    Canary,
}

/// A canary rollout.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.steps.map(s, s.weight).isSorted()").message("canary.steps weights must not decrease"))]
pub struct CanarySpec {
    /// Traffic shares the canary takes in turn, each held for `hold` while every analysis
    /// passes; after the last step the canary is promoted. Weights in percent, 1 to 100, never
    /// decreasing, e.g. `[{weight: 10, hold: 10m}, {weight: 50, hold: 30m}]`.
    #[schemars(length(min = 1, max = 10))]
    pub steps: Vec<CanaryStep>,
    /// How the canary is judged against the stable version.
    #[serde(default)]
    pub analysis: CanaryAnalysis,
    /// What a canary that passed every step does besides becoming the stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<CanarySuccess>,
    /// What a failed canary does: `Rollback` (remove the canary pods; the version is not tried
    /// again until the model reference resolves to another version) or `Pause` (keep the canary
    /// at its weight, stop judging it, and wait for a person). Default: `Rollback`.
    #[serde(default)]
    pub on_failure: CanaryFailureAction,
}

/// One step of a canary.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.weight >= 1 && self.weight <= 100").message("a canary step's weight is a percentage from 1 to 100"))]
pub struct CanaryStep {
    /// Percent of the traffic the canary takes in this step.
    pub weight: i32,
    /// How long the step lasts (with every analysis passing) before the next one, e.g. `10m`.
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub hold: String,
}

/// The analysis that judges a canary. Every gate must pass; a gate without enough data is
/// inconclusive, and an inconclusive analysis holds the canary where it is (it never promotes).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Time between analyses, and the range of the serving metrics each one reads. Default: `1m`.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub interval: String,
    /// Failed analyses in a row that fail the canary. Default: 1.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: i32,
    /// Fewest canary requests in one interval for the serving gates to count. Default: 100.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1))]
    pub min_requests: i64,
    /// Fail when the canary's share of failed predictions (`mlflow_prediction_errors_total` over
    /// `mlflow_predictions_total`) is above this, e.g. 0.01 for 1 %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: Option<f64>,
    /// Fail when the canary's p99 latency is above the stable version's times this, e.g. 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub max_latency_p99_ratio: Option<f64>,
    /// Fail when the canary's predictions are worse than the stable version's, on ground truth
    /// from the tracking server's quality API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<CanaryQualityGate>,
}

impl Default for CanaryAnalysis {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            failure_limit: default_failure_limit(),
            min_requests: default_min_requests(),
            max_error_rate: None,
            max_latency_p99_ratio: None,
            quality: None,
        }
    }
}

fn default_interval() -> String {
    "1m".to_owned()
}

fn default_failure_limit() -> i32 {
    1
}

fn default_min_requests() -> i64 {
    100
}

/// The quality gate: the same metric for both versions over the same window, which ends
/// `labelDelay` ago (predictions younger than that have no ground truth yet).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryQualityGate {
    /// The metric, as the tracking server computes it (`accuracy`, `f1`, `roc_auc`, `rmse`, …).
    pub metric: QualityMetric,
    /// Window of the metric. Default: `1h`.
    #[serde(default = "default_quality_window")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub window: String,
    /// How long ground truth takes to arrive: the window ends this long ago. Default: `0s`.
    #[serde(default = "default_label_delay")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub label_delay: String,
    /// Fewest labelled predictions of each version in the window for the gate to count.
    /// Default: 100.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1))]
    pub min_labelled: i64,
    /// Fail when the canary's metric is worse than the stable version's by more than this
    /// (absolute: 0.02 is two points of accuracy; for error metrics such as `rmse` and
    /// `log_loss`, higher is worse).
    #[schemars(range(min = 0.0))]
    pub max_drop: f64,
    /// JSON pointer to the score in the model's outputs, e.g. `/predictions/0`. Default: the
    /// tracking server's (the first number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub score_field: Option<String>,
    /// The positive class of a classifier. Default: the tracking server's (`1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub positive_label: Option<String>,
}

fn default_quality_window() -> String {
    "1h".to_owned()
}

fn default_label_delay() -> String {
    "0s".to_owned()
}

/// What a successful canary does.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanarySuccess {
    /// Also point this registry alias (e.g. `champion`) at the promoted version, through the
    /// tracking server's REST API with the deployment's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub set_alias: Option<String>,
}

/// What a failed canary does.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum CanaryFailureAction {
    #[default]
    Rollback,
    Pause,
}

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RolloutPhase {
    /// One version serves everything.
    #[default]
    Stable,
    /// A canary takes `currentWeight` percent of the traffic and is being judged.
    Canary,
    /// A failed canary is kept at its weight (`onFailure: Pause`) until a person acts.
    Paused,
    /// The canary failed and was removed; its version is not tried again until the model
    /// reference resolves to another one.
    RolledBack,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "Stable",
            Self::Canary => "Canary",
            Self::Paused => "Paused",
            Self::RolledBack => "RolledBack",
        }
    }
}

/// The outcome of one analysis.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum VerdictResult {
    Pass,
    Fail,
    Inconclusive,
}

impl VerdictResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "Pass",
            Self::Fail => "Fail",
            Self::Inconclusive => "Inconclusive",
        }
    }
}

/// The numbers one analysis read. Absent: no data.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Measurements {
    /// Canary requests in the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_requests: Option<f64>,
    /// The canary's share of failed predictions in the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_error_rate: Option<f64>,
    /// p99 latency of the canary in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_latency_p99: Option<f64>,
    /// p99 latency of the stable version in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_latency_p99: Option<f64>,
    /// The quality metric of the canary over the quality window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_quality: Option<f64>,
    /// The quality metric of the stable version over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_quality: Option<f64>,
    /// Labelled canary predictions behind `canaryQuality`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_labelled: Option<i64>,
    /// Labelled stable predictions behind `stableQuality`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_labelled: Option<i64>,
}

/// The last analysis of a canary.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `Pass`, `Fail` or `Inconclusive` (not enough data: the canary holds).
    pub result: VerdictResult,
    /// Each gate's finding, in words.
    pub message: String,
    /// When the analysis ran.
    pub time: Time,
    /// The numbers behind it.
    #[serde(default)]
    pub measurements: Measurements,
}

/// Where a canary rollout stands.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// `Stable`, `Canary`, `Paused` or `RolledBack`.
    #[serde(default)]
    pub phase: RolloutPhase,
    /// The version serving the stable share of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,
    /// The version being judged (`Canary`, `Paused`), or the one rolled back (`RolledBack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,
    /// The canary's model version as found in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_model: Option<ResolvedModel>,
    /// Percent of the traffic the canary is meant to take (0 without one).
    #[serde(default)]
    pub current_weight: i32,
    /// Index of the current step in `spec.rollout.canary.steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i32>,
    /// When the canary started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_started_at: Option<Time>,
    /// When the current step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Failed analyses in a row.
    #[serde(default)]
    pub failed_analyses: i32,
    /// The last analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<Verdict>,
    /// Versions whose canary failed, oldest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_versions: Vec<String>,
}
