//! Condition types and reasons written to `status.conditions`, and the helper that keeps
//! `lastTransitionTime` stable while a condition's status does not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

// === condition types ===

/// The resource does what it was asked to: its workload is available.
pub const READY: &str = "Ready";
/// A rollout is under way (new spec, new model version, scaling).
pub const PROGRESSING: &str = "Progressing";
/// Something is wrong and needs attention: invalid spec, unreachable registry, stuck rollout.
pub const DEGRADED: &str = "Degraded";
/// How the workload is scraped: ServiceMonitor, annotations fallback, or disabled.
pub const MONITORING: &str = "Monitoring";
/// The model reference was resolved against the tracking server's registry (ModelDeployment).
pub const MODEL_RESOLVED: &str = "ModelResolved";
/// An autoscaler owns the Deployment's replicas (ModelDeployment with `autoscaling`).
pub const AUTOSCALING: &str = "Autoscaling";
/// The Service is reachable from outside the cluster (with `exposure`).
pub const EXPOSED: &str = "Exposed";

// === reasons ===

pub const AVAILABLE: &str = "Available";
pub const NOT_AVAILABLE: &str = "NotAvailable";
pub const ROLLING_OUT: &str = "RollingOut";
pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
pub const ROLLOUT_STUCK: &str = "ProgressDeadlineExceeded";
pub const AS_EXPECTED: &str = "AsExpected";
/// A canary takes part of the traffic and is being judged (`Progressing`).
pub const CANARY_PROGRESSING: &str = "CanaryProgressing";
/// A canary failed its analysis and was removed (`Degraded`).
pub const CANARY_ROLLED_BACK: &str = "CanaryRolledBack";
/// A canary failed its analysis and is kept at its weight (`Degraded`).
pub const CANARY_PAUSED: &str = "CanaryPaused";
pub const INVALID_SPEC: &str = "InvalidSpec";
pub const TRACKING_SERVER_NOT_FOUND: &str = "TrackingServerNotFound";
pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
pub const MODEL_NOT_FOUND: &str = "ModelNotFound";
pub const REGISTRY_REJECTED: &str = "RegistryRejected";
pub const INVALID_TRACKING_URI: &str = "InvalidTrackingUri";
pub const INVALID_CA_BUNDLE: &str = "InvalidCaBundle";
/// `trackingCaBundle` names a ConfigMap or Secret key that does not exist.
pub const CA_BUNDLE_NOT_FOUND: &str = "CaBundleNotFound";
pub const RESOLVED: &str = "Resolved";
pub const SERVICE_MONITOR: &str = "ServiceMonitor";
pub const PROMETHEUS_OPERATOR_MISSING: &str = "PrometheusOperatorMissing";
pub const MONITORING_DISABLED: &str = "Disabled";
pub const SCALED_TO_ZERO: &str = "ScaledToZero";
pub const HORIZONTAL_POD_AUTOSCALER: &str = "HorizontalPodAutoscaler";
pub const SCALED_OBJECT: &str = "ScaledObject";
/// `autoscaling.engine: KEDA`, and the cluster does not serve `keda.sh/v1alpha1`.
pub const KEDA_MISSING: &str = "KedaMissing";
pub const INGRESS: &str = "Ingress";
pub const HTTP_ROUTE: &str = "HTTPRoute";
/// `exposure.httpRoute`, and the cluster does not serve `gateway.networking.k8s.io/v1`.
pub const GATEWAY_API_MISSING: &str = "GatewayAPIMissing";
// API errors of a fetch, apply or status write, by HTTP status (see `apply::api_reason`).
pub const FORBIDDEN: &str = "Forbidden";
pub const NOT_FOUND: &str = "NotFound";
pub const CONFLICT: &str = "Conflict";
pub const EXPIRED: &str = "Expired";
pub const INVALID: &str = "Invalid";
pub const THROTTLED: &str = "Throttled";
pub const API_SERVER_ERROR: &str = "ApiServerError";
/// A child's name is taken by an object this resource does not own.
pub const NAME_CONFLICT: &str = "NameConflict";

/// A condition as the controllers compute it, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Turn desired conditions into API conditions. A condition whose status is unchanged keeps its
/// previous `lastTransitionTime`; a new or flipped one gets `now`. Only `desired` is returned.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = status_str(d.status);
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason.to_owned(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// [`merge`], keeping the previous conditions that `desired` does not mention (as they were,
/// observed at their own generation): what a failed pass writes, so that `Monitoring` or
/// `ModelResolved` stay visible while `Ready` and `Degraded` say what failed.
pub fn update(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut conditions = merge(previous, desired, generation, now);
    conditions.extend(
        previous
            .iter()
            .filter(|p| !desired.iter().any(|d| d.type_ == p.type_))
            .cloned(),
    );
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-02T00:00:00Z");
        let first = merge(
            &[],
            &[Desired::new(READY, false, NOT_AVAILABLE, "waiting")],
            Some(1),
            &t0,
        );
        assert_eq!(first[0].last_transition_time, t0);
        let same = merge(
            &first,
            &[Desired::new(READY, false, NOT_AVAILABLE, "still waiting")],
            Some(2),
            &t1,
        );
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, &[Desired::new(READY, true, AVAILABLE, "up")], Some(2), &t1);
        assert_eq!(flipped[0].last_transition_time, t1);
        assert_eq!(flipped[0].status, "True");
    }
}
