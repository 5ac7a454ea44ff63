//! The validate stage: pure functions from a custom resource (plus what `fetch` found) to a
//! `Validated*` value with every default resolved. Builders take only these values.
//!
//! Most rules already live in the CRD schema (patterns, ranges, CEL), so the API server refuses a
//! bad spec at `kubectl apply`; the checks here catch what the schema cannot see and keep the
//! operator safe when the schema was bypassed (an old CRD, a status-less fixture).
//!
//! - [`defaults`]: operator-wide defaults (images, runbook URL);
//! - [`owner`]: the identity of the custom resource that owns the children;
//! - [`tracking_access`]: how model pods and the registry client reach a tracking server;
//! - [`tracking_server`], [`model_deployment`]: one CRD each.

pub mod defaults;
pub mod model_deployment;
pub mod owner;
pub mod rollout;
pub mod tracking_access;
pub mod tracking_server;
pub mod workload;

pub use defaults::Defaults;
pub use model_deployment::{
    AlertParams, Autoscaler, QualityParams, ScaleMetric, Sidecar, ValidatedModelDeployment,
    validate_model_deployment,
};
pub use owner::Owner;
pub use tracking_access::TrackingAccess;
pub use tracking_server::{
    ArtifactServer, Artifacts, Auth, AzureCredentials, Backend, DirectS3, NodeSampler,
    ValidatedTrackingServer, Volume, artifact_server_name, artifacts_of, tracking_server_url,
    validate_tracking_server,
};

use crate::crd::parse_duration_ms;

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

    pub(crate) fn field(field: &'static str, message: impl Into<String>) -> Self {
        Self::Field {
            field,
            message: message.into(),
        }
    }
}

pub(crate) fn duration_secs(field: &'static str, text: &str, min_secs: u64) -> Result<u64, ValidationError> {
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
