//! The monitoring endpoints, mounted under `/api/2.0` and `/ajax-api/2.0`:
//!
//! | method | path | body / query | answer |
//! | --- | --- | --- | --- |
//! | POST | `/mlkube/predictions/log-batch` | `{"predictions": [{request_id, model_name, model_version, timestamp, inputs, outputs}]}` | `{}` |
//! | POST | `/mlkube/ground-truth/log-batch` | `{"ground_truth": [{request_id, actual, timestamp}]}` | `{}` |
//! | GET | `/mlkube/quality/get` | `model_name, model_version, window, task, score_field, positive_label, threshold, end_time, drift` | `{"quality": {...}}` |
//! | POST | `/mlkube/monitors/create` | a monitor | `{"monitor": {...}}` |
//! | GET | `/mlkube/monitors/list` | `model_name` (optional) | `{"monitors": [...]}` |
//! | GET | `/mlkube/monitors/get` | `monitor_id` or `name` | `{"monitor": {...}}` |
//! | PATCH | `/mlkube/monitors/update` | `monitor_id` and the fields to change | `{"monitor": {...}}` |
//! | DELETE | `/mlkube/monitors/delete` | `monitor_id` or `name` (body or query) | `{}` |
//! | POST | `/mlkube/monitors/evaluate` | `monitor_id` (optional: all) | `{"monitors": [...]}` |
//! | POST | `/mlkube/drift/reference/set` | `{model_name, model_version, inputs: [...]}` | `{"reference": {...}}` |
//! | GET | `/mlkube/drift/reference/get` | `model_name, model_version` | `{"reference": {...}}` |
//! | DELETE | `/mlkube/drift/reference/delete` | `model_name, model_version` | `{}` |
//!
//! Every batch is validated whole before anything is written, then written in one transaction:
//! a bad item answers 400 and stores nothing.

use std::collections::{BTreeMap, HashSet};

use axum::body::Bytes;
use axum::extract::{FromRequest, RawQuery, Request, State};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::quality::monitors::{AlertState, Direction, Monitor, MonitorMetric, evaluation_time};
use crate::quality::payload::{first_number, is_json_pointer};
use crate::quality::scores::Bins;
use crate::quality::store::{NewLabel, NewPrediction, StoredReference};
use crate::quality::webhook::check_url;
use crate::quality::windows::Window;
use crate::quality::{QualityQuery, ScoreSpec, Task, parse_number, reference_from_inputs};
use crate::store::now_ms;
use crate::wire::{
    Req, body_rejection, from_value, lenient, query_to_json, require_json_content_type, required_str,
};

/// Longest request id, model name, model version or monitor name.
pub const MAX_NAME_LENGTH: usize = 256;
/// Longest ground-truth label given as a string.
pub const MAX_LABEL_LENGTH: usize = 1024;
/// Longest webhook URL or score field.
pub const MAX_URL_LENGTH: usize = 2048;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mlkube/predictions/log-batch", post(log_predictions))
        .route("/mlkube/ground-truth/log-batch", post(log_ground_truth))
        .route("/mlkube/quality/get", get(get_quality))
        .route("/mlkube/monitors/create", post(create_monitor))
        .route("/mlkube/monitors/list", get(list_monitors))
        .route("/mlkube/monitors/get", get(get_monitor))
        .route("/mlkube/monitors/update", patch(update_monitor))
        .route("/mlkube/monitors/delete", delete(delete_monitor))
        .route("/mlkube/monitors/evaluate", post(evaluate_monitors))
        .route("/mlkube/drift/reference/set", post(set_reference))
        .route("/mlkube/drift/reference/get", get(get_reference))
        .route("/mlkube/drift/reference/delete", delete(delete_reference))
}

/// A JSON body decoded straight from its bytes (not through `serde_json::Value`), so payloads kept
/// as raw JSON keep their text — and their key order — exactly as sent.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        decode_body(&bytes).map(JsonBody)
    }
}

fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let trimmed = bytes.trim_ascii();
    let malformed = |err: serde_json::Error| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("Malformed JSON in request body: {err}"),
        )
    };
    let decode = |text: &[u8]| -> ApiResult<T> {
        serde_json::from_slice(text).map_err(|err| match err.classify() {
            serde_json::error::Category::Data => ApiError::invalid(format!("Invalid request body: {err}")),
            _ => malformed(err),
        })
    };
    if trimmed.is_empty() {
        return decode(b"{}");
    }
    if trimmed.first() == Some(&b'"') {
        // A JSON string holding the JSON body (some clients double-encode).
        let inner: String = serde_json::from_slice(trimmed).map_err(malformed)?;
        return decode(inner.as_bytes());
    }
    if trimmed.first() != Some(&b'{') {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "The request body must be a JSON object.",
        ));
    }
    decode(trimmed)
}

fn check_name(value: Option<String>, field: &str) -> ApiResult<String> {
    let value = required_str(value, field)?;
    if value.chars().count() > MAX_NAME_LENGTH {
        return Err(ApiError::invalid(format!(
            "'{field}' is longer than {MAX_NAME_LENGTH} characters."
        )));
    }
    Ok(value)
}

fn check_timestamp(value: Option<i64>, field: &str, now: i64) -> ApiResult<i64> {
    match value {
        None => Ok(now),
        Some(t) if t >= 0 => Ok(t),
        Some(t) => Err(ApiError::invalid(format!(
            "Invalid value {t} for parameter '{field}': timestamps are milliseconds since the epoch."
        ))),
    }
}

fn check_batch_size(len: usize, max: usize, what: &str) -> ApiResult<()> {
    if len > max {
        return Err(ApiError::invalid(format!(
            "A batch holds at most {max} {what}; this one has {len} (--monitoring-max-batch-size)."
        )));
    }
    Ok(())
}

// === predictions ===

#[derive(Debug, Deserialize)]
struct LogPredictions {
    #[serde(default)]
    predictions: Option<Vec<PredictionIn>>,
}

#[derive(Debug, Deserialize)]
struct PredictionIn {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    request_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_version: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    timestamp: Option<i64>,
    #[serde(default)]
    inputs: Option<Box<RawValue>>,
    #[serde(default)]
    outputs: Option<Box<RawValue>>,
}

fn validate_prediction(i: usize, p: PredictionIn, max_payload: usize, now: i64) -> ApiResult<NewPrediction> {
    let field = |name: &str| format!("predictions[{i}].{name}");
    let request_id = check_name(p.request_id, &field("request_id"))?;
    let model_name = check_name(p.model_name, &field("model_name"))?;
    let model_version = check_name(p.model_version, &field("model_version"))?;
    let timestamp = check_timestamp(p.timestamp, &field("timestamp"), now)?;
    let outputs = p.outputs.ok_or_else(|| ApiError::missing(&field("outputs")))?;
    let inputs = p.inputs.map_or_else(|| "null".to_owned(), |r| r.get().to_owned());
    let size = inputs.len() + outputs.get().len();
    if size > max_payload {
        return Err(ApiError::invalid(format!(
            "predictions[{i}] (request_id '{request_id}'): inputs and outputs take {size} bytes, more than \
             the limit of {max_payload} bytes (--monitoring-max-payload-bytes)."
        )));
    }
    Ok(NewPrediction {
        score: first_number(outputs.get()),
        outputs: outputs.get().to_owned(),
        request_id,
        model_name,
        model_version,
        timestamp,
        inputs,
    })
}

async fn log_predictions(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<LogPredictions>,
) -> ApiResult<Json<Value>> {
    let monitoring = &state.monitoring;
    let settings = monitoring.settings();
    let items = req.predictions.ok_or_else(|| ApiError::missing("predictions"))?;
    check_batch_size(items.len(), settings.max_batch_size, "predictions")?;
    let now = now_ms();
    let mut seen = HashSet::with_capacity(items.len());
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let row = validate_prediction(i, item, settings.max_payload_bytes, now)?;
        // The first of a request id wins, within a batch as across batches.
        if seen.insert(row.request_id.clone()) {
            rows.push(row);
        }
    }
    let inserted = monitoring.store().log_predictions(&rows, now).await?;
    tracing::debug!(received = rows.len(), inserted, "predictions logged");
    Ok(Json(json!({})))
}

// === ground truth ===

#[derive(Debug, Deserialize)]
struct LogGroundTruth {
    #[serde(default)]
    ground_truth: Option<Vec<LabelIn>>,
}

#[derive(Debug, Deserialize)]
struct LabelIn {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    request_id: Option<String>,
    #[serde(default)]
    actual: Option<Value>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    timestamp: Option<i64>,
}

fn validate_label(i: usize, l: LabelIn, now: i64) -> ApiResult<NewLabel> {
    let field = |name: &str| format!("ground_truth[{i}].{name}");
    let request_id = check_name(l.request_id, &field("request_id"))?;
    let timestamp = check_timestamp(l.timestamp, &field("timestamp"), now)?;
    let (actual, actual_number) = match l.actual {
        None => return Err(ApiError::missing(&field("actual"))),
        Some(Value::Number(n)) => (n.to_string(), n.as_f64().filter(|v| v.is_finite())),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(ApiError::invalid(format!(
                "'{}' must not be empty.",
                field("actual")
            )));
        }
        Some(Value::String(s)) if s.chars().count() > MAX_LABEL_LENGTH => {
            return Err(ApiError::invalid(format!(
                "'{}' is longer than {MAX_LABEL_LENGTH} characters.",
                field("actual")
            )));
        }
        Some(Value::String(s)) => {
            let number = parse_number(&s);
            (s, number)
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Invalid value {other} for parameter '{}': the label must be a number or a string.",
                field("actual")
            )));
        }
    };
    Ok(NewLabel {
        request_id,
        actual,
        actual_number,
        timestamp,
    })
}

async fn log_ground_truth(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<LogGroundTruth>,
) -> ApiResult<Json<Value>> {
    let monitoring = &state.monitoring;
    let items = req
        .ground_truth
        .ok_or_else(|| ApiError::missing("ground_truth"))?;
    check_batch_size(items.len(), monitoring.settings().max_batch_size, "labels")?;
    let now = now_ms();
    let mut seen = HashSet::with_capacity(items.len());
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let row = validate_label(i, item, now)?;
        if seen.insert(row.request_id.clone()) {
            rows.push(row);
        }
    }
    let inserted = monitoring.store().log_ground_truth(&rows, now).await?;
    tracing::debug!(received = rows.len(), inserted, "ground truth logged");
    Ok(Json(json!({})))
}

// === quality ===

#[derive(Debug, Deserialize)]
struct QualityParams {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_version: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    window: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    task: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    score_field: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    positive_label: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    threshold: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    end_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    drift: Option<bool>,
}

pub const DEFAULT_WINDOW: &str = "1h";

fn parse_window(text: Option<&str>) -> ApiResult<Window> {
    Window::parse(text.filter(|w| !w.is_empty()).unwrap_or(DEFAULT_WINDOW))
        .map_err(|e| ApiError::invalid(e.to_string()))
}

fn parse_score_field(field: Option<String>) -> ApiResult<Option<String>> {
    match field.filter(|f| !f.is_empty()) {
        None => Ok(None),
        Some(f) if f.len() > MAX_URL_LENGTH || !is_json_pointer(&f) => Err(ApiError::invalid(format!(
            "Invalid score_field '{f}': it must be a JSON pointer into the outputs, such as /predictions/0."
        ))),
        Some(f) => Ok(Some(f)),
    }
}

fn parse_decision_threshold(value: Option<f64>, field: &str) -> ApiResult<Option<f64>> {
    match value {
        Some(t) if !t.is_finite() => Err(ApiError::invalid(format!(
            "Invalid value {t} for parameter '{field}': it must be a finite number."
        ))),
        other => Ok(other),
    }
}

fn optional(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

async fn get_quality(State(state): State<AppState>, Req(p): Req<QualityParams>) -> ApiResult<Json<Value>> {
    let model_name = check_name(p.model_name, "model_name")?;
    let window = parse_window(p.window.as_deref())?;
    let task = match optional(p.task) {
        None => Task::Classification,
        Some(t) => Task::parse(&t).ok_or_else(|| {
            ApiError::invalid(format!("Invalid task '{t}': use classification or regression."))
        })?,
    };
    let query = QualityQuery {
        model_name,
        model_version: optional(p.model_version),
        window,
        end_time: p.end_time.unwrap_or_else(now_ms),
        task,
        score: ScoreSpec::new(
            parse_score_field(p.score_field)?,
            p.positive_label.as_deref(),
            parse_decision_threshold(p.threshold, "threshold")?,
        ),
        quality: true,
        drift: p.drift.unwrap_or(false),
    };
    let report = state.monitoring.quality(&query).await?;
    Ok(Json(json!({ "quality": report })))
}

// === monitors ===

#[derive(Debug, Deserialize, Default)]
struct MonitorFields {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_version: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    metric: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    window: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    threshold: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    direction: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    score_field: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    positive_label: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    decision_threshold: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    min_samples: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    webhook_url: Option<String>,
}

fn parse_metric(text: &str) -> ApiResult<MonitorMetric> {
    MonitorMetric::parse(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid metric '{text}'. Expected one of {}.",
            MonitorMetric::expected()
        ))
    })
}

fn parse_direction(text: &str) -> ApiResult<Direction> {
    Direction::parse(text)
        .ok_or_else(|| ApiError::invalid(format!("Invalid direction '{text}': use above or below.")))
}

fn parse_threshold(value: f64) -> ApiResult<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "Invalid value {value} for parameter 'threshold': it must be a finite number."
        )))
    }
}

fn parse_min_samples(value: i64) -> ApiResult<i64> {
    if value >= 1 {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "Invalid value {value} for parameter 'min_samples': it must be at least 1."
        )))
    }
}

fn parse_webhook(url: Option<String>, allow_private: bool) -> ApiResult<Option<String>> {
    match optional(url) {
        None => Ok(None),
        Some(u) if u.len() > MAX_URL_LENGTH => Err(ApiError::invalid(format!(
            "'webhook_url' is longer than {MAX_URL_LENGTH} characters."
        ))),
        Some(u) => {
            check_url(&u, allow_private)
                .map_err(|e| ApiError::invalid(format!("Invalid webhook_url: {e}")))?;
            Ok(Some(u))
        }
    }
}

fn check_positive_label(label: Option<String>) -> ApiResult<Option<String>> {
    match optional(label) {
        Some(l) if l.chars().count() > MAX_LABEL_LENGTH => Err(ApiError::invalid(format!(
            "'positive_label' is longer than {MAX_LABEL_LENGTH} characters."
        ))),
        other => Ok(other),
    }
}

async fn create_monitor(State(state): State<AppState>, Req(f): Req<MonitorFields>) -> ApiResult<Json<Value>> {
    let monitoring = &state.monitoring;
    let name = check_name(f.name, "name")?;
    let model_name = check_name(f.model_name, "model_name")?;
    let model_version = match optional(f.model_version) {
        Some(v) => Some(check_name(Some(v), "model_version")?),
        None => None,
    };
    let metric_text = required_str(f.metric, "metric")?;
    let metric = parse_metric(&metric_text)?;
    let window = parse_window(Some(&required_str(f.window, "window")?))?;
    let threshold = parse_threshold(f.threshold.ok_or_else(|| ApiError::missing("threshold"))?)?;
    let direction = match optional(f.direction) {
        Some(d) => parse_direction(&d)?,
        None => Direction::default_for(&metric),
    };
    let now = now_ms();
    let monitor = Monitor {
        monitor_id: uuid::Uuid::new_v4().simple().to_string(),
        name,
        model_name,
        model_version,
        metric: metric_text,
        window: window.label().to_owned(),
        threshold,
        direction,
        score_field: parse_score_field(f.score_field)?,
        positive_label: check_positive_label(f.positive_label)?,
        decision_threshold: parse_decision_threshold(f.decision_threshold, "decision_threshold")?,
        min_samples: parse_min_samples(f.min_samples.unwrap_or(1))?,
        webhook_url: parse_webhook(f.webhook_url, monitoring.settings().webhook.allow_private)?,
        state: AlertState::Ok,
        state_since: now,
        last_value: None,
        last_evaluated: None,
        creation_timestamp: now,
        last_updated_timestamp: now,
        revision: 0,
    };
    monitoring.store().create_monitor(&monitor).await?;
    tracing::info!(monitor_id = %monitor.monitor_id, monitor = %monitor.name, "monitor created");
    Ok(Json(json!({ "monitor": monitor })))
}

#[derive(Debug, Deserialize, Default)]
struct MonitorRef {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    monitor_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
}

async fn find_monitor(state: &AppState, r: MonitorRef) -> ApiResult<Monitor> {
    let store = state.monitoring.store();
    match (optional(r.monitor_id), optional(r.name)) {
        (Some(id), _) => Ok(store.get_monitor(&id).await?),
        (None, Some(name)) => Ok(store.get_monitor_by_name(&name).await?),
        (None, None) => Err(ApiError::missing("monitor_id")),
    }
}

async fn get_monitor(State(state): State<AppState>, Req(r): Req<MonitorRef>) -> ApiResult<Json<Value>> {
    let monitor = find_monitor(&state, r).await?;
    Ok(Json(json!({ "monitor": monitor })))
}

#[derive(Debug, Deserialize)]
struct ListMonitors {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_name: Option<String>,
}

async fn list_monitors(State(state): State<AppState>, Req(r): Req<ListMonitors>) -> ApiResult<Json<Value>> {
    let filter = optional(r.model_name);
    let monitors = state.monitoring.store().list_monitors(filter.as_deref()).await?;
    Ok(Json(json!({ "monitors": monitors })))
}

#[derive(Debug, Deserialize)]
struct UpdateMonitor {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    monitor_id: Option<String>,
    #[serde(flatten)]
    fields: MonitorFields,
}

/// Apply an update's fields to `m`; empty strings clear the optional ones (`model_version`,
/// `score_field`, `positive_label`, `webhook_url`).
fn apply_update(m: &mut Monitor, f: MonitorFields, allow_private: bool) -> ApiResult<()> {
    if let Some(name) = f.name {
        m.name = check_name(Some(name), "name")?;
    }
    if let Some(model) = f.model_name {
        m.model_name = check_name(Some(model), "model_name")?;
    }
    if let Some(version) = f.model_version {
        m.model_version = match optional(Some(version)) {
            Some(v) => Some(check_name(Some(v), "model_version")?),
            None => None,
        };
    }
    if let Some(text) = f.metric {
        let metric = parse_metric(&text)?;
        if text != m.metric && f.direction.is_none() {
            m.direction = Direction::default_for(&metric);
        }
        m.metric = text;
    }
    if let Some(window) = f.window {
        m.window = parse_window(Some(&window))?.label().to_owned();
    }
    if let Some(threshold) = f.threshold {
        m.threshold = parse_threshold(threshold)?;
    }
    if let Some(direction) = optional(f.direction) {
        m.direction = parse_direction(&direction)?;
    }
    if let Some(field) = f.score_field {
        m.score_field = parse_score_field(Some(field))?;
    }
    if let Some(label) = f.positive_label {
        m.positive_label = check_positive_label(Some(label))?;
    }
    if let Some(t) = parse_decision_threshold(f.decision_threshold, "decision_threshold")? {
        m.decision_threshold = Some(t);
    }
    if let Some(n) = f.min_samples {
        m.min_samples = parse_min_samples(n)?;
    }
    if let Some(url) = f.webhook_url {
        m.webhook_url = parse_webhook(Some(url), allow_private)?;
    }
    Ok(())
}

async fn update_monitor(
    State(state): State<AppState>,
    Req(req): Req<UpdateMonitor>,
) -> ApiResult<Json<Value>> {
    let monitoring = &state.monitoring;
    let id = required_str(req.monitor_id, "monitor_id")?;
    let mut monitor = monitoring.store().get_monitor(&id).await?;
    let identity = |m: &Monitor| {
        (
            m.model_name.clone(),
            m.model_version.clone(),
            m.metric.clone(),
            m.window.clone(),
        )
    };
    let before = identity(&monitor);
    apply_update(
        &mut monitor,
        req.fields,
        monitoring.settings().webhook.allow_private,
    )?;
    let now = now_ms();
    if identity(&monitor) != before {
        // A different question: its alert starts over.
        monitor.state = AlertState::Ok;
        monitor.state_since = now;
        monitor.last_value = None;
        monitor.last_evaluated = None;
    }
    monitor.revision += 1;
    monitor.last_updated_timestamp = now;
    monitoring.store().update_monitor(&monitor).await?;
    // Its labels may have changed: the next evaluation exports it afresh.
    monitoring.exporter_remove(&monitor.monitor_id);
    Ok(Json(json!({ "monitor": monitor })))
}

/// The monitor named by the body, or else by the query string (`DELETE …?monitor_id=`).
fn ref_from(body: MonitorRef, query: Option<String>) -> ApiResult<MonitorRef> {
    if optional(body.monitor_id.clone()).is_some() || optional(body.name.clone()).is_some() {
        return Ok(body);
    }
    from_value(query_to_json(query.as_deref().unwrap_or("")))
}

async fn delete_monitor(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    Req(body): Req<MonitorRef>,
) -> ApiResult<Json<Value>> {
    let monitor = find_monitor(&state, ref_from(body, query)?).await?;
    state
        .monitoring
        .store()
        .delete_monitor(&monitor.monitor_id)
        .await?;
    state.monitoring.exporter_remove(&monitor.monitor_id);
    tracing::info!(monitor_id = %monitor.monitor_id, monitor = %monitor.name, "monitor deleted");
    Ok(Json(json!({})))
}

async fn evaluate_monitors(State(state): State<AppState>, Req(r): Req<MonitorRef>) -> ApiResult<Json<Value>> {
    let monitoring = &state.monitoring;
    let now = evaluation_time();
    let monitors = if optional(r.monitor_id.clone()).is_some() || optional(r.name.clone()).is_some() {
        let monitor = find_monitor(&state, r).await?;
        vec![monitoring.evaluate_monitor(&monitor.monitor_id, now).await?]
    } else {
        monitoring.evaluate_all(now).await?
    };
    Ok(Json(json!({ "monitors": monitors })))
}

// === drift references ===

#[derive(Debug, Deserialize)]
struct SetReference {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_version: Option<String>,
    #[serde(default)]
    inputs: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
struct ReferenceRef {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_version: Option<String>,
}

fn reference_json(r: &StoredReference) -> Value {
    let features: BTreeMap<&String, &Bins> = r.features.iter().collect();
    let mut body = json!({
        "model_name": r.model_name,
        "source": r.source,
        "rows": r.rows,
        "creation_timestamp": r.creation_time,
        "features": features,
    });
    if !r.model_version.is_empty() {
        body["model_version"] = json!(r.model_version);
    }
    body
}

async fn set_reference(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<SetReference>,
) -> ApiResult<Json<Value>> {
    let model_name = check_name(req.model_name, "model_name")?;
    let model_version = optional(req.model_version).unwrap_or_default();
    if model_version.chars().count() > MAX_NAME_LENGTH {
        return Err(ApiError::invalid(format!(
            "'model_version' is longer than {MAX_NAME_LENGTH} characters."
        )));
    }
    let inputs = req.inputs.ok_or_else(|| ApiError::missing("inputs"))?;
    let (features, rows) = reference_from_inputs(inputs.iter());
    if features.is_empty() {
        return Err(ApiError::invalid(
            "The reference inputs hold no numeric features (see the README for the input shapes understood).",
        ));
    }
    let reference = StoredReference {
        model_name,
        model_version,
        source: "uploaded".to_owned(),
        rows,
        features,
        creation_time: now_ms(),
    };
    state.monitoring.store().put_reference(&reference, true).await?;
    Ok(Json(json!({ "reference": reference_json(&reference) })))
}

fn reference_missing(model_name: &str, version: &str) -> ApiError {
    let which = if version.is_empty() {
        "all versions".to_owned()
    } else {
        format!("version '{version}'")
    };
    ApiError::not_found(format!(
        "No drift reference stored for model '{model_name}' ({which})."
    ))
}

async fn get_reference(State(state): State<AppState>, Req(r): Req<ReferenceRef>) -> ApiResult<Json<Value>> {
    let model_name = check_name(r.model_name, "model_name")?;
    let version = optional(r.model_version).unwrap_or_default();
    match state
        .monitoring
        .store()
        .get_reference(&model_name, &version)
        .await?
    {
        Some(reference) => Ok(Json(json!({ "reference": reference_json(&reference) }))),
        None => Err(reference_missing(&model_name, &version)),
    }
}

async fn delete_reference(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    Req(body): Req<ReferenceRef>,
) -> ApiResult<Json<Value>> {
    let r = if body.model_name.is_some() {
        body
    } else {
        from_value(query_to_json(query.as_deref().unwrap_or("")))?
    };
    let model_name = check_name(r.model_name, "model_name")?;
    let version = optional(r.model_version).unwrap_or_default();
    if state
        .monitoring
        .store()
        .delete_reference(&model_name, &version)
        .await?
    {
        Ok(Json(json!({})))
    } else {
        Err(reference_missing(&model_name, &version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_decode_raw_payloads_verbatim() {
        let body = br#"{"predictions": [{"request_id": "r1", "model_name": "m", "model_version": 3,
            "timestamp": "17", "inputs": {"b": 1, "a": 2}, "outputs": {"probability": 0.8, "label": 1}}]}"#;
        let req: LogPredictions = decode_body(body).unwrap();
        let p = validate_prediction(0, req.predictions.unwrap().remove(0), 1 << 20, 99).unwrap();
        assert_eq!(p.model_version, "3");
        assert_eq!(p.timestamp, 17);
        assert_eq!(p.inputs, r#"{"b": 1, "a": 2}"#);
        assert_eq!(p.score, Some(0.8));
    }

    #[test]
    fn bad_bodies() {
        assert_eq!(
            decode_body::<LogPredictions>(b"{").unwrap_err().code(),
            ErrorCode::BadRequest
        );
        assert_eq!(
            decode_body::<LogPredictions>(b"[1]").unwrap_err().code(),
            ErrorCode::BadRequest
        );
        let wrong_type = br#"{"predictions": [{"request_id": {"x": 1}}]}"#;
        assert_eq!(
            decode_body::<LogPredictions>(wrong_type).unwrap_err().code(),
            ErrorCode::InvalidParameterValue
        );
        let doubled: LogPredictions = decode_body(br#""{\"predictions\": []}""#).unwrap();
        assert!(doubled.predictions.unwrap().is_empty());
    }

    #[test]
    fn labels_are_numbers_or_strings() {
        let label = |actual: Value| LabelIn {
            request_id: Some("r".into()),
            actual: Some(actual),
            timestamp: Some(1),
        };
        let n = validate_label(0, label(json!(1)), 0).unwrap();
        assert_eq!((n.actual.as_str(), n.actual_number), ("1", Some(1.0)));
        let s = validate_label(0, label(json!("2.5")), 0).unwrap();
        assert_eq!(s.actual_number, Some(2.5));
        let cat = validate_label(0, label(json!("cat")), 0).unwrap();
        assert_eq!(cat.actual_number, None);
        for bad in [json!(true), json!([1]), json!({"a": 1}), json!("")] {
            assert!(validate_label(0, label(bad.clone()), 0).is_err(), "{bad}");
        }
    }
}
