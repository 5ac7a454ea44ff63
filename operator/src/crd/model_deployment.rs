//! `ModelDeployment`: one registered model version served behind the mlkube metrics sidecar.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ServiceMonitorSettings, default_one, default_true};

/// Desired state of a model deployment: which model version to serve, how, and how it is
/// monitored.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[kube(
    group = "mlkube.io",
    version = "v1alpha1",
    kind = "ModelDeployment",
    plural = "modeldeployments",
    shortname = "md",
    category = "mlkube",
    namespaced,
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    validation = Rule::new("self.metadata.name.size() <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label of at most 50 characters (it names the Service and other children)"),
    doc = "A registered MLflow model version served behind the mlkube metrics sidecar, with a Service, ServiceMonitor and alert rules.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name": "Model", "type": "string", "jsonPath": ".spec.model.name"}"#,
    printcolumn = r#"{"name": "Version", "type": "string", "jsonPath": ".status.resolvedModel.version"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"}"#,
    printcolumn = r#"{"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase"}"#,
    printcolumn = r#"{"name": "Canary", "type": "string", "jsonPath": ".status.rollout.canaryVersion"}"#,
    printcolumn = r#"{"name": "Weight", "type": "integer", "jsonPath": ".status.rollout.currentWeight"}"#,
    printcolumn = r#"{"name": "Verdict", "type": "string", "priority": 1, "jsonPath": ".status.rollout.lastVerdict.result"}"#,
    printcolumn = r#"{"name": "URL", "type": "string", "jsonPath": ".status.url"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.trackingServerRef) != has(self.trackingUri)").message("set exactly one of trackingServerRef and trackingUri"))]
#[x_kube(validation = Rule::new("!has(self.trackingCredentialsSecretRef) || has(self.trackingUri)").message("trackingCredentialsSecretRef goes with trackingUri; a trackingServerRef uses the server's admin Secret"))]
#[x_kube(validation = Rule::new("!has(self.trackingCaBundle) || (has(self.trackingUri) && self.trackingUri.startsWith('https://'))").message("trackingCaBundle goes with an https:// trackingUri"))]
// `kubectl scale md` (the scale subresource writes spec.replicas) is refused while an autoscaler
// owns the Deployment's replicas.
#[x_kube(validation = Rule::new("!has(self.autoscaling) || !has(oldSelf.autoscaling) || self.replicas == oldSelf.replicas").message("spec.replicas is not used while spec.autoscaling is set (the autoscaler sets the Deployment's replicas, so kubectl scale is refused): change autoscaling.minReplicas/maxReplicas, or remove spec.autoscaling first"))]
#[x_kube(validation = Rule::new("self.port != 8000 && self.port != 8001").message("port is the model server's own port and must differ from the sidecar's serving port 8000 and metrics port 8001"))]
pub struct ModelDeploymentSpec {
    /// The TrackingServer (in this namespace) whose registry holds the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_server_ref: Option<TrackingServerRef>,

    /// URL of a tracking server outside this namespace or cluster, e.g.
    /// `http://mlflow.mlops.svc:5000` or `https://mlflow.example.com`. An `https://` server is
    /// verified against the system's CA certificates, or `trackingCaBundle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s]+$"))]
    pub tracking_uri: Option<String>,

    /// CA certificates (PEM) that sign the `https://` `trackingUri` server's certificate, for a
    /// private CA: the operator's registry lookups, the sidecar's payload capture and the model
    /// server trust exactly these instead of the system's CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_ca_bundle: Option<CaBundleRef>,

    /// Basic-auth account for `trackingUri` (a Secret with `username` and `password` keys): used
    /// by the operator's registry lookups and given to the pods as `MLFLOW_TRACKING_USERNAME` /
    /// `MLFLOW_TRACKING_PASSWORD`. A `trackingServerRef` uses that server's admin Secret instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_credentials_secret_ref: Option<crate::crd::tracking_server::AdminSecretRef>,

    /// The registered model to serve.
    pub model: ModelRef,

    /// Image of the model server. Default: an image with MLflow's pyfunc scoring server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Command of the model server. It must listen on 127.0.0.1:`port` and finds the model URI in
    /// `MLKUBE_MODEL_URI`. Default: `mlflow models serve` for the resolved model version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments of the model server command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Extra environment variables of the model server container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Port of the model server on 127.0.0.1 inside the pod; never exposed. Default: 8080.
    #[serde(default = "default_model_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,

    /// Path on the model server that answers 200 when the model is loaded; the sidecar's
    /// `/readyz` checks it. Default: `/ping`.
    #[serde(default = "default_health_path")]
    #[schemars(pattern(r"^/[^\s]*$"))]
    pub health_path: String,

    /// Number of pods. The scale subresource makes `kubectl scale` work on this field. Not used
    /// (and `kubectl scale` is refused) while `autoscaling` is set. Default: 1.
    #[serde(default = "default_one")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Compute resources of the model server container, e.g. `limits: {nvidia.com/gpu: 1}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Scale the pods on load (in-flight requests per pod, or CPU) between `minReplicas` and
    /// `maxReplicas` with a HorizontalPodAutoscaler or a KEDA ScaledObject, instead of
    /// `replicas`. The operator then never sets the Deployment's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// A PodDisruptionBudget for the pods. Default: `maxUnavailable: 1` when `replicas` (or
    /// `autoscaling.minReplicas`) is 2 or more, none otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<crate::crd::workload::DisruptionBudgetSpec>,

    /// How a new model version replaces the pods. Default: Kubernetes' `25%`/`25%`; for a model
    /// server that requests a GPU, `maxSurge: 0` and `maxUnavailable: 1` (no spare GPU needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<crate::crd::workload::RolloutStrategySpec>,

    /// How a new model version reaches the traffic: `Rolling` (every pod at once, the default) or
    /// `Canary` (a second set of pods takes a growing share of the traffic and is promoted or
    /// rolled back on its serving metrics and prediction quality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::crd::rollout::RolloutSpec>,

    /// Where the pods run: node selector, tolerations, affinity, topology spread, priority and
    /// runtime class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<crate::crd::workload::SchedulingSpec>,

    /// ServiceAccount the pods run as, for workload identity (an IAM role through EKS IRSA, a
    /// Google service account through GKE Workload Identity). It must exist in this namespace;
    /// the pods still get no Kubernetes API token. Default: the namespace's default ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub service_account_name: Option<String>,

    /// Expose the model outside the cluster: a Gateway API HTTPRoute or an Ingress to the
    /// Service's `http` port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<crate::crd::workload::ExposureSpec>,

    /// The metrics sidecar in front of the model server.
    #[serde(default)]
    pub sidecar: SidecarSpec,

    /// ServiceMonitor and alert rules.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
}

fn default_model_port() -> i32 {
    8080
}

fn default_health_path() -> String {
    "/ping".to_owned()
}

/// Load-based scaling of a ModelDeployment.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
#[x_kube(validation = Rule::new("self.minReplicas >= 1 || self.engine == 'KEDA'").message("only KEDA scales to zero: set autoscaling.engine: KEDA, or minReplicas of at least 1"))]
#[x_kube(validation = Rule::new("self.minReplicas >= 1 || (has(self.target.inFlightRequests) && has(self.keda) && has(self.keda.query))").message("minReplicas: 0 needs target.inFlightRequests and autoscaling.keda.query, a query that sees demand while no pod runs (the pods' in-flight series has no data then, so it could never wake the model)"))]
#[x_kube(validation = Rule::new("self.engine != 'KEDA' || has(self.target.cpuUtilization) || has(self.keda)").message("engine: KEDA on target.inFlightRequests needs autoscaling.keda.prometheusAddress"))]
#[x_kube(validation = Rule::new("self.engine == 'KEDA' || !has(self.keda)").message("autoscaling.keda goes with engine: KEDA"))]
pub struct AutoscalingSpec {
    /// `HPA`: a HorizontalPodAutoscaler (`autoscaling/v2`); on `inFlightRequests` it reads the
    /// Pods metric `mlflow_inference_in_flight` from the custom metrics API (Prometheus Adapter
    /// with the rule the chart ships). `KEDA`: a KEDA ScaledObject with a Prometheus trigger; the
    /// only engine that may scale to zero. Default: `HPA`.
    #[serde(default)]
    pub engine: AutoscalingEngine,
    /// Fewest pods. 0 (scale to zero) only with `engine: KEDA`. Default: 1.
    #[serde(default = "default_one")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// What each pod should carry on average: exactly one of `inFlightRequests` and
    /// `cpuUtilization`.
    pub target: AutoscalingTarget,
    /// The KEDA ScaledObject's Prometheus trigger (`engine: KEDA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keda: Option<KedaSpec>,
}

/// The autoscaler.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum AutoscalingEngine {
    #[default]
    #[serde(rename = "HPA")]
    Hpa,
    #[serde(rename = "KEDA")]
    Keda,
}

impl AutoscalingEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hpa => "HPA",
            Self::Keda => "KEDA",
        }
    }
}

/// The per-pod target of the autoscaler.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.inFlightRequests) != has(self.cpuUtilization)").message("set exactly one of autoscaling.target.inFlightRequests and autoscaling.target.cpuUtilization"))]
pub struct AutoscalingTarget {
    /// Requests in flight per pod on average (the sidecar's `mlflow_inference_in_flight`), e.g.
    /// 4 for a model server that handles 4 requests at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub in_flight_requests: Option<i32>,
    /// CPU use in percent of the pods' CPU requests on average; the model server needs
    /// `resources.requests.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub cpu_utilization: Option<i32>,
}

/// KEDA's Prometheus trigger.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KedaSpec {
    /// URL of the Prometheus server that scrapes the sidecars, e.g.
    /// `http://prometheus-operated.monitoring.svc:9090`.
    #[schemars(length(min = 1, max = 2048), pattern(r"^https?://[^\s]+$"))]
    pub prometheus_address: String,
    /// PromQL whose value divided by `target.inFlightRequests` is the number of pods. Default:
    /// the sum of `mlflow_inference_in_flight` over this deployment's pods. Scaling from zero
    /// needs a query that sees demand while no pod runs, such as your gateway's active requests
    /// for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub query: Option<String>,
    /// Seconds between KEDA's queries. Default: KEDA's 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub polling_interval_seconds: Option<i32>,
    /// Seconds without demand before scaling to `minReplicas: 0`. Default: KEDA's 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub cooldown_period_seconds: Option<i32>,
}

/// Where a PEM CA bundle is: exactly one of a ConfigMap key and a Secret key.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMapKeyRef) != has(self.secretKeyRef)").message("set exactly one of trackingCaBundle.configMapKeyRef and trackingCaBundle.secretKeyRef"))]
pub struct CaBundleRef {
    /// A ConfigMap key holding the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<crate::crd::ConfigMapKeyRef>,
    /// A Secret key holding the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<crate::crd::SecretKeyRef>,
}

/// Reference to a TrackingServer in the same namespace.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrackingServerRef {
    /// Name of the TrackingServer.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// A registered model: `name` plus exactly one of `version`, `alias` and `uri`.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.version), has(self.alias), has(self.uri)].filter(x, x).size() == 1").message("set exactly one of model.version, model.alias and model.uri"))]
pub struct ModelRef {
    /// Name of the registered model.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// A version number, or `latest` for the highest version. Pinned in `status.resolvedModel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([1-9][0-9]*|latest)$"))]
    pub version: Option<String>,
    /// A registry alias such as `champion` (letters, digits, `_` and `-`, as MLflow allows). When
    /// the alias moves, the deployment rolls to the new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub alias: Option<String>,
    /// A model URI: `models:/<name>/<version>`, `models:/<name>/<stage>`, `models:/<name>@<alias>`
    /// or `runs:/<run-id>/<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(models:/[^/@]+(/[^/]+|@[^/]+)|runs:/[0-9a-zA-Z]+/.+)$"))]
    pub uri: Option<String>,
}

/// The metrics sidecar.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Image of mlkube-sidecar. Default: the image matching the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Payload capture: sampled predictions sent to the tracking server for quality metrics.
    #[serde(default)]
    pub capture: CaptureSpec,
    /// Seconds the sidecar waits for the model server before answering 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub request_timeout_seconds: Option<i32>,
    /// Compute resources of the sidecar container. Default: 50m CPU and 32Mi memory requested,
    /// 128Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Prediction capture settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CaptureSpec {
    /// Fraction of requests captured, from 0 (off) to 1 (all). Default: 0.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_rate: f64,
    /// Larger request or response bodies are not captured. Default: 65536.
    #[serde(default = "default_max_payload")]
    #[schemars(range(min = 0, max = 16777216))]
    pub max_payload_bytes: i64,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        Self {
            sample_rate: 0.0,
            max_payload_bytes: default_max_payload(),
        }
    }
}

fn default_max_payload() -> i64 {
    65_536
}

/// Monitoring of the deployment.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// ServiceMonitor for the sidecar's `metrics` port (needs Prometheus Operator).
    #[serde(default)]
    pub service_monitor: ServiceMonitorSettings,
    /// Latency and error-rate alerts, in a PrometheusRule (needs Prometheus Operator).
    #[serde(default)]
    pub alerts: AlertsSpec,
    /// Model-quality alerts on the tracking server's `mlflow_model_quality` metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualitySpec>,
}

/// Serving alerts.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertsSpec {
    /// Create the PrometheusRule. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Alert when the p99 inference latency is above this duration. Default: `500ms`.
    #[serde(default = "default_latency_p99")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub latency_p99: String,
    /// Alert when the fraction of failed predictions is above this value (0.01 = 1 %).
    /// Default: 0.01.
    #[serde(default = "default_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_rate: f64,
    /// How long a condition must hold before the alert fires. Default: `5m`.
    #[serde(default = "default_for", rename = "for")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub for_: String,
    /// Window of the rates the alerts compute. Default: `5m`.
    #[serde(default = "default_for")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub rate_window: String,
    /// `severity` label of the alerts. Default: `warning`.
    #[serde(default)]
    pub severity: Severity,
    /// Extra labels on every alert, e.g. `team: ml-platform`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            latency_p99: default_latency_p99(),
            error_rate: default_error_rate(),
            for_: default_for(),
            rate_window: default_for(),
            severity: Severity::default(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_latency_p99() -> String {
    "500ms".to_owned()
}

fn default_error_rate() -> f64 {
    0.01
}

fn default_for() -> String {
    "5m".to_owned()
}

/// Alert severity.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// Model-quality alerts.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QualitySpec {
    /// Window over which the tracking server computes the quality metrics, e.g. `1h`.
    /// Default: `1h`.
    #[serde(default = "default_quality_window")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub window: String,
    /// How long a threshold must be breached before the alert fires. Default: `15m`.
    #[serde(default = "default_quality_for", rename = "for")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub for_: String,
    /// Thresholds, one alert each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub thresholds: Vec<QualityThreshold>,
}

fn default_quality_window() -> String {
    "1h".to_owned()
}

fn default_quality_for() -> String {
    "15m".to_owned()
}

/// A bound on one quality metric.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.min) || has(self.max)").message("a quality threshold needs min, max or both"))]
#[x_kube(validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("min must not exceed max"))]
pub struct QualityThreshold {
    /// The quality metric.
    pub metric: QualityMetric,
    /// Alert when the metric falls below this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Alert when the metric rises above this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Quality metrics the tracking server computes.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum QualityMetric {
    Accuracy,
    Precision,
    Recall,
    F1,
    RocAuc,
    LogLoss,
    Mse,
    Rmse,
    Mae,
    R2,
}

impl QualityMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accuracy => "accuracy",
            Self::Precision => "precision",
            Self::Recall => "recall",
            Self::F1 => "f1",
            Self::RocAuc => "roc_auc",
            Self::LogLoss => "log_loss",
            Self::Mse => "mse",
            Self::Rmse => "rmse",
            Self::Mae => "mae",
            Self::R2 => "r2",
        }
    }
}

/// Observed state of a ModelDeployment.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The model version being served, as resolved against the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_model: Option<ResolvedModel>,
    /// The tracking server URL the deployment uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_uri: Option<String>,
    /// In-cluster URL of the model's Service (the sidecar's serving port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Pods of the current Deployment (the scale subresource reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the pods, for HorizontalPodAutoscalers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The canary rollout (`spec.rollout.strategy: Canary`): phase, versions, weight and the last
    /// analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::crd::rollout::RolloutStatus>,
    /// `Ready`, `Progressing`, `Degraded`, `ModelResolved` and `Monitoring`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A model version as found in the registry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedModel {
    /// What was asked for, e.g. `models:/churn@champion`.
    pub reference: String,
    /// Registered model name.
    pub name: String,
    /// Model version served.
    pub version: String,
    /// Run that produced the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Where the version's artifacts are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}
