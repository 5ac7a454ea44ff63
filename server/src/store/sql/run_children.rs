//! What a page of runs holds besides its `runs` rows: tags, params, latest metrics, dataset inputs
//! and model inputs and outputs, read for up to `ID_CHUNK` runs by one statement that returns one
//! row. Each child table comes back packed by the engine as one JSON array (`json_group_array`,
//! `json_agg`, `JSON_ARRAYAGG`) rather than as a row each: a search page of 1000 runs has thousands
//! of child rows, and on SQLite every row is a hand-off between sqlx's worker thread and the
//! request's task, and everywhere a row costs the `Any` driver an allocation per column
//! (docs/architecture.md, "Performance").
//!
//! Metric values keep every bit: SQLite's JSON writes 15 significant digits, so there a value
//! travels as `printf('%!.17g')` text; PostgreSQL's `float8out` is shortest-exact at sqlx's
//! `extra_float_digits`, and MySQL writes doubles shortest-exact. Children are ordered here, not by
//! the engine, so each run's tags, params and metrics come out in key order by bytes on every
//! engine.

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

impl RunChildren {
    /// Read the children of `ids` (at most `ID_CHUNK`) in `conn` and add them.
    pub(super) async fn read(
        &mut self,
        engine: Engine,
        conn: &mut sqlx::AnyConnection,
        ids: &[&str],
    ) -> StoreResult<()> {
        let row = children_sql(engine, ids)
            .query(engine)
            .fetch_one(&mut *conn)
            .await?;
        let column = |i: usize| -> StoreResult<Option<String>> { Ok(crate::db::opt_text(&row, i)?) };
        for (target, packed) in [(&mut self.tags, column(0)?), (&mut self.params, column(1)?)] {
            for (run, key, value) in unpack::<(String, String, String)>(packed.as_deref())? {
                target.entry(run).or_default().push(Tag { key, value });
            }
        }
        for (run, key, value, timestamp, step, is_nan) in
            unpack::<(String, String, JsonF64, i64, i64, i64)>(column(2)?.as_deref())?
        {
            let metric = Metric::new(key, loaded_value(value.0, is_nan), timestamp, step);
            self.metrics.entry(run).or_default().push(metric);
        }
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
        let mut datasets = unpack::<DatasetRow>(column(3)?.as_deref())?;
        datasets.sort_by(|a, b| (a.8, &a.1).cmp(&(b.8, &b.1)));
        for (run, name, digest, source_type, source, schema, profile, tags_json, _) in datasets {
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
        let mut model_io = unpack::<(String, String, String, Option<i64>)>(column(4)?.as_deref())?;
        model_io.sort_by(|a, b| a.2.cmp(&b.2));
        for (run, direction, model_id, step) in model_io {
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

    /// Each run's tags, params and metrics in key order (bytes), as every engine returns them.
    pub(super) fn sort(&mut self) {
        for tags in self.tags.values_mut().chain(self.params.values_mut()) {
            tags.sort_by(|a, b| a.key.cmp(&b.key));
        }
        for metrics in self.metrics.values_mut() {
            metrics.sort_by(|a, b| a.key.cmp(&b.key));
        }
    }
}

/// `SELECT (tags), (params), (latest metrics), (dataset inputs), (model io)`: each a JSON array
/// of arrays, or NULL when the table has none of `ids`.
pub(super) fn children_sql(engine: Engine, ids: &[&str]) -> Sql {
    let value = match engine {
        Engine::Sqlite => "printf('%!.17g', value)",
        Engine::Postgres | Engine::MySql => "value",
    };
    let tables: [(&str, String); 5] = [
        ("run_tags", "run_uuid, key, value".to_owned()),
        ("params", "run_uuid, key, value".to_owned()),
        (
            "latest_metrics",
            format!("run_uuid, key, {value}, timestamp, step, is_nan"),
        ),
        (
            "run_dataset_inputs",
            "run_uuid, name, digest, source_type, source, dataset_schema, profile, tags_json, created_at"
                .to_owned(),
        ),
        ("run_model_io", "run_uuid, direction, model_id, step".to_owned()),
    ];
    let mut sql = Sql::new("SELECT ");
    for (i, (table, columns)) in tables.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
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
