//! The HTTP surface: MLflow's REST API under `/api/2.0` and `/ajax-api/2.0` (plus the 3.x routes
//! under `/api/3.0`), the artifact proxy, `/health` and `/version`; the web UI's routes come from
//! `crate::ui` (docs/web-ui.md).

pub mod artifacts;
pub mod experiments;
pub mod logged_models;
pub mod meta;
pub mod metrics;
pub mod paging;
pub mod quality;
pub mod registry;
pub mod runs;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ErrorCode};
use crate::prometheus::{serve as serve_metrics, track as track_metrics};
pub use crate::state::AppState;

/// The MLflow RPC routes, mounted under each API prefix.
fn rpc_routes() -> Router<AppState> {
    Router::new()
        .merge(experiments::router())
        .merge(runs::router())
        .merge(metrics::router())
        .merge(logged_models::router())
        .merge(registry::router())
        .merge(artifacts::rpc_router())
        .merge(quality::router())
}

/// Every API route (REST under each prefix, the UI's artifact downloads, probes), without GraphQL.
fn api_routes() -> Router<AppState> {
    let rpc = rpc_routes()
        .merge(artifacts::proxy_router())
        .merge(crate::ui::shell::v2_router());
    let v3 = meta::v3_router().merge(crate::ui::shell::v3_router());
    Router::new()
        .nest("/api/2.0", rpc.clone())
        .nest(
            "/ajax-api/2.0",
            rpc.merge(metrics::ajax_router())
                .merge(experiments::ajax_router())
                .merge(logged_models::ajax_router()),
        )
        .nest("/api/3.0", v3.clone())
        .nest("/ajax-api/3.0", v3)
        .merge(meta::router())
        .merge(artifacts::ui_router())
        .fallback(endpoint_not_found)
}

/// The whole application.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    // GraphQL resolvers call the REST routes in-process, behind the same authorisation.
    let backend =
        crate::auth::protect(api_routes(), state.auth.clone(), max_body_bytes).with_state(state.clone());
    let graphql = crate::ui::graphql::router(crate::ui::graphql::schema(backend));
    let mut routes = api_routes().merge(graphql);
    if let Some(ui) = &state.ui {
        routes = routes.merge(crate::ui::router(ui));
    }
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
        .layer(axum::middleware::from_fn_with_state(
            state.store.clone(),
            durable_writes,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
}

/// A request that may have written is answered only once its commits are on disk: SQLite's group
/// commit syncs everything committed so far, shared with the other writers that finished meanwhile
/// (docs/architecture.md, "Durability"). Reads pass straight through.
async fn durable_writes(
    axum::extract::State(store): axum::extract::State<std::sync::Arc<dyn crate::store::Store>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let reads_only = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let response = next.run(request).await;
    if reads_only {
        return response;
    }
    match store.sync_commits().await {
        Ok(()) => response,
        Err(err) => {
            tracing::error!(error = %err, "could not sync committed writes to disk");
            ApiError::internal(err).into_response()
        }
    }
}

async fn endpoint_not_found(uri: axum::http::Uri) -> Response {
    ApiError::new(
        ErrorCode::EndpointNotFound,
        format!("No API endpoint at {}", uri.path()),
    )
    .into_response()
}
