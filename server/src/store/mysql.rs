//! MySQL / MariaDB engine: the MySQL migrations over a pool from `crate::db` (which sets every
//! connection's session: ANSI quotes, strict mode, UTC, binary collation).

use super::StoreResult;
use super::sql::{Engine, SqlStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

pub use crate::db::is_mysql_uri;

pub async fn open(uri: &str, default_artifact_root: &str) -> StoreResult<SqlStore> {
    let pool = crate::db::connect_mysql(uri).await?;
    MIGRATOR.run(&pool).await?;
    let store = SqlStore::new(pool, Engine::MySql, default_artifact_root);
    store.ensure_default_experiment().await?;
    Ok(store)
}
