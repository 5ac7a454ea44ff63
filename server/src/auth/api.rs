//! The users and permissions endpoints of MLflow's basic-auth app, under `/api/2.0` and
//! `/ajax-api/2.0`, with MLflow's JSON shapes and error codes (what `AuthServiceClient` from
//! `mlflow.server.get_app_client("basic-auth", …)` sends and parses). Who may call what is decided by
//! the middleware's route table; these handlers only validate and do. No HTML: there is no `/signup`.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{MIN_PASSWORD_CHARS, validate_username};
use super::permissions::{Permission, denied};
use super::store::{AuthStoreError, PermissionRow, Resource, UserRecord};
use super::{Auth, CurrentUser, hash_password, verify_password};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::wire::{Req, lenient, required, required_str};

/// The routes, mounted under both API prefixes, with their own state.
pub fn router<S: Clone + Send + Sync + 'static>(auth: Arc<Auth>) -> Router<S> {
    let mut router = Router::new();
    for prefix in ["/api/2.0", "/ajax-api/2.0"] {
        let at = |path: &str| format!("{prefix}/mlflow/{path}");
        router = router
            .route(&at("users/create"), post(create_user))
            .route(&at("users/get"), get(get_user))
            .route(&at("users/current"), get(current_user))
            .route(&at("users/list"), get(list_users))
            .route(&at("users/update-password"), patch(update_password))
            .route(&at("users/update-admin"), patch(update_admin))
            .route(&at("users/delete"), delete(delete_user))
            .route(
                &at("experiments/permissions/create"),
                post(create_experiment_permission),
            )
            .route(&at("experiments/permissions/get"), get(get_experiment_permission))
            .route(
                &at("experiments/permissions/update"),
                patch(update_experiment_permission),
            )
            .route(
                &at("experiments/permissions/delete"),
                delete(delete_experiment_permission),
            )
            .route(
                &at("registered-models/permissions/create"),
                post(create_model_permission),
            )
            .route(
                &at("registered-models/permissions/get"),
                get(get_model_permission),
            )
            .route(
                &at("registered-models/permissions/update"),
                patch(update_model_permission),
            )
            .route(
                &at("registered-models/permissions/delete"),
                delete(delete_model_permission),
            );
    }
    router.with_state(auth)
}

impl From<AuthStoreError> for ApiError {
    fn from(err: AuthStoreError) -> Self {
        match err {
            AuthStoreError::AlreadyExists(message) => {
                ApiError::new(ErrorCode::ResourceAlreadyExists, message)
            }
            AuthStoreError::Database(err) if crate::db::is_unavailable(&err) => {
                ApiError::store_unavailable(&err)
            }
            other => ApiError::internal(other),
        }
    }
}

/// A users/permissions request message (every field optional on the wire; handlers require).
#[derive(Default, Deserialize)]
struct Message {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    password: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    current_password: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    is_admin: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    permission: Option<String>,
}

/// Passwords never show in Debug output.
impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("username", &self.username)
            .field("is_admin", &self.is_admin)
            .field("experiment_id", &self.experiment_id)
            .field("name", &self.name)
            .field("permission", &self.permission)
            .finish_non_exhaustive()
    }
}

fn user_not_found(username: &str) -> ApiError {
    ApiError::not_found(format!("User with username={username} not found"))
}

async fn find_user(auth: &Auth, username: &str) -> ApiResult<UserRecord> {
    auth.store()
        .get_user(username)
        .await?
        .ok_or_else(|| user_not_found(username))
}

fn check_password(password: Option<String>) -> ApiResult<String> {
    let password = required_str(password, "password")?;
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!(
            "Password must be at least {MIN_PASSWORD_CHARS} characters."
        )));
    }
    if password.len() > 1024 {
        return Err(ApiError::invalid("Password must be at most 1024 bytes."));
    }
    Ok(password)
}

fn permission_json(resource: Resource, row: &PermissionRow) -> Value {
    match resource {
        Resource::Experiment => json!({
            "experiment_id": row.resource,
            "user_id": row.user_id,
            "permission": row.permission.as_str(),
        }),
        Resource::RegisteredModel => json!({
            "name": row.resource,
            "user_id": row.user_id,
            "permission": row.permission.as_str(),
        }),
    }
}

/// MLflow's `User.to_json()`: the user with every permission row of theirs.
async fn user_json(auth: &Auth, user: &UserRecord) -> ApiResult<Value> {
    let mut lists = Vec::with_capacity(2);
    for resource in [Resource::Experiment, Resource::RegisteredModel] {
        let rows = auth.store().list_permissions(resource, user.id).await?;
        lists.push(
            rows.iter()
                .map(|row| permission_json(resource, row))
                .collect::<Vec<_>>(),
        );
    }
    let registered_models = lists.pop().unwrap_or_default();
    let experiments = lists.pop().unwrap_or_default();
    Ok(json!({
        "id": user.id,
        "username": user.username,
        "is_admin": user.is_admin,
        "experiment_permissions": experiments,
        "registered_model_permissions": registered_models,
    }))
}

// === users ===

async fn create_user(State(auth): State<Arc<Auth>>, Req(req): Req<Message>) -> ApiResult<Json<Value>> {
    let username = required_str(req.username, "username")?;
    validate_username(&username).map_err(|why| ApiError::invalid(format!("Invalid username: {why}.")))?;
    let password = check_password(req.password)?;
    let hash = hash_password(password).await?;
    let user = auth.store().create_user(&username, &hash, false).await?;
    tracing::info!(username = ?username, "user created");
    Ok(Json(json!({ "user": user_json(&auth, &user).await? })))
}

async fn get_user(State(auth): State<Arc<Auth>>, Req(req): Req<Message>) -> ApiResult<Json<Value>> {
    let username = required_str(req.username, "username")?;
    let user = find_user(&auth, &username).await?;
    Ok(Json(json!({ "user": user_json(&auth, &user).await? })))
}

/// The signed-in user (what MLflow 3's UI asks to learn who it is).
async fn current_user(Extension(user): Extension<CurrentUser>) -> Json<Value> {
    Json(json!({
        "user": { "id": user.id, "username": user.username, "is_admin": user.is_admin },
        "is_basic_auth": true,
    }))
}

async fn list_users(State(auth): State<Arc<Auth>>) -> ApiResult<Json<Value>> {
    let users = auth.store().list_users().await?;
    let users: Vec<Value> = users
        .iter()
        .map(|u| json!({ "id": u.id, "username": u.username, "is_admin": u.is_admin }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

async fn update_password(
    State(auth): State<Arc<Auth>>,
    Extension(caller): Extension<CurrentUser>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    let username = required_str(req.username, "username")?;
    let password = check_password(req.password)?;
    let user = find_user(&auth, &username).await?;
    // MLflow 3 asks a user changing their own password for the current one; accepted and checked
    // when given (2.x clients do not send it, and the request is authenticated with it anyway).
    if let Some(current) = req.current_password.filter(|c| !c.is_empty())
        && !caller.is_admin
        && !verify_password(user.password_hash.clone(), current).await?
    {
        return Err(denied("Permission denied: the current password is incorrect."));
    }
    let hash = hash_password(password).await?;
    if !auth.store().set_password_hash(&username, &hash).await? {
        return Err(user_not_found(&username));
    }
    auth.forget_credentials(&username);
    tracing::info!(username = ?username, by = ?caller.username, "password changed");
    Ok(Json(json!({})))
}

async fn update_admin(
    State(auth): State<Arc<Auth>>,
    Extension(caller): Extension<CurrentUser>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    let username = required_str(req.username, "username")?;
    let is_admin = required(req.is_admin, "is_admin")?;
    if !auth.store().set_admin(&username, is_admin).await? {
        return Err(user_not_found(&username));
    }
    tracing::info!(username = ?username, is_admin, by = ?caller.username, "admin flag changed");
    Ok(Json(json!({})))
}

async fn delete_user(
    State(auth): State<Arc<Auth>>,
    Extension(caller): Extension<CurrentUser>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    let username = required_str(req.username, "username")?;
    if !auth.store().delete_user(&username).await? {
        return Err(user_not_found(&username));
    }
    auth.forget_credentials(&username);
    tracing::info!(username = ?username, by = ?caller.username, "user deleted");
    Ok(Json(json!({})))
}

// === permissions ===

/// The resource key of a permission request: `experiment_id` or the registered model `name`.
fn resource_key(resource: Resource, req: &mut Message) -> ApiResult<String> {
    match resource {
        Resource::Experiment => required_str(req.experiment_id.take(), "experiment_id"),
        Resource::RegisteredModel => required_str(req.name.take(), "name"),
    }
}

fn permission_not_found(resource: Resource, key: &str, username: &str) -> ApiError {
    ApiError::not_found(match resource {
        Resource::Experiment => {
            format!("Experiment permission with experiment_id={key} and username={username} not found")
        }
        Resource::RegisteredModel => {
            format!("Registered model permission with name={key} and username={username} not found")
        }
    })
}

fn entity_field(resource: Resource) -> &'static str {
    match resource {
        Resource::Experiment => "experiment_permission",
        Resource::RegisteredModel => "registered_model_permission",
    }
}

async fn create_permission(auth: &Auth, resource: Resource, mut req: Message) -> ApiResult<Json<Value>> {
    let key = resource_key(resource, &mut req)?;
    let username = required_str(req.username, "username")?;
    let permission = Permission::parse_param(&required_str(req.permission, "permission")?)?;
    let user = find_user(auth, &username).await?;
    let row = auth
        .store()
        .create_permission(resource, &key, &user, permission)
        .await?;
    Ok(Json(
        json!({ entity_field(resource): permission_json(resource, &row) }),
    ))
}

async fn get_permission(auth: &Auth, resource: Resource, mut req: Message) -> ApiResult<Json<Value>> {
    let key = resource_key(resource, &mut req)?;
    let username = required_str(req.username, "username")?;
    let user = find_user(auth, &username).await?;
    let permission = auth
        .store()
        .get_permission(resource, &key, user.id)
        .await?
        .ok_or_else(|| permission_not_found(resource, &key, &username))?;
    let row = PermissionRow {
        resource: key,
        user_id: user.id,
        permission,
    };
    Ok(Json(
        json!({ entity_field(resource): permission_json(resource, &row) }),
    ))
}

async fn update_permission(auth: &Auth, resource: Resource, mut req: Message) -> ApiResult<Json<Value>> {
    let key = resource_key(resource, &mut req)?;
    let username = required_str(req.username, "username")?;
    let permission = Permission::parse_param(&required_str(req.permission, "permission")?)?;
    let user = find_user(auth, &username).await?;
    if !auth
        .store()
        .update_permission(resource, &key, user.id, permission)
        .await?
    {
        return Err(permission_not_found(resource, &key, &username));
    }
    Ok(Json(json!({})))
}

async fn delete_permission(auth: &Auth, resource: Resource, mut req: Message) -> ApiResult<Json<Value>> {
    let key = resource_key(resource, &mut req)?;
    let username = required_str(req.username, "username")?;
    let user = find_user(auth, &username).await?;
    if !auth.store().delete_permission(resource, &key, user.id).await? {
        return Err(permission_not_found(resource, &key, &username));
    }
    Ok(Json(json!({})))
}

async fn create_experiment_permission(
    State(auth): State<Arc<Auth>>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    create_permission(&auth, Resource::Experiment, req).await
}

async fn get_experiment_permission(
    State(auth): State<Arc<Auth>>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    get_permission(&auth, Resource::Experiment, req).await
}

async fn update_experiment_permission(
    State(auth): State<Arc<Auth>>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    update_permission(&auth, Resource::Experiment, req).await
}

async fn delete_experiment_permission(
    State(auth): State<Arc<Auth>>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    delete_permission(&auth, Resource::Experiment, req).await
}

async fn create_model_permission(
    State(auth): State<Arc<Auth>>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    create_permission(&auth, Resource::RegisteredModel, req).await
}

async fn get_model_permission(
    State(auth): State<Arc<Auth>>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    get_permission(&auth, Resource::RegisteredModel, req).await
}

async fn update_model_permission(
    State(auth): State<Arc<Auth>>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    update_permission(&auth, Resource::RegisteredModel, req).await
}

async fn delete_model_permission(
    State(auth): State<Arc<Auth>>,
    Req(req): Req<Message>,
) -> ApiResult<Json<Value>> {
    delete_permission(&auth, Resource::RegisteredModel, req).await
}
