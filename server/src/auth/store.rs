//! The users-and-permissions database (`database_uri`): SQLite or PostgreSQL through sqlx's `Any`
//! driver, like the tracking store, with its own embedded migrations (`migrations/auth_*`).
//!
//! The migrations are applied by a small runner with its own bookkeeping table
//! (`mlkube_auth_migrations`) rather than sqlx's `_sqlx_migrations`, so `database_uri` may name the
//! tracking database itself without the two migration sets tripping over each other.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use tracing::instrument;

use super::permissions::Permission;

/// One embedded migration: version, description, SQL.
type Migration = (i64, &'static str, &'static str);

const SQLITE_MIGRATIONS: &[Migration] = &[(
    1,
    "users and permissions",
    include_str!("../../migrations/auth_sqlite/0001_auth.sql"),
)];
const POSTGRES_MIGRATIONS: &[Migration] = &[(
    1,
    "users and permissions",
    include_str!("../../migrations/auth_postgres/0001_auth.sql"),
)];
const MYSQL_MIGRATIONS: &[Migration] = &[(
    1,
    "users and permissions",
    include_str!("../../migrations/auth_mysql/0001_auth.sql"),
)];
/// Serialises concurrent migrations of replicas sharing one PostgreSQL database.
const POSTGRES_MIGRATION_LOCK: i64 = 0x6d6c_6b75_6265_4155;

#[derive(Debug, thiserror::Error)]
pub enum AuthStoreError {
    #[error("{0}")]
    AlreadyExists(String),
    #[error("auth database error")]
    Database(#[from] sqlx::Error),
    #[error("auth database migration {version} ({description}) failed")]
    Migrate {
        version: i64,
        description: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("unsupported auth database URI {0:?} (use sqlite:///PATH, postgresql://... or mysql://...)")]
    UnsupportedUri(String),
}

impl AuthStoreError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::AlreadyExists(_) => "already_exists",
            Self::Database(_) => "database",
            Self::Migrate { .. } => "migrate",
            Self::UnsupportedUri(_) => "unsupported_uri",
        }
    }
}

pub type AuthStoreResult<T> = Result<T, AuthStoreError>;

/// A stored user. `password_hash` is an Argon2id PHC string; it never leaves the server.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub is_admin: bool,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("is_admin", &self.is_admin)
            .finish_non_exhaustive()
    }
}

/// A permission row: the resource (experiment id or registered model name), its user, the level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRow {
    pub resource: String,
    pub user_id: i64,
    pub permission: Permission,
}

/// The two kinds of resource a permission row can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Experiment,
    RegisteredModel,
}

impl Resource {
    fn table(self) -> &'static str {
        match self {
            Self::Experiment => "experiment_permissions",
            Self::RegisteredModel => "registered_model_permissions",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Experiment => "experiment_id",
            Self::RegisteredModel => "name",
        }
    }
}

use crate::db::{Engine, is_unique_violation};

pub struct AuthStore {
    pool: AnyPool,
    engine: Engine,
}

fn user_from_row(row: &AnyRow) -> AuthStoreResult<UserRecord> {
    let is_admin: i64 = row.try_get("is_admin")?;
    Ok(UserRecord {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: is_admin != 0,
    })
}

fn permission_from_row(row: &AnyRow, column: &str) -> AuthStoreResult<PermissionRow> {
    let permission: String = row.try_get("permission")?;
    Ok(PermissionRow {
        resource: row.try_get(column)?,
        user_id: row.try_get("user_id")?,
        // A value written by hand that is no permission grants nothing.
        permission: Permission::parse(&permission).unwrap_or(Permission::NoPermissions),
    })
}

impl AuthStore {
    /// Connect to `database_uri` and bring its schema up to date.
    pub async fn open(uri: &str) -> AuthStoreResult<Self> {
        let Some(connected) = crate::db::connect(uri).await else {
            return Err(AuthStoreError::UnsupportedUri(crate::store::redact_uri(uri)));
        };
        let (pool, engine) = connected?;
        let store = Self { pool, engine };
        store.migrate().await?;
        Ok(store)
    }

    pub fn engine(&self) -> &'static str {
        self.engine.name()
    }

    /// A statement written for PostgreSQL (`$N` placeholders, `ON CONFLICT … DO UPDATE SET
    /// permission = excluded.permission`) in this database's dialect.
    fn sql<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let text = crate::db::placeholders(self.engine, text);
        match (self.engine, text.find(" ON CONFLICT")) {
            (Engine::MySql, Some(at)) => std::borrow::Cow::Owned(format!(
                "{} ON DUPLICATE KEY UPDATE permission = VALUES(permission)",
                &text[..at]
            )),
            _ => text,
        }
    }

    /// Apply the embedded migrations not yet recorded in `mlkube_auth_migrations`, each in its own
    /// transaction (PostgreSQL: under an advisory lock, so replicas starting together take turns).
    async fn migrate(&self) -> AuthStoreResult<()> {
        let (migrations, bigint) = match self.engine {
            Engine::Sqlite => (SQLITE_MIGRATIONS, "INTEGER"),
            Engine::Postgres => (POSTGRES_MIGRATIONS, "BIGINT"),
            Engine::MySql => (MYSQL_MIGRATIONS, "BIGINT"),
        };
        let mut conn = self.pool.acquire().await?;
        if self.engine == Engine::Postgres {
            sqlx::query(&self.sql("SELECT pg_advisory_lock($1)"))
                .bind(POSTGRES_MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        } else if self.engine == Engine::MySql {
            sqlx::query("SELECT GET_LOCK('mlkube_auth_migrations', 60)")
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            let bookkeeping = format!(
                "CREATE TABLE IF NOT EXISTS mlkube_auth_migrations (version {bigint} PRIMARY KEY, \
                 description VARCHAR(200) NOT NULL, applied_at {bigint} NOT NULL)"
            );
            sqlx::raw_sql(&bookkeeping).execute(&mut *conn).await?;
            for &(version, description, sql) in migrations {
                let applied: Option<i64> =
                    sqlx::query_scalar(&self.sql("SELECT version FROM mlkube_auth_migrations WHERE version = $1"))
                        .bind(version)
                        .fetch_optional(&mut *conn)
                        .await?;
                if applied.is_some() {
                    continue;
                }
                let step = async {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    sqlx::raw_sql(sql).execute(&mut *tx).await?;
                    sqlx::query(&self.sql(
                        "INSERT INTO mlkube_auth_migrations (version, description, applied_at) VALUES ($1, $2, $3)"),
                    )
                    .bind(version)
                    .bind(description)
                    .bind(crate::store::now_ms())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await
                };
                step.await.map_err(|source| AuthStoreError::Migrate {
                    version,
                    description,
                    source,
                })?;
                tracing::info!(version, description, "auth database migrated");
            }
            Ok::<_, AuthStoreError>(())
        }
        .await;
        if self.engine == Engine::Postgres {
            let _ = sqlx::query(&self.sql("SELECT pg_advisory_unlock($1)"))
                .bind(POSTGRES_MIGRATION_LOCK)
                .execute(&mut *conn)
                .await;
        } else if self.engine == Engine::MySql {
            let _ = sqlx::query("SELECT RELEASE_LOCK('mlkube_auth_migrations')")
                .execute(&mut *conn)
                .await;
        }
        result
    }

    // === users ===

    #[instrument(skip_all, fields(username = %username))]
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        is_admin: bool,
    ) -> AuthStoreResult<UserRecord> {
        // MySQL has no INSERT … RETURNING: the row is read back by its unique username.
        let insert = if self.engine == Engine::MySql {
            "INSERT INTO users (username, password_hash, is_admin) VALUES ($1, $2, $3)"
        } else {
            "INSERT INTO users (username, password_hash, is_admin) VALUES ($1, $2, $3) \
             RETURNING id, username, password_hash, is_admin"
        };
        let insert = self.sql(insert);
        let query = sqlx::query(&insert)
            .bind(username)
            .bind(password_hash)
            .bind(i64::from(is_admin));
        let inserted =
            if self.engine == Engine::MySql {
                match query.execute(&self.pool).await {
                    Ok(_) => {
                        sqlx::query(&self.sql(
                            "SELECT id, username, password_hash, is_admin FROM users WHERE username = $1",
                        ))
                        .bind(username)
                        .fetch_one(&self.pool)
                        .await
                    }
                    Err(err) => Err(err),
                }
            } else {
                query.fetch_one(&self.pool).await
            };
        let row = inserted.map_err(|err| {
            if is_unique_violation(&err) {
                AuthStoreError::AlreadyExists(format!("User (username={username}) already exists."))
            } else {
                err.into()
            }
        })?;
        user_from_row(&row)
    }

    pub async fn get_user(&self, username: &str) -> AuthStoreResult<Option<UserRecord>> {
        let row = sqlx::query(
            &self.sql("SELECT id, username, password_hash, is_admin FROM users WHERE username = $1"),
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn list_users(&self) -> AuthStoreResult<Vec<UserRecord>> {
        let rows =
            sqlx::query(&self.sql("SELECT id, username, password_hash, is_admin FROM users ORDER BY id"))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn user_count(&self) -> AuthStoreResult<i64> {
        Ok(sqlx::query_scalar(&self.sql("SELECT COUNT(*) FROM users"))
            .fetch_one(&self.pool)
            .await?)
    }

    /// `false` when there is no such user.
    pub async fn set_password_hash(&self, username: &str, password_hash: &str) -> AuthStoreResult<bool> {
        let done = sqlx::query(&self.sql("UPDATE users SET password_hash = $1 WHERE username = $2"))
            .bind(password_hash)
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `false` when there is no such user.
    pub async fn set_admin(&self, username: &str, is_admin: bool) -> AuthStoreResult<bool> {
        let done = sqlx::query(&self.sql("UPDATE users SET is_admin = $1 WHERE username = $2"))
            .bind(i64::from(is_admin))
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Delete a user and every permission row of theirs. `false` when there is no such user.
    ///
    /// Writes first: on SQLite a transaction that reads and then writes cannot wait for a concurrent
    /// writer (its snapshot is stale: "database is locked" at once, which concurrent deletes hit),
    /// while one whose first statement writes waits for the lock (busy_timeout).
    pub async fn delete_user(&self, username: &str) -> AuthStoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        for resource in [Resource::Experiment, Resource::RegisteredModel] {
            sqlx::query(&self.sql(&format!(
                "DELETE FROM {} WHERE user_id IN (SELECT id FROM users WHERE username = $1)",
                resource.table()
            )))
            .bind(username)
            .execute(&mut *tx)
            .await?;
        }
        let deleted = sqlx::query(&self.sql("DELETE FROM users WHERE username = $1"))
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    // === permissions ===

    /// Insert a row; `AlreadyExists` when the user already has one on the resource.
    pub async fn create_permission(
        &self,
        resource: Resource,
        key: &str,
        user: &UserRecord,
        permission: Permission,
    ) -> AuthStoreResult<PermissionRow> {
        sqlx::query(&self.sql(&format!(
            "INSERT INTO {} ({}, user_id, permission) VALUES ($1, $2, $3)",
            resource.table(),
            resource.column()
        )))
        .bind(key)
        .bind(user.id)
        .bind(permission.as_str())
        .execute(&self.pool)
        .await
        .map_err(|err| {
            if is_unique_violation(&err) {
                let what = match resource {
                    Resource::Experiment => format!("Experiment permission (experiment_id={key}"),
                    Resource::RegisteredModel => format!("Registered model permission (name={key}"),
                };
                AuthStoreError::AlreadyExists(format!("{what}, username={}) already exists.", user.username))
            } else {
                err.into()
            }
        })?;
        Ok(PermissionRow {
            resource: key.to_owned(),
            user_id: user.id,
            permission,
        })
    }

    /// Insert or overwrite a row (the creator's MANAGE grant).
    pub async fn upsert_permission(
        &self,
        resource: Resource,
        key: &str,
        user_id: i64,
        permission: Permission,
    ) -> AuthStoreResult<()> {
        let column = resource.column();
        sqlx::query(&self.sql(&format!(
            "INSERT INTO {} ({column}, user_id, permission) VALUES ($1, $2, $3) \
             ON CONFLICT ({column}, user_id) DO UPDATE SET permission = excluded.permission",
            resource.table(),
        )))
        .bind(key)
        .bind(user_id)
        .bind(permission.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_permission(
        &self,
        resource: Resource,
        key: &str,
        user_id: i64,
    ) -> AuthStoreResult<Option<Permission>> {
        let value: Option<String> = sqlx::query_scalar(&self.sql(&format!(
            "SELECT permission FROM {} WHERE {} = $1 AND user_id = $2",
            resource.table(),
            resource.column()
        )))
        .bind(key)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(value.map(|p| Permission::parse(&p).unwrap_or(Permission::NoPermissions)))
    }

    /// Every row of one user on one kind of resource, ordered by resource.
    pub async fn list_permissions(
        &self,
        resource: Resource,
        user_id: i64,
    ) -> AuthStoreResult<Vec<PermissionRow>> {
        let column = resource.column();
        let rows = sqlx::query(&self.sql(&format!(
            "SELECT {column}, user_id, permission FROM {} WHERE user_id = $1 ORDER BY {column}",
            resource.table()
        )))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| permission_from_row(row, column)).collect()
    }

    /// `false` when the user has no row on the resource.
    pub async fn update_permission(
        &self,
        resource: Resource,
        key: &str,
        user_id: i64,
        permission: Permission,
    ) -> AuthStoreResult<bool> {
        let done = sqlx::query(&self.sql(&format!(
            "UPDATE {} SET permission = $1 WHERE {} = $2 AND user_id = $3",
            resource.table(),
            resource.column()
        )))
        .bind(permission.as_str())
        .bind(key)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `false` when the user has no row on the resource.
    pub async fn delete_permission(
        &self,
        resource: Resource,
        key: &str,
        user_id: i64,
    ) -> AuthStoreResult<bool> {
        let done = sqlx::query(&self.sql(&format!(
            "DELETE FROM {} WHERE {} = $1 AND user_id = $2",
            resource.table(),
            resource.column()
        )))
        .bind(key)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Drop every row on a registered model (it was deleted; a new model may take its name).
    pub async fn delete_registered_model_permissions(&self, name: &str) -> AuthStoreResult<u64> {
        let done = sqlx::query(&self.sql("DELETE FROM registered_model_permissions WHERE name = $1"))
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Move every row of a renamed registered model to its new name (rows left on the new name by a
    /// model deleted before are dropped first).
    pub async fn rename_registered_model_permissions(&self, old: &str, new: &str) -> AuthStoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&self.sql("DELETE FROM registered_model_permissions WHERE name = $1"))
            .bind(new)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&self.sql("UPDATE registered_model_permissions SET name = $1 WHERE name = $2"))
            .bind(new)
            .bind(old)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (AuthStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("sqlite:///{}", dir.path().join("auth.db").display());
        (AuthStore::open(&uri).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn users_and_permissions_round_trip() {
        let (s, dir) = store().await;
        let alice = s.create_user("alice", "h1", false).await.unwrap();
        assert!(matches!(
            s.create_user("alice", "h2", false).await,
            Err(AuthStoreError::AlreadyExists(_))
        ));
        assert!(s.set_admin("alice", true).await.unwrap());
        assert!(s.get_user("alice").await.unwrap().unwrap().is_admin);
        assert!(!s.set_password_hash("nobody", "x").await.unwrap());
        assert_eq!(s.user_count().await.unwrap(), 1);

        let e = Resource::Experiment;
        s.create_permission(e, "1", &alice, Permission::Read)
            .await
            .unwrap();
        assert!(matches!(
            s.create_permission(e, "1", &alice, Permission::Edit).await,
            Err(AuthStoreError::AlreadyExists(_))
        ));
        assert_eq!(
            s.get_permission(e, "1", alice.id).await.unwrap(),
            Some(Permission::Read)
        );
        s.upsert_permission(e, "1", alice.id, Permission::Manage)
            .await
            .unwrap();
        s.upsert_permission(e, "2", alice.id, Permission::Edit)
            .await
            .unwrap();
        assert_eq!(s.list_permissions(e, alice.id).await.unwrap().len(), 2);
        assert!(
            s.update_permission(e, "2", alice.id, Permission::Read)
                .await
                .unwrap()
        );
        assert!(s.delete_permission(e, "2", alice.id).await.unwrap());
        assert!(!s.delete_permission(e, "2", alice.id).await.unwrap());

        let m = Resource::RegisteredModel;
        s.create_permission(m, "old", &alice, Permission::Manage)
            .await
            .unwrap();
        s.rename_registered_model_permissions("old", "new").await.unwrap();
        assert_eq!(
            s.get_permission(m, "new", alice.id).await.unwrap(),
            Some(Permission::Manage)
        );
        assert_eq!(s.delete_registered_model_permissions("new").await.unwrap(), 1);

        assert!(s.delete_user("alice").await.unwrap());
        assert!(s.get_user("alice").await.unwrap().is_none());
        assert_eq!(s.get_permission(e, "1", alice.id).await.unwrap(), None);

        // Reopening finds the schema applied and does not migrate twice.
        drop(s);
        let uri = format!("sqlite:///{}", dir.path().join("auth.db").display());
        AuthStore::open(&uri).await.unwrap();
    }

    #[tokio::test]
    async fn shares_a_database_with_the_tracking_store() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("sqlite:///{}", dir.path().join("both.db").display());
        crate::store::open(&uri, "mlflow-artifacts:/").await.unwrap();
        AuthStore::open(&uri).await.unwrap();
        // Both again, in either order: neither migration set sees the other's bookkeeping.
        crate::store::open(&uri, "mlflow-artifacts:/").await.unwrap();
        AuthStore::open(&uri).await.unwrap();
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL: set MLKUBE_TEST_POSTGRES_URL (scripts/test-all starts one)"]
    async fn postgres_round_trip() {
        use sqlx::{Connection, Executor};
        let base = std::env::var("MLKUBE_TEST_POSTGRES_URL").unwrap();
        sqlx::any::install_default_drivers();
        let name = format!("mlkube_auth_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let (head, _) = base.rsplit_once('/').unwrap();
        let uri = format!("{head}/{name}");
        let s = AuthStore::open(&uri).await.unwrap();
        AuthStore::open(&uri).await.unwrap();
        let bob = s.create_user("bob", "h", false).await.unwrap();
        assert!(!bob.is_admin);
        s.upsert_permission(Resource::Experiment, "3", bob.id, Permission::Edit)
            .await
            .unwrap();
        s.upsert_permission(Resource::Experiment, "3", bob.id, Permission::Manage)
            .await
            .unwrap();
        assert_eq!(
            s.get_permission(Resource::Experiment, "3", bob.id).await.unwrap(),
            Some(Permission::Manage)
        );
        assert!(matches!(
            s.create_user("bob", "h", false).await,
            Err(AuthStoreError::AlreadyExists(_))
        ));
        assert!(s.delete_user("bob").await.unwrap());
    }
}
