//! How model pods and the operator's registry client reach a tracking server: its URL, the
//! basic-auth account, the CA bundle of an `https://` server, and, when the server's S3 bucket
//! is read directly (`access: Direct`), the bucket's credentials. A server that proxies its
//! artifacts (`mlflow-artifacts:/`, the default) gives model pods no store credentials at all:
//! they download through the tracking server (or its dedicated artifact server) with
//! `MLFLOW_TRACKING_URI` and the basic-auth account.

use kube::ResourceExt;

use super::tracking_server::{DirectS3, artifacts_of, tracking_server_url};
use crate::crd::model_deployment::CaBundleRef;
use crate::crd::tracking_server::AdminSecretRef;
use crate::crd::{ModelDeployment, TrackingServer};

/// What the model pods need to talk to the tracking server and its artifact store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackingAccess {
    pub uri: String,
    /// Basic-auth account, as a Secret (`MLFLOW_TRACKING_USERNAME` / `_PASSWORD`).
    pub auth: Option<AdminSecretRef>,
    /// The bucket's endpoint, region and credentials when clients read it directly
    /// (`access: Direct`); `None` when artifacts go through the tracking server.
    pub s3: Option<DirectS3>,
    /// The CA bundle an `https://` tracking server is verified with (`trackingCaBundle`).
    pub ca_bundle: Option<CaBundleRef>,
}

impl TrackingAccess {
    /// Access to the server a ModelDeployment names with `trackingUri`.
    pub fn for_tracking_uri(md: &ModelDeployment) -> Self {
        Self {
            uri: md.spec.tracking_uri.clone().unwrap_or_default(),
            auth: md.spec.tracking_credentials_secret_ref.clone(),
            s3: None,
            ca_bundle: md.spec.tracking_ca_bundle.clone(),
        }
    }

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
            // A store the schema refuses gives nothing; the TrackingServer's own status says why.
            s3: artifacts_of(&spec.artifact_store, spec.service_account_name.as_ref())
                .ok()
                .and_then(|a| a.direct_s3()),
            ca_bundle: None,
        }
    }
}
