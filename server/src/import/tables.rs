//! What an import copies: one [`Plan`] per table of ours, each a query over the upstream MLflow
//! schema (docs/migrating.md lists the mapping). Every source column is cast to one of three
//! types, so SQLite's dynamic typing and PostgreSQL's booleans read the same way.

use super::schema::Source;
use crate::db::Engine;

/// How a column travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Real,
}

/// One target table: its columns with the source expression of each, and where the rows come from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Our table, as progress and errors name it.
    pub table: &'static str,
    pub columns: Vec<(&'static str, Kind, String)>,
    /// `FROM … [WHERE …]` over the source schema.
    pub from: String,
    /// How many leading columns name a row in an error message.
    pub key: usize,
    /// What an existing row does: kept (`ON CONFLICT DO NOTHING`) unless the plan says otherwise.
    pub on_conflict: &'static str,
    /// The same on a MySQL target (`None`: kept, by `INSERT IGNORE`).
    pub mysql_on_conflict: Option<&'static str>,
}

impl Plan {
    fn new(table: &'static str, from: &str, key: usize) -> Self {
        Self {
            table,
            columns: Vec::new(),
            from: from.to_owned(),
            key,
            on_conflict: " ON CONFLICT DO NOTHING",
            mysql_on_conflict: None,
        }
    }

    /// End an INSERT of this plan's rows with what an existing row does, in `sql`'s dialects.
    pub fn push_on_conflict(&self, sql: &mut crate::store::query::Sql) {
        match self.mysql_on_conflict {
            None => {
                sql.on_conflict_do_nothing("");
            }
            Some(mysql) => {
                sql.push_dialect(self.on_conflict, mysql);
            }
        }
    }

    fn text(mut self, column: &'static str, expr: &str) -> Self {
        self.columns
            .push((column, Kind::Text, format!("CAST({expr} AS TEXT)")));
        self
    }

    fn int(mut self, column: &'static str, expr: &str) -> Self {
        self.columns
            .push((column, Kind::Int, format!("CAST({expr} AS BIGINT)")));
        self
    }

    fn real(mut self, column: &'static str, expr: &str) -> Self {
        self.columns
            .push((column, Kind::Real, format!("CAST({expr} AS DOUBLE PRECISION)")));
        self
    }

    /// A boolean column (SQLite 0/1, PostgreSQL boolean) as 0/1.
    fn flag(mut self, column: &'static str, expr: &str) -> Self {
        self.columns.push((
            column,
            Kind::Int,
            format!("CAST(CASE WHEN {expr} THEN 1 ELSE 0 END AS BIGINT)"),
        ));
        self
    }

    /// `key` and `value` (never NULL here) from the source's columns of those roles.
    fn key_value(self, key: &str, value: &str) -> Self {
        self.text("key", key)
            .text("value", &format!("COALESCE({value}, '')"))
    }

    /// A metric point's `key, step, timestamp, value, is_nan` from MLflow's metric columns.
    fn point(self) -> Self {
        self.text("key", "key")
            .int("step", "COALESCE(step, 0)")
            .int("timestamp", "COALESCE(timestamp, 0)")
            .real("value", "COALESCE(value, 0)")
            .flag("is_nan", "is_nan")
    }

    pub fn select_sql(&self) -> String {
        format!("SELECT {} FROM {}", self.select_list(), self.from)
    }

    pub fn select_list(&self) -> String {
        let exprs: Vec<&str> = self.columns.iter().map(|(_, _, e)| e.as_str()).collect();
        exprs.join(", ")
    }

    /// The source table when the rows come from one table alone (no join, no filter).
    pub fn single_table(&self) -> Option<&str> {
        (!self.from.contains(' ')).then_some(self.from.as_str())
    }

    pub fn count_sql(&self) -> String {
        format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {}", self.from)
    }

    pub fn insert_head(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(n, _, _)| *n).collect();
        format!("INSERT INTO {} ({}) VALUES ", self.table, names.join(", "))
    }
}

/// The plans for `source`, in an order that satisfies our foreign keys (experiments before runs,
/// runs before their children, registered models before versions).
pub fn plans(source: &Source) -> Vec<Plan> {
    let mut out = vec![
        Plan {
            // Experiment 0 exists in every store of ours ("Default"); the upstream one replaces it.
            on_conflict: " ON CONFLICT (experiment_id) DO UPDATE SET name = excluded.name, \
                 artifact_location = excluded.artifact_location, lifecycle_stage = excluded.lifecycle_stage, \
                 creation_time = excluded.creation_time, last_update_time = excluded.last_update_time \
                 WHERE experiments.experiment_id = 0",
            // MySQL's upsert has no WHERE: each column keeps its value unless the row is id 0
            // (which no assignment changes).
            mysql_on_conflict: Some(
                " ON DUPLICATE KEY UPDATE name = IF(experiment_id = 0, VALUES(name), name), \
                 artifact_location = IF(experiment_id = 0, VALUES(artifact_location), artifact_location), \
                 lifecycle_stage = IF(experiment_id = 0, VALUES(lifecycle_stage), lifecycle_stage), \
                 creation_time = IF(experiment_id = 0, VALUES(creation_time), creation_time), \
                 last_update_time = IF(experiment_id = 0, VALUES(last_update_time), last_update_time)",
            ),
            ..Plan::new("experiments", "experiments", 1)
                .int("experiment_id", "experiment_id")
                .text("name", "name")
                .text("artifact_location", "COALESCE(artifact_location, '')")
                .text("lifecycle_stage", "COALESCE(lifecycle_stage, 'active')")
                .int("creation_time", "COALESCE(creation_time, 0)")
                .int("last_update_time", "COALESCE(last_update_time, creation_time, 0)")
        },
        Plan::new("experiment_tags", "experiment_tags", 2)
            .int("experiment_id", "experiment_id")
            .key_value("key", "value"),
        Plan::new("runs", "runs", 1)
            .text("run_uuid", "run_uuid")
            .text("name", "COALESCE(name, '')")
            .int("experiment_id", "experiment_id")
            .text("user_id", "COALESCE(user_id, '')")
            .text("status", "COALESCE(status, 'FINISHED')")
            .int("start_time", "COALESCE(start_time, 0)")
            .int("end_time", "end_time")
            .text("artifact_uri", "COALESCE(artifact_uri, '')")
            .text("lifecycle_stage", "COALESCE(lifecycle_stage, 'active')"),
        Plan::new("run_tags", "tags", 2)
            .text("run_uuid", "run_uuid")
            .key_value("key", "value"),
        Plan::new("params", "params", 2)
            .text("run_uuid", "run_uuid")
            .key_value("key", "value"),
        Plan::new("metrics", "metrics", 4)
            .text("run_uuid", "run_uuid")
            .point(),
        Plan::new("latest_metrics", "latest_metrics", 2)
            .text("run_uuid", "run_uuid")
            .point(),
    ];
    let input_tags_json = match source.engine {
        Engine::Sqlite => {
            "(SELECT json_group_array(json_array(t.name, t.value)) FROM input_tags t WHERE t.input_uuid = i.input_uuid)"
        }
        Engine::Postgres => {
            "(SELECT COALESCE(CAST(json_agg(json_build_array(t.name, t.value)) AS TEXT), '[]') \
             FROM input_tags t WHERE t.input_uuid = i.input_uuid)"
        }
        Engine::MySql => {
            "(SELECT COALESCE(CAST(JSON_ARRAYAGG(JSON_ARRAY(t.name, t.value)) AS CHAR), '[]') \
             FROM input_tags t WHERE t.input_uuid = i.input_uuid)"
        }
    };
    out.push(
        Plan::new(
            "run_dataset_inputs",
            "inputs i JOIN datasets d ON d.dataset_uuid = i.source_id \
             WHERE i.source_type = 'DATASET' AND i.destination_type = 'RUN'",
            3,
        )
        .text("run_uuid", "i.destination_id")
        .text("name", "d.name")
        .text("digest", "d.digest")
        .text("source_type", "COALESCE(d.dataset_source_type, '')")
        .text("source", "COALESCE(d.dataset_source, '')")
        .text("dataset_schema", "d.dataset_schema")
        .text("profile", "d.dataset_profile")
        .text(
            "context",
            "(SELECT c.value FROM input_tags c WHERE c.input_uuid = i.input_uuid AND c.name = 'mlflow.data.context')",
        )
        .text("tags_json", input_tags_json)
        .int("created_at", "0"),
    );
    let step = if source.has_column("inputs", "step") {
        "COALESCE(step, 0)"
    } else {
        "0"
    };
    out.push(
        Plan::new(
            "run_model_io",
            "inputs WHERE (source_type = 'RUN_INPUT' AND destination_type = 'MODEL_INPUT') \
             OR (source_type = 'RUN_OUTPUT' AND destination_type = 'MODEL_OUTPUT')",
            3,
        )
        .text("run_uuid", "source_id")
        .text(
            "direction",
            "CASE WHEN source_type = 'RUN_INPUT' THEN 'input' ELSE 'output' END",
        )
        .text("model_id", "destination_id")
        .int("step", step),
    );
    if source.has_table("logged_models") {
        out.push(
            Plan::new("logged_models", "logged_models", 1)
                .text("model_id", "model_id")
                .int("experiment_id", "experiment_id")
                .text("name", "name")
                .text("artifact_location", "COALESCE(artifact_location, '')")
                .int("creation_timestamp", "COALESCE(creation_timestamp_ms, 0)")
                .int(
                    "last_updated_timestamp",
                    "COALESCE(last_updated_timestamp_ms, creation_timestamp_ms, 0)",
                )
                // MLflow keeps the LoggedModelStatus enum's number.
                .text(
                    "status",
                    "CASE status WHEN 1 THEN 'LOGGED_MODEL_PENDING' WHEN 2 THEN 'LOGGED_MODEL_READY' \
                     WHEN 3 THEN 'LOGGED_MODEL_UPLOAD_FAILED' ELSE 'LOGGED_MODEL_STATUS_UNSPECIFIED' END",
                )
                .text("model_type", "model_type")
                .text("source_run_id", "source_run_id")
                .text("status_message", "status_message")
                .text("lifecycle_stage", "COALESCE(lifecycle_stage, 'active')"),
        );
        out.push(
            Plan::new("logged_model_tags", "logged_model_tags", 2)
                .text("model_id", "model_id")
                .key_value("tag_key", "tag_value"),
        );
        out.push(
            Plan::new("logged_model_params", "logged_model_params", 2)
                .text("model_id", "model_id")
                .key_value("param_key", "param_value"),
        );
        out.push(
            // SQLite keeps a NaN value as NULL.
            Plan::new("logged_model_metrics", "logged_model_metrics", 4)
                .text("model_id", "model_id")
                .text("key", "metric_name")
                .int("step", "COALESCE(metric_step, 0)")
                .int("timestamp", "COALESCE(metric_timestamp_ms, 0)")
                .real("value", "COALESCE(metric_value, 0)")
                .flag("is_nan", "metric_value IS NULL")
                .text("run_uuid", "COALESCE(run_id, '')")
                .text("dataset_name", "COALESCE(dataset_name, '')")
                .text("dataset_digest", "COALESCE(dataset_digest, '')"),
        );
    }
    out.push(
        Plan::new("registered_models", "registered_models", 1)
            .text("name", "name")
            .int("creation_time", "COALESCE(creation_time, 0)")
            .int(
                "last_updated_time",
                "COALESCE(last_updated_time, creation_time, 0)",
            )
            .text("description", "description")
            .text("user_id", "NULL"),
    );
    out.push(
        Plan::new("registered_model_tags", "registered_model_tags", 2)
            .text("name", "name")
            .key_value("key", "value"),
    );
    let storage_location = if source.has_column("model_versions", "storage_location") {
        "COALESCE(storage_location, source, '')"
    } else {
        "COALESCE(source, '')"
    };
    out.push(
        Plan::new("model_versions", "model_versions", 2)
            .text("name", "name")
            .int("version", "version")
            .int("creation_time", "COALESCE(creation_time, 0)")
            .int(
                "last_updated_time",
                "COALESCE(last_updated_time, creation_time, 0)",
            )
            .text("description", "description")
            .text("user_id", "user_id")
            .text("current_stage", "COALESCE(current_stage, 'None')")
            .text("source", "COALESCE(source, '')")
            .text("storage_location", storage_location)
            .text("run_id", "run_id")
            .text("run_link", "run_link")
            // MLflow 3 registers a logged model by its `models:/<model_id>` source.
            .text(
                "model_id",
                "CASE WHEN source LIKE 'models:/m-%' THEN SUBSTR(source, 9) ELSE NULL END",
            )
            .text("status", "COALESCE(status, 'READY')")
            .text("status_message", "status_message"),
    );
    out.push(
        Plan::new("model_version_tags", "model_version_tags", 3)
            .text("name", "name")
            .int("version", "version")
            .key_value("key", "value"),
    );
    out.push(
        Plan::new("registered_model_aliases", "registered_model_aliases", 2)
            .text("name", "name")
            .text("alias", "alias")
            .int("version", "version"),
    );
    out
}
