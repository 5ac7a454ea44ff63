//! PersistentVolumeClaims of a tracking server: the SQLite database and the artifact store.
//! The operator never deletes a claim it no longer needs (that would delete data); claims go
//! with their TrackingServer through the ownerReference.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{child_meta, server_labels};
use crate::validate::{Artifacts, Backend, ValidatedTrackingServer, Volume};

pub fn backend_claim_name(tracking_server: &str) -> String {
    format!("{tracking_server}-backend")
}

pub fn artifacts_claim_name(tracking_server: &str) -> String {
    format!("{tracking_server}-artifacts")
}

fn claim(ts: &ValidatedTrackingServer, name: String, volume: &Volume) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: child_meta(&ts.owner, name, server_labels(ts)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(volume.access_modes.clone()),
            storage_class_name: volume.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(volume.size.clone()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn build_tracking_server_pvcs(ts: &ValidatedTrackingServer) -> Vec<PersistentVolumeClaim> {
    let mut claims = Vec::new();
    if let Backend::Sqlite(volume) = &ts.backend {
        claims.push(claim(ts, backend_claim_name(&ts.owner.name), volume));
    }
    if let Artifacts::Pvc(volume) = &ts.artifacts {
        claims.push(claim(ts, artifacts_claim_name(&ts.owner.name), volume));
    }
    claims
}
