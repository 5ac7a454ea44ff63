//! The build stage: pure functions from a validated spec to the Kubernetes objects that should
//! exist. Output is deterministic (sorted maps and lists, no timestamps or random names), so
//! applying it twice changes nothing.

pub mod daemonset;
pub mod deployment;
pub mod labels;
pub mod ports;
pub mod prometheus_rule;
pub mod pvc;
pub mod security;
pub mod service;
pub mod service_monitor;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::validate::{Owner, ValidatedModelDeployment, ValidatedTrackingServer};
pub use prometheus_rule::PrometheusRule;
pub use service_monitor::ServiceMonitor;

/// Every object one custom resource should own, by kind, each list sorted by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChildObjects {
    pub persistent_volume_claims: Vec<PersistentVolumeClaim>,
    pub deployments: Vec<Deployment>,
    pub daemon_sets: Vec<DaemonSet>,
    pub services: Vec<Service>,
    pub service_monitors: Vec<ServiceMonitor>,
    pub prometheus_rules: Vec<PrometheusRule>,
}

/// Metadata of a child: name, the owner's namespace, labels and a controller ownerReference.
pub fn child_meta(owner: &Owner, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner.reference.clone()]),
        ..Default::default()
    }
}

/// Name of the node sampler's DaemonSet, Service and ServiceMonitor.
pub fn node_sampler_name(tracking_server: &str) -> String {
    format!("{tracking_server}-node-sampler")
}

/// Everything a TrackingServer owns.
pub fn tracking_server(ts: &ValidatedTrackingServer) -> ChildObjects {
    let mut children = ChildObjects {
        persistent_volume_claims: pvc::build_tracking_server_pvcs(ts),
        deployments: vec![deployment::build_tracking_server_deployment(ts)],
        services: vec![service::build_tracking_server_service(ts)],
        ..Default::default()
    };
    if ts.monitoring_api
        && let Some(settings) = &ts.service_monitor
    {
        children
            .service_monitors
            .push(service_monitor::build_service_monitor(
                child_meta(&ts.owner, ts.owner.name.clone(), server_labels(ts)),
                labels::selector(
                    labels::APP_SERVER,
                    &ts.owner.name,
                    labels::COMPONENT_TRACKING_SERVER,
                ),
                ports::HTTP,
                settings,
                false,
            ));
    }
    if let Some(sampler) = &ts.node_sampler {
        children
            .daemon_sets
            .push(daemonset::build_node_sampler_daemonset(ts, sampler));
        children.services.push(service::build_node_sampler_service(ts));
        if ts.monitoring_api
            && let Some(settings) = &sampler.service_monitor
        {
            children
                .service_monitors
                .push(service_monitor::build_service_monitor(
                    child_meta(
                        &ts.owner,
                        node_sampler_name(&ts.owner.name),
                        node_sampler_labels(ts),
                    ),
                    labels::selector(
                        labels::APP_NODE_SAMPLER,
                        &ts.owner.name,
                        labels::COMPONENT_NODE_SAMPLER,
                    ),
                    ports::METRICS,
                    settings,
                    true,
                ));
        }
    }
    sort(&mut children);
    children
}

/// Everything a ModelDeployment owns.
pub fn model_deployment(md: &ValidatedModelDeployment) -> ChildObjects {
    let mut children = ChildObjects {
        deployments: vec![deployment::build_model_deployment(md)],
        services: vec![service::build_model_service(md)],
        ..Default::default()
    };
    if md.monitoring_api {
        if let Some(settings) = &md.service_monitor {
            children
                .service_monitors
                .push(service_monitor::build_service_monitor(
                    child_meta(&md.owner, md.owner.name.clone(), model_labels(md)),
                    labels::selector(labels::APP_MODEL, &md.owner.name, labels::COMPONENT_MODEL_SERVER),
                    ports::METRICS,
                    settings,
                    false,
                ));
        }
        if let Some(params) = &md.alerts
            && let Some(rule) = prometheus_rule::build_prometheus_rule(
                child_meta(&md.owner, md.owner.name.clone(), model_labels(md)),
                params,
                &md.monitoring_labels,
            )
        {
            children.prometheus_rules.push(rule);
        }
    }
    sort(&mut children);
    children
}

pub(crate) fn server_labels(ts: &ValidatedTrackingServer) -> BTreeMap<String, String> {
    labels::standard(
        labels::APP_SERVER,
        &ts.owner.name,
        labels::COMPONENT_TRACKING_SERVER,
    )
}

pub(crate) fn node_sampler_labels(ts: &ValidatedTrackingServer) -> BTreeMap<String, String> {
    labels::standard(
        labels::APP_NODE_SAMPLER,
        &ts.owner.name,
        labels::COMPONENT_NODE_SAMPLER,
    )
}

/// Labels of a model deployment's objects: the standard set plus model name and version.
pub(crate) fn model_labels(md: &ValidatedModelDeployment) -> BTreeMap<String, String> {
    let mut labels = labels::standard(labels::APP_MODEL, &md.owner.name, labels::COMPONENT_MODEL_SERVER);
    labels.insert(
        labels::MODEL_NAME.to_owned(),
        labels::sanitize_value(&md.model.name),
    );
    labels.insert(
        labels::MODEL_VERSION.to_owned(),
        labels::sanitize_value(&md.model.version),
    );
    labels
}

fn sort(children: &mut ChildObjects) {
    fn by_name<T>(items: &mut [T], name: impl Fn(&T) -> Option<&String>) {
        items.sort_by(|a, b| name(a).cmp(&name(b)));
    }
    by_name(&mut children.persistent_volume_claims, |o| {
        o.metadata.name.as_ref()
    });
    by_name(&mut children.deployments, |o| o.metadata.name.as_ref());
    by_name(&mut children.daemon_sets, |o| o.metadata.name.as_ref());
    by_name(&mut children.services, |o| o.metadata.name.as_ref());
    by_name(&mut children.service_monitors, |o| o.metadata.name.as_ref());
    by_name(&mut children.prometheus_rules, |o| o.metadata.name.as_ref());
}
