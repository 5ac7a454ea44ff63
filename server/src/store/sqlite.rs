//! SQLite engine: the SQLite migrations over a pool from `crate::db` (which owns the connection
//! settings every store shares).

use super::StoreResult;
use super::sql::{Engine, SqlStore};
use crate::db::{GroupCommit, Pragma, SqliteSync};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The file path of an MLflow-style SQLite URI (see [`crate::db::sqlite_path`]).
pub use crate::db::sqlite_path as path_from_uri;

/// Open (creating and migrating) the SQLite store at `path`; with [`SqliteSync::Full`] a file's
/// write requests are answered once their commits are on disk (group commit).
pub async fn open(path: &str, default_artifact_root: &str, sync: SqliteSync) -> StoreResult<SqlStore> {
    let pool = crate::db::connect_sqlite(path, Pragma::SynchronousNormal).await?;
    MIGRATOR.run(&pool).await?;
    let mut store = SqlStore::new(pool, Engine::Sqlite, default_artifact_root);
    if path != ":memory:" {
        store.enable_writer(crate::db::connect_sqlite_writer(path, Pragma::SynchronousNormal).await?);
        store.enable_bulk_reader(crate::db::connect_sqlite_bulk_reader(path).await?);
    }
    if sync == SqliteSync::Full && path != ":memory:" {
        store.enable_group_commit(GroupCommit::new(std::path::Path::new(path)));
    }
    store.ensure_default_experiment().await?;
    Ok(store)
}
