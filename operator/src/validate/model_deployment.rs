//! ModelDeployment: the resolved model pinned, sidecar, monitoring and alert parameters, with
//! every default resolved.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;

use k8s_openapi::api::apps::v1::RollingUpdateDeployment;

use super::owner::owner_of;
use super::workload::{self, Budget};
use super::{Defaults, Owner, TrackingAccess, ValidationError, duration_secs};
use crate::cluster::Apis;
use crate::crd::model_deployment::{
    AutoscalingEngine, AutoscalingSpec, QualityThreshold, ResolvedModel, Severity,
};
use crate::crd::workload::{ExposureSpec, SchedulingSpec};
use crate::crd::{ModelDeployment, ServiceMonitorSettings, parse_duration_ms};
use crate::rollout::CanaryParams;

/// The per-pod series of requests in flight that the sidecar exports, the HPA's Pods metric
/// (served by the Prometheus Adapter rule the chart ships under the same name).
pub const IN_FLIGHT_METRIC: &str = "mlflow_inference_in_flight";

/// The default KEDA query: requests in flight summed over the deployment's pods, by the labels
/// Prometheus Operator gives every target of a ServiceMonitor (the Service is named after the
/// ModelDeployment).
pub fn in_flight_query(namespace: &str, service: &str) -> String {
    format!("sum({IN_FLIGHT_METRIC}{{namespace=\"{namespace}\",service=\"{service}\"}})")
}

/// What the autoscaler keeps per pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleMetric {
    /// Requests in flight per pod on average.
    InFlight(i32),
    /// CPU use in percent of the requests.
    Cpu(i32),
}

/// KEDA's Prometheus trigger, with the default query resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct KedaParams {
    pub prometheus_address: String,
    pub query: String,
    pub polling_interval_seconds: Option<i32>,
    pub cooldown_period_seconds: Option<i32>,
}

/// The autoscaler of a ModelDeployment.
#[derive(Clone, Debug, PartialEq)]
pub struct Autoscaler {
    pub engine: AutoscalingEngine,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub metric: ScaleMetric,
    pub keda: Option<KedaParams>,
    /// Whether the cluster serves the engine's API (KEDA may be missing; autoscaling/v2 is core).
    pub available: bool,
}

fn autoscaler(
    spec: &AutoscalingSpec,
    namespace: &str,
    name: &str,
    resources: Option<&ResourceRequirements>,
    apis: Apis,
) -> Result<Autoscaler, ValidationError> {
    let field = |f: &'static str, m: &str| Err(ValidationError::field(f, m));
    if spec.max_replicas < 1 || spec.min_replicas < 0 || spec.min_replicas > spec.max_replicas {
        return field(
            "spec.autoscaling",
            "needs 0 <= minReplicas <= maxReplicas and maxReplicas >= 1",
        );
    }
    if spec.min_replicas == 0 && spec.engine != AutoscalingEngine::Keda {
        return field("spec.autoscaling.minReplicas", "only KEDA scales to zero");
    }
    let metric = match (spec.target.in_flight_requests, spec.target.cpu_utilization) {
        (Some(n), None) if n >= 1 => ScaleMetric::InFlight(n),
        (None, Some(p)) if p >= 1 => ScaleMetric::Cpu(p),
        _ => {
            return field(
                "spec.autoscaling.target",
                "set exactly one of inFlightRequests and cpuUtilization, at least 1",
            );
        }
    };
    if let ScaleMetric::Cpu(_) = metric {
        // Utilization is a fraction of the request; the sidecar's container has one already.
        let has_cpu = resources.is_some_and(|r| {
            [&r.requests, &r.limits]
                .into_iter()
                .flatten()
                .any(|m| m.contains_key("cpu"))
        });
        if !has_cpu {
            return field(
                "spec.autoscaling.target.cpuUtilization",
                "needs resources.requests.cpu on the model server (utilization is a share of the request)",
            );
        }
    }
    let keda = match (spec.engine, &spec.keda) {
        (AutoscalingEngine::Hpa, Some(_)) => {
            return field("spec.autoscaling.keda", "goes with engine: KEDA");
        }
        (AutoscalingEngine::Hpa, None) => None,
        (AutoscalingEngine::Keda, None) if matches!(metric, ScaleMetric::InFlight(_)) => {
            return field(
                "spec.autoscaling.keda.prometheusAddress",
                "engine: KEDA on inFlightRequests needs the Prometheus server's address",
            );
        }
        (AutoscalingEngine::Keda, None) => None,
        (AutoscalingEngine::Keda, Some(k)) => Some(KedaParams {
            prometheus_address: k.prometheus_address.clone(),
            query: k
                .query
                .clone()
                .unwrap_or_else(|| in_flight_query(namespace, name)),
            polling_interval_seconds: k.polling_interval_seconds,
            cooldown_period_seconds: k.cooldown_period_seconds,
        }),
    };
    if spec.min_replicas == 0
        && !(matches!(metric, ScaleMetric::InFlight(_))
            && spec.keda.as_ref().is_some_and(|k| k.query.is_some()))
    {
        return field(
            "spec.autoscaling.keda.query",
            "minReplicas: 0 needs target.inFlightRequests and a query that sees demand while no pod runs",
        );
    }
    Ok(Autoscaler {
        engine: spec.engine,
        min_replicas: spec.min_replicas,
        max_replicas: spec.max_replicas,
        metric,
        keda,
        available: match spec.engine {
            AutoscalingEngine::Hpa => true,
            AutoscalingEngine::Keda => apis.keda,
        },
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sidecar {
    pub image: String,
    pub sample_rate: f64,
    pub max_payload_bytes: i64,
    pub request_timeout_seconds: Option<i32>,
    pub resources: Option<ResourceRequirements>,
}

/// Parameters of the alert rules of one model deployment. Thresholds and selectors are data,
/// so the same builder serves every deployment and the rendered rules file.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertParams {
    /// Namespace of the model's pods (series selector).
    pub namespace: String,
    /// `model_name` of the series.
    pub model_name: String,
    /// Name of the ModelDeployment (used in group names and annotations).
    pub deployment: String,
    /// Latency and error-rate alerts (`alerts.enabled`); quality alerts come with `quality`.
    pub serving: bool,
    pub latency_p99_seconds: f64,
    pub error_rate: f64,
    pub for_: String,
    pub rate_window: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub runbook_base_url: String,
    pub quality: Option<QualityParams>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QualityParams {
    pub window: String,
    pub for_: String,
    pub thresholds: Vec<QualityThreshold>,
}

/// The canary pods of a rollout in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryTrack {
    pub model: ResolvedModel,
    /// The URI the canary's model server loads.
    pub model_uri: String,
    /// Percent of the traffic the canary is meant to take.
    pub weight: i32,
    /// Pods of the canary Deployment.
    pub replicas: i32,
}

/// A ModelDeployment with its model resolved and every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedModelDeployment {
    pub owner: Owner,
    pub model: ResolvedModel,
    /// The URI the model server loads: pinned to the resolved version.
    pub model_uri: String,
    pub tracking: TrackingAccess,
    pub image: String,
    /// `None`: the default MLflow scoring server command.
    pub command: Option<Vec<String>>,
    pub args: Vec<String>,
    pub env: Vec<k8s_openapi::api::core::v1::EnvVar>,
    pub port: i32,
    pub health_path: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// What the Deployment's `spec.replicas` is set to: `None` while an autoscaler owns it.
    pub deployment_replicas: Option<i32>,
    pub autoscaler: Option<Autoscaler>,
    pub resources: Option<ResourceRequirements>,
    pub rolling_update: Option<RollingUpdateDeployment>,
    pub disruption_budget: Option<Budget>,
    pub scheduling: SchedulingSpec,
    pub service_account_name: Option<String>,
    pub exposure: Option<ExposureSpec>,
    pub sidecar: Sidecar,
    pub monitoring_api: bool,
    /// Whether the cluster serves the Gateway API (HTTPRoutes).
    pub gateway_api: bool,
    pub service_monitor: Option<ServiceMonitorSettings>,
    /// Extra labels on the ServiceMonitor and PrometheusRule (`monitoring.serviceMonitor.labels`).
    pub monitoring_labels: BTreeMap<String, String>,
    pub alerts: Option<AlertParams>,
    /// In-cluster URL of the Service, `http://<name>.<namespace>.svc:8000`.
    pub url: String,
    /// `spec.rollout.strategy: Canary`, resolved; `None` for rolling updates.
    pub canary_rollout: Option<CanaryParams>,
    /// The canary pods while a canary runs (set by the controller from `status.rollout`).
    pub canary: Option<CanaryTrack>,
}

impl ValidatedModelDeployment {
    /// Whether the canary's traffic share is set by a weighted HTTPRoute (else by its replicas).
    pub fn weighted_route(&self) -> bool {
        self.gateway_api
            && self
                .exposure
                .as_ref()
                .is_some_and(|e| e.http_route.is_some() && e.ingress.is_none())
    }

    /// Run canary `model` at `weight` percent beside the stable pods.
    pub fn with_canary(mut self, model: &ResolvedModel, weight: i32) -> Self {
        let stable = self
            .deployment_replicas
            .or_else(|| self.autoscaler.as_ref().map(|a| a.min_replicas))
            .unwrap_or(1);
        let replicas = if self.weighted_route() {
            crate::rollout::replicas_for_share(stable, weight)
        } else {
            crate::rollout::replica_ratio(stable, weight)
        };
        self.canary = Some(CanaryTrack {
            model_uri: pinned_uri(model),
            model: model.clone(),
            weight,
            replicas,
        });
        self
    }
}

/// The model URI pinned to a resolved version.
fn pinned_uri(resolved: &ResolvedModel) -> String {
    match resolved.reference.strip_prefix("runs:/") {
        Some(_) => resolved.reference.clone(),
        None => format!("models:/{}/{}", resolved.name, resolved.version),
    }
}

pub fn validate_model_deployment(
    md: &ModelDeployment,
    resolved: &ResolvedModel,
    tracking: TrackingAccess,
    apis: impl Into<Apis>,
    defaults: &Defaults,
) -> Result<ValidatedModelDeployment, ValidationError> {
    let apis = apis.into();
    let monitoring_api = apis.monitoring;
    let owner = owner_of(md)?;
    let spec = &md.spec;
    let autoscaler = spec
        .autoscaling
        .as_ref()
        .map(|a| autoscaler(a, &owner.namespace, &owner.name, spec.resources.as_ref(), apis))
        .transpose()?;
    // While an autoscaler runs, the Deployment's replicas are its; with KEDA missing the
    // Deployment keeps the fewest pods that serve.
    let deployment_replicas = match &autoscaler {
        None => Some(spec.replicas.max(0)),
        Some(a) if a.available => None,
        Some(a) => Some(a.min_replicas.max(1)),
    };
    let min_pods = autoscaler.as_ref().map_or(spec.replicas, |a| a.min_replicas);
    let disruption_budget = workload::disruption_budget(spec.disruption_budget.as_ref(), min_pods)?;
    let rolling_update = workload::rolling_update(
        spec.rollout_strategy.as_ref(),
        workload::requests_gpu(spec.resources.as_ref()),
    )?;
    let exposure = workload::exposure(spec.exposure.as_ref())?;
    if spec.port == crate::ports::SIDECAR_HTTP || spec.port == crate::ports::SIDECAR_METRICS {
        return Err(ValidationError::field(
            "spec.port",
            "must differ from the sidecar's ports 8000 and 8001",
        ));
    }
    if !(0.0..=1.0).contains(&spec.sidecar.capture.sample_rate) {
        return Err(ValidationError::field(
            "spec.sidecar.capture.sampleRate",
            "must be between 0 and 1",
        ));
    }
    if tracking.ca_bundle.is_some() && !tracking.uri.starts_with("https://") {
        return Err(ValidationError::field(
            "spec.trackingCaBundle",
            "goes with an https:// trackingUri",
        ));
    }
    if resolved.version.is_empty() {
        return Err(ValidationError::field("status.resolvedModel", "has no version"));
    }
    let model_uri = pinned_uri(resolved);
    let canary_rollout = CanaryParams::from_spec(spec.rollout.as_ref())?;
    let alerts_spec = &spec.monitoring.alerts;
    let alerts = if alerts_spec.enabled || spec.monitoring.quality.is_some() {
        let latency_ms = parse_duration_ms(&alerts_spec.latency_p99).ok_or_else(|| {
            ValidationError::field(
                "spec.monitoring.alerts.latencyP99",
                "is not a duration such as 500ms",
            )
        })?;
        duration_secs("spec.monitoring.alerts.for", &alerts_spec.for_, 0)?;
        duration_secs("spec.monitoring.alerts.rateWindow", &alerts_spec.rate_window, 1)?;
        let quality = match &spec.monitoring.quality {
            Some(q) if !q.thresholds.is_empty() => {
                duration_secs("spec.monitoring.quality.window", &q.window, 1)?;
                duration_secs("spec.monitoring.quality.for", &q.for_, 0)?;
                Some(QualityParams {
                    window: q.window.clone(),
                    for_: q.for_.clone(),
                    thresholds: q.thresholds.clone(),
                })
            }
            _ => None,
        };
        Some(AlertParams {
            namespace: owner.namespace.clone(),
            model_name: resolved.name.clone(),
            deployment: owner.name.clone(),
            serving: alerts_spec.enabled,
            latency_p99_seconds: latency_ms as f64 / 1000.0,
            error_rate: alerts_spec.error_rate,
            for_: alerts_spec.for_.clone(),
            rate_window: alerts_spec.rate_window.clone(),
            severity: alerts_spec.severity,
            labels: alerts_spec.labels.clone(),
            runbook_base_url: defaults.runbook_base_url.clone(),
            quality,
        })
        .filter(|a| a.serving || a.quality.is_some())
    } else {
        None
    };
    let url = format!(
        "http://{}.{}.svc:{}",
        owner.name,
        owner.namespace,
        crate::ports::SIDECAR_HTTP
    );
    Ok(ValidatedModelDeployment {
        model: resolved.clone(),
        model_uri,
        tracking,
        image: spec
            .image
            .clone()
            .unwrap_or_else(|| defaults.model_server_image.clone()),
        command: (!spec.command.is_empty()).then(|| spec.command.clone()),
        args: spec.args.clone(),
        env: spec.env.clone(),
        port: spec.port,
        health_path: spec.health_path.clone(),
        replicas: spec.replicas.max(0),
        deployment_replicas,
        autoscaler,
        resources: spec.resources.clone(),
        rolling_update,
        disruption_budget,
        scheduling: spec.scheduling.clone().unwrap_or_default(),
        service_account_name: spec.service_account_name.clone(),
        exposure,
        gateway_api: apis.gateway,
        sidecar: Sidecar {
            image: spec
                .sidecar
                .image
                .clone()
                .unwrap_or_else(|| defaults.sidecar_image.clone()),
            sample_rate: spec.sidecar.capture.sample_rate,
            max_payload_bytes: spec.sidecar.capture.max_payload_bytes,
            request_timeout_seconds: spec.sidecar.request_timeout_seconds,
            resources: spec.sidecar.resources.clone(),
        },
        monitoring_api,
        service_monitor: spec
            .monitoring
            .service_monitor
            .enabled
            .then(|| spec.monitoring.service_monitor.clone()),
        monitoring_labels: spec.monitoring.service_monitor.labels.clone(),
        alerts,
        url,
        owner,
        canary_rollout,
        canary: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::md;
    use serde_json::json;

    fn defaults() -> Defaults {
        Defaults::for_version("9.9.9")
    }

    #[test]
    fn rules_the_schema_also_enforces_hold_without_it() {
        let resolved = ResolvedModel {
            reference: "models:/m/1".into(),
            name: "m".into(),
            version: "1".into(),
            run_id: None,
            source: None,
        };
        let spec =
            json!({"trackingUri": "http://x:5000", "model": {"name": "m", "version": "1"}, "port": 8000});
        let err =
            validate_model_deployment(&md(spec), &resolved, TrackingAccess::default(), true, &defaults())
                .unwrap_err();
        assert!(err.to_string().contains("spec.port"), "{err}");
    }

    #[test]
    fn the_model_uri_is_pinned_to_the_resolved_version() {
        let resolved = ResolvedModel {
            reference: "models:/churn@champion".into(),
            name: "churn".into(),
            version: "7".into(),
            run_id: None,
            source: None,
        };
        let spec = json!({"trackingUri": "http://x:5000", "model": {"name": "churn", "alias": "champion"},
                          "monitoring": {"alerts": {"enabled": false}}});
        let v = validate_model_deployment(&md(spec), &resolved, TrackingAccess::default(), true, &defaults())
            .unwrap();
        assert_eq!(v.model_uri, "models:/churn/7");
        assert!(
            v.alerts.is_none(),
            "alerts off and no quality thresholds: no rules"
        );
        assert_eq!(v.url, "http://churn.ml.svc:8000");
    }
}
