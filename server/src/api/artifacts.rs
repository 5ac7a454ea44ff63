//! Artifacts: the `mlflow-artifacts` proxy (GET/PUT/DELETE a file, list a directory; multipart
//! upload answers NOT_IMPLEMENTED) and the run-scoped `artifacts/list` RPC.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_util::io::{ReaderStream, StreamReader};

use super::AppState;
use crate::artifacts::{ArtifactRoot, clean_relative_path, proxied_path};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::wire::{Req, lenient, required_str};

const PROXY_PREFIX: &str = "/mlflow-artifacts/artifacts/";

pub fn proxy_router() -> Router<AppState> {
    Router::new()
        .route("/mlflow-artifacts/artifacts", get(list_proxied))
        .route("/mlflow-artifacts/artifacts/", get(list_proxied))
        .route(
            "/mlflow-artifacts/artifacts/{*path}",
            get(download).put(upload).delete(delete),
        )
        .route(
            "/mlflow-artifacts/mpu/create/{*path}",
            post(multipart_not_implemented),
        )
        .route(
            "/mlflow-artifacts/mpu/complete/{*path}",
            post(multipart_not_implemented),
        )
        .route(
            "/mlflow-artifacts/mpu/abort/{*path}",
            post(multipart_not_implemented),
        )
}

pub fn rpc_router() -> Router<AppState> {
    Router::new().route("/mlflow/artifacts/list", get(list_run_artifacts))
}

fn root(state: &AppState) -> ApiResult<Arc<ArtifactRoot>> {
    state.artifacts.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::TemporarilyUnavailable,
            "Artifact proxying is disabled on this server (started with --no-serve-artifacts).",
        )
    })
}

/// The still-encoded artifact path after the proxy prefix, checked and cleaned. Basic auth reads
/// the experiment from this same function, so the path authorised is the path served.
pub(crate) fn path_from_uri(uri: &Uri) -> ApiResult<String> {
    let raw = uri.path();
    let rest = raw
        .find(PROXY_PREFIX)
        .map(|i| &raw[i + PROXY_PREFIX.len()..])
        .unwrap_or("");
    let clean = clean_relative_path(rest)?;
    if clean.is_empty() {
        return Err(ApiError::invalid("An artifact path is required."));
    }
    Ok(clean)
}

async fn download(State(state): State<AppState>, uri: Uri) -> ApiResult<Response> {
    let root = root(&state)?;
    let clean = path_from_uri(&uri)?;
    let path = root.resolve(&clean)?;
    let meta = match tokio::fs::symlink_metadata(&path).await {
        Ok(meta) => meta,
        Err(_) => return Err(ApiError::not_found(format!("Artifact '{clean}' does not exist."))),
    };
    if meta.is_dir() {
        return Err(ApiError::invalid(format!(
            "Artifact '{clean}' is a directory; list it instead."
        )));
    }
    if meta.file_type().is_symlink() {
        return Err(ApiError::invalid(format!(
            "Artifact '{clean}' is a symbolic link and is not served."
        )));
    }
    let file = tokio::fs::File::open(&path).await.map_err(ApiError::internal)?;
    let name = clean.rsplit('/').next().unwrap_or("artifact");
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let mut response = Body::from_stream(ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
    let safe_name: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"')
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}

async fn upload(State(state): State<AppState>, uri: Uri, body: Body) -> ApiResult<Json<Value>> {
    let root = root(&state)?;
    let clean = path_from_uri(&uri)?;
    let path = root.resolve(&clean)?;
    if tokio::fs::symlink_metadata(&path)
        .await
        .is_ok_and(|m| m.is_dir() || m.file_type().is_symlink())
    {
        return Err(ApiError::invalid(format!(
            "Artifact '{clean}' exists and is not a regular file."
        )));
    }
    let parent = path
        .parent()
        .ok_or_else(|| ApiError::invalid("An artifact path is required."))?;
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| ApiError::invalid(format!("Cannot create the directory for '{clean}': {e}")))?;
    // Re-check after creating directories, then write to a temporary file and rename it into
    // place, so a failed upload never leaves a partial artifact.
    let path = root.resolve(&clean)?;
    let tmp = parent.join(format!(".mlkube-upload-{}", uuid::Uuid::new_v4().simple()));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await.map_err(ApiError::internal)?;
        let stream = body.into_data_stream().map_err(std::io::Error::other);
        let mut reader = StreamReader::new(stream);
        tokio::io::copy(&mut reader, &mut file)
            .await
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("Upload of '{clean}' failed: {e}")))?;
        file.flush().await.map_err(ApiError::internal)?;
        tokio::fs::rename(&tmp, &path).await.map_err(ApiError::internal)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result?;
    Ok(Json(json!({})))
}

async fn delete(State(state): State<AppState>, uri: Uri) -> ApiResult<Json<Value>> {
    let root = root(&state)?;
    let clean = path_from_uri(&uri)?;
    let path = root.resolve(&clean)?;
    let meta = tokio::fs::symlink_metadata(&path)
        .await
        .map_err(|_| ApiError::not_found(format!("Artifact '{clean}' does not exist.")))?;
    let removed = if meta.is_dir() {
        tokio::fs::remove_dir_all(&path).await
    } else {
        tokio::fs::remove_file(&path).await
    };
    removed.map_err(ApiError::internal)?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    path: Option<String>,
}

async fn list_proxied(State(state): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let root = root(&state)?;
    let clean = clean_relative_path(q.path.as_deref().unwrap_or(""))?;
    let dir = root.resolve(&clean)?;
    if tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_file()) {
        return Ok(Json(json!({})));
    }
    let files = root.list(&clean, "").await?;
    if files.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "files": files })))
}

async fn multipart_not_implemented() -> ApiError {
    ApiError::new(
        ErrorCode::NotImplemented,
        "Multipart upload is not supported by this artifact store; upload the file with a single PUT.",
    )
}

#[derive(Debug, Deserialize)]
struct ListArtifacts {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    path: Option<String>,
}

async fn list_run_artifacts(
    State(state): State<AppState>,
    Req(req): Req<ListArtifacts>,
) -> ApiResult<Json<Value>> {
    let run_id = required_str(req.run_id.filter(|r| !r.is_empty()).or(req.run_uuid), "run_id")?;
    let run = state.store.get_run(&run_id).await?;
    let root_uri = run.info.artifact_uri.clone();
    let sub = clean_relative_path(req.path.as_deref().unwrap_or(""))?;
    let Some(base) = proxied_path(&root_uri) else {
        // Artifacts kept elsewhere (s3://, gs://, …) are listed by the client itself.
        return Ok(Json(json!({ "root_uri": root_uri })));
    };
    let base = clean_relative_path(base)?;
    let root = root(&state)?;
    let dir = if sub.is_empty() {
        base
    } else {
        format!("{base}/{sub}")
    };
    let files = root.list(&dir, &sub).await?;
    let mut body = json!({ "root_uri": root_uri });
    if !files.is_empty() {
        body["files"] = json!(files);
    }
    Ok(Json(body))
}
