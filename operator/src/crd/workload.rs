//! Production settings both CRDs share: pod placement (`scheduling`), how pods are replaced
//! (`rolloutStrategy`), how many may be evicted at once (`disruptionBudget`), and how the Service
//! is reached from outside the cluster (`exposure`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the pods run.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Run only on nodes with these labels, e.g. `nvidia.com/gpu.present: "true"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations, e.g. `{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}` for
    /// tainted GPU nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node and pod affinity and anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How the pods spread over zones and nodes. A constraint without `labelSelector` selects
    /// this resource's own pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// RuntimeClass of the pods, e.g. `nvidia` where the NVIDIA container runtime is not the
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub runtime_class_name: Option<String>,
}

/// How a new version replaces the pods (a RollingUpdate Deployment).
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.maxSurge) && has(self.maxUnavailable) && string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])").message("maxSurge and maxUnavailable must not both be zero: the rollout could never replace a pod"))]
pub struct RolloutStrategySpec {
    /// Pods created above the desired count during a rollout: a number or a percentage such as
    /// `25%`. `0` replaces pods in place and needs no spare capacity (no spare GPU). Default:
    /// `25%`, or `0` when the model server requests a GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Pods that may be unavailable during a rollout: a number or a percentage. Default: `25%`,
    /// or `1` when the model server requests a GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// A PodDisruptionBudget: how many pods voluntary disruptions (node drains, cluster upgrades)
/// may take at once. Set at most one of `minAvailable` and `maxUnavailable`.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))").message("set at most one of disruptionBudget.minAvailable and disruptionBudget.maxUnavailable"))]
pub struct DisruptionBudgetSpec {
    /// Create the PodDisruptionBudget. Default: true when this section is set; without the
    /// section, one is created for 2 or more replicas (or autoscaling from 2).
    #[serde(default = "super::default_true")]
    pub enabled: bool,
    /// Pods that must stay available during a disruption: a number or a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    /// Pods that may be unavailable during a disruption: a number or a percentage. Default
    /// (neither set): `1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_available: None,
            max_unavailable: None,
        }
    }
}

/// How the Service is reached from outside the cluster: exactly one of `httpRoute` (Gateway
/// API) and `ingress`.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.httpRoute) != has(self.ingress)").message("set exactly one of exposure.httpRoute and exposure.ingress"))]
pub struct ExposureSpec {
    /// A Gateway API HTTPRoute (`gateway.networking.k8s.io/v1`) attached to your Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<HttpRouteExposure>,
    /// An Ingress (`networking.k8s.io/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressExposure>,
}

/// An HTTPRoute from a Gateway to the Service.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteExposure {
    /// The Gateways (or their listeners) the route attaches to.
    #[schemars(length(min = 1, max = 32))]
    pub parent_refs: Vec<GatewayRef>,
    /// Host names the route matches, e.g. `churn.models.example.com`. Default: every host of
    /// the listener.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<Hostname>,
    /// Requests whose path starts with this prefix go to the Service. Default: `/`.
    #[serde(default = "default_path_prefix")]
    #[schemars(length(min = 1, max = 1024), pattern(r"^/[^\s]*$"))]
    pub path_prefix: String,
}

/// A host name as the Gateway API and Ingress accept it (a leading `*.` wildcard allowed).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
pub struct Hostname(
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub String,
);

/// A Gateway, optionally one of its listeners.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// Name of the Gateway.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Gateway. Default: this resource's namespace. The Gateway's listener must
    /// allow routes from this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Name of the listener (`sectionName`). Default: every listener that accepts the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// An Ingress rule for one host to the Service.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressExposure {
    /// IngressClass, e.g. `nginx`. Default: the cluster's default IngressClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// Host name, e.g. `churn.models.example.com`.
    pub host: Hostname,
    /// Requests whose path starts with this prefix go to the Service. Default: `/`.
    #[serde(default = "default_path_prefix")]
    #[schemars(length(min = 1, max = 1024), pattern(r"^/[^\s]*$"))]
    pub path_prefix: String,
    /// TLS: a Secret of type `kubernetes.io/tls` for `host`, in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
    /// Annotations of the Ingress, for the controller (e.g. `nginx.ingress.kubernetes.io/proxy-body-size`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn default_path_prefix() -> String {
    "/".to_owned()
}
