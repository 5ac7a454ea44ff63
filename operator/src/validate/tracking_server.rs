//! TrackingServer: backend and artifact stores, auth, metrics, node sampler and UI, with every
//! default resolved.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};

use k8s_openapi::api::apps::v1::RollingUpdateDeployment;

use super::owner::owner_of;
use super::workload::{self, Budget};
use super::{Defaults, Owner, ValidationError, duration_secs};
use crate::cluster::Apis;
use crate::crd::tracking_server::{
    AdminSecretRef, ArtifactAccess, ArtifactStore, CredentialsSecretRef, Permission, VolumeSpec,
};
use crate::crd::workload::{ExposureSpec, SchedulingSpec};
use crate::crd::{SecretKeyRef, ServiceMonitorSettings, TrackingServer};

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

/// Where the artifacts live, with every default resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum Artifacts {
    Pvc(Volume),
    S3 {
        bucket: String,
        prefix: Option<String>,
        endpoint: Option<String>,
        region: Option<String>,
        credentials: Option<CredentialsSecretRef>,
        access: ArtifactAccess,
    },
    Gcs {
        bucket: String,
        prefix: Option<String>,
        /// The Secret key holding the JSON key file.
        credentials: Option<SecretKeyRef>,
    },
    Azure {
        account: String,
        container: String,
        prefix: Option<String>,
        dfs: bool,
        credentials: Option<AzureCredentials>,
    },
}

/// The Secret key an Azure Storage container is reached with.
#[derive(Clone, Debug, PartialEq)]
pub enum AzureCredentials {
    /// The storage account key (`AZURE_STORAGE_ACCOUNT_KEY`).
    AccountKey(SecretKeyRef),
    /// A SAS token (`AZURE_STORAGE_SAS_TOKEN`).
    SasToken(SecretKeyRef),
}

/// The S3 bucket a `Direct` tracking server hands to model servers.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectS3 {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub credentials: CredentialsSecretRef,
}

fn with_prefix(root: String, prefix: Option<&String>) -> String {
    match prefix {
        Some(prefix) => format!("{root}/{prefix}"),
        None => root,
    }
}

impl Artifacts {
    /// Whether clients reach the artifacts through the server's proxy (`mlflow-artifacts:/`).
    pub fn proxied(&self) -> bool {
        !matches!(
            self,
            Self::S3 {
                access: ArtifactAccess::Direct,
                ..
            }
        )
    }

    /// The object store's URI (`s3://…`, `gs://…`, `abfss://…`, `wasbs://…`); `None` on a PVC.
    pub fn object_store_uri(&self) -> Option<String> {
        match self {
            Self::Pvc(_) => None,
            Self::S3 { bucket, prefix, .. } => Some(with_prefix(format!("s3://{bucket}"), prefix.as_ref())),
            Self::Gcs { bucket, prefix, .. } => Some(with_prefix(format!("gs://{bucket}"), prefix.as_ref())),
            Self::Azure {
                account,
                container,
                prefix,
                dfs,
                ..
            } => {
                let root = if *dfs {
                    format!("abfss://{container}@{account}.dfs.core.windows.net")
                } else {
                    format!("wasbs://{container}@{account}.blob.core.windows.net")
                };
                Some(with_prefix(root, prefix.as_ref()))
            }
        }
    }

    /// `--default-artifact-root` of the server: the proxy, or the bucket itself when direct.
    pub fn default_artifact_root(&self) -> String {
        match self.object_store_uri() {
            Some(uri) if !self.proxied() => uri,
            _ => "mlflow-artifacts:/".to_owned(),
        }
    }

    /// What model servers need to read a `Direct` bucket; `None` when they go through the proxy.
    pub fn direct_s3(&self) -> Option<DirectS3> {
        match self {
            Self::S3 {
                endpoint,
                region,
                credentials: Some(credentials),
                access: ArtifactAccess::Direct,
                ..
            } => Some(DirectS3 {
                endpoint: endpoint.clone(),
                region: region.clone(),
                credentials: credentials.clone(),
            }),
            _ => None,
        }
    }
}

/// The artifact store of a spec, checked (the CRD's CEL rules say the same at `kubectl apply`).
pub fn artifacts_of(
    store: &ArtifactStore,
    service_account: Option<&String>,
) -> Result<Artifacts, ValidationError> {
    let artifacts = match (&store.pvc, &store.s3, &store.gcs, &store.azure) {
        (Some(pvc), None, None, None) => Artifacts::Pvc(Volume::from_spec(pvc, "10Gi")),
        (None, Some(s3), None, None) => {
            if s3.access == ArtifactAccess::Direct && s3.credentials_secret_ref.is_none() {
                return Err(ValidationError::field(
                    "spec.artifactStore.s3.credentialsSecretRef",
                    "access: Direct gives clients and model servers the bucket's credentials, so it needs credentialsSecretRef",
                ));
            }
            Artifacts::S3 {
                bucket: s3.bucket.clone(),
                prefix: s3.prefix.clone(),
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                credentials: s3.credentials_secret_ref.clone(),
                access: s3.access,
            }
        }
        (None, None, Some(gcs), None) => {
            if gcs.access != ArtifactAccess::Proxied {
                return Err(ValidationError::field(
                    "spec.artifactStore.gcs.access",
                    "gcs artifacts are served through the tracking server only: set access: Proxied",
                ));
            }
            Artifacts::Gcs {
                bucket: gcs.bucket.clone(),
                prefix: gcs.prefix.clone(),
                credentials: gcs.credentials_secret_ref.as_ref().map(|r| SecretKeyRef {
                    name: r.name.clone(),
                    key: r.key.clone(),
                }),
            }
        }
        (None, None, None, Some(azure)) => {
            if azure.access != ArtifactAccess::Proxied {
                return Err(ValidationError::field(
                    "spec.artifactStore.azure.access",
                    "azure artifacts are served through the tracking server only: set access: Proxied",
                ));
            }
            let credentials = match &azure.credentials_secret_ref {
                None => None,
                Some(r) => Some(match (&r.account_key_key, &r.sas_token_key) {
                    (Some(_), Some(_)) => {
                        return Err(ValidationError::field(
                            "spec.artifactStore.azure.credentialsSecretRef",
                            "set at most one of accountKeyKey and sasTokenKey",
                        ));
                    }
                    (None, Some(key)) => AzureCredentials::SasToken(SecretKeyRef {
                        name: r.name.clone(),
                        key: key.clone(),
                    }),
                    (key, None) => AzureCredentials::AccountKey(SecretKeyRef {
                        name: r.name.clone(),
                        key: key
                            .clone()
                            .unwrap_or_else(|| "AZURE_STORAGE_ACCOUNT_KEY".to_owned()),
                    }),
                }),
            };
            if credentials.is_none() && service_account.is_none() {
                return Err(ValidationError::field(
                    "spec.artifactStore.azure",
                    "needs credentialsSecretRef (account key or SAS token) or spec.serviceAccountName (Azure Workload Identity)",
                ));
            }
            Artifacts::Azure {
                account: azure.account.clone(),
                container: azure.container.clone(),
                prefix: azure.prefix.clone(),
                dfs: azure.dfs,
                credentials,
            }
        }
        _ => {
            return Err(ValidationError::field(
                "spec.artifactStore",
                "set exactly one of pvc, s3, gcs and azure",
            ));
        }
    };
    Ok(artifacts)
}

/// The artifact proxy in its own Deployment and Service (`artifactStore.dedicatedServer`).
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactServer {
    pub replicas: i32,
    pub resources: Option<ResourceRequirements>,
    /// `host[:port]` clients reach it at: the tracking server's default artifact root is
    /// `mlflow-artifacts://<advertised>/`.
    pub advertised: String,
}

/// Name of the artifact server's Deployment and Service.
pub fn artifact_server_name(tracking_server: &str) -> String {
    format!("{tracking_server}-artifacts")
}

/// `host[:port]` without a scheme or path: what an `mlflow-artifacts://` URI can carry.
fn authority_ok(authority: &str) -> bool {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !host.starts_with(['-', '.'])
        && !host.ends_with(['-', '.']);
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok
}

/// `artifactStore.dedicatedServer`, checked against the store and auth (the CRD's CEL rules
/// say the same at `kubectl apply`).
fn artifact_server_of(
    spec: &crate::crd::TrackingServerSpec,
    artifacts: &Artifacts,
    owner: &Owner,
) -> Result<Option<ArtifactServer>, ValidationError> {
    let Some(dedicated) = &spec.artifact_store.dedicated_server else {
        return Ok(None);
    };
    const FIELD: &str = "spec.artifactStore.dedicatedServer";
    if matches!(artifacts, Artifacts::Pvc(_)) {
        return Err(ValidationError::field(
            FIELD,
            "needs an object store behind the artifact proxy (s3 with access: Proxied, gcs or azure): a pvc cannot be shared by the tracking and artifact servers",
        ));
    }
    if !artifacts.proxied() {
        return Err(ValidationError::field(
            FIELD,
            "needs access: Proxied: with access: Direct clients use the bucket itself and there is no artifact proxy to run",
        ));
    }
    if spec.auth.as_ref().is_some_and(|a| a.enabled) {
        return Err(ValidationError::field(
            FIELD,
            "does not go with auth: the artifact server cannot check the tracking server's basic-auth users and permissions",
        ));
    }
    if dedicated.replicas < 0 {
        return Err(ValidationError::field(
            "spec.artifactStore.dedicatedServer.replicas",
            "must not be negative",
        ));
    }
    let advertised = match &dedicated.advertised_url {
        Some(url) if authority_ok(url) => url.clone(),
        Some(_) => {
            return Err(ValidationError::field(
                "spec.artifactStore.dedicatedServer.advertisedUrl",
                "must be a host and optional port without a scheme or path, e.g. artifacts.example.com:443",
            ));
        }
        None => format!(
            "{}.{}.svc:{}",
            artifact_server_name(&owner.name),
            owner.namespace,
            crate::ports::SERVER
        ),
    };
    Ok(Some(ArtifactServer {
        replicas: dedicated.replicas,
        resources: dedicated.resources.clone(),
        advertised,
    }))
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
    /// The artifact proxy in its own Deployment and Service; `None`: the tracking server
    /// proxies the artifacts itself.
    pub artifact_server: Option<ArtifactServer>,
    /// `spec.serviceAccountName`: the pods' identity for workload identity.
    pub service_account_name: Option<String>,
    pub auth: Option<Auth>,
    pub metrics_enabled: bool,
    /// `Some(seconds)` when statistics are on.
    pub statistics_interval_secs: Option<u64>,
    /// Whether the cluster serves `monitoring.coreos.com/v1`.
    pub monitoring_api: bool,
    /// Whether the cluster serves the Gateway API (HTTPRoutes).
    pub gateway_api: bool,
    /// RollingUpdate parameters (`None`: Kubernetes' defaults, or Recreate).
    pub rolling_update: Option<RollingUpdateDeployment>,
    pub disruption_budget: Option<Budget>,
    pub scheduling: SchedulingSpec,
    pub exposure: Option<ExposureSpec>,
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
        // validate_tracking_server says the same when it refuses a rolloutStrategy.
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
    format!("http://{name}.{namespace}.svc:{}", crate::ports::SERVER)
}

pub fn validate_tracking_server(
    ts: &TrackingServer,
    apis: impl Into<Apis>,
    defaults: &Defaults,
) -> Result<ValidatedTrackingServer, ValidationError> {
    let apis = apis.into();
    let monitoring_api = apis.monitoring;
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
    let artifacts = artifacts_of(&spec.artifact_store, spec.service_account_name.as_ref())?;
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
            "more than one replica needs an artifact store every replica sees: an object store (s3, gcs or azure) or a pvc with ReadWriteMany",
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
    let artifact_server = artifact_server_of(spec, &artifacts, &owner)?;
    let url = tracking_server_url(&owner.name, &owner.namespace);
    let recreate = matches!(backend, Backend::Sqlite(_))
        || matches!(&artifacts, Artifacts::Pvc(v) if !v.read_write_many());
    if recreate && spec.rollout_strategy.is_some() {
        return Err(ValidationError::field(
            "spec.rolloutStrategy",
            "needs a rolling Deployment: a sqlite backendStore or a ReadWriteOnce artifactStore.pvc always replaces the pod (Recreate)",
        ));
    }
    let rolling_update = workload::rolling_update(spec.rollout_strategy.as_ref(), false)?;
    let disruption_budget = workload::disruption_budget(spec.disruption_budget.as_ref(), spec.replicas)?;
    let exposure = workload::exposure(spec.exposure.as_ref())?;
    Ok(ValidatedTrackingServer {
        gateway_api: apis.gateway,
        rolling_update,
        disruption_budget,
        scheduling: spec.scheduling.clone().unwrap_or_default(),
        exposure,
        image: spec
            .image
            .clone()
            .unwrap_or_else(|| defaults.server_image.clone()),
        replicas: spec.replicas,
        resources: spec.resources.clone(),
        backend,
        artifacts,
        artifact_server,
        service_account_name: spec.service_account_name.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::ts;
    use crate::validate::AzureCredentials;
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
    }

    #[test]
    fn object_store_rules_hold_without_the_schema() {
        let pg = json!({"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}});
        let refused = |store: serde_json::Value, extra: serde_json::Value, needle: &str| {
            let mut spec = json!({"replicas": 3, "backendStore": pg.clone(), "artifactStore": store});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            let err = validate_tracking_server(&ts(spec.clone()), true, &defaults()).unwrap_err();
            assert_eq!(err.reason(), "InvalidSpec");
            assert!(err.to_string().contains(needle), "{spec}: {err}");
        };
        refused(
            json!({"s3": {"bucket": "models", "access": "Direct"}}),
            json!({}),
            "needs credentialsSecretRef",
        );
        refused(
            json!({"gcs": {"bucket": "ml-artifacts", "access": "Direct"}}),
            json!({}),
            "set access: Proxied",
        );
        refused(
            json!({"azure": {"account": "mlstore", "container": "artifacts", "access": "Direct",
                             "credentialsSecretRef": {"name": "az"}}}),
            json!({}),
            "set access: Proxied",
        );
        refused(
            json!({"azure": {"account": "mlstore", "container": "artifacts"}}),
            json!({}),
            "spec.serviceAccountName",
        );
        refused(
            json!({"azure": {"account": "mlstore", "container": "artifacts",
                             "credentialsSecretRef": {"name": "az", "accountKeyKey": "k", "sasTokenKey": "s"}}}),
            json!({}),
            "at most one of accountKeyKey and sasTokenKey",
        );
        refused(
            json!({"s3": {"bucket": "models"}, "gcs": {"bucket": "ml-artifacts"}}),
            json!({}),
            "exactly one of pvc, s3, gcs and azure",
        );
        refused(json!({"pvc": {}}), json!({}), "ReadWriteMany");
        let ok = |store: serde_json::Value, extra: serde_json::Value| {
            let mut spec = json!({"replicas": 3, "backendStore": pg.clone(), "artifactStore": store});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            validate_tracking_server(&ts(spec), true, &defaults()).unwrap()
        };
        let azure = ok(
            json!({"azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az"}}}),
            json!({}),
        );
        assert!(matches!(
            &azure.artifacts,
            Artifacts::Azure { credentials: Some(AzureCredentials::AccountKey(r)), .. }
                if r.name == "az" && r.key == "AZURE_STORAGE_ACCOUNT_KEY"
        ));
        let wi = ok(
            json!({"azure": {"account": "mlstore", "container": "artifacts"}}),
            json!({"serviceAccountName": "mlflow-azure"}),
        );
        assert_eq!(wi.service_account_name.as_deref(), Some("mlflow-azure"));
        let s3 = ok(json!({"s3": {"bucket": "models"}}), json!({}));
        assert!(s3.artifacts.proxied() && !s3.recreate());
        assert_eq!(s3.artifacts.object_store_uri().as_deref(), Some("s3://models"));
        assert!(s3.artifact_server.is_none());
    }

    #[test]
    fn a_dedicated_artifact_server_needs_a_proxied_object_store() {
        let pg = json!({"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}});
        let spec = |store: serde_json::Value, extra: serde_json::Value| {
            let mut spec = json!({"replicas": 2, "backendStore": pg.clone(), "artifactStore": store});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            ts(spec)
        };
        let refused = |store: serde_json::Value, extra: serde_json::Value, field: &str, needle: &str| {
            let err = validate_tracking_server(&spec(store.clone(), extra), true, &defaults()).unwrap_err();
            assert_eq!(err.reason(), "InvalidSpec");
            let message = err.to_string();
            assert!(message.starts_with(&format!("{field}: ")), "{store}: {message}");
            assert!(message.contains(needle), "{store}: {message}");
        };
        let dedicated = "spec.artifactStore.dedicatedServer";
        refused(
            json!({"pvc": {"accessModes": ["ReadWriteMany"]}, "dedicatedServer": {}}),
            json!({}),
            dedicated,
            "a pvc cannot be shared by the tracking and artifact servers",
        );
        refused(
            json!({"s3": {"bucket": "models", "access": "Direct", "credentialsSecretRef": {"name": "s3"}},
                   "dedicatedServer": {}}),
            json!({}),
            dedicated,
            "needs access: Proxied",
        );
        refused(
            json!({"s3": {"bucket": "models"}, "dedicatedServer": {}}),
            json!({"auth": {"adminSecretRef": {"name": "admin"}}}),
            dedicated,
            "does not go with auth",
        );
        refused(
            json!({"s3": {"bucket": "models"}, "dedicatedServer": {"replicas": -1}}),
            json!({}),
            "spec.artifactStore.dedicatedServer.replicas",
            "must not be negative",
        );
        for bad in [
            "https://artifacts.example.com",
            "artifacts.example.com/mlflow",
            "artifacts.example.com:0",
            "artifacts.example.com:99999",
            "Artifacts.example.com",
            "",
        ] {
            refused(
                json!({"s3": {"bucket": "models"}, "dedicatedServer": {"advertisedUrl": bad}}),
                json!({}),
                "spec.artifactStore.dedicatedServer.advertisedUrl",
                "without a scheme or path",
            );
        }

        // Accepted: S3 proxied (by default), GCS, Azure; auth switched off is no auth.
        let v = validate_tracking_server(
            &spec(
                json!({"s3": {"bucket": "models"}, "dedicatedServer": {}}),
                json!({"auth": {"enabled": false, "adminSecretRef": {"name": "admin"}}}),
            ),
            true,
            &defaults(),
        )
        .unwrap();
        assert_eq!(
            v.artifact_server,
            Some(ArtifactServer {
                replicas: 2,
                resources: None,
                advertised: "mlflow-artifacts.ml.svc:5000".to_owned(),
            })
        );
        for store in [
            json!({"gcs": {"bucket": "ml-artifacts"}, "dedicatedServer": {"advertisedUrl": "10.0.0.7:8080"}}),
            json!({"azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az"}},
                   "dedicatedServer": {"advertisedUrl": "artifacts.example.com"}}),
        ] {
            let v = validate_tracking_server(&spec(store.clone(), json!({})), true, &defaults()).unwrap();
            let advertised = &v.artifact_server.unwrap().advertised;
            assert!(
                advertised == "10.0.0.7:8080" || advertised == "artifacts.example.com",
                "{store}"
            );
        }
    }
}
