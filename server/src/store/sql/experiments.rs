//! Experiments: create, read, search, rename, lifecycle, tags.

use super::*;

#[async_trait]
impl ExperimentStore for SqlStore {
    #[instrument(skip_all, fields(name))]
    async fn create_experiment(
        &self,
        name: &str,
        artifact_location: Option<&str>,
        tags: &[Tag],
    ) -> StoreResult<String> {
        let now = now_ms();
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        let mut sql = Sql::new(
            "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time) \
             VALUES (",
        );
        sql.bind_str(name)
            .push(", ")
            .bind_str(artifact_location.unwrap_or(""))
            .push(", 'active', ")
            .bind_i64(now)
            .push(", ")
            .bind_i64(now)
            .push(")");
        // MySQL has no INSERT … RETURNING (MariaDB has): the id comes back as the last insert id.
        if self.engine != Engine::MySql {
            sql.push(" RETURNING experiment_id");
        }
        let inserted = if self.engine == Engine::MySql {
            sql.query(self.engine)
                .execute(&mut *tx)
                .await
                .map(|done| done.last_insert_id())
        } else {
            sql.query(self.engine)
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get::<i64, _>("experiment_id"))
                .map(Some)
        };
        let id: i64 = match inserted {
            Ok(Some(id)) => id,
            Ok(None) => return Err(StoreError::Database(sqlx::Error::RowNotFound)),
            Err(err) if is_unique_violation(&err) => {
                return Err(StoreError::AlreadyExists(format!(
                    "Experiment(name={name}) already exists."
                )));
            }
            Err(err) => return Err(err.into()),
        };
        if artifact_location.is_none() {
            let mut sql = Sql::new("UPDATE experiments SET artifact_location = ");
            sql.bind_str(&join_uri(&self.default_artifact_root, &id.to_string()))
                .push(" WHERE experiment_id = ")
                .bind_i64(id);
            sql.query(self.engine).execute(&mut *tx).await?;
        }
        self.upsert_kv(
            &mut tx,
            "experiment_tags",
            "experiment_id",
            &Arg::I64(id),
            &last_per_key(tags),
            true,
        )
        .await?;
        tx.commit().await?;
        Ok(id.to_string())
    }

    async fn get_experiment(&self, experiment_id: &str) -> StoreResult<Experiment> {
        let experiment = self.fetch_experiment_row(experiment_id).await?;
        let mut with_tags = self.with_experiment_tags(vec![experiment]).await?;
        with_tags.pop().ok_or_else(|| not_found_experiment(experiment_id))
    }

    async fn get_experiment_by_name(&self, name: &str) -> StoreResult<Option<Experiment>> {
        let mut sql = Sql::new(&format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE e.name = "
        ));
        sql.bind_str(name)
            .push(" ORDER BY CASE WHEN e.lifecycle_stage = 'active' THEN 0 ELSE 1 END LIMIT 1");
        match sql.query(self.engine).fetch_optional(&self.pool).await? {
            Some(row) => Ok(self
                .with_experiment_tags(vec![experiment_from_row(&row)?])
                .await?
                .pop()),
            None => Ok(None),
        }
    }

    async fn search_experiments(&self, search: &ExperimentSearch) -> StoreResult<Page<Experiment>> {
        let mut sql = Sql::new(&format!(
            "SELECT {EXPERIMENT_COLUMNS} FROM experiments e WHERE e.lifecycle_stage IN "
        ));
        sql.bind_list(search.view.stages().iter().copied());
        search_sql::push_experiment_filter(&mut sql, &search.filter);
        sql.push(" ORDER BY ")
            .push(&search_sql::experiment_order(&search.order_by));
        limit_offset(&mut sql, search.max_results, search.offset);
        let rows = sql.query(self.engine).fetch_all(&self.pool).await?;
        let experiments = rows
            .iter()
            .map(experiment_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let page = page_of(experiments, search.max_results, search.offset);
        Ok(Page {
            items: self.with_experiment_tags(page.items).await?,
            next_offset: page.next_offset,
        })
    }

    async fn rename_experiment(&self, experiment_id: &str, new_name: &str) -> StoreResult<()> {
        let experiment = self.fetch_experiment_row(experiment_id).await?;
        if experiment.lifecycle_stage != LifecycleStage::Active.as_str() {
            return Err(StoreError::Invalid(format!(
                "Cannot rename a non-active experiment. Experiment {experiment_id} is deleted."
            )));
        }
        let mut sql = Sql::new("UPDATE experiments SET name = ");
        sql.bind_str(new_name)
            .push(", last_update_time = ")
            .bind_i64(now_ms())
            .push(" WHERE experiment_id = ")
            .bind_i64(parse_experiment_id(experiment_id)?);
        let _guard = self.write_guard().await;
        match sql.query(self.engine).execute(self.writer()).await {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::AlreadyExists(format!(
                "Experiment(name={new_name}) already exists."
            ))),
            Err(err) => Err(err.into()),
        }
    }

    async fn set_experiment_lifecycle(&self, experiment_id: &str, stage: LifecycleStage) -> StoreResult<()> {
        let id = parse_experiment_id(experiment_id)?;
        let experiment = self.fetch_experiment_row(experiment_id).await?;
        if id == 0 && stage == LifecycleStage::Deleted {
            return Err(StoreError::Invalid(
                "Cannot delete the default experiment '0'.".to_owned(),
            ));
        }
        if stage == LifecycleStage::Active && experiment.lifecycle_stage == "active" {
            return Err(StoreError::Invalid(format!(
                "Cannot restore an active experiment. Experiment {experiment_id} is active."
            )));
        }
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        let mut sql = Sql::new("UPDATE experiments SET lifecycle_stage = ");
        sql.bind_str(stage.as_str())
            .push(", last_update_time = ")
            .bind_i64(now_ms())
            .push(" WHERE experiment_id = ")
            .bind_i64(id);
        sql.query(self.engine).execute(&mut *tx).await?;
        let mut sql = Sql::new("UPDATE runs SET lifecycle_stage = ");
        sql.bind_str(stage.as_str())
            .push(" WHERE experiment_id = ")
            .bind_i64(id);
        sql.query(self.engine).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_experiment_tag(&self, experiment_id: &str, tag: &Tag) -> StoreResult<()> {
        let experiment = self.fetch_experiment_row(experiment_id).await?;
        if experiment.lifecycle_stage != "active" {
            return Err(StoreError::Invalid(format!(
                "The experiment {experiment_id} must be in the 'active' state. Current state is deleted."
            )));
        }
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        self.upsert_kv(
            &mut tx,
            "experiment_tags",
            "experiment_id",
            &Arg::I64(parse_experiment_id(experiment_id)?),
            std::slice::from_ref(tag),
            true,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_experiment_tag(&self, experiment_id: &str, key: &str) -> StoreResult<()> {
        let id = parse_experiment_id(experiment_id)?;
        self.fetch_experiment_row(experiment_id).await?;
        let mut sql = Sql::new("DELETE FROM experiment_tags WHERE experiment_id = ");
        sql.bind_i64(id).push(" AND key = ").bind_str(key);
        let _guard = self.write_guard().await;
        let done = sql.query(self.engine).execute(self.writer()).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "No tag with name: {key} in experiment with id {experiment_id}"
            )));
        }
        Ok(())
    }
}
