//! The model registry's domain types (serialised as MLflow's JSON entities) and its store trait.

use async_trait::async_trait;
use serde::Serialize;

use super::{Page, StoreResult, Tag};
use crate::search::{Clause, OrderBy};

/// Stages a model version can be in.
pub const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];
/// The stage a deleted version is kept in (never shown).
pub const DELETED_STAGE: &str = "Deleted_Internal";

/// Normalise a stage name case-insensitively (`production` → `Production`).
pub fn canonical_stage(stage: &str) -> Option<&'static str> {
    STAGES.iter().copied().find(|s| s.eq_ignore_ascii_case(stage))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AliasRef {
    pub alias: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub current_stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_link: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Where the version's files are (returned by get-download-uri), not part of the entity.
    #[serde(skip)]
    pub storage_location: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RegisteredModel {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latest_versions: Vec<ModelVersion>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<AliasRef>,
}

#[derive(Debug, Clone)]
pub struct NewModelVersion {
    pub name: String,
    pub source: String,
    pub storage_location: String,
    pub run_id: Option<String>,
    pub run_link: Option<String>,
    pub model_id: Option<String>,
    pub description: Option<String>,
    pub user_id: Option<String>,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone)]
pub struct RegistrySearch {
    pub filter: Vec<Clause>,
    pub order_by: Vec<OrderBy>,
    pub max_results: u64,
    pub offset: u64,
}

/// The model registry half of the store.
#[async_trait]
pub trait Registry: Send + Sync {
    async fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[Tag],
        user_id: Option<&str>,
    ) -> StoreResult<RegisteredModel>;
    async fn get_registered_model(&self, name: &str) -> StoreResult<RegisteredModel>;
    async fn rename_registered_model(&self, name: &str, new_name: &str) -> StoreResult<RegisteredModel>;
    async fn update_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> StoreResult<RegisteredModel>;
    async fn delete_registered_model(&self, name: &str) -> StoreResult<()>;
    async fn search_registered_models(&self, search: &RegistrySearch) -> StoreResult<Page<RegisteredModel>>;
    async fn set_registered_model_tag(&self, name: &str, tag: &Tag) -> StoreResult<()>;
    async fn delete_registered_model_tag(&self, name: &str, key: &str) -> StoreResult<()>;

    async fn create_model_version(&self, version: NewModelVersion) -> StoreResult<ModelVersion>;
    async fn get_model_version(&self, name: &str, version: &str) -> StoreResult<ModelVersion>;
    async fn update_model_version(
        &self,
        name: &str,
        version: &str,
        description: Option<&str>,
    ) -> StoreResult<ModelVersion>;
    async fn transition_model_version_stage(
        &self,
        name: &str,
        version: &str,
        stage: &str,
        archive_existing_versions: bool,
    ) -> StoreResult<ModelVersion>;
    async fn delete_model_version(&self, name: &str, version: &str) -> StoreResult<()>;
    async fn search_model_versions(&self, search: &RegistrySearch) -> StoreResult<Page<ModelVersion>>;
    /// The newest version in each requested stage (every stage when `stages` is empty).
    async fn get_latest_versions(&self, name: &str, stages: &[String]) -> StoreResult<Vec<ModelVersion>>;
    async fn set_model_version_tag(&self, name: &str, version: &str, tag: &Tag) -> StoreResult<()>;
    async fn delete_model_version_tag(&self, name: &str, version: &str, key: &str) -> StoreResult<()>;

    async fn set_alias(&self, name: &str, alias: &str, version: &str) -> StoreResult<()>;
    async fn delete_alias(&self, name: &str, alias: &str) -> StoreResult<()>;
    async fn get_version_by_alias(&self, name: &str, alias: &str) -> StoreResult<ModelVersion>;
}
