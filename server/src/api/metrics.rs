//! Metric history: paged get-history (server-side cap), get-history-bulk-interval, and the UI's
//! ajax-only get-history-bulk.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, paging};
use crate::error::{ApiError, ApiResult};
use crate::store::{BulkIntervalQuery, MetricWithRunId};
use crate::wire::{Req, lenient, required_str};

/// The most points one get-history page returns (what the MLflow client asks for per page).
pub const HISTORY_PAGE_CAP: u64 = 25_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mlflow/metrics/get-history", get(get_history))
        .route(
            "/mlflow/metrics/get-history-bulk-interval",
            get(get_history_bulk_interval),
        )
}

pub fn ajax_router() -> Router<AppState> {
    Router::new().route("/mlflow/metrics/get-history-bulk", get(get_history_bulk))
}

#[derive(Debug, Deserialize)]
struct GetHistory {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    page_token: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
}

async fn get_history(
    State(state): State<AppState>,
    Req(req): Req<GetHistory>,
) -> ApiResult<axum::response::Response> {
    let run_id = required_str(req.run_id.filter(|r| !r.is_empty()).or(req.run_uuid), "run_id")?;
    let key = required_str(req.metric_key, "metric_key")?;
    // Larger requests are clamped to the cap rather than refused: the client pages on.
    let max_results = match req.max_results {
        Some(n) if n >= 1 => (n as u64).min(HISTORY_PAGE_CAP),
        Some(n) => {
            return Err(ApiError::invalid(format!(
                "Invalid value {n} for parameter 'max_results'."
            )));
        }
        None => HISTORY_PAGE_CAP,
    };
    let offset = paging::decode(req.page_token.as_deref())?;
    let page = state
        .store
        .get_metric_history(&run_id, &key, offset, max_results)
        .await?;
    Ok(paging::page_body("metrics", page))
}

#[derive(Debug, Deserialize)]
struct BulkInterval {
    #[serde(default, deserialize_with = "lenient::strings")]
    run_ids: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    start_step: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    end_step: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
}

async fn get_history_bulk_interval(
    State(state): State<AppState>,
    Req(req): Req<BulkInterval>,
) -> ApiResult<Json<Value>> {
    if req.run_ids.is_empty() {
        return Err(ApiError::missing("run_ids"));
    }
    if req.run_ids.len() > 100 {
        return Err(ApiError::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most 100 run_ids. Received {} run_ids.",
            req.run_ids.len()
        )));
    }
    let key = required_str(req.metric_key, "metric_key")?;
    let max_results = paging::max_results(req.max_results, 2500, 2500)?;
    if let (Some(start), Some(end)) = (req.start_step, req.end_step)
        && start > end
    {
        return Err(ApiError::invalid(format!(
            "end_step ({end}) must be at least start_step ({start})."
        )));
    }
    let metrics = state
        .store
        .get_metric_history_bulk_interval(&BulkIntervalQuery {
            run_ids: req.run_ids,
            key,
            start_step: req.start_step,
            end_step: req.end_step,
            max_results,
        })
        .await?;
    Ok(Json(json!({ "metrics": metrics })))
}

#[derive(Debug, Deserialize)]
struct Bulk {
    #[serde(default, deserialize_with = "lenient::strings")]
    run_id: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
}

async fn get_history_bulk(State(state): State<AppState>, Req(req): Req<Bulk>) -> ApiResult<Json<Value>> {
    if req.run_id.is_empty() {
        return Err(ApiError::missing("run_id"));
    }
    if req.run_id.len() > 20 {
        return Err(ApiError::invalid(
            "GetMetricHistoryBulk request cannot specify more than 20 run_ids.",
        ));
    }
    let key = required_str(req.metric_key, "metric_key")?;
    let mut remaining = paging::max_results(req.max_results, HISTORY_PAGE_CAP, HISTORY_PAGE_CAP)?;
    let mut out: Vec<MetricWithRunId> = Vec::new();
    for run_id in &req.run_id {
        if remaining == 0 {
            break;
        }
        let page = state.store.get_metric_history(run_id, &key, 0, remaining).await?;
        remaining -= page.items.len() as u64;
        out.extend(page.items.into_iter().map(|m| MetricWithRunId {
            key: m.key,
            value: m.value,
            timestamp: m.timestamp,
            step: m.step,
            run_id: run_id.clone(),
        }));
    }
    Ok(Json(json!({ "metrics": out })))
}
