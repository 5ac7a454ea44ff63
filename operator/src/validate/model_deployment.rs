//! ModelDeployment: the resolved model pinned, sidecar, monitoring and alert parameters, with
//! every default resolved.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;

use super::owner::owner_of;
use super::{Defaults, Owner, TrackingAccess, ValidationError, duration_secs};
use crate::crd::model_deployment::{QualityThreshold, ResolvedModel, Severity};
use crate::crd::{ModelDeployment, ServiceMonitorSettings, parse_duration_ms};

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
    pub replicas: i32,
    pub resources: Option<ResourceRequirements>,
    pub sidecar: Sidecar,
    pub monitoring_api: bool,
    pub service_monitor: Option<ServiceMonitorSettings>,
    /// Extra labels on the ServiceMonitor and PrometheusRule (`monitoring.serviceMonitor.labels`).
    pub monitoring_labels: BTreeMap<String, String>,
    pub alerts: Option<AlertParams>,
    /// In-cluster URL of the Service, `http://<name>.<namespace>.svc:8000`.
    pub url: String,
}

pub fn validate_model_deployment(
    md: &ModelDeployment,
    resolved: &ResolvedModel,
    tracking: TrackingAccess,
    monitoring_api: bool,
    defaults: &Defaults,
) -> Result<ValidatedModelDeployment, ValidationError> {
    let owner = owner_of(md)?;
    let spec = &md.spec;
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
    let model_uri = match resolved.reference.strip_prefix("runs:/") {
        Some(_) => resolved.reference.clone(),
        None => format!("models:/{}/{}", resolved.name, resolved.version),
    };
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
        resources: spec.resources.clone(),
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
