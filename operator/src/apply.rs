//! The apply stage: server-side apply of the built children (field manager `mlkube-operator`),
//! skipping objects whose live state already contains everything we want, and deleting the
//! objects we own that are no longer wanted (found by label, confirmed by ownerReference).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::{ChildObjects, PrometheusRule, ServiceMonitor, labels};
use crate::validate::Owner;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "mlkube-operator";

/// Why applying children failed.
#[derive(Debug, thiserror::Error)]
#[error("could not {op} {kind} {name:?}")]
pub struct ApplyError {
    pub op: &'static str,
    pub kind: &'static str,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

impl ApplyError {
    pub fn reason(&self) -> &'static str {
        "ApplyFailed"
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
    /// ServiceMonitors and PrometheusRules, only when the cluster serves the API.
    pub service_monitors: bool,
    pub prometheus_rules: bool,
}

impl Kinds {
    /// These kinds, less ServiceMonitors and PrometheusRules when the cluster does not serve
    /// `monitoring.coreos.com/v1`.
    pub const fn served(self, monitoring_api: bool) -> Self {
        Self {
            service_monitors: self.service_monitors && monitoring_api,
            prometheus_rules: self.prometheus_rules && monitoring_api,
            ..self
        }
    }
}

/// Whether `live` already holds every field of `desired` (objects: a superset of keys; arrays:
/// the same length, element by element). Fields the API server defaults or other managers set
/// do not count as drift; a changed or removed field of ours does.
pub fn contains(live: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| {
            l.get(k).is_some_and(|lv| contains(lv, dv)) || (dv.is_null() && !l.contains_key(k))
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        _ => live == desired,
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
    async fn reconcile_kind<K>(
        &mut self,
        kind: &'static str,
        desired: &[K],
        delete_orphans: bool,
    ) -> Result<Vec<K>, ApplyError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.owner.namespace);
        let params = ListParams::default().labels(&labels::children_selector(&self.owner.name));
        let live = api.list(&params).await.map_err(|source| ApplyError {
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
            let current = owned
                .iter()
                .find(|o| o.meta().name.as_deref() == Some(name.as_str()));
            let up_to_date = match current {
                Some(current) => {
                    let live = serde_json::to_value(current).unwrap_or_default();
                    let want = serde_json::to_value(want).unwrap_or_default();
                    contains(&live, &want)
                }
                None => false,
            };
            if let (true, Some(current)) = (up_to_date, current) {
                result.push(current.clone());
                continue;
            }
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(want),
                )
                .await
                .map_err(|source| ApplyError {
                    op: "apply",
                    kind,
                    name: name.clone(),
                    source,
                })?;
            self.writes += 1;
            tracing::info!(kind, name, "applied");
            result.push(applied);
        }
        if delete_orphans {
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
                        return Err(ApplyError {
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

/// Apply every child of one resource, kind by kind in a fixed order (claims, config maps, deployments,
/// service accounts, daemon sets, services, service monitors, prometheus rules). Claims are never deleted: they
/// hold data, and go with their owner.
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
    if kinds.persistent_volume_claims {
        applier
            .reconcile_kind::<PersistentVolumeClaim>(
                "PersistentVolumeClaim",
                &children.persistent_volume_claims,
                false,
            )
            .await?;
    }
    if kinds.config_maps {
        applier
            .reconcile_kind::<ConfigMap>("ConfigMap", &children.config_maps, true)
            .await?;
    }
    let deployments = if kinds.deployments {
        applier
            .reconcile_kind::<Deployment>("Deployment", &children.deployments, true)
            .await?
    } else {
        Vec::new()
    };
    if kinds.service_accounts {
        applier
            .reconcile_kind::<ServiceAccount>("ServiceAccount", &children.service_accounts, true)
            .await?;
    }
    if kinds.daemon_sets {
        applier
            .reconcile_kind::<DaemonSet>("DaemonSet", &children.daemon_sets, true)
            .await?;
    }
    if kinds.services {
        applier
            .reconcile_kind::<Service>("Service", &children.services, true)
            .await?;
    }
    if kinds.service_monitors {
        applier
            .reconcile_kind::<ServiceMonitor>("ServiceMonitor", &children.service_monitors, true)
            .await?;
    }
    if kinds.prometheus_rules {
        applier
            .reconcile_kind::<PrometheusRule>("PrometheusRule", &children.prometheus_rules, true)
            .await?;
    }
    Ok(Applied {
        deployments,
        writes: applier.writes,
    })
}

/// Whether the cluster serves `monitoring.coreos.com/v1` with ServiceMonitors and
/// PrometheusRules (Prometheus Operator is installed).
pub async fn fetch_monitoring_api(client: &Client) -> Result<bool, kube::Error> {
    match client.list_api_group_resources("monitoring.coreos.com/v1").await {
        Ok(list) => Ok(["servicemonitors", "prometheusrules"]
            .iter()
            .all(|plural| list.resources.iter().any(|r| r.name == *plural))),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containment_ignores_server_defaults_but_not_our_changes() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"name": "http", "port": 8000}]}});
        let live = json!({"spec": {"replicas": 2, "revisionHistoryLimit": 10,
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}]}, "status": {}});
        assert!(contains(&live, &desired));
        let scaled = json!({"spec": {"replicas": 5, "ports": [{"name": "http", "port": 8000}]}});
        assert!(!contains(&scaled, &desired));
        let extra_port = json!({"spec": {"replicas": 2, "ports": [{"name": "http", "port": 8000}, {"name": "x", "port": 1}]}});
        assert!(!contains(&extra_port, &desired));
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
    }
}
