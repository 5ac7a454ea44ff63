//! The tracking store over sqlx's `Any` driver: one implementation for SQLite and PostgreSQL.
//! SQL here is portable (`$N` placeholders, `ON CONFLICT`, `RETURNING`, row values); what differs
//! lives in `sqlite.rs` / `postgres.rs`. This file holds the store itself, the row helpers every
//! entity shares and statistics; each entity's trait lives in its own file under `sql/`
//! (experiments, runs with their metrics and inputs, logged models) and the registry in
//! `registry_sql.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tracing::instrument;

use super::query::{Arg, Sql};
use super::search_sql;
use super::*;

mod experiments;
mod logged_models;
mod run_children;
mod runs;

use run_children::RunChildren;

pub use crate::db::{Database, Engine, is_unique_violation};

/// PostgreSQL planner settings for [`SqlStore::planned_read`]: every path but an index walk (with
/// nested loops and incremental sorts) costs as if it were missing, and no statement is compiled
/// by JIT. Estimates over a large table run past `jit_above_cost` however few rows the walk
/// reads: a search of 100 runs in an experiment of 100 000 spent 195 ms compiling and 10 ms
/// running (docs/architecture.md, "Performance").
const PG_INDEX_WALKS: &str = "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; \
     SET LOCAL enable_sort = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
     SET LOCAL jit = off;";

/// Rows bound per multi-row INSERT (keeps well under both engines' parameter limits).
const INSERT_CHUNK: usize = 200;
/// Ids per `IN (…)` when loading the children of a page of runs.
const ID_CHUNK: usize = 500;

pub struct SqlStore {
    pub(super) pool: AnyPool,
    pub(super) engine: Engine,
    /// The pool, dialect and SQLite writer lock, shared with the other stores on this database.
    database: Database,
    default_artifact_root: String,
    /// Log-batches waiting for the SQLite writer (see `RunStore::log_batch`); `None` elsewhere.
    pending_batches: Option<std::sync::Mutex<Vec<PendingBatch>>>,
}

/// A log-batch queued for the SQLite writer, written by whichever request next holds the write
/// lock, together with every other batch queued by then (docs/architecture.md, "Performance").
pub(super) struct PendingBatch {
    pub(super) run_id: String,
    pub(super) metrics: Vec<Metric>,
    pub(super) params: Vec<Param>,
    pub(super) tags: Vec<Tag>,
    pub(super) done: tokio::sync::oneshot::Sender<StoreResult<()>>,
}

fn not_found_run(run_id: &str) -> StoreError {
    StoreError::NotFound(format!("Run with id={run_id} not found"))
}

fn not_found_experiment(experiment_id: &str) -> StoreError {
    StoreError::NotFound(format!("No Experiment with id={experiment_id} exists"))
}

fn parse_experiment_id(experiment_id: &str) -> StoreResult<i64> {
    experiment_id
        .parse::<i64>()
        .map_err(|_| not_found_experiment(experiment_id))
}

/// Join an artifact root and a child path segment.
pub fn join_uri(root: &str, child: &str) -> String {
    format!("{}/{}", root.trim_end_matches('/'), child)
}

/// `is_nan` codes: 0 a number (`value`), 1 NaN. MySQL cannot store infinities, so there ±inf
/// are 2 / 3 with `value` ±f64::MAX (which keeps comparisons and ordering by `value` right); the
/// other engines store infinities as they are.
const STORED_NAN: i64 = 1;
const STORED_POS_INF: i64 = 2;
const STORED_NEG_INF: i64 = 3;

/// The `(value, is_nan)` columns of a metric value on `engine`.
fn stored_value(engine: Engine, value: f64) -> (f64, i64) {
    if value.is_nan() {
        (0.0, STORED_NAN)
    } else if value.is_infinite() && engine == Engine::MySql {
        if value > 0.0 {
            (f64::MAX, STORED_POS_INF)
        } else {
            (f64::MIN, STORED_NEG_INF)
        }
    } else {
        (value, 0)
    }
}

/// The metric value of stored `(value, is_nan)` columns (see [`stored_value`]).
pub(super) fn loaded_value(value: f64, is_nan: i64) -> f64 {
    match is_nan {
        0 => value,
        STORED_POS_INF => f64::INFINITY,
        STORED_NEG_INF => f64::NEG_INFINITY,
        _ => f64::NAN,
    }
}

/// `key, step, timestamp, value, is_nan` of one metric point, bound in that column order.
fn push_metric_point(sql: &mut Sql, engine: Engine, m: &Metric) {
    let (value, is_nan) = stored_value(engine, m.value);
    sql.bind_str(&m.key)
        .push(", ")
        .bind_i64(m.step)
        .push(", ")
        .bind_i64(m.timestamp)
        .push(", ")
        .bind(Arg::F64(value))
        .push(", ")
        .bind_i64(is_nan);
}

fn metric_from_row(row: &AnyRow) -> StoreResult<Metric> {
    let is_nan: i64 = row.try_get("is_nan")?;
    let value: f64 = row.try_get("value")?;
    Ok(Metric::new(
        row.try_get::<String, _>("key")?,
        loaded_value(value, is_nan),
        row.try_get("timestamp")?,
        row.try_get("step")?,
    ))
}

/// A point of the metric `key` from a row without a `key` column (a history reads one key: not
/// selecting it saves decoding and allocating the same string per point).
fn metric_point_from_row(row: &AnyRow, key: &str) -> StoreResult<Metric> {
    let is_nan: i64 = row.try_get(3)?;
    let value: f64 = row.try_get(0)?;
    Ok(Metric::new(
        key,
        loaded_value(value, is_nan),
        row.try_get(1)?,
        row.try_get(2)?,
    ))
}

/// The columns [`metric_point_from_row`] reads, in its order.
const POINT_COLUMNS: &str = "value, timestamp, step, is_nan";

const RUN_COLUMNS: &str = "r.run_uuid, r.name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time, \
     r.artifact_uri, r.lifecycle_stage";

fn run_info_from_row(row: &AnyRow) -> StoreResult<RunInfo> {
    let run_id: String = row.try_get("run_uuid")?;
    let experiment_id: i64 = row.try_get("experiment_id")?;
    Ok(RunInfo {
        run_uuid: run_id.clone(),
        run_id,
        run_name: row.try_get("name")?,
        experiment_id: experiment_id.to_string(),
        user_id: row.try_get("user_id")?,
        status: row.try_get("status")?,
        start_time: row.try_get("start_time")?,
        end_time: row.try_get("end_time")?,
        artifact_uri: row.try_get("artifact_uri")?,
        lifecycle_stage: row.try_get("lifecycle_stage")?,
    })
}

const EXPERIMENT_COLUMNS: &str =
    "e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage, e.creation_time, e.last_update_time";

fn experiment_from_row(row: &AnyRow) -> StoreResult<Experiment> {
    let id: i64 = row.try_get("experiment_id")?;
    Ok(Experiment {
        experiment_id: id.to_string(),
        name: row.try_get("name")?,
        artifact_location: row.try_get("artifact_location")?,
        lifecycle_stage: row.try_get("lifecycle_stage")?,
        last_update_time: row.try_get("last_update_time")?,
        creation_time: row.try_get("creation_time")?,
        tags: Vec::new(),
    })
}

pub(super) fn page_of<T>(mut items: Vec<T>, max_results: u64, offset: u64) -> Page<T> {
    // Queries fetch one row more than asked to learn whether another page exists.
    let more = items.len() as u64 > max_results;
    if more {
        items.truncate(max_results as usize);
    }
    Page {
        next_offset: more.then_some(offset + max_results),
        items,
    }
}

pub(super) fn limit_offset(sql: &mut Sql, max_results: u64, offset: u64) {
    sql.push(" LIMIT ")
        .bind_i64(i64::try_from(max_results.saturating_add(1)).unwrap_or(i64::MAX))
        .push(" OFFSET ")
        .bind_i64(i64::try_from(offset).unwrap_or(i64::MAX));
}

// === impl SqlStore ===

impl SqlStore {
    pub(super) fn new(pool: AnyPool, engine: Engine, default_artifact_root: &str) -> Self {
        Self {
            database: Database::new(pool.clone(), engine),
            pool,
            engine,
            default_artifact_root: default_artifact_root.to_owned(),
            pending_batches: None,
        }
    }

    pub(super) fn enable_group_commit(&mut self, group_commit: crate::db::GroupCommit) {
        self.database = self.database.clone().with_group_commit(group_commit);
    }

    /// The database under this store, for the stores that share it (model-quality monitoring).
    pub fn database(&self) -> Database {
        self.database.clone()
    }

    pub fn engine_kind(&self) -> Engine {
        self.engine
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool writes use (a SQLite file's single writer connection).
    pub fn writer(&self) -> &AnyPool {
        self.database.writer()
    }

    /// Send writes through `writer` (a SQLite file's single connection), and let concurrent
    /// log-batches share its transactions.
    pub(super) fn enable_writer(&mut self, writer: AnyPool) {
        self.database = self.database.clone().with_writer(writer);
        self.pending_batches = Some(std::sync::Mutex::new(Vec::new()));
    }

    pub(super) fn enable_bulk_reader(&mut self, reader: sqlx::SqlitePool) {
        self.database = self.database.clone().with_bulk_reader(reader);
    }

    /// A read transaction for the statements written as index walks (run searches, metric
    /// histories). On PostgreSQL it prices out every other access path for its duration: the
    /// planner's statistics lag a table that grew since autovacuum's last ANALYZE, and with
    /// them it sorted a whole million-point history to return its first page (430 ms instead
    /// of 9 ms). The index walk's cost follows the page, whatever the statistics say
    /// (docs/architecture.md, "Performance").
    pub(super) async fn planned_read(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        use sqlx::Executor;
        let mut tx = self.pool.begin().await?;
        if self.engine == Engine::Postgres {
            (&mut *tx).execute(PG_INDEX_WALKS).await?;
        }
        Ok(tx)
    }

    pub async fn write_guard(&self) -> Option<crate::db::WriteGuard<'_>> {
        self.database.write_guard().await
    }

    /// Create the `Default` experiment (id 0) when it is missing.
    pub(super) async fn ensure_default_experiment(&self) -> StoreResult<()> {
        let now = now_ms();
        let location = join_uri(&self.default_artifact_root, "0");
        let mut sql = Sql::new(
            "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, \
             last_update_time) VALUES (0, 'Default', ",
        );
        sql.bind_str(&location)
            .push(", 'active', ")
            .bind_i64(now)
            .push(", ")
            .bind_i64(now);
        sql.push(")").on_conflict_do_nothing("");
        let _guard = self.write_guard().await;
        sql.query(self.engine).execute(self.writer()).await?;
        Ok(())
    }

    async fn fetch_experiment_tags(&self, ids: &[i64]) -> StoreResult<HashMap<i64, Vec<Tag>>> {
        let mut out: HashMap<i64, Vec<Tag>> = HashMap::new();
        for chunk in ids.chunks(ID_CHUNK) {
            let mut sql =
                Sql::new("SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_i64(*id);
            }
            sql.push(") ORDER BY key");
            for row in sql.query(self.engine).fetch_all(&self.pool).await? {
                let id: i64 = row.try_get("experiment_id")?;
                out.entry(id).or_default().push(Tag {
                    key: row.try_get("key")?,
                    value: row.try_get("value")?,
                });
            }
        }
        Ok(out)
    }

    async fn with_experiment_tags(&self, mut experiments: Vec<Experiment>) -> StoreResult<Vec<Experiment>> {
        let ids: Vec<i64> = experiments
            .iter()
            .filter_map(|e| e.experiment_id.parse().ok())
            .collect();
        let mut tags = self.fetch_experiment_tags(&ids).await?;
        for e in &mut experiments {
            if let Some(t) = e.experiment_id.parse().ok().and_then(|id: i64| tags.remove(&id)) {
                e.tags = t;
            }
        }
        Ok(experiments)
    }

    async fn fetch_experiment_row(&self, experiment_id: &str) -> StoreResult<Experiment> {
        let id = parse_experiment_id(experiment_id)?;
        let mut sql = Sql::new(&format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE e.experiment_id = "
        ));
        sql.bind_i64(id);
        let row = sql
            .query(self.engine)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found_experiment(experiment_id))?;
        experiment_from_row(&row)
    }

    /// Assemble full runs (tags, params, latest metrics, inputs, outputs) for rows, in order.
    async fn assemble_runs(&self, infos: Vec<RunInfo>) -> StoreResult<Vec<Run>> {
        let mut conn = self.pool.acquire().await?;
        self.assemble_runs_in(&mut conn, infos).await
    }

    /// The runs of `infos` with their tags, params, latest metrics, dataset inputs and model
    /// inputs and outputs, read in `conn`: a search's own read transaction, so the page and what it
    /// holds come from one snapshot, and PostgreSQL reads each child table by its `run_uuid` index
    /// rather than scanning it (docs/architecture.md, "Performance").
    pub(super) async fn assemble_runs_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        infos: Vec<RunInfo>,
    ) -> StoreResult<Vec<Run>> {
        let ids: Vec<&str> = infos.iter().map(|i| i.run_id.as_str()).collect();
        let mut children = RunChildren::default();
        for chunk in ids.chunks(ID_CHUNK) {
            children.read(self.engine, conn, chunk).await?;
        }
        let RunChildren {
            mut tags,
            mut params,
            mut metrics,
            mut datasets,
            mut model_io,
        } = children;
        Ok(infos
            .into_iter()
            .map(|info| {
                let id = info.run_id.clone();
                let (model_inputs, model_outputs) = model_io.remove(&id).unwrap_or_default();
                Run {
                    data: RunData {
                        metrics: metrics.remove(&id).unwrap_or_default(),
                        params: params.remove(&id).unwrap_or_default(),
                        tags: tags.remove(&id).unwrap_or_default(),
                    },
                    inputs: RunInputs {
                        dataset_inputs: datasets.remove(&id).unwrap_or_default(),
                        model_inputs,
                    },
                    outputs: RunOutputs { model_outputs },
                    info,
                }
            })
            .collect())
    }

    async fn fetch_run_info<'e, E>(&self, executor: E, run_id: &str) -> StoreResult<RunInfo>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let mut sql = Sql::new(&format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_uuid = "));
        sql.bind_str(run_id);
        let row = sql
            .query(self.engine)
            .fetch_optional(executor)
            .await?
            .ok_or_else(|| not_found_run(run_id))?;
        run_info_from_row(&row)
    }

    fn require_active_run(info: &RunInfo) -> StoreResult<()> {
        if info.lifecycle_stage != LifecycleStage::Active.as_str() {
            return Err(StoreError::Invalid(format!(
                "The run {} must be in the 'active' state. Current state is {}.",
                info.run_id, info.lifecycle_stage
            )));
        }
        Ok(())
    }

    async fn fetch_logged_models(&self, sql: Sql) -> StoreResult<Vec<LoggedModel>> {
        let rows = sql.query(self.engine).fetch_all(&self.pool).await?;
        let mut models = Vec::with_capacity(rows.len());
        for row in rows {
            let experiment_id: i64 = row.try_get("experiment_id")?;
            models.push(LoggedModel {
                info: LoggedModelInfo {
                    model_id: row.try_get("model_id")?,
                    experiment_id: experiment_id.to_string(),
                    name: row.try_get("name")?,
                    creation_timestamp_ms: row.try_get("creation_timestamp")?,
                    last_updated_timestamp_ms: row.try_get("last_updated_timestamp")?,
                    artifact_uri: row.try_get("artifact_location")?,
                    status: row.try_get("status")?,
                    model_type: row.try_get("model_type")?,
                    source_run_id: row.try_get("source_run_id")?,
                    status_message: row.try_get("status_message")?,
                    tags: Vec::new(),
                },
                data: LoggedModelData::default(),
            });
        }
        let ids: Vec<&str> = models.iter().map(|m| m.info.model_id.as_str()).collect();
        let mut tags: HashMap<String, Vec<Tag>> = HashMap::new();
        let mut params: HashMap<String, Vec<LoggedModelParam>> = HashMap::new();
        for chunk in ids.chunks(ID_CHUNK) {
            let mut sql = Sql::new("SELECT model_id, key, value FROM logged_model_tags WHERE model_id IN ");
            sql.bind_list(chunk.iter().copied()).push(" ORDER BY key");
            for row in sql.query(self.engine).fetch_all(&self.pool).await? {
                tags.entry(row.try_get("model_id")?).or_default().push(Tag {
                    key: row.try_get("key")?,
                    value: row.try_get("value")?,
                });
            }
            let mut sql = Sql::new("SELECT model_id, key, value FROM logged_model_params WHERE model_id IN ");
            sql.bind_list(chunk.iter().copied()).push(" ORDER BY key");
            for row in sql.query(self.engine).fetch_all(&self.pool).await? {
                params
                    .entry(row.try_get("model_id")?)
                    .or_default()
                    .push(LoggedModelParam {
                        key: row.try_get("key")?,
                        value: row.try_get("value")?,
                    });
            }
        }
        let mut metrics: HashMap<String, Vec<LoggedModelMetric>> = HashMap::new();
        for chunk in ids.chunks(ID_CHUNK) {
            let mut sql = Sql::new(
                "SELECT model_id, key, value, is_nan, timestamp, step, run_uuid, dataset_name, dataset_digest \
                 FROM logged_model_metrics WHERE model_id IN ",
            );
            sql.bind_list(chunk.iter().copied())
                .push(" ORDER BY timestamp, key, step");
            for row in sql.query(self.engine).fetch_all(&self.pool).await? {
                let point = metric_from_row(&row)?;
                let dataset = |column: &str| -> StoreResult<Option<String>> {
                    Ok(Some(row.try_get::<String, _>(column)?).filter(|s| !s.is_empty()))
                };
                let model_id: String = row.try_get("model_id")?;
                metrics
                    .entry(model_id.clone())
                    .or_default()
                    .push(LoggedModelMetric {
                        key: point.key,
                        value: point.value,
                        timestamp: point.timestamp,
                        step: point.step,
                        dataset_name: dataset("dataset_name")?,
                        dataset_digest: dataset("dataset_digest")?,
                        model_id,
                        run_id: row.try_get("run_uuid")?,
                    });
            }
        }
        for m in &mut models {
            m.info.tags = tags.remove(&m.info.model_id).unwrap_or_default();
            m.data.params = params.remove(&m.info.model_id).unwrap_or_default();
            m.data.metrics = metrics.remove(&m.info.model_id).unwrap_or_default();
        }
        Ok(models)
    }

    /// The metrics of a batch that name a logged model, also kept with that model (MLflow 3). Every
    /// model named must exist, or the whole batch fails.
    async fn insert_logged_model_metrics<'c>(
        &self,
        tx: &mut sqlx::Transaction<'c, sqlx::Any>,
        run_id: &str,
        metrics: &[Metric],
    ) -> StoreResult<()> {
        let linked: Vec<(&Metric, &ModelLink)> = metrics
            .iter()
            .filter_map(|m| m.model.as_ref().map(|l| (m, l)))
            .collect();
        if linked.is_empty() {
            return Ok(());
        }
        let wanted: BTreeSet<&str> = linked.iter().map(|(_, l)| l.model_id.as_str()).collect();
        let mut sql = Sql::new("SELECT model_id FROM logged_models WHERE model_id IN ");
        sql.bind_list(wanted.iter().copied());
        let found: BTreeSet<String> = sql
            .query(self.engine)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("model_id"))
            .collect::<Result<_, _>>()?;
        if let Some(missing) = wanted.iter().find(|id| !found.contains(**id)) {
            return Err(StoreError::NotFound(format!(
                "Logged model with ID '{missing}' not found."
            )));
        }
        for chunk in linked.chunks(INSERT_CHUNK) {
            let mut sql = Sql::new(
                "INSERT INTO logged_model_metrics (model_id, key, step, timestamp, value, is_nan, run_uuid, \
                 dataset_name, dataset_digest) VALUES ",
            );
            for (i, (m, link)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(").bind_str(&link.model_id).push(", ");
                push_metric_point(&mut sql, self.engine, m);
                sql.push(", ")
                    .bind_str(run_id)
                    .push(", ")
                    .bind_str(link.dataset_name.as_deref().unwrap_or(""))
                    .push(", ")
                    .bind_str(link.dataset_digest.as_deref().unwrap_or(""))
                    .push(")");
            }
            sql.on_conflict_do_nothing("");
            sql.query(self.engine).execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn upsert_kv<'c>(
        &self,
        tx: &mut sqlx::Transaction<'c, sqlx::Any>,
        table: &str,
        id_column: &str,
        id: &Arg,
        kvs: &[Tag],
        overwrite: bool,
    ) -> StoreResult<()> {
        for chunk in kvs.chunks(INSERT_CHUNK) {
            let mut sql = Sql::new(&format!("INSERT INTO {table} ({id_column}, key, value) VALUES "));
            for (i, kv) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(id.clone())
                    .push(", ")
                    .bind_str(&kv.key)
                    .push(", ")
                    .bind_str(&kv.value)
                    .push(")");
            }
            let target = format!("{id_column}, key");
            if overwrite {
                sql.on_conflict_update(&target, &["value"]);
            } else {
                sql.on_conflict_do_nothing(&target);
            }
            sql.query(self.engine).execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Keep the last value per key (tags: "last one in a batch wins").
pub(super) fn last_per_key(tags: &[Tag]) -> Vec<Tag> {
    let mut map: BTreeMap<&str, &str> = BTreeMap::new();
    for t in tags {
        map.insert(&t.key, &t.value);
    }
    map.into_iter().map(|(k, v)| Tag::new(k, v)).collect()
}

#[async_trait]
impl Store for SqlStore {
    fn engine(&self) -> &'static str {
        self.engine.name()
    }

    async fn statistics(&self) -> StoreResult<Statistics> {
        self.collect_statistics().await
    }

    async fn ping(&self) -> Result<(), String> {
        crate::db::ping(&self.pool, std::time::Duration::from_secs(2)).await
    }

    async fn sync_commits(&self) -> std::io::Result<()> {
        self.database.sync_commits().await
    }
}

impl SqlStore {
    async fn count(&self, sql: &str) -> StoreResult<i64> {
        let row = sqlx::query(sql).fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    async fn grouped_counts(&self, sql: &str) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    pub(super) async fn collect_statistics(&self) -> StoreResult<Statistics> {
        Ok(Statistics {
            experiments: self.count("SELECT COUNT(*) FROM experiments WHERE lifecycle_stage = 'active'").await?,
            runs_by_status: self
                .grouped_counts(
                    "SELECT status, COUNT(*) FROM runs WHERE lifecycle_stage = 'active' GROUP BY status ORDER BY status",
                )
                .await?,
            registered_models: self.count("SELECT COUNT(*) FROM registered_models").await?,
            model_versions_by_stage: self
                .grouped_counts(
                    "SELECT current_stage, COUNT(*) FROM model_versions WHERE current_stage <> 'Deleted_Internal' \
                     GROUP BY current_stage ORDER BY current_stage",
                )
                .await?,
            users: self.count("SELECT COUNT(DISTINCT user_id) FROM runs WHERE user_id <> ''").await?,
            datasets: self
                .count("SELECT COUNT(*) FROM (SELECT DISTINCT name, digest FROM run_dataset_inputs) d")
                .await?,
        })
    }
}

/// Up to `max` steps spread evenly over `steps` (sorted), always keeping the first and the last.
pub fn sample_steps(steps: &[i64], max: usize) -> Vec<i64> {
    if steps.len() <= max || max == 0 {
        return if max == 0 { Vec::new() } else { steps.to_vec() };
    }
    if max == 1 {
        return steps.last().copied().into_iter().collect();
    }
    let n = steps.len();
    let mut out: Vec<i64> = (0..max).map(|i| steps[i * (n - 1) / (max - 1)]).collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_keeps_ends_and_bound() {
        let steps: Vec<i64> = (0..1000).collect();
        let s = sample_steps(&steps, 10);
        assert_eq!(s.len(), 10);
        assert_eq!((s[0], s[9]), (0, 999));
        assert_eq!(sample_steps(&[1, 2, 3], 10), vec![1, 2, 3]);
        assert_eq!(sample_steps(&[1, 2, 3], 1), vec![3]);
        assert!(sample_steps(&[1, 2], 0).is_empty());
    }

    #[test]
    fn joins_uris() {
        assert_eq!(join_uri("mlflow-artifacts:/", "3"), "mlflow-artifacts:/3");
        assert_eq!(join_uri("s3://b/p/", "3"), "s3://b/p/3");
    }
}
