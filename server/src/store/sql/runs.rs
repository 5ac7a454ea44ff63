//! Runs and what they log: lifecycle, metrics (history and bulk intervals), params, tags,
//! inputs, outputs, search, and the datasets their inputs name.

use super::*;

#[async_trait]
impl RunStore for SqlStore {
    #[instrument(skip_all, fields(experiment_id = %run.experiment_id))]
    async fn create_run(&self, run: NewRun) -> StoreResult<Run> {
        let experiment = self.fetch_experiment_row(&run.experiment_id).await?;
        if experiment.lifecycle_stage != "active" {
            return Err(StoreError::Invalid(format!(
                "The experiment {} must be in the 'active' state. Current state is deleted.",
                run.experiment_id
            )));
        }
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let artifact_uri = join_uri(&join_uri(&experiment.artifact_location, &run_id), "artifacts");
        {
            let _guard = self.write_guard().await;
            let mut tx = self.writer().begin().await?;
            let mut sql = Sql::new(
                "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, artifact_uri, \
                 lifecycle_stage) VALUES (",
            );
            sql.bind_str(&run_id)
                .push(", ")
                .bind_str(&run.run_name)
                .push(", ")
                .bind_i64(parse_experiment_id(&run.experiment_id)?)
                .push(", ")
                .bind_str(&run.user_id)
                .push(", 'RUNNING', ")
                .bind_i64(run.start_time)
                .push(", ")
                .bind_str(&artifact_uri)
                .push(", 'active')");
            sql.query(self.engine).execute(&mut *tx).await?;
            self.upsert_kv(
                &mut tx,
                "run_tags",
                "run_uuid",
                &Arg::Str(run_id.clone()),
                &last_per_key(&run.tags),
                true,
            )
            .await?;
            tx.commit().await?;
        }
        self.get_run(&run_id).await
    }

    async fn get_run(&self, run_id: &str) -> StoreResult<Run> {
        let info = self.fetch_run_info(&self.pool, run_id).await?;
        self.assemble_runs(vec![info])
            .await?
            .pop()
            .ok_or_else(|| not_found_run(run_id))
    }

    async fn update_run(&self, run_id: &str, update: RunUpdate) -> StoreResult<RunInfo> {
        let info = self.fetch_run_info(&self.pool, run_id).await?;
        Self::require_active_run(&info)?;
        {
            let _guard = self.write_guard().await;
            let mut tx = self.writer().begin().await?;
            let mut sql = Sql::new("UPDATE runs SET run_uuid = run_uuid");
            if let Some(status) = update.status {
                sql.push(", status = ").bind_str(status.as_str());
            }
            if let Some(end_time) = update.end_time {
                sql.push(", end_time = ").bind_i64(end_time);
            }
            if let Some(name) = &update.run_name {
                sql.push(", name = ").bind_str(name);
            }
            sql.push(" WHERE run_uuid = ").bind_str(run_id);
            sql.query(self.engine).execute(&mut *tx).await?;
            if let Some(name) = &update.run_name {
                let tag = Tag::new("mlflow.runName", name.clone());
                self.upsert_kv(
                    &mut tx,
                    "run_tags",
                    "run_uuid",
                    &Arg::Str(run_id.to_owned()),
                    &[tag],
                    true,
                )
                .await?;
            }
            tx.commit().await?;
        }
        self.fetch_run_info(&self.pool, run_id).await
    }

    async fn set_run_lifecycle(&self, run_id: &str, stage: LifecycleStage) -> StoreResult<()> {
        self.fetch_run_info(&self.pool, run_id).await?;
        let mut sql = Sql::new("UPDATE runs SET lifecycle_stage = ");
        sql.bind_str(stage.as_str())
            .push(" WHERE run_uuid = ")
            .bind_str(run_id);
        let _guard = self.write_guard().await;
        sql.query(self.engine).execute(self.writer()).await?;
        Ok(())
    }

    #[instrument(skip_all, fields(run_id, metrics = metrics.len(), params = params.len(), tags = tags.len()))]
    async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> StoreResult<()> {
        // Params within one batch must agree with each other.
        let mut batch_params: BTreeMap<&str, &str> = BTreeMap::new();
        for p in params {
            if let Some(previous) = batch_params.insert(&p.key, &p.value)
                && previous != p.value
            {
                return Err(StoreError::Invalid(format!(
                    "Duplicate parameter keys with different values were found in the batch: key='{}', \
                     values '{}' and '{}'.",
                    p.key, previous, p.value
                )));
            }
        }
        let Some(pending) = &self.pending_batches else {
            if self.engine == Engine::Postgres
                && params.is_empty()
                && tags.is_empty()
                && !metrics.is_empty()
                && metrics.len() <= INSERT_CHUNK
                && metrics.iter().all(|m| m.model.is_none())
            {
                return self.log_metrics_in_one_statement(run_id, metrics).await;
            }
            let _guard = self.write_guard().await;
            let mut tx = self.writer().begin().await?;
            self.write_log_batch(&mut tx, run_id, metrics, &batch_params, tags)
                .await?;
            tx.commit().await?;
            return Ok(());
        };
        // SQLite: queue the batch, then take the write lock; whoever holds it writes every batch
        // queued by then in one transaction (one savepoint each), so concurrent batches share
        // their B-tree page writes and their commit.
        let (done, answer) = tokio::sync::oneshot::channel();
        lock_queue(pending).push(PendingBatch {
            run_id: run_id.to_owned(),
            metrics: metrics.to_vec(),
            params: batch_params.iter().map(|(k, v)| Tag::new(*k, *v)).collect(),
            tags: tags.to_vec(),
            done,
        });
        {
            let _guard = self.write_guard().await;
            let batches = std::mem::take(&mut *lock_queue(pending));
            if !batches.is_empty() {
                self.write_queued_batches(batches).await;
            }
        }
        match answer.await {
            Ok(result) => result,
            // The request writing it was dropped before answering (its client went away): a
            // log-batch is idempotent, so write this one alone.
            Err(_) => {
                let _guard = self.write_guard().await;
                let mut tx = self.writer().begin().await?;
                self.write_log_batch(&mut tx, run_id, metrics, &batch_params, tags)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    }

    async fn delete_run_tag(&self, run_id: &str, key: &str) -> StoreResult<()> {
        let info = self.fetch_run_info(&self.pool, run_id).await?;
        Self::require_active_run(&info)?;
        let mut sql = Sql::new("DELETE FROM run_tags WHERE run_uuid = ");
        sql.bind_str(run_id).push(" AND key = ").bind_str(key);
        let _guard = self.write_guard().await;
        let done = sql.query(self.engine).execute(self.writer()).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "No tag with name: {key} in run with id {run_id}"
            )));
        }
        Ok(())
    }

    async fn log_inputs(
        &self,
        run_id: &str,
        datasets: &[DatasetInput],
        models: &[ModelInput],
    ) -> StoreResult<()> {
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        let info = self.fetch_run_info(&mut *tx, run_id).await?;
        Self::require_active_run(&info)?;
        let now = now_ms();
        for input in datasets {
            let d = &input.dataset;
            let context = input
                .tags
                .iter()
                .find(|t| t.key == "mlflow.data.context")
                .map(|t| t.value.clone());
            let tags: Vec<(&str, &str)> = input
                .tags
                .iter()
                .map(|t| (t.key.as_str(), t.value.as_str()))
                .collect();
            let tags_json = serde_json::to_string(&tags).unwrap_or_else(|_| "[]".to_owned());
            let mut sql = Sql::new(
                "INSERT INTO run_dataset_inputs (run_uuid, name, digest, source_type, source, dataset_schema, \
                 profile, context, tags_json, created_at) VALUES (",
            );
            sql.bind_str(run_id)
                .push(", ")
                .bind_str(&d.name)
                .push(", ")
                .bind_str(&d.digest)
                .push(", ")
                .bind_str(&d.source_type)
                .push(", ")
                .bind_str(&d.source)
                .push(", ");
            match &d.schema {
                Some(s) => sql.bind_str(s),
                None => sql.push("NULL"),
            };
            sql.push(", ");
            match &d.profile {
                Some(s) => sql.bind_str(s),
                None => sql.push("NULL"),
            };
            sql.push(", ");
            match &context {
                Some(s) => sql.bind_str(s),
                None => sql.push("NULL"),
            };
            sql.push(", ")
                .bind_str(&tags_json)
                .push(", ")
                .bind_i64(now)
                .push(")");
            sql.on_conflict_update("run_uuid, name, digest", &["tags_json", "context"]);
            sql.query(self.engine).execute(&mut *tx).await?;
        }
        for m in models {
            let mut sql = Sql::new("INSERT INTO run_model_io (run_uuid, direction, model_id, step) VALUES (");
            sql.bind_str(run_id)
                .push(", 'input', ")
                .bind_str(&m.model_id)
                .push(", 0)")
                .on_conflict_do_nothing("");
            sql.query(self.engine).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn log_outputs(&self, run_id: &str, models: &[ModelOutput]) -> StoreResult<()> {
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        let info = self.fetch_run_info(&mut *tx, run_id).await?;
        Self::require_active_run(&info)?;
        for m in models {
            let mut sql = Sql::new("INSERT INTO run_model_io (run_uuid, direction, model_id, step) VALUES (");
            sql.bind_str(run_id)
                .push(", 'output', ")
                .bind_str(&m.model_id)
                .push(", ")
                .bind_i64(m.step)
                .push(")")
                .on_conflict_update("run_uuid, direction, model_id", &["step"]);
            sql.query(self.engine).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[instrument(skip_all, fields(experiments = search.experiment_ids.len(), clauses = search.filter.len()))]
    async fn search_runs(&self, search: &RunSearch) -> StoreResult<Page<Run>> {
        let ids = search_experiment_ids(search);
        if ids.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_offset: None,
            });
        }
        let wanted = search.max_results.saturating_add(1);
        // One read transaction: the statements see one snapshot, and PostgreSQL plans them as
        // the index walks they are written for.
        let mut tx = self.planned_read().await?;
        let rows = match leading_key(search) {
            None => {
                let sql = run_search_sql(search, &ids, Part::All, wanted, search.offset);
                sql.query(self.engine).fetch_all(&mut *tx).await?
            }
            // Runs that have the leading key come first, in its index order; the rest after them.
            Some(_) => {
                let sql = run_search_sql(search, &ids, Part::WithKey, wanted, search.offset);
                let mut rows = sql.query(self.engine).fetch_all(&mut *tx).await?;
                let found = rows.len() as u64;
                if found < wanted && !filter_requires_leading_key(search) {
                    let skip = if found > 0 || search.offset == 0 {
                        0
                    } else {
                        let count = run_search_sql(search, &ids, Part::CountWithKey, 0, 0);
                        let row = count.query(self.engine).fetch_one(&mut *tx).await?;
                        let with_key = u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0);
                        search.offset.saturating_sub(with_key)
                    };
                    let rest = run_search_sql(search, &ids, Part::WithoutKey, wanted - found, skip);
                    rows.extend(rest.query(self.engine).fetch_all(&mut *tx).await?);
                }
                rows
            }
        };
        let infos = rows
            .iter()
            .map(run_info_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let page = page_of(infos, search.max_results, search.offset);
        let items = self.assemble_runs_in(&mut tx, page.items).await?;
        tx.commit().await?;
        Ok(Page {
            items,
            next_offset: page.next_offset,
        })
    }

    async fn get_metric_history(
        &self,
        run_id: &str,
        key: &str,
        offset: u64,
        max_results: u64,
    ) -> StoreResult<Page<Metric>> {
        self.fetch_run_info(&self.pool, run_id).await?;
        if let Some(reader) = self.database.bulk_reader() {
            let sql = format!(
                "SELECT {POINT_COLUMNS} FROM metrics WHERE run_uuid = ? AND key = ? \
                 ORDER BY step, timestamp, value LIMIT ? OFFSET ?"
            );
            // Each row becomes a point as it arrives: a page never holds all its rows at once.
            let mut rows = sqlx::query(&sql)
                .bind(run_id)
                .bind(key)
                .bind(i64::try_from(max_results.saturating_add(1)).unwrap_or(i64::MAX))
                .bind(i64::try_from(offset).unwrap_or(i64::MAX))
                .fetch(reader);
            let mut metrics = Vec::new();
            while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
                let (value, timestamp, step, is_nan): (f64, i64, i64, i64) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                metrics.push(Metric::new(key, loaded_value(value, is_nan), timestamp, step));
            }
            drop(rows);
            return Ok(page_of(metrics, max_results, offset));
        }
        let mut sql = Sql::new(&format!("SELECT {POINT_COLUMNS} FROM metrics WHERE run_uuid = "));
        sql.bind_str(run_id)
            .push(" AND key = ")
            .bind_str(key)
            .push(" ORDER BY step, timestamp, value");
        limit_offset(&mut sql, max_results, offset);
        let mut tx = self.planned_read().await?;
        let rows = sql.query(self.engine).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let metrics = rows
            .iter()
            .map(|row| metric_point_from_row(row, key))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(metrics, max_results, offset))
    }

    async fn get_metric_history_bulk_interval(
        &self,
        query: &BulkIntervalQuery,
    ) -> StoreResult<Vec<MetricWithRunId>> {
        let mut out = Vec::new();
        for run_id in &query.run_ids {
            self.fetch_run_info(&self.pool, run_id).await?;
            // Pick up to max_results steps spread evenly over the step range, always keeping the
            // first and last step, then return every point at those steps.
            let mut sql = Sql::new("SELECT DISTINCT step FROM metrics WHERE run_uuid = ");
            sql.bind_str(run_id).push(" AND key = ").bind_str(&query.key);
            if let Some(start) = query.start_step {
                sql.push(" AND step >= ").bind_i64(start);
            }
            if let Some(end) = query.end_step {
                sql.push(" AND step <= ").bind_i64(end);
            }
            sql.push(" ORDER BY step");
            let steps: Vec<i64> = sql
                .query(self.engine)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.try_get::<i64, _>("step"))
                .collect::<Result<_, _>>()?;
            let chosen = sample_steps(&steps, query.max_results as usize);
            for chunk in chosen.chunks(ID_CHUNK) {
                let mut sql =
                    Sql::new("SELECT key, value, timestamp, step, is_nan FROM metrics WHERE run_uuid = ");
                sql.bind_str(run_id)
                    .push(" AND key = ")
                    .bind_str(&query.key)
                    .push(" AND step IN (");
                for (i, s) in chunk.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind_i64(*s);
                }
                sql.push(") ORDER BY step, timestamp, value");
                for row in sql.query(self.engine).fetch_all(&self.pool).await? {
                    let m = metric_from_row(&row)?;
                    out.push(MetricWithRunId {
                        key: m.key,
                        value: m.value,
                        timestamp: m.timestamp,
                        step: m.step,
                        run_id: run_id.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn search_datasets(
        &self,
        experiment_ids: &[String],
        limit: u64,
    ) -> StoreResult<Vec<DatasetSummary>> {
        let ids = experiment_ids
            .iter()
            .map(|id| parse_experiment_id(id))
            .collect::<StoreResult<Vec<i64>>>()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(
            "SELECT DISTINCT r.experiment_id AS experiment_id, d.name AS name, d.digest AS digest, \
             d.context AS context FROM run_dataset_inputs d JOIN runs r ON r.run_uuid = d.run_uuid \
             WHERE r.experiment_id IN (",
        );
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind_i64(*id);
        }
        sql.push(") ORDER BY experiment_id, name, digest LIMIT ")
            .bind_i64(i64::try_from(limit).unwrap_or(i64::MAX));
        sql.query(self.engine)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(DatasetSummary {
                    experiment_id: row.try_get::<i64, _>("experiment_id")?.to_string(),
                    name: row.try_get("name")?,
                    digest: row.try_get("digest")?,
                    context: row.try_get::<Option<String>, _>("context")?,
                })
            })
            .collect()
    }
}

/// The numeric experiment ids of a search (others name no experiment).
fn search_experiment_ids(search: &RunSearch) -> Vec<i64> {
    search
        .experiment_ids
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect()
}

/// The first order-by key when it is a metric, param or tag: such a search is answered from that
/// key's `(key, value)` index (docs/architecture.md, "Performance").
fn leading_key(search: &RunSearch) -> Option<(&'static str, &OrderBy)> {
    let first = search.order_by.first()?;
    search_sql::keyed_table(first.entity).map(|table| (table, first))
}

/// Whether the filter tests the leading order key itself (other than for absence): then no run
/// without that key can match, and the statement for those runs is skipped.
fn filter_requires_leading_key(search: &RunSearch) -> bool {
    let Some((_, lead)) = leading_key(search) else {
        return false;
    };
    search.filter.iter().any(|clause| {
        clause.entity == lead.entity
            && clause.key == lead.key
            && clause.comparator != crate::search::Comparator::IsNull
    })
}

/// Which statement of a run search to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// Every matching run (no leading key): one statement.
    All,
    /// The matching runs that have the leading key, driven from its table in index order.
    WithKey,
    /// How many runs `WithKey` matches (to page past them).
    CountWithKey,
    /// The matching runs without the leading key (they sort after the others).
    WithoutKey,
}

/// One statement of a run search: `limit` rows from `offset` of `part`, in the search's order.
pub(super) fn run_search_sql(search: &RunSearch, ids: &[i64], part: Part, limit: u64, offset: u64) -> Sql {
    use search_sql::LeadingKey;
    let lead = leading_key(search);
    let leading = match (part, lead) {
        (Part::WithKey | Part::CountWithKey, Some(_)) => LeadingKey::Driving,
        (Part::WithoutKey, Some(_)) => LeadingKey::Absent,
        _ => LeadingKey::Joined,
    };
    let mut sql = Sql::new(if part == Part::CountWithKey {
        "SELECT COUNT(*) FROM "
    } else {
        "SELECT "
    });
    if part != Part::CountWithKey {
        sql.push(RUN_COLUMNS).push(" FROM ");
    }
    match (leading, lead) {
        // CROSS JOIN keeps the key's table as the outer loop on SQLite (PostgreSQL plans freely).
        (LeadingKey::Driving, Some((table, _))) => sql.push(table).push(" o0 CROSS JOIN runs r"),
        _ => sql.push("runs r"),
    };
    let order = if part == Part::CountWithKey {
        String::new()
    } else {
        search_sql::push_run_order(&mut sql, &search.order_by, leading)
    };
    sql.push(" WHERE ");
    if let Some((table, key)) = lead {
        match leading {
            LeadingKey::Driving => {
                sql.push("o0.key = ")
                    .bind_str(&key.key)
                    .push(" AND r.run_uuid = o0.run_uuid");
                if key.entity == crate::search::Entity::Metric {
                    search_sql::push_driving_metric_range(&mut sql, &search.filter, &key.key);
                }
                sql.push(" AND ");
            }
            LeadingKey::Absent => {
                sql.push("NOT EXISTS (SELECT 1 FROM ")
                    .push(table)
                    .push(" x WHERE x.run_uuid = r.run_uuid AND x.key = ")
                    .bind_str(&key.key)
                    .push(") AND ");
            }
            LeadingKey::Joined => {}
        }
    }
    sql.push("r.experiment_id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind_i64(*id);
    }
    sql.push(") AND r.lifecycle_stage IN ")
        .bind_list(search.view.stages().iter().copied());
    // A metric range the driving key's own row already tests is not tested again.
    let driving_metric = match (leading, lead) {
        (LeadingKey::Driving, Some((_, key))) if key.entity == crate::search::Entity::Metric => {
            Some(&key.key)
        }
        _ => None,
    };
    let rest = search
        .filter
        .iter()
        .filter(|c| driving_metric.is_none_or(|key| !search_sql::in_driving_range(c, key)));
    search_sql::push_run_filter(&mut sql, rest);
    if part != Part::CountWithKey {
        sql.push(" ORDER BY ")
            .push(&order)
            .push(" LIMIT ")
            .bind_i64(i64::try_from(limit).unwrap_or(i64::MAX))
            .push(" OFFSET ")
            .bind_i64(i64::try_from(offset).unwrap_or(i64::MAX));
    }
    sql
}

impl SqlStore {
    /// The engine's plan for each statement of a run search (`-- <part>` before each, the page's
    /// children last), one line per plan node: SQLite's
    /// `EXPLAIN QUERY PLAN` details, PostgreSQL's `EXPLAIN` under the settings searches run with
    /// (`planned_read`). Tests check the common filters with it.
    pub async fn explain_run_search(&self, search: &RunSearch) -> StoreResult<Vec<String>> {
        let ids = search_experiment_ids(search);
        let wanted = search.max_results.saturating_add(1);
        let parts: &[Part] = if leading_key(search).is_some() {
            &[Part::WithKey, Part::CountWithKey, Part::WithoutKey]
        } else {
            &[Part::All]
        };
        let mut tx = self.planned_read().await?;
        let mut lines = Vec::new();
        let statements = parts
            .iter()
            .map(|part| {
                (
                    format!("{part:?}"),
                    run_search_sql(search, &ids, *part, wanted, search.offset),
                )
            })
            // The page's children, for two runs.
            .chain([(
                "Children".to_owned(),
                super::run_children::children_sql(self.engine, &["a", "b"]),
            )]);
        for (part, mut sql) in statements {
            let prefix = match self.engine {
                Engine::Sqlite => "EXPLAIN QUERY PLAN ",
                Engine::Postgres | Engine::MySql => "EXPLAIN ",
            };
            sql.prepend(prefix);
            lines.push(format!("-- {part}"));
            for row in sql.query(self.engine).fetch_all(&mut *tx).await? {
                let line: String = match self.engine {
                    Engine::Sqlite => row.try_get("detail")?,
                    Engine::Postgres => row.try_get(0)?,
                    // One row per table: how it is read (`type`), through which index (`key`).
                    Engine::MySql => {
                        let column = |name: &str| -> StoreResult<String> {
                            Ok(row.try_get::<Option<String>, _>(name)?.unwrap_or_default())
                        };
                        format!(
                            "{} {} key={} {}",
                            column("table")?,
                            column("type")?,
                            column("key")?,
                            column("Extra")?
                        )
                    }
                };
                lines.push(line);
            }
        }
        tx.rollback().await?;
        Ok(lines)
    }
}

/// The queue of batches waiting for the SQLite writer (a poisoned lock still holds a valid queue).
fn lock_queue(queue: &std::sync::Mutex<Vec<PendingBatch>>) -> std::sync::MutexGuard<'_, Vec<PendingBatch>> {
    queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SqlStore {
    /// PostgreSQL, a batch of metrics only (every log-metric, a client's small batches): one
    /// statement between BEGIN and COMMIT, instead of three (the run's state, the points, the
    /// latest values). The run's state is read in the statement and guards
    /// both inserts, so a missing or deleted run writes nothing and is answered as before.
    async fn log_metrics_in_one_statement(&self, run_id: &str, metrics: &[Metric]) -> StoreResult<()> {
        let mut sql = Sql::new("WITH run AS (SELECT lifecycle_stage FROM runs WHERE run_uuid = ");
        sql.bind_str(run_id).push(
            "), points AS (INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan) \
             SELECT * FROM (VALUES ",
        );
        push_metric_rows(&mut sql, self.engine, run_id, metrics);
        sql.push(
            ") AS v WHERE (SELECT lifecycle_stage FROM run) = 'active' ON CONFLICT DO NOTHING), \
             latest AS (INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) \
             SELECT * FROM (VALUES ",
        );
        push_latest_rows(&mut sql, run_id, &latest_per_key(self.engine, metrics));
        sql.push(") AS v WHERE (SELECT lifecycle_stage FROM run) = 'active'");
        push_latest_upsert(&mut sql);
        sql.push(") SELECT lifecycle_stage FROM run");
        // An explicit transaction: in autocommit the statement's row arrives before its commit,
        // and the write is acknowledged only once COMMIT has answered (a crash in between lost
        // an acknowledged point in the outage scenario).
        let mut tx = self.pool.begin().await?;
        let row = sql
            .query(self.engine)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found_run(run_id))?;
        tx.commit().await?;
        let stage: String = row.try_get(0)?;
        if stage != LifecycleStage::Active.as_str() {
            return Err(StoreError::Invalid(format!(
                "The run {run_id} must be in the 'active' state. Current state is {stage}."
            )));
        }
        Ok(())
    }

    /// Write queued log-batches in one transaction, each under its own savepoint: a batch that
    /// fails (an unknown run, a changed param) is rolled back alone and answered with its error;
    /// the others are answered once the transaction has committed. Called with the write lock.
    async fn write_queued_batches(&self, batches: Vec<PendingBatch>) {
        let mut tx = match self.writer().begin().await {
            Ok(tx) => tx,
            Err(e) => return fail_all(batches, &e),
        };
        let mut written = Vec::with_capacity(batches.len());
        for batch in batches {
            let params: BTreeMap<&str, &str> = batch
                .params
                .iter()
                .map(|p| (p.key.as_str(), p.value.as_str()))
                .collect();
            let outcome = match sqlx::Acquire::begin(&mut *tx).await {
                Ok(mut savepoint) => {
                    let result = self
                        .write_log_batch(
                            &mut savepoint,
                            &batch.run_id,
                            &batch.metrics,
                            &params,
                            &batch.tags,
                        )
                        .await;
                    match result {
                        Ok(()) => savepoint.commit().await.map_err(StoreError::from),
                        Err(e) => {
                            // Rolling back to the savepoint can only fail with the connection.
                            let _ = savepoint.rollback().await;
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(StoreError::from(e)),
            };
            match outcome {
                Ok(()) => written.push(batch.done),
                Err(e) => {
                    let _ = batch.done.send(Err(e));
                }
            }
        }
        match tx.commit().await {
            Ok(()) => {
                for done in written {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                for done in written {
                    let _ = done.send(Err(shared_failure(&e)));
                }
            }
        }
    }

    /// One log-batch's rows, inside `tx` (validated params, at most one value per key).
    async fn write_log_batch<'c>(
        &self,
        tx: &mut sqlx::Transaction<'c, sqlx::Any>,
        run_id: &str,
        metrics: &[Metric],
        batch_params: &BTreeMap<&str, &str>,
        tags: &[Tag],
    ) -> StoreResult<()> {
        let info = self.fetch_run_info(&mut **tx, run_id).await?;
        Self::require_active_run(&info)?;

        if !batch_params.is_empty() {
            let mut sql = Sql::new("SELECT key, value FROM params WHERE run_uuid = ");
            sql.bind_str(run_id)
                .push(" AND key IN ")
                .bind_list(batch_params.keys().copied());
            for row in sql.query(self.engine).fetch_all(&mut **tx).await? {
                let key: String = row.try_get("key")?;
                let existing: String = row.try_get("value")?;
                if let Some(new) = batch_params.get(key.as_str())
                    && *new != existing
                {
                    return Err(StoreError::Invalid(format!(
                        "Changing param values is not allowed. Param with key='{key}' was already logged with \
                         value='{existing}' for run ID='{run_id}'. Attempted logging new value '{new}'."
                    )));
                }
            }
            let params: Vec<Tag> = batch_params.iter().map(|(k, v)| Tag::new(*k, *v)).collect();
            self.upsert_kv(
                tx,
                "params",
                "run_uuid",
                &Arg::Str(run_id.to_owned()),
                &params,
                false,
            )
            .await?;
        }

        if !metrics.is_empty() {
            for chunk in metrics.chunks(INSERT_CHUNK) {
                let mut sql =
                    Sql::new("INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES ");
                push_metric_rows(&mut sql, self.engine, run_id, chunk);
                sql.on_conflict_do_nothing("");
                sql.query(self.engine).execute(&mut **tx).await?;
            }
            self.insert_logged_model_metrics(tx, run_id, metrics).await?;
            let latest = latest_per_key(self.engine, metrics);
            for chunk in latest.chunks(INSERT_CHUNK) {
                let mut sql = Sql::new(
                    "INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES ",
                );
                push_latest_rows(&mut sql, run_id, chunk);
                push_latest_upsert(&mut sql);
                sql.query(self.engine).execute(&mut **tx).await?;
            }
        }

        if !tags.is_empty() {
            let tags = last_per_key(tags);
            self.upsert_kv(
                tx,
                "run_tags",
                "run_uuid",
                &Arg::Str(run_id.to_owned()),
                &tags,
                true,
            )
            .await?;
            if let Some(name) = tags.iter().find(|t| t.key == "mlflow.runName") {
                let mut sql = Sql::new("UPDATE runs SET name = ");
                sql.bind_str(&name.value)
                    .push(" WHERE run_uuid = ")
                    .bind_str(run_id);
                sql.query(self.engine).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }
}

/// `(run, key, step, timestamp, value, is_nan), …` for metric points of one run.
fn push_metric_rows(sql: &mut Sql, engine: Engine, run_id: &str, metrics: &[Metric]) {
    for (i, m) in metrics.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(").bind_str(run_id).push(", ");
        push_metric_point(sql, engine, m);
        sql.push(")");
    }
}

/// A latest-value row: the key and its (step, timestamp, value, is_nan) as stored.
type LatestRow<'a> = (&'a str, (i64, i64, f64, i64));

/// The newest point per key of a batch, as stored: the max by (step, timestamp, value).
fn latest_per_key(engine: Engine, metrics: &[Metric]) -> Vec<LatestRow<'_>> {
    let mut latest: BTreeMap<&str, (i64, i64, f64, i64)> = BTreeMap::new();
    for m in metrics {
        let (value, is_nan) = stored_value(engine, m.value);
        let candidate = (m.step, m.timestamp, value, is_nan);
        latest
            .entry(&m.key)
            .and_modify(|cur| {
                if (candidate.0, candidate.1) > (cur.0, cur.1)
                    || ((candidate.0, candidate.1) == (cur.0, cur.1) && candidate.2 > cur.2)
                {
                    *cur = candidate;
                }
            })
            .or_insert(candidate);
    }
    latest.into_iter().collect()
}

/// `(run, key, step, timestamp, value, is_nan), …` for latest-value rows.
fn push_latest_rows(sql: &mut Sql, run_id: &str, rows: &[LatestRow<'_>]) {
    for (i, (key, (step, timestamp, value, is_nan))) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(")
            .bind_str(run_id)
            .push(", ")
            .bind_str(key)
            .push(", ")
            .bind_i64(*step)
            .push(", ")
            .bind_i64(*timestamp)
            .push(", ")
            .bind(Arg::F64(*value))
            .push(", ")
            .bind_i64(*is_nan)
            .push(")");
    }
}

/// The end of a latest-value INSERT: a stored row changes only for a newer point.
fn push_latest_upsert(sql: &mut Sql) {
    // MySQL has no WHERE on an upsert: the first assignment compares the stored row with the new
    // one (before anything changed) into a session variable, and every column keeps its value
    // unless that said newer.
    sql.push_dialect(
        " ON CONFLICT (run_uuid, key) DO UPDATE SET step = excluded.step, timestamp = excluded.timestamp, \
         value = excluded.value, is_nan = excluded.is_nan \
         WHERE (excluded.step, excluded.timestamp, excluded.value) > \
         (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)",
        " ON DUPLICATE KEY UPDATE \
         is_nan = IF(@mlkube_newer := ((VALUES(step), VALUES(timestamp), VALUES(value)) > \
         (step, timestamp, value)), VALUES(is_nan), is_nan), \
         value = IF(@mlkube_newer, VALUES(value), value), \
         timestamp = IF(@mlkube_newer, VALUES(timestamp), timestamp), \
         step = IF(@mlkube_newer, VALUES(step), step)",
    );
}

/// Answer every queued batch with the error that stopped their shared transaction.
fn fail_all(batches: Vec<PendingBatch>, e: &sqlx::Error) {
    for batch in batches {
        let _ = batch.done.send(Err(shared_failure(e)));
    }
}

/// The error each batch of a failed shared transaction gets: the database could not take the
/// write, and the client may retry (a log-batch is idempotent).
fn shared_failure(e: &sqlx::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(format!(
        "the write could not be committed: {e}"
    ))))
}
