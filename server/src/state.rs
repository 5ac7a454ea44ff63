//! What every HTTP handler shares: the stores, the artifact root, the exported metrics, basic auth,
//! model-quality monitoring and the web UI. It sits below the HTTP layer (`api`, `ui`) and above
//! the components it holds, none of which depend on it (docs/architecture.md, "Module layers").

use std::sync::Arc;

use crate::artifacts::ArtifactRoot;
use crate::prometheus::ServerMetrics;
use crate::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// `None` when artifacts are not served (`--no-serve-artifacts`).
    pub artifacts: Option<Arc<ArtifactRoot>>,
    /// `Some` when `/metrics` is exposed (`--expose-prometheus`).
    pub metrics: Option<Arc<ServerMetrics>>,
    /// `Some` with `--app-name basic-auth`: every route then sits behind `auth::middleware`.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Model quality monitoring: its tables, settings, webhook notifier and exported series.
    pub monitoring: Arc<crate::quality::QualityMonitoring>,
    /// The web UI on `/` (`None`: `--no-ui`).
    pub ui: Option<crate::ui::Ui>,
}
