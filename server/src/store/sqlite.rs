//! SQLite engine: the SQLite migrations over a pool from `crate::db` (which owns the connection
//! settings every store shares).

use super::StoreResult;
use super::sql::{Engine, SqlStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The file path of an MLflow-style SQLite URI (see [`crate::db::sqlite_path`]).
pub use crate::db::sqlite_path as path_from_uri;

pub async fn open(path: &str, default_artifact_root: &str) -> StoreResult<SqlStore> {
    let pool = crate::db::connect_sqlite(path).await?;
    MIGRATOR.run(&pool).await?;
    let store = SqlStore::new(pool, Engine::Sqlite, default_artifact_root);
    store.ensure_default_experiment().await?;
    Ok(store)
}
