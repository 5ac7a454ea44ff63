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
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ErrorCode};
use crate::prometheus::{serve as serve_metrics, track as track_metrics};
pub use crate::state::AppState;
use crate::wire::body_too_large;

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

/// `--artifacts-only`: the artifact proxy under both API prefixes and the probes, as upstream's
/// `mlflow server --artifacts-only` serves; every other API path is MLflow's 404.
fn artifact_routes() -> Router<AppState> {
    let proxy = artifacts::proxy_router();
    Router::new()
        .nest("/api/2.0", proxy.clone())
        .nest("/ajax-api/2.0", proxy)
        .merge(meta::router())
        .fallback(endpoint_not_found)
}

/// The artifact proxy alone (`--artifacts-only`), with the same authorisation, limits and
/// `/metrics` as the whole application.
pub fn artifacts_app(state: AppState, max_body_bytes: usize) -> Router {
    let router =
        crate::auth::protect(artifact_routes(), state.auth.clone(), max_body_bytes).with_state(state.clone());
    with_layers(router, &state, max_body_bytes)
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
    let router = crate::auth::protect(routes, state.auth.clone(), max_body_bytes).with_state(state.clone());
    with_layers(router, &state, max_body_bytes)
}

/// `/metrics` and the layers every request passes.
fn with_layers(mut router: Router, state: &AppState, max_body_bytes: usize) -> Router {
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
        .layer(axum::middleware::from_fn(mlflow_rejections))
        .layer(axum::middleware::from_fn_with_state(
            max_body_bytes,
            refuse_oversized,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
}

/// The proxy's upload route: its body streams to storage and has no size limit.
const UPLOAD_ROUTE: &str = "/mlflow-artifacts/artifacts/{*path}";

fn route_template(request: &Request) -> Option<&str> {
    request.extensions().get::<MatchedPath>().map(MatchedPath::as_str)
}

/// A body declared larger than `--max-request-body-bytes` is refused before any of it is read
/// (413), except an upload to the artifact proxy. Bodies without a length are held to the same
/// limit by the extractors while they are read.
async fn refuse_oversized(State(max): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let upload = request.method() == Method::PUT
        && route_template(&request).is_some_and(|t| t.ends_with(UPLOAD_ROUTE));
    if !upload && declared.is_some_and(|n| n > max as u64) {
        return body_too_large().into_response();
    }
    next.run(request).await
}

/// axum answers what it cannot route or extract (a method the route does not serve, a path
/// parameter or query string that does not decode, an unreadable body) in plain text or with an
/// empty body; those answers leave in MLflow's JSON error shape like every other error, keeping
/// their status where MLflow has a code for it and their `Allow` / `WWW-Authenticate` /
/// `Retry-After` headers. The web UI's page and files (`/`, `/static-files/…`) keep their plain
/// 404s, as MLflow's do.
async fn mlflow_rejections(request: Request, next: Next) -> Response {
    let ui = route_template(&request).is_some_and(|t| t == "/" || t.starts_with("/static-files/"));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !status.is_client_error() || (ui && status == StatusCode::NOT_FOUND) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, message) = match status {
        // The route adds `Allow` after this layer.
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            format!("The method {method} is not allowed for {path}; the Allow header lists those that are."),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => return body_too_large().into_response(),
        StatusCode::UNAUTHORIZED => (ErrorCode::Unauthenticated, text),
        StatusCode::FORBIDDEN => (ErrorCode::PermissionDenied, text),
        StatusCode::NOT_FOUND => (ErrorCode::EndpointNotFound, text),
        _ => (ErrorCode::BadRequest, text),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("Bad request").to_owned()
    } else {
        message
    };
    let mut answer = ApiError::new(code, message).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
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
