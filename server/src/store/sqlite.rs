//! SQLite engine: file (or in-memory) databases, WAL, busy timeout, foreign keys, and the
//! SQLite migrations.

use std::path::Path;
use std::time::Duration;

use sqlx::Executor;
use sqlx::any::AnyPoolOptions;

use super::sql::{Engine, SqlStore};
use super::{StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The file path of an MLflow-style SQLite URI: `sqlite:///rel.db` is relative, `sqlite:////abs.db`
/// absolute, `sqlite:///:memory:` (or `sqlite://`) in memory. `None` for other schemes.
pub fn path_from_uri(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("sqlite://")?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or("");
    Some(if path.is_empty() {
        ":memory:".to_owned()
    } else {
        path.to_owned()
    })
}

pub async fn open(path: &str, default_artifact_root: &str) -> StoreResult<SqlStore> {
    sqlx::any::install_default_drivers();
    let memory = path == ":memory:";
    let url = if memory {
        "sqlite::memory:".to_owned()
    } else {
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        format!("sqlite://{path}?mode=rwc")
    };
    // An in-memory database lives in its one connection, which must never be closed.
    let options = if memory {
        AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        AnyPoolOptions::new().max_connections(8)
    };
    let pool = options
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
                     PRAGMA case_sensitive_like = ON;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    if !memory {
        pool.execute("PRAGMA journal_mode = WAL;").await?;
    }
    MIGRATOR.run(&pool).await?;
    let store = SqlStore::new(pool, Engine::Sqlite, default_artifact_root);
    store.ensure_default_experiment().await?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_forms() {
        assert_eq!(path_from_uri("sqlite:///mlflow.db").as_deref(), Some("mlflow.db"));
        assert_eq!(path_from_uri("sqlite:////tmp/x.db").as_deref(), Some("/tmp/x.db"));
        assert_eq!(path_from_uri("sqlite:///:memory:").as_deref(), Some(":memory:"));
        assert_eq!(path_from_uri("sqlite://").as_deref(), Some(":memory:"));
        assert_eq!(path_from_uri("postgresql://h/db"), None);
    }
}
