//! The validate stage: pure functions from a custom resource (plus what `fetch` found) to a
//! `Validated*` value with every default resolved. Builders take only these values.
//!
//! Most rules already live in the CRD schema (patterns, ranges, CEL), so the API server refuses a
//! bad spec at `kubectl apply`; the checks here catch what the schema cannot see and keep the
//! operator safe when the schema was bypassed (an old CRD, a status-less fixture).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::crd::model_deployment::{QualityThreshold, ResolvedModel, Severity};
use crate::crd::tracking_server::{AdminSecretRef, CredentialsSecretRef, Permission, VolumeSpec};
use crate::crd::{ModelDeployment, SecretKeyRef, ServiceMonitorSettings, TrackingServer, parse_duration_ms};

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

/// Why a spec was refused by the validate stage.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),
    #[error("{field}: {message}")]
    Field { field: &'static str, message: String },
}

impl ValidationError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "MissingMetadata",
            Self::Field { .. } => "InvalidSpec",
        }
    }

    fn field(field: &'static str, message: impl Into<String>) -> Self {
        Self::Field {
            field,
            message: message.into(),
        }
    }
}

/// Identity of the custom resource that owns the children.
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub generation: Option<i64>,
    pub reference: OwnerReference,
}

fn owner_of<K: Resource<DynamicType = ()>>(obj: &K) -> Result<Owner, ValidationError> {
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(ValidationError::MissingMetadata("name"))?;
    let namespace = obj
        .meta()
        .namespace
        .clone()
        .ok_or(ValidationError::MissingMetadata("namespace"))?;
    let reference = obj
        .controller_owner_ref(&())
        .ok_or(ValidationError::MissingMetadata("uid"))?;
    let reference = OwnerReference {
        block_owner_deletion: Some(true),
        ..reference
    };
    if name.len() > 50 {
        return Err(ValidationError::field(
            "metadata.name",
            "must be at most 50 characters",
        ));
    }
    Ok(Owner {
        name,
        namespace,
        generation: obj.meta().generation,
        reference,
    })
}

fn duration_secs(field: &'static str, text: &str, min_secs: u64) -> Result<u64, ValidationError> {
    let ms = parse_duration_ms(text).ok_or_else(|| {
        ValidationError::field(field, format!("{text:?} is not a duration such as 30s or 5m"))
    })?;
    let secs = ms.div_ceil(1000);
    if secs < min_secs {
        return Err(ValidationError::field(
            field,
            format!("must be at least {min_secs}s"),
        ));
    }
    Ok(secs)
}

// === TrackingServer ===

/// A PersistentVolumeClaim to create.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub size: String,
    pub storage_class_name: Option<String>,
    pub access_modes: Vec<String>,
}

impl Volume {
    fn from_spec(spec: &VolumeSpec, default_size: &str) -> Self {
        let mut access_modes: Vec<String> = spec.access_modes.iter().map(|m| m.as_str().to_owned()).collect();
        if access_modes.is_empty() {
            access_modes.push("ReadWriteOnce".to_owned());
        }
        access_modes.sort();
        access_modes.dedup();
        Self {
            size: spec.size.clone().unwrap_or_else(|| default_size.to_owned()),
            storage_class_name: spec.storage_class_name.clone(),
            access_modes,
        }
    }

    pub fn read_write_many(&self) -> bool {
        self.access_modes.iter().any(|m| m == "ReadWriteMany")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    Sqlite(Volume),
    Postgres { uri: SecretKeyRef },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Artifacts {
    Pvc(Volume),
    S3 {
        bucket: String,
        prefix: Option<String>,
        endpoint: Option<String>,
        credentials: CredentialsSecretRef,
    },
}

impl Artifacts {
    /// `--default-artifact-root` of the server.
    pub fn default_artifact_root(&self) -> String {
        match self {
            Self::Pvc(_) => "mlflow-artifacts:/".to_owned(),
            Self::S3 { bucket, prefix, .. } => match prefix {
                Some(prefix) => format!("s3://{bucket}/{prefix}"),
                None => format!("s3://{bucket}"),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Auth {
    pub admin: AdminSecretRef,
    pub default_permission: Permission,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeSampler {
    pub image: String,
    pub interval_secs: u64,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub runtime_class_name: Option<String>,
    pub priority_class_name: Option<String>,
    pub resources: Option<ResourceRequirements>,
    pub pod_resources_path: String,
    /// Settings of the sampler's ServiceMonitor (`honorLabels: true`), when one is wanted.
    pub service_monitor: Option<ServiceMonitorSettings>,
}

/// A TrackingServer with every default resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedTrackingServer {
    pub owner: Owner,
    pub image: String,
    pub replicas: i32,
    pub resources: Option<ResourceRequirements>,
    pub backend: Backend,
    pub artifacts: Artifacts,
    pub auth: Option<Auth>,
    pub metrics_enabled: bool,
    /// `Some(seconds)` when statistics are on.
    pub statistics_interval_secs: Option<u64>,
    /// Whether the cluster serves `monitoring.coreos.com/v1`.
    pub monitoring_api: bool,
    /// Settings of the server's ServiceMonitor, when one is wanted (whatever the API says).
    pub service_monitor: Option<ServiceMonitorSettings>,
    pub node_sampler: Option<NodeSampler>,
    /// Serve the web UI (`spec.ui.enabled`).
    pub ui_enabled: bool,
    /// `spec.ui.staticPrefix`, checked.
    pub static_prefix: Option<String>,
    /// In-cluster URL, `http://<name>.<namespace>.svc:5000`.
    pub url: String,
}

impl ValidatedTrackingServer {
    /// Whether the server must be replaced rather than rolled (a pod holds an RWO volume).
    pub fn recreate(&self) -> bool {
        matches!(self.backend, Backend::Sqlite(_))
            || matches!(&self.artifacts, Artifacts::Pvc(v) if !v.read_write_many())
    }
}

/// The server's own rule for `--static-prefix` (it refuses to start otherwise).
fn static_prefix_ok(prefix: &str) -> bool {
    prefix.len() > 1
        && prefix.len() <= 128
        && prefix.starts_with('/')
        && prefix[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
        })
}

/// In-cluster URL of a tracking server.
pub fn tracking_server_url(name: &str, namespace: &str) -> String {
    format!("http://{name}.{namespace}.svc:{}", crate::build::ports::SERVER)
}

pub fn validate_tracking_server(
    ts: &TrackingServer,
    monitoring_api: bool,
    defaults: &Defaults,
) -> Result<ValidatedTrackingServer, ValidationError> {
    let owner = owner_of(ts)?;
    let spec = &ts.spec;
    let backend = match (&spec.backend_store.sqlite, &spec.backend_store.postgres) {
        (Some(sqlite), None) => Backend::Sqlite(Volume::from_spec(&sqlite.storage, "1Gi")),
        (None, Some(pg)) => Backend::Postgres {
            uri: pg.uri_secret_ref.clone(),
        },
        _ => {
            return Err(ValidationError::field(
                "spec.backendStore",
                "set exactly one of sqlite and postgres",
            ));
        }
    };
    let artifacts = match (&spec.artifact_store.pvc, &spec.artifact_store.s3) {
        (Some(pvc), None) => Artifacts::Pvc(Volume::from_spec(pvc, "10Gi")),
        (None, Some(s3)) => Artifacts::S3 {
            bucket: s3.bucket.clone(),
            prefix: s3.prefix.clone(),
            endpoint: s3.endpoint.clone(),
            credentials: s3.credentials_secret_ref.clone(),
        },
        _ => {
            return Err(ValidationError::field(
                "spec.artifactStore",
                "set exactly one of pvc and s3",
            ));
        }
    };
    if spec.replicas < 0 {
        return Err(ValidationError::field("spec.replicas", "must not be negative"));
    }
    if matches!(backend, Backend::Sqlite(_)) && spec.replicas > 1 {
        return Err(ValidationError::field(
            "spec.replicas",
            "a sqlite backendStore supports exactly one replica; use postgres to run more",
        ));
    }
    if let Artifacts::Pvc(v) = &artifacts
        && spec.replicas > 1
        && !v.read_write_many()
    {
        return Err(ValidationError::field(
            "spec.artifactStore.pvc.accessModes",
            "more than one replica sharing an artifact PVC needs ReadWriteMany",
        ));
    }
    if let Some(prefix) = &spec.ui.static_prefix
        && !static_prefix_ok(prefix)
    {
        return Err(ValidationError::field(
            "spec.ui.staticPrefix",
            "must start with '/', not end with '/', and consist of path segments of letters, digits and -_.~ (no '.' or '..' segments)",
        ));
    }
    let statistics_interval_secs = if spec.metrics.enabled && spec.metrics.statistics.enabled {
        Some(duration_secs(
            "spec.metrics.statistics.updateInterval",
            &spec.metrics.statistics.update_interval,
            60,
        )?)
    } else {
        None
    };
    let service_monitor =
        (spec.metrics.enabled && spec.service_monitor.enabled).then(|| spec.service_monitor.clone());
    let node_sampler = if spec.node_sampler.enabled {
        let ns = &spec.node_sampler;
        Some(NodeSampler {
            image: ns
                .image
                .clone()
                .unwrap_or_else(|| defaults.node_sampler_image.clone()),
            interval_secs: duration_secs("spec.nodeSampler.interval", &ns.interval, 1)?,
            node_selector: ns.node_selector.clone(),
            tolerations: ns.tolerations.clone(),
            runtime_class_name: ns.runtime_class_name.clone(),
            priority_class_name: ns.priority_class_name.clone(),
            resources: ns.resources.clone(),
            pod_resources_path: ns.pod_resources_path.clone(),
            service_monitor: spec.service_monitor.enabled.then(|| spec.service_monitor.clone()),
        })
    } else {
        None
    };
    let auth = spec.auth.as_ref().filter(|a| a.enabled).map(|a| Auth {
        admin: a.admin_secret_ref.clone(),
        default_permission: a.default_permission,
    });
    let url = tracking_server_url(&owner.name, &owner.namespace);
    Ok(ValidatedTrackingServer {
        image: spec
            .image
            .clone()
            .unwrap_or_else(|| defaults.server_image.clone()),
        replicas: spec.replicas,
        resources: spec.resources.clone(),
        backend,
        artifacts,
        auth,
        metrics_enabled: spec.metrics.enabled,
        statistics_interval_secs,
        monitoring_api,
        service_monitor,
        node_sampler,
        ui_enabled: spec.ui.enabled,
        static_prefix: spec.ui.static_prefix.clone(),
        url,
        owner,
    })
}

// === ModelDeployment ===

/// What the model pods need to talk to the tracking server and its artifact store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackingAccess {
    pub uri: String,
    /// Basic-auth account, as a Secret (`MLFLOW_TRACKING_USERNAME` / `_PASSWORD`).
    pub auth: Option<AdminSecretRef>,
    /// S3 endpoint and credentials when the artifacts live in a bucket.
    pub s3: Option<(Option<String>, CredentialsSecretRef)>,
}

impl TrackingAccess {
    /// Access to a TrackingServer in the cluster.
    pub fn for_tracking_server(ts: &TrackingServer) -> Self {
        let spec = &ts.spec;
        Self {
            uri: tracking_server_url(&ts.name_any(), ts.namespace().as_deref().unwrap_or_default()),
            auth: spec
                .auth
                .as_ref()
                .filter(|a| a.enabled)
                .map(|a| a.admin_secret_ref.clone()),
            s3: spec
                .artifact_store
                .s3
                .as_ref()
                .map(|s3| (s3.endpoint.clone(), s3.credentials_secret_ref.clone())),
        }
    }
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
    if spec.port == crate::build::ports::SIDECAR_HTTP || spec.port == crate::build::ports::SIDECAR_METRICS {
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
        crate::build::ports::SIDECAR_HTTP
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
    use crate::build::tests::{md, ts};
    use serde_json::json;

    fn defaults() -> Defaults {
        Defaults::for_version("9.9.9")
    }

    #[test]
    fn defaults_are_resolved() {
        let v = validate_tracking_server(&ts(json!({})), true, &defaults()).unwrap();
        assert_eq!(v.image, "ghcr.io/mlkube/mlkube-server:v9.9.9");
        assert_eq!(v.replicas, 1);
        assert!(
            matches!(&v.backend, Backend::Sqlite(vol) if vol.size == "1Gi" && vol.access_modes == ["ReadWriteOnce"])
        );
        assert!(matches!(&v.artifacts, Artifacts::Pvc(vol) if vol.size == "10Gi"));
        assert!(v.metrics_enabled && v.statistics_interval_secs.is_none());
        assert_eq!(v.service_monitor.as_ref().unwrap().interval, "30s");
        assert!(v.node_sampler.is_none());
        assert_eq!(v.owner.reference.kind, "TrackingServer");
        assert_eq!(v.url, "http://mlflow.ml.svc:5000");
    }

    #[test]
    fn rules_the_schema_also_enforces_hold_without_it() {
        let err = validate_tracking_server(&ts(json!({"replicas": 2})), true, &defaults()).unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        let err = validate_tracking_server(
            &ts(json!({"metrics": {"statistics": {"enabled": true, "updateInterval": "10s"}}})),
            true,
            &defaults(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least 60s"), "{err}");
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
