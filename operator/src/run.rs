//! Wiring: the Kubernetes client, discovery, leader election, the two controllers with their
//! watches, and the HTTP endpoints. [`operate`] is everything that talks to the API server, so
//! `tests/run.rs` drives it against a mock one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;

use crate::apply::Apis;
use crate::build::{HttpRoute, PrometheusRule, ScaledObject, ServiceMonitor, labels};
use crate::config::Args;
use crate::controller::pipeline::Pipeline;
use crate::controller::{self, Context};
use crate::crd::{ModelDeployment, TrackingServer};
use crate::registry::{HttpRegistry, ModelRegistry};
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
    apis: Apis,
) -> Controller<K> {
    let children = watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let kinds = K::KINDS.served(apis);
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
    if kinds.pod_disruption_budgets {
        controller = controller.owns(api::<PodDisruptionBudget>(client, ns), children.clone());
    }
    if kinds.horizontal_pod_autoscalers {
        controller = controller.owns(api::<HorizontalPodAutoscaler>(client, ns), children.clone());
    }
    if kinds.scaled_objects {
        controller = controller.owns(api::<ScaledObject>(client, ns), children.clone());
    }
    if kinds.ingresses {
        controller = controller.owns(api::<Ingress>(client, ns), children.clone());
    }
    if kinds.http_routes {
        controller = controller.owns(api::<HttpRoute>(client, ns), children.clone());
    }
    if kinds.service_monitors {
        controller = controller.owns(api::<ServiceMonitor>(client, ns), children.clone());
    }
    if kinds.prometheus_rules {
        controller = controller.owns(api::<PrometheusRule>(client, ns), children);
    }
    controller
}

/// Leader election through a `coordination.k8s.io` Lease named [`LEASE_NAME`].
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Who we are in `holderIdentity` (the pod name); a random one when `None`.
    pub identity: Option<String>,
    /// `leaseDurationSeconds`: how long a silent leader keeps the Lease.
    pub duration_secs: u64,
    /// The leader renews this long before the Lease would expire.
    pub grace_secs: u64,
}

/// What [`operate`] runs with, besides the client.
pub struct Operation {
    /// Watch only this namespace (`None`: all).
    pub namespace: Option<String>,
    pub defaults: Defaults,
    pub registry: Arc<dyn ModelRegistry>,
    /// Reads canary measurements (Prometheus and the quality API).
    pub measurements: Arc<dyn crate::rollout::measure::MeasurementSource>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub resolve_interval: Duration,
    /// `reportingInstance` of the Events (the pod name).
    pub instance: Option<String>,
    pub leader_election: Option<LeaderElection>,
    /// Set once discovery succeeded: `/readyz` answers 200, also while a standby waits for the
    /// Lease.
    pub ready: Arc<AtomicBool>,
}

/// What discovery found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// The optional APIs served (`monitoring.coreos.com/v1`, `keda.sh/v1alpha1`,
    /// `gateway.networking.k8s.io/v1`): their kinds are watched as children.
    pub apis: Apis,
}

/// Both CRDs must be served (a list of one item each); the optional APIs decide which children
/// are watched. An optional API that cannot be discovered (403, 5xx) counts as absent: the
/// operator still runs, and each reconcile looks again (a restart starts watching an API
/// installed later).
pub async fn discover(client: &Client, namespace: Option<&str>) -> Result<Discovery, RunError> {
    let one = kube::api::ListParams::default().limit(1);
    api::<TrackingServer>(client, namespace)
        .list(&one)
        .await
        .map_err(|e| RunError::Crd("trackingservers.mlkube.io", e))?;
    api::<ModelDeployment>(client, namespace)
        .list(&one)
        .await
        .map_err(|e| RunError::Crd("modeldeployments.mlkube.io", e))?;
    let monitoring_api = match crate::apply::fetch_monitoring_api(client).await {
        Ok(served) => served,
        Err(err) => {
            tracing::warn!(error = ?err, "could not discover monitoring.coreos.com/v1; ServiceMonitors and PrometheusRules are not watched");
            false
        }
    };
    tracing::info!(monitoring_api, "monitoring.coreos.com/v1 discovery");
    let keda = match crate::apply::fetch_keda_api(client).await {
        Ok(served) => served,
        Err(err) => {
            tracing::warn!(error = ?err, "could not discover {}; ScaledObjects are not watched", crate::apply::KEDA_API);
            false
        }
    };
    let gateway = match crate::apply::fetch_gateway_api(client).await {
        Ok(served) => served,
        Err(err) => {
            tracing::warn!(error = ?err, "could not discover {}; HTTPRoutes are not watched", crate::apply::GATEWAY_API);
            false
        }
    };
    tracing::info!(
        keda,
        gateway,
        "keda.sh/v1alpha1 and gateway.networking.k8s.io/v1 discovery"
    );
    Ok(Discovery {
        apis: Apis {
            monitoring: monitoring_api,
            keda,
            gateway,
        },
    })
}

/// The ModelDeployments (in `mds`) that reference `ts` by `trackingServerRef`: a TrackingServer
/// change (created, URL, auth, artifact store) reconciles them.
pub fn referencing(
    ts: &TrackingServer,
    mds: impl IntoIterator<Item = Arc<ModelDeployment>>,
) -> Vec<ObjectRef<ModelDeployment>> {
    let ns = ts.namespace();
    let name = ts.name_any();
    mds.into_iter()
        .filter(|md| {
            md.namespace() == ns
                && md
                    .spec
                    .tracking_server_ref
                    .as_ref()
                    .is_some_and(|r| r.name == name)
        })
        .map(|md| ObjectRef::from_obj(&*md))
        .collect()
}

/// Discovery, leader election, then both controllers until `shutdown` resolves (or the Lease is
/// lost). Everything `run` does that talks to the API server, so tests drive it against a mock.
pub async fn operate(
    client: Client,
    operation: Operation,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let Operation {
        namespace,
        defaults,
        registry,
        measurements,
        metrics,
        resolve_interval,
        instance,
        leader_election,
        ready,
    } = operation;
    let shutdown = shutdown.boxed().shared();
    let ns = namespace.as_deref();
    let Discovery { apis } = discover(&client, ns).await?;
    ready.store(true, Ordering::Relaxed);

    // Leader election: wait for the Lease before reconciling anything.
    let mut leading = None;
    if let Some(election) = leader_election {
        let mut builder = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(election.namespace.clone())
            .with_field_manager(crate::apply::FIELD_MANAGER)
            .with_duration(election.duration_secs)
            .with_grace(election.grace_secs);
        if let Some(identity) = &election.identity {
            builder = builder.with_identity(identity.clone());
        }
        let manager = builder.build().await.map_err(RunError::Lease)?;
        let (mut channel, task) = manager.watch().await;
        tracing::info!(lease = LEASE_NAME, namespace = %election.namespace, "waiting for the leader lease");
        let acquired = async {
            while !*channel.borrow_and_update() {
                if channel.changed().await.is_err() {
                    return Err(RunError::LostLease);
                }
            }
            Ok(())
        };
        tokio::select! {
            result = acquired => result?,
            () = shutdown.clone() => {
                tracing::info!("stopped while standing by");
                return Ok(());
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

    let mut context = Context::new(client.clone(), registry, defaults, metrics)
        .with_instance(instance)
        .with_measurements(measurements);
    context.resolve_interval = resolve_interval;
    let ctx = Arc::new(context);

    let ts_api: Api<TrackingServer> = api(&client, ns);
    let md_api: Api<ModelDeployment> = api(&client, ns);
    let ts_controller = owning_children(
        Controller::new(ts_api.clone(), watcher::Config::default().any_semantic()),
        &client,
        ns,
        apis,
    );
    let md_controller = owning_children(
        Controller::new(md_api, watcher::Config::default().any_semantic()),
        &client,
        ns,
        apis,
    );
    let md_store = md_controller.store();
    let md_controller =
        md_controller.watches(ts_api, watcher::Config::default(), move |ts: TrackingServer| {
            referencing(&ts, md_store.state())
        });

    let ts_run = ts_controller
        .graceful_shutdown_on(shutdown.clone())
        .run(
            controller::tracking_server::reconcile,
            controller::tracking_server::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures_util::future::ready(()));
    let md_run = md_controller
        .graceful_shutdown_on(shutdown)
        .run(
            controller::model_deployment::reconcile,
            controller::model_deployment::error_policy,
            ctx,
        )
        .for_each(|_| futures_util::future::ready(()));
    tracing::info!(
        namespace = ns.unwrap_or("<all>"),
        monitoring_api = apis.monitoring,
        keda_api = apis.keda,
        gateway_api = apis.gateway,
        "controllers started"
    );
    tokio::select! {
        _ = async { tokio::join!(ts_run, md_run) } => {
            tracing::info!("controllers stopped");
            Ok(())
        }
        () = lost_lease => Err(RunError::LostLease),
    }
}

/// SIGTERM or SIGINT.
async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = ?err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down on signal");
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
        prometheus_url,
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
    let http_registry =
        Arc::new(HttpRegistry::new(Duration::from_secs(registry_timeout)).map_err(RunError::Registry)?);
    let measurements: Arc<dyn crate::rollout::measure::MeasurementSource> = match prometheus_url {
        Some(url) => Arc::new(crate::rollout::measure::HttpMeasurements::new(
            http_registry.clone(),
            url,
        )),
        None => Arc::new(crate::rollout::measure::NotConfigured),
    };
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok();
    let leader_election = leader_election.then(|| LeaderElection {
        namespace: leader_election_namespace
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_owned()),
        identity: instance.clone(),
        duration_secs: 15,
        grace_secs: 5,
    });
    let operation = Operation {
        namespace,
        defaults,
        registry: http_registry,
        measurements,
        metrics,
        resolve_interval: Duration::from_secs(resolve_interval),
        instance,
        leader_election,
        ready,
    };
    tokio::select! {
        res = operate(client, operation, signal()) => res,
        res = &mut metrics_server => served(res),
        res = &mut health_server => served(res),
    }
}
