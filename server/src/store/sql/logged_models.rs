//! MLflow 3 logged models: create, finalize, tags, params, delete, search.

use super::*;

#[async_trait]
impl LoggedModelStore for SqlStore {
    async fn create_logged_model(&self, model: NewLoggedModel) -> StoreResult<LoggedModel> {
        let experiment = self.fetch_experiment_row(&model.experiment_id).await?;
        if experiment.lifecycle_stage != "active" {
            return Err(StoreError::Invalid(format!(
                "The experiment {} must be in the 'active' state.",
                model.experiment_id
            )));
        }
        if let Some(run_id) = &model.source_run_id {
            self.fetch_run_info(&self.pool, run_id).await?;
        }
        let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
        let artifact_location = join_uri(
            &join_uri(&join_uri(&experiment.artifact_location, "models"), &model_id),
            "artifacts",
        );
        let now = now_ms();
        {
            let _guard = self.write_guard().await;
            let mut tx = self.writer().begin().await?;
            let mut sql = Sql::new(
                "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location, creation_timestamp, \
                 last_updated_timestamp, status, model_type, source_run_id) VALUES (",
            );
            sql.bind_str(&model_id)
                .push(", ")
                .bind_i64(parse_experiment_id(&model.experiment_id)?)
                .push(", ")
                .bind_str(&model.name)
                .push(", ")
                .bind_str(&artifact_location)
                .push(", ")
                .bind_i64(now)
                .push(", ")
                .bind_i64(now)
                .push(", 'LOGGED_MODEL_PENDING', ");
            match &model.model_type {
                Some(t) => sql.bind_str(t),
                None => sql.push("NULL"),
            };
            sql.push(", ");
            match &model.source_run_id {
                Some(r) => sql.bind_str(r),
                None => sql.push("NULL"),
            };
            sql.push(")");
            sql.query(self.engine).execute(&mut *tx).await?;
            self.upsert_kv(
                &mut tx,
                "logged_model_tags",
                "model_id",
                &Arg::Str(model_id.clone()),
                &last_per_key(&model.tags),
                true,
            )
            .await?;
            self.upsert_kv(
                &mut tx,
                "logged_model_params",
                "model_id",
                &Arg::Str(model_id.clone()),
                &last_per_key(&model.params),
                true,
            )
            .await?;
            tx.commit().await?;
        }
        self.get_logged_model(&model_id).await
    }

    async fn get_logged_model(&self, model_id: &str) -> StoreResult<LoggedModel> {
        let mut sql =
            Sql::new("SELECT * FROM logged_models WHERE lifecycle_stage = 'active' AND model_id = ");
        sql.bind_str(model_id);
        self.fetch_logged_models(sql)
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("Logged model with ID '{model_id}' not found.")))
    }

    async fn finalize_logged_model(&self, model_id: &str, status: &str) -> StoreResult<LoggedModel> {
        self.get_logged_model(model_id).await?;
        let mut sql = Sql::new("UPDATE logged_models SET status = ");
        sql.bind_str(status)
            .push(", last_updated_timestamp = ")
            .bind_i64(now_ms())
            .push(" WHERE model_id = ")
            .bind_str(model_id);
        {
            let _guard = self.write_guard().await;
            sql.query(self.engine).execute(self.writer()).await?;
        }
        self.get_logged_model(model_id).await
    }

    async fn set_logged_model_tags(&self, model_id: &str, tags: &[Tag]) -> StoreResult<()> {
        self.get_logged_model(model_id).await?;
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        self.upsert_kv(
            &mut tx,
            "logged_model_tags",
            "model_id",
            &Arg::Str(model_id.to_owned()),
            &last_per_key(tags),
            true,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_logged_model_tag(&self, model_id: &str, key: &str) -> StoreResult<()> {
        self.get_logged_model(model_id).await?;
        let mut sql = Sql::new("DELETE FROM logged_model_tags WHERE model_id = ");
        sql.bind_str(model_id).push(" AND key = ").bind_str(key);
        let _guard = self.write_guard().await;
        let done = sql.query(self.engine).execute(self.writer()).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "No tag with key {key} on logged model {model_id}"
            )));
        }
        Ok(())
    }

    async fn log_logged_model_params(&self, model_id: &str, params: &[Tag]) -> StoreResult<()> {
        self.get_logged_model(model_id).await?;
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        self.upsert_kv(
            &mut tx,
            "logged_model_params",
            "model_id",
            &Arg::Str(model_id.to_owned()),
            &last_per_key(params),
            true,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_logged_model(&self, model_id: &str) -> StoreResult<()> {
        self.get_logged_model(model_id).await?;
        let mut sql = Sql::new("UPDATE logged_models SET lifecycle_stage = 'deleted' WHERE model_id = ");
        sql.bind_str(model_id);
        let _guard = self.write_guard().await;
        sql.query(self.engine).execute(self.writer()).await?;
        Ok(())
    }

    async fn search_logged_models(&self, search: &LoggedModelSearch) -> StoreResult<Page<LoggedModel>> {
        let ids = search
            .experiment_ids
            .iter()
            .map(|id| {
                id.parse::<i64>()
                    .map_err(|_| StoreError::Invalid(format!("Invalid experiment ID: '{id}'")))
            })
            .collect::<StoreResult<Vec<i64>>>()?;
        let mut sql = Sql::new("SELECT m.* FROM logged_models m WHERE m.lifecycle_stage = 'active'");
        if !ids.is_empty() {
            sql.push(" AND m.experiment_id IN (");
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_i64(*id);
            }
            sql.push(")");
        }
        search_sql::push_logged_model_filter(&mut sql, &search.filter, &search.datasets);
        search_sql::push_logged_model_order(&mut sql, &search.order_by);
        limit_offset(&mut sql, search.max_results, search.offset);
        let models = self.fetch_logged_models(sql).await?;
        Ok(page_of(models, search.max_results, search.offset))
    }
}
