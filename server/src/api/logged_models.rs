//! The 3.x client's logged models: create, get, finalize, tags, params, delete, search.

use axum::extract::{Path, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::experiments::KeyValue;
use super::{AppState, paging};
use crate::error::{ApiError, ApiResult};
use crate::store::{DatasetRef, LoggedModelOrder, LoggedModelSearch, NewLoggedModel, Tag};
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
    Router::new().route(
        "/mlflow/logged-models/{model_id}/artifacts/files",
        get(get_artifact),
    )
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
    super::artifacts::list_under_root(
        &state,
        &model.info.artifact_uri,
        req.artifact_directory_path.as_deref(),
    )
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
    #[serde(default, deserialize_with = "lenient::list")]
    datasets: Vec<WireDataset>,
    #[serde(default, deserialize_with = "lenient::list")]
    order_by: Vec<WireOrder>,
}

/// `{dataset_name, dataset_digest}` of a logged-model search.
#[derive(Debug, Deserialize)]
struct WireDataset {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    dataset_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    dataset_digest: Option<String>,
}

impl WireDataset {
    fn into_ref(self, field: &str) -> ApiResult<DatasetRef> {
        Ok(DatasetRef {
            name: required_str(self.dataset_name, field)?,
            digest: self.dataset_digest.filter(|d| !d.is_empty()),
        })
    }
}

/// `{field_name, ascending, dataset_name, dataset_digest}`: one sort key of a logged-model search.
#[derive(Debug, Deserialize)]
struct WireOrder {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    field_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    ascending: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    dataset_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    dataset_digest: Option<String>,
}

async fn search(
    State(state): State<AppState>,
    Req(req): Req<SearchLoggedModels>,
) -> ApiResult<axum::response::Response> {
    let filter = paging::filter(req.filter.as_deref(), crate::search::parse_logged_model_filter)?;
    paging::check_order_by_count(req.order_by.len())?;
    if req.datasets.len() > paging::MAX_FILTER_VALUES {
        return Err(ApiError::invalid(format!(
            "A search may name at most {} datasets; this one names {}.",
            paging::MAX_FILTER_VALUES,
            req.datasets.len()
        )));
    }
    let datasets = req
        .datasets
        .into_iter()
        .map(|d| d.into_ref("datasets.dataset_name"))
        .collect::<ApiResult<Vec<_>>>()?;
    let order_by = req
        .order_by
        .into_iter()
        .map(|o| {
            let field = required_str(o.field_name, "order_by.field_name")?;
            let field = crate::search::parse_logged_model_order_field(&field)
                .map_err(|e| ApiError::invalid(e.to_string()))?;
            let dataset = match o.dataset_name.filter(|n| !n.is_empty()) {
                Some(name) => Some(DatasetRef {
                    name,
                    digest: o.dataset_digest.filter(|d| !d.is_empty()),
                }),
                None => None,
            };
            Ok(LoggedModelOrder {
                field,
                ascending: o.ascending.unwrap_or(true),
                dataset,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let max_results = paging::max_results(req.max_results, 100, 1000)?;
    let offset = paging::decode(req.page_token.as_deref())?;
    let page = state
        .store
        .search_logged_models(&LoggedModelSearch {
            experiment_ids: paging::ids("experiment_ids", req.experiment_ids)?,
            filter,
            datasets,
            order_by,
            max_results,
            offset,
        })
        .await?;
    Ok(paging::page_body("models", page))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::search::{Comparator, Value, parse_logged_model_filter};

    #[test]
    fn filters_use_the_search_grammar() {
        let f = parse_logged_model_filter("source_run_id = 'abc' AND name = 'a and b'").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].value, Value::String("a and b".into()));
        // What MLflow 3's run page sends.
        let f = parse_logged_model_filter("attributes.model_id IN ('m-1','m-2')").unwrap();
        assert_eq!(f[0].comparator, Comparator::In);
        assert_eq!(f[0].value, Value::List(vec!["m-1".into(), "m-2".into()]));
        let f =
            parse_logged_model_filter("metrics.rmse < 0.5 AND params.C = '1' AND tags.team = 'a'").unwrap();
        assert_eq!(f.len(), 3);
        assert!(parse_logged_model_filter("datasets.name = 'y'").is_err());
        // What MLflow 3's runs table orders by.
        let o = crate::search::parse_logged_model_order_field("creation_time").unwrap();
        assert_eq!(o.key, "creation_timestamp");
        assert!(parse_logged_model_filter("name = x").is_err());
        assert!(parse_logged_model_filter("nonsense = 'x'").is_err());
    }
}
