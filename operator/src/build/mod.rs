//! The build stage: pure functions from a validated spec to the Kubernetes objects that should
//! exist. Output is deterministic (sorted maps and lists, no timestamps or random names), so
//! applying it twice changes nothing.

pub mod autoscaler;
pub mod config_map;
pub mod daemonset;
pub mod deployment;
pub mod labels;
pub use crate::ports;
pub mod prometheus_rule;
pub mod pvc;
pub mod security;
pub mod service;
pub mod service_monitor;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::model_deployment::AutoscalingEngine;
pub use crate::validate::artifact_server_name;
use crate::validate::{Owner, ValidatedModelDeployment, ValidatedTrackingServer};
pub use autoscaler::ScaledObject;
pub use prometheus_rule::PrometheusRule;
pub use service_monitor::ServiceMonitor;
pub use workload::HttpRoute;

/// Every object one custom resource should own, by kind, each list sorted by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChildObjects {
    pub persistent_volume_claims: Vec<PersistentVolumeClaim>,
    pub config_maps: Vec<ConfigMap>,
    pub deployments: Vec<Deployment>,
    pub service_accounts: Vec<ServiceAccount>,
    pub daemon_sets: Vec<DaemonSet>,
    pub services: Vec<Service>,
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    pub horizontal_pod_autoscalers: Vec<HorizontalPodAutoscaler>,
    pub scaled_objects: Vec<ScaledObject>,
    pub ingresses: Vec<Ingress>,
    pub http_routes: Vec<HttpRoute>,
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

/// Name of the node sampler's DaemonSet, ServiceAccount, Service and ServiceMonitor.
pub fn node_sampler_name(tracking_server: &str) -> String {
    format!("{tracking_server}-node-sampler")
}

/// Everything a TrackingServer owns.
pub fn tracking_server(ts: &ValidatedTrackingServer) -> ChildObjects {
    let mut children = ChildObjects {
        persistent_volume_claims: pvc::build_tracking_server_pvcs(ts),
        config_maps: config_map::build_auth_config_map(ts).into_iter().collect(),
        deployments: vec![deployment::build_tracking_server_deployment(ts)],
        services: vec![service::build_tracking_server_service(ts)],
        ..Default::default()
    };
    children
        .deployments
        .extend(deployment::build_artifact_server_deployment(ts));
    children
        .services
        .extend(service::build_artifact_server_service(ts));
    let meta = || child_meta(&ts.owner, ts.owner.name.clone(), server_labels(ts));
    if let Some(budget) = &ts.disruption_budget {
        children
            .pod_disruption_budgets
            .push(workload::build_disruption_budget(
                meta(),
                labels::selector(
                    labels::APP_SERVER,
                    &ts.owner.name,
                    labels::COMPONENT_TRACKING_SERVER,
                ),
                budget,
            ));
    }
    if let Some(exposure) = &ts.exposure {
        workload::expose(
            &mut children,
            meta(),
            exposure,
            ts.gateway_api,
            (ports::HTTP, ports::SERVER),
        );
    }
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
        if ts.artifact_server.is_some() {
            children
                .service_monitors
                .push(service_monitor::build_service_monitor(
                    child_meta(
                        &ts.owner,
                        artifact_server_name(&ts.owner.name),
                        artifact_server_labels(ts),
                    ),
                    labels::selector(labels::APP_SERVER, &ts.owner.name, labels::COMPONENT_ARTIFACTS),
                    ports::HTTP,
                    settings,
                    false,
                ));
        }
    }
    if let Some(sampler) = &ts.node_sampler {
        children
            .service_accounts
            .push(daemonset::build_node_sampler_service_account(ts));
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
/// Name of the canary's Deployment (and of its traffic-split Service).
pub fn canary_name(name: &str) -> String {
    format!("{name}-canary")
}

/// Name of the stable pods' traffic-split Service.
pub fn stable_name(name: &str) -> String {
    format!("{name}-stable")
}

pub fn model_deployment(md: &ValidatedModelDeployment) -> ChildObjects {
    let mut children = ChildObjects {
        deployments: vec![deployment::build_model_deployment(md)],
        services: vec![service::build_model_service(md)],
        ..Default::default()
    };
    children
        .deployments
        .extend(deployment::build_canary_deployment(md));
    // Without the model version: these children do not change when the model rolls.
    let meta = || {
        child_meta(
            &md.owner,
            md.owner.name.clone(),
            labels::standard(labels::APP_MODEL, &md.owner.name, labels::COMPONENT_MODEL_SERVER),
        )
    };
    if let Some(budget) = &md.disruption_budget {
        children
            .pod_disruption_budgets
            .push(workload::build_disruption_budget(
                meta(),
                labels::selector(labels::APP_MODEL, &md.owner.name, labels::COMPONENT_MODEL_SERVER),
                budget,
            ));
    }
    // An autoscaler whose API is missing (KEDA) is not created at all; the Autoscaling condition
    // says why.
    if let Some(autoscaler) = md.autoscaler.as_ref().filter(|a| a.available) {
        match autoscaler.engine {
            AutoscalingEngine::Hpa => children
                .horizontal_pod_autoscalers
                .push(autoscaler::build_hpa(meta(), autoscaler)),
            AutoscalingEngine::Keda => children
                .scaled_objects
                .push(autoscaler::build_scaled_object(meta(), autoscaler)),
        }
    }
    if let Some(exposure) = &md.exposure {
        workload::expose(
            &mut children,
            meta(),
            exposure,
            md.gateway_api,
            (ports::HTTP, ports::SIDECAR_HTTP),
        );
    }
    // A canary behind a Gateway: one Service per track and exact weights on the route.
    if let Some(canary) = md.canary.as_ref().filter(|_| md.weighted_route()) {
        children.services.extend(service::build_track_services(md));
        for route in &mut children.http_routes {
            for rule in &mut route.spec.rules {
                rule.backend_refs = vec![
                    workload::HttpBackendRef {
                        name: stable_name(&md.owner.name),
                        port: ports::SIDECAR_HTTP,
                        weight: Some(100 - canary.weight.clamp(0, 100)),
                    },
                    workload::HttpBackendRef {
                        name: canary_name(&md.owner.name),
                        port: ports::SIDECAR_HTTP,
                        weight: Some(canary.weight.clamp(0, 100)),
                    },
                ];
            }
        }
    }
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

/// Labels of the dedicated artifact server's objects: the tracking server's app and instance,
/// component `artifacts`.
pub(crate) fn artifact_server_labels(ts: &ValidatedTrackingServer) -> BTreeMap<String, String> {
    labels::standard(labels::APP_SERVER, &ts.owner.name, labels::COMPONENT_ARTIFACTS)
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
    by_name(&mut children.config_maps, |o| o.metadata.name.as_ref());
    by_name(&mut children.deployments, |o| o.metadata.name.as_ref());
    by_name(&mut children.service_accounts, |o| o.metadata.name.as_ref());
    by_name(&mut children.daemon_sets, |o| o.metadata.name.as_ref());
    by_name(&mut children.services, |o| o.metadata.name.as_ref());
    by_name(&mut children.pod_disruption_budgets, |o| o.metadata.name.as_ref());
    by_name(&mut children.horizontal_pod_autoscalers, |o| {
        o.metadata.name.as_ref()
    });
    by_name(&mut children.scaled_objects, |o| o.metadata.name.as_ref());
    by_name(&mut children.ingresses, |o| o.metadata.name.as_ref());
    by_name(&mut children.http_routes, |o| o.metadata.name.as_ref());
    by_name(&mut children.service_monitors, |o| o.metadata.name.as_ref());
    by_name(&mut children.prometheus_rules, |o| o.metadata.name.as_ref());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::model_deployment::ResolvedModel;
    use crate::crd::{ModelDeployment, TrackingServer};
    use crate::validate::{self, Defaults, TrackingAccess};
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use serde_json::json;

    pub(crate) const UID: &str = "11111111-2222-4333-8444-555555555555";

    pub(crate) fn ts(spec: serde_json::Value) -> TrackingServer {
        serde_json::from_value(json!({
            "apiVersion": "mlkube.io/v1alpha1", "kind": "TrackingServer",
            "metadata": {"name": "mlflow", "namespace": "ml", "uid": UID, "generation": 4},
            "spec": spec,
        }))
        .unwrap()
    }

    pub(crate) fn md(spec: serde_json::Value) -> ModelDeployment {
        serde_json::from_value(json!({
            "apiVersion": "mlkube.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "churn", "namespace": "ml", "uid": UID, "generation": 2},
            "spec": spec,
        }))
        .unwrap()
    }

    fn resolved() -> ResolvedModel {
        ResolvedModel {
            reference: "models:/Churn Model@champion".into(),
            name: "Churn Model".into(),
            version: "12".into(),
            run_id: Some("abc123".into()),
            source: None,
        }
    }

    fn vts(spec: serde_json::Value, monitoring: bool) -> ValidatedTrackingServer {
        validate::validate_tracking_server(&ts(spec), monitoring, &Defaults::for_version("1.2.3")).unwrap()
    }

    fn vmd(spec: serde_json::Value, monitoring: bool) -> ValidatedModelDeployment {
        let mut base = json!({"trackingServerRef": {"name": "mlflow"}, "model": {"name": "Churn Model", "alias": "champion"}});
        for (k, v) in spec.as_object().unwrap() {
            base[k] = v.clone();
        }
        validate::validate_model_deployment(
            &md(base),
            &resolved(),
            TrackingAccess {
                uri: "http://mlflow.ml.svc:5000".into(),
                ..Default::default()
            },
            monitoring,
            &Defaults::for_version("1.2.3"),
        )
        .unwrap()
    }

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec.template.spec.as_ref().unwrap()
    }

    fn all_metas(children: &ChildObjects) -> Vec<&ObjectMeta> {
        let mut metas: Vec<&ObjectMeta> = Vec::new();
        metas.extend(children.persistent_volume_claims.iter().map(|o| &o.metadata));
        metas.extend(children.config_maps.iter().map(|o| &o.metadata));
        metas.extend(children.deployments.iter().map(|o| &o.metadata));
        metas.extend(children.service_accounts.iter().map(|o| &o.metadata));
        metas.extend(children.daemon_sets.iter().map(|o| &o.metadata));
        metas.extend(children.services.iter().map(|o| &o.metadata));
        metas.extend(children.pod_disruption_budgets.iter().map(|o| &o.metadata));
        metas.extend(children.horizontal_pod_autoscalers.iter().map(|o| &o.metadata));
        metas.extend(children.scaled_objects.iter().map(|o| &o.metadata));
        metas.extend(children.ingresses.iter().map(|o| &o.metadata));
        metas.extend(children.http_routes.iter().map(|o| &o.metadata));
        metas.extend(children.service_monitors.iter().map(|o| &o.metadata));
        metas.extend(children.prometheus_rules.iter().map(|o| &o.metadata));
        metas
    }

    #[test]
    fn every_child_is_owned_and_labelled() {
        let server = tracking_server(&vts(json!({"nodeSampler": {"enabled": true}}), true));
        let model = model_deployment(&vmd(json!({}), true));
        for (children, kind) in [(&server, "TrackingServer"), (&model, "ModelDeployment")] {
            let metas = all_metas(children);
            assert!(metas.len() >= 4, "{kind}: {metas:?}");
            for meta in metas {
                let owner = &meta.owner_references.as_ref().unwrap()[0];
                assert_eq!(owner.kind, kind);
                assert_eq!(owner.uid, UID);
                assert_eq!(owner.controller, Some(true));
                assert_eq!(owner.block_owner_deletion, Some(true));
                assert_eq!(meta.namespace.as_deref(), Some("ml"));
                let labels = meta.labels.as_ref().unwrap();
                for key in [
                    labels::NAME,
                    labels::INSTANCE,
                    labels::COMPONENT,
                    labels::MANAGED_BY,
                ] {
                    assert!(labels.contains_key(key), "{kind} {:?} lacks {key}", meta.name);
                }
                assert_eq!(labels[labels::MANAGED_BY], "mlkube");
            }
        }
        let labels = model.deployments[0]
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels[labels::MODEL_NAME], "Churn-Model");
        assert_eq!(labels[labels::MODEL_VERSION], "12");
    }

    /// Tracking servers on every artifact store and credential mode.
    pub(crate) fn every_store() -> Vec<serde_json::Value> {
        let pg = json!({"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}});
        vec![
            json!({}),
            json!({"replicas": 3, "backendStore": pg, "artifactStore": {"s3": {"bucket": "models", "credentialsSecretRef": {"name": "s3"}}}}),
            json!({"replicas": 3, "backendStore": pg, "artifactStore": {"s3": {"bucket": "models", "access": "Direct", "credentialsSecretRef": {"name": "s3"}}}}),
            json!({"replicas": 3, "backendStore": pg, "serviceAccountName": "mlflow-irsa", "artifactStore": {"s3": {"bucket": "models", "region": "us-west-2"}}}),
            json!({"replicas": 2, "backendStore": pg, "artifactStore": {"gcs": {"bucket": "ml-artifacts", "credentialsSecretRef": {"name": "gcs"}}}}),
            json!({"replicas": 2, "backendStore": pg, "serviceAccountName": "mlflow-gcs", "artifactStore": {"gcs": {"bucket": "ml-artifacts"}}}),
            json!({"replicas": 2, "backendStore": pg, "artifactStore": {"azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az", "sasTokenKey": "sas"}}}}),
            json!({"replicas": 2, "backendStore": pg, "serviceAccountName": "mlflow-azure", "artifactStore": {"azure": {"account": "mlstore", "container": "artifacts", "dfs": true}}}),
            json!({"replicas": 2, "backendStore": pg, "artifactStore": {"s3": {"bucket": "models", "credentialsSecretRef": {"name": "s3"}}, "dedicatedServer": {}}}),
            json!({"replicas": 2, "backendStore": pg, "artifactStore": {"gcs": {"bucket": "ml-artifacts", "credentialsSecretRef": {"name": "gcs"}}, "dedicatedServer": {"replicas": 4}}}),
        ]
    }

    #[test]
    fn workload_pods_meet_the_restricted_standard() {
        let mut deployments: Vec<Deployment> = every_store()
            .into_iter()
            .flat_map(|spec| tracking_server(&vts(spec, true)).deployments)
            .collect();
        deployments.extend(model_deployment(&vmd(json!({}), true)).deployments);
        for d in &deployments {
            let pod = pod(d);
            let psc = pod.security_context.as_ref().unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_ne!(psc.run_as_user, Some(0));
            assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
            // A serviceAccountName (workload identity) still mounts no Kubernetes API token.
            assert_eq!(pod.automount_service_account_token, Some(false));
            assert!(pod.host_pid.is_none() && pod.host_network.is_none());
            for volume in pod.volumes.iter().flatten() {
                assert!(volume.host_path.is_none(), "{:?}", volume.name);
            }
            for c in &pod.containers {
                let sc = c.security_context.as_ref().unwrap();
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
                assert_eq!(
                    sc.capabilities.as_ref().unwrap().drop,
                    Some(vec!["ALL".to_owned()])
                );
                assert!(sc.capabilities.as_ref().unwrap().add.is_none());
            }
        }
    }

    #[test]
    fn node_sampler_is_privileged_only_where_it_must_be() {
        let v = vts(
            json!({"nodeSampler": {"enabled": true, "runtimeClassName": "nvidia", "interval": "10s",
                   "nodeSelector": {"nvidia.com/gpu.present": "true"},
                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}}),
            true,
        );
        let children = tracking_server(&v);
        let ds = &children.daemon_sets[0];
        assert_eq!(ds.metadata.name.as_deref(), Some("mlflow-node-sampler"));
        let pod = ds.spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.host_pid, Some(true));
        // Runs as its own ServiceAccount, token mounted: it watches the pods on its node.
        assert_eq!(pod.service_account_name.as_deref(), Some("mlflow-node-sampler"));
        assert_eq!(pod.automount_service_account_token, Some(true));
        let sa = &children.service_accounts[0];
        assert_eq!(sa.metadata.name.as_deref(), Some("mlflow-node-sampler"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some("ml"));
        assert_eq!(sa.metadata.labels, ds.metadata.labels);
        assert_eq!(sa.metadata.owner_references, ds.metadata.owner_references);
        assert_eq!(pod.runtime_class_name.as_deref(), Some("nvidia"));
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("nvidia.com/gpu")
        );
        assert_eq!(
            pod.node_selector.as_ref().unwrap()["nvidia.com/gpu.present"],
            "true"
        );
        let c = &pod.containers[0];
        for m in c.volume_mounts.as_ref().unwrap() {
            assert_eq!(m.read_only, Some(true), "{}", m.name);
        }
        let env = c.env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "NVIDIA_VISIBLE_DEVICES" && e.value.as_deref() == Some("all"))
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "--listen",
                "0.0.0.0:9400",
                "--interval",
                "10",
                "--node-name",
                "$(NODE_NAME)",
                "--tracking-uri-default",
                "http://mlflow.ml.svc:5000"
            ]
        );
        let svc = children
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("mlflow-node-sampler"))
            .unwrap();
        assert_eq!(svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 9400);
        let sm = children
            .service_monitors
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("mlflow-node-sampler"))
            .unwrap();
        assert_eq!(sm.spec.endpoints[0].honor_labels, Some(true));
    }

    #[test]
    fn tracking_server_args_follow_the_design() {
        let sqlite = vts(
            json!({"metrics": {"statistics": {"enabled": true, "updateInterval": "15m"}}}),
            true,
        );
        assert_eq!(
            deployment::tracking_server_args(&sqlite),
            [
                "--host",
                "0.0.0.0",
                "--port",
                "5000",
                "--backend-store-uri",
                "sqlite:////data/mlflow.db",
                "--default-artifact-root",
                "mlflow-artifacts:/",
                "--artifacts-destination",
                "/artifacts",
                "--expose-prometheus",
                "/tmp/prometheus",
                "--enable-statistics",
                "--statistics-update-interval",
                "900"
            ]
        );
        let d = deployment::build_tracking_server_deployment(&sqlite);
        assert_eq!(
            d.spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("Recreate")
        );
        let pg = vts(
            json!({"replicas": 3, "backendStore": {"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}},
                   "artifactStore": {"s3": {"bucket": "models", "prefix": "prod", "credentialsSecretRef": {"name": "s3"}}},
                   "auth": {"adminSecretRef": {"name": "admin"}}}),
            true,
        );
        let args = deployment::tracking_server_args(&pg);
        assert!(
            !args.iter().any(|a| a.contains("postgres")),
            "the URI never goes on the command line"
        );
        assert!(
            args.windows(4).any(|w| w
                == [
                    "--default-artifact-root",
                    "mlflow-artifacts:/",
                    "--artifacts-destination",
                    "s3://models/prod"
                ]),
            "S3 is proxied by default: {args:?}"
        );
        assert!(args.windows(2).any(|w| w == ["--app-name", "basic-auth"]));
        assert!(
            !args.iter().any(|a| a == "--no-ui" || a == "--static-prefix"),
            "the UI is on by default"
        );
        let no_ui = vts(json!({"ui": {"enabled": false}}), true);
        assert!(
            deployment::tracking_server_args(&no_ui)
                .iter()
                .any(|a| a == "--no-ui")
        );
        let prefixed = vts(json!({"ui": {"staticPrefix": "/mlflow"}}), true);
        assert!(
            deployment::tracking_server_args(&prefixed)
                .windows(2)
                .any(|w| w == ["--static-prefix", "/mlflow"])
        );
        for bad in ["/mlflow/", "mlflow", "/a/../b", "/a//b", "/a b"] {
            let err = validate::validate_tracking_server(
                &ts(json!({"ui": {"staticPrefix": bad}})),
                true,
                &Defaults::for_version("1.2.3"),
            );
            assert!(err.is_err(), "{bad} accepted");
        }
        let d = deployment::build_tracking_server_deployment(&pg);
        assert_eq!(
            d.spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("RollingUpdate")
        );
        assert_eq!(d.spec.replicas, Some(3));
        let env = pod(&d).containers[0].env.clone().unwrap();
        for e in &env {
            assert!(e.value.is_none() || !e.name.contains("PASSWORD"), "{}", e.name);
        }
        let uri = env.iter().find(|e| e.name == "MLKUBE_BACKEND_STORE_URI").unwrap();
        let secret = uri.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((secret.name.as_str(), secret.key.as_str()), ("db", "uri"));
        assert!(
            env.iter()
                .any(|e| e.name == "MLKUBE_ADMIN_PASSWORD" && e.value_from.is_some())
        );
        assert!(
            env.iter()
                .any(|e| e.name == "AWS_SECRET_ACCESS_KEY" && e.value_from.is_some())
        );
        assert!(pvc::build_tracking_server_pvcs(&pg).is_empty());
        let svc = service::build_tracking_server_service(&pg);
        let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 5000));
    }

    fn postgres(artifact_store: serde_json::Value, extra: serde_json::Value) -> ValidatedTrackingServer {
        let mut spec = json!({"replicas": 3,
            "backendStore": {"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}},
            "artifactStore": artifact_store});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        vts(spec, true)
    }

    /// An env var as (name, literal value, (Secret, key)).
    type Env = (String, Option<String>, Option<(String, String)>);

    fn server_env(d: &Deployment) -> Vec<Env> {
        pod(d).containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| {
                let secret = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .map(|r| (r.name.clone(), r.key.clone()));
                (e.name.clone(), e.value.clone(), secret)
            })
            .collect()
    }

    fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        args.windows(2).find(|w| w[0] == name).map(|w| w[1].as_str())
    }

    #[test]
    fn every_destination_reaches_the_server_command_line() {
        let cases = [
            (
                json!({"pvc": {"accessModes": ["ReadWriteMany"]}}),
                "mlflow-artifacts:/",
                Some("/artifacts"),
            ),
            (
                json!({"s3": {"bucket": "models"}}),
                "mlflow-artifacts:/",
                Some("s3://models"),
            ),
            (
                json!({"s3": {"bucket": "models", "prefix": "team/a", "access": "Proxied", "credentialsSecretRef": {"name": "s3"}}}),
                "mlflow-artifacts:/",
                Some("s3://models/team/a"),
            ),
            (
                json!({"s3": {"bucket": "models", "prefix": "prod", "access": "Direct", "credentialsSecretRef": {"name": "s3"}}}),
                "s3://models/prod",
                None,
            ),
            (
                json!({"gcs": {"bucket": "ml-artifacts", "prefix": "prod"}}),
                "mlflow-artifacts:/",
                Some("gs://ml-artifacts/prod"),
            ),
            (
                json!({"azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az"}}}),
                "mlflow-artifacts:/",
                Some("wasbs://artifacts@mlstore.blob.core.windows.net"),
            ),
            (
                json!({"azure": {"account": "mlstore", "container": "artifacts", "prefix": "prod", "dfs": true,
                                 "credentialsSecretRef": {"name": "az"}}}),
                "mlflow-artifacts:/",
                Some("abfss://artifacts@mlstore.dfs.core.windows.net/prod"),
            ),
        ];
        for (store, root, destination) in cases {
            let v = postgres(store.clone(), json!({}));
            let args = deployment::tracking_server_args(&v);
            assert_eq!(flag(&args, "--default-artifact-root"), Some(root), "{store}");
            assert_eq!(flag(&args, "--artifacts-destination"), destination, "{store}");
            let d = deployment::build_tracking_server_deployment(&v);
            assert_eq!(
                d.spec.strategy.as_ref().unwrap().type_.as_deref(),
                Some("RollingUpdate"),
                "{store}: every replica sees the artifacts, so pods roll"
            );
            assert!(pvc::build_tracking_server_pvcs(&v).len() <= 1, "{store}");
        }
    }

    #[test]
    fn proxied_s3_credentials_come_from_the_secret() {
        let v = postgres(
            json!({"s3": {"bucket": "models", "prefix": "prod", "endpoint": "http://minio.storage:9000", "region": "eu-west-1",
                          "credentialsSecretRef": {"name": "s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"}}}),
            json!({}),
        );
        let env = server_env(&deployment::build_tracking_server_deployment(&v));
        let s = |n: &str, k: &str| Some((n.to_owned(), k.to_owned()));
        assert_eq!(
            env,
            [
                ("MLKUBE_BACKEND_STORE_URI".to_owned(), None, s("db", "uri")),
                ("AWS_ACCESS_KEY_ID".to_owned(), None, s("s3", "id")),
                ("AWS_SECRET_ACCESS_KEY".to_owned(), None, s("s3", "secret")),
                (
                    "AWS_DEFAULT_REGION".to_owned(),
                    Some("eu-west-1".to_owned()),
                    None
                ),
                ("AWS_REGION".to_owned(), Some("eu-west-1".to_owned()), None),
                (
                    "MLFLOW_S3_ENDPOINT_URL".to_owned(),
                    Some("http://minio.storage:9000".to_owned()),
                    None
                ),
            ]
        );
        assert!(v.artifacts.direct_s3().is_none(), "model servers get nothing");
        // Workload identity: no keys at all, the pods run as the annotated ServiceAccount.
        let irsa = postgres(
            json!({"s3": {"bucket": "models"}}),
            json!({"serviceAccountName": "mlflow-irsa"}),
        );
        let d = deployment::build_tracking_server_deployment(&irsa);
        assert!(server_env(&d).iter().all(|(name, ..)| !name.starts_with("AWS_")));
        assert_eq!(pod(&d).service_account_name.as_deref(), Some("mlflow-irsa"));
        assert_eq!(pod(&d).automount_service_account_token, Some(false));
    }

    #[test]
    fn direct_s3_is_todays_behaviour() {
        let v = postgres(
            json!({"s3": {"bucket": "models", "access": "Direct", "endpoint": "http://minio:9000", "credentialsSecretRef": {"name": "s3"}}}),
            json!({}),
        );
        let direct = v.artifacts.direct_s3().unwrap();
        assert_eq!(direct.credentials.name, "s3");
        assert_eq!(direct.endpoint.as_deref(), Some("http://minio:9000"));
        let env = server_env(&deployment::build_tracking_server_deployment(&v));
        assert!(
            env.iter()
                .any(|(n, _, s)| n == "AWS_SECRET_ACCESS_KEY" && s.is_some())
        );
    }

    #[test]
    fn gcs_key_file_is_mounted_read_only() {
        let v = postgres(
            json!({"gcs": {"bucket": "ml-artifacts", "credentialsSecretRef": {"name": "gcs", "key": "sa.json"}}}),
            json!({}),
        );
        let d = deployment::build_tracking_server_deployment(&v);
        let env = server_env(&d);
        assert!(env.contains(&(
            "GOOGLE_APPLICATION_CREDENTIALS".to_owned(),
            Some("/etc/mlkube/gcs/key.json".to_owned()),
            None
        )));
        let volume = pod(&d)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "gcs-credentials")
            .unwrap();
        let secret = volume.secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("gcs"));
        let item = &secret.items.as_ref().unwrap()[0];
        assert_eq!((item.key.as_str(), item.path.as_str()), ("sa.json", "key.json"));
        assert_eq!(secret.default_mode, Some(0o440));
        let mount = pod(&d).containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "gcs-credentials")
            .unwrap();
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/etc/mlkube/gcs", Some(true))
        );
        // GKE Workload Identity: no key, no volume, the ServiceAccount.
        let wi = postgres(
            json!({"gcs": {"bucket": "ml-artifacts"}}),
            json!({"serviceAccountName": "mlflow-gcs"}),
        );
        let d = deployment::build_tracking_server_deployment(&wi);
        assert!(
            server_env(&d)
                .iter()
                .all(|(n, ..)| n != "GOOGLE_APPLICATION_CREDENTIALS")
        );
        assert!(
            pod(&d)
                .volumes
                .iter()
                .flatten()
                .all(|v| v.name != "gcs-credentials")
        );
        assert_eq!(pod(&d).service_account_name.as_deref(), Some("mlflow-gcs"));
    }

    #[test]
    fn azure_credentials_and_workload_identity() {
        let key = postgres(
            json!({"azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az"}}}),
            json!({}),
        );
        let d = deployment::build_tracking_server_deployment(&key);
        assert!(server_env(&d).contains(&(
            "AZURE_STORAGE_ACCOUNT_KEY".to_owned(),
            None,
            Some(("az".to_owned(), "AZURE_STORAGE_ACCOUNT_KEY".to_owned()))
        )));
        let labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert!(!labels.contains_key(deployment::AZURE_WORKLOAD_IDENTITY_LABEL));
        let sas = postgres(
            json!({"azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az", "sasTokenKey": "sas"}}}),
            json!({}),
        );
        assert!(
            server_env(&deployment::build_tracking_server_deployment(&sas)).contains(&(
                "AZURE_STORAGE_SAS_TOKEN".to_owned(),
                None,
                Some(("az".to_owned(), "sas".to_owned()))
            ))
        );
        let wi = postgres(
            json!({"azure": {"account": "mlstore", "container": "artifacts", "dfs": true}}),
            json!({"serviceAccountName": "mlflow-azure"}),
        );
        let d = deployment::build_tracking_server_deployment(&wi);
        assert!(server_env(&d).iter().all(|(n, ..)| !n.starts_with("AZURE_")));
        assert_eq!(pod(&d).service_account_name.as_deref(), Some("mlflow-azure"));
        let labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels[deployment::AZURE_WORKLOAD_IDENTITY_LABEL], "true");
        assert!(
            !d.spec
                .selector
                .match_labels
                .as_ref()
                .unwrap()
                .contains_key(deployment::AZURE_WORKLOAD_IDENTITY_LABEL),
            "the selector is immutable and never carries it"
        );
    }

    fn named<'a>(items: &'a [Deployment], name: &str) -> &'a Deployment {
        items
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    }

    fn pod_labels_of(d: &Deployment) -> BTreeMap<String, String> {
        d.spec.template.metadata.as_ref().unwrap().labels.clone().unwrap()
    }

    fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    #[test]
    fn a_dedicated_artifact_server_takes_the_store_off_the_tracking_server() {
        let v = postgres(
            json!({"s3": {"bucket": "models", "prefix": "prod", "endpoint": "http://minio.storage:9000", "region": "eu-west-1",
                          "credentialsSecretRef": {"name": "s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"}},
                   "dedicatedServer": {}}),
            json!({"serviceAccountName": "mlflow-irsa",
                   "scheduling": {"nodeSelector": {"pool": "ml"},
                                  "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                                                 "whenUnsatisfiable": "ScheduleAnyway"}]}}),
        );
        let children = tracking_server(&v);
        let names = |items: Vec<Option<String>>| items.into_iter().flatten().collect::<Vec<_>>();
        assert_eq!(
            names(
                children
                    .deployments
                    .iter()
                    .map(|d| d.metadata.name.clone())
                    .collect()
            ),
            ["mlflow", "mlflow-artifacts"]
        );
        assert_eq!(
            names(
                children
                    .services
                    .iter()
                    .map(|d| d.metadata.name.clone())
                    .collect()
            ),
            ["mlflow", "mlflow-artifacts"]
        );
        assert_eq!(
            names(
                children
                    .service_monitors
                    .iter()
                    .map(|d| d.metadata.name.clone())
                    .collect()
            ),
            ["mlflow", "mlflow-artifacts"]
        );
        assert!(children.persistent_volume_claims.is_empty());

        // The tracking server records the artifact server in new experiments and never touches
        // the store: no destination, no credentials.
        let tracking = named(&children.deployments, "mlflow");
        assert_eq!(
            pod(tracking).containers[0].args.as_ref().unwrap(),
            &[
                "--host",
                "0.0.0.0",
                "--port",
                "5000",
                "--default-artifact-root",
                "mlflow-artifacts://mlflow-artifacts.ml.svc:5000/",
                "--no-serve-artifacts",
                "--expose-prometheus",
                "/tmp/prometheus"
            ]
        );
        let s = |n: &str, k: &str| Some((n.to_owned(), k.to_owned()));
        assert_eq!(
            server_env(tracking),
            [("MLKUBE_BACKEND_STORE_URI".to_owned(), None, s("db", "uri"))]
        );

        // The artifact server: the proxy alone, with the store's credentials.
        let artifacts = named(&children.deployments, "mlflow-artifacts");
        let c = &pod(artifacts).containers[0];
        assert_eq!(c.name, "mlkube-server");
        assert_eq!(c.image.as_deref(), Some("ghcr.io/mlkube/mlkube-server:v1.2.3"));
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "--artifacts-only",
                "--host",
                "0.0.0.0",
                "--port",
                "5000",
                "--artifacts-destination",
                "s3://models/prod",
                "--expose-prometheus",
                "/tmp/prometheus"
            ]
        );
        assert_eq!(
            server_env(artifacts),
            [
                ("AWS_ACCESS_KEY_ID".to_owned(), None, s("s3", "id")),
                ("AWS_SECRET_ACCESS_KEY".to_owned(), None, s("s3", "secret")),
                (
                    "AWS_DEFAULT_REGION".to_owned(),
                    Some("eu-west-1".to_owned()),
                    None
                ),
                ("AWS_REGION".to_owned(), Some("eu-west-1".to_owned()), None),
                (
                    "MLFLOW_S3_ENDPOINT_URL".to_owned(),
                    Some("http://minio.storage:9000".to_owned()),
                    None
                ),
            ]
        );
        assert_eq!(artifacts.spec.replicas, Some(2), "the default");
        assert_eq!(
            artifacts.spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("RollingUpdate")
        );
        // The tracking pods' probes, security, resources, identity and placement.
        let t = &pod(tracking).containers[0];
        assert_eq!(c.readiness_probe, t.readiness_probe);
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/health")
        );
        assert_eq!(c.liveness_probe, t.liveness_probe);
        assert_eq!(c.security_context, t.security_context);
        assert_eq!(c.resources, t.resources);
        assert_eq!(c.ports, t.ports);
        assert_eq!(pod(artifacts).security_context, pod(tracking).security_context);
        assert_eq!(
            pod(artifacts).service_account_name.as_deref(),
            Some("mlflow-irsa")
        );
        assert_eq!(pod(artifacts).automount_service_account_token, Some(false));
        assert_eq!(pod(artifacts).node_selector, pod(tracking).node_selector);
        let spread = &pod(artifacts).topology_spread_constraints.as_ref().unwrap()[0];
        assert_eq!(
            spread.label_selector.as_ref().unwrap().match_labels,
            artifacts.spec.selector.match_labels,
            "a spread constraint spreads the artifact pods among themselves"
        );

        // Labels: each Service and ServiceMonitor selects its own pods only.
        let tracking_pods = pod_labels_of(tracking);
        let artifact_pods = pod_labels_of(artifacts);
        assert_eq!(artifact_pods[labels::COMPONENT], "artifacts");
        assert_eq!(tracking_pods[labels::COMPONENT], "tracking-server");
        let tracking_selector = tracking.spec.selector.match_labels.as_ref().unwrap();
        let artifact_selector = artifacts.spec.selector.match_labels.as_ref().unwrap();
        assert!(selects(tracking_selector, &tracking_pods) && !selects(tracking_selector, &artifact_pods));
        assert!(selects(artifact_selector, &artifact_pods) && !selects(artifact_selector, &tracking_pods));
        for (svc, sm, own, other) in [
            (0, 0, &tracking_pods, &artifact_pods),
            (1, 1, &artifact_pods, &tracking_pods),
        ] {
            let service = children.services[svc].spec.as_ref().unwrap();
            let selector = service.selector.as_ref().unwrap();
            assert!(
                selects(selector, own) && !selects(selector, other),
                "{selector:?}"
            );
            let port = &service.ports.as_ref().unwrap()[0];
            assert_eq!((port.name.as_deref(), port.port), (Some("http"), 5000));
            let monitor = &children.service_monitors[sm];
            let service_labels = children.services[svc].metadata.labels.as_ref().unwrap();
            let other_labels = children.services[1 - svc].metadata.labels.as_ref().unwrap();
            let monitored = monitor.spec.selector.match_labels.as_ref().unwrap();
            assert!(selects(monitored, service_labels) && !selects(monitored, other_labels));
            assert_eq!(monitor.spec.endpoints[0].port, "http");
        }
        let budget = children.pod_disruption_budgets[0].spec.as_ref().unwrap();
        assert!(!selects(
            budget.selector.as_ref().unwrap().match_labels.as_ref().unwrap(),
            &artifact_pods
        ));
    }

    #[test]
    fn a_dedicated_artifact_server_advertises_what_it_is_told() {
        let v = postgres(
            json!({"gcs": {"bucket": "ml-artifacts", "credentialsSecretRef": {"name": "gcs", "key": "sa.json"}},
                   "dedicatedServer": {"replicas": 5, "advertisedUrl": "artifacts.example.com:443",
                                       "resources": {"requests": {"cpu": "2"}}}}),
            json!({"ui": {"staticPrefix": "/mlflow"}}),
        );
        let children = tracking_server(&v);
        let tracking = named(&children.deployments, "mlflow");
        let args = pod(tracking).containers[0].args.clone().unwrap();
        assert_eq!(
            flag(&args, "--default-artifact-root"),
            Some("mlflow-artifacts://artifacts.example.com:443/")
        );
        assert_eq!(flag(&args, "--artifacts-destination"), None);
        // The GCS key is mounted where the store is reached, and only there.
        let has_key = |d: &Deployment| {
            pod(d)
                .volumes
                .iter()
                .flatten()
                .any(|v| v.name == "gcs-credentials")
        };
        assert!(!has_key(tracking));
        assert!(
            server_env(tracking)
                .iter()
                .all(|(n, ..)| !n.starts_with("GOOGLE_"))
        );
        let artifacts = named(&children.deployments, "mlflow-artifacts");
        assert!(has_key(artifacts));
        assert_eq!(
            server_env(artifacts),
            [(
                "GOOGLE_APPLICATION_CREDENTIALS".to_owned(),
                Some("/etc/mlkube/gcs/key.json".to_owned()),
                None
            )]
        );
        let args = pod(artifacts).containers[0].args.clone().unwrap();
        assert_eq!(flag(&args, "--artifacts-destination"), Some("gs://ml-artifacts"));
        // Clients put their tracking URI's path in front of artifact paths.
        assert_eq!(flag(&args, "--static-prefix"), Some("/mlflow"));
        assert_eq!(artifacts.spec.replicas, Some(5));
        assert_eq!(
            pod(artifacts).containers[0]
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["cpu"]
                .0,
            "2"
        );
        for m in pod(artifacts).containers[0].volume_mounts.iter().flatten() {
            assert!(m.name == "tmp" || m.read_only == Some(true), "{}", m.name);
        }
    }

    #[test]
    fn a_dedicated_artifact_server_on_azure_workload_identity_and_without_prometheus_operator() {
        let v = vts(
            json!({"replicas": 2,
                   "backendStore": {"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}},
                   "serviceAccountName": "mlflow-azure",
                   "artifactStore": {"azure": {"account": "mlstore", "container": "artifacts", "dfs": true},
                                     "dedicatedServer": {}}}),
            false,
        );
        let children = tracking_server(&v);
        assert!(children.service_monitors.is_empty());
        let tracking = named(&children.deployments, "mlflow");
        let artifacts = named(&children.deployments, "mlflow-artifacts");
        // Only the pods that reach the container ask the webhook for a token.
        assert!(!pod_labels_of(tracking).contains_key(deployment::AZURE_WORKLOAD_IDENTITY_LABEL));
        assert_eq!(
            pod_labels_of(artifacts)[deployment::AZURE_WORKLOAD_IDENTITY_LABEL],
            "true"
        );
        assert!(
            !artifacts
                .spec
                .selector
                .match_labels
                .as_ref()
                .unwrap()
                .contains_key(deployment::AZURE_WORKLOAD_IDENTITY_LABEL)
        );
        assert_eq!(
            flag(
                pod(artifacts).containers[0].args.as_ref().unwrap(),
                "--artifacts-destination"
            ),
            Some("abfss://artifacts@mlstore.dfs.core.windows.net")
        );
        // Both pods are scraped through annotations.
        for d in [tracking, artifacts] {
            let annotations = d
                .spec
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap();
            assert_eq!(annotations[labels::PROMETHEUS_SCRAPE], "true");
            assert_eq!(annotations[labels::PROMETHEUS_PORT], "5000");
        }
    }

    #[test]
    fn without_a_dedicated_artifact_server_nothing_changes() {
        let store = json!({"s3": {"bucket": "models", "credentialsSecretRef": {"name": "s3"}}});
        let plain = postgres(store.clone(), json!({}));
        assert!(plain.artifact_server.is_none());
        let children = tracking_server(&plain);
        assert_eq!(children.deployments.len(), 1);
        assert_eq!(children.services.len(), 1);
        assert_eq!(children.service_monitors.len(), 1);
        let mut with = store;
        with["dedicatedServer"] = json!({});
        let dedicated = tracking_server(&postgres(with, json!({})));
        // Apart from its command line and environment, the tracking Deployment is the same.
        let strip = |d: &Deployment| {
            let mut d = d.clone();
            let c = &mut d.spec.template.spec.as_mut().unwrap().containers[0];
            c.args = None;
            c.env = None;
            d
        };
        assert_eq!(
            strip(named(&dedicated.deployments, "mlflow")),
            strip(&children.deployments[0])
        );
    }

    #[test]
    fn model_pods_get_store_credentials_only_from_a_direct_bucket() {
        let access = |store: serde_json::Value| {
            let ts = ts(json!({"replicas": 3,
                "backendStore": {"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}},
                "artifactStore": store, "auth": {"adminSecretRef": {"name": "admin"}}}));
            TrackingAccess::for_tracking_server(&ts)
        };
        let model_env = |tracking: TrackingAccess| {
            let v = validate::validate_model_deployment(
                &md(json!({"trackingServerRef": {"name": "mlflow"}, "model": {"name": "Churn Model", "alias": "champion"}})),
                &resolved(),
                tracking,
                true,
                &Defaults::for_version("1.2.3"),
            )
            .unwrap();
            let d = deployment::build_model_deployment(&v);
            pod(&d)
                .containers
                .iter()
                .flat_map(|c| c.env.clone().unwrap_or_default())
                .map(|e| e.name)
                .collect::<Vec<_>>()
        };
        for store in [
            json!({"s3": {"bucket": "models", "credentialsSecretRef": {"name": "s3"}}}),
            json!({"gcs": {"bucket": "ml-artifacts", "credentialsSecretRef": {"name": "gcs"}}}),
            json!({"azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az"}}}),
        ] {
            let names = model_env(access(store.clone()));
            assert!(names.contains(&"MLFLOW_TRACKING_URI".to_owned()));
            assert!(names.contains(&"MLFLOW_TRACKING_PASSWORD".to_owned()));
            for name in &names {
                assert!(
                    !name.starts_with("AWS_")
                        && !name.starts_with("AZURE_")
                        && !name.starts_with("GOOGLE_")
                        && name != "MLFLOW_S3_ENDPOINT_URL",
                    "{store}: {name}"
                );
            }
        }
        let names = model_env(access(
            json!({"s3": {"bucket": "models", "access": "Direct", "region": "eu-west-1",
                                                  "credentialsSecretRef": {"name": "s3"}}}),
        ));
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
            assert!(names.contains(&name.to_owned()), "{name}: {names:?}");
        }
    }

    #[test]
    fn sidecar_args_follow_the_design() {
        let v = vmd(
            json!({"sidecar": {"capture": {"sampleRate": 0.25, "maxPayloadBytes": 1024}, "requestTimeoutSeconds": 30}}),
            true,
        );
        assert_eq!(
            deployment::sidecar_args(&v),
            [
                "--listen",
                "0.0.0.0:8000",
                "--metrics-listen",
                "0.0.0.0:8001",
                "--upstream",
                "http://127.0.0.1:8080",
                "--model-name",
                "Churn Model",
                "--model-version",
                "12",
                "--run-id",
                "abc123",
                "--upstream-health-path",
                "/ping",
                "--tracking-uri",
                "http://mlflow.ml.svc:5000",
                "--capture-sample-rate",
                "0.25",
                "--capture-max-payload-bytes",
                "1024",
                "--request-timeout",
                "30"
            ]
        );
        let quiet = vmd(json!({}), true);
        assert!(!deployment::sidecar_args(&quiet).contains(&"--tracking-uri".to_owned()));
        let d = deployment::build_model_deployment(&quiet);
        let model = &pod(&d).containers[0];
        assert_eq!(model.name, "model-server");
        assert!(model.ports.is_none(), "the model server is never exposed");
        assert!(
            model
                .command
                .as_ref()
                .unwrap()
                .windows(2)
                .any(|w| w == ["--host", "127.0.0.1"]),
            "{:?}",
            model.command
        );
        assert!(
            model
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.name == "MLFLOW_TRACKING_URI")
        );
        let sidecar = &pod(&d).containers[1];
        assert_eq!(sidecar.name, "mlkube-sidecar");
        let probe = sidecar
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        let probe = sidecar
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/healthz"));
    }

    #[test]
    fn monitoring_objects_only_with_the_api() {
        let with = model_deployment(&vmd(
            json!({"monitoring": {"serviceMonitor": {"labels": {"release": "kps"}}}}),
            true,
        ));
        assert_eq!(with.service_monitors.len(), 1);
        assert_eq!(with.prometheus_rules.len(), 1);
        assert_eq!(
            with.prometheus_rules[0].metadata.labels.as_ref().unwrap()["release"],
            "kps"
        );
        assert_eq!(
            with.service_monitors[0].metadata.labels.as_ref().unwrap()["release"],
            "kps"
        );
        let annotations = &with.deployments[0]
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations;
        assert!(
            !annotations
                .as_ref()
                .unwrap()
                .contains_key(labels::PROMETHEUS_SCRAPE)
        );
        let without = model_deployment(&vmd(json!({}), false));
        assert!(without.service_monitors.is_empty() && without.prometheus_rules.is_empty());
        let annotations = without.deployments[0]
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(annotations[labels::PROMETHEUS_SCRAPE], "true");
        assert_eq!(annotations[labels::PROMETHEUS_PORT], "8001");
    }

    /// A ModelDeployment with every production section.
    pub(crate) fn production_spec() -> serde_json::Value {
        json!({
            "replicas": 1,
            "autoscaling": {"minReplicas": 2, "maxReplicas": 8, "target": {"inFlightRequests": 4}},
            "disruptionBudget": {"minAvailable": "50%"},
            "rolloutStrategy": {"maxSurge": 1},
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "serviceAccountName": "ranker-irsa",
            "scheduling": {
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                               "whenUnsatisfiable": "ScheduleAnyway"}],
                "priorityClassName": "model-serving",
                "runtimeClassName": "nvidia"},
            "exposure": {"ingress": {"host": "churn.example.com", "tlsSecretName": "churn-tls"}},
        })
    }

    #[test]
    fn production_sections_become_owned_children_and_pod_settings() {
        let children = model_deployment(&vmd(production_spec(), true));
        let d = &children.deployments[0];
        assert_eq!(d.spec.replicas, None, "the HPA owns replicas");
        let rolling = d.spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
        // maxSurge as set; maxUnavailable from the GPU default.
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
        let pod = pod(d);
        assert_eq!(pod.runtime_class_name.as_deref(), Some("nvidia"));
        assert_eq!(pod.priority_class_name.as_deref(), Some("model-serving"));
        assert_eq!(pod.service_account_name.as_deref(), Some("ranker-irsa"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("nvidia.com/gpu")
        );
        assert_eq!(
            pod.node_selector.as_ref().unwrap()["nvidia.com/gpu.present"],
            "true"
        );
        // A spread constraint without a selector spreads this deployment's own pods.
        let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
        assert_eq!(
            spread.label_selector.as_ref().unwrap().match_labels,
            d.spec.selector.match_labels
        );
        let pdb = children.pod_disruption_budgets[0].spec.as_ref().unwrap();
        assert_eq!(pdb.min_available, Some(IntOrString::String("50%".into())));
        assert_eq!(pdb.max_unavailable, None);
        assert_eq!(
            pdb.selector.as_ref().unwrap().match_labels,
            d.spec.selector.match_labels
        );
        assert_eq!(children.horizontal_pod_autoscalers.len(), 1);
        assert!(children.scaled_objects.is_empty());
        assert_eq!(children.ingresses.len(), 1);
        let metas = all_metas(&children);
        assert_eq!(metas.len(), 7, "{metas:?}");
        for meta in metas {
            assert_eq!(meta.owner_references.as_ref().unwrap()[0].uid, UID);
        }
        // Without sections: none of these, and the Deployment keeps replicas.
        let plain = model_deployment(&vmd(json!({}), true));
        assert!(plain.pod_disruption_budgets.is_empty() && plain.horizontal_pod_autoscalers.is_empty());
        assert_eq!(plain.deployments[0].spec.replicas, Some(1));
        assert!(
            plain.deployments[0].spec.strategy.is_none(),
            "Kubernetes' default rollout"
        );
    }

    #[test]
    fn optional_apis_that_are_missing_get_no_object() {
        let keda = json!({"autoscaling": {"engine": "KEDA", "maxReplicas": 3, "target": {"inFlightRequests": 4},
                                          "keda": {"prometheusAddress": "http://prometheus:9090"}},
                          "exposure": {"httpRoute": {"parentRefs": [{"name": "public"}]}}});
        let served = model_deployment(&vmd(keda.clone(), true));
        assert_eq!(served.scaled_objects.len(), 1);
        assert_eq!(served.http_routes.len(), 1);
        assert_eq!(served.deployments[0].spec.replicas, None);
        let query = &served.scaled_objects[0].spec.triggers[0].metadata["query"];
        assert_eq!(
            query,
            "sum(mlflow_inference_in_flight{namespace=\"ml\",service=\"churn\"})"
        );
        let missing = model_deployment(&vmd(keda, false));
        assert!(missing.scaled_objects.is_empty() && missing.http_routes.is_empty());
        assert!(
            missing.horizontal_pod_autoscalers.is_empty(),
            "no HPA in KEDA's place"
        );
        assert_eq!(
            missing.deployments[0].spec.replicas,
            Some(1),
            "the fewest pods that serve"
        );
    }

    #[test]
    fn output_is_deterministic() {
        let spec = json!({"nodeSampler": {"enabled": true, "nodeSelector": {"b": "2", "a": "1"}},
                          "serviceMonitor": {"labels": {"z": "1", "release": "kps"}}});
        let a = format!("{:?}", tracking_server(&vts(spec.clone(), true)));
        let b = format!("{:?}", tracking_server(&vts(spec, true)));
        assert_eq!(a, b);
        let first = model_deployment(&vmd(
            json!({"monitoring": {"quality": {"thresholds": [
            {"metric": "rmse", "max": 2.0}, {"metric": "accuracy", "min": 0.9}]}}}),
            true,
        ));
        let again = model_deployment(&vmd(
            json!({"monitoring": {"quality": {"thresholds": [
            {"metric": "accuracy", "min": 0.9}, {"metric": "rmse", "max": 2.0}]}}}),
            true,
        ));
        assert_eq!(first, again, "threshold order in the spec does not matter");
    }
}

#[cfg(test)]
mod round_trip {
    use super::tests::{md, ts};
    use super::*;
    use crate::crd::model_deployment::ResolvedModel;
    use crate::validate::{self, Defaults, TrackingAccess};
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    fn same<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(items: &[T]) {
        for item in items {
            let back: T = serde_json::from_value(serde_json::to_value(item).unwrap()).unwrap();
            assert_eq!(&back, item);
            let yaml = crate::render::to_yaml("child", item).unwrap();
            let back: T = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(&back, item, "{yaml}");
        }
    }

    fn check(children: &ChildObjects) {
        same(&children.persistent_volume_claims);
        same(&children.config_maps);
        same(&children.deployments);
        same(&children.service_accounts);
        same(&children.daemon_sets);
        same(&children.services);
        same(&children.pod_disruption_budgets);
        same(&children.horizontal_pod_autoscalers);
        same(&children.scaled_objects);
        same(&children.ingresses);
        same(&children.http_routes);
        same(&children.service_monitors);
        same(&children.prometheus_rules);
    }

    #[test]
    fn every_built_object_reads_back_as_its_type() {
        let defaults = Defaults::for_version("1.0.0");
        for spec in super::tests::every_store() {
            check(&tracking_server(
                &validate::validate_tracking_server(&ts(spec), true, &defaults).unwrap(),
            ));
        }
        let full = ts(json!({"auth": {"adminSecretRef": {"name": "admin"}},
            "nodeSampler": {"enabled": true, "tolerations": [{"operator": "Exists"}]},
            "resources": {"limits": {"memory": "1Gi"}}}));
        check(&tracking_server(
            &validate::validate_tracking_server(&full, true, &defaults).unwrap(),
        ));
        let model = md(
            json!({"trackingUri": "http://mlflow:5000", "model": {"name": "m", "version": "1"},
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "monitoring": {"quality": {"thresholds": [{"metric": "f1", "min": 0.8}]}}}),
        );
        let resolved = ResolvedModel {
            reference: "models:/m/1".into(),
            name: "m".into(),
            version: "1".into(),
            run_id: None,
            source: None,
        };
        let v = validate::validate_model_deployment(
            &model,
            &resolved,
            TrackingAccess::default(),
            true,
            &defaults,
        )
        .unwrap();
        let children = model_deployment(&v);
        assert_eq!(children.prometheus_rules.len(), 1);
        check(&children);
        let mut spec = super::tests::production_spec();
        spec["trackingUri"] = json!("http://mlflow:5000");
        spec["model"] = json!({"name": "m", "version": "1"});
        let v = validate::validate_model_deployment(
            &md(spec),
            &resolved,
            TrackingAccess::default(),
            true,
            &defaults,
        )
        .unwrap();
        check(&model_deployment(&v));
        let keda = md(
            json!({"trackingUri": "http://mlflow:5000", "model": {"name": "m", "version": "1"},
            "autoscaling": {"engine": "KEDA", "maxReplicas": 3, "target": {"inFlightRequests": 4},
                            "keda": {"prometheusAddress": "http://prometheus:9090"}},
            "exposure": {"httpRoute": {"parentRefs": [{"name": "public"}], "hostnames": ["m.example.com"]}}}),
        );
        let v =
            validate::validate_model_deployment(&keda, &resolved, TrackingAccess::default(), true, &defaults)
                .unwrap();
        let children = model_deployment(&v);
        assert_eq!(
            (children.scaled_objects.len(), children.http_routes.len()),
            (1, 1)
        );
        check(&children);
    }
}
