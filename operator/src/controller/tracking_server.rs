//! TrackingServer: monitoring API discovery → validate → build → apply → status, on the shared
//! [`pipeline`](super::pipeline).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::runtime::controller::Action;

use super::pipeline::{self, Halt, Pipeline};
use super::{Context, Error, Rollout, rollout};
use crate::apply::{self, Apis, Applied, Kinds};
use crate::build::{self, ChildObjects};
use crate::crd::conditions::{self, Desired};
use crate::crd::{TrackingServer, TrackingServerStatus};
use crate::validate::{Defaults, Owner, ValidatedTrackingServer, ValidationError, validate_tracking_server};

pub const CONTROLLER: &str = "trackingserver";

/// Requeue interval of a healthy TrackingServer (children changes trigger sooner).
pub const RESYNC: Duration = Duration::from_secs(300);

/// What the TrackingServer's fetch stage finds.
pub struct Fetched {
    pub apis: Apis,
}

#[async_trait::async_trait]
impl Pipeline for TrackingServer {
    const CONTROLLER: &'static str = CONTROLLER;
    const KINDS: Kinds = Kinds {
        persistent_volume_claims: true,
        config_maps: true,
        deployments: true,
        service_accounts: true,
        daemon_sets: true,
        services: true,
        pod_disruption_budgets: true,
        horizontal_pod_autoscalers: false,
        scaled_objects: false,
        ingresses: true,
        http_routes: true,
        service_monitors: true,
        prometheus_rules: false,
    };
    type Status = TrackingServerStatus;
    type Fetched = Fetched;
    type Validated = ValidatedTrackingServer;

    fn current_status(&self) -> Option<&TrackingServerStatus> {
        self.status.as_ref()
    }

    fn status_conditions(status: &TrackingServerStatus) -> &[Condition] {
        &status.conditions
    }

    fn with_conditions(
        status: TrackingServerStatus,
        generation: Option<i64>,
        conditions: Vec<Condition>,
    ) -> TrackingServerStatus {
        TrackingServerStatus {
            observed_generation: generation,
            conditions,
            ..status
        }
    }

    async fn fetch(&self, ctx: &Context) -> Result<Fetched, Result<Halt<TrackingServerStatus>, Error>> {
        let apis = apply::fetch_apis(&ctx.client, false)
            .await
            .map_err(|e| Err(Error::Fetch(e)))?;
        Ok(Fetched { apis })
    }

    fn apis(fetched: &Fetched) -> Apis {
        fetched.apis
    }

    fn validate(
        &self,
        fetched: &Fetched,
        defaults: &Defaults,
    ) -> Result<ValidatedTrackingServer, ValidationError> {
        validate_tracking_server(self, fetched.apis, defaults)
    }

    fn owner(validated: &ValidatedTrackingServer) -> &Owner {
        &validated.owner
    }

    fn build(validated: &ValidatedTrackingServer) -> ChildObjects {
        build::tracking_server(validated)
    }

    /// A Warning Event when the Gateway API is missing for `exposure.httpRoute`.
    async fn applied(&self, ctx: &Context, _fetched: &Fetched, validated: &ValidatedTrackingServer) {
        let previous = self
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let desired: Vec<Desired> = super::exposure_condition(
            validated.exposure.as_ref(),
            validated.gateway_api,
            &validated.owner.name,
        )
        .into_iter()
        .collect();
        super::announce_missing_apis(ctx, &self.object_ref(&()), previous, &desired).await;
    }

    fn status(
        &self,
        _fetched: &Fetched,
        validated: &ValidatedTrackingServer,
        applied: &Applied,
        ctx: &Context,
    ) -> TrackingServerStatus {
        let named = |name: &str| {
            applied
                .deployments
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(name))
        };
        compute_status(
            self,
            validated,
            named(&validated.owner.name),
            named(&build::artifact_server_name(&validated.owner.name)),
            ctx,
        )
    }

    fn finish(_fetched: Fetched, _ctx: &Context) -> Result<Action, Error> {
        Ok(Action::requeue(RESYNC))
    }
}

pub async fn reconcile(ts: Arc<TrackingServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    pipeline::reconcile(ts, ctx).await
}

pub fn error_policy(ts: Arc<TrackingServer>, error: &Error, ctx: Arc<Context>) -> Action {
    pipeline::error_policy(ts, error, ctx)
}

fn monitoring_condition(v: &ValidatedTrackingServer) -> Desired {
    if !v.metrics_enabled {
        Desired::new(
            conditions::MONITORING,
            false,
            conditions::MONITORING_DISABLED,
            "metrics are disabled",
        )
    } else if !v.monitoring_api {
        Desired::new(
            conditions::MONITORING,
            false,
            conditions::PROMETHEUS_OPERATOR_MISSING,
            "the monitoring.coreos.com/v1 API is not served, so no ServiceMonitor was created; pods carry prometheus.io/scrape annotations instead",
        )
    } else if v.service_monitor.is_some() {
        let message = match &v.artifact_server {
            Some(_) => format!(
                "ServiceMonitors {} and {} scrape port http",
                v.owner.name,
                build::artifact_server_name(&v.owner.name)
            ),
            None => format!("ServiceMonitor {} scrapes port http", v.owner.name),
        };
        Desired::new(conditions::MONITORING, true, conditions::SERVICE_MONITOR, message)
    } else {
        Desired::new(
            conditions::MONITORING,
            false,
            conditions::MONITORING_DISABLED,
            "serviceMonitor.enabled is false",
        )
    }
}

/// The tracking server's rollout with its dedicated artifact server's folded in: `Ready` only
/// when both are, `Progressing` while either rolls, stuck when either is. Replica counts stay
/// the tracking server's.
fn with_artifact_server(mut r: Rollout, a: Rollout) -> Rollout {
    if r.ready.status && !a.ready.status {
        r.ready = Desired::new(
            conditions::READY,
            false,
            a.ready.reason,
            format!("artifact server: {}", a.ready.message),
        );
    }
    if !r.progressing.status && a.progressing.status {
        r.progressing = Desired::new(
            conditions::PROGRESSING,
            true,
            a.progressing.reason,
            format!("artifact server: {}", a.progressing.message),
        );
    }
    if r.stuck.is_none() {
        r.stuck = a.stuck.map(|m| format!("artifact server: {m}"));
    }
    r
}

fn compute_status(
    ts: &TrackingServer,
    v: &ValidatedTrackingServer,
    deployment: Option<&k8s_openapi::api::apps::v1::Deployment>,
    artifact_deployment: Option<&k8s_openapi::api::apps::v1::Deployment>,
    ctx: &Context,
) -> TrackingServerStatus {
    let mut r = rollout(deployment, v.replicas);
    if let Some(server) = &v.artifact_server {
        r = with_artifact_server(r, rollout(artifact_deployment, server.replicas));
    }
    let degraded = match &r.stuck {
        Some(message) => Desired::new(
            conditions::DEGRADED,
            true,
            conditions::ROLLOUT_STUCK,
            message.clone(),
        ),
        None => Desired::new(
            conditions::DEGRADED,
            false,
            conditions::AS_EXPECTED,
            "no problems found",
        ),
    };
    let mut desired = vec![r.ready, r.progressing, degraded, monitoring_condition(v)];
    desired.extend(super::exposure_condition(
        v.exposure.as_ref(),
        v.gateway_api,
        &v.owner.name,
    ));
    TrackingServerStatus {
        observed_generation: ts.meta().generation,
        url: Some(v.url.clone()),
        replicas: Some(r.replicas),
        ready_replicas: Some(r.ready_replicas),
        conditions: conditions::merge(
            ts.status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default(),
            &desired,
            ts.meta().generation,
            &ctx.now(),
        ),
    }
}
