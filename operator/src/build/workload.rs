//! What both workloads share beyond their Deployment: pod placement, the PodDisruptionBudget,
//! and the Ingress or Gateway API HTTPRoute in front of the Service (with a minimal typed
//! `gateway.networking.k8s.io/v1` HTTPRoute: only the fields mlkube sets).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::crd::workload::{ExposureSpec, HttpRouteExposure, IngressExposure, SchedulingSpec};
use crate::validate::workload::Budget;

/// Spec of a Gateway API HTTPRoute.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    root = "HttpRoute",
    plural = "httproutes",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

/// A Gateway (or one of its listeners) an HTTPRoute attaches to.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// One rule of an HTTPRoute: matches and the backends they go to.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathMatch {
    #[serde(rename = "type")]
    pub type_: String,
    pub value: String,
}

/// A Service in the route's namespace and its port number.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpBackendRef {
    pub name: String,
    pub port: i32,
    /// Share of the rule's requests (relative to the other backends'); absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// The pods' placement from `scheduling` (and the pods' ServiceAccount). A topology spread
/// constraint without a `labelSelector` selects the workload's own pods (`selector`).
pub fn place(pod: &mut PodSpec, scheduling: &SchedulingSpec, selector: &BTreeMap<String, String>) {
    pod.node_selector = Some(scheduling.node_selector.clone()).filter(|m| !m.is_empty());
    pod.tolerations = Some(scheduling.tolerations.clone()).filter(|t| !t.is_empty());
    pod.affinity = scheduling.affinity.clone();
    let spread: Vec<_> = scheduling
        .topology_spread_constraints
        .iter()
        .cloned()
        .map(|mut c| {
            c.label_selector.get_or_insert_with(|| LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            });
            c
        })
        .collect();
    pod.topology_spread_constraints = Some(spread).filter(|s| !s.is_empty());
    pod.priority_class_name = scheduling.priority_class_name.clone();
    pod.runtime_class_name = scheduling.runtime_class_name.clone();
}

/// The PodDisruptionBudget of the pods `selector` selects. `unhealthyPodEvictionPolicy:
/// AlwaysAllow`: a pod that is not ready (crash-looping, a model that fails to load) never blocks
/// a node drain.
pub fn build_disruption_budget(
    metadata: ObjectMeta,
    selector: BTreeMap<String, String>,
    budget: &Budget,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            min_available: budget.min_available.clone(),
            max_unavailable: budget.max_unavailable.clone(),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
        }),
        status: None,
    }
}

/// An Ingress for `host` (and its TLS Secret) to the Service's named `port`.
pub fn build_ingress(mut metadata: ObjectMeta, service: &str, port: &str, spec: &IngressExposure) -> Ingress {
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    let host = spec.host.0.clone();
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(spec.path_prefix.clone()),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: service.to_owned(),
                                port: Some(ServiceBackendPort {
                                    name: Some(port.to_owned()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    }
}

/// An HTTPRoute from the Gateways of `spec` to the Service's `port` (HTTPRoute backends name
/// ports by number).
pub fn build_http_route(
    metadata: ObjectMeta,
    service: &str,
    port: i32,
    spec: &HttpRouteExposure,
) -> HttpRoute {
    HttpRoute {
        metadata,
        spec: HttpRouteSpec {
            parent_refs: spec
                .parent_refs
                .iter()
                .map(|p| ParentReference {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    section_name: p.section_name.clone(),
                })
                .collect(),
            hostnames: spec.hostnames.iter().map(|h| h.0.clone()).collect(),
            rules: vec![HttpRouteRule {
                matches: vec![HttpRouteMatch {
                    path: Some(HttpPathMatch {
                        type_: "PathPrefix".to_owned(),
                        value: spec.path_prefix.clone(),
                    }),
                }],
                backend_refs: vec![HttpBackendRef {
                    name: service.to_owned(),
                    port,
                    weight: None,
                }],
            }],
        },
    }
}

/// The Ingress or HTTPRoute of `exposure` into `children` (an HTTPRoute only when the cluster
/// serves the Gateway API).
pub(crate) fn expose(
    children: &mut super::ChildObjects,
    metadata: ObjectMeta,
    exposure: &ExposureSpec,
    gateway_api: bool,
    port: (&str, i32),
) {
    let service = metadata.name.clone().unwrap_or_default();
    if let Some(ingress) = &exposure.ingress {
        children
            .ingresses
            .push(build_ingress(metadata, &service, port.0, ingress));
    } else if let Some(route) = &exposure.http_route
        && gateway_api
    {
        children
            .http_routes
            .push(build_http_route(metadata, &service, port.1, route));
    }
}
