//! Users and permissions from MLflow's basic-auth database (`--auth-from`). Users keep their
//! MLflow password hashes, which [`crate::auth::werkzeug`] verifies at their first sign-in before
//! they are re-hashed; a user already in our database is kept as it is. Permissions: MLflow 2.x's
//! per-user `experiment_permissions` and `registered_model_permissions`, or MLflow 3's roles
//! (`role_permissions` on one experiment or registered model, through `user_role_assignments`);
//! wildcard patterns and other resource types have no equivalent here and are counted as skipped.

use std::collections::BTreeMap;

use sqlx::Row;

use super::ImportError;
use super::schema::connect;
use crate::auth::Permission;
use crate::auth::store::{AuthStore, Resource};

/// What an auth import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthSummary {
    pub users_created: u64,
    /// Users with the same name already here (kept unchanged).
    pub users_kept: u64,
    pub permissions: u64,
    /// Grants with no per-user equivalent (wildcards, workspaces, scorers, gateway, prompts).
    pub skipped: u64,
}

impl AuthSummary {
    pub fn render(&self) -> String {
        format!(
            "auth: {} users created, {} already here and kept, {} permissions, {} grants without an equivalent skipped\n",
            self.users_created, self.users_kept, self.permissions, self.skipped
        )
    }
}

/// Copy `from` (MLflow's auth database) into our auth database at `to`.
pub async fn run(from: &str, to: &str) -> Result<AuthSummary, ImportError> {
    let (pool, _engine, columns) = connect(from).await?;
    let redacted = crate::store::redact_uri(from);
    if !columns.get("users").is_some_and(|c| {
        ["id", "username", "password_hash", "is_admin"]
            .iter()
            .all(|k| c.contains(*k))
    }) {
        return Err(ImportError::Source(format!(
            "{redacted} has no users table with id, username, password_hash, is_admin: not an MLflow basic-auth database"
        )));
    }
    let target = AuthStore::open(to).await.map_err(|e| {
        ImportError::Source(format!("our auth database {}: {e}", crate::store::redact_uri(to)))
    })?;
    let mut summary = AuthSummary::default();
    let mut ids: BTreeMap<i64, i64> = BTreeMap::new();
    let users = sqlx::query(
        "SELECT CAST(id AS BIGINT), CAST(username AS TEXT), CAST(password_hash AS TEXT), \
         CAST(CASE WHEN is_admin THEN 1 ELSE 0 END AS BIGINT) FROM users ORDER BY id",
    )
    .fetch_all(&pool)
    .await?;
    for row in users {
        let id: i64 = row.try_get(0)?;
        let username: Option<String> = row.try_get(1)?;
        let hash: Option<String> = row.try_get(2)?;
        let (Some(username), Some(hash)) = (username, hash) else {
            return Err(ImportError::Row {
                table: "users",
                key: format!("(id={id})"),
                message: "no username or password hash".to_owned(),
            });
        };
        let is_admin = row.try_get::<i64, _>(3)? != 0;
        let existing = target.get_user(&username).await.map_err(auth_error)?;
        let ours = match existing {
            Some(user) => {
                summary.users_kept += 1;
                user.id
            }
            None => {
                summary.users_created += 1;
                target
                    .create_user(&username, &hash, is_admin)
                    .await
                    .map_err(auth_error)?
                    .id
            }
        };
        ids.insert(id, ours);
    }
    let grants = if columns.contains_key("role_permissions") && columns.contains_key("user_role_assignments")
    {
        "SELECT CAST(a.user_id AS BIGINT), CAST(p.resource_type AS TEXT), CAST(p.resource_pattern AS TEXT), \
         CAST(p.permission AS TEXT) FROM role_permissions p JOIN user_role_assignments a ON a.role_id = p.role_id"
            .to_owned()
    } else {
        let mut parts = Vec::new();
        if columns.contains_key("experiment_permissions") {
            parts.push(
                "SELECT CAST(user_id AS BIGINT), 'experiment', CAST(experiment_id AS TEXT), CAST(permission AS TEXT) \
                 FROM experiment_permissions",
            );
        }
        if columns.contains_key("registered_model_permissions") {
            parts.push(
                "SELECT CAST(user_id AS BIGINT), 'registered_model', CAST(name AS TEXT), CAST(permission AS TEXT) \
                 FROM registered_model_permissions",
            );
        }
        parts.join(" UNION ALL ")
    };
    if grants.is_empty() {
        return Ok(summary);
    }
    for row in sqlx::query(&grants).fetch_all(&pool).await? {
        let user: i64 = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        let key: String = row.try_get(2)?;
        let permission: String = row.try_get(3)?;
        let resource = match kind.as_str() {
            "experiment" => Resource::Experiment,
            "registered_model" => Resource::RegisteredModel,
            _ => {
                summary.skipped += 1;
                continue;
            }
        };
        let (Some(ours), Some(permission)) = (ids.get(&user), Permission::parse(&permission)) else {
            summary.skipped += 1;
            continue;
        };
        if key.contains('*') {
            summary.skipped += 1;
            continue;
        }
        target
            .upsert_permission(resource, &key, *ours, permission)
            .await
            .map_err(auth_error)?;
        summary.permissions += 1;
    }
    Ok(summary)
}

fn auth_error(err: crate::auth::store::AuthStoreError) -> ImportError {
    ImportError::Source(format!("our auth database: {err}"))
}
