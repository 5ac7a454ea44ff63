//! The model registry over the same SQL pool as the tracking store.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::query::{Arg, Sql};
use super::registry::*;
use super::sql::{SqlStore, is_unique_violation, last_per_key, limit_offset, page_of};
use super::{Page, StoreError, StoreResult, Tag, now_ms};
use crate::search::{Clause, Comparator, Entity, Value};

fn model_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("Registered Model with name={name} not found"))
}

fn version_not_found(name: &str, version: &str) -> StoreError {
    StoreError::NotFound(format!(
        "Model Version (name={name}, version={version}) not found"
    ))
}

fn parse_version(version: &str) -> StoreResult<i64> {
    version
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "Model version must be a positive integer, got '{version}'."
            ))
        })
}

const VERSION_COLUMNS: &str = "v.name, v.version, v.creation_time, v.last_updated_time, v.description, v.user_id, \
     v.current_stage, v.source, v.storage_location, v.run_id, v.run_link, v.model_id, v.status, v.status_message";

fn version_from_row(row: &AnyRow) -> StoreResult<ModelVersion> {
    let version: i64 = row.try_get("version")?;
    Ok(ModelVersion {
        name: row.try_get("name")?,
        version: version.to_string(),
        creation_timestamp: row.try_get("creation_time")?,
        last_updated_timestamp: row.try_get("last_updated_time")?,
        user_id: row.try_get("user_id")?,
        current_stage: row.try_get("current_stage")?,
        description: crate::db::opt_text(row, "description")?,
        source: row.try_get("source")?,
        run_id: row.try_get("run_id")?,
        status: row.try_get("status")?,
        status_message: row.try_get("status_message")?,
        tags: Vec::new(),
        run_link: row.try_get("run_link")?,
        aliases: Vec::new(),
        model_id: row.try_get("model_id")?,
        storage_location: row.try_get("storage_location")?,
    })
}

fn model_from_row(row: &AnyRow) -> StoreResult<RegisteredModel> {
    Ok(RegisteredModel {
        name: row.try_get("name")?,
        creation_timestamp: row.try_get("creation_time")?,
        last_updated_timestamp: row.try_get("last_updated_time")?,
        user_id: row.try_get("user_id")?,
        description: crate::db::opt_text(row, "description")?,
        latest_versions: Vec::new(),
        tags: Vec::new(),
        aliases: Vec::new(),
    })
}

/// `column <op> value` for registry filters (ILIKE via LOWER on both sides).
fn push_comparison(sql: &mut Sql, column: &str, clause: &Clause) {
    let op = match clause.comparator {
        Comparator::Eq => "=",
        Comparator::Ne => "<>",
        Comparator::Gt => ">",
        Comparator::Ge => ">=",
        Comparator::Lt => "<",
        Comparator::Le => "<=",
        Comparator::Like | Comparator::ILike => "LIKE",
        Comparator::In => "IN",
        Comparator::NotIn => "NOT IN",
        // The parser refuses presence tests on registry searches.
        Comparator::IsNull | Comparator::IsNotNull => {
            sql.push("1 = 0");
            return;
        }
    };
    match &clause.value {
        Value::List(items) if items.is_empty() => {
            sql.push(if clause.comparator == Comparator::In {
                "1 = 0"
            } else {
                "1 = 1"
            });
        }
        Value::List(items) => {
            sql.push(column)
                .push(" ")
                .push(op)
                .push(" ")
                .bind_list(items.iter().map(String::as_str));
        }
        Value::String(s) if clause.comparator == Comparator::ILike => {
            sql.push("LOWER(")
                .push(column)
                .push(") LIKE LOWER(")
                .bind_str(s)
                .push(")");
        }
        Value::String(s) => {
            sql.push(column).push(" ").push(op).push(" ").bind_str(s);
        }
        Value::Number(n) => {
            sql.push(column)
                .push(" ")
                .push(op)
                .push(" ")
                .bind(Arg::I64(*n as i64));
        }
    }
}

/// The tag MLflow 3 puts on prompts, which live in the registry next to models.
const IS_PROMPT_TAG: &str = "mlflow.prompt.is_prompt";

/// MLflow's store hides prompts from model searches unless the filter asks for them: its first
/// `mlflow.prompt.is_prompt` clause is `= 'true'` or `!= 'false'`. MLflow 3 clients append
/// `tag.`mlflow.prompt.is_prompt` != 'true'` to every registered-model search, which must therefore
/// also match models without the tag. Returns the clauses to apply and whether to exclude prompts.
fn prompt_filter(filter: &[Clause]) -> (Vec<&Clause>, bool) {
    let is_prompt_clause = |c: &Clause| c.entity == Entity::Tag && c.key == IS_PROMPT_TAG;
    let wants_prompts =
        filter
            .iter()
            .find(|c| is_prompt_clause(c))
            .is_some_and(|c| match (&c.comparator, &c.value) {
                (Comparator::Eq, Value::String(v)) => v.eq_ignore_ascii_case("true"),
                (Comparator::Ne, Value::String(v)) => v.eq_ignore_ascii_case("false"),
                _ => false,
            });
    if wants_prompts {
        (filter.iter().collect(), false)
    } else {
        (filter.iter().filter(|c| !is_prompt_clause(c)).collect(), true)
    }
}

/// ` AND NOT EXISTS (a prompt tag on this name)`, for `table` aliased as `p` and `name_column`.
fn push_exclude_prompts(sql: &mut Sql, table: &str, name_column: &str) {
    sql.push(&format!(
        " AND NOT EXISTS (SELECT 1 FROM {table} p WHERE p.name = {name_column} AND p.key = "
    ))
    .bind_str(IS_PROMPT_TAG)
    .push(" AND p.value = ")
    .bind_str("true")
    .push(")");
}

// === impl SqlStore (registry helpers) ===

impl SqlStore {
    async fn fetch_model_row(&self, name: &str) -> StoreResult<RegisteredModel> {
        let mut sql = Sql::new(
            "SELECT name, creation_time, last_updated_time, description, user_id FROM registered_models WHERE name = ",
        );
        sql.bind_str(name);
        let row = sql
            .query(self.engine)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| model_not_found(name))?;
        model_from_row(&row)
    }

    async fn fetch_version_row(&self, name: &str, version: &str) -> StoreResult<ModelVersion> {
        let number = parse_version(version)?;
        let mut sql = Sql::new(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v WHERE v.name = "
        ));
        sql.bind_str(name)
            .push(" AND v.version = ")
            .bind_i64(number)
            .push(" AND v.current_stage <> ");
        sql.bind_str(DELETED_STAGE);
        let row = sql
            .query(self.engine)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| version_not_found(name, version))?;
        version_from_row(&row)
    }

    /// Fill tags and aliases of versions (bulk, by model name).
    async fn decorate_versions(&self, mut versions: Vec<ModelVersion>) -> StoreResult<Vec<ModelVersion>> {
        if versions.is_empty() {
            return Ok(versions);
        }
        let mut names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut tags: HashMap<(String, String), Vec<Tag>> = HashMap::new();
        let mut aliases: HashMap<(String, String), Vec<String>> = HashMap::new();
        for chunk in names.chunks(500) {
            let mut sql = Sql::new("SELECT name, version, key, value FROM model_version_tags WHERE name IN ");
            sql.bind_list(chunk.iter().copied()).push(" ORDER BY key");
            for row in sql.query(self.engine).fetch_all(&self.pool).await? {
                let version: i64 = row.try_get("version")?;
                tags.entry((row.try_get("name")?, version.to_string()))
                    .or_default()
                    .push(Tag {
                        key: row.try_get("key")?,
                        value: row.try_get("value")?,
                    });
            }
            let mut sql =
                Sql::new("SELECT name, alias, version FROM registered_model_aliases WHERE name IN ");
            sql.bind_list(chunk.iter().copied()).push(" ORDER BY alias");
            for row in sql.query(self.engine).fetch_all(&self.pool).await? {
                let version: i64 = row.try_get("version")?;
                aliases
                    .entry((row.try_get("name")?, version.to_string()))
                    .or_default()
                    .push(row.try_get("alias")?);
            }
        }
        for v in &mut versions {
            let key = (v.name.clone(), v.version.clone());
            v.tags = tags.remove(&key).unwrap_or_default();
            v.aliases = aliases.remove(&key).unwrap_or_default();
        }
        Ok(versions)
    }

    /// Fill tags, aliases and latest versions per stage of registered models.
    async fn decorate_models(&self, mut models: Vec<RegisteredModel>) -> StoreResult<Vec<RegisteredModel>> {
        let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        let mut tags: HashMap<String, Vec<Tag>> = HashMap::new();
        let mut aliases: HashMap<String, Vec<AliasRef>> = HashMap::new();
        let mut latest: HashMap<String, Vec<ModelVersion>> = HashMap::new();
        for chunk in names.chunks(500) {
            let mut sql = Sql::new("SELECT name, key, value FROM registered_model_tags WHERE name IN ");
            sql.bind_list(chunk.iter().map(String::as_str))
                .push(" ORDER BY key");
            for row in sql.query(self.engine).fetch_all(&self.pool).await? {
                tags.entry(row.try_get("name")?).or_default().push(Tag {
                    key: row.try_get("key")?,
                    value: row.try_get("value")?,
                });
            }
            let mut sql =
                Sql::new("SELECT name, alias, version FROM registered_model_aliases WHERE name IN ");
            sql.bind_list(chunk.iter().map(String::as_str))
                .push(" ORDER BY alias");
            for row in sql.query(self.engine).fetch_all(&self.pool).await? {
                let version: i64 = row.try_get("version")?;
                aliases.entry(row.try_get("name")?).or_default().push(AliasRef {
                    alias: row.try_get("alias")?,
                    version: version.to_string(),
                });
            }
            let mut sql = Sql::new(&format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions v JOIN (SELECT name, current_stage, MAX(version) AS \
                 version FROM model_versions WHERE name IN "
            ));
            sql.bind_list(chunk.iter().map(String::as_str))
                .push(" AND current_stage <> ")
                .bind_str(DELETED_STAGE)
                .push(
                    " GROUP BY name, current_stage) l ON l.name = v.name AND l.version = v.version \
                     ORDER BY v.version",
                );
            let rows = sql.query(self.engine).fetch_all(&self.pool).await?;
            let versions = rows
                .iter()
                .map(version_from_row)
                .collect::<StoreResult<Vec<_>>>()?;
            for v in self.decorate_versions(versions).await? {
                latest.entry(v.name.clone()).or_default().push(v);
            }
        }
        for m in &mut models {
            m.tags = tags.remove(&m.name).unwrap_or_default();
            m.aliases = aliases.remove(&m.name).unwrap_or_default();
            m.latest_versions = latest.remove(&m.name).unwrap_or_default();
        }
        Ok(models)
    }

    async fn touch_model(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str) -> StoreResult<()> {
        let mut sql = Sql::new("UPDATE registered_models SET last_updated_time = ");
        sql.bind_i64(now_ms()).push(" WHERE name = ").bind_str(name);
        sql.query(self.engine).execute(&mut **tx).await?;
        Ok(())
    }

    async fn upsert_tag(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        table: &str,
        keys: &[(&str, Arg)],
        tag: &Tag,
    ) -> StoreResult<()> {
        let columns: Vec<&str> = keys.iter().map(|(c, _)| *c).collect();
        let mut sql = Sql::new(&format!(
            "INSERT INTO {table} ({}, key, value) VALUES (",
            columns.join(", ")
        ));
        for (_, arg) in keys {
            sql.bind(arg.clone()).push(", ");
        }
        sql.bind_str(&tag.key).push(", ").bind_str(&tag.value);
        sql.push(")")
            .on_conflict_update(&format!("{}, key", columns.join(", ")), &["value"]);
        sql.query(self.engine).execute(&mut **tx).await?;
        Ok(())
    }
}

#[async_trait]
impl Registry for SqlStore {
    async fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[Tag],
        user_id: Option<&str>,
    ) -> StoreResult<RegisteredModel> {
        let now = now_ms();
        {
            let _guard = self.write_guard().await;
            let mut tx = self.writer().begin().await?;
            let mut sql = Sql::new(
                "INSERT INTO registered_models (name, creation_time, last_updated_time, description, user_id) VALUES (",
            );
            sql.bind_str(name)
                .push(", ")
                .bind_i64(now)
                .push(", ")
                .bind_i64(now)
                .push(", ");
            match description {
                Some(d) => sql.bind_str(d),
                None => sql.push("NULL"),
            };
            sql.push(", ");
            match user_id {
                Some(u) => sql.bind_str(u),
                None => sql.push("NULL"),
            };
            sql.push(")");
            match sql.query(self.engine).execute(&mut *tx).await {
                Ok(_) => {}
                Err(err) if is_unique_violation(&err) => {
                    return Err(StoreError::AlreadyExists(format!(
                        "Registered Model (name={name}) already exists."
                    )));
                }
                Err(err) => return Err(err.into()),
            }
            for tag in last_per_key(tags) {
                self.upsert_tag(
                    &mut tx,
                    "registered_model_tags",
                    &[("name", Arg::Str(name.to_owned()))],
                    &tag,
                )
                .await?;
            }
            tx.commit().await?;
        }
        self.get_registered_model(name).await
    }

    async fn get_registered_model(&self, name: &str) -> StoreResult<RegisteredModel> {
        let model = self.fetch_model_row(name).await?;
        self.decorate_models(vec![model])
            .await?
            .pop()
            .ok_or_else(|| model_not_found(name))
    }

    async fn rename_registered_model(&self, name: &str, new_name: &str) -> StoreResult<RegisteredModel> {
        self.fetch_model_row(name).await?;
        {
            let _guard = self.write_guard().await;
            let mut tx = self.writer().begin().await?;
            let mut sql = Sql::new("UPDATE registered_models SET name = ");
            sql.bind_str(new_name)
                .push(", last_updated_time = ")
                .bind_i64(now_ms())
                .push(" WHERE name = ");
            sql.bind_str(name);
            match sql.query(self.engine).execute(&mut *tx).await {
                Ok(_) => {}
                Err(err) if is_unique_violation(&err) => {
                    return Err(StoreError::AlreadyExists(format!(
                        "Registered Model (name={new_name}) already exists."
                    )));
                }
                Err(err) => return Err(err.into()),
            }
            tx.commit().await?;
        }
        self.get_registered_model(new_name).await
    }

    async fn update_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> StoreResult<RegisteredModel> {
        self.fetch_model_row(name).await?;
        let mut sql = Sql::new("UPDATE registered_models SET description = ");
        match description {
            Some(d) => sql.bind_str(d),
            None => sql.push("NULL"),
        };
        sql.push(", last_updated_time = ")
            .bind_i64(now_ms())
            .push(" WHERE name = ")
            .bind_str(name);
        {
            let _guard = self.write_guard().await;
            sql.query(self.engine).execute(self.writer()).await?;
        }
        self.get_registered_model(name).await
    }

    async fn delete_registered_model(&self, name: &str) -> StoreResult<()> {
        self.fetch_model_row(name).await?;
        let mut sql = Sql::new("DELETE FROM registered_models WHERE name = ");
        sql.bind_str(name);
        let _guard = self.write_guard().await;
        sql.query(self.engine).execute(self.writer()).await?;
        Ok(())
    }

    async fn search_registered_models(&self, search: &RegistrySearch) -> StoreResult<Page<RegisteredModel>> {
        let mut sql = Sql::new(
            "SELECT m.name, m.creation_time, m.last_updated_time, m.description, m.user_id FROM registered_models m \
             WHERE 1 = 1",
        );
        let (clauses, exclude_prompts) = prompt_filter(&search.filter);
        if exclude_prompts {
            push_exclude_prompts(&mut sql, "registered_model_tags", "m.name");
        }
        for clause in clauses {
            sql.push(" AND ");
            if clause.entity == Entity::Tag {
                sql.push("EXISTS (SELECT 1 FROM registered_model_tags f WHERE f.name = m.name AND f.key = ")
                    .bind_str(&clause.key)
                    .push(" AND ");
                push_comparison(&mut sql, "f.value", clause);
                sql.push(")");
            } else {
                push_comparison(&mut sql, "m.name", clause);
            }
        }
        let mut order: Vec<String> = search
            .order_by
            .iter()
            .map(|o| {
                let column = match o.key.as_str() {
                    "creation_timestamp" | "timestamp" => "m.creation_time",
                    "last_updated_timestamp" => "m.last_updated_time",
                    _ => "m.name",
                };
                format!("{column} {}", if o.ascending { "ASC" } else { "DESC" })
            })
            .collect();
        order.push("m.name ASC".to_owned());
        sql.push(" ORDER BY ").push(&order.join(", "));
        limit_offset(&mut sql, search.max_results, search.offset);
        let rows = sql.query(self.engine).fetch_all(&self.pool).await?;
        let models = rows.iter().map(model_from_row).collect::<StoreResult<Vec<_>>>()?;
        let page = page_of(models, search.max_results, search.offset);
        Ok(Page {
            items: self.decorate_models(page.items).await?,
            next_offset: page.next_offset,
        })
    }

    async fn set_registered_model_tag(&self, name: &str, tag: &Tag) -> StoreResult<()> {
        self.fetch_model_row(name).await?;
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        self.upsert_tag(
            &mut tx,
            "registered_model_tags",
            &[("name", Arg::Str(name.to_owned()))],
            tag,
        )
        .await?;
        self.touch_model(&mut tx, name).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_registered_model_tag(&self, name: &str, key: &str) -> StoreResult<()> {
        self.fetch_model_row(name).await?;
        // Deleting an absent tag is a no-op, as in MLflow's SQL store.
        let mut sql = Sql::new("DELETE FROM registered_model_tags WHERE name = ");
        sql.bind_str(name).push(" AND key = ").bind_str(key);
        let _guard = self.write_guard().await;
        sql.query(self.engine).execute(self.writer()).await?;
        Ok(())
    }

    async fn create_model_version(&self, new: NewModelVersion) -> StoreResult<ModelVersion> {
        self.fetch_model_row(&new.name).await?;
        let now = now_ms();
        let number;
        {
            let _guard = self.write_guard().await;
            let mut tx = self.writer().begin().await?;
            // Version numbers count every version ever created, deleted ones included. The unique
            // key makes a concurrent creator fail and retry rather than share a number.
            let mut attempt = 0;
            loop {
                let mut sql =
                    Sql::new("SELECT COALESCE(MAX(version), 0) AS v FROM model_versions WHERE name = ");
                sql.bind_str(&new.name);
                let row = sql.query(self.engine).fetch_one(&mut *tx).await?;
                let candidate: i64 = row.try_get::<i64, _>("v")? + 1;
                let mut sql = Sql::new(
                    "INSERT INTO model_versions (name, version, creation_time, last_updated_time, description, \
                     user_id, current_stage, source, storage_location, run_id, run_link, model_id, status) VALUES (",
                );
                sql.bind_str(&new.name)
                    .push(", ")
                    .bind_i64(candidate)
                    .push(", ")
                    .bind_i64(now)
                    .push(", ");
                sql.bind_i64(now).push(", ");
                for opt in [&new.description, &new.user_id] {
                    match opt {
                        Some(s) => sql.bind_str(s),
                        None => sql.push("NULL"),
                    };
                    sql.push(", ");
                }
                sql.push("'None', ")
                    .bind_str(&new.source)
                    .push(", ")
                    .bind_str(&new.storage_location)
                    .push(", ");
                for (i, opt) in [&new.run_id, &new.run_link, &new.model_id]
                    .into_iter()
                    .enumerate()
                {
                    if i > 0 {
                        sql.push(", ");
                    }
                    match opt {
                        Some(s) => sql.bind_str(s),
                        None => sql.push("NULL"),
                    };
                }
                sql.push(", 'READY')").on_conflict_do_nothing("");
                let inserted = sql.query(self.engine).execute(&mut *tx).await?.rows_affected();
                if inserted == 1 {
                    number = candidate;
                    break;
                }
                attempt += 1;
                if attempt > 20 {
                    return Err(StoreError::Invalid(
                        "Could not allocate a model version number; retry.".into(),
                    ));
                }
            }
            for tag in last_per_key(&new.tags) {
                let keys = [
                    ("name", Arg::Str(new.name.clone())),
                    ("version", Arg::I64(number)),
                ];
                self.upsert_tag(&mut tx, "model_version_tags", &keys, &tag)
                    .await?;
            }
            self.touch_model(&mut tx, &new.name).await?;
            tx.commit().await?;
        }
        self.get_model_version(&new.name, &number.to_string()).await
    }

    async fn get_model_version(&self, name: &str, version: &str) -> StoreResult<ModelVersion> {
        let v = self.fetch_version_row(name, version).await?;
        self.decorate_versions(vec![v])
            .await?
            .pop()
            .ok_or_else(|| version_not_found(name, version))
    }

    async fn update_model_version(
        &self,
        name: &str,
        version: &str,
        description: Option<&str>,
    ) -> StoreResult<ModelVersion> {
        let number = parse_version(version)?;
        self.fetch_version_row(name, version).await?;
        let mut sql = Sql::new("UPDATE model_versions SET description = ");
        match description {
            Some(d) => sql.bind_str(d),
            None => sql.push("NULL"),
        };
        sql.push(", last_updated_time = ").bind_i64(now_ms());
        sql.push(" WHERE name = ")
            .bind_str(name)
            .push(" AND version = ")
            .bind_i64(number);
        {
            let _guard = self.write_guard().await;
            sql.query(self.engine).execute(self.writer()).await?;
        }
        self.get_model_version(name, version).await
    }

    async fn transition_model_version_stage(
        &self,
        name: &str,
        version: &str,
        stage: &str,
        archive_existing_versions: bool,
    ) -> StoreResult<ModelVersion> {
        let stage = canonical_stage(stage).ok_or_else(|| {
            StoreError::Invalid(format!(
                "Invalid Model Version stage: {stage}. Value must be one of {}.",
                STAGES.join(", ")
            ))
        })?;
        if archive_existing_versions && !matches!(stage, "Staging" | "Production") {
            return Err(StoreError::Invalid(format!(
                "Model version transition cannot archive existing model versions because '{stage}' is not an \
                 Active stage. Valid stages are Staging, Production."
            )));
        }
        let number = parse_version(version)?;
        self.fetch_version_row(name, version).await?;
        let now = now_ms();
        {
            let _guard = self.write_guard().await;
            let mut tx = self.writer().begin().await?;
            if archive_existing_versions {
                let mut sql =
                    Sql::new("UPDATE model_versions SET current_stage = 'Archived', last_updated_time = ");
                sql.bind_i64(now)
                    .push(" WHERE name = ")
                    .bind_str(name)
                    .push(" AND current_stage = ");
                sql.bind_str(stage).push(" AND version <> ").bind_i64(number);
                sql.query(self.engine).execute(&mut *tx).await?;
            }
            let mut sql = Sql::new("UPDATE model_versions SET current_stage = ");
            sql.bind_str(stage).push(", last_updated_time = ").bind_i64(now);
            sql.push(" WHERE name = ")
                .bind_str(name)
                .push(" AND version = ")
                .bind_i64(number);
            sql.query(self.engine).execute(&mut *tx).await?;
            self.touch_model(&mut tx, name).await?;
            tx.commit().await?;
        }
        self.get_model_version(name, version).await
    }

    async fn delete_model_version(&self, name: &str, version: &str) -> StoreResult<()> {
        let number = parse_version(version)?;
        self.fetch_version_row(name, version).await?;
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        let mut sql = Sql::new("UPDATE model_versions SET current_stage = ");
        sql.bind_str(DELETED_STAGE)
            .push(", last_updated_time = ")
            .bind_i64(now_ms());
        sql.push(" WHERE name = ")
            .bind_str(name)
            .push(" AND version = ")
            .bind_i64(number);
        sql.query(self.engine).execute(&mut *tx).await?;
        let mut sql = Sql::new("DELETE FROM registered_model_aliases WHERE name = ");
        sql.bind_str(name).push(" AND version = ").bind_i64(number);
        sql.query(self.engine).execute(&mut *tx).await?;
        let mut sql = Sql::new("DELETE FROM model_version_tags WHERE name = ");
        sql.bind_str(name).push(" AND version = ").bind_i64(number);
        sql.query(self.engine).execute(&mut *tx).await?;
        self.touch_model(&mut tx, name).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn search_model_versions(&self, search: &RegistrySearch) -> StoreResult<Page<ModelVersion>> {
        let mut sql = Sql::new(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions v WHERE v.current_stage <> "
        ));
        sql.bind_str(DELETED_STAGE);
        let (clauses, exclude_prompts) = prompt_filter(&search.filter);
        if exclude_prompts {
            push_exclude_prompts(&mut sql, "model_version_tags", "v.name");
        }
        for clause in clauses {
            sql.push(" AND ");
            if clause.entity == Entity::Tag {
                sql.push(
                    "EXISTS (SELECT 1 FROM model_version_tags f WHERE f.name = v.name AND f.version = v.version \
                     AND f.key = ",
                )
                .bind_str(&clause.key)
                .push(" AND ");
                push_comparison(&mut sql, "f.value", clause);
                sql.push(")");
            } else {
                let column = match clause.key.as_str() {
                    "version_number" => "v.version",
                    "run_id" => "v.run_id",
                    "source_path" => "v.source",
                    _ => "v.name",
                };
                push_comparison(&mut sql, column, clause);
            }
        }
        let mut order: Vec<String> = search
            .order_by
            .iter()
            .map(|o| {
                let column = match o.key.as_str() {
                    "version_number" => "v.version",
                    "creation_timestamp" | "timestamp" => "v.creation_time",
                    "last_updated_timestamp" => "v.last_updated_time",
                    _ => "v.name",
                };
                format!("{column} {}", if o.ascending { "ASC" } else { "DESC" })
            })
            .collect();
        order.push("v.name ASC, v.version DESC".to_owned());
        sql.push(" ORDER BY ").push(&order.join(", "));
        limit_offset(&mut sql, search.max_results, search.offset);
        let rows = sql.query(self.engine).fetch_all(&self.pool).await?;
        let versions = rows
            .iter()
            .map(version_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let page = page_of(versions, search.max_results, search.offset);
        Ok(Page {
            items: self.decorate_versions(page.items).await?,
            next_offset: page.next_offset,
        })
    }

    async fn get_latest_versions(&self, name: &str, stages: &[String]) -> StoreResult<Vec<ModelVersion>> {
        let mut model = self.get_registered_model(name).await?;
        let wanted: Vec<&str> = stages
            .iter()
            .map(|s| {
                canonical_stage(s).ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "Invalid Model Version stage: {s}. Value must be one of {}.",
                        STAGES.join(", ")
                    ))
                })
            })
            .collect::<StoreResult<_>>()?;
        model
            .latest_versions
            .retain(|v| wanted.is_empty() || wanted.contains(&v.current_stage.as_str()));
        Ok(model.latest_versions)
    }

    async fn set_model_version_tag(&self, name: &str, version: &str, tag: &Tag) -> StoreResult<()> {
        let number = parse_version(version)?;
        self.fetch_version_row(name, version).await?;
        let _guard = self.write_guard().await;
        let mut tx = self.writer().begin().await?;
        let keys = [("name", Arg::Str(name.to_owned())), ("version", Arg::I64(number))];
        self.upsert_tag(&mut tx, "model_version_tags", &keys, tag).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_model_version_tag(&self, name: &str, version: &str, key: &str) -> StoreResult<()> {
        let number = parse_version(version)?;
        self.fetch_version_row(name, version).await?;
        let mut sql = Sql::new("DELETE FROM model_version_tags WHERE name = ");
        sql.bind_str(name)
            .push(" AND version = ")
            .bind_i64(number)
            .push(" AND key = ")
            .bind_str(key);
        // Deleting an absent tag is a no-op, as in MLflow's SQL store.
        let _guard = self.write_guard().await;
        sql.query(self.engine).execute(self.writer()).await?;
        Ok(())
    }

    async fn set_alias(&self, name: &str, alias: &str, version: &str) -> StoreResult<()> {
        let number = parse_version(version)?;
        self.fetch_version_row(name, version).await?;
        let mut sql = Sql::new("INSERT INTO registered_model_aliases (name, alias, version) VALUES (");
        sql.bind_str(name)
            .push(", ")
            .bind_str(alias)
            .push(", ")
            .bind_i64(number);
        sql.push(")").on_conflict_update("name, alias", &["version"]);
        let _guard = self.write_guard().await;
        sql.query(self.engine).execute(self.writer()).await?;
        Ok(())
    }

    async fn delete_alias(&self, name: &str, alias: &str) -> StoreResult<()> {
        self.fetch_model_row(name).await?;
        let mut sql = Sql::new("DELETE FROM registered_model_aliases WHERE name = ");
        sql.bind_str(name).push(" AND alias = ").bind_str(alias);
        // Deleting an absent alias is a no-op, as in MLflow's SQL store.
        let _guard = self.write_guard().await;
        sql.query(self.engine).execute(self.writer()).await?;
        Ok(())
    }

    async fn get_version_by_alias(&self, name: &str, alias: &str) -> StoreResult<ModelVersion> {
        self.fetch_model_row(name).await?;
        let mut sql = Sql::new("SELECT version FROM registered_model_aliases WHERE name = ");
        sql.bind_str(name).push(" AND alias = ").bind_str(alias);
        let row = sql
            .query(self.engine)
            .fetch_optional(&self.pool)
            .await?
            // MLflow answers an unknown alias of an existing model with 400 INVALID_PARAMETER_VALUE,
            // not 404 (its SQL and file stores alike); clients and the operator rely on that answer.
            .ok_or_else(|| StoreError::Invalid(format!("Registered model alias {alias} not found.")))?;
        let version: i64 = row.try_get("version")?;
        self.get_model_version(name, &version.to_string()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_and_versions() {
        assert_eq!(canonical_stage("production"), Some("Production"));
        assert_eq!(canonical_stage("NONE"), Some("None"));
        assert_eq!(canonical_stage("live"), None);
        assert!(parse_version("0").is_err() && parse_version("x").is_err());
        assert_eq!(parse_version("12").unwrap(), 12);
    }

    #[test]
    fn prompts_hidden_unless_asked_for() {
        let parse = |f: &str| crate::search::parse_registered_model_filter(f).unwrap();
        let keys = |clauses: Vec<&Clause>| clauses.iter().map(|c| c.key.clone()).collect::<Vec<_>>();

        // What MLflow 3 clients send on every search: the prompt clause is dropped, prompts excluded.
        let filter = parse("name LIKE 'a%' AND tag.`mlflow.prompt.is_prompt` != 'true'");
        let (clauses, exclude) = prompt_filter(&filter);
        assert!(exclude);
        assert_eq!(keys(clauses), ["name"]);
        assert!(prompt_filter(&parse("")).1);
        assert!(prompt_filter(&parse("tags.`mlflow.prompt.is_prompt` = 'false'")).1);

        // Asking for prompts keeps the clause as an ordinary tag filter.
        for wanted in [
            "tags.`mlflow.prompt.is_prompt` = 'true'",
            "tags.`mlflow.prompt.is_prompt` != 'false'",
        ] {
            let filter = parse(wanted);
            let (clauses, exclude) = prompt_filter(&filter);
            assert!(!exclude, "{wanted}");
            assert_eq!(keys(clauses), [IS_PROMPT_TAG]);
        }
    }
}
