//! The 3.x client's logged models: create, get, finalize, tags, params, delete, search.

use axum::extract::{Path, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::experiments::KeyValue;
use super::{AppState, paging};
use crate::error::{ApiError, ApiResult};
use crate::store::{LoggedModelSearch, NewLoggedModel, Tag};
use crate::wire::{Req, lenient, required_str};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mlflow/logged-models", post(create))
        .route("/mlflow/logged-models/search", post(search))
        .route(
            "/mlflow/logged-models/{model_id}",
            get(get_model).patch(finalize).delete(delete_model),
        )
        .route("/mlflow/logged-models/{model_id}/tags", patch(set_tags))
        .route(
            "/mlflow/logged-models/{model_id}/tags/{key}",
            axum::routing::delete(delete_tag),
        )
        .route("/mlflow/logged-models/{model_id}/params", post(log_params))
        .route(
            "/mlflow/logged-models/{model_id}/artifacts/directories",
            get(list_artifacts),
        )
}

/// Routes upstream serves under `/ajax-api/2.0` only (the web UI's).
pub fn ajax_router() -> Router<AppState> {
    Router::new().route("/mlflow/logged-models/{model_id}/artifacts/files", get(get_artifact))
}

#[derive(Debug, Deserialize)]
struct ArtifactDirectory {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    artifact_directory_path: Option<String>,
}

async fn list_artifacts(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    Req(req): Req<ArtifactDirectory>,
) -> ApiResult<Json<Value>> {
    let model = state.store.get_logged_model(&model_id).await?;
    super::artifacts::list_under_root(&state, &model.info.artifact_uri, req.artifact_directory_path.as_deref())
        .await
        .map(Json)
}

#[derive(Debug, Deserialize)]
struct ArtifactFile {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    artifact_file_path: Option<String>,
}

async fn get_artifact(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    Req(req): Req<ArtifactFile>,
) -> ApiResult<axum::response::Response> {
    let path = required_str(req.artifact_file_path, "artifact_file_path")?;
    let model = state.store.get_logged_model(&model_id).await?;
    super::artifacts::send_under_root(&state, &model.info.artifact_uri, Some(path)).await
}

fn tags(kvs: Vec<KeyValue>, field: &str) -> ApiResult<Vec<Tag>> {
    kvs.into_iter().map(|kv| kv.into_tag(field)).collect()
}

#[derive(Debug, Deserialize)]
struct CreateLoggedModel {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    source_run_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    params: Vec<KeyValue>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValue>,
}

async fn create(State(state): State<AppState>, Req(req): Req<CreateLoggedModel>) -> ApiResult<Json<Value>> {
    let experiment_id = required_str(req.experiment_id, "experiment_id")?;
    let name = req
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(crate::names::random_run_name);
    let model = state
        .store
        .create_logged_model(NewLoggedModel {
            experiment_id,
            name,
            model_type: req.model_type.filter(|t| !t.is_empty()),
            source_run_id: req.source_run_id.filter(|r| !r.is_empty()),
            params: tags(req.params, "params")?,
            tags: tags(req.tags, "tags")?,
        })
        .await?;
    Ok(Json(json!({ "model": model })))
}

async fn get_model(State(state): State<AppState>, Path(model_id): Path<String>) -> ApiResult<Json<Value>> {
    let model = state.store.get_logged_model(&model_id).await?;
    Ok(Json(json!({ "model": model })))
}

#[derive(Debug, Deserialize)]
struct Finalize {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    status: Option<String>,
}

async fn finalize(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    Req(req): Req<Finalize>,
) -> ApiResult<Json<Value>> {
    let status = match required_str(req.status, "status")?.as_str() {
        "LOGGED_MODEL_READY" | "2" => "LOGGED_MODEL_READY",
        "LOGGED_MODEL_UPLOAD_FAILED" | "3" => "LOGGED_MODEL_UPLOAD_FAILED",
        "LOGGED_MODEL_PENDING" | "1" => "LOGGED_MODEL_PENDING",
        other => {
            return Err(ApiError::invalid(format!(
                "Invalid logged model status '{other}'. Valid values: LOGGED_MODEL_PENDING, LOGGED_MODEL_READY, \
                 LOGGED_MODEL_UPLOAD_FAILED"
            )));
        }
    };
    let model = state.store.finalize_logged_model(&model_id, status).await?;
    Ok(Json(json!({ "model": model })))
}

async fn delete_model(State(state): State<AppState>, Path(model_id): Path<String>) -> ApiResult<Json<Value>> {
    state.store.delete_logged_model(&model_id).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct KeyValues {
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValue>,
    #[serde(default, deserialize_with = "lenient::list")]
    params: Vec<KeyValue>,
}

async fn set_tags(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    Req(req): Req<KeyValues>,
) -> ApiResult<Json<Value>> {
    state
        .store
        .set_logged_model_tags(&model_id, &tags(req.tags, "tags")?)
        .await?;
    Ok(Json(json!({})))
}

async fn delete_tag(
    State(state): State<AppState>,
    Path((model_id, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state.store.delete_logged_model_tag(&model_id, &key).await?;
    Ok(Json(json!({})))
}

async fn log_params(
    State(state): State<AppState>,
    Path(model_id): Path<String>,
    Req(req): Req<KeyValues>,
) -> ApiResult<Json<Value>> {
    state
        .store
        .log_logged_model_params(&model_id, &tags(req.params, "params")?)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct SearchLoggedModels {
    #[serde(default, deserialize_with = "lenient::strings")]
    experiment_ids: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    page_token: Option<String>,
}

/// The logged-model filter subset the client uses: `attr = 'value'` joined by AND, on `name`,
/// `source_run_id`, `status`, `model_type`, `model_id`.
fn parse_filter(filter: &str) -> ApiResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    let text = filter.trim();
    if text.is_empty() {
        return Ok(out);
    }
    for part in split_and(text) {
        let (attr, value) = part
            .split_once('=')
            .ok_or_else(|| ApiError::invalid(format!("Invalid logged model filter clause: '{part}'")))?;
        let attr = attr
            .trim()
            .trim_start_matches("attributes.")
            .trim_start_matches("attribute.")
            .trim();
        if !["name", "source_run_id", "status", "model_type", "model_id"].contains(&attr) {
            return Err(ApiError::invalid(format!(
                "Unsupported logged model filter attribute: '{attr}'"
            )));
        }
        let value = value.trim();
        let unquoted = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .ok_or_else(|| {
                ApiError::invalid(format!("Logged model filter values must be quoted: '{part}'"))
            })?;
        out.push((attr.to_owned(), unquoted.to_owned()));
    }
    Ok(out)
}

/// Split on the keyword AND (any case, surrounded by whitespace) outside quotes.
fn split_and(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    let mut skip_until = 0;
    for (i, c) in text.char_indices() {
        if i < skip_until {
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => {
                let keyword = text.get(i..i + 3).is_some_and(|w| w.eq_ignore_ascii_case("and"));
                let space_after = text
                    .get(i + 3..)
                    .and_then(|r| r.chars().next())
                    .is_some_and(char::is_whitespace);
                if prev_space && keyword && space_after {
                    parts.push(&text[start..i]);
                    start = i + 3;
                    skip_until = i + 3;
                }
            }
        }
        prev_space = c.is_whitespace();
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

async fn search(State(state): State<AppState>, Req(req): Req<SearchLoggedModels>) -> ApiResult<Json<Value>> {
    let attributes = parse_filter(req.filter.as_deref().unwrap_or(""))?;
    let max_results = paging::max_results(req.max_results, 100, 1000)?;
    let offset = paging::decode(req.page_token.as_deref())?;
    let page = state
        .store
        .search_logged_models(&LoggedModelSearch {
            experiment_ids: req.experiment_ids,
            attributes,
            max_results,
            offset,
        })
        .await?;
    Ok(paging::page_body("models", page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_subset() {
        let f = parse_filter("source_run_id = 'abc' AND name = 'model'").unwrap();
        assert_eq!(
            f,
            vec![
                ("source_run_id".into(), "abc".into()),
                ("name".into(), "model".into())
            ]
        );
        assert_eq!(
            parse_filter("name = 'a and b'").unwrap(),
            vec![("name".into(), "a and b".into())]
        );
        assert!(parse_filter("name LIKE 'x'").is_err());
        assert!(parse_filter("params.x = 'y'").is_err());
        assert!(parse_filter("name = x").is_err());
    }
}
