//! The node sampler DaemonSet: host and GPU metrics from every selected node.
//!
//! Why it is not `restricted`: it runs with `hostPID` so that NVML's per-process GPU list (host
//! PIDs) can be mapped to pods through `/proc/<pid>/cgroup`, and it mounts, read-only, the host's
//! `/sys`, `/` (disk usage) and the kubelet's pod-resources socket (device-plugin attribution).
//! `NVIDIA_VISIBLE_DEVICES=all` makes the NVIDIA runtime inject the driver and every GPU without
//! requesting `nvidia.com/gpu`, which would take a GPU away from workloads. Everything else is
//! locked down: no privilege escalation, every capability dropped, read-only root filesystem.
//!
//! It runs as its own ServiceAccount `<trackingserver>-node-sampler` (an owned child, below), with
//! the token mounted: it lists and watches the pods on its node (fieldSelector spec.nodeName) to
//! name per-pod GPU series and log into runs. The operator grants nothing to it: reading pods in
//! every namespace is a cluster permission, bound by the chart (operator/README.md "Node sampler
//! RBAC").

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Probe, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::deployment::{env, resources};
use super::{child_meta, labels, node_sampler_labels, node_sampler_name, ports, security};
use crate::validate::{NodeSampler, ValidatedTrackingServer};

pub const NODE_SAMPLER_CONTAINER: &str = "mlkube-node-sampler";

fn host_path(name: &str, path: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_owned(),
            type_: Some("Directory".to_owned()),
        }),
        ..Default::default()
    }
}

fn read_only_mount(name: &str, path: &str, propagation: Option<&str>) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        mount_propagation: propagation.map(str::to_owned),
        ..Default::default()
    }
}

/// The mlkube-node-sampler command line (docs/architecture.md, "Command lines").
pub fn node_sampler_args(ts: &ValidatedTrackingServer, sampler: &NodeSampler) -> Vec<String> {
    vec![
        "--listen".into(),
        format!("0.0.0.0:{}", ports::NODE_SAMPLER),
        "--interval".into(),
        sampler.interval_secs.to_string(),
        "--node-name".into(),
        "$(NODE_NAME)".into(),
        "--tracking-uri-default".into(),
        ts.url.clone(),
    ]
}

/// The ServiceAccount the node sampler's pods run as (same name, labels and owner as the DaemonSet).
pub fn build_node_sampler_service_account(ts: &ValidatedTrackingServer) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(
            &ts.owner,
            node_sampler_name(&ts.owner.name),
            node_sampler_labels(ts),
        ),
        ..Default::default()
    }
}

pub fn build_node_sampler_daemonset(ts: &ValidatedTrackingServer, sampler: &NodeSampler) -> DaemonSet {
    let name = node_sampler_name(&ts.owner.name);
    let selector = labels::selector(
        labels::APP_NODE_SAMPLER,
        &ts.owner.name,
        labels::COMPONENT_NODE_SAMPLER,
    );
    let annotations = (!(ts.monitoring_api && sampler.service_monitor.is_some())).then(|| {
        [
            (labels::PROMETHEUS_PATH, ports::METRICS_PATH.to_owned()),
            (labels::PROMETHEUS_PORT, ports::NODE_SAMPLER.to_string()),
            (labels::PROMETHEUS_SCRAPE, "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    });
    let container = Container {
        name: NODE_SAMPLER_CONTAINER.to_owned(),
        image: Some(sampler.image.clone()),
        args: Some(node_sampler_args(ts, sampler)),
        env: Some(vec![
            EnvVar {
                name: "NODE_NAME".to_owned(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: "spec.nodeName".to_owned(),
                    }),
                    ..Default::default()
                }),
            },
            env("NVIDIA_DRIVER_CAPABILITIES", "utility"),
            env("NVIDIA_VISIBLE_DEVICES", "all"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(ports::METRICS.to_owned()),
            container_port: ports::NODE_SAMPLER,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(ports::METRICS_PATH.to_owned()),
                port: IntOrString::String(ports::METRICS.to_owned()),
                ..Default::default()
            }),
            period_seconds: Some(30),
            timeout_seconds: Some(10),
            ..Default::default()
        }),
        resources: Some(
            sampler
                .resources
                .clone()
                .unwrap_or_else(|| resources(&[("cpu", "50m"), ("memory", "64Mi")], &[("memory", "256Mi")])),
        ),
        security_context: Some(security::node_sampler_container()),
        volume_mounts: Some(vec![
            read_only_mount("host-root", "/host/root", Some("HostToContainer")),
            read_only_mount("host-sys", "/host/sys", None),
            read_only_mount("pod-resources", &sampler.pod_resources_path, None),
        ]),
        ..Default::default()
    };
    DaemonSet {
        metadata: child_meta(&ts.owner, name, node_sampler_labels(ts)),
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: None,
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(node_sampler_labels(ts)),
                    annotations,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(true),
                    containers: vec![container],
                    host_pid: Some(true),
                    node_selector: Some(sampler.node_selector.clone()).filter(|s| !s.is_empty()),
                    priority_class_name: sampler.priority_class_name.clone(),
                    runtime_class_name: sampler.runtime_class_name.clone(),
                    security_context: Some(security::node_sampler_pod()),
                    service_account_name: Some(node_sampler_name(&ts.owner.name)),
                    tolerations: Some(sampler.tolerations.clone()).filter(|t| !t.is_empty()),
                    volumes: Some(vec![
                        host_path("host-root", "/"),
                        host_path("host-sys", "/sys"),
                        host_path("pod-resources", &sampler.pod_resources_path),
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    }
}
