//! Runs: create, get, update, delete, restore, search, and everything logged to a run (metrics,
//! params, tags, batches, models, inputs, outputs).

use std::collections::BTreeSet;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::experiments::KeyValue;
use super::{AppState, paging};
use crate::error::{ApiError, ApiResult};
use crate::names::random_run_name;
use crate::search;
use crate::store::{
    Dataset, DatasetInput, LifecycleStage, Metric, ModelInput, ModelLink, ModelOutput, NewRun, Param,
    RunSearch, RunStatus, RunUpdate, Tag, ViewType, now_ms,
};
use crate::validation::{self, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH};
use crate::wire::{Req, lenient, required, required_str};

pub const RUN_NAME_TAG: &str = "mlflow.runName";
const LOG_MODEL_HISTORY_TAG: &str = "mlflow.log-model.history";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mlflow/runs/create", post(create))
        .route("/mlflow/runs/get", get(get_run))
        .route("/mlflow/runs/update", post(update))
        .route("/mlflow/runs/delete", post(delete))
        .route("/mlflow/runs/restore", post(restore))
        .route("/mlflow/runs/search", post(search_runs))
        .route("/mlflow/runs/log-metric", post(log_metric))
        .route("/mlflow/runs/log-parameter", post(log_param))
        .route("/mlflow/runs/set-tag", post(set_tag))
        .route("/mlflow/runs/delete-tag", post(delete_tag))
        .route("/mlflow/runs/log-batch", post(log_batch))
        .route("/mlflow/runs/log-model", post(log_model))
        .route("/mlflow/runs/log-inputs", post(log_inputs))
        .route("/mlflow/runs/outputs", post(log_outputs))
}

/// `run_id`, or the deprecated `run_uuid`.
#[derive(Debug, Deserialize)]
struct RunRef {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_uuid: Option<String>,
}

impl RunRef {
    fn id(self) -> ApiResult<String> {
        required_str(self.run_id.filter(|s| !s.is_empty()).or(self.run_uuid), "run_id")
    }
}

fn tag_value(key: &str, value: Option<String>) -> String {
    validation::truncate_value("tag", key, value.unwrap_or_default(), MAX_TAG_VALUE_LENGTH)
}

fn run_tag(kv: KeyValue) -> ApiResult<Tag> {
    let key = required_str(kv.key, "tags.key")?;
    validation::validate_key("tag", &key)?;
    let value = tag_value(&key, kv.value);
    Ok(Tag { key, value })
}

#[derive(Debug, Deserialize)]
struct CreateRun {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    start_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValue>,
}

async fn create(State(state): State<AppState>, Req(req): Req<CreateRun>) -> ApiResult<Json<Value>> {
    let mut tags = req.tags.into_iter().map(run_tag).collect::<ApiResult<Vec<_>>>()?;
    let tagged_name = tags
        .iter()
        .rev()
        .find(|t| t.key == RUN_NAME_TAG)
        .map(|t| t.value.clone());
    let run_name = match (req.run_name.filter(|n| !n.is_empty()), tagged_name) {
        (Some(name), Some(tagged)) if name != tagged => {
            return Err(ApiError::invalid(format!(
                "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values \
                 (run_name='{name}', mlflow.runName='{tagged}')."
            )));
        }
        (Some(name), _) => name,
        (None, Some(tagged)) if !tagged.is_empty() => tagged,
        _ => random_run_name(),
    };
    tags.retain(|t| t.key != RUN_NAME_TAG);
    tags.push(Tag::new(RUN_NAME_TAG, run_name.clone()));
    let run = state
        .store
        .create_run(NewRun {
            experiment_id: req
                .experiment_id
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "0".to_owned()),
            user_id: req.user_id.unwrap_or_default(),
            run_name,
            start_time: req.start_time.unwrap_or_else(now_ms),
            tags,
        })
        .await?;
    Ok(Json(json!({ "run": run })))
}

async fn get_run(State(state): State<AppState>, Req(req): Req<RunRef>) -> ApiResult<Json<Value>> {
    let run = state.store.get_run(&req.id()?).await?;
    Ok(Json(json!({ "run": run })))
}

#[derive(Debug, Deserialize)]
struct UpdateRun {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    status: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    end_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_name: Option<String>,
}

async fn update(State(state): State<AppState>, Req(req): Req<UpdateRun>) -> ApiResult<Json<Value>> {
    let run_id = req.run.id()?;
    let status = match req.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            let valid: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::invalid(format!(
                "Invalid run status '{s}'. Valid values: {}",
                valid.join(", ")
            ))
        })?),
    };
    let run_info = state
        .store
        .update_run(
            &run_id,
            RunUpdate {
                status,
                end_time: req.end_time,
                run_name: req.run_name.filter(|n| !n.is_empty()),
            },
        )
        .await?;
    Ok(Json(json!({ "run_info": run_info })))
}

async fn delete(State(state): State<AppState>, Req(req): Req<RunRef>) -> ApiResult<Json<Value>> {
    state
        .store
        .set_run_lifecycle(&req.id()?, LifecycleStage::Deleted)
        .await?;
    Ok(Json(json!({})))
}

async fn restore(State(state): State<AppState>, Req(req): Req<RunRef>) -> ApiResult<Json<Value>> {
    state
        .store
        .set_run_lifecycle(&req.id()?, LifecycleStage::Active)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct SearchRuns {
    #[serde(default, deserialize_with = "lenient::strings")]
    experiment_ids: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_view_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::strings")]
    order_by: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    page_token: Option<String>,
}

async fn search_runs(
    State(state): State<AppState>,
    Req(req): Req<SearchRuns>,
) -> ApiResult<axum::response::Response> {
    let view = ViewType::parse(req.run_view_type.as_deref()).ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid run_view_type {:?}",
            req.run_view_type.clone().unwrap_or_default()
        ))
    })?;
    let filter = paging::filter(req.filter.as_deref(), search::parse_run_filter)?;
    let order_by = paging::order_by(&req.order_by, search::parse_run_order_by)?;
    let max_results = paging::max_results(req.max_results, 1000, 50000)?;
    let offset = paging::decode(req.page_token.as_deref())?;
    let page = state
        .store
        .search_runs(&RunSearch {
            experiment_ids: paging::ids("experiment_ids", req.experiment_ids)?,
            filter,
            view,
            order_by,
            max_results,
            offset,
        })
        .await?;
    Ok(paging::page_body("runs", page))
}

/// A metric as it arrives (log-metric body or a log-batch element).
#[derive(Debug, Deserialize)]
struct WireMetric {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    value: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    step: Option<i64>,
    /// MLflow 3: the logged model this metric is for, and the dataset it was computed on.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    dataset_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    dataset_digest: Option<String>,
}

impl WireMetric {
    fn into_metric(self, prefix: &str) -> ApiResult<Metric> {
        let mut metric = Metric::new(
            required_str(self.key, &format!("{prefix}key"))?,
            required(self.value, &format!("{prefix}value"))?,
            required(self.timestamp, &format!("{prefix}timestamp"))?,
            self.step.unwrap_or(0),
        );
        metric.model = self
            .model_id
            .filter(|id| !id.is_empty())
            .map(|model_id| ModelLink {
                model_id,
                dataset_name: self.dataset_name.filter(|s| !s.is_empty()),
                dataset_digest: self.dataset_digest.filter(|s| !s.is_empty()),
            });
        validation::validate_metric(&metric)?;
        Ok(metric)
    }
}

#[derive(Debug, Deserialize)]
struct LogMetric {
    #[serde(flatten)]
    run: RunRef,
    #[serde(flatten)]
    metric: WireMetric,
}

/// Every logged model the metrics name must exist. Asked before the batch is handed to the store,
/// which finds an unknown model only after writing the batch's metrics in its transaction: on
/// SQLite that failed transaction is rolled back after the store's writer lock is released, and a
/// concurrent write then fails with "database is locked" (a 500 caused by a client's typo).
async fn require_logged_models(state: &AppState, metrics: &[Metric]) -> ApiResult<()> {
    let ids: BTreeSet<&str> = metrics
        .iter()
        .filter_map(|m| m.model.as_ref())
        .map(|link| link.model_id.as_str())
        .collect();
    for id in ids {
        state.store.get_logged_model(id).await?;
    }
    Ok(())
}

async fn log_metric(State(state): State<AppState>, Req(req): Req<LogMetric>) -> ApiResult<Json<Value>> {
    let run_id = req.run.id()?;
    let metric = req.metric.into_metric("")?;
    let metrics = [metric];
    require_logged_models(&state, &metrics).await?;
    state.store.log_batch(&run_id, &metrics, &[], &[]).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct KeyValueOnRun {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    value: Option<String>,
}

fn param(key: Option<String>, value: Option<String>, field: &str) -> ApiResult<Param> {
    let key = required_str(key, field)?;
    validation::validate_key("param", &key)?;
    let value = validation::truncate_value("param", &key, value.unwrap_or_default(), MAX_PARAM_VALUE_LENGTH);
    Ok(Param { key, value })
}

async fn log_param(State(state): State<AppState>, Req(req): Req<KeyValueOnRun>) -> ApiResult<Json<Value>> {
    let run_id = req.run.id()?;
    let p = param(req.key, req.value, "key")?;
    state.store.log_batch(&run_id, &[], &[p], &[]).await?;
    Ok(Json(json!({})))
}

async fn set_tag(State(state): State<AppState>, Req(req): Req<KeyValueOnRun>) -> ApiResult<Json<Value>> {
    let run_id = req.run.id()?;
    let tag = run_tag(KeyValue {
        key: req.key,
        value: req.value,
    })?;
    state.store.log_batch(&run_id, &[], &[], &[tag]).await?;
    Ok(Json(json!({})))
}

async fn delete_tag(State(state): State<AppState>, Req(req): Req<KeyValueOnRun>) -> ApiResult<Json<Value>> {
    let run_id = req.run.id()?;
    let key = required_str(req.key, "key")?;
    state.store.delete_run_tag(&run_id, &key).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct LogBatch {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default, deserialize_with = "lenient::list")]
    metrics: Vec<WireMetric>,
    #[serde(default, deserialize_with = "lenient::list")]
    params: Vec<KeyValue>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValue>,
}

async fn log_batch(State(state): State<AppState>, Req(req): Req<LogBatch>) -> ApiResult<Json<Value>> {
    let run_id = req.run.id()?;
    validation::validate_batch_limits(req.metrics.len(), req.params.len(), req.tags.len())?;
    let metrics = req
        .metrics
        .into_iter()
        .map(|m| m.into_metric("metrics."))
        .collect::<ApiResult<Vec<_>>>()?;
    let params = req
        .params
        .into_iter()
        .map(|p| param(p.key, p.value, "params.key"))
        .collect::<ApiResult<Vec<_>>>()?;
    let tags = req.tags.into_iter().map(run_tag).collect::<ApiResult<Vec<_>>>()?;
    require_logged_models(&state, &metrics).await?;
    state.store.log_batch(&run_id, &metrics, &params, &tags).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct LogModel {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_json: Option<String>,
}

async fn log_model(State(state): State<AppState>, Req(req): Req<LogModel>) -> ApiResult<Json<Value>> {
    let run_id = req.run.id()?;
    let model_json = required_str(req.model_json, "model_json")?;
    let model: Value = serde_json::from_str(&model_json)
        .map_err(|e| ApiError::invalid(format!("Malformed model info: model_json is not JSON ({e})")))?;
    for field in ["artifact_path", "flavors", "utc_time_created", "run_id"] {
        if model.get(field).is_none() {
            return Err(ApiError::invalid(format!(
                "Model json is missing mandatory fields: ['{field}']"
            )));
        }
    }
    let run = state.store.get_run(&run_id).await?;
    let mut history: Vec<Value> = run
        .data
        .tags
        .iter()
        .find(|t| t.key == LOG_MODEL_HISTORY_TAG)
        .and_then(|t| serde_json::from_str(&t.value).ok())
        .unwrap_or_default();
    history.push(model);
    let value = serde_json::to_string(&history).map_err(ApiError::internal)?;
    // The history may outgrow the usual tag limit; it is MLflow's own bookkeeping tag.
    state
        .store
        .log_batch(&run_id, &[], &[], &[Tag::new(LOG_MODEL_HISTORY_TAG, value)])
        .await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct WireDataset {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    digest: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    source_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    source: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    schema: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    profile: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireDatasetInput {
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValue>,
    dataset: Option<WireDataset>,
}

#[derive(Debug, Deserialize)]
struct WireModelRef {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    step: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct LogInputs {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default, deserialize_with = "lenient::list")]
    datasets: Vec<WireDatasetInput>,
    #[serde(default, deserialize_with = "lenient::list")]
    models: Vec<WireModelRef>,
}

fn bounded(
    field: &str,
    value: Option<String>,
    max: usize,
    required_field: bool,
) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::invalid(format!(
            "'{field}' exceeds the maximum length of {max} characters."
        ))),
        None if required_field => Err(ApiError::missing(field)),
        other => Ok(other),
    }
}

async fn log_inputs(State(state): State<AppState>, Req(req): Req<LogInputs>) -> ApiResult<Json<Value>> {
    let run_id = req.run.id()?;
    if req.datasets.len() > validation::MAX_DATASETS_PER_BATCH {
        return Err(ApiError::invalid(format!(
            "A batch logging request can contain at most {} datasets. Got {}.",
            validation::MAX_DATASETS_PER_BATCH,
            req.datasets.len()
        )));
    }
    let mut datasets = Vec::with_capacity(req.datasets.len());
    for input in req.datasets {
        let d = required(input.dataset, "datasets.dataset")?;
        let tags = input
            .tags
            .into_iter()
            .map(|t| {
                let tag = t.into_tag("datasets.tags")?;
                bounded("datasets.tags.key", Some(tag.key.clone()), 255, true)?;
                bounded("datasets.tags.value", Some(tag.value.clone()), 500, true)?;
                Ok(tag)
            })
            .collect::<ApiResult<Vec<_>>>()?;
        let dataset = Dataset {
            name: bounded("dataset.name", d.name, 500, true)?.unwrap_or_default(),
            digest: bounded("dataset.digest", d.digest, 36, true)?.unwrap_or_default(),
            source_type: bounded("dataset.source_type", d.source_type, 36, true)?.unwrap_or_default(),
            source: bounded("dataset.source", d.source, 65535, true)?.unwrap_or_default(),
            schema: bounded("dataset.schema", d.schema, 1_048_575, false)?,
            profile: bounded("dataset.profile", d.profile, 16_777_215, false)?,
        };
        datasets.push(DatasetInput { tags, dataset });
    }
    let models = req
        .models
        .into_iter()
        .map(|m| {
            Ok(ModelInput {
                model_id: required_str(m.model_id, "models.model_id")?,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    state.store.log_inputs(&run_id, &datasets, &models).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct LogOutputs {
    #[serde(flatten)]
    run: RunRef,
    #[serde(default, deserialize_with = "lenient::list")]
    models: Vec<WireModelRef>,
}

async fn log_outputs(State(state): State<AppState>, Req(req): Req<LogOutputs>) -> ApiResult<Json<Value>> {
    let run_id = req.run.id()?;
    let models = req
        .models
        .into_iter()
        .map(|m| {
            Ok(ModelOutput {
                model_id: required_str(m.model_id, "models.model_id")?,
                step: m.step.unwrap_or(0),
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    state.store.log_outputs(&run_id, &models).await?;
    Ok(Json(json!({})))
}
