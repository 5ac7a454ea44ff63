//! `TrackingServer`: an mlkube-server (MLflow-compatible tracking server and model registry), and
//! optionally the node sampler DaemonSet that exports host and GPU metrics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SecretKeyRef, ServiceMonitorSettings, default_one, default_true};

/// Desired state of an mlkube tracking server: an MLflow-compatible REST API, model registry and
/// artifact proxy on port 5000.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[kube(
    group = "mlkube.io",
    version = "v1alpha1",
    kind = "TrackingServer",
    plural = "trackingservers",
    shortname = "ts",
    category = "mlkube",
    namespaced,
    status = "TrackingServerStatus",
    derive = "PartialEq",
    validation = Rule::new("self.metadata.name.size() <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name must be a DNS label of at most 50 characters (it names the Service and other children)"),
    doc = "An MLflow-compatible tracking server and model registry (mlkube-server), with optional node and GPU metrics.",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"}"#,
    printcolumn = r#"{"name": "URL", "type": "string", "jsonPath": ".status.url"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.backendStore.sqlite) || self.replicas <= 1").message("a sqlite backendStore supports exactly one replica; use postgres to run more").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.artifactStore.pvc) || self.replicas <= 1 || self.artifactStore.pvc.accessModes.exists(m, m == 'ReadWriteMany')").message("more than one replica sharing an artifact PVC needs accessModes to include ReadWriteMany"))]
pub struct TrackingServerSpec {
    /// Container image of mlkube-server. Default: the image matching the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Number of server pods. A sqlite backend store allows at most 1. Default: 1.
    #[serde(default = "default_one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// Compute resources of the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Where experiments, runs and the model registry are stored. Exactly one of `sqlite` and
    /// `postgres`. Default: sqlite on a 1Gi PersistentVolumeClaim.
    #[serde(default)]
    pub backend_store: BackendStore,

    /// Where artifacts (models, plots, files) are stored. Exactly one of `pvc` and `s3`.
    /// Default: a 10Gi PersistentVolumeClaim served through the server's artifact proxy.
    #[serde(default)]
    pub artifact_store: ArtifactStore,

    /// HTTP basic authentication (MLflow's `basic-auth` app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Prometheus metrics on `/metrics` (MLflow's `--expose-prometheus`).
    #[serde(default)]
    pub metrics: MetricsSpec,

    /// ServiceMonitor for the server (needs Prometheus Operator).
    #[serde(default)]
    pub service_monitor: ServiceMonitorSettings,

    /// The node sampler DaemonSet: host and GPU metrics from every selected node, on port 9400.
    #[serde(default)]
    pub node_sampler: NodeSamplerSpec,

    /// MLflow's web UI on `/` (the image bundles it). Default: served.
    #[serde(default)]
    pub ui: UiSpec,
}

/// The web UI of the tracking server.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UiSpec {
    /// Serve MLflow's web UI on `/`. The REST API is served either way. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Also serve everything under this path prefix (`--static-prefix`), for an Ingress that
    /// routes e.g. `/mlflow` to the server: starts with `/`, does not end with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(/[A-Za-z0-9._~-]+)+$"), length(max = 128))]
    pub static_prefix: Option<String>,
}

impl Default for UiSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            static_prefix: None,
        }
    }
}

/// Backend store: exactly one of `sqlite` and `postgres`.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.sqlite) != has(self.postgres)").message("set exactly one of backendStore.sqlite and backendStore.postgres"))]
pub struct BackendStore {
    /// An embedded SQLite database on a PersistentVolumeClaim. Allows exactly one replica and
    /// uses the Recreate deployment strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteBackend>,
    /// An external PostgreSQL database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresBackend>,
}

impl Default for BackendStore {
    fn default() -> Self {
        Self {
            sqlite: Some(SqliteBackend::default()),
            postgres: None,
        }
    }
}

/// SQLite database on a PersistentVolumeClaim.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqliteBackend {
    /// The volume that holds the database file.
    #[serde(default)]
    pub storage: VolumeSpec,
}

/// PostgreSQL connection.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackend {
    /// Secret key holding the full connection URI, e.g.
    /// `postgresql://user:password@host:5432/mlflow`. It reaches the server only as an
    /// environment variable, never on the command line.
    pub uri_secret_ref: SecretKeyRef,
}

/// A PersistentVolumeClaim the operator creates and owns.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Requested size, e.g. `10Gi`. Default: `1Gi` for sqlite, `10Gi` for artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: Option<String>,
    /// StorageClass of the claim. Default: the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Access modes of the claim. Default: `[ReadWriteOnce]`.
    #[serde(default = "default_access_modes")]
    #[schemars(length(max = 4))]
    pub access_modes: Vec<AccessMode>,
}

impl Default for VolumeSpec {
    fn default() -> Self {
        Self {
            size: None,
            storage_class_name: None,
            access_modes: default_access_modes(),
        }
    }
}

/// A PersistentVolume access mode.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadWriteOncePod,
    ReadWriteMany,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadWriteOncePod => "ReadWriteOncePod",
            Self::ReadWriteMany => "ReadWriteMany",
        }
    }
}

fn default_access_modes() -> Vec<AccessMode> {
    vec![AccessMode::ReadWriteOnce]
}

/// Artifact store: exactly one of `pvc` and `s3`.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.pvc) != has(self.s3)").message("set exactly one of artifactStore.pvc and artifactStore.s3"))]
pub struct ArtifactStore {
    /// Artifacts on a PersistentVolumeClaim, served to clients by the server's artifact proxy
    /// (`mlflow-artifacts:/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<VolumeSpec>,
    /// Artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW). Clients and model servers
    /// read and write the bucket directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3ArtifactStore>,
}

impl Default for ArtifactStore {
    fn default() -> Self {
        Self {
            pvc: Some(VolumeSpec::default()),
            s3: None,
        }
    }
}

/// An S3-compatible bucket.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3ArtifactStore {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing slashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[^/].*[^/]$|^[^/]$"))]
    pub prefix: Option<String>,
    /// Endpoint URL of a non-AWS store, e.g. `http://minio.storage:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://.+"))]
    pub endpoint: Option<String>,
    /// Secret with the keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub credentials_secret_ref: CredentialsSecretRef,
}

/// A Secret holding S3 credentials.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the access key id. Default: `AWS_ACCESS_KEY_ID`.
    #[serde(default = "default_access_key_key")]
    pub access_key_id_key: String,
    /// Key of the secret access key. Default: `AWS_SECRET_ACCESS_KEY`.
    #[serde(default = "default_secret_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_key() -> String {
    "AWS_ACCESS_KEY_ID".to_owned()
}

fn default_secret_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_owned()
}

/// Basic authentication with an admin account from a Secret.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Turn basic authentication on (`--app-name basic-auth`). Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Secret with the admin account, under the keys `username` and `password`.
    pub admin_secret_ref: AdminSecretRef,
    /// Permission users get on resources they did not create. Default: `READ`.
    #[serde(default)]
    pub default_permission: Permission,
}

/// A Secret holding the admin username and password.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdminSecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the username. Default: `username`.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password. Default: `password`.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".to_owned()
}

fn default_password_key() -> String {
    "password".to_owned()
}

/// MLflow permission levels.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    #[default]
    Read,
    Edit,
    Manage,
    NoPermissions,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "READ",
            Self::Edit => "EDIT",
            Self::Manage => "MANAGE",
            Self::NoPermissions => "NO_PERMISSIONS",
        }
    }
}

/// Prometheus metrics of the tracking server.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Serve `/metrics` (request rate, latency, errors). Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Usage statistics: counts of experiments, runs, models, versions and users.
    #[serde(default)]
    pub statistics: StatisticsSpec,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            statistics: StatisticsSpec::default(),
        }
    }
}

/// Usage statistics gauges (`--enable-statistics`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatisticsSpec {
    /// Compute and export the statistics. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// How often they are recomputed, as a duration of at least `1m`. Default: `1h`.
    #[serde(default = "default_statistics_interval")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub update_interval: String,
}

impl Default for StatisticsSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            update_interval: default_statistics_interval(),
        }
    }
}

fn default_statistics_interval() -> String {
    "1h".to_owned()
}

/// The node sampler DaemonSet. It needs `hostPID` and read-only host mounts, so its namespace
/// must allow the `privileged` Pod Security level.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSamplerSpec {
    /// Run the node sampler. Default: false.
    #[serde(default)]
    pub enabled: bool,
    /// Container image of mlkube-node-sampler. Default: the image matching the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How often each node is sampled, e.g. `15s`. Default: `15s`.
    #[serde(default = "default_sampler_interval")]
    #[schemars(length(max = 32), pattern(crate::crd::DURATION_PATTERN))]
    pub interval: String,
    /// Run only on nodes with these labels, e.g. `nvidia.com/gpu.present: "true"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations, e.g. for `nvidia.com/gpu:NoSchedule` taints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// RuntimeClass that exposes the GPUs (e.g. `nvidia`) where the NVIDIA runtime is not the
    /// container runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// PriorityClass of the sampler pods, e.g. `system-node-critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Compute resources of the sampler container. Default: 50m CPU and 64Mi memory requested,
    /// 256Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Host path of the kubelet's pod-resources socket directory, used to attribute GPUs to pods.
    /// Default: `/var/lib/kubelet/pod-resources`.
    #[serde(default = "default_pod_resources_path")]
    #[schemars(pattern(r"^/.*"))]
    pub pod_resources_path: String,
}

impl Default for NodeSamplerSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            image: None,
            interval: default_sampler_interval(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            runtime_class_name: None,
            priority_class_name: None,
            resources: None,
            pod_resources_path: default_pod_resources_path(),
        }
    }
}

fn default_sampler_interval() -> String {
    "15s".to_owned()
}

fn default_pod_resources_path() -> String {
    "/var/lib/kubelet/pod-resources".to_owned()
}

/// Observed state of a TrackingServer.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrackingServerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// In-cluster URL of the tracking server, for `MLFLOW_TRACKING_URI`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Desired number of server pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Server pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// `Ready`, `Progressing`, `Degraded` and `Monitoring`, each with a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
