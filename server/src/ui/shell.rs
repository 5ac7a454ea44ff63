//! Empty answers for features of MLflow 3's UI shell that this server does not have (GenAI
//! traces, evaluation datasets, the assistant, the AI gateway, scorers, UI telemetry). Upstream
//! answers these with empty results when the features are unused; so do we, so the UI shows
//! empty sections instead of error toasts. Documented in docs/web-ui.md.

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// Mounted under `/api/3.0` and `/ajax-api/3.0`.
pub fn v3_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/mlflow/traces/search", post(empty))
        .route("/mlflow/traces/metrics", post(trace_metrics))
        .route("/mlflow/datasets/search", get(empty).post(empty))
        .route("/mlflow/scorers/list", get(empty))
        .route("/mlflow/gateway/endpoints/list", get(empty))
        .route("/mlflow/assistant/config", get(assistant_config))
        .route("/mlflow/assistant/providers", get(assistant_providers))
        .route(
            "/mlflow/ui-telemetry",
            get(telemetry_config).post(telemetry_records),
        )
}

/// Mounted under `/api/2.0` and `/ajax-api/2.0`.
pub fn v2_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/mlflow/gateway-proxy",
        get(gateway_endpoints).post(gateway_endpoints),
    )
}

/// MLflow's JSON for a response whose repeated fields are all empty.
async fn empty() -> Json<Value> {
    Json(json!({}))
}

async fn trace_metrics() -> Json<Value> {
    Json(json!({ "data_points": [] }))
}

async fn assistant_config() -> Json<Value> {
    Json(json!({ "providers": {}, "projects": {}, "remote_access_allowed": false }))
}

async fn assistant_providers() -> Json<Value> {
    Json(json!({ "providers": [] }))
}

/// UI telemetry is off: this server never sends usage data anywhere.
async fn telemetry_config() -> Json<Value> {
    Json(json!({
        "disable_ui_telemetry": true,
        "disable_ui_events": [],
        "ui_rollout_percentage": 0,
    }))
}

async fn telemetry_records() -> Json<Value> {
    Json(json!({ "status": "disabled" }))
}

async fn gateway_endpoints() -> Json<Value> {
    Json(json!({ "endpoints": [] }))
}
