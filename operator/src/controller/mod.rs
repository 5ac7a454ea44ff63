//! The controllers: each reconcile runs `fetch → validate → build → apply → status`. Validate
//! and build are pure (see [`crate::validate`], [`crate::build`]); this module does the I/O.

pub mod model_deployment;
pub mod pipeline;
pub mod tracking_server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::apply::{self, ApplyError};
use crate::crd::conditions::{self, Desired};
use crate::metrics::Metrics;
use crate::registry::{ModelRegistry, RegistryError};
use crate::validate::{Defaults, ValidationError};

/// Shared state of the controllers.
pub struct Context {
    pub client: Client,
    pub registry: Arc<dyn ModelRegistry>,
    pub defaults: Defaults,
    pub metrics: Arc<Metrics>,
    /// The time written to `lastTransitionTime` (fixed in tests).
    pub clock: Box<dyn Fn() -> Time + Send + Sync>,
    /// How often a healthy ModelDeployment re-resolves its model (alias moves).
    pub resolve_interval: Duration,
    /// Publishes Kubernetes Events (`events.k8s.io/v1`) for important transitions.
    pub recorder: Recorder,
    /// Reads canary measurements (Prometheus, the quality API).
    pub measurements: Arc<dyn crate::rollout::measure::MeasurementSource>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        registry: Arc<dyn ModelRegistry>,
        defaults: Defaults,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: crate::apply::FIELD_MANAGER.to_owned(),
            instance: None,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            registry,
            defaults,
            metrics,
            clock: Box::new(|| Time(k8s_openapi::jiff::Timestamp::now())),
            resolve_interval: Duration::from_secs(60),
            measurements: Arc::new(crate::rollout::measure::NotConfigured),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Read canary measurements from `source` (default: none configured, so canaries hold).
    pub fn with_measurements(mut self, source: Arc<dyn crate::rollout::measure::MeasurementSource>) -> Self {
        self.measurements = source;
        self
    }

    pub fn with_clock(mut self, clock: impl Fn() -> Time + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Name the operator's pod in published Events (`reportingInstance`).
    pub fn with_instance(mut self, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: crate::apply::FIELD_MANAGER.to_owned(),
            instance,
        };
        self.recorder = Recorder::new(self.client.clone(), reporter);
        self
    }

    /// Publish an Event; a failure is logged, never fatal.
    async fn publish(
        &self,
        object: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, object).await {
            tracing::warn!(error = ?err, reason, "could not publish event");
        }
    }

    pub(crate) fn now(&self) -> Time {
        (self.clock)()
    }

    /// Exponential backoff per object: 5s, 10s, 20s … capped at 5 minutes.
    fn backoff(&self, key: String) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 5u64.saturating_mul(1u64 << (*n - 1).min(6));
        Duration::from_secs(secs.min(300))
    }

    fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

/// The `Exposed` condition of a resource with `exposure`; `None` without the section.
/// What the operator does on the Kubernetes API, as RBAC rules grant it: for each API group and
/// resource, the verbs. The chart's roles must grant exactly this (`operator/tests/rbac.rs`).
/// Children come from the kinds the two controllers own ([`apply::ChildKind`]); the rest are the
/// requests outside the apply of children.
pub fn required_access() -> BTreeMap<apply::GroupResource, BTreeSet<&'static str>> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Secret;

    use crate::crd::{ModelDeployment, TrackingServer};
    use pipeline::Pipeline;

    let mut access: BTreeMap<apply::GroupResource, BTreeSet<&'static str>> = BTreeMap::new();
    let mut grant = |resource: apply::GroupResource, verbs: &[&'static str]| {
        access.entry(resource).or_default().extend(verbs);
    };
    for child in apply::ChildKind::ALL {
        if child.owned_by(<TrackingServer as Pipeline>::KINDS)
            || child.owned_by(<ModelDeployment as Pipeline>::KINDS)
        {
            grant(child.resource(), child.verbs());
        }
    }
    let sub = |resource: apply::GroupResource, sub: &str| apply::GroupResource {
        resource: format!("{}/{sub}", resource.resource),
        ..resource
    };
    for own in [
        apply::GroupResource::of::<TrackingServer>(),
        apply::GroupResource::of::<ModelDeployment>(),
    ] {
        // The controllers list and watch them; a ModelDeployment gets its TrackingServer.
        grant(own.clone(), &["get", "list", "watch"]);
        // Status by server-side apply on the subresource.
        grant(sub(own.clone(), "status"), &["patch"]);
        // Children's ownerReferences set blockOwnerDeletion, which needs update on the owner's
        // finalizers where OwnerReferencesPermissionEnforcement is on.
        grant(sub(own, "finalizers"), &["update"]);
    }
    // The admin Secret of a TrackingServer with auth, trackingCredentialsSecretRef, a Secret
    // trackingCaBundle: read one by name (the chart's rbac.readSecrets).
    grant(apply::GroupResource::of::<Secret>(), &["get"]);
    // Events through kube's Recorder (events.k8s.io/v1): created, then patched when repeated.
    grant(
        apply::GroupResource::of::<k8s_openapi::api::events::v1::Event>(),
        &["create", "patch"],
    );
    // Leader election (--leader-election): kube-lease-manager reads, creates, applies and
    // releases the Lease.
    grant(
        apply::GroupResource::of::<Lease>(),
        &["create", "get", "patch", "update"],
    );
    access
}

pub(crate) fn exposure_condition(
    exposure: Option<&crate::crd::workload::ExposureSpec>,
    gateway_api: bool,
    name: &str,
) -> Option<Desired> {
    let exposure = exposure?;
    Some(match (&exposure.ingress, &exposure.http_route) {
        (Some(ingress), _) => Desired::new(
            conditions::EXPOSED,
            true,
            conditions::INGRESS,
            format!(
                "Ingress {name} routes {}{} to Service {name}",
                ingress.host.0, ingress.path_prefix
            ),
        ),
        (None, Some(route)) if gateway_api => Desired::new(
            conditions::EXPOSED,
            true,
            conditions::HTTP_ROUTE,
            format!(
                "HTTPRoute {name} attaches to Gateway {} and routes {} to Service {name}",
                route
                    .parent_refs
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                route.path_prefix
            ),
        ),
        (None, _) => Desired::new(
            conditions::EXPOSED,
            false,
            conditions::GATEWAY_API_MISSING,
            "exposure.httpRoute needs the Gateway API, but the cluster does not serve gateway.networking.k8s.io/v1 (HTTPRoute): no route was created; install the Gateway API CRDs and a Gateway controller, or use exposure.ingress",
        ),
    })
}

/// A Warning Event for each condition in `desired` that newly went `False` because an optional
/// API is missing (not on every reconcile).
pub(crate) async fn announce_missing_apis(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    desired: &[Desired],
) {
    for d in desired.iter().filter(|d| {
        !d.status && [conditions::KEDA_MISSING, conditions::GATEWAY_API_MISSING].contains(&d.reason)
    }) {
        let known = previous
            .iter()
            .any(|c| c.type_ == d.type_ && c.status == "False" && c.reason == d.reason);
        if !known {
            ctx.publish(object, true, d.reason, "Apply", d.message.clone())
                .await;
        }
    }
}

/// Why a reconcile failed: one variant per pipeline stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fetch failed: {}", apply::api_message(.0))]
    Fetch(#[source] kube::Error),
    #[error("invalid spec: {0}")]
    Validate(#[source] ValidationError),
    #[error("model resolution failed: {0}")]
    Registry(#[source] RegistryError),
    #[error("apply failed: {0}")]
    Apply(#[source] ApplyError),
    #[error("status update failed: {}", apply::api_message(.0))]
    Status(#[source] kube::Error),
}

impl Error {
    /// A bounded reason for metrics, conditions and Events: the stage's, refined by the API
    /// server's answer (`Forbidden`, `Conflict`, `Expired`, `Invalid`, `Throttled`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Fetch(e) => apply::api_reason(e).unwrap_or("FetchFailed"),
            Self::Validate(e) => e.reason(),
            Self::Registry(e) => e.reason(),
            Self::Apply(e) => e.reason(),
            Self::Status(e) => apply::api_reason(e).unwrap_or("StatusFailed"),
        }
    }

    /// The Event `action` of the stage that failed.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Fetch(_) => "Fetch",
            Self::Validate(_) => "Validate",
            Self::Registry(_) => "Resolve",
            Self::Apply(_) => "Apply",
            Self::Status(_) => "UpdateStatus",
        }
    }

    /// The condition message: what failed, in words, without stage boilerplate for a spec
    /// problem (the field says it all).
    pub fn message(&self) -> String {
        match self {
            Self::Validate(e) => e.to_string(),
            other => other.to_string(),
        }
    }

    /// The API server's retry hint, when it gave one: the backoff never retries sooner.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Fetch(e) | Self::Status(e) => apply::retry_after(e),
            Self::Apply(e) => e.retry_after(),
            Self::Validate(_) | Self::Registry(_) => None,
        }
    }
}

/// Readiness of a workload Deployment, as conditions.
pub(crate) struct Rollout {
    pub replicas: i32,
    pub ready_replicas: i32,
    pub ready: Desired,
    pub progressing: Desired,
    /// `Some` when the rollout is stuck.
    pub stuck: Option<String>,
}

pub(crate) fn rollout(deployment: Option<&Deployment>, desired_replicas: i32) -> Rollout {
    let status = deployment.and_then(|d| d.status.clone()).unwrap_or_default();
    let generation = deployment.and_then(|d| d.metadata.generation);
    let observed = status.observed_generation;
    let ready_replicas = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let current = deployment.is_some() && observed.is_some() && observed >= generation;
    let stuck = status
        .conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| c.message.clone().unwrap_or_default());
    let done = current && updated >= desired_replicas && available >= desired_replicas && total == updated;
    let (ready, progressing) = if desired_replicas == 0 && current {
        (
            Desired::new(
                conditions::READY,
                true,
                conditions::SCALED_TO_ZERO,
                "scaled to zero replicas",
            ),
            Desired::new(
                conditions::PROGRESSING,
                false,
                conditions::ROLLOUT_COMPLETE,
                "scaled to zero replicas",
            ),
        )
    } else if done {
        (
            Desired::new(
                conditions::READY,
                true,
                conditions::AVAILABLE,
                format!("{available}/{desired_replicas} replicas available"),
            ),
            Desired::new(
                conditions::PROGRESSING,
                false,
                conditions::ROLLOUT_COMPLETE,
                "the latest spec is rolled out",
            ),
        )
    } else {
        (
            Desired::new(
                conditions::READY,
                available > 0 && available >= desired_replicas,
                conditions::NOT_AVAILABLE,
                format!("{ready_replicas}/{desired_replicas} replicas ready"),
            ),
            Desired::new(
                conditions::PROGRESSING,
                true,
                conditions::ROLLING_OUT,
                format!("{updated}/{desired_replicas} replicas updated"),
            ),
        )
    };
    let ready = if ready.status && !done && desired_replicas != 0 {
        Desired::new(conditions::READY, true, conditions::AVAILABLE, ready.message)
    } else {
        ready
    };
    Rollout {
        replicas: total,
        ready_replicas,
        ready,
        progressing,
        stuck,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "x", "generation": generation},
            "spec": {"selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_fully_rolled_out_deployment_is_ready() {
        let d = deployment(
            3,
            json!({"observedGeneration": 3, "replicas": 2, "readyReplicas": 2,
                                     "updatedReplicas": 2, "availableReplicas": 2}),
        );
        let r = rollout(Some(&d), 2);
        assert!(r.ready.status);
        assert_eq!(r.ready.reason, conditions::AVAILABLE);
        assert!(!r.progressing.status);
        assert!(r.stuck.is_none());
    }

    #[test]
    fn an_unobserved_generation_is_still_rolling_out() {
        let d = deployment(
            4,
            json!({"observedGeneration": 3, "replicas": 2, "readyReplicas": 2,
                                     "updatedReplicas": 2, "availableReplicas": 2}),
        );
        let r = rollout(Some(&d), 2);
        assert!(r.progressing.status);
        assert_eq!(r.progressing.reason, conditions::ROLLING_OUT);
        // The old pods still serve.
        assert!(r.ready.status);
    }

    #[test]
    fn missing_and_stuck_deployments() {
        let r = rollout(None, 1);
        assert!(!r.ready.status);
        assert_eq!(r.ready.reason, conditions::NOT_AVAILABLE);
        let d = deployment(
            1,
            json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet \"x-1\" has timed out progressing."}]}),
        );
        let r = rollout(Some(&d), 1);
        assert!(!r.ready.status);
        assert_eq!(
            r.stuck.as_deref(),
            Some("ReplicaSet \"x-1\" has timed out progressing.")
        );
        let zero = deployment(1, json!({"observedGeneration": 1}));
        assert_eq!(rollout(Some(&zero), 0).ready.reason, conditions::SCALED_TO_ZERO);
    }

    #[test]
    fn errors_have_bounded_reasons() {
        let e = Error::Validate(ValidationError::Field {
            field: "spec.replicas",
            message: "no".into(),
        });
        assert_eq!(e.reason(), "InvalidSpec");
        let e = Error::Registry(RegistryError::NotFound("models:/x/1".into()));
        assert_eq!(e.reason(), "ModelNotFound");
    }
}
