//! Permissions and the authorisation table: every route the server registers, keyed by its template
//! (as `MatchedPath` reports it) and method, says which resource it touches and what it needs. A
//! route missing from [`ROUTES`] is refused to everyone but admins (fail closed); a test asserts that
//! every registered route has an entry.
//!
//! The mapping follows MLflow's basic-auth validators (read / update = EDIT / delete = MANAGE /
//! manage = MANAGE) and classifies the routes MLflow left open, the CVE lessons: `runs/search`,
//! `log-inputs`, model-version search, the metric bulk routes, logged models, multipart uploads, and
//! artifact DELETE (MANAGE, CVE-2024-4263).

use axum::http::Method;

use crate::error::{ApiError, ErrorCode};

/// A user's permission on one experiment or registered model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    NoPermissions,
    Read,
    Edit,
    Manage,
}

impl Permission {
    pub const ALL: [Permission; 4] = [Self::Read, Self::Edit, Self::Manage, Self::NoPermissions];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoPermissions => "NO_PERMISSIONS",
            Self::Read => "READ",
            Self::Edit => "EDIT",
            Self::Manage => "MANAGE",
        }
    }

    /// Exactly MLflow's names (case-sensitive, as MLflow checks them).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Parse a permission given by a client, answering MLflow's error for an unknown one.
    pub fn parse_param(s: &str) -> Result<Self, ApiError> {
        Self::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid permission '{s}'. Valid permissions are: ('READ', 'EDIT', 'MANAGE', 'NO_PERMISSIONS')"
            ))
        })
    }

    /// Whether this permission allows what `need` asks for.
    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Read => self >= Self::Read,
            Need::Edit => self >= Self::Edit,
            Need::Manage => self >= Self::Manage,
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request needs on its resource: read; update (EDIT); delete or manage permissions (MANAGE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Edit,
    Manage,
}

impl Need {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "READ",
            Self::Edit => "EDIT",
            Self::Manage => "MANAGE",
        }
    }
}

/// Where a request names its experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExperimentFrom {
    /// The `experiment_id` parameter (required).
    Id,
    /// `experiment_id`, defaulting to the Default experiment `0` as `runs/create` does.
    IdOrDefault,
    /// The `experiment_name` parameter, resolved through the tracking store.
    Name,
}

/// How one route is authorised for a non-admin user (admins pass every rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No credentials needed.
    Public,
    /// Any signed-in user (what the route returns is filtered or scoped by a [`Hook`]).
    Authenticated,
    /// Admins only.
    Admin,
    /// The `username` parameter must be the caller (or the caller an admin).
    SelfOrAdmin,
    Experiment(ExperimentFrom, Need),
    /// Every experiment id in this list parameter (`experiment_ids`).
    Experiments(&'static str, Need),
    /// The run named by `run_id` (or the legacy `run_uuid`): its experiment's permission.
    Run(Need),
    /// Every run in this list parameter: their experiments' permissions.
    Runs(&'static str, Need),
    /// The logged model in the `{model_id}` path segment: its experiment's permission.
    LoggedModel(Need),
    /// The registered model named by `name`.
    RegisteredModel(Need),
    /// `model-versions/create`: EDIT on the model, and READ on the source run / logged model when
    /// given (registering someone else's run would otherwise expose it).
    CreateModelVersion,
    /// The proxied artifact path after `/mlflow-artifacts/artifacts/` (or `/mlflow-artifacts/mpu/<op>/`):
    /// its leading `<experiment id>/` segment. Anything else is refused.
    ArtifactPath(Need),
    /// The `path` query parameter of the proxied directory listing, the same way.
    ArtifactListing,
}

/// Work done around the handler for a route (for admins too, except the filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    None,
    /// `experiments/create`: the creator gets MANAGE on the new experiment.
    GrantExperiment,
    /// `registered-models/create`: the creator gets MANAGE on the new model.
    GrantRegisteredModel,
    /// `registered-models/delete`: the model's permission rows go with it.
    DeleteRegisteredModel,
    /// `registered-models/rename`: the model's permission rows follow the new name.
    RenameRegisteredModel,
    /// `runs/create`: record the caller as `user_id` when the request names nobody.
    RunUser,
    /// Search responses keep only what the caller may read.
    FilterExperiments,
    FilterRegisteredModels,
    FilterModelVersions,
    FilterLoggedModels,
}

/// Which URL prefixes a table entry applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No prefix (`/health`, `/version`, `/metrics`).
    Root,
    /// `/api/2.0` and `/ajax-api/2.0`.
    V2,
    /// `/api/3.0` and `/ajax-api/3.0`.
    V3,
}

impl Scope {
    fn prefixes(self) -> &'static [&'static str] {
        match self {
            Self::Root => &[""],
            Self::V2 => &["/api/2.0", "/ajax-api/2.0"],
            Self::V3 => &["/api/3.0", "/ajax-api/3.0"],
        }
    }
}

/// One row of the authorisation table.
#[derive(Debug, Clone, Copy)]
pub struct RouteRule {
    pub scope: Scope,
    /// The route template after the prefix, exactly as registered.
    pub path: &'static str,
    pub method: &'static str,
    pub rule: Rule,
    pub hook: Hook,
}

const fn r(scope: Scope, method: &'static str, path: &'static str, rule: Rule, hook: Hook) -> RouteRule {
    RouteRule {
        scope,
        path,
        method,
        rule,
        hook,
    }
}

use ExperimentFrom::{Id, IdOrDefault, Name};
use Hook::None as NoHook;
use Need::{Edit, Manage, Read};
use Rule::*;
use Scope::{Root, V2, V3};

/// Every route of the server (with basic auth on), and how it is authorised.
#[rustfmt::skip]
pub static ROUTES: &[RouteRule] = &[
    // --- unauthenticated probes: liveness, version, Prometheus scrape (aggregates only) ---
    r(Root, "GET", "/health", Public, NoHook),
    r(Root, "GET", "/version", Public, NoHook),
    r(Root, "GET", "/metrics", Public, NoHook),
    // --- 3.x client probe ---
    r(V3, "GET", "/mlflow/server-info", Authenticated, NoHook),
    // --- the web UI (docs/web-ui.md): its assets are public, the page needs a signed-in user,
    // downloads need READ on their run / registered model, GraphQL is checked per operation by
    // the REST routes its resolvers call ---
    r(Root, "GET", "/", Authenticated, NoHook),
    r(Root, "GET", "/static-files/{*path}", Public, NoHook),
    r(Root, "GET", "/get-artifact", Run(Read), NoHook),
    r(Root, "GET", "/model-versions/get-artifact", RegisteredModel(Read), NoHook),
    r(Root, "GET", "/graphql", Authenticated, NoHook),
    r(Root, "POST", "/graphql", Authenticated, NoHook),
    r(V2, "POST", "/mlflow/experiments/search-datasets", Experiments("experiment_ids", Read), NoHook),
    r(V2, "GET", "/mlflow/logged-models/{model_id}/artifacts/directories", LoggedModel(Read), NoHook),
    r(V2, "GET", "/mlflow/logged-models/{model_id}/artifacts/files", LoggedModel(Read), NoHook),
    // Features this server lacks answer empty results to anyone signed in (ui/shell.rs).
    r(V2, "GET", "/mlflow/gateway-proxy", Authenticated, NoHook),
    r(V2, "POST", "/mlflow/gateway-proxy", Authenticated, NoHook),
    r(V3, "POST", "/mlflow/traces/search", Authenticated, NoHook),
    r(V3, "POST", "/mlflow/traces/metrics", Authenticated, NoHook),
    r(V3, "GET", "/mlflow/datasets/search", Authenticated, NoHook),
    r(V3, "POST", "/mlflow/datasets/search", Authenticated, NoHook),
    r(V3, "GET", "/mlflow/scorers/list", Authenticated, NoHook),
    r(V3, "GET", "/mlflow/gateway/endpoints/list", Authenticated, NoHook),
    r(V3, "GET", "/mlflow/assistant/config", Authenticated, NoHook),
    r(V3, "GET", "/mlflow/assistant/providers", Authenticated, NoHook),
    r(V3, "GET", "/mlflow/ui-telemetry", Authenticated, NoHook),
    r(V3, "POST", "/mlflow/ui-telemetry", Authenticated, NoHook),
    // --- experiments ---
    r(V2, "POST", "/mlflow/experiments/create", Authenticated, Hook::GrantExperiment),
    r(V2, "GET", "/mlflow/experiments/get", Experiment(Id, Read), NoHook),
    r(V2, "GET", "/mlflow/experiments/get-by-name", Experiment(Name, Read), NoHook),
    r(V2, "POST", "/mlflow/experiments/search", Authenticated, Hook::FilterExperiments),
    r(V2, "GET", "/mlflow/experiments/search", Authenticated, Hook::FilterExperiments),
    r(V2, "POST", "/mlflow/experiments/update", Experiment(Id, Edit), NoHook),
    r(V2, "POST", "/mlflow/experiments/delete", Experiment(Id, Manage), NoHook),
    r(V2, "POST", "/mlflow/experiments/restore", Experiment(Id, Manage), NoHook),
    r(V2, "POST", "/mlflow/experiments/set-experiment-tag", Experiment(Id, Edit), NoHook),
    r(V2, "POST", "/mlflow/experiments/delete-experiment-tag", Experiment(Id, Edit), NoHook),
    // --- runs (inherit their experiment's permission) ---
    r(V2, "POST", "/mlflow/runs/create", Experiment(IdOrDefault, Edit), Hook::RunUser),
    r(V2, "GET", "/mlflow/runs/get", Run(Read), NoHook),
    r(V2, "POST", "/mlflow/runs/update", Run(Edit), NoHook),
    r(V2, "POST", "/mlflow/runs/delete", Run(Manage), NoHook),
    r(V2, "POST", "/mlflow/runs/restore", Run(Manage), NoHook),
    r(V2, "POST", "/mlflow/runs/search", Experiments("experiment_ids", Read), NoHook),
    r(V2, "POST", "/mlflow/runs/log-metric", Run(Edit), NoHook),
    r(V2, "POST", "/mlflow/runs/log-parameter", Run(Edit), NoHook),
    r(V2, "POST", "/mlflow/runs/set-tag", Run(Edit), NoHook),
    r(V2, "POST", "/mlflow/runs/delete-tag", Run(Edit), NoHook),
    r(V2, "POST", "/mlflow/runs/log-batch", Run(Edit), NoHook),
    r(V2, "POST", "/mlflow/runs/log-model", Run(Edit), NoHook),
    r(V2, "POST", "/mlflow/runs/log-inputs", Run(Edit), NoHook),
    r(V2, "POST", "/mlflow/runs/outputs", Run(Edit), NoHook),
    // --- metrics ---
    r(V2, "GET", "/mlflow/metrics/get-history", Run(Read), NoHook),
    r(V2, "GET", "/mlflow/metrics/get-history-bulk-interval", Runs("run_ids", Read), NoHook),
    r(V2, "GET", "/mlflow/metrics/get-history-bulk", Runs("run_id", Read), NoHook),
    // --- run artifacts (listing through the tracking API) ---
    r(V2, "GET", "/mlflow/artifacts/list", Run(Read), NoHook),
    // --- logged models (3.x client) ---
    r(V2, "POST", "/mlflow/logged-models", Experiment(Id, Edit), NoHook),
    r(V2, "POST", "/mlflow/logged-models/search", Experiments("experiment_ids", Read), Hook::FilterLoggedModels),
    r(V2, "GET", "/mlflow/logged-models/{model_id}", LoggedModel(Read), NoHook),
    r(V2, "PATCH", "/mlflow/logged-models/{model_id}", LoggedModel(Edit), NoHook),
    r(V2, "DELETE", "/mlflow/logged-models/{model_id}", LoggedModel(Manage), NoHook),
    r(V2, "PATCH", "/mlflow/logged-models/{model_id}/tags", LoggedModel(Edit), NoHook),
    r(V2, "DELETE", "/mlflow/logged-models/{model_id}/tags/{key}", LoggedModel(Edit), NoHook),
    r(V2, "POST", "/mlflow/logged-models/{model_id}/params", LoggedModel(Edit), NoHook),
    // --- registered models ---
    r(V2, "POST", "/mlflow/registered-models/create", Authenticated, Hook::GrantRegisteredModel),
    r(V2, "GET", "/mlflow/registered-models/get", RegisteredModel(Read), NoHook),
    r(V2, "POST", "/mlflow/registered-models/rename", RegisteredModel(Edit), Hook::RenameRegisteredModel),
    r(V2, "PATCH", "/mlflow/registered-models/update", RegisteredModel(Edit), NoHook),
    r(V2, "DELETE", "/mlflow/registered-models/delete", RegisteredModel(Manage), Hook::DeleteRegisteredModel),
    r(V2, "GET", "/mlflow/registered-models/search", Authenticated, Hook::FilterRegisteredModels),
    r(V2, "POST", "/mlflow/registered-models/get-latest-versions", RegisteredModel(Read), NoHook),
    r(V2, "GET", "/mlflow/registered-models/get-latest-versions", RegisteredModel(Read), NoHook),
    r(V2, "POST", "/mlflow/registered-models/set-tag", RegisteredModel(Edit), NoHook),
    r(V2, "DELETE", "/mlflow/registered-models/delete-tag", RegisteredModel(Edit), NoHook),
    r(V2, "POST", "/mlflow/registered-models/alias", RegisteredModel(Edit), NoHook),
    r(V2, "GET", "/mlflow/registered-models/alias", RegisteredModel(Read), NoHook),
    r(V2, "DELETE", "/mlflow/registered-models/alias", RegisteredModel(Manage), NoHook),
    // --- model versions (the registered model's permission) ---
    r(V2, "POST", "/mlflow/model-versions/create", CreateModelVersion, NoHook),
    r(V2, "GET", "/mlflow/model-versions/get", RegisteredModel(Read), NoHook),
    r(V2, "PATCH", "/mlflow/model-versions/update", RegisteredModel(Edit), NoHook),
    r(V2, "DELETE", "/mlflow/model-versions/delete", RegisteredModel(Manage), NoHook),
    r(V2, "GET", "/mlflow/model-versions/search", Authenticated, Hook::FilterModelVersions),
    r(V2, "POST", "/mlflow/model-versions/transition-stage", RegisteredModel(Edit), NoHook),
    r(V2, "GET", "/mlflow/model-versions/get-download-uri", RegisteredModel(Read), NoHook),
    r(V2, "POST", "/mlflow/model-versions/set-tag", RegisteredModel(Edit), NoHook),
    r(V2, "DELETE", "/mlflow/model-versions/delete-tag", RegisteredModel(Manage), NoHook),
    // --- artifact proxy: GET READ, PUT EDIT, DELETE MANAGE (CVE-2024-4263), multipart EDIT (CVE-2026-2651)
    r(V2, "GET", "/mlflow-artifacts/artifacts", ArtifactListing, NoHook),
    r(V2, "GET", "/mlflow-artifacts/artifacts/", ArtifactListing, NoHook),
    r(V2, "GET", "/mlflow-artifacts/artifacts/{*path}", ArtifactPath(Read), NoHook),
    r(V2, "PUT", "/mlflow-artifacts/artifacts/{*path}", ArtifactPath(Edit), NoHook),
    r(V2, "DELETE", "/mlflow-artifacts/artifacts/{*path}", ArtifactPath(Manage), NoHook),
    r(V2, "POST", "/mlflow-artifacts/mpu/create/{*path}", ArtifactPath(Edit), NoHook),
    r(V2, "POST", "/mlflow-artifacts/mpu/complete/{*path}", ArtifactPath(Edit), NoHook),
    r(V2, "POST", "/mlflow-artifacts/mpu/abort/{*path}", ArtifactPath(Edit), NoHook),
    // --- users (creating users is admin-only: CVE-2023-6014) ---
    r(V2, "POST", "/mlflow/users/create", Admin, NoHook),
    r(V2, "GET", "/mlflow/users/get", SelfOrAdmin, NoHook),
    r(V2, "GET", "/mlflow/users/current", Authenticated, NoHook),
    r(V2, "GET", "/mlflow/users/list", Admin, NoHook),
    r(V2, "PATCH", "/mlflow/users/update-password", SelfOrAdmin, NoHook),
    r(V2, "PATCH", "/mlflow/users/update-admin", Admin, NoHook),
    r(V2, "DELETE", "/mlflow/users/delete", Admin, NoHook),
    // --- permissions (MANAGE on the resource) ---
    r(V2, "POST", "/mlflow/experiments/permissions/create", Experiment(Id, Manage), NoHook),
    r(V2, "GET", "/mlflow/experiments/permissions/get", Experiment(Id, Manage), NoHook),
    r(V2, "PATCH", "/mlflow/experiments/permissions/update", Experiment(Id, Manage), NoHook),
    r(V2, "DELETE", "/mlflow/experiments/permissions/delete", Experiment(Id, Manage), NoHook),
    r(V2, "POST", "/mlflow/registered-models/permissions/create", RegisteredModel(Manage), NoHook),
    r(V2, "GET", "/mlflow/registered-models/permissions/get", RegisteredModel(Manage), NoHook),
    r(V2, "PATCH", "/mlflow/registered-models/permissions/update", RegisteredModel(Manage), NoHook),
    r(V2, "DELETE", "/mlflow/registered-models/permissions/delete", RegisteredModel(Manage), NoHook),
    // Model quality monitoring: any user may log and read (the sidecar logs with its own
    // credentials); monitors (which call webhooks) and drift references are an admin's.
    r(V2, "POST", "/mlkube/predictions/log-batch", Authenticated, NoHook),
    r(V2, "POST", "/mlkube/ground-truth/log-batch", Authenticated, NoHook),
    r(V2, "GET", "/mlkube/quality/get", Authenticated, NoHook),
    r(V2, "GET", "/mlkube/monitors/list", Authenticated, NoHook),
    r(V2, "GET", "/mlkube/monitors/get", Authenticated, NoHook),
    r(V2, "POST", "/mlkube/monitors/evaluate", Authenticated, NoHook),
    r(V2, "POST", "/mlkube/monitors/create", Admin, NoHook),
    r(V2, "PATCH", "/mlkube/monitors/update", Admin, NoHook),
    r(V2, "DELETE", "/mlkube/monitors/delete", Admin, NoHook),
    r(V2, "GET", "/mlkube/drift/reference/get", Authenticated, NoHook),
    r(V2, "POST", "/mlkube/drift/reference/set", Admin, NoHook),
    r(V2, "DELETE", "/mlkube/drift/reference/delete", Admin, NoHook),
];

/// The table entry for a matched route template and method (`HEAD` is authorised as `GET`).
pub fn lookup(template: &str, method: &Method) -> Option<&'static RouteRule> {
    let method = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES.iter().find(|entry| {
        entry.method == method
            && entry.scope.prefixes().iter().any(|prefix| {
                template
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest == entry.path)
            })
    })
}

/// The experiment id at the head of a clean proxied artifact path (`12/<run>/artifacts/...`), in
/// canonical decimal form; `None` for anything else (root listings, custom locations, `007/`).
pub fn experiment_of_artifact_path(clean: &str) -> Option<&str> {
    let head = clean.split('/').next().unwrap_or("");
    let canonical = !head.is_empty()
        && head.len() <= 18
        && head.bytes().all(|b| b.is_ascii_digit())
        && (head == "0" || !head.starts_with('0'));
    canonical.then_some(head)
}

/// The 403 answered when a rule refuses a request.
pub fn denied(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::PermissionDenied, message)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn permissions_order_and_parse() {
        assert!(Permission::Manage.allows(Need::Manage));
        assert!(Permission::Edit.allows(Need::Edit) && !Permission::Edit.allows(Need::Manage));
        assert!(Permission::Read.allows(Need::Read) && !Permission::Read.allows(Need::Edit));
        assert!(!Permission::NoPermissions.allows(Need::Read));
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("read"), None);
        let err = Permission::parse_param("OWNER").unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidParameterValue);
    }

    #[test]
    fn table_has_no_duplicates_and_well_formed_entries() {
        let mut seen = HashSet::new();
        for entry in ROUTES {
            assert!(entry.path.starts_with('/'), "{entry:?}");
            assert!(
                ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&entry.method),
                "{entry:?}"
            );
            for prefix in entry.scope.prefixes() {
                assert!(
                    seen.insert((format!("{prefix}{}", entry.path), entry.method)),
                    "duplicate entry {prefix}{} {}",
                    entry.path,
                    entry.method
                );
            }
        }
    }

    #[test]
    fn lookup_by_prefix_and_method() {
        let get = Method::GET;
        assert_eq!(
            lookup("/api/2.0/mlflow/runs/get", &get).map(|e| e.rule),
            Some(Rule::Run(Need::Read))
        );
        assert!(lookup("/ajax-api/2.0/mlflow/runs/get", &Method::HEAD).is_some());
        assert!(lookup("/api/2.0/mlflow/runs/get", &Method::POST).is_none());
        // A path served under one prefix is not authorised under another.
        assert!(lookup("/api/2.0/mlflow/server-info", &get).is_none());
        assert!(lookup("/api/3.0/mlflow/runs/get", &get).is_none());
        assert!(lookup("/api/3.0/mlflow/server-info", &get).is_some());
        assert!(lookup("/health", &get).is_some_and(|e| e.rule == Rule::Public));
        assert!(lookup("/api/2.0/health", &get).is_none());
        assert!(lookup("/unknown", &get).is_none());
    }

    #[test]
    fn artifact_paths_name_their_experiment() {
        assert_eq!(experiment_of_artifact_path("12/abc/artifacts/m.pkl"), Some("12"));
        assert_eq!(experiment_of_artifact_path("0/x"), Some("0"));
        assert_eq!(experiment_of_artifact_path("7"), Some("7"));
        assert_eq!(experiment_of_artifact_path(""), None);
        assert_eq!(experiment_of_artifact_path("007/x"), None);
        assert_eq!(experiment_of_artifact_path("models/x"), None);
        assert_eq!(experiment_of_artifact_path("1a/x"), None);
        assert_eq!(experiment_of_artifact_path("1234567890123456789/x"), None);
    }
}
