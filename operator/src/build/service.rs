//! Services: the tracking server and its dedicated artifact server (`http` 5000), the model (`http` 8000, `metrics` 8001) and the
//! node sampler (`metrics` 9400, headless).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    artifact_server_labels, child_meta, labels, model_labels, node_sampler_labels, node_sampler_name, ports,
    server_labels,
};
use crate::validate::{ValidatedModelDeployment, ValidatedTrackingServer, artifact_server_name};

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

pub fn build_tracking_server_service(ts: &ValidatedTrackingServer) -> Service {
    Service {
        metadata: child_meta(&ts.owner, ts.owner.name.clone(), server_labels(ts)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::selector(
                labels::APP_SERVER,
                &ts.owner.name,
                labels::COMPONENT_TRACKING_SERVER,
            )),
            ports: Some(vec![port(ports::HTTP, ports::SERVER)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The dedicated artifact server's Service `<name>-artifacts` (`http` 5000), selecting only the
/// artifact server pods.
pub fn build_artifact_server_service(ts: &ValidatedTrackingServer) -> Option<Service> {
    ts.artifact_server.as_ref()?;
    Some(Service {
        metadata: child_meta(
            &ts.owner,
            artifact_server_name(&ts.owner.name),
            artifact_server_labels(ts),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::selector(
                labels::APP_SERVER,
                &ts.owner.name,
                labels::COMPONENT_ARTIFACTS,
            )),
            ports: Some(vec![port(ports::HTTP, ports::SERVER)]),
            ..Default::default()
        }),
        status: None,
    })
}

/// Headless, so Prometheus scrapes every sampler pod and `kubectl get endpoints` lists nodes.
pub fn build_node_sampler_service(ts: &ValidatedTrackingServer) -> Service {
    Service {
        metadata: child_meta(
            &ts.owner,
            node_sampler_name(&ts.owner.name),
            node_sampler_labels(ts),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: Some("None".to_owned()),
            selector: Some(labels::selector(
                labels::APP_NODE_SAMPLER,
                &ts.owner.name,
                labels::COMPONENT_NODE_SAMPLER,
            )),
            ports: Some(vec![port(ports::METRICS, ports::NODE_SAMPLER)]),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn build_model_service(md: &ValidatedModelDeployment) -> Service {
    Service {
        metadata: child_meta(&md.owner, md.owner.name.clone(), model_labels(md)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::selector(
                labels::APP_MODEL,
                &md.owner.name,
                labels::COMPONENT_MODEL_SERVER,
            )),
            ports: Some(vec![
                port(ports::HTTP, ports::SIDECAR_HTTP),
                port(ports::METRICS, ports::SIDECAR_METRICS),
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The traffic-split Services of a canary behind a weighted HTTPRoute: `<name>-stable` and
/// `<name>-canary`, each selecting one track's pods. Their component is not the model server's,
/// so the ServiceMonitor does not scrape the pods twice.
pub fn build_track_services(md: &ValidatedModelDeployment) -> Vec<Service> {
    [
        (super::stable_name(&md.owner.name), labels::TRACK_STABLE),
        (super::canary_name(&md.owner.name), labels::TRACK_CANARY),
    ]
    .into_iter()
    .map(|(name, track)| {
        let mut selector =
            labels::selector(labels::APP_MODEL, &md.owner.name, labels::COMPONENT_MODEL_SERVER);
        selector.insert(labels::TRACK.to_owned(), track.to_owned());
        let mut meta_labels =
            labels::standard(labels::APP_MODEL, &md.owner.name, labels::COMPONENT_TRAFFIC_SPLIT);
        meta_labels.insert(labels::TRACK.to_owned(), track.to_owned());
        Service {
            metadata: child_meta(&md.owner, name, meta_labels),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                selector: Some(selector),
                ports: Some(vec![port(ports::HTTP, ports::SIDECAR_HTTP)]),
                ..Default::default()
            }),
            status: None,
        }
    })
    .collect()
}
