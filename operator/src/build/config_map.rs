//! The tracking server's basic-auth configuration: MLflow's INI file (`MLFLOW_AUTH_CONFIG_PATH`).
//! It holds no secret: the admin credentials reach the server as environment variables from
//! the admin Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{child_meta, server_labels};
use crate::validate::{Backend, ValidatedTrackingServer};

/// Key (and file name) of the INI file in the ConfigMap.
pub const AUTH_INI: &str = "basic_auth.ini";

pub fn auth_config_map_name(tracking_server: &str) -> String {
    format!("{tracking_server}-auth")
}

/// The INI file: default permission, and for a SQLite store the users database next to the
/// tracking database on the volume (otherwise the server's default, in its working directory).
pub fn auth_ini(ts: &ValidatedTrackingServer) -> Option<String> {
    let auth = ts.auth.as_ref()?;
    let mut ini = format!(
        "[mlflow]\ndefault_permission = {}\n",
        auth.default_permission.as_str()
    );
    if let Backend::Sqlite(_) = ts.backend {
        ini.push_str(&format!(
            "database_uri = sqlite:///{}/basic_auth.db\n",
            super::deployment::BACKEND_PATH
        ));
    }
    Some(ini)
}

pub fn build_auth_config_map(ts: &ValidatedTrackingServer) -> Option<ConfigMap> {
    let ini = auth_ini(ts)?;
    Some(ConfigMap {
        metadata: child_meta(&ts.owner, auth_config_map_name(&ts.owner.name), server_labels(ts)),
        data: Some(BTreeMap::from([(AUTH_INI.to_owned(), ini)])),
        ..Default::default()
    })
}
