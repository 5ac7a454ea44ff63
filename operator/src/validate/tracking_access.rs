//! How model pods and the operator's registry client reach a tracking server: its URL, the
//! basic-auth account, the CA bundle of an `https://` server, and the artifact store's S3
//! credentials.

use kube::ResourceExt;

use super::tracking_server::tracking_server_url;
use crate::crd::model_deployment::CaBundleRef;
use crate::crd::tracking_server::{AdminSecretRef, CredentialsSecretRef};
use crate::crd::{ModelDeployment, TrackingServer};

/// What the model pods need to talk to the tracking server and its artifact store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackingAccess {
    pub uri: String,
    /// Basic-auth account, as a Secret (`MLFLOW_TRACKING_USERNAME` / `_PASSWORD`).
    pub auth: Option<AdminSecretRef>,
    /// S3 endpoint and credentials when the artifacts live in a bucket.
    pub s3: Option<(Option<String>, CredentialsSecretRef)>,
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
            s3: spec
                .artifact_store
                .s3
                .as_ref()
                .map(|s3| (s3.endpoint.clone(), s3.credentials_secret_ref.clone())),
            ca_bundle: None,
        }
    }
}
