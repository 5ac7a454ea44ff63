//! The model registry: registered models, model versions, stages, tags and aliases.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::experiments::KeyValue;
use super::{AppState, paging};
use crate::artifacts::fully_decode;
use crate::error::{ApiError, ApiResult};
use crate::search;
use crate::store::registry::{NewModelVersion, RegistrySearch};
use crate::store::sql::join_uri;
use crate::store::{StoreError, Tag};
use crate::validation;
use crate::wire::{Req, lenient, required, required_str};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mlflow/registered-models/create", post(create_model))
        .route("/mlflow/registered-models/get", get(get_model))
        .route("/mlflow/registered-models/rename", post(rename_model))
        .route(
            "/mlflow/registered-models/update",
            axum::routing::patch(update_model),
        )
        .route(
            "/mlflow/registered-models/delete",
            axum::routing::delete(delete_model),
        )
        .route("/mlflow/registered-models/search", get(search_models))
        .route(
            "/mlflow/registered-models/get-latest-versions",
            post(latest_versions).get(latest_versions),
        )
        .route("/mlflow/registered-models/set-tag", post(set_model_tag))
        .route(
            "/mlflow/registered-models/delete-tag",
            axum::routing::delete(delete_model_tag),
        )
        .route(
            "/mlflow/registered-models/alias",
            post(set_alias).get(get_alias).delete(delete_alias),
        )
        .route("/mlflow/model-versions/create", post(create_version))
        .route("/mlflow/model-versions/get", get(get_version))
        .route(
            "/mlflow/model-versions/update",
            axum::routing::patch(update_version),
        )
        .route(
            "/mlflow/model-versions/delete",
            axum::routing::delete(delete_version),
        )
        .route("/mlflow/model-versions/search", get(search_versions))
        .route("/mlflow/model-versions/transition-stage", post(transition_stage))
        .route("/mlflow/model-versions/get-download-uri", get(download_uri))
        .route("/mlflow/model-versions/set-tag", post(set_version_tag))
        .route(
            "/mlflow/model-versions/delete-tag",
            axum::routing::delete(delete_version_tag),
        )
}

const MAX_REGISTRY_TAG_VALUE: usize = 5000;

fn registry_tag(kv: KeyValue) -> ApiResult<Tag> {
    let tag = kv.into_tag("tags")?;
    validate_tag(&tag)?;
    Ok(tag)
}

fn validate_tag(tag: &Tag) -> ApiResult<()> {
    validation::validate_key("tag", &tag.key)?;
    if tag.value.chars().count() > MAX_REGISTRY_TAG_VALUE {
        return Err(ApiError::invalid(format!(
            "Tag '{}' value exceeds the maximum length of {MAX_REGISTRY_TAG_VALUE} characters.",
            tag.key
        )));
    }
    Ok(())
}

fn validate_model_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid("Registered model name cannot be empty."));
    }
    if name.contains(['/', '\\', '\0']) || name.contains("..") || name.len() > 256 {
        return Err(ApiError::invalid(format!(
            "Invalid registered model name '{name}': it may not contain '/', '\\', '..' or NUL, and is at most \
             256 characters."
        )));
    }
    Ok(())
}

/// Alias rules: at most 255 word characters or dashes, not `latest`, not `v<digits>`.
pub fn validate_alias(alias: &str) -> ApiResult<()> {
    let word = !alias.is_empty() && alias.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    let reserved = alias.eq_ignore_ascii_case("latest")
        || (alias.len() > 1
            && alias.starts_with(['v', 'V'])
            && alias[1..].chars().all(|c| c.is_ascii_digit()));
    if !word || alias.chars().count() > 255 || reserved {
        return Err(ApiError::invalid(format!(
            "Invalid alias name '{alias}': an alias holds up to 255 letters, digits, '_' or '-', and may not be \
             'latest' or of the form 'v<number>'."
        )));
    }
    Ok(())
}

/// Where a new version's files live, and the logged model and run it inherits when the request names
/// none.
struct ResolvedSource {
    storage_location: String,
    model_id: Option<String>,
    run_id: Option<String>,
}

impl ResolvedSource {
    fn at(storage_location: String) -> Self {
        Self {
            storage_location,
            model_id: None,
            run_id: None,
        }
    }
}

/// Where a version's files live: `runs:/<id>/<path>` resolves under the run's artifacts, `models:/<id>`
/// to a logged model's artifacts, `models:/<name>/<version>` (what `copy_model_version` sends) to that
/// version's files; other accepted sources are used as given.
async fn resolve_source(state: &AppState, source: &str, run_id: Option<&str>) -> ApiResult<ResolvedSource> {
    let decoded = fully_decode(source)
        .ok_or_else(|| ApiError::invalid("Invalid model version source: undecodable."))?;
    let bad_path = decoded.contains(['\0', '\\', '#', '?'])
        || decoded.split('/').any(|seg| seg == "..")
        || decoded.contains("%2e")
        || decoded.contains("%2E");
    if bad_path {
        return Err(ApiError::invalid(format!(
            "Invalid model version source '{source}': it may not contain '..' segments, '\\', '#', '?' or NUL."
        )));
    }
    let scheme = decoded
        .split_once(':')
        .map(|(s, _)| s.to_ascii_lowercase())
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    match scheme.as_deref() {
        Some("runs") => {
            let rest = decoded["runs:".len()..].trim_start_matches('/');
            let (id, path) = rest.split_once('/').unwrap_or((rest, ""));
            if let Some(run_id) = run_id.filter(|r| *r != id) {
                return Err(ApiError::invalid(format!(
                    "Invalid model version source '{source}': it names run '{id}' but run_id is '{run_id}'."
                )));
            }
            let run = state.store.get_run(id).await.map_err(|e| match e {
                StoreError::NotFound(m) => ApiError::invalid(format!("Invalid model version source: {m}")),
                other => other.into(),
            })?;
            let location = if path.is_empty() {
                run.info.artifact_uri
            } else {
                join_uri(&run.info.artifact_uri, path)
            };
            Ok(ResolvedSource::at(location))
        }
        Some("models") => {
            let id = decoded["models:".len()..].trim_start_matches('/');
            let registered = id.rsplit_once('/').filter(|(name, version)| {
                !name.is_empty() && !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())
            });
            if id.starts_with("m-") && !id.contains('/') {
                let model = state.store.get_logged_model(id).await?;
                Ok(ResolvedSource {
                    storage_location: model.info.artifact_uri,
                    model_id: Some(model.info.model_id),
                    run_id: None,
                })
            } else if let Some((name, version)) = registered {
                let v = state
                    .store
                    .get_model_version(name, version)
                    .await
                    .map_err(|e| match e {
                        StoreError::NotFound(m) => {
                            ApiError::invalid(format!("Invalid model version source: {m}"))
                        }
                        other => other.into(),
                    })?;
                Ok(ResolvedSource {
                    storage_location: v.storage_location,
                    model_id: v.model_id,
                    run_id: v.run_id.filter(|r| !r.is_empty()),
                })
            } else {
                Err(ApiError::invalid(format!(
                    "Invalid model version source '{source}': a models:/ source must name a logged model \
                     (models:/m-…) or a registered model version (models:/<name>/<version>)."
                )))
            }
        }
        Some("mlflow-artifacts") => {
            // With a run named, a proxied source must lie in that run's artifacts (or in the
            // logged models of its experiment): a version cannot borrow another run's files.
            if let Some(run_id) = run_id {
                let run = state.store.get_run(run_id).await.map_err(|e| match e {
                    StoreError::NotFound(m) => {
                        ApiError::invalid(format!("Invalid run_id for model version: {m}"))
                    }
                    other => other.into(),
                })?;
                let inside = |root: &str| {
                    let root = root.trim_end_matches('/');
                    decoded == root || decoded.starts_with(&format!("{root}/"))
                };
                let experiment = state.store.get_experiment(&run.info.experiment_id).await?;
                if !inside(&run.info.artifact_uri)
                    && !inside(&join_uri(&experiment.artifact_location, "models"))
                {
                    return Err(ApiError::invalid(format!(
                        "Invalid model version source '{source}': it is not inside the artifacts of run '{run_id}'                          ({}).",
                        run.info.artifact_uri
                    )));
                }
            }
            Ok(ResolvedSource::at(source.to_owned()))
        }
        Some("s3" | "s3a" | "gs" | "wasbs" | "wasb" | "abfss" | "hdfs" | "dbfs" | "oss") => {
            Ok(ResolvedSource::at(source.to_owned()))
        }
        Some("file") | None => {
            // A local path is only acceptable inside the run's own (local) artifact directory.
            let path = decoded.trim_start_matches("file://");
            if let Some(run_id) = run_id {
                let run = state.store.get_run(run_id).await?;
                let root = run.info.artifact_uri.trim_start_matches("file://");
                if root.starts_with('/')
                    && (path == root || path.starts_with(&format!("{}/", root.trim_end_matches('/'))))
                {
                    return Ok(ResolvedSource::at(source.to_owned()));
                }
            }
            Err(ApiError::invalid(format!(
                "Invalid model version source '{source}': local paths and file: URIs are not accepted; register the \
                 model from its run (runs:/<run_id>/<path>) or its artifact URI."
            )))
        }
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid model version source '{source}': the '{other}' scheme is not accepted."
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct ModelRef {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    new_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    description: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValue>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    value: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    alias: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    version: Option<String>,
    #[serde(default, deserialize_with = "lenient::strings")]
    stages: Vec<String>,
}

async fn create_model(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    validate_model_name(&name)?;
    let tags = req
        .tags
        .into_iter()
        .map(registry_tag)
        .collect::<ApiResult<Vec<_>>>()?;
    let model = state
        .store
        .create_registered_model(&name, req.description.as_deref(), &tags, None)
        .await?;
    Ok(Json(json!({ "registered_model": model })))
}

async fn get_model(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    Ok(Json(
        json!({ "registered_model": state.store.get_registered_model(&name).await? }),
    ))
}

async fn rename_model(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    let new_name = required_str(req.new_name, "new_name")?;
    validate_model_name(&new_name)?;
    Ok(Json(
        json!({ "registered_model": state.store.rename_registered_model(&name, &new_name).await? }),
    ))
}

async fn update_model(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    let model = state
        .store
        .update_registered_model(&name, req.description.as_deref())
        .await?;
    Ok(Json(json!({ "registered_model": model })))
}

async fn delete_model(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    state.store.delete_registered_model(&name).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct SearchRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::strings")]
    order_by: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    page_token: Option<String>,
}

async fn search_models(
    State(state): State<AppState>,
    Req(req): Req<SearchRequest>,
) -> ApiResult<axum::response::Response> {
    let filter = paging::filter(req.filter.as_deref(), search::parse_registered_model_filter)?;
    let order_by = paging::order_by(&req.order_by, search::parse_registered_model_order_by)?;
    let max_results = paging::max_results(req.max_results, 100, 1000)?;
    let offset = paging::decode(req.page_token.as_deref())?;
    let page = state
        .store
        .search_registered_models(&RegistrySearch {
            filter,
            order_by,
            max_results,
            offset,
        })
        .await?;
    Ok(paging::page_body("registered_models", page))
}

async fn latest_versions(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    let versions = state.store.get_latest_versions(&name, &req.stages).await?;
    Ok(Json(json!({ "model_versions": versions })))
}

async fn set_model_tag(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    let tag = Tag {
        key: required_str(req.key, "key")?,
        value: req.value.unwrap_or_default(),
    };
    validate_tag(&tag)?;
    state.store.set_registered_model_tag(&name, &tag).await?;
    Ok(Json(json!({})))
}

async fn delete_model_tag(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    let key = required_str(req.key, "key")?;
    state.store.delete_registered_model_tag(&name, &key).await?;
    Ok(Json(json!({})))
}

async fn set_alias(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    let alias = required_str(req.alias, "alias")?;
    let version = required_str(req.version, "version")?;
    validate_alias(&alias)?;
    state.store.set_alias(&name, &alias, &version).await?;
    Ok(Json(json!({})))
}

async fn get_alias(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    let alias = required_str(req.alias, "alias")?;
    Ok(Json(
        json!({ "model_version": state.store.get_version_by_alias(&name, &alias).await? }),
    ))
}

async fn delete_alias(State(state): State<AppState>, Req(req): Req<ModelRef>) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    let alias = required_str(req.alias, "alias")?;
    state.store.delete_alias(&name, &alias).await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
struct VersionRequest {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    version: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    source: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    run_link: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    model_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    description: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValue>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    stage: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    archive_existing_versions: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    value: Option<String>,
}

async fn create_version(
    State(state): State<AppState>,
    Req(req): Req<VersionRequest>,
) -> ApiResult<Json<Value>> {
    let name = required_str(req.name, "name")?;
    let source = required_str(req.source, "source")?;
    let run_id = req.run_id.filter(|r| !r.is_empty());
    let tags = req
        .tags
        .into_iter()
        .map(registry_tag)
        .collect::<ApiResult<Vec<_>>>()?;
    // Fail on an unknown model before resolving (and possibly refusing) the source.
    state.store.get_registered_model(&name).await?;
    let resolved = resolve_source(&state, &source, run_id.as_deref()).await?;
    let storage_location = resolved.storage_location;
    if let Some(run_id) = &run_id {
        state.store.get_run(run_id).await.map_err(|e| match e {
            StoreError::NotFound(m) => ApiError::invalid(format!("Invalid run_id for model version: {m}")),
            other => other.into(),
        })?;
    }
    let model_id = req.model_id.filter(|m| !m.is_empty()).or(resolved.model_id);
    // As in MLflow, a version without an explicit run_id records the run of the version it copies,
    // or the run that logged its logged model (`log_model(..., registered_model_name=...)` sends none).
    let run_id = match (run_id.or(resolved.run_id), &model_id) {
        (None, Some(model_id)) => state.store.get_logged_model(model_id).await?.info.source_run_id,
        (run_id, _) => run_id,
    };
    let version = state
        .store
        .create_model_version(NewModelVersion {
            name,
            source,
            storage_location,
            run_id,
            run_link: req.run_link.filter(|l| !l.is_empty()),
            model_id,
            description: req.description,
            user_id: None,
            tags,
        })
        .await?;
    Ok(Json(json!({ "model_version": version })))
}

fn name_and_version(name: Option<String>, version: Option<String>) -> ApiResult<(String, String)> {
    Ok((required_str(name, "name")?, required_str(version, "version")?))
}

async fn get_version(State(state): State<AppState>, Req(req): Req<VersionRequest>) -> ApiResult<Json<Value>> {
    let (name, version) = name_and_version(req.name, req.version)?;
    Ok(Json(
        json!({ "model_version": state.store.get_model_version(&name, &version).await? }),
    ))
}

async fn update_version(
    State(state): State<AppState>,
    Req(req): Req<VersionRequest>,
) -> ApiResult<Json<Value>> {
    let (name, version) = name_and_version(req.name, req.version)?;
    let v = state
        .store
        .update_model_version(&name, &version, req.description.as_deref())
        .await?;
    Ok(Json(json!({ "model_version": v })))
}

async fn delete_version(
    State(state): State<AppState>,
    Req(req): Req<VersionRequest>,
) -> ApiResult<Json<Value>> {
    let (name, version) = name_and_version(req.name, req.version)?;
    state.store.delete_model_version(&name, &version).await?;
    Ok(Json(json!({})))
}

async fn search_versions(
    State(state): State<AppState>,
    Req(req): Req<SearchRequest>,
) -> ApiResult<axum::response::Response> {
    let filter = paging::filter(req.filter.as_deref(), search::parse_model_version_filter)?;
    let order_by = paging::order_by(&req.order_by, search::parse_model_version_order_by)?;
    let max_results = paging::max_results(req.max_results, 1000, 200_000)?;
    let offset = paging::decode(req.page_token.as_deref())?;
    let page = state
        .store
        .search_model_versions(&RegistrySearch {
            filter,
            order_by,
            max_results,
            offset,
        })
        .await?;
    Ok(paging::page_body("model_versions", page))
}

async fn transition_stage(
    State(state): State<AppState>,
    Req(req): Req<VersionRequest>,
) -> ApiResult<Json<Value>> {
    let (name, version) = name_and_version(req.name, req.version)?;
    let stage = required_str(req.stage, "stage")?;
    let archive = required(req.archive_existing_versions, "archive_existing_versions")?;
    let v = state
        .store
        .transition_model_version_stage(&name, &version, &stage, archive)
        .await?;
    Ok(Json(json!({ "model_version": v })))
}

async fn download_uri(
    State(state): State<AppState>,
    Req(req): Req<VersionRequest>,
) -> ApiResult<Json<Value>> {
    let (name, version) = name_and_version(req.name, req.version)?;
    let v = state.store.get_model_version(&name, &version).await?;
    Ok(Json(json!({ "artifact_uri": v.storage_location })))
}

async fn set_version_tag(
    State(state): State<AppState>,
    Req(req): Req<VersionRequest>,
) -> ApiResult<Json<Value>> {
    let (name, version) = name_and_version(req.name, req.version)?;
    let tag = Tag {
        key: required_str(req.key, "key")?,
        value: req.value.unwrap_or_default(),
    };
    validate_tag(&tag)?;
    state.store.set_model_version_tag(&name, &version, &tag).await?;
    Ok(Json(json!({})))
}

async fn delete_version_tag(
    State(state): State<AppState>,
    Req(req): Req<VersionRequest>,
) -> ApiResult<Json<Value>> {
    let (name, version) = name_and_version(req.name, req.version)?;
    let key = required_str(req.key, "key")?;
    state
        .store
        .delete_model_version_tag(&name, &version, &key)
        .await?;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_rules() {
        for ok in ["champion", "prod-1", "a_b", "v1a", "version"] {
            assert!(validate_alias(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "latest",
            "LATEST",
            "v1",
            "V22",
            "a b",
            "a/b",
            &"a".repeat(256),
        ] {
            assert!(validate_alias(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn model_names() {
        assert!(validate_model_name("my-model").is_ok());
        for bad in ["", " ", "a/b", "..", "a\\b"] {
            assert!(validate_model_name(bad).is_err(), "{bad}");
        }
    }
}
