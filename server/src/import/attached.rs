//! SQLite into SQLite: the target's writer connection ATTACHes the MLflow file and copies each
//! table with `INSERT … SELECT` over ranges of the source's rowids, one transaction per range —
//! the rows never leave SQLite (the import benchmark: docs/migrating.md). A range the target
//! refuses is read again row by row through the generic path, which names the bad row.

use sqlx::{AnyPool, Row};

use super::progress::Progress;
use super::schema::Source;
use super::tables::Plan;
use super::{ImportError, decode, find_refused};
use crate::db::Engine;

const SCHEMA: &str = "mlflow_import_source";

pub(super) async fn copy_table(
    source: &Source,
    path: &str,
    table: &str,
    target: &AnyPool,
    plan: &Plan,
    batch_rows: usize,
    progress: &mut Progress,
) -> Result<(u64, u64), ImportError> {
    let mut conn = target.acquire().await?;
    sqlx::query(&format!("ATTACH DATABASE ? AS {SCHEMA}"))
        .bind(path.to_owned())
        .execute(&mut *conn)
        .await?;
    let copied = copy_ranges(&mut conn, source, table, plan, batch_rows, progress).await;
    // Detached whatever happened: the connection goes back to the pool.
    let detached = sqlx::query(&format!("DETACH DATABASE {SCHEMA}"))
        .execute(&mut *conn)
        .await;
    let copied = copied?;
    detached?;
    Ok(copied)
}

async fn copy_ranges(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
    source: &Source,
    table: &str,
    plan: &Plan,
    batch_rows: usize,
    progress: &mut Progress,
) -> Result<(u64, u64), ImportError> {
    let bounds = sqlx::query(&format!(
        "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(MIN(rowid), 0) AS BIGINT), \
         CAST(COALESCE(MAX(rowid), 0) AS BIGINT) FROM {SCHEMA}.\"{table}\""
    ))
    .fetch_one(&mut **conn)
    .await?;
    let (total, min_rowid, max_rowid): (i64, i64, i64) =
        (bounds.try_get(0)?, bounds.try_get(1)?, bounds.try_get(2)?);
    progress.start(plan.table, u64::try_from(total).unwrap_or(0));
    let insert = format!(
        "INSERT INTO main.{} ({}) SELECT {} FROM {SCHEMA}.\"{table}\" WHERE rowid > ? AND rowid <= ?{}",
        plan.table,
        plan.columns
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>()
            .join(", "),
        plan.select_list(),
        plan.on_conflict
    );
    let count =
        format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {SCHEMA}.\"{table}\" WHERE rowid > ? AND rowid <= ?");
    let step = i64::try_from(batch_rows).unwrap_or(i64::MAX).max(1);
    let (mut read, mut written) = (0u64, 0u64);
    // Ranges are (low, high]: the first starts below the smallest rowid (an INTEGER PRIMARY KEY
    // is the rowid, and MLflow's Default experiment is 0).
    let mut low = min_rowid.saturating_sub(1);
    while total > 0 && low < max_rowid {
        let high = low.saturating_add(step).min(max_rowid);
        let rows: i64 = sqlx::query(&count)
            .bind(low)
            .bind(high)
            .fetch_one(&mut **conn)
            .await?
            .try_get(0)?;
        let mut tx = sqlx::Connection::begin(&mut **conn).await?;
        let done = sqlx::query(&insert).bind(low).bind(high).execute(&mut *tx).await;
        match done {
            Ok(result) => {
                tx.commit().await?;
                written += result.rows_affected();
            }
            Err(err @ sqlx::Error::Database(_)) => {
                tx.rollback().await?;
                // The same range read through the source's own pool and inserted row by row names
                // the refused row; its error ends the import.
                let select = format!("{} WHERE rowid > {low} AND rowid <= {high}", plan.select_sql());
                let fetched = sqlx::query(&select).fetch_all(&source.pool).await?;
                let batch = fetched
                    .iter()
                    .map(|r| decode(r, plan))
                    .collect::<Result<Vec<_>, _>>()?;
                return Err(find_refused(conn, Engine::Sqlite, plan, &batch)
                    .await?
                    .unwrap_or(err.into()));
            }
            Err(other) => return Err(other.into()),
        }
        let rows = u64::try_from(rows).unwrap_or(0);
        read += rows;
        progress.advance(rows);
        low = high;
    }
    Ok((read, written))
}
