//! The operator's HTTP endpoints: `/metrics` (8080) and `/healthz`, `/readyz` (8081).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// `/metrics` in the Prometheus text format.
pub fn metrics_app(registry: Arc<Registry>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `/healthz` (the process runs) and `/readyz` (the controllers are started).
pub fn health_app(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(ready)
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> impl IntoResponse {
    if ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{self, Metrics};
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_lists_every_promised_name() {
        let m = Metrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        drop(m.start("trackingserver"));
        m.failed("modeldeployment", "RegistryUnavailable");
        m.rollout_phase("modeldeployment/ml/churn", Some("Canary"));
        m.canary_transition("CanaryRolledBack");
        let (status, body) = get(metrics_app(Arc::new(registry)), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for name in [
            format!(
                "{}_total{{controller=\"trackingserver\"}} 1",
                metrics::RECONCILE_TOTAL
            ),
            format!(
                "{}_total{{controller=\"modeldeployment\",reason=\"RegistryUnavailable\"}} 1",
                metrics::RECONCILE_ERRORS
            ),
            format!(
                "{}_count{{controller=\"trackingserver\"}} 1",
                metrics::RECONCILE_DURATION
            ),
            format!("{}{{phase=\"Canary\"}} 1", metrics::CANARY_ROLLOUTS),
            format!("{}{{phase=\"RolledBack\"}} 0", metrics::CANARY_ROLLOUTS),
            format!(
                "{}_total{{reason=\"CanaryRolledBack\"}} 1",
                metrics::CANARY_TRANSITIONS
            ),
        ] {
            assert!(body.contains(&name), "{name} missing from\n{body}");
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_controllers() {
        let ready = Arc::new(AtomicBool::new(false));
        let app = health_app(ready.clone());
        assert_eq!(get(app.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get(app, "/readyz").await.0, StatusCode::OK);
    }
}
