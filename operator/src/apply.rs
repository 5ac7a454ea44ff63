//! The apply stage: server-side apply of the built children (field manager `mlkube-operator`),
//! skipping objects that are up to date ([`drift`]: the applied intent and our managed fields,
//! never a comparison of whole objects), refusing names taken by objects we do not own, and
//! deleting the objects we own that are no longer wanted (found by label, confirmed by
//! ownerReference).

pub mod drift;

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::{ChildObjects, HttpRoute, PrometheusRule, ScaledObject, ServiceMonitor, labels};
pub use crate::cluster::{Apis, api_message};
use crate::crd::conditions;
use crate::validate::Owner;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "mlkube-operator";

/// The field manager that keeps a Deployment's `spec.replicas` while the operator hands it to an
/// autoscaler (see [`Applier::hand_over_replicas`]).
pub const HANDOVER_FIELD_MANAGER: &str = "mlkube-operator-handover";

/// Why applying children failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("could not {op} {kind} {name:?}: {}", api_message(source))]
    Api {
        op: &'static str,
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "{kind} {name:?} already exists and is not owned by this resource ({holder}); rename or delete it, or annotate it with {annotation}=true to let the operator adopt it",
        annotation = labels::ALLOW_ADOPTION
    )]
    NameConflict {
        kind: &'static str,
        name: String,
        /// Who holds it: "controlled by Kind/name" or "not controlled by anything".
        holder: String,
    },
}

impl ApplyError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Api { source, .. } => api_reason(source).unwrap_or("ApplyFailed"),
            Self::NameConflict { .. } => conditions::NAME_CONFLICT,
        }
    }

    /// The API server's own retry hint (429 `details.retryAfterSeconds`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Api { source, .. } => retry_after(source),
            Self::NameConflict { .. } => None,
        }
    }
}

/// The condition reason of an API error, from its HTTP status: `Forbidden` (403, RBAC),
/// `NotFound` (404), `Conflict` (409), `Expired` (410), `Invalid` (422, the object was refused),
/// `Throttled` (429), `ApiServerError` (5xx); `None` for anything else (no answer, a decode error).
pub fn api_reason(err: &kube::Error) -> Option<&'static str> {
    match err {
        kube::Error::Api(status) => match status.code {
            403 => Some(conditions::FORBIDDEN),
            404 => Some(conditions::NOT_FOUND),
            409 => Some(conditions::CONFLICT),
            410 => Some(conditions::EXPIRED),
            422 => Some(conditions::INVALID),
            429 => Some(conditions::THROTTLED),
            500..=599 => Some(conditions::API_SERVER_ERROR),
            _ => None,
        },
        _ => None,
    }
}

/// How long the API server asked us to wait (`details.retryAfterSeconds` of a 429 or 5xx).
pub fn retry_after(err: &kube::Error) -> Option<std::time::Duration> {
    match err {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
            .map(|s| std::time::Duration::from_secs(u64::from(s))),
        _ => None,
    }
}

/// Every kind of child, in the order a reconcile applies them: the one list that decides what
/// [`apply_children`] lists, applies and deletes, and (through [`ChildKind::resource`]) what the
/// chart's RBAC must grant for it (`operator/tests/rbac.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChildKind {
    PersistentVolumeClaim,
    ConfigMap,
    Deployment,
    /// The node sampler's ServiceAccount, applied before the DaemonSet whose pods run as it.
    ServiceAccount,
    DaemonSet,
    Service,
    PodDisruptionBudget,
    /// An HPA is deleted before a ScaledObject takes its place (KEDA refuses a target that
    /// another HPA scales).
    HorizontalPodAutoscaler,
    ScaledObject,
    Ingress,
    HttpRoute,
    ServiceMonitor,
    PrometheusRule,
}

/// The API group and resource (plural) of a kind, as RBAC rules name them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    /// The group and plural of `K`.
    pub fn of<K: Resource<DynamicType = ()>>() -> Self {
        Self {
            group: K::group(&()).into_owned(),
            resource: K::plural(&()).into_owned(),
        }
    }
}

impl ChildKind {
    /// In apply order.
    pub const ALL: [Self; 13] = [
        Self::PersistentVolumeClaim,
        Self::ConfigMap,
        Self::Deployment,
        Self::ServiceAccount,
        Self::DaemonSet,
        Self::Service,
        Self::PodDisruptionBudget,
        Self::HorizontalPodAutoscaler,
        Self::ScaledObject,
        Self::Ingress,
        Self::HttpRoute,
        Self::ServiceMonitor,
        Self::PrometheusRule,
    ];

    /// The kind's name, as errors and logs give it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PersistentVolumeClaim => "PersistentVolumeClaim",
            Self::ConfigMap => "ConfigMap",
            Self::Deployment => "Deployment",
            Self::ServiceAccount => "ServiceAccount",
            Self::DaemonSet => "DaemonSet",
            Self::Service => "Service",
            Self::PodDisruptionBudget => "PodDisruptionBudget",
            Self::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Self::ScaledObject => "ScaledObject",
            Self::Ingress => "Ingress",
            Self::HttpRoute => "HTTPRoute",
            Self::ServiceMonitor => "ServiceMonitor",
            Self::PrometheusRule => "PrometheusRule",
        }
    }

    /// Whether owned objects no longer wanted are deleted. Claims never are: they hold data, and
    /// go with their owner.
    pub const fn prunes(self) -> bool {
        !matches!(self, Self::PersistentVolumeClaim)
    }

    /// Whether `kinds` includes this kind.
    pub const fn owned_by(self, kinds: Kinds) -> bool {
        match self {
            Self::PersistentVolumeClaim => kinds.persistent_volume_claims,
            Self::ConfigMap => kinds.config_maps,
            Self::Deployment => kinds.deployments,
            Self::ServiceAccount => kinds.service_accounts,
            Self::DaemonSet => kinds.daemon_sets,
            Self::Service => kinds.services,
            Self::PodDisruptionBudget => kinds.pod_disruption_budgets,
            Self::HorizontalPodAutoscaler => kinds.horizontal_pod_autoscalers,
            Self::ScaledObject => kinds.scaled_objects,
            Self::Ingress => kinds.ingresses,
            Self::HttpRoute => kinds.http_routes,
            Self::ServiceMonitor => kinds.service_monitors,
            Self::PrometheusRule => kinds.prometheus_rules,
        }
    }

    /// The API group and resource of the type [`apply_children`] applies for this kind.
    pub fn resource(self) -> GroupResource {
        match self {
            Self::PersistentVolumeClaim => GroupResource::of::<PersistentVolumeClaim>(),
            Self::ConfigMap => GroupResource::of::<ConfigMap>(),
            Self::Deployment => GroupResource::of::<Deployment>(),
            Self::ServiceAccount => GroupResource::of::<ServiceAccount>(),
            Self::DaemonSet => GroupResource::of::<DaemonSet>(),
            Self::Service => GroupResource::of::<Service>(),
            Self::PodDisruptionBudget => GroupResource::of::<PodDisruptionBudget>(),
            Self::HorizontalPodAutoscaler => GroupResource::of::<HorizontalPodAutoscaler>(),
            Self::ScaledObject => GroupResource::of::<ScaledObject>(),
            Self::Ingress => GroupResource::of::<Ingress>(),
            Self::HttpRoute => GroupResource::of::<HttpRoute>(),
            Self::ServiceMonitor => GroupResource::of::<ServiceMonitor>(),
            Self::PrometheusRule => GroupResource::of::<PrometheusRule>(),
        }
    }

    /// The verbs a reconcile uses on this kind: `list` (children by label, and the name check
    /// before a create) and `watch` (run.rs watches what the controllers own), `create` and
    /// `patch` (server-side apply creates an object that does not exist yet), `delete` for
    /// orphans of a kind that [`prunes`](Self::prunes).
    pub fn verbs(self) -> &'static [&'static str] {
        if self.prunes() {
            &["create", "delete", "list", "patch", "watch"]
        } else {
            &["create", "list", "patch", "watch"]
        }
    }
}

/// Which kinds a resource owns: listed (for drift and orphans) on every reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kinds {
    pub persistent_volume_claims: bool,
    pub config_maps: bool,
    pub deployments: bool,
    /// The node sampler's ServiceAccount, applied before the DaemonSet whose pods run as it.
    pub service_accounts: bool,
    pub daemon_sets: bool,
    pub services: bool,
    pub pod_disruption_budgets: bool,
    pub horizontal_pod_autoscalers: bool,
    /// KEDA ScaledObjects, only when the cluster serves `keda.sh/v1alpha1`.
    pub scaled_objects: bool,
    pub ingresses: bool,
    /// Gateway API HTTPRoutes, only when the cluster serves `gateway.networking.k8s.io/v1`.
    pub http_routes: bool,
    /// ServiceMonitors and PrometheusRules, only when the cluster serves the API.
    pub service_monitors: bool,
    pub prometheus_rules: bool,
}

impl Kinds {
    /// These kinds, less those of the optional APIs the cluster does not serve.
    pub const fn served(self, apis: Apis) -> Self {
        Self {
            service_monitors: self.service_monitors && apis.monitoring,
            prometheus_rules: self.prometheus_rules && apis.monitoring,
            scaled_objects: self.scaled_objects && apis.keda,
            http_routes: self.http_routes && apis.gateway,
            ..self
        }
    }
}

/// Applied (or already up-to-date) children, as the API server returned them.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub deployments: Vec<Deployment>,
    pub writes: usize,
}

struct Applier<'a> {
    client: &'a Client,
    owner: &'a Owner,
    writes: usize,
}

impl Applier<'_> {
    /// Before an apply that stops setting `spec.replicas` (autoscaling was switched on) while our
    /// field manager still owns it: apply the live count under [`HANDOVER_FIELD_MANAGER`] first.
    /// Otherwise the API server would drop the field with our apply and default it to 1 until
    /// the autoscaler acts (Kubernetes' documented "transferring ownership" to an HPA); the
    /// autoscaler's own writes take the field from both managers.
    async fn hand_over_replicas<K>(
        &mut self,
        api: &Api<K>,
        kind: &'static str,
        name: &str,
        live: &serde_json::Value,
        desired: &serde_json::Value,
    ) -> Result<(), ApplyError>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    {
        let Some(replicas) = live.pointer("/spec/replicas").filter(|r| r.is_i64()) else {
            return Ok(());
        };
        if desired.pointer("/spec/replicas").is_some()
            || !drift::manages(live, FIELD_MANAGER, &["f:spec", "f:replicas"])
        {
            return Ok(());
        }
        let body = serde_json::json!({
            "apiVersion": live["apiVersion"],
            "kind": live["kind"],
            "metadata": {"name": name, "namespace": self.owner.namespace},
            "spec": {"replicas": replicas},
        });
        api.patch(
            name,
            &PatchParams::apply(HANDOVER_FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|source| ApplyError::Api {
            op: "apply",
            kind,
            name: name.to_owned(),
            source,
        })?;
        self.writes += 1;
        tracing::info!(kind, name, %replicas, "handed spec.replicas over to the autoscaler");
        Ok(())
    }

    /// Refuse to take over an object we do not own: one that another controller owns, or a
    /// user's, unless it carries `mlkube.io/allow-adoption: "true"` (then our apply adds our
    /// controller ownerReference and labels). An object we own that lost our labels is ours.
    async fn check_name<K>(&self, api: &Api<K>, kind: &'static str, name: &str) -> Result<(), ApplyError>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    {
        // A list by name rather than a get: the operator's RBAC lists children but does not get
        // them one by one.
        let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
        let existing = api.list(&by_name).await.map_err(|source| ApplyError::Api {
            op: "list",
            kind,
            name: name.to_owned(),
            source,
        })?;
        let Some(existing) = existing.items.into_iter().next() else {
            return Ok(());
        };
        let controller = existing
            .meta()
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        match controller {
            Some(c) if c.uid == self.owner.reference.uid => Ok(()),
            None if existing
                .meta()
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::ALLOW_ADOPTION))
                .is_some_and(|v| v == "true") =>
            {
                tracing::info!(kind, name, "adopting (annotated {})", labels::ALLOW_ADOPTION);
                Ok(())
            }
            _ => Err(ApplyError::NameConflict {
                kind,
                name: name.to_owned(),
                holder: match controller {
                    Some(c) => format!("controlled by {}/{}", c.kind, c.name),
                    None => "not controlled by anything".to_owned(),
                },
            }),
        }
    }

    async fn reconcile_kind<K>(&mut self, child: ChildKind, desired: &[K]) -> Result<Vec<K>, ApplyError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let kind = child.name();
        // The RBAC the chart grants is derived from `child.resource()` (operator/tests/rbac.rs).
        debug_assert_eq!(child.resource(), GroupResource::of::<K>(), "{kind}");
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.owner.namespace);
        let params = ListParams::default().labels(&labels::children_selector(&self.owner.name));
        let live = api.list(&params).await.map_err(|source| ApplyError::Api {
            op: "list",
            kind,
            name: String::new(),
            source,
        })?;
        let owned: Vec<K> = live
            .items
            .into_iter()
            .filter(|o| {
                o.meta()
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == self.owner.reference.uid && r.controller == Some(true))
            })
            .collect();
        let mut result = Vec::with_capacity(desired.len());
        for want in desired {
            let name = want.meta().name.clone().unwrap_or_default();
            // The applied intent: a hash of the object as built, recorded on the object.
            let mut want = want.clone();
            let hash = drift::applied_hash(&serde_json::to_value(&want).unwrap_or_default());
            want.meta_mut()
                .annotations
                .get_or_insert_with(Default::default)
                .insert(labels::APPLIED_HASH.to_owned(), hash.clone());
            let current = owned
                .iter()
                .find(|o| o.meta().name.as_deref() == Some(name.as_str()));
            match current {
                Some(current) => {
                    let live = serde_json::to_value(current).unwrap_or_default();
                    let desired = serde_json::to_value(&want).unwrap_or_default();
                    match drift::drift(&live, &desired, &hash, FIELD_MANAGER) {
                        None => {
                            result.push(current.clone());
                            continue;
                        }
                        Some(why) => tracing::debug!(kind, name, why, "drifted"),
                    }
                    self.hand_over_replicas(&api, kind, &name, &live, &desired)
                        .await?;
                }
                // Not among our children: the name may still be taken.
                None => self.check_name(&api, kind, &name).await?,
            }
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&want),
                )
                .await
                .map_err(|source| ApplyError::Api {
                    op: "apply",
                    kind,
                    name: name.clone(),
                    source,
                })?;
            self.writes += 1;
            tracing::info!(kind, name, "applied");
            result.push(applied);
        }
        if child.prunes() {
            for orphan in &owned {
                let name = orphan.meta().name.clone().unwrap_or_default();
                if desired
                    .iter()
                    .any(|d| d.meta().name.as_deref() == Some(name.as_str()))
                {
                    continue;
                }
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(source) => {
                        return Err(ApplyError::Api {
                            op: "delete",
                            kind,
                            name,
                            source,
                        });
                    }
                }
                self.writes += 1;
                tracing::info!(kind, name, "deleted orphan");
            }
        }
        Ok(result)
    }
}

/// Apply every child of one resource, kind by kind in the order of [`ChildKind::ALL`] (claims,
/// config maps, deployments, service accounts, daemon sets, services, disruption budgets, HPAs,
/// ScaledObjects, ingresses, HTTPRoutes, service monitors, prometheus rules). Claims are never
/// deleted: they hold data, and go with their owner.
pub async fn apply_children(
    client: &Client,
    owner: &Owner,
    kinds: Kinds,
    children: &ChildObjects,
) -> Result<Applied, ApplyError> {
    let mut applier = Applier {
        client,
        owner,
        writes: 0,
    };
    let mut deployments = Vec::new();
    for child in ChildKind::ALL {
        if !child.owned_by(kinds) {
            continue;
        }
        let c = children;
        match child {
            ChildKind::PersistentVolumeClaim => {
                applier.reconcile_kind(child, &c.persistent_volume_claims).await?;
            }
            ChildKind::ConfigMap => {
                applier.reconcile_kind(child, &c.config_maps).await?;
            }
            ChildKind::Deployment => {
                deployments = applier.reconcile_kind(child, &c.deployments).await?;
            }
            ChildKind::ServiceAccount => {
                applier.reconcile_kind(child, &c.service_accounts).await?;
            }
            ChildKind::DaemonSet => {
                applier.reconcile_kind(child, &c.daemon_sets).await?;
            }
            ChildKind::Service => {
                applier.reconcile_kind(child, &c.services).await?;
            }
            ChildKind::PodDisruptionBudget => {
                applier.reconcile_kind(child, &c.pod_disruption_budgets).await?;
            }
            ChildKind::HorizontalPodAutoscaler => {
                applier
                    .reconcile_kind(child, &c.horizontal_pod_autoscalers)
                    .await?;
            }
            ChildKind::ScaledObject => {
                applier.reconcile_kind(child, &c.scaled_objects).await?;
            }
            ChildKind::Ingress => {
                applier.reconcile_kind(child, &c.ingresses).await?;
            }
            ChildKind::HttpRoute => {
                applier.reconcile_kind(child, &c.http_routes).await?;
            }
            ChildKind::ServiceMonitor => {
                applier.reconcile_kind(child, &c.service_monitors).await?;
            }
            ChildKind::PrometheusRule => {
                applier.reconcile_kind(child, &c.prometheus_rules).await?;
            }
        }
    }
    Ok(Applied {
        deployments,
        writes: applier.writes,
    })
}

/// Whether the cluster serves `group_version` with every resource of `plurals` (404: not served).
async fn fetch_api(client: &Client, group_version: &str, plurals: &[&str]) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => Ok(plurals
            .iter()
            .all(|plural| list.resources.iter().any(|r| r.name == *plural))),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(err),
    }
}

/// The API group/version of KEDA's ScaledObjects.
pub const KEDA_API: &str = "keda.sh/v1alpha1";
/// The API group/version of the Gateway API's HTTPRoutes.
pub const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

/// Whether the cluster serves `monitoring.coreos.com/v1` with ServiceMonitors and
/// PrometheusRules (Prometheus Operator is installed).
pub async fn fetch_monitoring_api(client: &Client) -> Result<bool, kube::Error> {
    fetch_api(
        client,
        "monitoring.coreos.com/v1",
        &["servicemonitors", "prometheusrules"],
    )
    .await
}

/// The optional APIs a reconcile needs: the monitoring API always, KEDA when `keda` (only
/// ModelDeployments scale), the Gateway API always (exposure).
pub async fn fetch_apis(client: &Client, keda: bool) -> Result<Apis, kube::Error> {
    Ok(Apis {
        monitoring: fetch_monitoring_api(client).await?,
        keda: keda && fetch_keda_api(client).await?,
        gateway: fetch_gateway_api(client).await?,
    })
}

/// Whether the cluster serves KEDA's `keda.sh/v1alpha1` ScaledObjects.
pub async fn fetch_keda_api(client: &Client) -> Result<bool, kube::Error> {
    fetch_api(client, KEDA_API, &["scaledobjects"]).await
}

/// Whether the cluster serves the Gateway API's `gateway.networking.k8s.io/v1` HTTPRoutes.
pub async fn fetch_gateway_api(client: &Client) -> Result<bool, kube::Error> {
    fetch_api(client, GATEWAY_API, &["httproutes"]).await
}
