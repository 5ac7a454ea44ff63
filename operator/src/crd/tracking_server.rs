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
// Every replica must see every artifact: an object store does, a PVC only when ReadWriteMany.
#[x_kube(validation = Rule::new("self.replicas <= 1 || has(self.artifactStore.s3) || has(self.artifactStore.gcs) || has(self.artifactStore.azure) || (has(self.artifactStore.pvc) && self.artifactStore.pvc.accessModes.exists(m, m == 'ReadWriteMany'))").message("more than one replica needs an artifact store every replica sees: an object store (artifactStore.s3, gcs or azure) or an artifactStore.pvc whose accessModes include ReadWriteMany"))]
// The artifact server runs no basic auth: it could not see the tracking server's users and
// permissions (they live beside the tracking server), so it would serve artifacts to anyone.
#[x_kube(validation = Rule::new("!has(self.artifactStore.dedicatedServer) || !has(self.auth) || (has(self.auth.enabled) && !self.auth.enabled)").message("artifactStore.dedicatedServer does not go with auth: the artifact server cannot check the tracking server's basic-auth users and permissions; leave out dedicatedServer to serve artifacts through the authenticated tracking server"))]
#[x_kube(validation = Rule::new("!has(self.artifactStore.azure) || has(self.artifactStore.azure.credentialsSecretRef) || has(self.serviceAccountName)").message("artifactStore.azure needs credentials: set artifactStore.azure.credentialsSecretRef (account key or SAS token) or spec.serviceAccountName (Azure Workload Identity)"))]
// A sqlite backend or a ReadWriteOnce artifact PVC always uses the Recreate strategy.
#[x_kube(validation = Rule::new("!has(self.rolloutStrategy) || (!has(self.backendStore.sqlite) && (!has(self.artifactStore.pvc) || self.artifactStore.pvc.accessModes.exists(m, m == 'ReadWriteMany')))").message("rolloutStrategy needs a rolling Deployment: a sqlite backendStore or a ReadWriteOnce artifactStore.pvc always replaces the pod (Recreate)"))]
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

    /// Where artifacts (models, plots, files) are stored. Exactly one of `pvc`, `s3`, `gcs` and
    /// `azure`, optionally with a `dedicatedServer` for the artifact proxy. Default: a 10Gi
    /// PersistentVolumeClaim served through the server's artifact proxy.
    #[serde(default)]
    pub artifact_store: ArtifactStore,

    /// ServiceAccount the server pods run as, for workload identity: an IAM role through EKS
    /// IRSA (the account annotated `eks.amazonaws.com/role-arn`), a Google service account
    /// through GKE Workload Identity, or an Azure identity through Azure Workload Identity (the
    /// pods are labelled `azure.workload.identity/use: "true"`). The account must exist in the
    /// same namespace; the operator neither creates it nor grants it anything, and the pods
    /// still get no Kubernetes API token. Default: the namespace's default ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub service_account_name: Option<String>,

    /// A PodDisruptionBudget for the server pods. Default: `maxUnavailable: 1` for 2 or more
    /// replicas, none otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<crate::crd::workload::DisruptionBudgetSpec>,

    /// How a new server version replaces the pods; only with a rolling Deployment (postgres and
    /// an object store or a ReadWriteMany PVC). Default: Kubernetes' `25%`/`25%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<crate::crd::workload::RolloutStrategySpec>,

    /// Where the server pods run: node selector, tolerations, affinity, topology spread,
    /// priority and runtime class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<crate::crd::workload::SchedulingSpec>,

    /// Expose the server (REST API and UI) outside the cluster: a Gateway API HTTPRoute or an
    /// Ingress to the Service's `http` port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposure: Option<crate::crd::workload::ExposureSpec>,

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

/// Artifact store: exactly one of `pvc`, `s3`, `gcs` and `azure`, and optionally a dedicated
/// artifact server in front of it.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.pvc), has(self.s3), has(self.gcs), has(self.azure)].filter(x, x).size() == 1").message("set exactly one of artifactStore.pvc, artifactStore.s3, artifactStore.gcs and artifactStore.azure"))]
// A PVC would be split between the two Deployments (or need ReadWriteMany); Direct has no proxy.
#[x_kube(validation = Rule::new("!has(self.dedicatedServer) || has(self.gcs) || has(self.azure) || (has(self.s3) && (!has(self.s3.access) || self.s3.access == 'Proxied'))").message("artifactStore.dedicatedServer needs an object store behind the artifact proxy: artifactStore.s3 with access: Proxied, artifactStore.gcs or artifactStore.azure (a pvc cannot be shared by the tracking and artifact servers, and access: Direct has no proxy to run)"))]
pub struct ArtifactStore {
    /// Artifacts on a PersistentVolumeClaim, served to clients by the server's artifact proxy
    /// (`mlflow-artifacts:/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<VolumeSpec>,
    /// Artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3ArtifactStore>,
    /// Artifacts in a Google Cloud Storage bucket, served through the server's artifact proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsArtifactStore>,
    /// Artifacts in an Azure Storage container, served through the server's artifact proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureArtifactStore>,
    /// Run the artifact proxy as its own Deployment and Service, `<name>-artifacts` on port
    /// 5000, so artifact traffic scales apart from the tracking API. Only with an object store
    /// behind the proxy (`s3` with `access: Proxied`, `gcs` or `azure`) and without `auth`.
    /// The tracking server then serves no artifacts and no longer holds the store's
    /// credentials; new experiments record `mlflow-artifacts://<advertisedUrl>/<id>`, and MLflow
    /// clients and model servers send their artifact requests straight to the artifact server.
    /// Experiments keep the artifact location they were created with: turning this on or off
    /// (or changing `advertisedUrl`) leaves earlier experiments and the models registered from
    /// them pointing at the server that served them then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_server: Option<DedicatedArtifactServer>,
}

impl Default for ArtifactStore {
    fn default() -> Self {
        Self {
            pvc: Some(VolumeSpec::default()),
            s3: None,
            gcs: None,
            azure: None,
            dedicated_server: None,
        }
    }
}

/// The artifact proxy in its own Deployment (`mlkube-server --artifacts-only`) and Service.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.advertisedUrl) || !self.advertisedUrl.contains('://')").message("advertisedUrl is a host and optional port without a scheme, e.g. artifacts.example.com:443: clients reach it with their tracking URI's scheme"))]
pub struct DedicatedArtifactServer {
    /// Number of artifact server pods. Default: 2.
    #[serde(default = "default_artifact_server_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Compute resources of the artifact server container. Default: 100m CPU and 256Mi memory
    /// requested, 1Gi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Host and optional port at which MLflow clients reach the artifact server, without a
    /// scheme or path, e.g. `mlflow-artifacts.example.com:443`. New experiments record
    /// `mlflow-artifacts://<advertisedUrl>/<id>`; a client resolves that with its tracking URI's
    /// scheme (`http` or `https`) and path prefix. Set it to a host that clients outside the
    /// cluster can reach (an Ingress or LoadBalancer you create for the Service
    /// `<name>-artifacts`, port `http`). Default: the in-cluster Service,
    /// `<name>-artifacts.<namespace>.svc:5000`, which only clients in the cluster resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 259),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$")
    )]
    pub advertised_url: Option<String>,
}

fn default_artifact_server_replicas() -> i32 {
    2
}

/// How clients and model servers reach the artifacts of an object store.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ArtifactAccess {
    // Through the tracking server (`mlflow-artifacts:/`): only the server holds the store's
    // credentials. (Variant docs would turn the schema's enum into a oneOf.)
    #[default]
    Proxied,
    // Straight to the bucket (`s3://…`): every client and model server holds credentials.
    Direct,
}

impl ArtifactAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proxied => "Proxied",
            Self::Direct => "Direct",
        }
    }
}

/// An S3-compatible bucket.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.access != 'Direct' || has(self.credentialsSecretRef)").message("access: Direct gives clients and model servers the bucket's credentials, so it needs credentialsSecretRef; with workload identity (spec.serviceAccountName) use access: Proxied"))]
pub struct S3ArtifactStore {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing slashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[^/].*[^/]$|^[^/]$"))]
    pub prefix: Option<String>,
    /// Endpoint URL of a non-AWS store, e.g. `http://minio.storage:9000`
    /// (`MLFLOW_S3_ENDPOINT_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://.+"))]
    pub endpoint: Option<String>,
    /// Region of the bucket, e.g. `eu-west-1` (`AWS_REGION` and `AWS_DEFAULT_REGION`).
    /// Default: what the credentials or the environment say, else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[a-z0-9-]+$"))]
    pub region: Option<String>,
    /// Secret with an access key: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`. Leave it out
    /// to use workload identity (`spec.serviceAccountName`, EKS IRSA) or the node's instance
    /// role. Required with `access: Direct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<CredentialsSecretRef>,
    /// `Proxied`: clients and model servers go through the tracking server's artifact proxy
    /// and need no credentials (the server runs with `--artifacts-destination s3://…`).
    /// `Direct`: new experiments record `s3://…` and every client and model server reads and
    /// writes the bucket with its own credentials. Default: `Proxied`.
    #[serde(default)]
    pub access: ArtifactAccess,
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

/// A Google Cloud Storage bucket, always behind the tracking server's artifact proxy.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.access == 'Proxied'").message("gcs artifacts are served through the tracking server only: set access: Proxied (or leave it out); clients and model servers then need no Google credentials"))]
pub struct GcsArtifactStore {
    /// Bucket name.
    #[schemars(length(min = 3, max = 222), pattern(r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Object name prefix inside the bucket, without leading or trailing slashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), pattern(r"^[^/].*[^/]$|^[^/]$"))]
    pub prefix: Option<String>,
    /// Secret key holding a service account's JSON key file. It is mounted read-only into the
    /// server pods and named by `GOOGLE_APPLICATION_CREDENTIALS`. Leave it out to use GKE
    /// Workload Identity (`spec.serviceAccountName`) or the node's service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<GcsCredentialsSecretRef>,
    /// Only `Proxied`: the server runs with `--artifacts-destination gs://…`. Default: `Proxied`.
    #[serde(default)]
    pub access: ArtifactAccess,
}

/// A Secret holding a Google service account JSON key file.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GcsCredentialsSecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the JSON key file. Default: `key.json`.
    #[serde(default = "default_gcs_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_gcs_key() -> String {
    "key.json".to_owned()
}

/// An Azure Storage container (Blob Storage or Data Lake Storage Gen2), always behind the
/// tracking server's artifact proxy.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.access == 'Proxied'").message("azure artifacts are served through the tracking server only: set access: Proxied (or leave it out); clients and model servers then need no Azure credentials"))]
pub struct AzureArtifactStore {
    /// Storage account name.
    #[schemars(length(min = 3, max = 24), pattern(r"^[a-z0-9]+$"))]
    pub account: String,
    /// Container name.
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub container: String,
    /// Blob name prefix inside the container, without leading or trailing slashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), pattern(r"^[^/].*[^/]$|^[^/]$"))]
    pub prefix: Option<String>,
    /// `true`: the Data Lake Storage endpoint,
    /// `abfss://<container>@<account>.dfs.core.windows.net` (accounts with a hierarchical
    /// namespace). `false`: the Blob endpoint, `wasbs://<container>@<account>.blob.core.windows.net`
    /// (any account). Default: false.
    #[serde(default)]
    pub dfs: bool,
    /// Secret with the storage account key or a SAS token. Leave it out to use Azure Workload
    /// Identity (`spec.serviceAccountName`); one of the two is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<AzureCredentialsSecretRef>,
    /// Only `Proxied`: the server runs with `--artifacts-destination abfss://…` or `wasbs://…`.
    /// Default: `Proxied`.
    #[serde(default)]
    pub access: ArtifactAccess,
}

/// A Secret holding an Azure Storage account key or SAS token.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.accountKeyKey) && has(self.sasTokenKey))").message("set at most one of accountKeyKey and sasTokenKey (neither: the account key under AZURE_STORAGE_ACCOUNT_KEY)"))]
pub struct AzureCredentialsSecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the storage account key (`AZURE_STORAGE_ACCOUNT_KEY`). Default, when
    /// `sasTokenKey` is not set: `AZURE_STORAGE_ACCOUNT_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub account_key_key: Option<String>,
    /// Key holding a SAS token (`AZURE_STORAGE_SAS_TOKEN`) instead of the account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub sas_token_key: Option<String>,
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
