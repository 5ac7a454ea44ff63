//! Deployments: the tracking server, its optional dedicated artifact server, and the model server
//! with its metrics sidecar.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, labels, model_labels, ports, pvc, security, server_labels};
use crate::validate::{
    Artifacts, AzureCredentials, Backend, ValidatedModelDeployment, ValidatedTrackingServer,
    artifact_server_name,
};

/// Name of the tracking server container.
pub const SERVER_CONTAINER: &str = "mlkube-server";
/// Name of the model server container.
pub const MODEL_CONTAINER: &str = "model-server";
/// Name of the sidecar container.
pub const SIDECAR_CONTAINER: &str = "mlkube-sidecar";

const TMP_VOLUME: &str = "tmp";
const TMP_PATH: &str = "/tmp";
const BACKEND_VOLUME: &str = "backend";
pub(crate) const BACKEND_PATH: &str = "/data";
const AUTH_VOLUME: &str = "auth-config";
const AUTH_PATH: &str = "/etc/mlkube";
const ARTIFACTS_VOLUME: &str = "artifacts";
const ARTIFACTS_PATH: &str = "/artifacts";
const GCS_CREDENTIALS_VOLUME: &str = "gcs-credentials";
const GCS_CREDENTIALS_DIR: &str = "/etc/mlkube/gcs";
/// Where the server finds a GCS JSON key file (`GOOGLE_APPLICATION_CREDENTIALS`).
pub const GCS_CREDENTIALS_FILE: &str = "/etc/mlkube/gcs/key.json";
/// Pod label that makes Azure Workload Identity's webhook inject the federated token.
pub const AZURE_WORKLOAD_IDENTITY_LABEL: &str = "azure.workload.identity/use";
const TRACKING_CA_VOLUME: &str = "tracking-ca";
const TRACKING_CA_DIR: &str = "/etc/mlkube/tracking-ca";
/// Where both model pod containers find `trackingCaBundle`.
pub const TRACKING_CA_FILE: &str = "/etc/mlkube/tracking-ca/ca.crt";

/// Pod annotation carrying a fingerprint of the auth configuration.
pub const AUTH_CONFIG_ANNOTATION: &str = "mlkube.io/auth-config";

/// Labels of the model pods: with `rollout.strategy: Canary`, the stable pods carry
/// `mlkube.io/track: stable` so that a weighted route can tell them from the canary's.
fn pod_labels(md: &ValidatedModelDeployment) -> BTreeMap<String, String> {
    let mut labels = model_labels(md);
    if md.canary_rollout.is_some() {
        labels.insert(labels::TRACK.to_owned(), labels::TRACK_STABLE.to_owned());
    }
    labels
}

pub(crate) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub(crate) fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

fn http_probe(path: &str, port: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn pvc_volume(name: &str, claim: String) -> Volume {
    Volume {
        name: name.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim,
            read_only: None,
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..Default::default()
    }
}

pub(crate) fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
    let map = |items: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect()
    };
    ResourceRequirements {
        requests: Some(map(requests)),
        limits: Some(map(limits)),
        claims: None,
    }
}

fn scrape_annotations(port: i32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::PROMETHEUS_PATH.to_owned(), ports::METRICS_PATH.to_owned()),
        (labels::PROMETHEUS_PORT.to_owned(), port.to_string()),
        (labels::PROMETHEUS_SCRAPE.to_owned(), "true".to_owned()),
    ])
}

/// The mlkube-server command line for a tracking server (docs/architecture.md, "Command lines"). Secrets never
/// appear here: the PostgreSQL URI arrives as `MLKUBE_BACKEND_STORE_URI`.
pub fn tracking_server_args(ts: &ValidatedTrackingServer) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--host".into(),
        "0.0.0.0".into(),
        "--port".into(),
        ports::SERVER.to_string(),
    ];
    if let Backend::Sqlite(_) = ts.backend {
        args.push("--backend-store-uri".into());
        args.push(format!("sqlite:///{BACKEND_PATH}/mlflow.db"));
    }
    args.push("--default-artifact-root".into());
    match &ts.artifact_server {
        // Clients send artifact requests to the artifact server; this one never touches the store.
        Some(server) => {
            args.push(format!("mlflow-artifacts://{}/", server.advertised));
            args.push("--no-serve-artifacts".into());
        }
        None => {
            args.push(ts.artifacts.default_artifact_root());
            if let Some(destination) = artifacts_destination(&ts.artifacts) {
                args.push("--artifacts-destination".into());
                args.push(destination);
            }
        }
    }
    if ts.metrics_enabled {
        args.push("--expose-prometheus".into());
        args.push(format!("{TMP_PATH}/prometheus"));
        if let Some(secs) = ts.statistics_interval_secs {
            args.push("--enable-statistics".into());
            args.push("--statistics-update-interval".into());
            args.push(secs.to_string());
        }
    }
    if ts.auth.is_some() {
        args.push("--app-name".into());
        args.push("basic-auth".into());
    }
    // The image bundles MLflow's UI build (MLKUBE_UI_DIR); only turning it off needs a flag.
    if !ts.ui_enabled {
        args.push("--no-ui".into());
    }
    if let Some(prefix) = &ts.static_prefix {
        args.push("--static-prefix".into());
        args.push(prefix.clone());
    }
    args
}

/// The artifact proxy's destination: the PVC's mount, or the object store (its credentials come
/// from the environment, see `artifact_store_env`). A `Direct` bucket has no proxy to feed.
fn artifacts_destination(artifacts: &Artifacts) -> Option<String> {
    match artifacts {
        Artifacts::Pvc(_) => Some(ARTIFACTS_PATH.to_owned()),
        other if other.proxied() => other.object_store_uri(),
        _ => None,
    }
}

/// The mlkube-server command line of the dedicated artifact server
/// (`artifactStore.dedicatedServer`): the artifact proxy alone, no backend store.
pub fn artifact_server_args(ts: &ValidatedTrackingServer) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--artifacts-only".into(),
        "--host".into(),
        "0.0.0.0".into(),
        "--port".into(),
        ports::SERVER.to_string(),
    ];
    if let Some(destination) = artifacts_destination(&ts.artifacts) {
        args.push("--artifacts-destination".into());
        args.push(destination);
    }
    if ts.metrics_enabled {
        args.push("--expose-prometheus".into());
        args.push(format!("{TMP_PATH}/prometheus"));
    }
    // Clients put their tracking URI's path in front of artifact paths on any host.
    if let Some(prefix) = &ts.static_prefix {
        args.push("--static-prefix".into());
        args.push(prefix.clone());
    }
    args
}

/// The S3 variables every AWS SDK (and mlkube-server) reads: the access key from its Secret,
/// MLflow's custom endpoint, the region.
fn s3_env(
    endpoint: Option<&String>,
    region: Option<&String>,
    credentials: Option<&crate::crd::tracking_server::CredentialsSecretRef>,
) -> Vec<EnvVar> {
    let mut env_vars = Vec::new();
    if let Some(credentials) = credentials {
        env_vars.push(env_from_secret(
            "AWS_ACCESS_KEY_ID",
            &credentials.name,
            &credentials.access_key_id_key,
        ));
        env_vars.push(env_from_secret(
            "AWS_SECRET_ACCESS_KEY",
            &credentials.name,
            &credentials.secret_access_key_key,
        ));
    }
    if let Some(region) = region {
        // botocore reads AWS_DEFAULT_REGION, most other SDKs AWS_REGION.
        env_vars.push(env("AWS_DEFAULT_REGION", region.clone()));
        env_vars.push(env("AWS_REGION", region.clone()));
    }
    if let Some(endpoint) = endpoint {
        env_vars.push(env("MLFLOW_S3_ENDPOINT_URL", endpoint.clone()));
    }
    env_vars
}

/// What the server needs to reach its object store. Keys only ever arrive through
/// `secretKeyRef` (or, for GCS, a mounted file); with workload identity there is nothing here:
/// the identity's webhook or metadata server provides it.
fn artifact_store_env(artifacts: &Artifacts) -> Vec<EnvVar> {
    match artifacts {
        Artifacts::Pvc(_) => Vec::new(),
        Artifacts::S3 {
            endpoint,
            region,
            credentials,
            ..
        } => s3_env(endpoint.as_ref(), region.as_ref(), credentials.as_ref()),
        Artifacts::Gcs { credentials, .. } => credentials
            .iter()
            .map(|_| env("GOOGLE_APPLICATION_CREDENTIALS", GCS_CREDENTIALS_FILE))
            .collect(),
        Artifacts::Azure { credentials, .. } => credentials
            .iter()
            .map(|c| match c {
                AzureCredentials::AccountKey(r) => {
                    env_from_secret("AZURE_STORAGE_ACCOUNT_KEY", &r.name, &r.key)
                }
                AzureCredentials::SasToken(r) => env_from_secret("AZURE_STORAGE_SAS_TOKEN", &r.name, &r.key),
            })
            .collect(),
    }
}

fn tracking_server_env(ts: &ValidatedTrackingServer) -> Vec<EnvVar> {
    let mut env_vars = Vec::new();
    if let Backend::Postgres { uri } = &ts.backend {
        env_vars.push(env_from_secret("MLKUBE_BACKEND_STORE_URI", &uri.name, &uri.key));
    }
    // With a dedicated artifact server, only its pods reach the store.
    if ts.artifact_server.is_none() {
        env_vars.extend(artifact_store_env(&ts.artifacts));
    }
    if let Some(auth) = &ts.auth {
        env_vars.push(env_from_secret(
            "MLKUBE_ADMIN_USERNAME",
            &auth.admin.name,
            &auth.admin.username_key,
        ));
        env_vars.push(env_from_secret(
            "MLKUBE_ADMIN_PASSWORD",
            &auth.admin.name,
            &auth.admin.password_key,
        ));
        env_vars.push(env(
            "MLKUBE_AUTH_DEFAULT_PERMISSION",
            auth.default_permission.as_str(),
        ));
    }
    env_vars
}

/// Azure Workload Identity's opt-in label, for pods that reach an Azure container as a
/// ServiceAccount (its webhook mutates only pods labelled so).
fn with_workload_identity(
    ts: &ValidatedTrackingServer,
    mut labels: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    if ts.service_account_name.is_some() && matches!(ts.artifacts, Artifacts::Azure { .. }) {
        labels.insert(AZURE_WORKLOAD_IDENTITY_LABEL.to_owned(), "true".to_owned());
    }
    labels
}

/// Labels of the server pods: the Deployment's, plus the workload identity label when they
/// reach the store (not when a dedicated artifact server does).
fn server_pod_labels(ts: &ValidatedTrackingServer) -> BTreeMap<String, String> {
    if ts.artifact_server.is_some() {
        server_labels(ts)
    } else {
        with_workload_identity(ts, server_labels(ts))
    }
}

/// The read-only GCS key file volume and its mount, when the store is GCS with a key.
fn gcs_key_volume(artifacts: &Artifacts) -> Option<(Volume, VolumeMount)> {
    let Artifacts::Gcs {
        credentials: Some(key),
        ..
    } = artifacts
    else {
        return None;
    };
    // Only the key file, readable by the pod's group (fsGroup) and nobody else.
    let volume = Volume {
        name: GCS_CREDENTIALS_VOLUME.to_owned(),
        secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
            secret_name: Some(key.name.clone()),
            items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                key: key.key.clone(),
                path: "key.json".to_owned(),
                ..Default::default()
            }]),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        read_only: Some(true),
        ..mount(GCS_CREDENTIALS_VOLUME, GCS_CREDENTIALS_DIR)
    };
    Some((volume, mount))
}

/// Default resources of a server container (tracking or artifacts).
fn server_resources(resources: Option<&ResourceRequirements>) -> ResourceRequirements {
    resources
        .cloned()
        .unwrap_or_else(|| self::resources(&[("cpu", "100m"), ("memory", "256Mi")], &[("memory", "1Gi")]))
}

/// The server's HTTP port.
fn server_port() -> ContainerPort {
    ContainerPort {
        name: Some(ports::HTTP.to_owned()),
        container_port: ports::SERVER,
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

/// Prometheus' scrape annotations on server pods, unless a ServiceMonitor scrapes them.
fn server_scrape_annotations(ts: &ValidatedTrackingServer) -> BTreeMap<String, String> {
    if ts.metrics_enabled && !(ts.monitoring_api && ts.service_monitor.is_some()) {
        scrape_annotations(ports::SERVER)
    } else {
        BTreeMap::new()
    }
}

/// The dedicated artifact server's Deployment `<name>-artifacts` (`artifactStore.dedicatedServer`):
/// the same image as the tracking server with `--artifacts-only`, the store's credentials, and
/// the tracking server pods' security context, probes, ServiceAccount and placement. Its pods
/// are labelled `app.kubernetes.io/component: artifacts`, so the tracking Service never
/// selects them.
pub fn build_artifact_server_deployment(ts: &ValidatedTrackingServer) -> Option<Deployment> {
    let server = ts.artifact_server.as_ref()?;
    let selector = labels::selector(labels::APP_SERVER, &ts.owner.name, labels::COMPONENT_ARTIFACTS);
    let mut volumes = vec![empty_dir(TMP_VOLUME)];
    let mut mounts = vec![mount(TMP_VOLUME, TMP_PATH)];
    if let Some((volume, volume_mount)) = gcs_key_volume(&ts.artifacts) {
        volumes.push(volume);
        mounts.push(volume_mount);
    }
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    mounts.sort_by(|a, b| a.name.cmp(&b.name));
    let container = Container {
        name: SERVER_CONTAINER.to_owned(),
        image: Some(ts.image.clone()),
        args: Some(artifact_server_args(ts)),
        env: Some(artifact_store_env(&ts.artifacts)).filter(|e| !e.is_empty()),
        ports: Some(vec![server_port()]),
        readiness_probe: Some(http_probe(ports::SERVER_HEALTH_PATH, ports::HTTP, 10, 3)),
        liveness_probe: Some(http_probe(ports::SERVER_LIVENESS_PATH, ports::HTTP, 20, 6)),
        resources: Some(server_resources(server.resources.as_ref())),
        security_context: Some(security::restricted_container()),
        volume_mounts: Some(mounts),
        working_dir: Some(TMP_PATH.to_owned()),
        ..Default::default()
    };
    let mut pod = PodSpec {
        automount_service_account_token: Some(false),
        containers: vec![container],
        security_context: Some(security::restricted_pod()),
        service_account_name: ts.service_account_name.clone(),
        volumes: Some(volumes),
        ..Default::default()
    };
    super::workload::place(&mut pod, &ts.scheduling, &selector);
    let labels = super::artifact_server_labels(ts);
    Some(Deployment {
        metadata: child_meta(&ts.owner, artifact_server_name(&ts.owner.name), labels.clone()),
        spec: DeploymentSpec {
            replicas: Some(server.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            // An object store: every pod sees every artifact, so pods always roll.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: ts.rolling_update.clone(),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(with_workload_identity(ts, labels)),
                    annotations: Some(server_scrape_annotations(ts)).filter(|a| !a.is_empty()),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        status: None,
    })
}

/// The tracking server's Deployment. A SQLite store or a ReadWriteOnce artifact volume forces
/// the Recreate strategy, so two pods never hold the volume at once.
pub fn build_tracking_server_deployment(ts: &ValidatedTrackingServer) -> Deployment {
    let selector = labels::selector(
        labels::APP_SERVER,
        &ts.owner.name,
        labels::COMPONENT_TRACKING_SERVER,
    );
    let mut volumes = vec![empty_dir(TMP_VOLUME)];
    let mut mounts = vec![mount(TMP_VOLUME, TMP_PATH)];
    if let Backend::Sqlite(_) = ts.backend {
        volumes.push(pvc_volume(
            BACKEND_VOLUME,
            pvc::backend_claim_name(&ts.owner.name),
        ));
        mounts.push(mount(BACKEND_VOLUME, BACKEND_PATH));
    }
    if let Artifacts::Pvc(_) = ts.artifacts {
        volumes.push(pvc_volume(
            ARTIFACTS_VOLUME,
            pvc::artifacts_claim_name(&ts.owner.name),
        ));
        mounts.push(mount(ARTIFACTS_VOLUME, ARTIFACTS_PATH));
    }
    if ts.artifact_server.is_none()
        && let Some((volume, volume_mount)) = gcs_key_volume(&ts.artifacts)
    {
        volumes.push(volume);
        mounts.push(volume_mount);
    }
    if ts.auth.is_some() {
        volumes.push(Volume {
            name: AUTH_VOLUME.to_owned(),
            config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                name: super::config_map::auth_config_map_name(&ts.owner.name),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount(AUTH_VOLUME, AUTH_PATH)
        });
    }
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    mounts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut annotations = server_scrape_annotations(ts);
    if let Some(ini) = super::config_map::auth_ini(ts) {
        // A changed auth configuration restarts the server (the file is read at startup).
        annotations.insert(
            AUTH_CONFIG_ANNOTATION.to_owned(),
            crate::fingerprint::fingerprint(&ini),
        );
    }
    let annotations = Some(annotations).filter(|a| !a.is_empty());
    let container = Container {
        name: SERVER_CONTAINER.to_owned(),
        image: Some(ts.image.clone()),
        args: Some(tracking_server_args(ts)),
        env: Some(tracking_server_env(ts)).filter(|e| !e.is_empty()),
        ports: Some(vec![server_port()]),
        readiness_probe: Some(http_probe(ports::SERVER_HEALTH_PATH, ports::HTTP, 10, 3)),
        liveness_probe: Some(http_probe(ports::SERVER_LIVENESS_PATH, ports::HTTP, 20, 6)),
        resources: Some(server_resources(ts.resources.as_ref())),
        security_context: Some(security::restricted_container()),
        volume_mounts: Some(mounts),
        // The working directory holds the server's relative files; on SQLite that is the volume.
        working_dir: Some(
            match ts.backend {
                Backend::Sqlite(_) => BACKEND_PATH,
                Backend::Postgres { .. } => TMP_PATH,
            }
            .to_owned(),
        ),
        ..Default::default()
    };
    let strategy = if ts.recreate() {
        DeploymentStrategy {
            type_: Some("Recreate".to_owned()),
            rolling_update: None,
        }
    } else {
        DeploymentStrategy {
            type_: Some("RollingUpdate".to_owned()),
            rolling_update: ts.rolling_update.clone(),
        }
    };
    let mut pod = PodSpec {
        // Still no Kubernetes API token with a serviceAccountName: EKS IRSA and Azure
        // Workload Identity project their own audience-bound token into the pod, and
        // GKE Workload Identity answers on the node's metadata server.
        automount_service_account_token: Some(false),
        containers: vec![container],
        security_context: Some(security::restricted_pod()),
        service_account_name: ts.service_account_name.clone(),
        volumes: Some(volumes),
        ..Default::default()
    };
    super::workload::place(&mut pod, &ts.scheduling, &selector);
    Deployment {
        metadata: child_meta(&ts.owner, ts.owner.name.clone(), server_labels(ts)),
        spec: DeploymentSpec {
            replicas: Some(ts.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            strategy: Some(strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(server_pod_labels(ts)),
                    annotations,
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// The mlkube-sidecar command line (docs/architecture.md, "Command lines").
pub fn sidecar_args(md: &ValidatedModelDeployment) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--listen".into(),
        format!("0.0.0.0:{}", ports::SIDECAR_HTTP),
        "--metrics-listen".into(),
        format!("0.0.0.0:{}", ports::SIDECAR_METRICS),
        "--upstream".into(),
        format!("http://127.0.0.1:{}", md.port),
        "--model-name".into(),
        md.model.name.clone(),
        "--model-version".into(),
        md.model.version.clone(),
    ];
    if let Some(run_id) = &md.model.run_id {
        args.push("--run-id".into());
        args.push(run_id.clone());
    }
    args.push("--upstream-health-path".into());
    args.push(md.health_path.clone());
    if md.sidecar.sample_rate > 0.0 {
        args.push("--tracking-uri".into());
        args.push(md.tracking.uri.clone());
        args.push("--capture-sample-rate".into());
        args.push(format!("{}", md.sidecar.sample_rate));
        args.push("--capture-max-payload-bytes".into());
        args.push(md.sidecar.max_payload_bytes.to_string());
    }
    if let Some(timeout) = md.sidecar.request_timeout_seconds {
        args.push("--request-timeout".into());
        args.push(timeout.to_string());
    }
    args
}

/// The default model server command: MLflow's pyfunc scoring server for the pinned model URI,
/// on 127.0.0.1 only (the sidecar is the pod's only way in).
pub fn default_model_command(md: &ValidatedModelDeployment) -> Vec<String> {
    [
        "mlflow",
        "models",
        "serve",
        "--model-uri",
        &md.model_uri,
        "--host",
        "127.0.0.1",
        "--port",
        &md.port.to_string(),
        "--env-manager",
        "local",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// Environment both containers use to reach the tracking server and its artifacts.
fn tracking_env(md: &ValidatedModelDeployment) -> Vec<EnvVar> {
    let mut env_vars = vec![env("MLFLOW_TRACKING_URI", md.tracking.uri.clone())];
    if let Some(auth) = &md.tracking.auth {
        env_vars.push(env_from_secret(
            "MLFLOW_TRACKING_USERNAME",
            &auth.name,
            &auth.username_key,
        ));
        env_vars.push(env_from_secret(
            "MLFLOW_TRACKING_PASSWORD",
            &auth.name,
            &auth.password_key,
        ));
    }
    env_vars
}

/// The `trackingCaBundle` volume (its one key as `ca.crt`), when there is one.
fn tracking_ca_volume(md: &ValidatedModelDeployment) -> Option<Volume> {
    let bundle = md.tracking.ca_bundle.as_ref()?;
    let items = |key: &str| {
        Some(vec![k8s_openapi::api::core::v1::KeyToPath {
            key: key.to_owned(),
            path: "ca.crt".to_owned(),
            ..Default::default()
        }])
    };
    Some(Volume {
        name: TRACKING_CA_VOLUME.to_owned(),
        config_map: bundle.config_map_key_ref.as_ref().map(|r| {
            k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                name: r.name.clone(),
                items: items(&r.key),
                ..Default::default()
            }
        }),
        secret: bundle
            .secret_key_ref
            .as_ref()
            .map(|r| k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some(r.name.clone()),
                items: items(&r.key),
                ..Default::default()
            }),
        ..Default::default()
    })
}

fn model_env(md: &ValidatedModelDeployment) -> Vec<EnvVar> {
    let mut env_vars = tracking_env(md);
    if md.tracking.ca_bundle.is_some() {
        // The MLflow client's own setting: REST calls and artifact downloads verify with it.
        env_vars.push(env("MLFLOW_TRACKING_SERVER_CERT_PATH", TRACKING_CA_FILE));
    }
    env_vars.push(env("HOME", TMP_PATH));
    env_vars.push(env("MLKUBE_MODEL_NAME", md.model.name.clone()));
    env_vars.push(env("MLKUBE_MODEL_PORT", md.port.to_string()));
    env_vars.push(env("MLKUBE_MODEL_URI", md.model_uri.clone()));
    env_vars.push(env("MLKUBE_MODEL_VERSION", md.model.version.clone()));
    // Only a `Direct` bucket: with the artifact proxy the model is downloaded through the
    // tracking server (`MLFLOW_TRACKING_URI` above) and the pod holds no store credentials.
    if let Some(s3) = &md.tracking.s3 {
        env_vars.extend(s3_env(
            s3.endpoint.as_ref(),
            s3.region.as_ref(),
            Some(&s3.credentials),
        ));
    }
    env_vars.push(env("TMPDIR", TMP_PATH));
    // The user's variables come last so they can override ours.
    env_vars.extend(md.env.iter().cloned());
    env_vars
}

/// The model Deployment: the model server (127.0.0.1 only) and the sidecar, which serves traffic
/// on 8000, metrics and probes on 8001.
/// The canary's Deployment `<name>-canary` while a canary runs: the same pod as the stable one
/// with the canary's model version, its own replicas (never an autoscaler's), and pods labelled
/// `mlkube.io/track: canary`, selected by that label too.
pub fn build_canary_deployment(md: &ValidatedModelDeployment) -> Option<Deployment> {
    let canary = md.canary.as_ref()?;
    let mut c = md.clone();
    c.model = canary.model.clone();
    c.model_uri = canary.model_uri.clone();
    c.deployment_replicas = Some(canary.replicas);
    c.autoscaler = None;
    let mut d = build_model_deployment(&c);
    let track = || (labels::TRACK.to_owned(), labels::TRACK_CANARY.to_owned());
    d.metadata.name = Some(super::canary_name(&md.owner.name));
    d.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend([track()]);
    d.spec
        .selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .extend([track()]);
    if let Some(meta) = d.spec.template.metadata.as_mut() {
        meta.labels.get_or_insert_with(BTreeMap::new).extend([track()]);
    }
    Some(d)
}

pub fn build_model_deployment(md: &ValidatedModelDeployment) -> Deployment {
    let selector = labels::selector(labels::APP_MODEL, &md.owner.name, labels::COMPONENT_MODEL_SERVER);
    let mut annotations =
        BTreeMap::from([(labels::DEFAULT_CONTAINER.to_owned(), MODEL_CONTAINER.to_owned())]);
    if !(md.monitoring_api && md.service_monitor.is_some()) {
        annotations.extend(scrape_annotations(ports::SIDECAR_METRICS));
    }
    let (command, args) = match &md.command {
        Some(command) => (command.clone(), md.args.clone()),
        None => (default_model_command(md), md.args.clone()),
    };
    let ca_volume = tracking_ca_volume(md);
    let ca_mount = ca_volume.as_ref().map(|_| VolumeMount {
        read_only: Some(true),
        ..mount(TRACKING_CA_VOLUME, TRACKING_CA_DIR)
    });
    let model = Container {
        name: MODEL_CONTAINER.to_owned(),
        image: Some(md.image.clone()),
        command: Some(command),
        args: Some(args).filter(|a| !a.is_empty()),
        env: Some(model_env(md)),
        resources: md.resources.clone(),
        security_context: Some(security::restricted_container()),
        volume_mounts: Some(
            [Some(mount(TMP_VOLUME, TMP_PATH)), ca_mount.clone()]
                .into_iter()
                .flatten()
                .collect(),
        ),
        ..Default::default()
    };
    let mut sidecar_env = tracking_env(md);
    if md.tracking.ca_bundle.is_some() {
        // Replaces the system's CA certificates for the capture client (rustls-native-certs).
        sidecar_env.push(env("SSL_CERT_FILE", TRACKING_CA_FILE));
    }
    sidecar_env.sort_by(|a, b| a.name.cmp(&b.name));
    let sidecar = Container {
        name: SIDECAR_CONTAINER.to_owned(),
        image: Some(md.sidecar.image.clone()),
        args: Some(sidecar_args(md)),
        env: Some(sidecar_env),
        ports: Some(vec![
            ContainerPort {
                name: Some(ports::HTTP.to_owned()),
                container_port: ports::SIDECAR_HTTP,
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            },
            ContainerPort {
                name: Some(ports::METRICS.to_owned()),
                container_port: ports::SIDECAR_METRICS,
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            },
        ]),
        readiness_probe: Some(http_probe(ports::SIDECAR_READYZ_PATH, ports::METRICS, 5, 3)),
        liveness_probe: Some(http_probe(ports::SIDECAR_HEALTHZ_PATH, ports::METRICS, 10, 3)),
        resources: Some(
            md.sidecar
                .resources
                .clone()
                .unwrap_or_else(|| resources(&[("cpu", "50m"), ("memory", "32Mi")], &[("memory", "128Mi")])),
        ),
        security_context: Some(security::restricted_container()),
        volume_mounts: ca_mount.map(|m| vec![m]),
        ..Default::default()
    };
    let mut volumes = vec![empty_dir(TMP_VOLUME)];
    volumes.extend(ca_volume);
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut pod = PodSpec {
        // A serviceAccountName (workload identity) still gets no Kubernetes API token.
        automount_service_account_token: Some(false),
        containers: vec![model, sidecar],
        security_context: Some(security::restricted_pod()),
        service_account_name: md.service_account_name.clone(),
        volumes: Some(volumes),
        ..Default::default()
    };
    super::workload::place(&mut pod, &md.scheduling, &selector);
    Deployment {
        metadata: child_meta(&md.owner, md.owner.name.clone(), model_labels(md)),
        spec: DeploymentSpec {
            // Left out while an autoscaler owns it: the operator never fights it.
            replicas: md.deployment_replicas,
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            strategy: md
                .rolling_update
                .clone()
                .map(|rolling_update| DeploymentStrategy {
                    type_: Some("RollingUpdate".to_owned()),
                    rolling_update: Some(rolling_update),
                }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(md)),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        status: None,
    }
}
