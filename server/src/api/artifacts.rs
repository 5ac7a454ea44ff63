//! Artifacts: the `mlflow-artifacts` proxy (GET/PUT/DELETE a file, list a directory, MLflow's
//! multipart upload on S3) and the run-scoped `artifacts/list` RPC.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::artifacts::{
    ArtifactRoot, MAX_PARTS, clean_relative_path, io_stream, path_from_uri, proxied_path,
};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::wire::{Req, lenient, required_str};

pub fn proxy_router() -> Router<AppState> {
    Router::new()
        .route("/mlflow-artifacts/artifacts", get(list_proxied))
        .route("/mlflow-artifacts/artifacts/", get(list_proxied))
        .route(
            "/mlflow-artifacts/artifacts/{*path}",
            get(download).put(upload).delete(delete),
        )
        .route("/mlflow-artifacts/mpu/create/{*path}", post(multipart_create))
        .route("/mlflow-artifacts/mpu/complete/{*path}", post(multipart_complete))
        .route("/mlflow-artifacts/mpu/abort/{*path}", post(multipart_abort))
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

async fn download(State(state): State<AppState>, uri: Uri) -> ApiResult<Response> {
    let root = root(&state)?;
    let clean = path_from_uri(&uri)?;
    file_response(&root, &clean, &clean).await
}

/// Send the proxied artifact at `clean` as an attachment (MLflow's XSS guard: never rendered on
/// this origin, `nosniff`, text as `text/plain`). `shown` is the path named in errors.
async fn file_response(root: &ArtifactRoot, clean: &str, shown: &str) -> ApiResult<Response> {
    let file = root.read(clean, shown).await?;
    let name = clean.rsplit('/').next().unwrap_or("artifact");
    let mut response = Body::from_stream(file.body).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&artifact_mime_type(name)) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
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

/// File names MLflow serves as `text/plain` whatever their type (its UI previews them, and a
/// browser must never render them as HTML or script); the rest by extension.
const TEXT_EXTENSIONS: &[&str] = &[
    "txt",
    "log",
    "err",
    "cfg",
    "conf",
    "cnf",
    "cf",
    "ini",
    "properties",
    "prop",
    "hocon",
    "toml",
    "yaml",
    "yml",
    "xml",
    "json",
    "js",
    "py",
    "py3",
    "csv",
    "tsv",
    "md",
    "rst",
    "ipynb",
    "MLmodel",
    "MLproject",
];

fn artifact_mime_type(name: &str) -> String {
    let extension = match name.rsplit_once('.') {
        Some((_, ext)) if !ext.is_empty() => ext,
        _ => name,
    };
    if TEXT_EXTENSIONS.contains(&extension) {
        return "text/plain".to_owned();
    }
    mime_guess::from_path(name).first_or_octet_stream().to_string()
}

/// An artifact below `root_uri` (a run's or logged model's root, or a model version's source):
/// served when it lies behind this server's proxy; anything stored elsewhere is the client's to
/// fetch.
pub(crate) async fn send_under_root(
    state: &AppState,
    root_uri: &str,
    relative: Option<String>,
) -> ApiResult<Response> {
    let relative = required_str(relative, "path")?;
    let sub = clean_relative_path(&relative)?;
    if sub.is_empty() {
        return Err(ApiError::invalid("An artifact path is required."));
    }
    let Some(base) = proxied_path(root_uri) else {
        return Err(ApiError::new(
            ErrorCode::NotImplemented,
            format!(
                "Artifacts under {root_uri} are not stored behind this server's artifact proxy; download them from their store."
            ),
        ));
    };
    let base = clean_relative_path(base)?;
    let root = root(state)?;
    let full = if base.is_empty() {
        sub.clone()
    } else {
        format!("{base}/{sub}")
    };
    file_response(&root, &full, &sub).await
}

/// The web UI's downloads: `/get-artifact?run_uuid=…&path=…` and
/// `/model-versions/get-artifact?name=…&version=…&path=…`.
pub fn ui_router() -> Router<AppState> {
    Router::new()
        .route("/get-artifact", get(get_run_artifact))
        .route("/model-versions/get-artifact", get(get_model_version_artifact))
}

#[derive(Debug, Deserialize)]
struct RunArtifact {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    path: Option<String>,
}

async fn get_run_artifact(State(state): State<AppState>, Req(req): Req<RunArtifact>) -> ApiResult<Response> {
    let run_id = required_str(req.run_id.filter(|r| !r.is_empty()).or(req.run_uuid), "run_id")?;
    let run = state.store.get_run(&run_id).await?;
    send_under_root(&state, &run.info.artifact_uri, req.path).await
}

#[derive(Debug, Deserialize)]
struct VersionArtifact {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    version: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    path: Option<String>,
}

async fn get_model_version_artifact(
    State(state): State<AppState>,
    Req(req): Req<VersionArtifact>,
) -> ApiResult<Response> {
    let name = required_str(req.name, "name")?;
    let version = required_str(req.version, "version")?;
    let v = state.store.get_model_version(&name, &version).await?;
    send_under_root(&state, &v.storage_location, req.path).await
}

async fn upload(State(state): State<AppState>, uri: Uri, body: Body) -> ApiResult<Json<Value>> {
    let root = root(&state)?;
    let clean = path_from_uri(&uri)?;
    root.write(&clean, io_stream(body.into_data_stream())).await?;
    Ok(Json(json!({})))
}

async fn delete(State(state): State<AppState>, uri: Uri) -> ApiResult<Json<Value>> {
    let root = root(&state)?;
    let clean = path_from_uri(&uri)?;
    root.delete(&clean).await?;
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
    // A file, or nothing, lists as empty.
    let files = root.list(&clean, "").await?;
    if files.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "files": files })))
}

// === MLflow's proxied multipart upload ===
//
// `mpu/create/<dir>` with `{path, num_parts}` starts an upload of `<dir>/<file name of path>` and
// answers one presigned PUT URL per part; the client uploads the parts straight to the store and
// sends their ETags to `mpu/complete/<dir>` (or gives up with `mpu/abort/<dir>`). Only S3 hands
// out such URLs here; elsewhere the answer is the NOT_IMPLEMENTED message MLflow's client falls
// back from, to one streamed PUT.

#[derive(Debug, Deserialize)]
struct MultipartCreate {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    path: Option<String>,
    #[serde(default)]
    num_parts: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct MultipartPart {
    #[serde(default)]
    part_number: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    etag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MultipartComplete {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    path: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    upload_id: Option<String>,
    #[serde(default)]
    parts: Option<Vec<MultipartPart>>,
}

#[derive(Debug, Deserialize)]
struct MultipartAbort {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    path: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    upload_id: Option<String>,
}

/// `<dir>/<file name of path>` for a multipart request (the client sends its local file's path;
/// only the name counts, as upstream).
fn multipart_target(uri: &Uri, path: Option<String>) -> ApiResult<String> {
    let dir = crate::artifacts::mpu_path_from_uri(uri)?;
    let path = required_str(path, "path")?;
    let name = path.rsplit(['/', '\\']).next().unwrap_or_default();
    let name = clean_relative_path(name)?;
    if name.is_empty() {
        return Err(ApiError::invalid(format!(
            "Invalid value '{path}' for parameter 'path': it names no file."
        )));
    }
    Ok(format!("{dir}/{name}"))
}

async fn multipart_create(
    State(state): State<AppState>,
    uri: Uri,
    Req(req): Req<MultipartCreate>,
) -> ApiResult<Json<Value>> {
    let root = root(&state)?;
    let store = root.multipart()?;
    let target = multipart_target(&uri, req.path)?;
    let num_parts = req.num_parts.unwrap_or(1);
    let num_parts = u32::try_from(num_parts)
        .ok()
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid value {num_parts} for parameter 'num_parts': it must be between 1 and {MAX_PARTS}."
            ))
        })?;
    let created = store.create_multipart(&target, num_parts).await?;
    let credentials: Vec<Value> = created
        .parts
        .iter()
        .map(|(part, url)| json!({"url": url, "part_number": part, "headers": {}}))
        .collect();
    Ok(Json(
        json!({"upload_id": created.upload_id, "credentials": credentials}),
    ))
}

async fn multipart_complete(
    State(state): State<AppState>,
    uri: Uri,
    Req(req): Req<MultipartComplete>,
) -> ApiResult<Json<Value>> {
    let root = root(&state)?;
    let store = root.multipart()?;
    let target = multipart_target(&uri, req.path)?;
    let upload_id = required_str(req.upload_id, "upload_id")?;
    let parts = req
        .parts
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::invalid("Missing value for required parameter 'parts'."))?;
    let mut numbered = Vec::with_capacity(parts.len());
    for part in parts {
        let number = part
            .part_number
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_PARTS).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid value for parameter 'parts': every part needs a part_number between 1 and {MAX_PARTS}."
                ))
            })?;
        let etag = required_str(part.etag, "parts.etag")?;
        numbered.push((number, etag));
    }
    store.complete_multipart(&target, &upload_id, numbered).await?;
    Ok(Json(json!({})))
}

async fn multipart_abort(
    State(state): State<AppState>,
    uri: Uri,
    Req(req): Req<MultipartAbort>,
) -> ApiResult<Json<Value>> {
    let root = root(&state)?;
    let store = root.multipart()?;
    let target = multipart_target(&uri, req.path)?;
    let upload_id = required_str(req.upload_id, "upload_id")?;
    store.abort_multipart(&target, &upload_id).await?;
    Ok(Json(json!({})))
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
    list_under_root(&state, &run.info.artifact_uri, req.path.as_deref())
        .await
        .map(Json)
}

/// MLflow's `ListArtifacts` answer for `sub` below `root_uri`: `root_uri`, and `files` when the
/// directory lies behind this server's proxy and is not empty (artifacts kept elsewhere —
/// `s3://`, `gs://`, … — are listed by the client itself).
pub(crate) async fn list_under_root(state: &AppState, root_uri: &str, sub: Option<&str>) -> ApiResult<Value> {
    let sub = clean_relative_path(sub.unwrap_or(""))?;
    let Some(base) = proxied_path(root_uri) else {
        return Ok(json!({ "root_uri": root_uri }));
    };
    let base = clean_relative_path(base)?;
    let root = root(state)?;
    let dir = if sub.is_empty() {
        base
    } else if base.is_empty() {
        sub.clone()
    } else {
        format!("{base}/{sub}")
    };
    let files = root.list(&dir, &sub).await?;
    let mut body = json!({ "root_uri": root_uri });
    if !files.is_empty() {
        body["files"] = json!(files);
    }
    Ok(body)
}
