//! The upstream MLflow database an import reads: which schema it has (its alembic revision, checked
//! against the revisions this importer knows) and which of the optional tables and columns are there.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{AnyPool, Row};

use super::ImportError;
use crate::db::Engine;

/// MLflow's alembic revisions this importer reads, oldest first: from MLflow 2.4's datasets and
/// inputs tables (`7f2a7d5fae7d`) to the head of MLflow 3.17.2 (`dc11669786a5`). MLflow 2.x
/// databases (2.4 to 2.22) stop somewhere in the first half of the list, 3.x ones further on; the
/// revisions in between only add tables and columns the importer either reads when present or
/// leaves alone (traces, assessments, jobs, gateway endpoints, workspaces, …).
pub const SUPPORTED_REVISIONS: &[&str] = &[
    "7f2a7d5fae7d",
    "2d6e25af4d3e",
    "acf3f17fdcc7",
    "867495a8f9d4",
    "5b0e9adcef9c",
    "4465047574b1",
    "f5a4f2784254",
    "0584bdc529eb",
    "400f98739977",
    "6953534de441",
    "bda7b8c39065",
    "cbc13b556ace",
    "770bee3ae1dd",
    "a1b2c3d4e5f6",
    "de4033877273",
    "1a0cddfcaa16",
    "534353b11cbc",
    "71994744cf8e",
    "3da73c924c2f",
    "bf29a5ff90ea",
    "1bd49d398cd23",
    "b7c8d9e0f1a2",
    "5d2d30f0abce",
    "c9d4e5f6a7b8",
    "2c33131f4dae",
    "d3e4f5a6b7c8",
    "d0e1f2a3b4c5",
    "c8d9e0f1a2b3",
    "1b5f0d9ad7c1",
    "e1f2a3b4c5d6",
    "76601a5f987d",
    "c3d6457b6d8a",
    "a5b4c3d2e1f0",
    "ae8bbe7743c9",
    "7d34483879f0",
    "da6fb0208061",
    "89d3d66ed43f",
    "b7e4c1a90f23",
    "a8b9c0d1e2f3",
    "c1d2e3f4a5b6",
    "c3d9e7f1a2b4",
    "6f8d9c3b2a1e",
    "1971f2d9a75b",
    "17e22815139b",
    "b7e2c1a4d9f3",
    "75868b020152",
    "dc11669786a5",
];

/// MLflow's revisions before 2.4's datasets tables: known, but too old to import directly.
pub const OLDER_REVISIONS: &[&str] = &[
    "451aebb31d03",
    "90e64c465722",
    "181f10493468",
    "df50e92ffc5e",
    "7ac759974ad8",
    "89d4b8295536",
    "2b4d017a5e9b",
    "cfd24bdc0731",
    "0a8213491aaa",
    "728d730b5ebd",
    "27a6a02d2cf1",
    "84291f40a231",
    "a8c4a736bde6",
    "39d1c3be5f05",
    "c48cb773bb87",
    "bd07f7e963c5",
    "0c779009ac13",
    "cc1f77228345",
    "97727af70f4d",
    "3500859a5d39",
];

/// An upstream MLflow database, open read-only, with its tables and their columns.
pub struct Source {
    pub pool: AnyPool,
    pub engine: Engine,
    /// The file of a SQLite source.
    pub sqlite_path: Option<String>,
    pub revision: String,
    columns: BTreeMap<String, BTreeSet<String>>,
}

impl Source {
    /// Open `uri` (MLflow's `sqlite:///…` or `postgresql[+driver]://…`), read its alembic revision
    /// and refuse one this importer does not know.
    pub async fn open(uri: &str) -> Result<Self, ImportError> {
        let redacted = crate::store::redact_uri(uri);
        let (pool, engine, columns) = connect(uri).await?;
        if !columns.contains_key("alembic_version") {
            return Err(ImportError::Source(format!(
                "{redacted} has no alembic_version table: it is not an MLflow tracking database"
            )));
        }
        let revision: String = sqlx::query(&dialect(
            engine,
            "SELECT CAST(version_num AS TEXT) FROM alembic_version",
        ))
        .fetch_optional(&pool)
        .await?
        .map(|row| row.try_get::<String, _>(0))
        .transpose()?
        .unwrap_or_default();
        check_revision(&revision)?;
        Ok(Self {
            pool,
            engine,
            sqlite_path: crate::db::sqlite_path(uri),
            revision,
            columns,
        })
    }

    pub fn has_table(&self, table: &str) -> bool {
        self.columns.contains_key(table)
    }

    pub fn has_column(&self, table: &str, column: &str) -> bool {
        self.columns.get(table).is_some_and(|c| c.contains(column))
    }
}

/// Open an MLflow database read-only: its pool, engine, and tables with their columns.
pub async fn connect(
    uri: &str,
) -> Result<(AnyPool, Engine, BTreeMap<String, BTreeSet<String>>), ImportError> {
    sqlx::any::install_default_drivers();
    let redacted = crate::store::redact_uri(uri);
    let (url, engine) = if let Some(path) = crate::db::sqlite_path(uri) {
        if path == ":memory:" || !std::path::Path::new(&path).is_file() {
            return Err(ImportError::Source(format!(
                "{redacted}: no such SQLite database file"
            )));
        }
        (format!("sqlite://{path}?mode=ro"), Engine::Sqlite)
    } else if crate::db::is_postgres_uri(uri) {
        (crate::db::normalise_postgres(uri), Engine::Postgres)
    } else if crate::db::is_mysql_uri(uri) {
        (crate::db::normalise_mysql(uri), Engine::MySql)
    } else {
        return Err(ImportError::Source(format!(
            "{redacted}: not an MLflow backend store URI (sqlite:///…, postgresql://… or mysql://…)"
        )));
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // Double quotes name identifiers in the statements `dialect` writes.
                if engine == Engine::MySql {
                    sqlx::Executor::execute(
                        &mut *conn,
                        "SET SESSION sql_mode = 'ANSI_QUOTES,PIPES_AS_CONCAT'",
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(|e| ImportError::Source(format!("{redacted}: {e}")))?;
    let columns = read_columns(&pool, engine).await?;
    Ok((pool, engine, columns))
}

/// Ok for a revision in [`SUPPORTED_REVISIONS`]; a message saying what to do otherwise.
pub fn check_revision(revision: &str) -> Result<(), ImportError> {
    if SUPPORTED_REVISIONS.contains(&revision) {
        Ok(())
    } else if OLDER_REVISIONS.contains(&revision) {
        Err(ImportError::UnknownSchema(format!(
            "alembic revision {revision} is an MLflow schema older than 2.4: upgrade it first with \
             `mlflow db upgrade <uri>` (MLflow 2.4 or later), then import"
        )))
    } else if revision.is_empty() {
        Err(ImportError::UnknownSchema(
            "the alembic_version table is empty: not an initialised MLflow database".to_owned(),
        ))
    } else {
        Err(ImportError::UnknownSchema(format!(
            "alembic revision {revision} is not an MLflow schema this importer knows (it reads MLflow \
             2.4 to 3.17.2, revisions {} to {}); a newer MLflow's database needs a newer mlkube-server",
            SUPPORTED_REVISIONS[0],
            SUPPORTED_REVISIONS[SUPPORTED_REVISIONS.len() - 1]
        )))
    }
}

/// A statement over the source written for SQLite and PostgreSQL, as `engine` reads it: on MySQL
/// the casts are `CHAR`, `SIGNED` and `DOUBLE`, and `key` is quoted.
pub fn dialect(engine: Engine, sql: &str) -> std::borrow::Cow<'_, str> {
    if engine != Engine::MySql {
        return std::borrow::Cow::Borrowed(sql);
    }
    let sql = sql
        .replace(" AS TEXT)", " AS CHAR)")
        .replace(" AS BIGINT)", " AS SIGNED)")
        .replace(" AS DOUBLE PRECISION)", " AS DOUBLE)");
    std::borrow::Cow::Owned(crate::store::query::quote_reserved(&sql).into_owned())
}

async fn read_columns(
    pool: &AnyPool,
    engine: Engine,
) -> Result<BTreeMap<String, BTreeSet<String>>, ImportError> {
    let sql = match engine {
        Engine::Sqlite => {
            "SELECT CAST(m.name AS TEXT), CAST(p.name AS TEXT) FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table'"
        }
        Engine::Postgres => {
            "SELECT CAST(table_name AS TEXT), CAST(column_name AS TEXT) FROM information_schema.columns \
             WHERE table_schema = current_schema()"
        }
        Engine::MySql => {
            "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) FROM information_schema.columns \
             WHERE table_schema = DATABASE()"
        }
    };
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in sqlx::query(sql).fetch_all(pool).await? {
        let table: String = row.try_get(0)?;
        let column: String = row.try_get(1)?;
        out.entry(table).or_default().insert(column);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_checked() {
        assert!(check_revision("dc11669786a5").is_ok());
        assert!(check_revision("7f2a7d5fae7d").is_ok());
        let old = check_revision("3500859a5d39").unwrap_err().to_string();
        assert!(
            old.contains("older than 2.4") && old.contains("mlflow db upgrade"),
            "{old}"
        );
        let new = check_revision("ffffffffffff").unwrap_err().to_string();
        assert!(new.contains("ffffffffffff") && new.contains("3.17.2"), "{new}");
        assert!(check_revision("").unwrap_err().to_string().contains("empty"));
        let all: BTreeSet<_> = SUPPORTED_REVISIONS.iter().chain(OLDER_REVISIONS).collect();
        assert_eq!(
            all.len(),
            SUPPORTED_REVISIONS.len() + OLDER_REVISIONS.len(),
            "no revision twice"
        );
    }
}
