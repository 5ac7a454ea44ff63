//! What a page of runs holds besides its `runs` rows: tags, params, latest metrics, dataset inputs
//! and model inputs and outputs, read for up to `ID_CHUNK` runs at a time. On SQLite and
//! PostgreSQL one statement returns one row, each child table packed by the engine as one JSON
//! array (`json_group_array`, `json_agg`) rather than as a row each: a search page of 1000 runs has
//! thousands of child rows, and on SQLite every row is a hand-off between sqlx's worker thread and
//! the request's task, and everywhere a row costs the `Any` driver an allocation per column
//! (docs/architecture.md, "Performance"). MySQL and MariaDB cap their JSON aggregates, so there
//! the children come a row each (`plain_rows`).
//!
//! Metric values keep every bit: SQLite's JSON writes 15 significant digits, so there a value
//! travels as `printf('%!.17g')` text; PostgreSQL's `float8out` is shortest-exact at sqlx's
//! `extra_float_digits`. Children are ordered here, not by the engine, so each run's tags, params
//! and metrics come out in key order by bytes on every engine.

use std::collections::HashMap;

use serde::Deserialize;

use super::super::query::Sql;
use super::super::*;
use super::{Engine, loaded_value};

/// The children of a set of runs, by run id.
#[derive(Default)]
pub(super) struct RunChildren {
    pub tags: HashMap<String, Vec<Tag>>,
    pub params: HashMap<String, Vec<Param>>,
    pub metrics: HashMap<String, Vec<Metric>>,
    pub datasets: HashMap<String, Vec<DatasetInput>>,
    pub model_io: HashMap<String, (Vec<ModelInput>, Vec<ModelOutput>)>,
}

/// `(run, key, value)` of a tag or param.
type TagRow = (String, String, String);
/// `(run, key, value, timestamp, step, is_nan)` of a latest metric value.
type MetricRow = (String, String, JsonF64, i64, i64, i64);
/// `(run, name, digest, source_type, source, schema, profile, tags_json, created_at)`.
type DatasetRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
);
/// `(run, direction, model_id, step)`.
type ModelIoRow = (String, String, String, Option<i64>);

/// The child rows of a chunk of runs, in no particular order.
#[derive(Default)]
struct ChildRows {
    tags: Vec<TagRow>,
    params: Vec<TagRow>,
    metrics: Vec<MetricRow>,
    datasets: Vec<DatasetRow>,
    model_io: Vec<ModelIoRow>,
}

impl RunChildren {
    /// Read the children of `ids` (at most `ID_CHUNK`) in `conn` and add them.
    pub(super) async fn read(
        &mut self,
        engine: Engine,
        conn: &mut sqlx::AnyConnection,
        ids: &[&str],
    ) -> StoreResult<()> {
        let mut rows = match engine {
            Engine::Sqlite | Engine::Postgres => packed_rows(engine, conn, ids).await?,
            Engine::MySql => plain_rows(conn, ids).await?,
        };
        // Key order by bytes, the same on every engine (and within one run: each run's rows are
        // all in this chunk).
        rows.tags.sort_by(|a, b| a.1.cmp(&b.1));
        rows.params.sort_by(|a, b| a.1.cmp(&b.1));
        rows.metrics.sort_by(|a, b| a.1.cmp(&b.1));
        rows.datasets.sort_by(|a, b| (a.8, &a.1).cmp(&(b.8, &b.1)));
        rows.model_io.sort_by(|a, b| a.2.cmp(&b.2));
        for (target, tags) in [(&mut self.tags, rows.tags), (&mut self.params, rows.params)] {
            for (run, key, value) in tags {
                target.entry(run).or_default().push(Tag { key, value });
            }
        }
        for (run, key, value, timestamp, step, is_nan) in rows.metrics {
            let metric = Metric::new(key, loaded_value(value.0, is_nan), timestamp, step);
            self.metrics.entry(run).or_default().push(metric);
        }
        for (run, name, digest, source_type, source, schema, profile, tags_json, _) in rows.datasets {
            let input_tags: Vec<(String, String)> = serde_json::from_str(&tags_json).unwrap_or_default();
            self.datasets.entry(run).or_default().push(DatasetInput {
                tags: input_tags.into_iter().map(|(k, v)| Tag::new(k, v)).collect(),
                dataset: Dataset {
                    name,
                    digest,
                    source_type,
                    source,
                    schema,
                    profile,
                },
            });
        }
        for (run, direction, model_id, step) in rows.model_io {
            let entry = self.model_io.entry(run).or_default();
            if direction == "input" {
                entry.0.push(ModelInput { model_id });
            } else {
                entry.1.push(ModelOutput {
                    model_id,
                    step: step.unwrap_or_default(),
                });
            }
        }
        Ok(())
    }
}

/// SQLite and PostgreSQL: one statement, one row, each child table packed as a JSON array.
async fn packed_rows(engine: Engine, conn: &mut sqlx::AnyConnection, ids: &[&str]) -> StoreResult<ChildRows> {
    let row = children_sql(engine, ids)
        .query(engine)
        .fetch_one(&mut *conn)
        .await?;
    let column = |i: usize| -> StoreResult<Option<String>> { Ok(crate::db::opt_text(&row, i)?) };
    Ok(ChildRows {
        tags: unpack(column(0)?.as_deref())?,
        params: unpack(column(1)?.as_deref())?,
        metrics: unpack(column(2)?.as_deref())?,
        datasets: unpack(column(3)?.as_deref())?,
        model_io: unpack(column(4)?.as_deref())?,
    })
}

/// MySQL / MariaDB: a row per child. Their JSON aggregates are capped: MariaDB cuts
/// `JSON_ARRAYAGG` at `group_concat_max_len` (1 MiB by default, invalid JSON), and both answer NULL
/// (as if there were no children) past `max_allowed_packet`.
async fn plain_rows(conn: &mut sqlx::AnyConnection, ids: &[&str]) -> StoreResult<ChildRows> {
    use crate::db::{opt_text, text};
    use sqlx::Row;
    let engine = Engine::MySql;
    let select = |table: &str| -> Sql {
        let columns = child_columns(engine, table);
        let mut sql = Sql::new(&format!("SELECT {columns} FROM {table} WHERE run_uuid IN "));
        sql.bind_list(ids.iter().copied());
        sql
    };
    let mut rows = ChildRows::default();
    for (table, target) in [("run_tags", &mut rows.tags), ("params", &mut rows.params)] {
        for row in select(table).query(engine).fetch_all(&mut *conn).await? {
            target.push((text(&row, 0)?, text(&row, 1)?, text(&row, 2)?));
        }
    }
    for row in select("latest_metrics")
        .query(engine)
        .fetch_all(&mut *conn)
        .await?
    {
        rows.metrics.push((
            text(&row, 0)?,
            text(&row, 1)?,
            JsonF64(row.try_get(2)?),
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
        ));
    }
    for row in select("run_dataset_inputs")
        .query(engine)
        .fetch_all(&mut *conn)
        .await?
    {
        rows.datasets.push((
            text(&row, 0)?,
            text(&row, 1)?,
            text(&row, 2)?,
            text(&row, 3)?,
            text(&row, 4)?,
            opt_text(&row, 5)?,
            opt_text(&row, 6)?,
            text(&row, 7)?,
            row.try_get(8)?,
        ));
    }
    for row in select("run_model_io").query(engine).fetch_all(&mut *conn).await? {
        rows.model_io
            .push((text(&row, 0)?, text(&row, 1)?, text(&row, 2)?, row.try_get(3)?));
    }
    Ok(rows)
}

/// The columns read of each child table, in the order of its row type above.
fn child_columns(engine: Engine, table: &str) -> String {
    // SQLite's JSON writes 15 significant digits: a metric value travels as exact text there.
    let value = match engine {
        Engine::Sqlite => "printf('%!.17g', value)",
        Engine::Postgres | Engine::MySql => "value",
    };
    match table {
        "latest_metrics" => format!("run_uuid, key, {value}, timestamp, step, is_nan"),
        "run_dataset_inputs" => {
            "run_uuid, name, digest, source_type, source, dataset_schema, profile, tags_json, created_at"
                .to_owned()
        }
        "run_model_io" => "run_uuid, direction, model_id, step".to_owned(),
        _ => "run_uuid, key, value".to_owned(),
    }
}

/// The child tables, in the order of [`children_sql`]'s columns.
const CHILD_TABLES: [&str; 5] = [
    "run_tags",
    "params",
    "latest_metrics",
    "run_dataset_inputs",
    "run_model_io",
];

/// `SELECT (tags), (params), (latest metrics), (dataset inputs), (model io)`: each a JSON array
/// of arrays, or NULL when the table has none of `ids`. The store runs it on SQLite and PostgreSQL;
/// the MySQL text exists for `explain_run_search` (the same lookups `plain_rows` makes).
pub(super) fn children_sql(engine: Engine, ids: &[&str]) -> Sql {
    let mut sql = Sql::new("SELECT ");
    for (i, table) in CHILD_TABLES.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        let columns = child_columns(engine, table);
        let packed = match engine {
            Engine::Sqlite => format!("json_group_array(json_array({columns}))"),
            Engine::Postgres => format!("json_agg(json_build_array({columns}))::text"),
            Engine::MySql => format!("CAST(JSON_ARRAYAGG(JSON_ARRAY({columns})) AS CHAR)"),
        };
        sql.push(&format!("(SELECT {packed} FROM {table} WHERE run_uuid IN "))
            .bind_list(ids.iter().copied())
            .push(")");
    }
    sql
}

/// The rows of one packed column (none for NULL).
fn unpack<T: serde::de::DeserializeOwned>(packed: Option<&str>) -> StoreResult<Vec<T>> {
    match packed {
        None => Ok(Vec::new()),
        // Text the engine itself wrote that does not read back is a decoding failure.
        Some(text) => {
            serde_json::from_str(text).map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
        }
    }
}

/// A double as the engines write it in JSON: a number, or text (SQLite's exact `%!.17g`, and
/// PostgreSQL's "Infinity" / "-Infinity", which are not JSON numbers).
struct JsonF64(f64);

impl<'de> Deserialize<'de> for JsonF64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written<'a> {
            Number(f64),
            Text(&'a str),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(v) => Ok(Self(v)),
            Written::Text(text) => text
                .parse()
                .map(Self)
                .map_err(|_| serde::de::Error::custom(format!("not a number: {text:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_double_reads_from_a_json_number_or_any_engine_s_text() {
        let read = |json: &str| serde_json::from_str::<JsonF64>(json).unwrap().0;
        assert_eq!(read("0.30000000000000004"), 0.1 + 0.2);
        assert_eq!(read("\"0.30000000000000004\""), 0.1 + 0.2);
        assert_eq!(read("\"Infinity\""), f64::INFINITY);
        assert_eq!(read("\"-Inf\""), f64::NEG_INFINITY);
        assert_eq!(read("\"4.9406564584124654e-324\""), 5e-324);
        assert!(serde_json::from_str::<JsonF64>("\"abc\"").is_err());
    }

    #[test]
    fn no_children_and_an_empty_array_are_both_no_rows() {
        assert!(unpack::<(String, String, String)>(None).unwrap().is_empty());
        assert!(unpack::<(String, String, String)>(Some("[]")).unwrap().is_empty());
        let rows = unpack::<(String, String, String)>(Some(r#"[["r1","k","v"]]"#)).unwrap();
        assert_eq!(rows, vec![("r1".to_owned(), "k".to_owned(), "v".to_owned())]);
    }

    #[test]
    fn each_child_table_is_bound_to_the_ids_once() {
        let sql = children_sql(Engine::Postgres, &["a", "b"]);
        let text = sql.text_for(Engine::Postgres);
        assert_eq!(text.matches("json_agg").count(), 5);
        assert!(text.contains("FROM latest_metrics WHERE run_uuid IN ($5, $6)"));
        let sqlite = children_sql(Engine::Sqlite, &["a"]);
        assert!(
            sqlite
                .text_for(Engine::Sqlite)
                .contains("printf('%!.17g', value)")
        );
    }
}
