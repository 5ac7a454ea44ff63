//! mlkube-server: an MLflow-REST-compatible tracking server (experiments, runs, metrics, params,
//! tags, datasets, logged models and the artifact proxy) on SQLite or PostgreSQL. It owns the HTTP
//! surface, the store and artifact storage; it does not run models or talk to Kubernetes.

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod import;
pub mod names;
pub mod prometheus;
pub mod quality;
pub mod search;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod validation;
pub mod version;
pub mod wire;

use std::sync::Arc;

pub use api::app;
pub use state::AppState;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error(
        "an import from {0} into this database has not finished: run the same `mlkube-server import` \
         again to finish it (the server does not start on a half-imported database)"
    )]
    ImportUnfinished(String),
    #[error("could not open the backend store")]
    Store(#[from] store::StoreError),
    #[error("could not prepare the artifact destination: {0}")]
    Artifacts(String),
    #[error("could not listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server stopped with an I/O error")]
    Serve(#[source] std::io::Error),
    #[error("could not start basic auth")]
    Auth(#[from] auth::AuthError),
}

/// Build the shared state from resolved settings: open the store (migrating it) and the artifact root.
pub async fn build_state(settings: &config::Settings) -> Result<AppState, RunError> {
    let store = store::open_with(
        &settings.backend_store_uri,
        &settings.default_artifact_root,
        settings.sqlite_sync,
    )
    .await?;
    if let Ok(Some(source)) = import::unfinished(store.pool()).await {
        return Err(RunError::ImportUnfinished(source));
    }
    let artifacts = match &settings.artifacts_destination {
        Some(destination) => Some(Arc::new(
            artifacts::ArtifactRoot::connect(destination).map_err(RunError::Artifacts)?,
        )),
        None => None,
    };
    let sql_store = Arc::new(store);
    let store: Arc<dyn store::Store> = sql_store.clone();
    let metrics = settings
        .expose_prometheus
        .then(|| Arc::new(prometheus::ServerMetrics::new()));
    let monitoring = quality::QualityMonitoring::new(
        sql_store.database(),
        metrics.as_ref().map(|m| m.quality.clone()),
        settings.monitoring.clone(),
    );
    let replica = store::schedule::replica_id();
    monitoring.spawn_scheduler(replica.clone());
    let auth = match &settings.auth {
        Some(config) => Some(Arc::new(auth::Auth::open(config, store.clone()).await?)),
        None => None,
    };
    if let (Some(metrics), Some(interval)) = (&metrics, settings.statistics_interval) {
        let schedule = store::schedule::Schedule::new(sql_store.database(), "statistics", interval, replica);
        prometheus::spawn_statistics(store.clone(), auth.clone(), metrics.clone(), schedule);
    }
    let ui = crate::ui::resolve(&settings.ui).await;
    Ok(AppState {
        store,
        artifacts,
        metrics,
        auth,
        monitoring,
        ui,
    })
}

/// Serve until SIGINT/SIGTERM.
pub async fn run(settings: config::Settings) -> Result<(), RunError> {
    let state = build_state(&settings).await?;
    tracing::info!(
        store = state.store.engine(),
        backend = %store::redact_uri(&settings.backend_store_uri),
        artifact_root = %settings.default_artifact_root,
        "store ready"
    );
    if let Some(auth) = &state.auth {
        tracing::info!(
            auth_store = auth.store().engine(),
            default_permission = %auth.default_permission(),
            "basic auth on: every route but /health, /version and /metrics needs credentials"
        );
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| RunError::Bind {
            addr: settings.listen,
            source,
        })?;
    tracing::info!(addr = %settings.listen, "mlkube-server listening");
    if let Some(prefix) = &settings.static_prefix {
        tracing::info!(prefix = %prefix, "also serving everything under the static prefix");
    }
    let app = if settings.artifacts_only {
        tracing::info!("--artifacts-only: serving the artifact proxy, /health, /version and /metrics only");
        api::artifacts_app(state, settings.max_request_body_bytes)
    } else {
        app(state, settings.max_request_body_bytes)
    };
    let router = ui::prefix::with_static_prefix(app, settings.static_prefix.as_deref());
    // The peer address reaches basic auth's failed-login limits (auth/lockout.rs).
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(RunError::Serve)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
