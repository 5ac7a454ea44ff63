//! ModelDeployment: fetch the TrackingServer (and its admin Secret when auth is on), resolve the
//! model against the registry, discover the monitoring API → validate → build → apply → status,
//! on the shared [`pipeline`](super::pipeline).
//!
//! When the registry cannot be reached the deployment keeps serving the last resolved version:
//! nothing is torn down, the conditions say why, and the reconcile is retried with backoff.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::pipeline::{self, Halt, Pipeline};
use super::{Context, Error, rollout as deployment_rollout};
use crate::apply::{self, Apis, Applied, Kinds};
use crate::build::{self, ChildObjects, labels};
use crate::crd::conditions::{self, Desired};
use crate::crd::model_deployment::{CaBundleRef, ResolvedModel};
use crate::crd::rollout::{RolloutPhase, RolloutStatus};
use crate::crd::{ModelDeployment, ModelDeploymentStatus, TrackingServer};
use crate::registry::{Credentials, Endpoint, ModelReference, RegistryError};
use crate::rollout::{self, CanaryParams, Step, Transition, analysis};
use crate::validate::{
    Defaults, Owner, TrackingAccess, ValidatedModelDeployment, ValidationError, validate_model_deployment,
};

pub const CONTROLLER: &str = "modeldeployment";

/// What the ModelDeployment's fetch stage finds.
pub struct Fetched {
    pub access: TrackingAccess,
    /// The model to serve: just resolved, or the last resolved one while the registry fails.
    pub resolved: ResolvedModel,
    /// Why resolution failed, when the last resolved model is kept.
    pub registry_error: Option<RegistryError>,
    pub apis: Apis,
    /// The canary rollout (`rollout.strategy: Canary`) after this pass's registry answer and
    /// analysis.
    pub rollout: Option<Rollout>,
}

/// A canary rollout as this pass leaves it.
pub struct Rollout {
    pub status: RolloutStatus,
    /// What changed, with the Event note.
    pub transitions: Vec<(Transition, String)>,
    /// When the next analysis is due.
    pub next_analysis: Option<std::time::Duration>,
}

/// What fetching the tracking server found.
enum Tracking {
    Found(Box<Found>),
    /// Something the spec names is missing: the condition reason and message.
    Missing(&'static str, String),
}

/// How to reach the tracking server.
struct Found {
    access: TrackingAccess,
    credentials: Option<Credentials>,
    /// The PEM bundle of `trackingCaBundle`.
    ca_bundle: Option<Vec<u8>>,
}

/// Read `trackingCaBundle`: `None` when the ConfigMap, Secret or key is missing.
async fn fetch_ca_bundle(
    ctx: &Context,
    namespace: &str,
    bundle: &CaBundleRef,
) -> Result<Option<Vec<u8>>, Error> {
    if let Some(r) = &bundle.config_map_key_ref {
        // Listed by name: the operator's RBAC lists ConfigMaps (its children) but does not get them.
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
        let by_name = kube::api::ListParams::default().fields(&format!("metadata.name={}", r.name));
        let map = api
            .list(&by_name)
            .await
            .map_err(Error::Fetch)?
            .items
            .into_iter()
            .next();
        return Ok(map.and_then(|m| {
            m.data
                .and_then(|d| d.get(&r.key).map(|v| v.clone().into_bytes()))
                .or_else(|| m.binary_data.and_then(|d| d.get(&r.key).map(|b| b.0.clone())))
        }));
    }
    if let Some(r) = &bundle.secret_key_ref {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        let secret = api.get_opt(&r.name).await.map_err(Error::Fetch)?;
        return Ok(secret.and_then(|s| s.data.and_then(|d| d.get(&r.key).map(|b| b.0.clone()))));
    }
    Ok(None)
}

/// Read a basic-auth account from a Secret; `None` when the Secret or a key is missing.
async fn fetch_credentials(
    ctx: &Context,
    namespace: &str,
    admin: &crate::crd::tracking_server::AdminSecretRef,
) -> Result<Option<Credentials>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets.get_opt(&admin.name).await.map_err(Error::Fetch)?;
    let value = |key: &str| {
        secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    Ok(match (value(&admin.username_key), value(&admin.password_key)) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        _ => None,
    })
}

async fn fetch_tracking(ctx: &Context, md: &ModelDeployment, namespace: &str) -> Result<Tracking, Error> {
    let access = match &md.spec.tracking_server_ref {
        None => TrackingAccess::for_tracking_uri(md),
        Some(reference) => {
            let api: Api<TrackingServer> = Api::namespaced(ctx.client.clone(), namespace);
            let Some(ts) = api.get_opt(&reference.name).await.map_err(Error::Fetch)? else {
                return Ok(Tracking::Missing(
                    conditions::TRACKING_SERVER_NOT_FOUND,
                    format!(
                        "TrackingServer {} not found in namespace {namespace}",
                        reference.name
                    ),
                ));
            };
            TrackingAccess::for_tracking_server(&ts)
        }
    };
    let credentials = match &access.auth {
        Some(admin) => fetch_credentials(ctx, namespace, admin).await?,
        None => None,
    };
    let ca_bundle = match &access.ca_bundle {
        Some(bundle) => match fetch_ca_bundle(ctx, namespace, bundle).await? {
            Some(pem) => Some(pem),
            None => {
                let what = match (&bundle.config_map_key_ref, &bundle.secret_key_ref) {
                    (Some(r), _) => format!("ConfigMap {} with key {}", r.name, r.key),
                    (None, Some(r)) => format!("Secret {} with key {}", r.name, r.key),
                    (None, None) => "no ConfigMap or Secret key".to_owned(),
                };
                return Ok(Tracking::Missing(
                    conditions::CA_BUNDLE_NOT_FOUND,
                    format!("trackingCaBundle: {what} not found in namespace {namespace}"),
                ));
            }
        },
        None => None,
    };
    Ok(Tracking::Found(Box::new(Found {
        access,
        credentials,
        ca_bundle,
    })))
}

#[async_trait::async_trait]
impl Pipeline for ModelDeployment {
    const CONTROLLER: &'static str = CONTROLLER;
    const KINDS: Kinds = Kinds {
        persistent_volume_claims: false,
        config_maps: false,
        deployments: true,
        service_accounts: false,
        daemon_sets: false,
        services: true,
        pod_disruption_budgets: true,
        horizontal_pod_autoscalers: true,
        scaled_objects: true,
        ingresses: true,
        http_routes: true,
        service_monitors: true,
        prometheus_rules: true,
    };
    type Status = ModelDeploymentStatus;
    type Fetched = Fetched;
    type Validated = ValidatedModelDeployment;

    fn current_status(&self) -> Option<&ModelDeploymentStatus> {
        self.status.as_ref()
    }

    fn status_conditions(status: &ModelDeploymentStatus) -> &[Condition] {
        &status.conditions
    }

    fn with_conditions(
        status: ModelDeploymentStatus,
        generation: Option<i64>,
        conditions: Vec<Condition>,
    ) -> ModelDeploymentStatus {
        ModelDeploymentStatus {
            observed_generation: generation,
            conditions,
            ..status
        }
    }

    async fn fetch(&self, ctx: &Context) -> Result<Fetched, Result<Halt<ModelDeploymentStatus>, Error>> {
        let md = self;
        let namespace = md.namespace().unwrap_or_default();
        let previous = md.status.clone().unwrap_or_default();
        let reference = ModelReference::from_spec(&md.spec.model);

        let Found {
            access,
            credentials,
            ca_bundle,
        } = match fetch_tracking(ctx, md, &namespace).await.map_err(Err)? {
            Tracking::Found(found) => *found,
            Tracking::Missing(reason, message) => {
                let desired = [
                    Desired::new(conditions::READY, false, reason, message.clone()),
                    Desired::new(conditions::DEGRADED, true, reason, message.clone()),
                    Desired::new(conditions::MODEL_RESOLVED, false, reason, message),
                ];
                // The TrackingServer watch brings us back when it appears; a missing CA bundle
                // is looked for again after the resolve interval.
                return Err(Ok(Halt {
                    status: md.status_with(&desired, ctx),
                    outcome: Ok(Action::requeue(ctx.resolve_interval)),
                }));
            }
        };
        let resolution = ctx
            .registry
            .resolve(
                &Endpoint::new(&access.uri)
                    .with_credentials(credentials.as_ref())
                    .with_ca_bundle(ca_bundle.as_deref()),
                &reference,
            )
            .await
            .map(|mut r| {
                if r.name.is_empty() {
                    r.name = md.spec.model.name.clone();
                }
                r
            });
        let (resolved, registry_error) = match resolution {
            Ok(r) => (Some(r), None),
            Err(err) => {
                let stale = previous
                    .resolved_model
                    .clone()
                    .filter(|p| p.reference == reference.to_string());
                (stale, Some(err))
            }
        };
        let Some(resolved) = resolved else {
            let err = registry_error.unwrap_or(RegistryError::NotFound(reference.to_string()));
            let reason = resolution_reason(&err);
            let desired = [
                Desired::new(conditions::READY, false, reason, err.to_string()),
                Desired::new(conditions::DEGRADED, true, reason, err.to_string()),
                Desired::new(conditions::MODEL_RESOLVED, false, reason, err.to_string()),
            ];
            announce_registry_problem(ctx, md, &previous, reason, &err).await;
            let status = ModelDeploymentStatus {
                tracking_uri: Some(access.uri.clone()),
                ..md.status_with(&desired, ctx)
            };
            return Err(Ok(Halt {
                status,
                outcome: Err(Error::Registry(err)),
            }));
        };
        let apis = apply::fetch_apis(&ctx.client, true)
            .await
            .map_err(|e| Err(Error::Fetch(e)))?;
        // An invalid rollout section fails in validate, with the field named.
        let canary = CanaryParams::from_spec(md.spec.rollout.as_ref()).ok().flatten();
        let (resolved, rollout) = match canary {
            None => (resolved, None),
            Some(params) => {
                let endpoint = Endpoint::new(&access.uri)
                    .with_credentials(credentials.as_ref())
                    .with_ca_bundle(ca_bundle.as_deref());
                let served = previous
                    .resolved_model
                    .clone()
                    .filter(|p| p.reference == reference.to_string());
                let target = registry_error.is_none().then_some(&resolved);
                plan_rollout(ctx, md, &params, &endpoint, served.as_ref(), target, &resolved).await
            }
        };
        Ok(Fetched {
            access,
            resolved,
            registry_error,
            apis,
            rollout,
        })
    }

    fn apis(fetched: &Fetched) -> Apis {
        fetched.apis
    }

    fn validate(
        &self,
        fetched: &Fetched,
        defaults: &Defaults,
    ) -> Result<ValidatedModelDeployment, ValidationError> {
        let validated = validate_model_deployment(
            self,
            &fetched.resolved,
            fetched.access.clone(),
            fetched.apis,
            defaults,
        )?;
        let canary = fetched.rollout.as_ref().and_then(|r| {
            matches!(r.status.phase, RolloutPhase::Canary | RolloutPhase::Paused)
                .then(|| {
                    r.status
                        .canary_model
                        .as_ref()
                        .map(|m| (m, r.status.current_weight))
                })
                .flatten()
        });
        Ok(match canary {
            Some((model, weight)) => validated.with_canary(model, weight),
            None => validated,
        })
    }

    fn owner(validated: &ValidatedModelDeployment) -> &Owner {
        &validated.owner
    }

    fn build(validated: &ValidatedModelDeployment) -> ChildObjects {
        build::model_deployment(validated)
    }

    /// Events: a new model version, or the registry going away.
    async fn applied(&self, ctx: &Context, fetched: &Fetched, validated: &ValidatedModelDeployment) {
        let previous = self.status.clone().unwrap_or_default();
        if previous.resolved_model.as_ref().map(|r| &r.version) != Some(&validated.model.version) {
            let note = match &previous.resolved_model {
                Some(old) => format!(
                    "{} moved from version {} to {}; rolling out",
                    validated.model.reference, old.version, validated.model.version
                ),
                None => format!(
                    "{} is version {}",
                    validated.model.reference, validated.model.version
                ),
            };
            ctx.publish(
                &self.object_ref(&()),
                false,
                "ModelVersionResolved",
                "Resolve",
                note,
            )
            .await;
        }
        if let Some(err) = &fetched.registry_error {
            announce_registry_problem(ctx, self, &previous, resolution_reason(err), err).await;
        }
        let optional: Vec<Desired> = autoscaling_condition(self, validated)
            .into_iter()
            .chain(super::exposure_condition(
                validated.exposure.as_ref(),
                validated.gateway_api,
                &validated.owner.name,
            ))
            .collect();
        super::announce_missing_apis(ctx, &self.object_ref(&()), &previous.conditions, &optional).await;
        ctx.metrics.rollout_phase(
            &self.key(),
            fetched.rollout.as_ref().map(|r| r.status.phase.as_str()),
        );
        for (transition, note) in fetched.rollout.iter().flat_map(|r| &r.transitions) {
            ctx.metrics.canary_transition(transition.reason());
            ctx.publish(
                &self.object_ref(&()),
                transition.warning(),
                transition.reason(),
                "Rollout",
                note.clone(),
            )
            .await;
        }
    }

    fn status(
        &self,
        fetched: &Fetched,
        validated: &ValidatedModelDeployment,
        applied: &Applied,
        ctx: &Context,
    ) -> ModelDeploymentStatus {
        let stable = applied
            .deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(validated.owner.name.as_str()));
        compute_status(
            self,
            validated,
            stable,
            fetched.registry_error.as_ref(),
            fetched.rollout.as_ref().map(|r| &r.status),
            ctx,
        )
    }

    fn finish(fetched: Fetched, ctx: &Context) -> Result<Action, Error> {
        let next_analysis = fetched.rollout.as_ref().and_then(|r| r.next_analysis);
        match fetched.registry_error {
            // A canary in flight is still judged on time while the registry is down.
            Some(_) if next_analysis.is_some() => Ok(Action::requeue(
                next_analysis
                    .unwrap_or(ctx.resolve_interval)
                    .min(ctx.resolve_interval),
            )),
            Some(err) => Err(Error::Registry(err)),
            None => Ok(Action::requeue(
                next_analysis.map_or(ctx.resolve_interval, |n| n.min(ctx.resolve_interval)),
            )),
        }
    }
}

/// The canary rollout after the registry's answer (`target`; `None` while the registry is down):
/// start, carry on or drop a canary, and judge one in flight when its analysis is due. Returns
/// the version the stable pods serve and the rollout.
async fn plan_rollout(
    ctx: &Context,
    md: &ModelDeployment,
    params: &CanaryParams,
    endpoint: &Endpoint<'_>,
    served: Option<&ResolvedModel>,
    target: Option<&ResolvedModel>,
    resolved: &ResolvedModel,
) -> (ResolvedModel, Option<Rollout>) {
    let now = ctx.now();
    let previous = md.status.as_ref().and_then(|s| s.rollout.as_ref());
    let Some(started) = rollout::start(params, previous, served, target, &now) else {
        return (resolved.clone(), None);
    };
    let mut stable = started.stable;
    let mut status = started.status;
    let mut transitions = Vec::new();
    if let Some(t) = started.transition {
        let note = match t {
            Transition::Started => format!(
                "{} moved to version {}: canary at {}% beside stable version {}",
                resolved.reference,
                status.canary_version.as_deref().unwrap_or_default(),
                status.current_weight,
                stable.version
            ),
            _ => format!(
                "{} is back on stable version {}: canary dropped",
                resolved.reference, stable.version
            ),
        };
        transitions.push((t, note));
    }
    let mut next_analysis = None;
    if status.phase == RolloutPhase::Canary {
        if analysis::due(params, &status, &now) {
            let canary_version = status.canary_version.clone().unwrap_or_default();
            let query = rollout::snapshot_query(
                params,
                &md.namespace().unwrap_or_default(),
                &stable.name,
                &stable.version,
                &canary_version,
                &now,
            );
            let snapshot = ctx.measurements.snapshot(endpoint, &query).await;
            let mut next = rollout::analyze(params, &status, &snapshot, &now);
            if next.step == Step::Promote
                && let Some(alias) = &params.set_alias
                && let Err(err) = ctx
                    .registry
                    .set_alias(endpoint, &stable.name, alias, &canary_version)
                    .await
            {
                // Promote once the alias is set: until then the canary holds.
                next.step = Step::Hold;
                next.verdict.message = format!(
                    "{}; promotion waits: could not set alias {alias}: {err}",
                    next.verdict.message
                );
            }
            tracing::info!(
                verdict = next.verdict.result.as_str(),
                step = ?next.step,
                canary = %canary_version,
                message = %next.verdict.message,
                "canary analysis"
            );
            let (after, transition) = rollout::advance(&status, &next, &now);
            if let Some(t) = transition {
                let measured = &next.verdict.message;
                let note = match t {
                    Transition::Advanced => format!(
                        "canary version {canary_version} passed step {}: now at {}% ({measured})",
                        status.current_step.unwrap_or(0) + 1,
                        after.current_weight
                    ),
                    Transition::Promoted => format!(
                        "canary version {canary_version} promoted to stable, replacing version {}{} ({measured})",
                        stable.version,
                        params
                            .set_alias
                            .as_ref()
                            .map(|a| format!("; alias {a} set to {canary_version}"))
                            .unwrap_or_default()
                    ),
                    Transition::RolledBack => format!(
                        "canary version {canary_version} rolled back, stable version {} keeps serving: {measured}",
                        stable.version
                    ),
                    _ => format!(
                        "canary version {canary_version} paused at {}%: {measured}",
                        after.current_weight
                    ),
                };
                transitions.push((t, note));
            }
            if next.step == Step::Promote
                && let Some(model) = &status.canary_model
            {
                stable = model.clone();
            }
            status = after;
        }
        if status.phase == RolloutPhase::Canary {
            let ms = analysis::until_due(params, &status, &now).max(1000);
            next_analysis = Some(std::time::Duration::from_millis(
                u64::try_from(ms).unwrap_or(1000),
            ));
        }
    }
    (
        stable,
        Some(Rollout {
            status,
            transitions,
            next_analysis,
        }),
    )
}

pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    pipeline::reconcile(md, ctx).await
}

pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    pipeline::error_policy(md, error, ctx)
}

/// A Warning Event when model resolution starts failing (not on every retry).
async fn announce_registry_problem(
    ctx: &Context,
    md: &ModelDeployment,
    previous: &ModelDeploymentStatus,
    reason: &'static str,
    err: &RegistryError,
) {
    let already = previous
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::MODEL_RESOLVED && c.status == "False" && c.reason == reason);
    if !already {
        ctx.publish(&md.object_ref(&()), true, reason, "Resolve", err.to_string())
            .await;
    }
}

fn resolution_reason(err: &RegistryError) -> &'static str {
    err.reason()
}

fn monitoring_condition(v: &ValidatedModelDeployment) -> Desired {
    if !v.monitoring_api {
        Desired::new(
            conditions::MONITORING,
            false,
            conditions::PROMETHEUS_OPERATOR_MISSING,
            "the monitoring.coreos.com/v1 API is not served, so no ServiceMonitor or PrometheusRule was created; pods carry prometheus.io/scrape annotations instead",
        )
    } else if v.service_monitor.is_some() {
        let rules = if v.alerts.is_some() {
            " and PrometheusRule"
        } else {
            ""
        };
        Desired::new(
            conditions::MONITORING,
            true,
            conditions::SERVICE_MONITOR,
            format!("ServiceMonitor{rules} {} created", v.owner.name),
        )
    } else {
        Desired::new(
            conditions::MONITORING,
            false,
            conditions::MONITORING_DISABLED,
            "monitoring.serviceMonitor.enabled is false; pods carry prometheus.io/scrape annotations",
        )
    }
}

/// The `Autoscaling` condition of a ModelDeployment with `autoscaling`; `None` without it.
fn autoscaling_condition(md: &ModelDeployment, v: &ValidatedModelDeployment) -> Option<Desired> {
    let a = v.autoscaler.as_ref()?;
    let name = &v.owner.name;
    let on = match a.metric {
        crate::validate::ScaleMetric::InFlight(n) => format!("{n} requests in flight per pod"),
        crate::validate::ScaleMetric::Cpu(p) => format!("{p}% CPU per pod"),
    };
    let ignored = format!(
        "spec.replicas ({}) is not used and kubectl scale is refused while autoscaling is on",
        md.spec.replicas
    );
    Some(match (a.engine, a.available) {
        (crate::crd::model_deployment::AutoscalingEngine::Hpa, _) => Desired::new(
            conditions::AUTOSCALING,
            true,
            conditions::HORIZONTAL_POD_AUTOSCALER,
            format!(
                "HorizontalPodAutoscaler {name} scales Deployment {name} between {} and {} replicas on {on}; {ignored}",
                a.min_replicas, a.max_replicas
            ),
        ),
        (crate::crd::model_deployment::AutoscalingEngine::Keda, true) => Desired::new(
            conditions::AUTOSCALING,
            true,
            conditions::SCALED_OBJECT,
            format!(
                "KEDA ScaledObject {name} scales Deployment {name} between {} and {} replicas on {on}; {ignored}",
                a.min_replicas, a.max_replicas
            ),
        ),
        (crate::crd::model_deployment::AutoscalingEngine::Keda, false) => Desired::new(
            conditions::AUTOSCALING,
            false,
            conditions::KEDA_MISSING,
            format!(
                "autoscaling.engine is KEDA, but the cluster does not serve keda.sh/v1alpha1 (ScaledObject): no autoscaler was created and Deployment {name} runs {} replica(s); install KEDA, or use engine: HPA",
                v.deployment_replicas.unwrap_or(1)
            ),
        ),
    })
}

fn compute_status(
    md: &ModelDeployment,
    v: &ValidatedModelDeployment,
    deployment: Option<&Deployment>,
    registry_error: Option<&RegistryError>,
    rollout_status: Option<&RolloutStatus>,
    ctx: &Context,
) -> ModelDeploymentStatus {
    // With an autoscaler, the replicas it chose (the Deployment's) are the ones to wait for.
    let desired_replicas = v
        .deployment_replicas
        .unwrap_or_else(|| deployment.and_then(|d| d.spec.replicas).unwrap_or(1));
    let r = deployment_rollout(deployment, desired_replicas);
    let resolved = match registry_error {
        None => Desired::new(
            conditions::MODEL_RESOLVED,
            true,
            conditions::RESOLVED,
            format!("{} is version {}", v.model.reference, v.model.version),
        ),
        Some(err) => Desired::new(
            conditions::MODEL_RESOLVED,
            false,
            resolution_reason(err),
            format!("{err}; still serving version {}", v.model.version),
        ),
    };
    let degraded = match (registry_error, &r.stuck) {
        (Some(err), _) => Desired::new(
            conditions::DEGRADED,
            true,
            resolution_reason(err),
            format!("{err}; still serving version {}", v.model.version),
        ),
        (None, Some(message)) => Desired::new(
            conditions::DEGRADED,
            true,
            conditions::ROLLOUT_STUCK,
            message.clone(),
        ),
        (None, None) => Desired::new(
            conditions::DEGRADED,
            false,
            conditions::AS_EXPECTED,
            "no problems found",
        ),
    };
    let verdict = || {
        rollout_status
            .and_then(|s| s.last_verdict.as_ref())
            .map(|v| v.message.clone())
            .unwrap_or_default()
    };
    let canary_version = rollout_status
        .and_then(|s| s.canary_version.clone())
        .unwrap_or_default();
    let degraded = match rollout_status.map(|s| s.phase) {
        Some(RolloutPhase::RolledBack) if !degraded.status => Desired::new(
            conditions::DEGRADED,
            true,
            conditions::CANARY_ROLLED_BACK,
            format!(
                "canary version {canary_version} was rolled back and is not tried again until {} resolves to another version; version {} keeps serving: {}",
                v.model.reference,
                v.model.version,
                verdict()
            ),
        ),
        Some(RolloutPhase::Paused) if !degraded.status => Desired::new(
            conditions::DEGRADED,
            true,
            conditions::CANARY_PAUSED,
            format!(
                "canary version {canary_version} failed its analysis and is paused at {}%: {}",
                rollout_status.map_or(0, |s| s.current_weight),
                verdict()
            ),
        ),
        _ => degraded,
    };
    let progressing = match rollout_status {
        Some(s) if s.phase == RolloutPhase::Canary => Desired::new(
            conditions::PROGRESSING,
            true,
            conditions::CANARY_PROGRESSING,
            format!(
                "canary version {canary_version} takes {}% of the traffic (step {} of {}) beside stable version {}",
                s.current_weight,
                s.current_step.unwrap_or(0) + 1,
                v.canary_rollout.as_ref().map_or(0, |p| p.steps.len()),
                v.model.version
            ),
        ),
        _ => r.progressing,
    };
    let mut desired = vec![r.ready, progressing, degraded, resolved, monitoring_condition(v)];
    desired.extend(autoscaling_condition(md, v));
    desired.extend(super::exposure_condition(
        v.exposure.as_ref(),
        v.gateway_api,
        &v.owner.name,
    ));
    let previous = md.status.clone().unwrap_or_default();
    ModelDeploymentStatus {
        observed_generation: md.meta().generation,
        resolved_model: Some(v.model.clone()),
        rollout: rollout_status.cloned(),
        tracking_uri: Some(v.tracking.uri.clone()),
        url: Some(v.url.clone()),
        replicas: Some(r.replicas),
        ready_replicas: Some(r.ready_replicas),
        selector: Some(labels::to_selector_string(&labels::selector(
            labels::APP_MODEL,
            &v.owner.name,
            labels::COMPONENT_MODEL_SERVER,
        ))),
        conditions: conditions::merge(&previous.conditions, &desired, md.meta().generation, &ctx.now()),
    }
}
