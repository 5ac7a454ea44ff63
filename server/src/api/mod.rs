//! The HTTP surface: MLflow's REST API under `/api/2.0` and `/ajax-api/2.0` (plus the 3.x routes
//! under `/api/3.0`), the artifact proxy, `/health` and `/version`.

pub mod artifacts;
pub mod experiments;
pub mod logged_models;
pub mod meta;
pub mod metrics;
pub mod paging;
pub mod registry;
pub mod runs;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use tower_http::trace::TraceLayer;

use crate::artifacts::ArtifactRoot;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{ServerMetrics, serve as serve_metrics, track as track_metrics};
use crate::store::Store;

/// The MLflow version this server speaks for (reported by `/version` and server-info).
pub const MLFLOW_COMPAT_VERSION: &str = "2.17.2";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// `None` when artifacts are not served (`--no-serve-artifacts`).
    pub artifacts: Option<Arc<ArtifactRoot>>,
    /// `Some` when `/metrics` is exposed (`--expose-prometheus`).
    pub metrics: Option<Arc<ServerMetrics>>,
    /// `Some` with `--app-name basic-auth`: every route then sits behind `auth::middleware`.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Model quality monitoring: its tables, settings, webhook notifier and exported series.
    pub monitoring: Arc<crate::monitoring::Monitoring>,
}

/// The MLflow RPC routes, mounted under each API prefix.
fn rpc_routes() -> Router<AppState> {
    Router::new()
        .merge(experiments::router())
        .merge(runs::router())
        .merge(metrics::router())
        .merge(logged_models::router())
        .merge(registry::router())
        .merge(artifacts::rpc_router())
        .merge(crate::monitoring::api::router())
}

/// The whole application.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    let rpc = rpc_routes().merge(artifacts::proxy_router());
    let routes = Router::new()
        .nest("/api/2.0", rpc.clone())
        .nest("/ajax-api/2.0", rpc.merge(metrics::ajax_router()))
        .nest("/api/3.0", meta::v3_router())
        .nest("/ajax-api/3.0", meta::v3_router())
        .merge(meta::router())
        .fallback(endpoint_not_found);
    let mut router =
        crate::auth::protect(routes, state.auth.clone(), max_body_bytes).with_state(state.clone());
    if let Some(server_metrics) = &state.metrics {
        router = router
            .layer(axum::middleware::from_fn_with_state(
                server_metrics.clone(),
                track_metrics,
            ))
            .route(
                "/metrics",
                axum::routing::get(serve_metrics).with_state(server_metrics.clone()),
            );
    }
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
}

async fn endpoint_not_found(uri: axum::http::Uri) -> Response {
    ApiError::new(
        ErrorCode::EndpointNotFound,
        format!("No API endpoint at {}", uri.path()),
    )
    .into_response()
}
