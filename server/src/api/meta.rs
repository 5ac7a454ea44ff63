//! `/health`, `/version`, and the 3.x client's `/api/3.0/mlflow/server-info`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use crate::version::MLFLOW_COMPAT_VERSION;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
}

pub fn v3_router() -> Router<AppState> {
    Router::new().route("/mlflow/server-info", get(server_info))
}

/// Readiness: `OK` while the backend store answers, else 503 with the reason (liveness belongs on
/// `/version`, which needs nothing but the process).
async fn health(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => "OK".into_response(),
        Err(why) => {
            tracing::warn!(reason = %why, "health: backend store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("backend store unavailable: {why}"),
            )
                .into_response()
        }
    }
}

async fn version() -> &'static str {
    MLFLOW_COMPAT_VERSION
}

/// What the 3.x client probes before logging models: store type, workspaces, multipart support.
async fn server_info() -> Json<Value> {
    Json(json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": false,
        "multipart_downloads_enabled": false,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "features_enabled": { "gateway": false },
        "mlkube_version": env!("CARGO_PKG_VERSION"),
    }))
}
