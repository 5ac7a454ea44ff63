//! TrackingServer reconcile: monitoring API discovery → validate → build → apply → status.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Context, Error, error_policy_for, rollout};
use crate::apply::{self, FIELD_MANAGER, Kinds};
use crate::build;
use crate::crd::conditions::{self, Desired};
use crate::crd::{TrackingServer, TrackingServerStatus};
use crate::validate::{ValidatedTrackingServer, validate_tracking_server};

pub const CONTROLLER: &str = "trackingserver";

/// Requeue interval of a healthy TrackingServer (children changes trigger sooner).
pub const RESYNC: Duration = Duration::from_secs(300);

fn key(ts: &TrackingServer) -> String {
    format!(
        "{CONTROLLER}/{}/{}",
        ts.namespace().unwrap_or_default(),
        ts.name_any()
    )
}

#[tracing::instrument(skip_all, fields(namespace = ts.namespace().unwrap_or_default(), name = ts.name_any()))]
pub async fn reconcile(ts: Arc<TrackingServer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start(CONTROLLER);
    if ts.meta().deletion_timestamp.is_some() {
        // Children go with the ownerReferences; nothing to clean up by hand.
        return Ok(Action::await_change());
    }
    // fetch
    let monitoring_api = apply::fetch_monitoring_api(&ctx.client)
        .await
        .map_err(Error::Fetch)?;
    // validate
    let validated = match validate_tracking_server(&ts, monitoring_api, &ctx.defaults) {
        Ok(v) => v,
        Err(err) => {
            let desired = vec![
                Desired::new(
                    conditions::READY,
                    false,
                    conditions::INVALID_SPEC,
                    err.to_string(),
                ),
                Desired::new(
                    conditions::DEGRADED,
                    true,
                    conditions::INVALID_SPEC,
                    err.to_string(),
                ),
            ];
            let status = TrackingServerStatus {
                observed_generation: ts.meta().generation,
                conditions: conditions::merge(
                    ts.status
                        .as_ref()
                        .map(|s| s.conditions.as_slice())
                        .unwrap_or_default(),
                    &desired,
                    ts.meta().generation,
                    &ctx.now(),
                ),
                ..ts.status.clone().unwrap_or_default()
            };
            patch_status(&ctx, &ts, status).await?;
            return Err(Error::Validate(err));
        }
    };
    // build
    let children = build::tracking_server(&validated);
    // apply
    let kinds = Kinds {
        persistent_volume_claims: true,
        config_maps: true,
        deployments: true,
        service_accounts: true,
        daemon_sets: true,
        services: true,
        service_monitors: monitoring_api,
        prometheus_rules: false,
    };
    let applied = apply::apply_children(&ctx.client, &validated.owner, kinds, &children)
        .await
        .map_err(Error::Apply)?;
    // status
    let status = compute_status(&ts, &validated, applied.deployments.first(), &ctx);
    patch_status(&ctx, &ts, status).await?;
    ctx.succeeded(&key(&ts));
    Ok(Action::requeue(RESYNC))
}

pub fn error_policy(ts: Arc<TrackingServer>, error: &Error, ctx: Arc<Context>) -> Action {
    error_policy_for(CONTROLLER, key(&ts), error, &ctx)
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
        Desired::new(
            conditions::MONITORING,
            true,
            conditions::SERVICE_MONITOR,
            format!("ServiceMonitor {} scrapes port http", v.owner.name),
        )
    } else {
        Desired::new(
            conditions::MONITORING,
            false,
            conditions::MONITORING_DISABLED,
            "serviceMonitor.enabled is false",
        )
    }
}

fn compute_status(
    ts: &TrackingServer,
    v: &ValidatedTrackingServer,
    deployment: Option<&k8s_openapi::api::apps::v1::Deployment>,
    ctx: &Context,
) -> TrackingServerStatus {
    let r = rollout(deployment, v.replicas);
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
    let desired = vec![r.ready, r.progressing, degraded, monitoring_condition(v)];
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

/// Write the status with server-side apply, unless it is unchanged.
async fn patch_status(ctx: &Context, ts: &TrackingServer, status: TrackingServerStatus) -> Result<(), Error> {
    if ts.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<TrackingServer> = Api::namespaced(ctx.client.clone(), &ts.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": TrackingServer::api_version(&()),
        "kind": TrackingServer::kind(&()),
        "status": status,
    });
    api.patch_status(
        &ts.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}
