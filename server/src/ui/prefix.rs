//! `--static-prefix /p`: the whole server (UI, API, GraphQL, artifacts, health) is also served
//! under `/p`, as MLflow 3 serves it, so an Ingress can route `/p` to the tracking server
//! unchanged. `/p` itself redirects to `/p/` (the UI loads its assets relative to the page).
//! Unprefixed paths keep working, so in-cluster clients need no change.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Wrap `app` so that requests under `prefix` reach it with the prefix removed.
pub fn with_static_prefix(app: Router, prefix: Option<&str>) -> Router {
    match prefix {
        None => app,
        Some(prefix) => Router::new()
            .fallback_service(app)
            .layer(axum::middleware::from_fn_with_state(
                prefix.to_owned(),
                strip_prefix,
            )),
    }
}

async fn strip_prefix(State(prefix): State<String>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == prefix {
        // `/p` -> `/p/`, keeping the query string.
        let location = match req.uri().query() {
            Some(q) => format!("{prefix}/?{q}"),
            None => format!("{prefix}/"),
        };
        return match HeaderValue::from_str(&location) {
            Ok(location) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response(),
            Err(_) => StatusCode::BAD_REQUEST.into_response(),
        };
    }
    if let Some(rest) = path.strip_prefix(prefix.as_str())
        && rest.starts_with('/')
    {
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        match Uri::builder().path_and_query(path_and_query).build() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    next.run(req).await
}
