//! Monitoring tables over the tracking store's pool: one SQL text for SQLite and PostgreSQL (the
//! tracking store's `Sql` builder, `ON CONFLICT`), user input only ever bound, never spliced. Schema:
//! `migrations/{sqlite,postgres}/0003_monitoring.sql`.
//!
//! Windows are index range scans on `(model_name, model_version, timestamp)` (or
//! `(model_name, timestamp)` for all versions), joined to ground truth by primary key: an
//! evaluation reads its window, never the whole history.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tracing::instrument;

use super::monitors::{AlertState, Direction, Monitor};
use super::scores::Bins;
use crate::db::{Database, is_unique_violation};
use crate::store::query::{Arg, Sql};
use crate::store::{StoreError, StoreResult};

/// Rows per multi-row INSERT (8 parameters each; see store::query for why SQLite gets `?`).
const INSERT_CHUNK: usize = 200;
/// Rows deleted per statement while pruning, so writers are never held up for long.
const PRUNE_CHUNK: i64 = 5_000;

/// Which predictions: one model, one version or all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub model_name: String,
    pub model_version: Option<String>,
}

impl Scope {
    /// `AND p.model_name = $a [AND p.model_version = $b]`.
    fn filter(&self, q: &mut Sql) {
        q.push(" p.model_name = ").bind_str(&self.model_name);
        if let Some(v) = &self.model_version {
            q.push(" AND p.model_version = ").bind_str(v);
        }
    }

    /// The key of this scope's drift reference: the version, or `""` for all versions.
    pub fn version_key(&self) -> &str {
        self.model_version.as_deref().unwrap_or("")
    }
}

/// A validated prediction to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPrediction {
    pub request_id: String,
    pub model_name: String,
    pub model_version: String,
    pub timestamp: i64,
    pub inputs: String,
    pub outputs: String,
    /// The default score, extracted at ingestion.
    pub score: Option<f64>,
}

/// A validated ground-truth label to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLabel {
    pub request_id: String,
    /// The label as text (a number in its JSON spelling).
    pub actual: String,
    /// The label as a number, when it is one (or a numeric string).
    pub actual_number: Option<f64>,
    pub timestamp: i64,
}

/// One prediction of a window, with its label when known.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowRow {
    pub score: Option<f64>,
    /// Only read when the query names a `score_field`.
    pub outputs: Option<String>,
    pub actual: Option<String>,
    pub actual_number: Option<f64>,
}

/// A drift reference: per feature, the reference deciles.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReference {
    pub model_name: String,
    /// `""`: all versions.
    pub model_version: String,
    /// `uploaded` or `predictions`.
    pub source: String,
    pub rows: i64,
    pub features: BTreeMap<String, Bins>,
    pub creation_time: i64,
}

/// What one pruning pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PruneStats {
    pub predictions: u64,
    pub labels: u64,
}

const MONITOR_COLUMNS: &str = "monitor_id, name, model_name, model_version, metric, window_spec, threshold, \
     direction, score_field, positive_label, decision_threshold, min_samples, webhook_url, state, state_since, \
     last_value, last_evaluated, revision, creation_time, last_updated_time";

fn monitor_from_row(row: &AnyRow) -> StoreResult<Monitor> {
    let direction: String = row.try_get("direction")?;
    let state: String = row.try_get("state")?;
    Ok(Monitor {
        monitor_id: row.try_get("monitor_id")?,
        name: row.try_get("name")?,
        model_name: row.try_get("model_name")?,
        model_version: row.try_get("model_version")?,
        metric: row.try_get("metric")?,
        window: row.try_get("window_spec")?,
        threshold: row.try_get("threshold")?,
        direction: Direction::parse(&direction).unwrap_or(Direction::Above),
        score_field: row.try_get("score_field")?,
        positive_label: row.try_get("positive_label")?,
        decision_threshold: row.try_get("decision_threshold")?,
        min_samples: row.try_get("min_samples")?,
        webhook_url: row.try_get("webhook_url")?,
        state: AlertState::parse(&state).unwrap_or(AlertState::Ok),
        state_since: row.try_get("state_since")?,
        last_value: row.try_get("last_value")?,
        last_evaluated: row.try_get("last_evaluated")?,
        revision: row.try_get("revision")?,
        creation_timestamp: row.try_get("creation_time")?,
        last_updated_timestamp: row.try_get("last_updated_time")?,
    })
}

fn monitor_not_found(what: &str) -> StoreError {
    StoreError::NotFound(format!("Monitor {what} not found"))
}

/// The monitoring tables, on the tracking database (its pool and, on SQLite, its writer lock).
#[derive(Clone)]
pub struct MonitoringStore {
    db: Database,
}

// === impl MonitoringStore ===

impl MonitoringStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    fn pool(&self) -> &AnyPool {
        self.db.pool()
    }

    fn writer(&self) -> &AnyPool {
        self.db.writer()
    }

    /// Store a batch of predictions in one transaction; a `request_id` already stored is kept as
    /// it was (idempotent retries). Returns how many were new.
    #[instrument(skip_all, fields(rows = rows.len()))]
    pub async fn log_predictions(&self, rows: &[NewPrediction], now: i64) -> StoreResult<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let _guard = self.db.write_guard().await;
        let mut tx = self.writer().begin().await?;
        let mut inserted = 0;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q = Sql::new(
                "INSERT INTO mlkube_predictions (request_id, model_name, model_version, timestamp, inputs, \
                 outputs, score, logged_at) VALUES ",
            );
            for (i, r) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.bind_str(&r.request_id).push(", ");
                q.bind_str(&r.model_name).push(", ");
                q.bind_str(&r.model_version).push(", ");
                q.bind_i64(r.timestamp).push(", ");
                q.bind_str(&r.inputs).push(", ");
                q.bind_str(&r.outputs).push(", ");
                q.bind(Arg::OptF64(r.score)).push(", ");
                q.bind_i64(now).push(")");
            }
            q.on_conflict_do_nothing("request_id");
            inserted += q.query(self.db.engine()).execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Store a batch of labels in one transaction; the first label of a `request_id` is kept.
    #[instrument(skip_all, fields(rows = rows.len()))]
    pub async fn log_ground_truth(&self, rows: &[NewLabel], now: i64) -> StoreResult<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let _guard = self.db.write_guard().await;
        let mut tx = self.writer().begin().await?;
        let mut inserted = 0;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q = Sql::new(
                "INSERT INTO mlkube_ground_truth (request_id, actual, actual_number, timestamp, logged_at) VALUES ",
            );
            for (i, r) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" });
                q.bind_str(&r.request_id).push(", ");
                q.bind_str(&r.actual).push(", ");
                q.bind(Arg::OptF64(r.actual_number)).push(", ");
                q.bind_i64(r.timestamp).push(", ");
                q.bind_i64(now).push(")");
            }
            q.on_conflict_do_nothing("request_id");
            inserted += q.query(self.db.engine()).execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The predictions with `start < timestamp <= end`, each with its label if one arrived.
    #[instrument(skip_all, fields(model = %scope.model_name))]
    pub async fn window_rows(
        &self,
        scope: &Scope,
        start: i64,
        end: i64,
        with_outputs: bool,
    ) -> StoreResult<Vec<WindowRow>> {
        let mut q = Sql::new(if with_outputs {
            "SELECT p.score, p.outputs, g.actual, g.actual_number "
        } else {
            "SELECT p.score, g.actual, g.actual_number "
        });
        q.push(
            "FROM mlkube_predictions p LEFT JOIN mlkube_ground_truth g ON g.request_id = p.request_id WHERE",
        );
        scope.filter(&mut q);
        q.push(" AND p.timestamp > ").bind_i64(start);
        q.push(" AND p.timestamp <= ").bind_i64(end);
        let rows = q.query(self.db.engine()).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                Ok(WindowRow {
                    score: row.try_get("score")?,
                    outputs: if with_outputs {
                        crate::db::opt_text(row, "outputs")?
                    } else {
                        None
                    },
                    actual: crate::db::opt_text(row, "actual")?,
                    actual_number: row.try_get("actual_number")?,
                })
            })
            .collect()
    }

    /// `(predictions, labelled)` in the window, counted by the database.
    pub async fn window_counts(&self, scope: &Scope, start: i64, end: i64) -> StoreResult<(i64, i64)> {
        let mut q = Sql::new(
            "SELECT COUNT(*) AS predictions, COUNT(g.request_id) AS labelled FROM mlkube_predictions p \
             LEFT JOIN mlkube_ground_truth g ON g.request_id = p.request_id WHERE",
        );
        scope.filter(&mut q);
        q.push(" AND p.timestamp > ").bind_i64(start);
        q.push(" AND p.timestamp <= ").bind_i64(end);
        let row = q.query(self.db.engine()).fetch_one(self.pool()).await?;
        Ok((row.try_get("predictions")?, row.try_get("labelled")?))
    }

    /// Labels whose timestamp falls in the window but whose prediction is older than the window:
    /// ground truth that arrived too late to count in this window.
    pub async fn late_labels(&self, scope: &Scope, start: i64, end: i64) -> StoreResult<i64> {
        let mut q = Sql::new(
            "SELECT COUNT(*) AS late FROM mlkube_ground_truth g JOIN mlkube_predictions p \
             ON p.request_id = g.request_id WHERE",
        );
        scope.filter(&mut q);
        q.push(" AND g.timestamp > ").bind_i64(start);
        q.push(" AND g.timestamp <= ").bind_i64(end);
        q.push(" AND p.timestamp <= ").bind_i64(start);
        let row = q.query(self.db.engine()).fetch_one(self.pool()).await?;
        Ok(row.try_get("late")?)
    }

    /// The inputs of the newest `limit` predictions of the window (newest first).
    pub async fn newest_inputs(
        &self,
        scope: &Scope,
        start: i64,
        end: i64,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let mut q = Sql::new("SELECT p.inputs FROM mlkube_predictions p WHERE");
        scope.filter(&mut q);
        q.push(" AND p.timestamp > ").bind_i64(start);
        q.push(" AND p.timestamp <= ").bind_i64(end);
        q.push(" ORDER BY p.timestamp DESC, p.request_id DESC LIMIT ")
            .bind_i64(i64::try_from(limit).unwrap_or(i64::MAX));
        Self::strings(q.query(self.db.engine()).fetch_all(self.pool()).await?, "inputs")
    }

    /// The inputs of the first `limit` predictions of the scope (oldest first).
    pub async fn first_inputs(&self, scope: &Scope, limit: usize) -> StoreResult<Vec<String>> {
        let mut q = Sql::new("SELECT p.inputs FROM mlkube_predictions p WHERE");
        scope.filter(&mut q);
        q.push(" ORDER BY p.timestamp, p.request_id LIMIT ")
            .bind_i64(i64::try_from(limit).unwrap_or(i64::MAX));
        Self::strings(q.query(self.db.engine()).fetch_all(self.pool()).await?, "inputs")
    }

    fn strings(rows: Vec<AnyRow>, column: &str) -> StoreResult<Vec<String>> {
        rows.iter()
            .map(|r| r.try_get::<String, _>(column).map_err(StoreError::from))
            .collect()
    }

    pub async fn get_reference(
        &self,
        model_name: &str,
        version_key: &str,
    ) -> StoreResult<Option<StoredReference>> {
        let mut q = Sql::new(
            "SELECT model_name, model_version, source, row_count, features, creation_time \
             FROM mlkube_drift_references WHERE model_name = ",
        );
        q.bind_str(model_name)
            .push(" AND model_version = ")
            .bind_str(version_key);
        let Some(row) = q.query(self.db.engine()).fetch_optional(self.pool()).await? else {
            return Ok(None);
        };
        let features = crate::db::text(&row, "features")?;
        let features = serde_json::from_str(&features)
            .map_err(|e| StoreError::Invalid(format!("stored drift reference is unreadable: {e}")))?;
        Ok(Some(StoredReference {
            model_name: row.try_get("model_name")?,
            model_version: row.try_get("model_version")?,
            source: row.try_get("source")?,
            rows: row.try_get("row_count")?,
            features,
            creation_time: row.try_get("creation_time")?,
        }))
    }

    /// Store a reference: `replace` overwrites an existing one (an upload), otherwise an existing
    /// reference wins (freezing the first predictions never overwrites an upload).
    pub async fn put_reference(&self, r: &StoredReference, replace: bool) -> StoreResult<()> {
        let features = serde_json::to_string(&r.features)
            .map_err(|e| StoreError::Invalid(format!("cannot encode the drift reference: {e}")))?;
        let mut q = Sql::new(
            "INSERT INTO mlkube_drift_references (model_name, model_version, source, row_count, features, \
             creation_time) VALUES (",
        );
        q.bind_str(&r.model_name).push(", ");
        q.bind_str(&r.model_version).push(", ");
        q.bind_str(&r.source).push(", ");
        q.bind_i64(r.rows).push(", ");
        q.bind_str(&features).push(", ");
        q.bind_i64(r.creation_time).push(")");
        if replace {
            q.on_conflict_update(
                "model_name, model_version",
                &["source", "row_count", "features", "creation_time"],
            );
        } else {
            q.on_conflict_do_nothing("model_name, model_version");
        }
        let _guard = self.db.write_guard().await;
        q.query(self.db.engine()).execute(self.writer()).await?;
        Ok(())
    }

    /// Remove a reference; whether there was one.
    pub async fn delete_reference(&self, model_name: &str, version_key: &str) -> StoreResult<bool> {
        let mut q = Sql::new("DELETE FROM mlkube_drift_references WHERE model_name = ");
        q.bind_str(model_name)
            .push(" AND model_version = ")
            .bind_str(version_key);
        let _guard = self.db.write_guard().await;
        Ok(q.query(self.db.engine())
            .execute(self.writer())
            .await?
            .rows_affected()
            > 0)
    }

    fn bind_monitor_values(q: &mut Sql, m: &Monitor) {
        q.bind_str(&m.name).push(", ");
        q.bind_str(&m.model_name).push(", ");
        q.bind(Arg::OptStr(m.model_version.clone())).push(", ");
        q.bind_str(&m.metric).push(", ");
        q.bind_str(&m.window).push(", ");
        q.bind(Arg::F64(m.threshold)).push(", ");
        q.bind_str(m.direction.as_str()).push(", ");
        q.bind(Arg::OptStr(m.score_field.clone())).push(", ");
        q.bind(Arg::OptStr(m.positive_label.clone())).push(", ");
        q.bind(Arg::OptF64(m.decision_threshold)).push(", ");
        q.bind_i64(m.min_samples).push(", ");
        q.bind(Arg::OptStr(m.webhook_url.clone())).push(", ");
        q.bind_str(m.state.as_str()).push(", ");
        q.bind_i64(m.state_since).push(", ");
        q.bind(Arg::OptF64(m.last_value)).push(", ");
        q.bind(Arg::OptI64(m.last_evaluated)).push(", ");
    }

    fn name_taken(err: sqlx::Error, name: &str) -> StoreError {
        if is_unique_violation(&err) {
            StoreError::AlreadyExists(format!("Monitor with name={name} already exists"))
        } else {
            StoreError::Database(err)
        }
    }

    pub async fn create_monitor(&self, m: &Monitor) -> StoreResult<()> {
        let mut q = Sql::new("INSERT INTO mlkube_monitors (");
        q.push(MONITOR_COLUMNS).push(") VALUES (");
        q.bind_str(&m.monitor_id).push(", ");
        Self::bind_monitor_values(&mut q, m);
        q.bind_i64(m.revision).push(", ");
        q.bind_i64(m.creation_timestamp).push(", ");
        q.bind_i64(m.last_updated_timestamp).push(")");
        let _guard = self.db.write_guard().await;
        q.query(self.db.engine())
            .execute(self.writer())
            .await
            .map_err(|e| Self::name_taken(e, &m.name))?;
        Ok(())
    }

    pub async fn get_monitor(&self, monitor_id: &str) -> StoreResult<Monitor> {
        let mut q = Sql::new("SELECT ");
        q.push(MONITOR_COLUMNS)
            .push(" FROM mlkube_monitors WHERE monitor_id = ")
            .bind_str(monitor_id);
        match q.query(self.db.engine()).fetch_optional(self.pool()).await? {
            Some(row) => monitor_from_row(&row),
            None => Err(monitor_not_found(&format!("with id={monitor_id}"))),
        }
    }

    pub async fn get_monitor_by_name(&self, name: &str) -> StoreResult<Monitor> {
        let mut q = Sql::new("SELECT ");
        q.push(MONITOR_COLUMNS)
            .push(" FROM mlkube_monitors WHERE name = ")
            .bind_str(name);
        match q.query(self.db.engine()).fetch_optional(self.pool()).await? {
            Some(row) => monitor_from_row(&row),
            None => Err(monitor_not_found(&format!("with name={name}"))),
        }
    }

    /// Monitors oldest first, optionally of one model.
    pub async fn list_monitors(&self, model_name: Option<&str>) -> StoreResult<Vec<Monitor>> {
        let mut q = Sql::new("SELECT ");
        q.push(MONITOR_COLUMNS).push(" FROM mlkube_monitors");
        if let Some(name) = model_name {
            q.push(" WHERE model_name = ").bind_str(name);
        }
        q.push(" ORDER BY creation_time, monitor_id");
        let rows = q.query(self.db.engine()).fetch_all(self.pool()).await?;
        rows.iter().map(monitor_from_row).collect()
    }

    /// Write a monitor's configuration and state as given (its revision already bumped).
    pub async fn update_monitor(&self, m: &Monitor) -> StoreResult<()> {
        let mut q = Sql::new(
            "UPDATE mlkube_monitors SET (name, model_name, model_version, metric, window_spec, threshold, \
             direction, score_field, positive_label, decision_threshold, min_samples, webhook_url, state, \
             state_since, last_value, last_evaluated, revision, last_updated_time) = (",
        );
        Self::bind_monitor_values(&mut q, m);
        q.bind_i64(m.revision).push(", ");
        q.bind_i64(m.last_updated_timestamp)
            .push(") WHERE monitor_id = ")
            .bind_str(&m.monitor_id);
        let _guard = self.db.write_guard().await;
        let done = q
            .query(self.db.engine())
            .execute(self.writer())
            .await
            .map_err(|e| Self::name_taken(e, &m.name))?;
        if done.rows_affected() == 0 {
            return Err(monitor_not_found(&format!("with id={}", m.monitor_id)));
        }
        Ok(())
    }

    pub async fn delete_monitor(&self, monitor_id: &str) -> StoreResult<()> {
        let mut q = Sql::new("DELETE FROM mlkube_monitors WHERE monitor_id = ");
        q.bind_str(monitor_id);
        let _guard = self.db.write_guard().await;
        if q.query(self.db.engine())
            .execute(self.writer())
            .await?
            .rows_affected()
            == 0
        {
            return Err(monitor_not_found(&format!("with id={monitor_id}")));
        }
        Ok(())
    }

    /// Record an evaluation's outcome, unless the monitor was changed (another revision), deleted,
    /// or moved out of `previous` (another replica's evaluation got there first: only the one
    /// that records a state change notifies it) since it was read. Whether it was recorded.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_evaluation(
        &self,
        monitor_id: &str,
        revision: i64,
        previous: AlertState,
        state: AlertState,
        state_since: i64,
        value: Option<f64>,
        evaluated: i64,
    ) -> StoreResult<bool> {
        let mut q = Sql::new("UPDATE mlkube_monitors SET state = ");
        q.bind_str(state.as_str())
            .push(", state_since = ")
            .bind_i64(state_since);
        q.push(", last_value = ").bind(Arg::OptF64(value));
        q.push(", last_evaluated = ").bind_i64(evaluated);
        q.push(" WHERE monitor_id = ").bind_str(monitor_id);
        q.push(" AND revision = ").bind_i64(revision);
        q.push(" AND state = ").bind_str(previous.as_str());
        let _guard = self.db.write_guard().await;
        Ok(q.query(self.db.engine())
            .execute(self.writer())
            .await?
            .rows_affected()
            > 0)
    }

    /// Delete predictions and labels older than `cutoff` (by their timestamps) and then the oldest
    /// beyond `max_rows` in each table, a chunk per statement.
    #[instrument(skip_all)]
    pub async fn prune(&self, cutoff: Option<i64>, max_rows: Option<u64>) -> StoreResult<PruneStats> {
        let mut stats = PruneStats::default();
        for (table, count) in [
            ("mlkube_predictions", &mut stats.predictions),
            ("mlkube_ground_truth", &mut stats.labels),
        ] {
            if let Some(cutoff) = cutoff {
                *count += self.delete_older(table, cutoff, false).await?;
            }
            if let Some(max) = max_rows {
                let mut q = Sql::new("SELECT timestamp FROM ");
                q.push(table).push(" ORDER BY timestamp DESC LIMIT 1 OFFSET ");
                q.bind_i64(i64::try_from(max).unwrap_or(i64::MAX));
                if let Some(row) = q.query(self.db.engine()).fetch_optional(self.pool()).await? {
                    let newest_dropped: i64 = row.try_get("timestamp")?;
                    *count += self.delete_older(table, newest_dropped, true).await?;
                }
            }
        }
        Ok(stats)
    }

    /// Delete from `table` (a constant of this module) the rows with `timestamp < bound` (or
    /// `<=`), in chunks.
    async fn delete_older(&self, table: &'static str, bound: i64, inclusive: bool) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let mut q = Sql::new("DELETE FROM ");
            q.push(table)
                .push(" WHERE request_id IN (SELECT request_id FROM ")
                .push(table)
                .push(if inclusive {
                    " WHERE timestamp <= "
                } else {
                    " WHERE timestamp < "
                })
                .bind_i64(bound)
                .push(" LIMIT ")
                .bind_i64(PRUNE_CHUNK)
                .push(")");
            let deleted = {
                let _guard = self.db.write_guard().await;
                q.query(self.db.engine())
                    .execute(self.writer())
                    .await?
                    .rows_affected()
            };
            total += deleted;
            if deleted < PRUNE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}
