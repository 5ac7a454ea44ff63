//! The one authentication + authorisation layer in front of every route.
//!
//! 1. Public routes (`/health`, `/version`, `/metrics`) pass untouched.
//! 2. Everything else needs HTTP basic credentials of a user: missing or wrong → 401 with
//!    `WWW-Authenticate: Basic realm="mlflow"` (MLflow's JSON error shape, `UNAUTHENTICATED`).
//! 3. Admins pass; anyone else is checked against the route's [`Rule`]; no rule → refused (fail
//!    closed). Refusals are 403 `PERMISSION_DENIED` in MLflow's JSON error shape (MLflow's own app
//!    answers plain text; the client maps both to the same exception).
//! 4. The route's [`Hook`] runs around the handler: creator grants, permission clean-up on delete and
//!    rename, `runs/create`'s `user_id`, and search results filtered to what the caller may read.
//!
//! Parameters are read exactly as the handlers read them (`wire::query_to_json` / `body_to_json`,
//! the same leniency, the artifact proxy's own path helper), so the resource checked is the resource
//! served. A JSON body is buffered (up to the server's body limit) and handed on unchanged.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;

use super::permissions::{
    self, ExperimentFrom, Hook, Need, RouteRule, Rule, denied, experiment_of_artifact_path,
};
use super::store::Resource;
use super::{Auth, AuthError, CurrentUser, Permission};
use crate::artifacts::clean_relative_path;
use crate::error::{ApiError, ErrorCode};
use crate::wire::{body_read_error, body_to_json, query_to_json, required_str};

/// The middleware's state.
#[derive(Clone)]
pub struct Guard {
    pub auth: Arc<Auth>,
    /// The server's JSON body limit: what a buffered body may be.
    pub max_body_bytes: usize,
}

/// The most a handler's JSON response may be when a hook has to read it.
const RESPONSE_LIMIT: usize = 256 * 1024 * 1024;

const NOT_AUTHENTICATED: &str = "You are not authenticated. Please see \
     https://www.mlflow.org/docs/latest/auth/index.html#authenticating-to-mlflow on how to authenticate.";

pub async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut response = match guarded(&guard, req, next).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    // A refusal may leave the request body unread, and the server then drops the connection after
    // answering; saying so keeps a keep-alive client from sending its next request down it.
    if has_body
        && matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        )
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Store(store) => store.into(),
            AuthError::Tracking(store) => store.into(),
            other => ApiError::internal(other),
        }
    }
}

/// 401 with the challenge the MLflow client (and browsers) answer with credentials.
pub fn unauthenticated() -> Response {
    let mut response = ApiError::new(ErrorCode::Unauthenticated, NOT_AUTHENTICATED).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"mlflow\""),
    );
    response
}

/// 429 in MLflow's shape, with the seconds until the failed-login window ends.
fn too_many_failed_logins(wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = ApiError::new(
        ErrorCode::ResourceExhausted,
        format!("Too many failed logins; retry in {seconds} s."),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// `Authorization: Basic base64(username:password)`, if well formed.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    Some((username.to_owned(), password.to_owned()))
}

async fn guarded(guard: &Guard, req: Request, next: Next) -> Result<Response, ApiError> {
    let auth = &guard.auth;
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .filter(|t| !t.contains("__private__"));
    let entry = template
        .as_deref()
        .and_then(|t| permissions::lookup(t, req.method()));
    if entry.is_some_and(|e| e.rule == Rule::Public) {
        return Ok(next.run(req).await);
    }

    let Some((username, password)) = basic_credentials(req.headers()) else {
        return Ok(unauthenticated());
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Err(wait) = auth.failed_logins().check(&username, peer) {
        tracing::warn!(username = ?username, peer = ?peer, "basic auth: too many failed logins; refused");
        return Ok(too_many_failed_logins(wait));
    }
    let Some(user) = auth.authenticate(&username, &password).await? else {
        tracing::info!(username = ?username, "basic auth: wrong username or password");
        auth.failed_logins().failed(&username, peer);
        return Ok(unauthenticated());
    };
    auth.failed_logins().succeeded(&username);

    let Some(entry) = entry else {
        if user.is_admin || template.is_none() {
            // Admins pass everywhere; an unmatched path gets the API's 404.
            let mut req = req;
            req.extensions_mut().insert(user);
            return Ok(next.run(req).await);
        }
        tracing::warn!(
            route = template.as_deref().unwrap_or(""),
            method = %req.method(),
            "basic auth: route has no authorization rule; refused"
        );
        return Err(denied(
            "Permission denied: this endpoint has no authorization rule.",
        ));
    };

    let (mut parts, body) = req.into_parts();
    let rule_reads = !user.is_admin && rule_reads_message(entry.rule);
    let hook_reads = hook_reads_message(entry.hook);
    let (mut message, mut body) = if rule_reads || hook_reads {
        match read_message(&parts, body, guard.max_body_bytes).await {
            Ok((message, body)) => (Some(message), body),
            // The handler reads the same way and answers the same error.
            Err((err, _)) if rule_reads => return Err(err),
            Err((_, body)) => (None, body),
        }
    } else {
        (None, body)
    };

    if !user.is_admin
        && let Err(err) = authorize(auth, &user, entry, &mut parts, message.as_ref()).await
    {
        if err.code() == ErrorCode::PermissionDenied {
            tracing::info!(
                username = ?user.username,
                route = entry.path,
                method = entry.method,
                "basic auth: permission denied"
            );
        }
        return Err(err);
    }

    if entry.hook == Hook::RunUser
        && let Some(Value::Object(fields)) = message.as_mut()
    {
        let named = fields
            .get("user_id")
            .is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
        if !named {
            fields.insert("user_id".to_owned(), Value::String(user.username.clone()));
            let bytes = serde_json::to_vec(&fields).map_err(ApiError::internal)?;
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            body = Body::from(bytes);
        }
    }

    parts.extensions.insert(user.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    after(auth, &user, entry.hook, message.as_ref(), response).await
}

fn rule_reads_message(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::SelfOrAdmin
            | Rule::Experiment(..)
            | Rule::Experiments(..)
            | Rule::Run(_)
            | Rule::Runs(..)
            | Rule::RegisteredModel(_)
            | Rule::CreateModelVersion
    )
}

fn hook_reads_message(hook: Hook) -> bool {
    matches!(
        hook,
        Hook::RunUser | Hook::DeleteRegisteredModel | Hook::RenameRegisteredModel
    )
}

/// The request message as the handlers see it: the query string for GET, the JSON body otherwise
/// (buffered up to `limit` and handed back). On failure the error and whatever body is left.
async fn read_message(parts: &Parts, body: Body, limit: usize) -> Result<(Value, Body), (ApiError, Body)> {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        return Ok((query_to_json(parts.uri.query().unwrap_or("")), body));
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(err) => return Err((body_read_error(err), Body::empty())),
    };
    match body_to_json(&bytes) {
        Ok(value) => Ok((value, Body::from(bytes))),
        Err(err) => Err((err, Body::from(bytes))),
    }
}

// === reading parameters the way the handlers do (wire::lenient) ===

fn opt_string(message: Option<&Value>, field: &str) -> Result<Option<String>, ApiError> {
    match message.and_then(|m| m.get(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid request body: expected a string for '{field}', got {other}"
        ))),
    }
}

fn strings(message: Option<&Value>, field: &str) -> Result<Vec<String>, ApiError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(ApiError::invalid(format!(
            "Invalid request body: expected a string in '{field}', got {other}"
        ))),
    };
    match message.and_then(|m| m.get(field)) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        Some(v) => Ok(vec![one(v)?]),
    }
}

/// `run_id`, or the legacy `run_uuid`, as the run handlers take it.
fn run_id(message: Option<&Value>) -> Result<String, ApiError> {
    let run_id = opt_string(message, "run_id")?.filter(|s| !s.is_empty());
    required_str(run_id.or(opt_string(message, "run_uuid")?), "run_id")
}

// === authorisation ===

async fn authorize(
    auth: &Auth,
    user: &CurrentUser,
    entry: &RouteRule,
    parts: &mut Parts,
    message: Option<&Value>,
) -> Result<(), ApiError> {
    match entry.rule {
        Rule::Public | Rule::Authenticated => Ok(()),
        Rule::Admin => Err(denied("Permission denied: only admins may do this.")),
        Rule::SelfOrAdmin => {
            let username = required_str(opt_string(message, "username")?, "username")?;
            if username == user.username {
                Ok(())
            } else {
                Err(denied(
                    "Permission denied: only admins may do this for another user.",
                ))
            }
        }
        Rule::Experiment(from, need) => {
            let experiment_id = match from {
                ExperimentFrom::Id => required_str(opt_string(message, "experiment_id")?, "experiment_id")?,
                ExperimentFrom::IdOrDefault => opt_string(message, "experiment_id")?
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "0".to_owned()),
                ExperimentFrom::Name => {
                    let name = required_str(opt_string(message, "experiment_name")?, "experiment_name")?;
                    match auth.tracking().get_experiment_by_name(&name).await {
                        Ok(Some(experiment)) => experiment.experiment_id,
                        // Nothing to protect: the handler answers RESOURCE_DOES_NOT_EXIST.
                        Ok(None) => return Ok(()),
                        Err(err) => return Err(AuthError::Tracking(err).into()),
                    }
                }
            };
            check_experiment(auth, user, &experiment_id, need, "experiment").await
        }
        Rule::Experiments(field, need) => {
            for experiment_id in strings(message, field)? {
                check_experiment(auth, user, &experiment_id, need, "experiment").await?;
            }
            Ok(())
        }
        Rule::Run(need) => {
            let run_id = run_id(message)?;
            check_run(auth, user, &run_id, need).await
        }
        Rule::Runs(field, need) => {
            for run_id in strings(message, field)? {
                check_run(auth, user, &run_id, need).await?;
            }
            Ok(())
        }
        Rule::LoggedModel(need) => {
            let params = RawPathParams::from_request_parts(parts, &())
                .await
                .map_err(|e| ApiError::invalid(format!("Invalid path parameters: {e}")))?;
            let Some((_, model_id)) = params.iter().find(|(key, _)| *key == "model_id") else {
                return Err(denied("Permission denied: no logged model in the path."));
            };
            match auth.logged_model_experiment(model_id).await? {
                Some(experiment_id) => {
                    check_experiment(auth, user, &experiment_id, need, "logged model's experiment").await
                }
                None => Ok(()),
            }
        }
        Rule::RegisteredModel(need) => {
            let name = required_str(opt_string(message, "name")?, "name")?;
            check_registered_model(auth, user, &name, need).await
        }
        Rule::CreateModelVersion => {
            let name = required_str(opt_string(message, "name")?, "name")?;
            check_registered_model(auth, user, &name, Need::Edit).await?;
            if let Some(run_id) = opt_string(message, "run_id")?.filter(|r| !r.is_empty()) {
                check_run(auth, user, &run_id, Need::Read).await?;
            }
            if let Some(model_id) = opt_string(message, "model_id")?.filter(|m| !m.is_empty())
                && let Some(experiment_id) = auth.logged_model_experiment(&model_id).await?
            {
                check_experiment(
                    auth,
                    user,
                    &experiment_id,
                    Need::Read,
                    "logged model's experiment",
                )
                .await?;
            }
            if let Some(source) = opt_string(message, "source")? {
                check_version_source(auth, user, &source).await?;
            }
            Ok(())
        }
        Rule::ArtifactPath(need) => {
            let clean = proxied_artifact_path(&parts.uri)?;
            check_artifact_path(auth, user, &clean, need).await
        }
        Rule::ArtifactListing => {
            let query = parts.uri.query().unwrap_or("");
            let mut paths = form_urlencoded::parse(query.as_bytes())
                .filter(|(key, _)| key == "path")
                .map(|(_, value)| value.into_owned());
            let raw = paths.next().unwrap_or_default();
            if paths.next().is_some() {
                return Err(ApiError::invalid("Invalid query: 'path' given more than once."));
            }
            let clean = clean_relative_path(&raw)?;
            check_artifact_path(auth, user, &clean, Need::Read).await
        }
    }
}

/// A version's source must be readable by whoever registers it: copying a model version, a logged
/// model, a run's or an experiment's artifacts into a model the caller controls would otherwise
/// leak what they cannot read.
async fn check_version_source(auth: &Auth, user: &CurrentUser, source: &str) -> Result<(), ApiError> {
    let decoded = crate::artifacts::fully_decode(source).unwrap_or_else(|| source.to_owned());
    if let Some(rest) = decoded.strip_prefix("models:") {
        let rest = rest.trim_start_matches('/');
        if rest.starts_with("m-") {
            if let Some(experiment_id) = auth.logged_model_experiment(rest).await? {
                check_experiment(
                    auth,
                    user,
                    &experiment_id,
                    Need::Read,
                    "logged model's experiment",
                )
                .await?;
            }
        } else {
            let name = rest.split(['/', '@']).next().unwrap_or(rest);
            check_registered_model(auth, user, name, Need::Read).await?;
        }
    } else if let Some(rest) = decoded.strip_prefix("runs:") {
        let run_id = rest.trim_start_matches('/').split('/').next().unwrap_or("");
        check_run(auth, user, run_id, Need::Read).await?;
    } else if let Some(path) = crate::artifacts::proxied_path(&decoded) {
        let clean = clean_relative_path(path)?;
        check_artifact_path(auth, user, &clean, Need::Read).await?;
    }
    Ok(())
}

fn refuse(need: Need, what: &str, key: &str) -> ApiError {
    denied(format!(
        "Permission denied: this request needs {} permission on the {what} '{key}'.",
        need.as_str()
    ))
}

async fn check_experiment(
    auth: &Auth,
    user: &CurrentUser,
    experiment_id: &str,
    need: Need,
    what: &str,
) -> Result<(), ApiError> {
    if auth
        .experiment_permission(user, experiment_id)
        .await?
        .allows(need)
    {
        Ok(())
    } else {
        Err(refuse(need, what, experiment_id))
    }
}

async fn check_run(auth: &Auth, user: &CurrentUser, run_id: &str, need: Need) -> Result<(), ApiError> {
    match auth.run_experiment(run_id).await? {
        Some(experiment_id) => {
            if auth
                .experiment_permission(user, &experiment_id)
                .await?
                .allows(need)
            {
                Ok(())
            } else {
                Err(denied(format!(
                    "Permission denied: this request needs {} permission on the experiment of run '{run_id}'.",
                    need.as_str()
                )))
            }
        }
        // No such run: the handler answers RESOURCE_DOES_NOT_EXIST.
        None => Ok(()),
    }
}

async fn check_registered_model(
    auth: &Auth,
    user: &CurrentUser,
    name: &str,
    need: Need,
) -> Result<(), ApiError> {
    if auth.registered_model_permission(user, name).await?.allows(need) {
        Ok(())
    } else {
        Err(refuse(need, "registered model", name))
    }
}

async fn check_artifact_path(
    auth: &Auth,
    user: &CurrentUser,
    clean: &str,
    need: Need,
) -> Result<(), ApiError> {
    match experiment_of_artifact_path(clean) {
        Some(experiment_id) => check_experiment(auth, user, experiment_id, need, "experiment").await,
        None => Err(denied(
            "Permission denied: only admins may use artifact paths outside an experiment's directory.",
        )),
    }
}

/// The clean artifact path of a proxy request: what follows `/mlflow-artifacts/artifacts/` (as the
/// proxy handlers find it) or `/mlflow-artifacts/mpu/<operation>/`.
fn proxied_artifact_path(uri: &axum::http::Uri) -> Result<String, ApiError> {
    if uri.path().contains("/mlflow-artifacts/mpu/") {
        return crate::artifacts::mpu_path_from_uri(uri);
    }
    crate::artifacts::path_from_uri(uri)
}

// === after the handler ===

async fn after(
    auth: &Auth,
    user: &CurrentUser,
    hook: Hook,
    message: Option<&Value>,
    response: Response,
) -> Result<Response, ApiError> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let name = || {
        opt_string(message, "name")
            .ok()
            .flatten()
            .filter(|n| !n.is_empty())
    };
    match hook {
        Hook::None | Hook::RunUser => Ok(response),
        Hook::GrantExperiment => {
            let (response, body) = read_response(response).await?;
            match body.get("experiment_id").and_then(id_string) {
                Some(id) => grant(auth, Resource::Experiment, &id, user).await,
                None => tracing::error!("experiments/create answered without an experiment_id"),
            }
            Ok(response)
        }
        Hook::GrantRegisteredModel => {
            let (response, body) = read_response(response).await?;
            match body.pointer("/registered_model/name").and_then(Value::as_str) {
                Some(name) => grant(auth, Resource::RegisteredModel, name, user).await,
                None => tracing::error!("registered-models/create answered without a name"),
            }
            Ok(response)
        }
        Hook::DeleteRegisteredModel => {
            if let Some(name) = name()
                && let Err(err) = auth.store().delete_registered_model_permissions(&name).await
            {
                tracing::error!(error = %err, model = ?name, "could not delete a deleted model's permissions");
            }
            Ok(response)
        }
        Hook::RenameRegisteredModel => {
            let new_name = opt_string(message, "new_name").ok().flatten();
            if let (Some(old), Some(new)) = (name(), new_name)
                && let Err(err) = auth.store().rename_registered_model_permissions(&old, &new).await
            {
                tracing::error!(error = %err, model = ?old, "could not move a renamed model's permissions");
            }
            Ok(response)
        }
        _ if user.is_admin => Ok(response),
        Hook::FilterExperiments => {
            let readable = auth.readable(user, Resource::Experiment).await?;
            filter_response(response, "experiments", |item| {
                item.get("experiment_id")
                    .and_then(id_string)
                    .is_some_and(|id| readable.can_read(&id))
            })
            .await
        }
        Hook::FilterLoggedModels => {
            let readable = auth.readable(user, Resource::Experiment).await?;
            filter_response(response, "models", |item| {
                item.pointer("/info/experiment_id")
                    .and_then(id_string)
                    .is_some_and(|id| readable.can_read(&id))
            })
            .await
        }
        Hook::FilterRegisteredModels | Hook::FilterModelVersions => {
            let readable = auth.readable(user, Resource::RegisteredModel).await?;
            let field = if hook == Hook::FilterRegisteredModels {
                "registered_models"
            } else {
                "model_versions"
            };
            filter_response(response, field, |item| {
                item.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|name| readable.can_read(name))
            })
            .await
        }
    }
}

fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The creator gets MANAGE. A failure is logged, not answered: the resource exists by now.
async fn grant(auth: &Auth, resource: Resource, key: &str, user: &CurrentUser) {
    if let Err(err) = auth
        .store()
        .upsert_permission(resource, key, user.id, Permission::Manage)
        .await
    {
        tracing::error!(error = %err, resource = ?resource, key = ?key, "could not grant the creator MANAGE");
    }
}

/// Read a handler's JSON response, handing back an equivalent response.
async fn read_response(response: Response) -> Result<(Response, Value), ApiError> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, RESPONSE_LIMIT)
        .await
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((Response::from_parts(parts, Body::from(bytes)), value))
}

/// Keep only the items of `field` that `keep` accepts; the page token is left as it is (the client
/// pages on, the pages just hold fewer items).
async fn filter_response(
    response: Response,
    field: &str,
    keep: impl Fn(&Value) -> bool,
) -> Result<Response, ApiError> {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, RESPONSE_LIMIT)
        .await
        .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    let mut value: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    if let Some(Value::Array(items)) = value.get_mut(field) {
        items.retain(|item| keep(item));
        if items.is_empty()
            && let Some(object) = value.as_object_mut()
        {
            // MLflow omits empty repeated fields.
            object.remove(field);
        }
    }
    let bytes = serde_json::to_vec(&value).map_err(ApiError::internal)?;
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn basic_credentials_are_parsed_strictly() {
        // alice:pa:ss (a password may contain ':')
        assert_eq!(
            basic_credentials(&headers("Basic YWxpY2U6cGE6c3M=")),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(
            basic_credentials(&headers("basic YWxpY2U6cGE6c3M=")),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials(&headers("Bearer YWxpY2U6cGE6c3M=")), None);
        assert_eq!(basic_credentials(&headers("Basic !!!")), None);
        // "alice" without a colon
        assert_eq!(basic_credentials(&headers("Basic YWxpY2U=")), None);
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    #[test]
    fn parameters_are_read_leniently_like_the_handlers() {
        let m = serde_json::json!({"experiment_id": 3, "ids": ["1", 2], "one": "x", "bad": {"a": 1}, "run_uuid": "u"});
        assert_eq!(
            opt_string(Some(&m), "experiment_id").unwrap().as_deref(),
            Some("3")
        );
        assert_eq!(strings(Some(&m), "ids").unwrap(), vec!["1", "2"]);
        assert_eq!(strings(Some(&m), "one").unwrap(), vec!["x"]);
        assert!(strings(Some(&m), "missing").unwrap().is_empty());
        assert!(opt_string(Some(&m), "bad").is_err());
        assert_eq!(run_id(Some(&m)).unwrap(), "u");
        assert!(run_id(Some(&serde_json::json!({}))).is_err());
        let both = serde_json::json!({"run_id": "", "run_uuid": "legacy"});
        assert_eq!(run_id(Some(&both)).unwrap(), "legacy");
    }

    #[test]
    fn proxied_paths() {
        let uri: axum::http::Uri = "/api/2.0/mlflow-artifacts/mpu/create/3/run/artifacts/big.bin"
            .parse()
            .unwrap();
        assert_eq!(proxied_artifact_path(&uri).unwrap(), "3/run/artifacts/big.bin");
        let uri: axum::http::Uri = "/api/2.0/mlflow-artifacts/artifacts/3/%2e%2e/x".parse().unwrap();
        assert!(proxied_artifact_path(&uri).is_err());
        let uri: axum::http::Uri = "/ajax-api/2.0/mlflow-artifacts/artifacts/12/a%2Fb"
            .parse()
            .unwrap();
        assert_eq!(proxied_artifact_path(&uri).unwrap(), "12/a/b");
    }
}
