//! The tracking store: domain types (serialised exactly as MLflow's JSON entities), the `Store`
//! trait every engine implements, and the engines themselves. One SQL implementation (`sql`) serves
//! both SQLite (`sqlite`) and PostgreSQL (`postgres`); the engine modules hold what differs:
//! connection setup and migrations.

pub mod mysql;
pub mod postgres;
pub mod query;
pub mod registry;
pub mod registry_sql;
pub mod schedule;
pub mod search_sql;
pub mod sql;
pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;

use crate::search::{Clause, OrderBy};
use serde::Serializer;

/// What can go wrong in a store. Client-facing variants carry MLflow-worded messages.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported backend store URI {0:?} (use sqlite:///PATH, postgresql://... or mysql://...)")]
    UnsupportedUri(String),
}

impl StoreError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::AlreadyExists(_) => "already_exists",
            Self::Invalid(_) => "invalid",
            Self::Database(_) => "database",
            Self::Migrate(_) => "migrate",
            Self::UnsupportedUri(_) => "unsupported_uri",
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Serialize a double the way MLflow does: non-finite values as strings.
pub fn ser_f64<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    if value.is_nan() {
        s.serialize_str("NaN")
    } else if *value == f64::INFINITY {
        s.serialize_str("Infinity")
    } else if *value == f64::NEG_INFINITY {
        s.serialize_str("-Infinity")
    } else {
        s.serialize_f64(*value)
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

pub type Param = Tag;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleStage {
    Active,
    Deleted,
}

impl LifecycleStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deleted => "deleted",
        }
    }
}

/// Which lifecycle stages a search covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewType {
    #[default]
    ActiveOnly,
    DeletedOnly,
    All,
}

impl ViewType {
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s {
            None | Some("") | Some("ACTIVE_ONLY") | Some("1") => Some(Self::ActiveOnly),
            Some("DELETED_ONLY") | Some("2") => Some(Self::DeletedOnly),
            Some("ALL") | Some("3") => Some(Self::All),
            _ => None,
        }
    }

    pub fn stages(self) -> &'static [&'static str] {
        match self {
            Self::ActiveOnly => &["active"],
            Self::DeletedOnly => &["deleted"],
            Self::All => &["active", "deleted"],
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub last_update_time: i64,
    pub creation_time: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] = [
        Self::Running,
        Self::Scheduled,
        Self::Finished,
        Self::Failed,
        Self::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Scheduled => "SCHEDULED",
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
            Self::Killed => "KILLED",
        }
    }

    /// Accepts the enum name or its proto number.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RUNNING" | "1" => Some(Self::Running),
            "SCHEDULED" | "2" => Some(Self::Scheduled),
            "FINISHED" | "3" => Some(Self::Finished),
            "FAILED" | "4" => Some(Self::Failed),
            "KILLED" | "5" => Some(Self::Killed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunInfo {
    pub run_id: String,
    pub run_uuid: String,
    pub run_name: String,
    pub experiment_id: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metric {
    pub key: String,
    #[serde(serialize_with = "ser_f64")]
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    /// MLflow 3: the logged model (and dataset) a logged metric belongs to; kept with the model
    /// (`LoggedModel.data.metrics`), never part of a run's metric history.
    #[serde(skip)]
    pub model: Option<ModelLink>,
}

impl Metric {
    pub fn new(key: impl Into<String>, value: f64, timestamp: i64, step: i64) -> Self {
        Self {
            key: key.into(),
            value,
            timestamp,
            step,
            model: None,
        }
    }
}

/// Which logged model a metric was logged for, and on which dataset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelLink {
    pub model_id: String,
    pub dataset_name: Option<String>,
    pub dataset_digest: Option<String>,
}

/// A metric of a logged model, as MLflow returns it in `LoggedModel.data.metrics`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoggedModelMetric {
    pub key: String,
    #[serde(serialize_with = "ser_f64")]
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    pub model_id: String,
    pub run_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricWithRunId {
    pub key: String,
    #[serde(serialize_with = "ser_f64")]
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub run_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct RunData {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub digest: String,
    pub source_type: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DatasetInput {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    pub dataset: Dataset,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelInput {
    pub model_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelOutput {
    pub model_id: String,
    pub step: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct RunInputs {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dataset_inputs: Vec<DatasetInput>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_inputs: Vec<ModelInput>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct RunOutputs {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_outputs: Vec<ModelOutput>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
    pub inputs: RunInputs,
    pub outputs: RunOutputs,
}

/// A new run as the API validated it.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub experiment_id: String,
    pub user_id: String,
    pub run_name: String,
    pub start_time: i64,
    pub tags: Vec<Tag>,
}

/// Fields of a run update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RunUpdate {
    pub status: Option<RunStatus>,
    pub end_time: Option<i64>,
    pub run_name: Option<String>,
}

/// One page of a search: the items and, when more remain, the offset of the next page.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_offset: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct RunSearch {
    pub experiment_ids: Vec<String>,
    pub filter: Vec<Clause>,
    pub view: ViewType,
    pub order_by: Vec<OrderBy>,
    pub max_results: u64,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct ExperimentSearch {
    pub filter: Vec<Clause>,
    pub view: ViewType,
    pub order_by: Vec<OrderBy>,
    pub max_results: u64,
    pub offset: u64,
}

/// A window of one metric's history over several runs (get-history-bulk-interval).
#[derive(Debug, Clone)]
pub struct BulkIntervalQuery {
    pub run_ids: Vec<String>,
    pub key: String,
    pub start_step: Option<i64>,
    pub end_step: Option<i64>,
    pub max_results: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoggedModelParam {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoggedModelInfo {
    pub model_id: String,
    pub experiment_id: String,
    pub name: String,
    pub creation_timestamp_ms: i64,
    pub last_updated_timestamp_ms: i64,
    pub artifact_uri: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct LoggedModelData {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<LoggedModelParam>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<LoggedModelMetric>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoggedModel {
    pub info: LoggedModelInfo,
    pub data: LoggedModelData,
}

#[derive(Debug, Clone)]
pub struct NewLoggedModel {
    pub experiment_id: String,
    pub name: String,
    pub model_type: Option<String>,
    pub source_run_id: Option<String>,
    pub params: Vec<Tag>,
    pub tags: Vec<Tag>,
}

/// A dataset by name, optionally pinned to one digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRef {
    pub name: String,
    pub digest: Option<String>,
}

/// One `order_by` entry of a logged-model search.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedModelOrder {
    /// An attribute or `metrics.<key>` (parsed by `search::parse_logged_model_order_field`).
    pub field: OrderBy,
    pub ascending: bool,
    /// For a metric: only its values on this dataset.
    pub dataset: Option<DatasetRef>,
}

#[derive(Debug, Clone)]
pub struct LoggedModelSearch {
    pub experiment_ids: Vec<String>,
    /// Parsed filter: attributes (`name`, `model_id`, `source_run_id`, `status`, `model_type`,
    /// timestamps), metrics, params and tags.
    pub filter: Vec<Clause>,
    /// Metric clauses (filters and orderings) look only at metrics logged on these datasets; empty:
    /// any dataset.
    pub datasets: Vec<DatasetRef>,
    /// Sort keys in order; the default (and tie-break) is newest first.
    pub order_by: Vec<LoggedModelOrder>,
    pub max_results: u64,
    pub offset: u64,
}

/// Usage statistics: cheap aggregate counts for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statistics {
    /// Active experiments.
    pub experiments: i64,
    /// Active runs by status.
    pub runs_by_status: Vec<(String, i64)>,
    pub registered_models: i64,
    /// Model versions (not deleted) by stage.
    pub model_versions_by_stage: Vec<(String, i64)>,
    /// Distinct users that created runs.
    pub users: i64,
    /// Distinct datasets (name, digest) logged as run inputs.
    pub datasets: i64,
}

/// Everything a tracking store does: experiments, runs, logged models and the registry, each its
/// own trait (and its own file in the SQL implementation, `sql/`), plus statistics. Implemented once
/// in SQL for SQLite and PostgreSQL. Callers holding `dyn Store` reach every method without
/// importing the parts.
#[async_trait]
pub trait Store:
    registry::Registry + ExperimentStore + RunStore + LoggedModelStore + Send + Sync + 'static
{
    /// The engine's name, for logs and metrics (`sqlite`, `postgresql`).
    fn engine(&self) -> &'static str;

    /// Aggregate counts for the statistics gauges (a handful of COUNT queries, no row scans
    /// beyond what the indexes cover).
    async fn statistics(&self) -> StoreResult<Statistics>;

    /// Whether the database answers right now (for `/health`): `Err` says why not.
    async fn ping(&self) -> Result<(), String>;

    /// Return once every write committed so far is on disk (SQLite's group commit; a no-op where
    /// the engine syncs each commit itself). Write requests call it before answering.
    async fn sync_commits(&self) -> std::io::Result<()>;
}

/// Experiments.
#[async_trait]
pub trait ExperimentStore: Send + Sync {
    async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[Tag],
    ) -> StoreResult<String>;
    async fn get_experiment(&self, experiment_id: &str) -> StoreResult<Experiment>;
    /// Prefers the active experiment when an active and a deleted one share the name.
    async fn get_experiment_by_name(&self, name: &str) -> StoreResult<Option<Experiment>>;
    async fn search_experiments(&self, search: &ExperimentSearch) -> StoreResult<Page<Experiment>>;
    async fn rename_experiment(&self, experiment_id: &str, new_name: &str) -> StoreResult<()>;
    /// Soft-deletes (or restores) the experiment and its runs.
    async fn set_experiment_lifecycle(&self, experiment_id: &str, stage: LifecycleStage) -> StoreResult<()>;
    async fn set_experiment_tag(&self, experiment_id: &str, tag: &Tag) -> StoreResult<()>;
    async fn delete_experiment_tag(&self, experiment_id: &str, key: &str) -> StoreResult<()>;
}

/// Runs and what they log: metrics, params, tags, inputs and outputs.
#[async_trait]
pub trait RunStore: Send + Sync {
    async fn create_run(&self, run: NewRun) -> StoreResult<Run>;
    async fn get_run(&self, run_id: &str) -> StoreResult<Run>;
    async fn update_run(&self, run_id: &str, update: RunUpdate) -> StoreResult<RunInfo>;
    async fn set_run_lifecycle(&self, run_id: &str, stage: LifecycleStage) -> StoreResult<()>;
    /// Metrics, params and tags in one transaction: all written or none. Metrics that name a
    /// logged model are also kept with it.
    async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> StoreResult<()>;
    async fn delete_run_tag(&self, run_id: &str, key: &str) -> StoreResult<()>;
    async fn log_inputs(
        &self,
        run_id: &str,
        datasets: &[DatasetInput],
        models: &[ModelInput],
    ) -> StoreResult<()>;
    async fn log_outputs(&self, run_id: &str, models: &[ModelOutput]) -> StoreResult<()>;
    async fn search_runs(&self, search: &RunSearch) -> StoreResult<Page<Run>>;

    async fn get_metric_history(
        &self,
        run_id: &str,
        key: &str,
        offset: u64,
        max_results: u64,
    ) -> StoreResult<Page<Metric>>;
    async fn get_metric_history_bulk_interval(
        &self,
        query: &BulkIntervalQuery,
    ) -> StoreResult<Vec<MetricWithRunId>>;

    /// The distinct datasets logged to runs of these experiments (MLflow's `search-datasets`,
    /// which the web UI's dataset filter reads), at most `limit`.
    async fn search_datasets(
        &self,
        experiment_ids: &[String],
        limit: u64,
    ) -> StoreResult<Vec<DatasetSummary>>;
}

/// MLflow 3's logged models.
#[async_trait]
pub trait LoggedModelStore: Send + Sync {
    async fn create_logged_model(&self, model: NewLoggedModel) -> StoreResult<LoggedModel>;
    async fn get_logged_model(&self, model_id: &str) -> StoreResult<LoggedModel>;
    async fn finalize_logged_model(&self, model_id: &str, status: &str) -> StoreResult<LoggedModel>;
    async fn set_logged_model_tags(&self, model_id: &str, tags: &[Tag]) -> StoreResult<()>;
    async fn delete_logged_model_tag(&self, model_id: &str, key: &str) -> StoreResult<()>;
    async fn log_logged_model_params(&self, model_id: &str, params: &[Tag]) -> StoreResult<()>;
    async fn delete_logged_model(&self, model_id: &str) -> StoreResult<()>;
    async fn search_logged_models(&self, search: &LoggedModelSearch) -> StoreResult<Page<LoggedModel>>;
}

/// One dataset used by an experiment's runs, with the context it was logged in.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DatasetSummary {
    pub experiment_id: String,
    pub name: String,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Open the store named by a backend store URI and bring its schema up to date (SQLite commits
/// acknowledged once on disk).
pub async fn open(uri: &str, default_artifact_root: &str) -> StoreResult<sql::SqlStore> {
    open_with(uri, default_artifact_root, crate::db::SqliteSync::Full).await
}

/// [`open`] with the SQLite durability chosen (`--sqlite-synchronous`).
pub async fn open_with(
    uri: &str,
    default_artifact_root: &str,
    sqlite_sync: crate::db::SqliteSync,
) -> StoreResult<sql::SqlStore> {
    if let Some(path) = sqlite::path_from_uri(uri) {
        sqlite::open(&path, default_artifact_root, sqlite_sync).await
    } else if postgres::is_postgres_uri(uri) {
        postgres::open(uri, default_artifact_root).await
    } else if mysql::is_mysql_uri(uri) {
        mysql::open(uri, default_artifact_root).await
    } else {
        Err(StoreError::UnsupportedUri(redact_uri(uri)))
    }
}

/// A URI with any password replaced, for logs and errors.
pub fn redact_uri(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &uri[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &uri[..scheme_end + 3],
                    &userinfo[..colon],
                    &uri[at..]
                ),
                None => uri.to_owned(),
            }
        }
        _ => uri.to_owned(),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_uri("postgresql://u:secret@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(redact_uri("postgresql://u@h/db"), "postgresql://u@h/db");
        assert_eq!(redact_uri("sqlite:///x.db"), "sqlite:///x.db");
    }
}
