//! Experiments: create, get, get-by-name, search, update, delete, restore, tags.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, paging};
use crate::error::{ApiError, ApiResult};
use crate::search;
use crate::store::{ExperimentSearch, LifecycleStage, Tag, ViewType};
use crate::validation;
use crate::wire::{Req, lenient, required_str};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mlflow/experiments/create", post(create))
        .route("/mlflow/experiments/get", get(get_experiment))
        .route("/mlflow/experiments/get-by-name", get(get_by_name))
        .route(
            "/mlflow/experiments/search",
            post(search_experiments).get(search_experiments),
        )
        .route("/mlflow/experiments/update", post(update))
        .route("/mlflow/experiments/delete", post(delete))
        .route("/mlflow/experiments/restore", post(restore))
        .route("/mlflow/experiments/set-experiment-tag", post(set_tag))
        .route("/mlflow/experiments/delete-experiment-tag", post(delete_tag))
}

/// Routes upstream serves under `/ajax-api/2.0` only (the web UI's).
pub fn ajax_router() -> Router<AppState> {
    Router::new().route("/mlflow/experiments/search-datasets", post(search_datasets))
}

/// Upstream's limits for `search-datasets`.
const MAX_DATASET_EXPERIMENTS: usize = 20;
const MAX_DATASET_SUMMARIES: u64 = 1000;

#[derive(Debug, Deserialize)]
struct SearchDatasets {
    #[serde(default, deserialize_with = "lenient::list")]
    experiment_ids: Vec<String>,
}

async fn search_datasets(
    State(state): State<AppState>,
    Req(req): Req<SearchDatasets>,
) -> ApiResult<Json<Value>> {
    if req.experiment_ids.is_empty() {
        return Err(ApiError::invalid(
            "SearchDatasets request must specify at least one experiment_id.",
        ));
    }
    if req.experiment_ids.len() > MAX_DATASET_EXPERIMENTS {
        return Err(ApiError::invalid(format!(
            "SearchDatasets request cannot specify more than {MAX_DATASET_EXPERIMENTS} experiment_ids. Received {} experiment_ids.",
            req.experiment_ids.len()
        )));
    }
    let summaries = state
        .store
        .search_datasets(&req.experiment_ids, MAX_DATASET_SUMMARIES)
        .await?;
    if summaries.is_empty() {
        return Ok(Json(json!({})));
    }
    Ok(Json(json!({ "dataset_summaries": summaries })))
}

/// A `{key, value}` pair as it arrives on the wire.
#[derive(Debug, Deserialize)]
pub struct KeyValue {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub value: Option<String>,
}

impl KeyValue {
    pub fn into_tag(self, field: &str) -> ApiResult<Tag> {
        Ok(Tag {
            key: required_str(self.key, &format!("{field}.key"))?,
            value: self.value.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Deserialize)]
struct CreateExperiment {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    artifact_location: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValue>,
}

async fn create(State(state): State<AppState>, Req(req): Req<CreateExperiment>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    validation::validate_experiment_name(&name)?;
    let location = req.artifact_location.filter(|l| !l.is_empty());
    if let Some(location) = &location {
        validation::validate_artifact_location(location)?;
    }
    let tags = req
        .tags
        .into_iter()
        .map(|t| t.into_tag("tags"))
        .collect::<ApiResult<Vec<_>>>()?;
    for tag in &tags {
        validation::validate_experiment_tag(tag)?;
    }
    let id = state
        .store
        .create_experiment(&name, location.as_deref(), &tags)
        .await?;
    Ok(Json(json!({ "experiment_id": id })))
}

#[derive(Debug, Deserialize)]
struct ExperimentId {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    experiment_id: Option<String>,
}

async fn get_experiment(
    State(state): State<AppState>,
    Req(req): Req<ExperimentId>,
) -> ApiResult<Json<Value>> {
    let id = required_str(req.experiment_id, "experiment_id")?;
    let experiment = state.store.get_experiment(&id).await?;
    Ok(Json(json!({ "experiment": experiment })))
}

#[derive(Debug, Deserialize)]
struct GetByName {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    experiment_name: Option<String>,
}

async fn get_by_name(State(state): State<AppState>, Req(req): Req<GetByName>) -> ApiResult<Json<Value>> {
    let name = required_str(req.experiment_name, "experiment_name")?;
    match state.store.get_experiment_by_name(&name).await? {
        Some(experiment) => Ok(Json(json!({ "experiment": experiment }))),
        None => Err(ApiError::not_found(format!(
            "Could not find experiment with name '{name}'"
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct SearchExperiments {
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    page_token: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::strings")]
    order_by: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    view_type: Option<String>,
}

async fn search_experiments(
    State(state): State<AppState>,
    Req(req): Req<SearchExperiments>,
) -> ApiResult<axum::response::Response> {
    let view = ViewType::parse(req.view_type.as_deref()).ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid view_type {:?}",
            req.view_type.unwrap_or_default()
        ))
    })?;
    let filter = paging::filter(req.filter.as_deref(), search::parse_experiment_filter)?;
    let order_by = paging::order_by(&req.order_by, search::parse_experiment_order_by)?;
    let max_results = paging::max_results(req.max_results, 1000, 50000)?;
    let offset = paging::decode(req.page_token.as_deref())?;
    let page = state
        .store
        .search_experiments(&ExperimentSearch {
            filter,
            view,
            order_by,
            max_results,
            offset,
        })
        .await?;
    Ok(paging::page_body("experiments", page))
}

#[derive(Debug, Deserialize)]
struct UpdateExperiment {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    new_name: Option<String>,
}

async fn update(State(state): State<AppState>, Req(req): Req<UpdateExperiment>) -> ApiResult<Json<Value>> {
    let id = required_str(req.experiment_id, "experiment_id")?;
    let new_name = required_str(req.new_name, "new_name")?;
    validation::validate_experiment_name(&new_name)?;
    state.store.rename_experiment(&id, &new_name).await?;
    Ok(Json(json!({})))
}

async fn delete(State(state): State<AppState>, Req(req): Req<ExperimentId>) -> ApiResult<Json<Value>> {
    let id = required_str(req.experiment_id, "experiment_id")?;
    state
        .store
        .set_experiment_lifecycle(&id, LifecycleStage::Deleted)
        .await?;
    Ok(Json(json!({})))
}

async fn restore(State(state): State<AppState>, Req(req): Req<ExperimentId>) -> ApiResult<Json<Value>> {
    let id = required_str(req.experiment_id, "experiment_id")?;
    state
        .store
        .set_experiment_lifecycle(&id, LifecycleStage::Active)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct ExperimentTag {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    value: Option<String>,
}

async fn set_tag(State(state): State<AppState>, Req(req): Req<ExperimentTag>) -> ApiResult<Json<Value>> {
    let id = required_str(req.experiment_id, "experiment_id")?;
    let tag = Tag {
        key: required_str(req.key, "key")?,
        value: req.value.unwrap_or_default(),
    };
    validation::validate_experiment_tag(&tag)?;
    state.store.set_experiment_tag(&id, &tag).await?;
    Ok(Json(json!({})))
}

async fn delete_tag(State(state): State<AppState>, Req(req): Req<ExperimentTag>) -> ApiResult<Json<Value>> {
    let id = required_str(req.experiment_id, "experiment_id")?;
    let key = required_str(req.key, "key")?;
    state.store.delete_experiment_tag(&id, &key).await?;
    Ok(Json(json!({})))
}
