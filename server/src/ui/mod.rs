//! MLflow's web UI on mlkube-server (docs/web-ui.md): the prebuilt React app from the `mlflow`
//! wheel (`/` and `/static-files/…`), the GraphQL endpoint its 3.x pages query, the empty answers
//! its 3.x shell expects for features this server does not have, and `--static-prefix`.

pub mod build;
pub mod graphql;
pub mod prefix;
pub mod shell;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

pub use build::{NoUi, UiBuild};

/// Static assets carry content hashes in their names: browsers may keep them for 28 days, as
/// upstream MLflow lets them.
const STATIC_CACHE: &str = "public, max-age=2419200";

/// What `/` serves: a build, or why there is none.
#[derive(Debug, Clone)]
pub enum Ui {
    Build(Arc<UiBuild>),
    Missing(NoUi),
}

/// `/` and `/static-files/…`, compressed for clients that accept gzip.
pub fn router<S: Clone + Send + Sync + 'static>(ui: &Ui) -> Router<S> {
    let routes = match ui {
        Ui::Build(build) => {
            let assets = ServeDir::new(build.dir()).append_index_html_on_directories(false);
            Router::new()
                .route("/", get(index).with_state(build.clone()))
                .route(
                    "/static-files/{*path}",
                    get(static_file)
                        .with_state(assets)
                        .layer(SetResponseHeaderLayer::overriding(
                            header::CACHE_CONTROL,
                            HeaderValue::from_static(STATIC_CACHE),
                        )),
                )
        }
        Ui::Missing(why) => Router::new()
            .route("/", get(missing).with_state(why.clone()))
            .route("/static-files/{*path}", get(missing).with_state(why.clone())),
    };
    routes.layer(CompressionLayer::new())
}

async fn index(State(build): State<Arc<UiBuild>>) -> Response {
    match tokio::fs::read(build.dir().join("index.html")).await {
        Ok(html) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                // The index names the hashed assets of this build: always revalidate it.
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            html,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(dir = %build.dir().display(), error = %err, "web UI: index.html unreadable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "MLflow's web UI build is no longer readable on this server.",
            )
                .into_response()
        }
    }
}

/// Longest file name and path a static file can have (Linux's NAME_MAX and PATH_MAX): anything
/// longer cannot be in the build, and asking the file system for it fails with an error.
const MAX_NAME_BYTES: usize = 255;
const MAX_PATH_BYTES: usize = 4096;

/// `/static-files/<path>` is the file `<path>` of the build (ServeDir refuses `..` and the like).
/// A path that cannot name a file of the build (undecodable, too long) is a plain 404, like a
/// missing file.
async fn static_file(
    State(assets): State<ServeDir>,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Response {
    let Ok(Path(path)) = path else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if path.len() > MAX_PATH_BYTES || path.split('/').any(|name| name.len() > MAX_NAME_BYTES) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut inner = Request::new(Body::empty());
    *inner.method_mut() = req.method().clone();
    *inner.headers_mut() = req.headers().clone();
    let encoded: String = utf8_percent_encode(&path, PATH_SEGMENTS).collect();
    match format!("/{encoded}").parse() {
        Ok(uri) => *inner.uri_mut() = uri,
        Err(_) => return StatusCode::NOT_FOUND.into_response(),
    }
    match assets.oneshot(inner).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// Characters re-encoded when the captured path becomes a URI again (`/` stays a separator).
const PATH_SEGMENTS: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

async fn missing(State(why): State<NoUi>) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        format!(
            "mlkube-server is running, but it serves no web UI: {}.\n\
             The MLflow REST API is available under /api/2.0/mlflow/.\n",
            why.0
        ),
    )
        .into_response()
}

/// Resolve `--ui-dir` / `--no-ui` / discovery into what `/` serves (`None`: UI off).
pub async fn resolve(source: &crate::config::UiSource) -> Option<Ui> {
    use crate::config::UiSource;
    let found = match source {
        UiSource::Off => return None,
        UiSource::Dir(dir) => UiBuild::open(dir),
        UiSource::Discover => build::discover().await,
    };
    Some(match found {
        Ok(build) => {
            tracing::info!(
                dir = %build.dir().display(),
                mlflow_version = build.mlflow_version().as_deref().unwrap_or("unknown"),
                "web UI: serving MLflow's UI build"
            );
            Ui::Build(Arc::new(build))
        }
        Err(why) => {
            tracing::warn!(reason = %why.0, "web UI: not served");
            Ui::Missing(why)
        }
    })
}
