//! The one reconcile skeleton both controllers run: `fetch → validate → build → apply → status`.
//!
//! A controller plugs in through [`Pipeline`]: what it fetches, how it validates and builds, which
//! child kinds it owns ([`Pipeline::KINDS`], also what `run` watches), and how it turns the applied
//! children into a status. Writing the status, backoff and the stage errors live here, once.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{Context, Error};
use crate::apply::{self, Apis, Applied, FIELD_MANAGER, Kinds};
use crate::build::ChildObjects;
use crate::crd::conditions::{self, Desired};
use crate::validate::{Defaults, Owner, ValidationError};

/// An early end of a reconcile, decided in `fetch`: the status to write, then what to return.
pub struct Halt<S> {
    pub status: S,
    pub outcome: Result<Action, Error>,
}

/// What one custom resource kind plugs into the shared pipeline.
#[async_trait::async_trait]
pub trait Pipeline:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The controller's name in metrics, logs and backoff keys.
    const CONTROLLER: &'static str;
    /// Every kind this resource may own. Kinds of optional APIs (ServiceMonitors,
    /// PrometheusRules, ScaledObjects, HTTPRoutes) are listed only when the cluster serves them
    /// (see [`Kinds::served`]).
    const KINDS: Kinds;

    type Status: Clone + Default + PartialEq + Serialize + Send + Sync;
    /// What the fetch stage found: everything validate needs besides the resource itself.
    type Fetched: Send + Sync;
    type Validated: Send + Sync;

    fn current_status(&self) -> Option<&Self::Status>;
    fn status_conditions(status: &Self::Status) -> &[Condition];
    /// `status` with these conditions and `observedGeneration`.
    fn with_conditions(
        status: Self::Status,
        generation: Option<i64>,
        conditions: Vec<Condition>,
    ) -> Self::Status;

    /// Read the cluster and outside services. `Err(Ok(halt))` ends the reconcile with a status;
    /// `Err(Err(error))` fails it.
    async fn fetch(&self, ctx: &Context) -> Result<Self::Fetched, Result<Halt<Self::Status>, Error>>;
    /// The optional APIs `fetch` found.
    fn apis(fetched: &Self::Fetched) -> Apis;
    fn validate(
        &self,
        fetched: &Self::Fetched,
        defaults: &Defaults,
    ) -> Result<Self::Validated, ValidationError>;
    fn owner(validated: &Self::Validated) -> &Owner;
    fn build(validated: &Self::Validated) -> ChildObjects;
    /// After a successful apply, before the status: publish Events.
    async fn applied(&self, _ctx: &Context, _fetched: &Self::Fetched, _validated: &Self::Validated) {}
    fn status(
        &self,
        fetched: &Self::Fetched,
        validated: &Self::Validated,
        applied: &Applied,
        ctx: &Context,
    ) -> Self::Status;
    /// What the reconcile returns after a successful pass (a requeue, or an error that was kept
    /// from failing the pass, such as a registry that is down while the last model keeps serving).
    fn finish(fetched: Self::Fetched, ctx: &Context) -> Result<Action, Error>;

    /// The backoff and metrics key of one object.
    fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            Self::CONTROLLER,
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    /// The previous status with `desired` merged into its conditions.
    fn status_with(&self, desired: &[Desired], ctx: &Context) -> Self::Status {
        let previous = self.current_status().cloned().unwrap_or_default();
        let generation = self.meta().generation;
        let conditions = conditions::merge(
            Self::status_conditions(&previous),
            desired,
            generation,
            &ctx.now(),
        );
        Self::with_conditions(previous, generation, conditions)
    }
}

/// Reconcile one object through the pipeline. Every failed stage writes the status (`Ready`
/// false, `Degraded` true with the failure's reason) and publishes a Warning Event when the
/// reason is new, so a broken object never keeps `Ready=True`; the error then goes to
/// [`error_policy`] for backoff.
#[tracing::instrument(skip_all, fields(controller = K::CONTROLLER, namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
pub async fn reconcile<K: Pipeline>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start(K::CONTROLLER);
    if obj.meta().deletion_timestamp.is_some() {
        // Children go with the ownerReferences; nothing to clean up by hand.
        return Ok(Action::await_change());
    }
    match pass(&*obj, &ctx).await {
        Ok(outcome) => {
            if outcome.is_ok() {
                ctx.succeeded(&obj.key());
            }
            outcome
        }
        Err(err) => {
            report_failure(&*obj, &ctx, &err).await;
            Err(err)
        }
    }
}

/// The stages. `Err` is a failure to report; `Ok` is the outcome of a pass that wrote its own
/// status (a complete pass, or a halt in fetch).
async fn pass<K: Pipeline>(obj: &K, ctx: &Context) -> Result<Result<Action, Error>, Error> {
    // fetch
    let fetched = match obj.fetch(ctx).await {
        Ok(fetched) => fetched,
        Err(Ok(halt)) => {
            return Ok(match patch_status(ctx, obj, halt.status).await {
                Ok(()) => halt.outcome,
                Err(status) => halt.outcome.and(Err(status)),
            });
        }
        Err(Err(err)) => return Err(err),
    };
    // validate
    let validated = obj.validate(&fetched, &ctx.defaults).map_err(Error::Validate)?;
    // build
    let children = K::build(&validated);
    // apply
    let kinds = K::KINDS.served(K::apis(&fetched));
    let applied = apply::apply_children(&ctx.client, K::owner(&validated), kinds, &children)
        .await
        .map_err(Error::Apply)?;
    obj.applied(ctx, &fetched, &validated).await;
    // status
    let status = obj.status(&fetched, &validated, &applied, ctx);
    if let Err(err) = patch_status(ctx, obj, status).await {
        return Ok(Err(err));
    }
    Ok(K::finish(fetched, ctx))
}

/// Write what failed into the status (keeping the other conditions) and publish a Warning Event
/// the first time this reason shows up. Both are best effort: the reconcile fails with `err`
/// either way.
async fn report_failure<K: Pipeline>(obj: &K, ctx: &Context, err: &Error) {
    let reason = err.reason();
    let message = err.message();
    let desired = [
        Desired::new(conditions::READY, false, reason, message.clone()),
        Desired::new(conditions::DEGRADED, true, reason, message.clone()),
    ];
    let previous = obj.current_status().cloned().unwrap_or_default();
    let generation = obj.meta().generation;
    let known = K::status_conditions(&previous)
        .iter()
        .any(|c| c.type_ == conditions::DEGRADED && c.status == "True" && c.reason == reason);
    let conditions = conditions::update(K::status_conditions(&previous), &desired, generation, &ctx.now());
    let status = K::with_conditions(previous, generation, conditions);
    if let Err(status_err) = patch_status(ctx, obj, status).await {
        tracing::warn!(error = ?status_err, reason, "could not write the failure into the status");
    }
    if !known {
        ctx.publish(&obj.object_ref(&()), true, reason, err.action(), message)
            .await;
    }
}

/// The error policy of every controller: count the failure, back off per object (5 s doubling to
/// 5 min), never sooner than the API server asked (`retryAfterSeconds`).
pub fn error_policy<K: Pipeline>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = obj.key();
    ctx.metrics.failed(K::CONTROLLER, error.reason());
    tracing::warn!(controller = K::CONTROLLER, object = %key, reason = error.reason(), error = ?error, "reconcile failed");
    let delay = ctx.backoff(key);
    Action::requeue(error.retry_after().map_or(delay, |after| delay.max(after)))
}

/// Write the status with server-side apply (field manager `mlkube-operator`), unless unchanged.
pub async fn patch_status<K: Pipeline>(ctx: &Context, obj: &K, status: K::Status) -> Result<(), Error> {
    if obj.current_status() == Some(&status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}
