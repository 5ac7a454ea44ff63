//! PostgreSQL engine: connection pool and the PostgreSQL migrations.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;

use super::StoreResult;
use super::sql::{Engine, SqlStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub fn is_postgres_uri(uri: &str) -> bool {
    uri.starts_with("postgresql://") || uri.starts_with("postgres://") || uri.starts_with("postgresql+")
}

/// SQLAlchemy-style driver suffixes (`postgresql+psycopg2://`) are accepted and dropped.
fn normalise(uri: &str) -> String {
    match uri
        .strip_prefix("postgresql+")
        .and_then(|rest| rest.split_once("://"))
    {
        Some((_, tail)) => format!("postgresql://{tail}"),
        None => uri.to_owned(),
    }
}

pub async fn open(uri: &str, default_artifact_root: &str) -> StoreResult<SqlStore> {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&normalise(uri))
        .await?;
    MIGRATOR.run(&pool).await?;
    let store = SqlStore::new(pool, Engine::Postgres, default_artifact_root);
    store.ensure_default_experiment().await?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_suffix_dropped() {
        assert_eq!(normalise("postgresql+psycopg2://u@h/db"), "postgresql://u@h/db");
        assert_eq!(normalise("postgresql://u@h/db"), "postgresql://u@h/db");
        assert!(is_postgres_uri("postgres://x") && !is_postgres_uri("sqlite:///x"));
    }
}
