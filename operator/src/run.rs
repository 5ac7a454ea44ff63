//! Wiring: the Kubernetes client, the two controllers, and the HTTP endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;

use crate::build::{PrometheusRule, ServiceMonitor, labels};
use crate::config::Args;
use crate::controller::pipeline::Pipeline;
use crate::controller::{self, Context};
use crate::crd::{ModelDeployment, TrackingServer};
use crate::registry::HttpRegistry;
use crate::validate::Defaults;

/// Why the operator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not create a Kubernetes client (no in-cluster config or kubeconfig)")]
    Client(#[source] kube::Error),
    #[error("could not list {0}: are the CRDs installed (kubectl apply -f crds/)?")]
    Crd(&'static str, #[source] kube::Error),
    #[error("could not create the registry client")]
    Registry(#[source] std::io::Error),
    #[error("could not listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("an HTTP endpoint failed")]
    Serve(#[source] std::io::Error),
    #[error("leader election failed")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that another replica takes over")]
    LostLease,
}

/// Name of the leader-election Lease.
pub const LEASE_NAME: &str = "mlkube-operator";

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn served(result: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), RunError> {
    match result {
        Ok(inner) => inner.map_err(RunError::Serve),
        Err(join) => Err(RunError::Serve(std::io::Error::other(join))),
    }
}

/// Watch every child kind `K` may own (its [`Pipeline::KINDS`], as served), by the label the
/// operator puts on its children.
fn owning_children<K: Pipeline>(
    mut controller: Controller<K>,
    client: &Client,
    ns: Option<&str>,
    monitoring_api: bool,
) -> Controller<K> {
    let children = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let kinds = K::KINDS.served(monitoring_api);
    if kinds.deployments {
        controller = controller.owns(api::<Deployment>(client, ns), children.clone());
    }
    if kinds.services {
        controller = controller.owns(api::<Service>(client, ns), children.clone());
    }
    if kinds.daemon_sets {
        controller = controller.owns(api::<DaemonSet>(client, ns), children.clone());
    }
    if kinds.service_accounts {
        controller = controller.owns(api::<ServiceAccount>(client, ns), children.clone());
    }
    if kinds.persistent_volume_claims {
        controller = controller.owns(api::<PersistentVolumeClaim>(client, ns), children.clone());
    }
    if kinds.config_maps {
        controller = controller.owns(api::<ConfigMap>(client, ns), children.clone());
    }
    if kinds.service_monitors {
        controller = controller.owns(api::<ServiceMonitor>(client, ns), children.clone());
    }
    if kinds.prometheus_rules {
        controller = controller.owns(api::<PrometheusRule>(client, ns), children);
    }
    controller
}

/// Run until SIGTERM/SIGINT.
pub async fn run(args: Args) -> Result<(), RunError> {
    let Args {
        metrics_listen,
        health_listen,
        namespace,
        server_image,
        sidecar_image,
        node_sampler_image,
        model_server_image,
        runbook_base_url,
        resolve_interval,
        registry_timeout,
        leader_election,
        leader_election_namespace,
        log: _,
        log_format: _,
    } = args;
    let mut defaults = Defaults::for_version(env!("CARGO_PKG_VERSION"));
    if let Some(image) = server_image {
        defaults.server_image = image;
    }
    if let Some(image) = sidecar_image {
        defaults.sidecar_image = image;
    }
    if let Some(image) = node_sampler_image {
        defaults.node_sampler_image = image;
    }
    if let Some(image) = model_server_image {
        defaults.model_server_image = image;
    }
    if let Some(url) = runbook_base_url {
        defaults.runbook_base_url = url;
    }

    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source })
    };
    let metrics_listener = bind(metrics_listen).await?;
    let health_listener = bind(health_listen).await?;
    // The endpoints run from the start, also while a standby replica waits for the lease.
    let mut metrics_server =
        tokio::spawn(axum::serve(metrics_listener, crate::http::metrics_app(registry)).into_future());
    let mut health_server =
        tokio::spawn(axum::serve(health_listener, crate::http::health_app(ready.clone())).into_future());
    tracing::info!(%metrics_listen, %health_listen, "serving metrics and health");

    let client = Client::try_default().await.map_err(RunError::Client)?;
    let ns = namespace.as_deref();
    let ts_api: Api<TrackingServer> = api(&client, ns);
    let md_api: Api<ModelDeployment> = api(&client, ns);
    ts_api
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| RunError::Crd("trackingservers.mlkube.io", e))?;
    md_api
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| RunError::Crd("modeldeployments.mlkube.io", e))?;
    let monitoring_api = crate::apply::fetch_monitoring_api(&client).await.unwrap_or(false);
    tracing::info!(monitoring_api, "monitoring.coreos.com/v1 discovery");

    let http_registry =
        HttpRegistry::new(Duration::from_secs(registry_timeout)).map_err(RunError::Registry)?;
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok();

    // Leader election: wait for the Lease before reconciling anything. The process is ready
    // (it serves metrics and health) while it stands by.
    ready.store(true, Ordering::Relaxed);
    let mut leading = None;
    if leader_election {
        let lease_namespace = leader_election_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_owned());
        let mut builder = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(lease_namespace.clone())
            .with_field_manager(crate::apply::FIELD_MANAGER)
            .with_duration(15)
            .with_grace(5);
        if let Some(identity) = &instance {
            builder = builder.with_identity(identity.clone());
        }
        let manager = builder.build().await.map_err(RunError::Lease)?;
        let (mut channel, task) = manager.watch().await;
        tracing::info!(lease = LEASE_NAME, namespace = %lease_namespace, "waiting for the leader lease");
        while !*channel.borrow_and_update() {
            if channel.changed().await.is_err() {
                return Err(RunError::LostLease);
            }
        }
        tracing::info!("acquired the leader lease");
        leading = Some((channel, task));
    }
    let lost_lease = async move {
        match leading {
            Some((mut channel, _task)) => {
                while *channel.borrow_and_update() {
                    if channel.changed().await.is_err() {
                        break;
                    }
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    let mut context =
        Context::new(client.clone(), Arc::new(http_registry), defaults, metrics).with_instance(instance);
    context.resolve_interval = Duration::from_secs(resolve_interval);
    let ctx = Arc::new(context);

    let ts_controller = owning_children(
        Controller::new(ts_api.clone(), watcher::Config::default().any_semantic()),
        &client,
        ns,
        monitoring_api,
    );
    let md_controller = owning_children(
        Controller::new(md_api, watcher::Config::default().any_semantic()),
        &client,
        ns,
        monitoring_api,
    );
    // A TrackingServer change (created, URL, auth, artifact store) re-reconciles the
    // ModelDeployments that reference it.
    let md_store = md_controller.store();
    let md_controller =
        md_controller.watches(ts_api, watcher::Config::default(), move |ts: TrackingServer| {
            let ns = ts.namespace();
            let name = ts.name_any();
            md_store
                .state()
                .into_iter()
                .filter(|md| {
                    md.namespace() == ns
                        && md
                            .spec
                            .tracking_server_ref
                            .as_ref()
                            .is_some_and(|r| r.name == name)
                })
                .map(|md| ObjectRef::from_obj(&*md))
                .collect::<Vec<_>>()
        });

    let ts_run = ts_controller
        .shutdown_on_signal()
        .run(
            controller::tracking_server::reconcile,
            controller::tracking_server::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures_util::future::ready(()));
    let md_run = md_controller
        .shutdown_on_signal()
        .run(
            controller::model_deployment::reconcile,
            controller::model_deployment::error_policy,
            ctx,
        )
        .for_each(|_| futures_util::future::ready(()));
    tracing::info!(namespace = ns.unwrap_or("<all>"), "controllers started");

    tokio::select! {
        _ = async { tokio::join!(ts_run, md_run) } => {
            tracing::info!("controllers stopped");
            Ok(())
        }
        res = &mut metrics_server => served(res),
        res = &mut health_server => served(res),
        () = lost_lease => Err(RunError::LostLease),
    }
}
