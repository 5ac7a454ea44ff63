//! PostgreSQL engine: the PostgreSQL migrations over a pool from `crate::db`.

use super::StoreResult;
use super::sql::{Engine, SqlStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub use crate::db::is_postgres_uri;

pub async fn open(uri: &str, default_artifact_root: &str) -> StoreResult<SqlStore> {
    let pool = crate::db::connect_postgres(uri).await?;
    MIGRATOR.run(&pool).await?;
    let store = SqlStore::new(pool, Engine::Postgres, default_artifact_root);
    store.ensure_default_experiment().await?;
    Ok(store)
}
