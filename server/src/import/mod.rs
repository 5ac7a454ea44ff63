//! `mlkube-server import`: copy an upstream MLflow database (SQLite or PostgreSQL, MLflow 2.4 to
//! 3.17.2 schemas) into our backend store with every id unchanged, so run ids, `runs:/` and
//! `models:/` URIs and artifact paths keep working (docs/migrating.md).
//!
//! The copy streams each table in batches (one transaction each, existing rows kept), records its
//! progress in `mlkube_imports`, and marks the import finished last: an interrupted import run
//! again skips the tables it finished and re-copies the rest without duplicating a row, and the
//! server refuses to start on a database whose import has not finished.

mod attached;
pub mod auth;
pub mod progress;
pub mod schema;
pub mod tables;

use futures_util::TryStreamExt;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::db::{Engine, SqliteSync};
use crate::store::StoreError;
use crate::store::query::{Arg, Sql};
use progress::Progress;
use schema::Source;
use tables::{Kind, Plan};

/// `mlkube-server import` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The upstream MLflow backend store to copy from (`sqlite:///mlflow.db`, `postgresql://…`).
    #[arg(long, env = "MLKUBE_IMPORT_FROM", value_name = "URI")]
    pub from: String,
    /// Our backend store to copy into [default: the server's --backend-store-uri].
    #[arg(long, env = "MLKUBE_IMPORT_TO", value_name = "URI")]
    pub to: Option<String>,
    /// Import into a database that already holds other data (rows whose keys exist are kept).
    #[arg(long, env = "MLKUBE_IMPORT_MERGE")]
    pub merge: bool,
    /// MLflow's basic-auth database to copy users and permissions from (its `database_uri`).
    #[arg(long, env = "MLKUBE_IMPORT_AUTH_FROM", value_name = "URI")]
    pub auth_from: Option<String>,
    /// Our auth database [default: the `database_uri` of the server's basic-auth configuration].
    #[arg(
        long,
        env = "MLKUBE_IMPORT_AUTH_TO",
        value_name = "URI",
        requires = "auth_from"
    )]
    pub auth_to: Option<String>,
    /// Copy through the driver row by row even from one SQLite file into another (instead of
    /// SQLite copying the rows itself); for tests and comparisons.
    #[arg(long, hide = true)]
    pub row_by_row: bool,
    /// Rows per transaction.
    #[arg(long, env = "MLKUBE_IMPORT_BATCH_ROWS", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_rows: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the MLflow database: {0}")]
    Source(String),
    #[error("{0}")]
    UnknownSchema(String),
    #[error(
        "the target database already holds {0}: pass --merge to import into it anyway (rows whose keys \
         exist are kept), or import into an empty database"
    )]
    NotEmpty(&'static str),
    #[error("table {table}, row {key}: {message}; nothing of this batch was imported")]
    Row {
        table: &'static str,
        key: String,
        message: String,
    },
    #[error("could not open the target store: {0}")]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// What one table's copy did.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSummary {
    pub table: &'static str,
    /// Rows read from the source (0 when the table was finished by an earlier run).
    pub read: u64,
    /// Rows the target did not have yet.
    pub written: u64,
    pub rows_per_sec: f64,
    /// Finished by an earlier, interrupted run of the same import.
    pub skipped: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub source_revision: String,
    pub resumed: bool,
    pub tables: Vec<TableSummary>,
    pub seconds: f64,
}

impl Summary {
    /// The table printed at the end of an import.
    pub fn render(&self) -> String {
        let mut out = format!(
            "imported from MLflow schema {}{} in {:.1}s\n{:<26} {:>12} {:>12} {:>12}\n",
            self.source_revision,
            if self.resumed { " (resumed)" } else { "" },
            self.seconds,
            "table",
            "read",
            "new",
            "rows/s"
        );
        for t in &self.tables {
            if t.skipped {
                out.push_str(&format!(
                    "{:<26} {:>12} {:>12} {:>12}\n",
                    t.table, "-", "-", "done before"
                ));
            } else {
                out.push_str(&format!(
                    "{:<26} {:>12} {:>12} {:>12.0}\n",
                    t.table, t.read, t.written, t.rows_per_sec
                ));
            }
        }
        out
    }
}

/// An import recorded in `pool`'s database that has not finished, by its source.
pub async fn unfinished(pool: &AnyPool) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT source FROM mlkube_imports WHERE finished_at IS NULL")
        .fetch_optional(pool)
        .await?
        .map(|row| row.try_get::<String, _>(0))
        .transpose()
}

/// Copy `args.from` into `to` (created and migrated when missing).
pub async fn run(args: &ImportArgs, to: &str, default_artifact_root: &str) -> Result<Summary, ImportError> {
    let started = std::time::Instant::now();
    let source = Source::open(&args.from).await?;
    let key = source_key(&args.from);
    let store = crate::store::open_with(to, default_artifact_root, SqliteSync::Normal).await?;
    let engine = store.engine_kind();
    let target = store.writer().clone();
    let mut done = begin(&target, engine, &key, &source.revision, args.merge).await?;
    let resumed = !done.is_empty();
    let mut progress = Progress::new();
    let mut tables = Vec::new();
    for plan in tables::plans(&source) {
        if done.iter().any(|t| t == plan.table) {
            tables.push(TableSummary {
                table: plan.table,
                read: 0,
                written: 0,
                rows_per_sec: 0.0,
                skipped: true,
            });
            continue;
        }
        let both_sqlite = source
            .sqlite_path
            .as_deref()
            .filter(|_| engine == Engine::Sqlite && !args.row_by_row);
        let (read, written) = match (both_sqlite, plan.single_table()) {
            // SQLite into SQLite: the target reads the source file itself (ATTACH), no rows in between.
            (Some(path), Some(table)) => {
                attached::copy_table(
                    &source,
                    path,
                    table,
                    &target,
                    &plan,
                    args.batch_rows as usize,
                    &mut progress,
                )
                .await?
            }
            _ => {
                copy_table(
                    &source,
                    &target,
                    engine,
                    &plan,
                    args.batch_rows as usize,
                    &mut progress,
                )
                .await?
            }
        };
        let rows_per_sec = progress.finish();
        done.push(plan.table.to_owned());
        let mut sql = Sql::new("UPDATE mlkube_imports SET tables_done = ");
        sql.bind_str(&done.join(","))
            .push(" WHERE source = ")
            .bind_str(&key);
        sql.query(engine).execute(&target).await?;
        tables.push(TableSummary {
            table: plan.table,
            read,
            written,
            rows_per_sec,
            skipped: false,
        });
    }
    if engine == Engine::Postgres {
        // Explicit ids leave the identity behind: the next experiment would collide with an import.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('experiments', 'experiment_id'), \
             GREATEST((SELECT MAX(experiment_id) FROM experiments), 1))",
        )
        .execute(&target)
        .await?;
    }
    let mut sql = Sql::new("UPDATE mlkube_imports SET finished_at = ");
    sql.bind_i64(crate::store::now_ms())
        .push(" WHERE source = ")
        .bind_str(&key);
    sql.query(engine).execute(&target).await?;
    tracing::info!(source = %key, revision = %source.revision, "import finished");
    Ok(Summary {
        source_revision: source.revision.clone(),
        resumed,
        tables,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How `mlkube_imports` names a source: a SQLite file by its absolute path, anything else by its
/// URI without the password.
fn source_key(uri: &str) -> String {
    if let Some(path) = crate::db::sqlite_path(uri) {
        let absolute = std::fs::canonicalize(&path).map_or(path, |p| p.display().to_string());
        return format!("sqlite:///{}", absolute.trim_start_matches('/'));
    }
    crate::store::redact_uri(uri)
}

/// Record the import's start; returns the tables an interrupted run of it already finished.
async fn begin(
    target: &AnyPool,
    engine: Engine,
    key: &str,
    revision: &str,
    merge: bool,
) -> Result<Vec<String>, ImportError> {
    let mut sql = Sql::new("SELECT finished_at, tables_done FROM mlkube_imports WHERE source = ");
    sql.bind_str(key);
    let previous = sql.query(engine).fetch_optional(target).await?;
    let now = crate::store::now_ms();
    match previous {
        Some(row) if row.try_get::<Option<i64>, _>(0)?.is_none() => {
            let done: String = row.try_get(1)?;
            tracing::info!(source = %key, finished_tables = %done, "resuming an interrupted import");
            Ok(done
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect())
        }
        Some(_) => {
            // Imported before: copy again, keeping every row that is there.
            tracing::info!(source = %key, "imported before; rows already there are kept");
            let mut sql =
                Sql::new("UPDATE mlkube_imports SET finished_at = NULL, tables_done = '', started_at = ");
            sql.bind_i64(now)
                .push(", schema_version = ")
                .bind_str(revision)
                .push(" WHERE source = ")
                .bind_str(key);
            sql.query(engine).execute(target).await?;
            Ok(Vec::new())
        }
        None => {
            if !merge && let Some(what) = holds_data(target).await? {
                return Err(ImportError::NotEmpty(what));
            }
            let mut sql =
                Sql::new("INSERT INTO mlkube_imports (source, schema_version, started_at) VALUES (");
            sql.bind_str(key)
                .push(", ")
                .bind_str(revision)
                .push(", ")
                .bind_i64(now)
                .push(")");
            sql.query(engine).execute(target).await?;
            Ok(Vec::new())
        }
    }
}

/// What a database holds besides the default experiment, if anything.
async fn holds_data(pool: &AnyPool) -> Result<Option<&'static str>, sqlx::Error> {
    for (what, sql) in [
        (
            "experiments",
            "SELECT 1 FROM experiments WHERE experiment_id <> 0 LIMIT 1",
        ),
        ("runs", "SELECT 1 FROM runs LIMIT 1"),
        ("registered models", "SELECT 1 FROM registered_models LIMIT 1"),
        ("logged models", "SELECT 1 FROM logged_models LIMIT 1"),
    ] {
        if sqlx::query(sql).fetch_optional(pool).await?.is_some() {
            return Ok(Some(what));
        }
    }
    Ok(None)
}

/// Stream one table from the source into the target; returns rows read and rows written.
async fn copy_table(
    source: &Source,
    target: &AnyPool,
    engine: Engine,
    plan: &Plan,
    batch_rows: usize,
    progress: &mut Progress,
) -> Result<(u64, u64), ImportError> {
    let total: i64 = sqlx::query(&schema::dialect(source.engine, &plan.count_sql()))
        .fetch_one(&source.pool)
        .await?
        .try_get(0)?;
    progress.start(plan.table, u64::try_from(total).unwrap_or(0));
    let select = schema::dialect(source.engine, &plan.select_sql()).into_owned();
    let mut rows = sqlx::query(&select).fetch(&source.pool);
    let mut batch: Vec<Vec<Arg>> = Vec::with_capacity(batch_rows.min(100_000));
    let (mut read, mut written) = (0u64, 0u64);
    while let Some(row) = rows.try_next().await? {
        batch.push(decode(&row, plan)?);
        if batch.len() >= batch_rows {
            written += write_batch(target, engine, plan, &batch).await?;
            read += batch.len() as u64;
            progress.advance(batch.len() as u64);
            batch.clear();
        }
    }
    if !batch.is_empty() {
        written += write_batch(target, engine, plan, &batch).await?;
        read += batch.len() as u64;
        progress.advance(batch.len() as u64);
    }
    Ok((read, written))
}

fn decode(row: &AnyRow, plan: &Plan) -> Result<Vec<Arg>, sqlx::Error> {
    plan.columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind, _))| {
            Ok(match kind {
                Kind::Text => Arg::OptStr(crate::db::opt_text(row, i)?),
                Kind::Int => Arg::OptI64(row.try_get(i)?),
                Kind::Real => Arg::OptF64(row.try_get(i)?),
            })
        })
        .collect()
}

/// Insert `rows` in one transaction. A constraint the target refuses (a run of an experiment that
/// is not there, a NULL where we need a value) is found row by row and named.
async fn write_batch(
    target: &AnyPool,
    engine: Engine,
    plan: &Plan,
    rows: &[Vec<Arg>],
) -> Result<u64, ImportError> {
    match insert_rows(target, engine, plan, rows).await {
        Ok(n) => Ok(n),
        Err(err @ sqlx::Error::Database(_)) => {
            let mut conn = target.acquire().await?;
            match find_refused(&mut conn, engine, plan, rows).await? {
                Some(refused) => Err(refused),
                None => Err(err.into()),
            }
        }
        Err(err) => Err(err.into()),
    }
}

/// The first of `rows` the target refuses, inserted one by one in a transaction rolled back after.
async fn find_refused(
    conn: &mut sqlx::AnyConnection,
    engine: Engine,
    plan: &Plan,
    rows: &[Vec<Arg>],
) -> Result<Option<ImportError>, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    for row in rows {
        let mut sql = Sql::new(&plan.insert_head());
        push_row(&mut sql, row);
        plan.push_on_conflict(&mut sql);
        if let Err(sqlx::Error::Database(e)) = sql.query(engine).execute(&mut *tx).await {
            let refused = ImportError::Row {
                table: plan.table,
                key: describe_key(plan, row),
                message: e.message().to_owned(),
            };
            tx.rollback().await?;
            return Ok(Some(refused));
        }
    }
    tx.rollback().await?;
    Ok(None)
}

async fn insert_rows(
    target: &AnyPool,
    engine: Engine,
    plan: &Plan,
    rows: &[Vec<Arg>],
) -> Result<u64, sqlx::Error> {
    // Under SQLite's and PostgreSQL's bound-parameter limits (32766, 65535).
    let per_statement = (30_000 / plan.columns.len()).clamp(1, 1000);
    let mut tx = target.begin().await?;
    let mut written = 0;
    for chunk in rows.chunks(per_statement) {
        let mut sql = Sql::new(&plan.insert_head());
        for (i, row) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            push_row(&mut sql, row);
        }
        plan.push_on_conflict(&mut sql);
        written += sql.query(engine).execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(written)
}

fn push_row(sql: &mut Sql, row: &[Arg]) {
    sql.push("(");
    for (i, arg) in row.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(arg.clone());
    }
    sql.push(")");
}

fn describe_key(plan: &Plan, row: &[Arg]) -> String {
    let parts: Vec<String> = plan
        .columns
        .iter()
        .zip(row)
        .take(plan.key)
        .map(|((name, _, _), arg)| {
            let value = match arg {
                Arg::OptStr(Some(s)) | Arg::Str(s) => s.clone(),
                Arg::OptI64(Some(v)) | Arg::I64(v) => v.to_string(),
                Arg::OptF64(Some(v)) | Arg::F64(v) => v.to_string(),
                _ => "NULL".to_owned(),
            };
            format!("{name}={value}")
        })
        .collect();
    format!("({})", parts.join(", "))
}
