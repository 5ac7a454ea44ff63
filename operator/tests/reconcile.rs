//! Reconcile scenarios against a request-exact mock API server. Each scenario scripts every
//! request the controller must make (method and URI, in order), answers like the API server,
//! and then checks the essentials of what was written.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::apiserver::{applied_values, as_applied, take_fields};
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::Action;
use mlkube_operator::build;
use mlkube_operator::controller::{model_deployment, tracking_server};
use mlkube_operator::crd::{ModelDeployment, TrackingServer};
use mlkube_operator::validate::{self, TrackingAccess};
use serde_json::{Value, json};

const SELECTOR_TS: &str = "app.kubernetes.io%2Fmanaged-by%3Dmlkube%2Capp.kubernetes.io%2Finstance%3Dmlflow";
const SELECTOR_MD: &str = "app.kubernetes.io%2Fmanaged-by%3Dmlkube%2Capp.kubernetes.io%2Finstance%3Dchurn";

fn list_uri(prefix: &str, plural: &str, selector: &str) -> String {
    format!("{prefix}/namespaces/{NAMESPACE}/{plural}?&labelSelector={selector}")
}

fn apply_uri(prefix: &str, plural: &str, name: &str) -> String {
    format!("{prefix}/namespaces/{NAMESPACE}/{plural}/{name}?&force=true&fieldManager=mlkube-operator")
}

fn object_uri(prefix: &str, plural: &str, name: &str) -> String {
    format!("{prefix}/namespaces/{NAMESPACE}/{plural}/{name}")
}

/// The list by name before a create (the name must not be taken).
fn by_name(prefix: &str, plural: &str, name: &str) -> String {
    format!("{prefix}/namespaces/{NAMESPACE}/{plural}?&fieldSelector=metadata.name%3D{name}")
}

/// The name check before a create: nothing by that name yet.
fn absent(prefix: &str, plural: &str, name: &str) -> Step {
    get(by_name(prefix, plural, name), list(vec![]))
}

/// The body of the request `method uri` the server saw.
fn sent<'a>(seen: &'a [Seen], method: &http::Method, uri: &str) -> &'a Value {
    &seen
        .iter()
        .find(|s| s.method == *method && s.uri == uri)
        .unwrap_or_else(|| panic!("no {method} {uri} in {seen:#?}"))
        .body
}

const CORE: &str = "/api/v1";
const APPS: &str = "/apis/apps/v1";
const MONITORING: &str = "/apis/monitoring.coreos.com/v1";
const MLKUBE: &str = "/apis/mlkube.io/v1alpha1";
const POLICY: &str = "/apis/policy/v1";
const AUTOSCALING: &str = "/apis/autoscaling/v2";
const NETWORKING: &str = "/apis/networking.k8s.io/v1";
const KEDA: &str = "/apis/keda.sh/v1alpha1";
const GATEWAY: &str = "/apis/gateway.networking.k8s.io/v1";

fn tracking_server(extra_spec: Value) -> TrackingServer {
    let mut spec = json!({
        "backendStore": {"sqlite": {"storage": {"size": "1Gi"}}},
        "artifactStore": {"pvc": {"size": "10Gi"}},
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "mlkube.io/v1alpha1",
        "kind": "TrackingServer",
        "metadata": {"name": "mlflow", "namespace": NAMESPACE, "uid": UID, "generation": 1,
                     "resourceVersion": "100", "creationTimestamp": EARLIER},
        "spec": spec,
    }))
    .unwrap()
}

fn model_deployment(status: Option<Value>) -> ModelDeployment {
    let mut md = json!({
        "apiVersion": "mlkube.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn", "namespace": NAMESPACE, "uid": UID, "generation": 2,
                     "resourceVersion": "200", "creationTimestamp": EARLIER},
        "spec": {
            "trackingServerRef": {"name": "mlflow"},
            "model": {"name": "churn", "alias": "champion"},
            "replicas": 2,
        },
    });
    if let Some(status) = status {
        md["status"] = status;
    }
    serde_json::from_value(md).unwrap()
}

/// The children the builders produce for `ts`, as the API server would list them: with a
/// Deployment that has fully rolled out.
fn ts_children(ts: &TrackingServer, monitoring: bool) -> build::ChildObjects {
    let v = validate::validate_tracking_server(ts, monitoring, &defaults()).unwrap();
    build::tracking_server(&v)
}

fn md_children(md: &ModelDeployment, version: &str) -> build::ChildObjects {
    let v = validate::validate_model_deployment(
        md,
        &resolved("models:/churn@champion", version),
        TrackingAccess {
            uri: "http://mlflow.ml.svc:5000".into(),
            ..Default::default()
        },
        true,
        &defaults(),
    )
    .unwrap();
    build::model_deployment(&v)
}

/// The bodies of the Events published, in order.
fn events(seen: &[Seen]) -> Vec<&Value> {
    seen.iter()
        .filter(|s| s.method == http::Method::POST && s.uri.contains("/events"))
        .map(|s| &s.body)
        .collect()
}

/// The statuses written, in order.
fn statuses(seen: &[Seen]) -> Vec<&Value> {
    seen.iter()
        .filter(|s| s.method == http::Method::PATCH && s.uri.contains("/status?"))
        .map(|s| &s.body["status"])
        .collect()
}

/// The bodies of the deletes, in order.
fn deleted(seen: &[Seen]) -> Vec<&Value> {
    seen.iter()
        .filter(|s| s.method == http::Method::DELETE)
        .map(|s| &s.body)
        .collect()
}

/// The default PodDisruptionBudget of the two-replica `model_deployment()`, as listed after our
/// apply.
fn md_budget() -> Reply {
    list(applied_values(
        &md_children(&model_deployment(None), "3").pod_disruption_budgets,
    ))
}

/// A Deployment as the API server lists it after our apply, fully rolled out.
fn rolled_out(d: Deployment, replicas: i32) -> Value {
    let mut v = as_applied(&serde_json::to_value(&d).unwrap());
    v["metadata"]["generation"] = json!(1);
    v["status"] = json!({"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
                         "updatedReplicas": replicas, "availableReplicas": replicas});
    v
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn ts_status() -> Step {
    patch_status(
        format!(
            "{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow/status?&force=true&fieldManager=mlkube-operator"
        ),
        &tracking_server(json!({})),
    )
}

fn md_status() -> Step {
    patch_status(
        format!(
            "{MLKUBE}/namespaces/{NAMESPACE}/modeldeployments/churn/status?&force=true&fieldManager=mlkube-operator"
        ),
        &model_deployment(None),
    )
}

// === TrackingServer ===

#[tokio::test]
async fn ts_create_path_applies_every_child_then_status() {
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let ts = tracking_server(json!({}));
    let server = serve(
        handle,
        vec![
            get(DISCOVERY, monitoring_api()),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
                list(vec![]),
            ),
            absent(CORE, "persistentvolumeclaims", "mlflow-artifacts"),
            patch(apply_uri(CORE, "persistentvolumeclaims", "mlflow-artifacts")),
            absent(CORE, "persistentvolumeclaims", "mlflow-backend"),
            patch(apply_uri(CORE, "persistentvolumeclaims", "mlflow-backend")),
            get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "deployments", SELECTOR_TS), list(vec![])),
            absent(APPS, "deployments", "mlflow"),
            patch(apply_uri(APPS, "deployments", "mlflow")),
            get(list_uri(CORE, "serviceaccounts", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "daemonsets", SELECTOR_TS), list(vec![])),
            get(list_uri(CORE, "services", SELECTOR_TS), list(vec![])),
            absent(CORE, "services", "mlflow"),
            patch(apply_uri(CORE, "services", "mlflow")),
            get(
                list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
                list(vec![]),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])),
            get(list_uri(MONITORING, "servicemonitors", SELECTOR_TS), list(vec![])),
            absent(MONITORING, "servicemonitors", "mlflow"),
            patch(apply_uri(MONITORING, "servicemonitors", "mlflow")),
            ts_status(),
        ],
    );
    let action = guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(tracking_server::RESYNC));
    let seen = server.await.unwrap();

    let deployment = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "mlflow"),
    );
    // The applied intent is recorded on the object.
    assert_eq!(
        deployment["metadata"]["annotations"]["mlkube.io/applied-hash"]
            .as_str()
            .unwrap()
            .len(),
        16
    );
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["controller"], true);
    assert!(deployment["spec"]["template"]["metadata"]["annotations"].is_null());
    let monitor = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(MONITORING, "servicemonitors", "mlflow"),
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
    let status = &seen.last().unwrap().body;
    assert_eq!(status["apiVersion"], "mlkube.io/v1alpha1");
    assert_eq!(status["kind"], "TrackingServer");
    let status = &status["status"];
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["url"], "http://mlflow.ml.svc:5000");
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(condition(status, "Progressing")["reason"], "RollingOut");
    assert_eq!(condition(status, "Degraded")["status"], "False");
    assert_eq!(condition(status, "Monitoring")["reason"], "ServiceMonitor");
    assert_eq!(condition(status, "Ready")["lastTransitionTime"], NOW);
}

#[tokio::test]
async fn ts_up_to_date_makes_no_writes() {
    let ts = tracking_server(json!({}));
    let children = ts_children(&ts, true);
    let lists = |ts: &TrackingServer| {
        let _ = ts;
        vec![
            get(DISCOVERY, monitoring_api()),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
                list(applied_values(&children.persistent_volume_claims)),
            ),
            get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
            get(
                list_uri(APPS, "deployments", SELECTOR_TS),
                list(vec![rolled_out(children.deployments[0].clone(), 1)]),
            ),
            get(list_uri(CORE, "serviceaccounts", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "daemonsets", SELECTOR_TS), list(vec![])),
            get(
                list_uri(CORE, "services", SELECTOR_TS),
                list(applied_values(&children.services)),
            ),
            get(
                list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
                list(vec![]),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])),
            get(
                list_uri(MONITORING, "servicemonitors", SELECTOR_TS),
                list(applied_values(&children.service_monitors)),
            ),
        ]
    };
    // First pass: children are current, the status is not yet written.
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let mut steps = lists(&ts);
    steps.push(ts_status());
    let server = serve(handle, steps);
    guarded(tracking_server::reconcile(Arc::new(ts.clone()), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let status = seen.last().unwrap().body["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "Available");
    assert_eq!(condition(&status, "Progressing")["status"], "False");
    assert_eq!(status["readyReplicas"], 1);

    // Second pass with that status: only reads.
    let mut current = ts.clone();
    current.status = Some(serde_json::from_value(status).unwrap());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, lists(&current));
    guarded(tracking_server::reconcile(Arc::new(current), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert!(seen.iter().all(|s| s.method == http::Method::GET), "{seen:#?}");
}

#[tokio::test]
async fn ts_drift_is_repaired_and_orphans_deleted() {
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let ts = tracking_server(json!({}));
    let children = ts_children(&ts, true);
    // Someone scaled the Deployment and changed its image: the API server hands those fields to
    // their field managers.
    let mut drifted = rolled_out(children.deployments[0].clone(), 1);
    drifted["spec"]["replicas"] = json!(3);
    drifted["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:latest");
    take_fields(
        &mut drifted,
        "kubectl-edit",
        &[
            "/f:spec/f:replicas",
            "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"mlkube-server\"}/f:image",
        ],
    );
    // A node sampler left over from when it was enabled.
    let mut with_sampler = ts.clone();
    with_sampler.spec.node_sampler.enabled = true;
    let old = ts_children(&with_sampler, true);
    // A Service with our labels that another owner controls: never touched.
    let mut foreign = serde_json::to_value(&children.services[0]).unwrap();
    foreign["metadata"]["name"] = json!("mlflow-foreign");
    foreign["metadata"]["ownerReferences"][0]["uid"] = json!("99999999-0000-4000-8000-000000000000");
    let mut services = applied_values(&children.services);
    services.push(foreign);
    services.extend(applied_values(
        &old.services
            .iter()
            .filter(|s| s.metadata.name.as_deref() == Some("mlflow-node-sampler"))
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let server = serve(
        handle,
        vec![
            get(DISCOVERY, monitoring_api()),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
                list(applied_values(&children.persistent_volume_claims)),
            ),
            get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "deployments", SELECTOR_TS), list(vec![drifted])),
            patch(apply_uri(APPS, "deployments", "mlflow")),
            get(
                list_uri(CORE, "serviceaccounts", SELECTOR_TS),
                list(applied_values(&old.service_accounts)),
            ),
            delete(format!(
                "{CORE}/namespaces/{NAMESPACE}/serviceaccounts/mlflow-node-sampler?"
            )),
            get(
                list_uri(APPS, "daemonsets", SELECTOR_TS),
                list(applied_values(&old.daemon_sets)),
            ),
            delete(format!(
                "{APPS}/namespaces/{NAMESPACE}/daemonsets/mlflow-node-sampler?"
            )),
            get(list_uri(CORE, "services", SELECTOR_TS), list(services)),
            delete(format!(
                "{CORE}/namespaces/{NAMESPACE}/services/mlflow-node-sampler?"
            )),
            get(
                list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
                list(vec![]),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])),
            get(
                list_uri(MONITORING, "servicemonitors", SELECTOR_TS),
                list(applied_values(&old.service_monitors)),
            ),
            delete(format!(
                "{MONITORING}/namespaces/{NAMESPACE}/servicemonitors/mlflow-node-sampler?"
            )),
            ts_status(),
        ],
    );
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let repaired = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "mlflow"),
    );
    assert_eq!(repaired["spec"]["replicas"], 1);
    assert_eq!(
        repaired["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/mlkube/mlkube-server:v0.1.0"
    );
    assert_eq!(deleted(&seen)[0]["propagationPolicy"], "Background");
}

#[tokio::test]
async fn ts_without_prometheus_operator_falls_back_to_annotations() {
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let ts = tracking_server(json!({}));
    let server = serve(
        handle,
        vec![
            get(DISCOVERY, Reply::Status(404)),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
                list(vec![]),
            ),
            absent(CORE, "persistentvolumeclaims", "mlflow-artifacts"),
            patch(apply_uri(CORE, "persistentvolumeclaims", "mlflow-artifacts")),
            absent(CORE, "persistentvolumeclaims", "mlflow-backend"),
            patch(apply_uri(CORE, "persistentvolumeclaims", "mlflow-backend")),
            get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "deployments", SELECTOR_TS), list(vec![])),
            absent(APPS, "deployments", "mlflow"),
            patch(apply_uri(APPS, "deployments", "mlflow")),
            get(list_uri(CORE, "serviceaccounts", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "daemonsets", SELECTOR_TS), list(vec![])),
            get(list_uri(CORE, "services", SELECTOR_TS), list(vec![])),
            absent(CORE, "services", "mlflow"),
            patch(apply_uri(CORE, "services", "mlflow")),
            get(
                list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
                list(vec![]),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])),
            ts_status(),
        ],
    );
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let annotations = &sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "mlflow"),
    )["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "5000");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    let status = &seen.last().unwrap().body["status"];
    let monitoring = condition(status, "Monitoring");
    assert_eq!(monitoring["status"], "False");
    assert_eq!(monitoring["reason"], "PrometheusOperatorMissing");
}

#[tokio::test]
async fn deleted_resources_are_left_to_garbage_collection() {
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let mut ts = tracking_server(json!({}));
    ts.metadata.deletion_timestamp = Some(time(NOW));
    let mut md = model_deployment(None);
    md.metadata.deletion_timestamp = Some(time(NOW));
    let server = serve(handle, vec![]);
    assert_eq!(
        guarded(tracking_server::reconcile(Arc::new(ts), ctx.clone()))
            .await
            .unwrap(),
        Action::await_change()
    );
    assert_eq!(
        guarded(model_deployment::reconcile(Arc::new(md), ctx))
            .await
            .unwrap(),
        Action::await_change()
    );
    assert!(server.await.unwrap().is_empty());
}

// === ModelDeployment ===

/// A ModelDeployment pass that writes all four children: created (`lists` empty, each name
/// checked first) or updated (`lists` holding our previous children).
fn md_full_pass(lists: Option<[Reply; 4]>) -> Vec<Step> {
    let create = lists.is_none();
    let [deployments, services, monitors, rules] =
        lists.unwrap_or_else(|| [list(vec![]), list(vec![]), list(vec![]), list(vec![])]);
    let mut steps = vec![
        get(
            format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
            Reply::Json(serde_json::to_value(tracking_server(json!({}))).unwrap()),
        ),
        get(DISCOVERY, monitoring_api()),
        get(KEDA_DISCOVERY, Reply::Status(404)),
        get(GATEWAY_DISCOVERY, Reply::Status(404)),
    ];
    for (prefix, plural, live) in [(APPS, "deployments", deployments), (CORE, "services", services)] {
        steps.push(get(list_uri(prefix, plural, SELECTOR_MD), live));
        if create {
            steps.push(absent(prefix, plural, "churn"));
        }
        steps.push(patch(apply_uri(prefix, plural, "churn")));
    }
    // The PodDisruptionBudget does not change with the model version.
    if create {
        steps.push(get(
            list_uri(POLICY, "poddisruptionbudgets", SELECTOR_MD),
            list(vec![]),
        ));
        steps.push(absent(POLICY, "poddisruptionbudgets", "churn"));
        steps.push(patch(apply_uri(POLICY, "poddisruptionbudgets", "churn")));
    } else {
        steps.push(get(
            list_uri(POLICY, "poddisruptionbudgets", SELECTOR_MD),
            md_budget(),
        ));
    }
    steps.push(get(
        list_uri(AUTOSCALING, "horizontalpodautoscalers", SELECTOR_MD),
        list(vec![]),
    ));
    steps.push(get(list_uri(NETWORKING, "ingresses", SELECTOR_MD), list(vec![])));
    for (prefix, plural, live) in [
        (MONITORING, "servicemonitors", monitors),
        (MONITORING, "prometheusrules", rules),
    ] {
        steps.push(get(list_uri(prefix, plural, SELECTOR_MD), live));
        if create {
            steps.push(absent(prefix, plural, "churn"));
        }
        steps.push(patch(apply_uri(prefix, plural, "churn")));
    }
    steps.push(post_event());
    steps.push(md_status());
    steps
}

#[tokio::test]
async fn md_create_path_resolves_the_alias_and_records_it() {
    let registry = FakeRegistry::resolving("3");
    let (ctx, handle) = context(registry.clone());
    let server = serve(handle, md_full_pass(None));
    let action = guarded(model_deployment::reconcile(Arc::new(model_deployment(None)), ctx))
        .await
        .unwrap();
    assert!(matches!(action, a if a == Action::requeue(std::time::Duration::from_secs(60))));
    let seen = server.await.unwrap();
    assert_eq!(
        *registry.asked.lock().unwrap(),
        vec![(
            "http://mlflow.ml.svc:5000".to_owned(),
            "models:/churn@champion".to_owned()
        )]
    );
    let deployment = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    );
    assert_eq!(deployment["metadata"]["labels"]["mlkube.io/model-version"], "3");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers[0]["command"][4], "models:/churn/3");
    assert_eq!(containers[1]["name"], "mlkube-sidecar");
    assert_eq!(containers[1]["readinessProbe"]["httpGet"]["path"], "/readyz");
    let service_ports =
        &sent(&seen, &http::Method::PATCH, &apply_uri(CORE, "services", "churn"))["spec"]["ports"];
    assert_eq!(service_ports[0]["port"], 8000);
    assert_eq!(service_ports[1]["port"], 8001);
    let rules = &sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(MONITORING, "prometheusrules", "churn"),
    )["spec"]["groups"][0]["rules"];
    assert_eq!(rules[0]["alert"], "MlkubeModelLatencyP99High");
    let event = &seen[seen.len() - 2].body;
    assert_eq!(event["reason"], "ModelVersionResolved");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["note"], "models:/churn@champion is version 3");
    assert_eq!(event["regarding"]["kind"], "ModelDeployment");
    let status = &seen.last().unwrap().body["status"];
    assert_eq!(status["resolvedModel"]["version"], "3");
    assert_eq!(status["resolvedModel"]["runId"], "run3");
    assert_eq!(status["resolvedModel"]["reference"], "models:/churn@champion");
    assert_eq!(status["url"], "http://churn.ml.svc:8000");
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/component=model-server,app.kubernetes.io/instance=churn,app.kubernetes.io/name=mlkube-model"
    );
    assert_eq!(condition(status, "ModelResolved")["status"], "True");
    assert_eq!(status["observedGeneration"], 2);
}

#[tokio::test]
async fn md_alias_move_rolls_the_deployment() {
    let md = model_deployment(Some(json!({"resolvedModel": {
        "reference": "models:/churn@champion", "name": "churn", "version": "3", "runId": "run3"}})));
    let old = md_children(&md, "3");
    let (ctx, handle) = context(FakeRegistry::resolving("4"));
    let server = serve(
        handle,
        md_full_pass(Some([
            list(vec![rolled_out(old.deployments[0].clone(), 2)]),
            list(applied_values(&old.services)),
            list(applied_values(&old.service_monitors)),
            list(applied_values(&old.prometheus_rules)),
        ])),
    );
    guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let deployment = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["mlkube.io/model-version"],
        "4"
    );
    let sidecar_args = deployment["spec"]["template"]["spec"]["containers"][1]["args"]
        .as_array()
        .unwrap();
    let at = sidecar_args.iter().position(|a| a == "--model-version").unwrap();
    assert_eq!(sidecar_args[at + 1], "4");
    assert_eq!(
        events(&seen)[0]["note"],
        "models:/churn@champion moved from version 3 to 4; rolling out"
    );
    assert_eq!(statuses(&seen)[0]["resolvedModel"]["version"], "4");
}

#[tokio::test]
async fn md_keeps_serving_when_the_tracking_server_is_down() {
    let md = model_deployment(Some(json!({"resolvedModel": {
        "reference": "models:/churn@champion", "name": "churn", "version": "3", "runId": "run3",
        "source": "mlflow-artifacts:/1/run3/artifacts/model"}})));
    let current = md_children(&md, "3");
    let (ctx, handle) = context(FakeRegistry::unreachable());
    let server = serve(
        handle,
        vec![
            get(
                format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
                Reply::Json(serde_json::to_value(tracking_server(json!({}))).unwrap()),
            ),
            get(DISCOVERY, monitoring_api()),
            get(KEDA_DISCOVERY, Reply::Status(404)),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(APPS, "deployments", SELECTOR_MD),
                list(vec![rolled_out(current.deployments[0].clone(), 2)]),
            ),
            get(
                list_uri(CORE, "services", SELECTOR_MD),
                list(applied_values(&current.services)),
            ),
            get(list_uri(POLICY, "poddisruptionbudgets", SELECTOR_MD), md_budget()),
            get(
                list_uri(AUTOSCALING, "horizontalpodautoscalers", SELECTOR_MD),
                list(vec![]),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_MD), list(vec![])),
            get(
                list_uri(MONITORING, "servicemonitors", SELECTOR_MD),
                list(applied_values(&current.service_monitors)),
            ),
            get(
                list_uri(MONITORING, "prometheusrules", SELECTOR_MD),
                list(applied_values(&current.prometheus_rules)),
            ),
            post_event(),
            md_status(),
        ],
    );
    let md = Arc::new(md);
    let err = guarded(model_deployment::reconcile(md.clone(), ctx.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "RegistryUnavailable");
    // Retries back off: 5s, then 10s.
    assert_eq!(
        model_deployment::error_policy(md.clone(), &err, ctx.clone()),
        Action::requeue(std::time::Duration::from_secs(5))
    );
    assert_eq!(
        model_deployment::error_policy(md, &err, ctx),
        Action::requeue(std::time::Duration::from_secs(10))
    );
    let seen = server.await.unwrap();
    assert_eq!(events(&seen)[0]["type"], "Warning");
    assert_eq!(events(&seen)[0]["reason"], "RegistryUnavailable");
    let status = statuses(&seen)[0];
    assert_eq!(status["resolvedModel"]["version"], "3");
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "Degraded")["status"], "True");
    assert_eq!(condition(status, "Degraded")["reason"], "RegistryUnavailable");
    assert_eq!(
        condition(status, "ModelResolved")["reason"],
        "RegistryUnavailable"
    );
}

#[tokio::test]
async fn md_never_resolved_and_registry_down_writes_only_status() {
    let (ctx, handle) = context(FakeRegistry::unreachable());
    let server = serve(
        handle,
        vec![
            get(
                format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
                Reply::Json(serde_json::to_value(tracking_server(json!({}))).unwrap()),
            ),
            post_event(),
            md_status(),
        ],
    );
    let err = guarded(model_deployment::reconcile(Arc::new(model_deployment(None)), ctx))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "RegistryUnavailable");
    let seen = server.await.unwrap();
    assert_eq!(seen[1].body["reason"], "RegistryUnavailable");
    let status = &seen[2].body["status"];
    assert_eq!(condition(status, "Ready")["reason"], "RegistryUnavailable");
    assert!(status["resolvedModel"].is_null());
}

#[tokio::test]
async fn md_unknown_alias_is_model_not_found_not_an_unavailable_registry() {
    // The registry answered (upstream MLflow: 400 "Registered model alias … not found."): the
    // spec names a model that is not there, which is not the registry being down.
    let md = model_deployment(Some(json!({"resolvedModel": {
        "reference": "models:/churn@champion", "name": "churn", "version": "3", "runId": "run3"}})));
    let current = md_children(&md, "3");
    let (ctx, handle) = context(FakeRegistry::not_found());
    let server = serve(
        handle,
        vec![
            get(
                format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
                Reply::Json(serde_json::to_value(tracking_server(json!({}))).unwrap()),
            ),
            get(DISCOVERY, monitoring_api()),
            get(KEDA_DISCOVERY, Reply::Status(404)),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(APPS, "deployments", SELECTOR_MD),
                list(vec![rolled_out(current.deployments[0].clone(), 2)]),
            ),
            get(
                list_uri(CORE, "services", SELECTOR_MD),
                list(applied_values(&current.services)),
            ),
            get(list_uri(POLICY, "poddisruptionbudgets", SELECTOR_MD), md_budget()),
            get(
                list_uri(AUTOSCALING, "horizontalpodautoscalers", SELECTOR_MD),
                list(vec![]),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_MD), list(vec![])),
            get(
                list_uri(MONITORING, "servicemonitors", SELECTOR_MD),
                list(applied_values(&current.service_monitors)),
            ),
            get(
                list_uri(MONITORING, "prometheusrules", SELECTOR_MD),
                list(applied_values(&current.prometheus_rules)),
            ),
            post_event(),
            md_status(),
        ],
    );
    let err = guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ModelNotFound");
    let seen = server.await.unwrap();
    assert_eq!(events(&seen)[0]["type"], "Warning");
    assert_eq!(events(&seen)[0]["reason"], "ModelNotFound");
    let status = statuses(&seen)[0];
    assert_eq!(condition(status, "ModelResolved")["reason"], "ModelNotFound");
    assert_eq!(condition(status, "Degraded")["reason"], "ModelNotFound");
    // The last resolved version keeps serving.
    assert_eq!(status["resolvedModel"]["version"], "3");
    assert_eq!(condition(status, "Ready")["status"], "True");
}

#[tokio::test]
async fn md_with_missing_tracking_server_says_so() {
    let registry = FakeRegistry::resolving("3");
    let (ctx, handle) = context(registry.clone());
    let server = serve(
        handle,
        vec![
            get(
                format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
                Reply::Status(404),
            ),
            md_status(),
        ],
    );
    guarded(model_deployment::reconcile(Arc::new(model_deployment(None)), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(
        condition(&seen[1].body["status"], "Ready")["reason"],
        "TrackingServerNotFound"
    );
    assert!(registry.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn md_up_to_date_makes_no_writes() {
    let md = model_deployment(None);
    let current = md_children(&md, "3");
    let reads = || {
        vec![
            get(
                format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
                Reply::Json(serde_json::to_value(tracking_server(json!({}))).unwrap()),
            ),
            get(DISCOVERY, monitoring_api()),
            get(KEDA_DISCOVERY, Reply::Status(404)),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(APPS, "deployments", SELECTOR_MD),
                list(vec![rolled_out(current.deployments[0].clone(), 2)]),
            ),
            get(
                list_uri(CORE, "services", SELECTOR_MD),
                list(applied_values(&current.services)),
            ),
            get(list_uri(POLICY, "poddisruptionbudgets", SELECTOR_MD), md_budget()),
            get(
                list_uri(AUTOSCALING, "horizontalpodautoscalers", SELECTOR_MD),
                list(vec![]),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_MD), list(vec![])),
            get(
                list_uri(MONITORING, "servicemonitors", SELECTOR_MD),
                list(applied_values(&current.service_monitors)),
            ),
            get(
                list_uri(MONITORING, "prometheusrules", SELECTOR_MD),
                list(applied_values(&current.prometheus_rules)),
            ),
        ]
    };
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let mut steps = reads();
    steps.push(post_event());
    steps.push(md_status());
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md.clone()), ctx))
        .await
        .unwrap();
    let status = server.await.unwrap().last().unwrap().body["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(status["readyReplicas"], 2);

    let mut settled = md;
    settled.status = Some(serde_json::from_value(status).unwrap());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, reads());
    guarded(model_deployment::reconcile(Arc::new(settled), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert!(seen.iter().all(|s| s.method == http::Method::GET), "{seen:#?}");
}

#[tokio::test]
async fn md_with_an_external_tracking_uri_uses_its_credentials() {
    let registry = FakeRegistry::resolving("3");
    let (ctx, handle) = context(registry.clone());
    let mut md = model_deployment(None);
    md.spec.tracking_server_ref = None;
    md.spec.tracking_uri = Some("https://mlflow.example.com".into());
    md.spec.tracking_credentials_secret_ref = serde_json::from_value(json!({"name": "reader"})).unwrap();
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "reader", "namespace": NAMESPACE},
        "data": {"username": "cmVhZGVy", "password": "cGFzc3dvcmQtcGFzc3dvcmQ="}});
    let mut steps = vec![get(
        format!("{CORE}/namespaces/{NAMESPACE}/secrets/reader"),
        Reply::Json(secret),
    )];
    steps.extend(md_full_pass(None).into_iter().skip(1));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(
        *registry.asked.lock().unwrap(),
        vec![(
            "reader@https://mlflow.example.com".to_owned(),
            "models:/churn@champion".to_owned()
        )]
    );
    let sidecar_env = &sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    )["spec"]["template"]["spec"]["containers"][1]["env"];
    assert_eq!(sidecar_env[0]["name"], "MLFLOW_TRACKING_PASSWORD");
    assert_eq!(sidecar_env[0]["valueFrom"]["secretKeyRef"]["name"], "reader");
    assert_eq!(sidecar_env[2]["name"], "MLFLOW_TRACKING_USERNAME");
}

#[tokio::test]
async fn md_without_prometheus_operator_falls_back_to_annotations() {
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(
        handle,
        vec![
            get(
                format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
                Reply::Json(serde_json::to_value(tracking_server(json!({}))).unwrap()),
            ),
            get(DISCOVERY, Reply::Status(404)),
            get(KEDA_DISCOVERY, Reply::Status(404)),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(list_uri(APPS, "deployments", SELECTOR_MD), list(vec![])),
            absent(APPS, "deployments", "churn"),
            patch(apply_uri(APPS, "deployments", "churn")),
            get(list_uri(CORE, "services", SELECTOR_MD), list(vec![])),
            absent(CORE, "services", "churn"),
            patch(apply_uri(CORE, "services", "churn")),
            get(
                list_uri(POLICY, "poddisruptionbudgets", SELECTOR_MD),
                list(vec![]),
            ),
            absent(POLICY, "poddisruptionbudgets", "churn"),
            patch(apply_uri(POLICY, "poddisruptionbudgets", "churn")),
            get(
                list_uri(AUTOSCALING, "horizontalpodautoscalers", SELECTOR_MD),
                list(vec![]),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_MD), list(vec![])),
            post_event(),
            md_status(),
        ],
    );
    guarded(model_deployment::reconcile(Arc::new(model_deployment(None)), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let annotations = &sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    )["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "8001");
    let monitoring = condition(&seen.last().unwrap().body["status"], "Monitoring");
    assert_eq!(monitoring["status"], "False");
    assert_eq!(monitoring["reason"], "PrometheusOperatorMissing");
}

#[tokio::test]
async fn ts_invalid_spec_writes_only_status() {
    // The CRD's CEL rule refuses this at `kubectl apply`; the operator refuses it too (an old
    // CRD, or a write that bypassed validation) and touches no child.
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let ts = tracking_server(json!({"replicas": 2}));
    let server = serve(
        handle,
        vec![
            get(DISCOVERY, monitoring_api()),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            ts_status(),
            post_event(),
        ],
    );
    let err = guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "InvalidSpec");
    let seen = server.await.unwrap();
    assert_eq!(events(&seen)[0]["reason"], "InvalidSpec");
    assert_eq!(events(&seen)[0]["action"], "Validate");
    let status = statuses(&seen)[0];
    assert_eq!(condition(status, "Ready")["reason"], "InvalidSpec");
    assert_eq!(condition(status, "Degraded")["status"], "True");
    assert!(
        condition(status, "Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("sqlite backendStore supports exactly one replica")
    );
}

// === API errors: every failed stage writes the status, publishes an Event, backs off ===

fn patch_answered(uri: String, reply: Reply) -> Step {
    Step {
        method: http::Method::PATCH,
        uri,
        reply,
    }
}

/// A settled, healthy ModelDeployment serving version 3 with two replicas.
fn healthy_md() -> ModelDeployment {
    model_deployment(Some(json!({
        "observedGeneration": 2,
        "resolvedModel": {"reference": "models:/churn@champion", "name": "churn", "version": "3", "runId": "run3"},
        "url": "http://churn.ml.svc:8000", "replicas": 2, "readyReplicas": 2,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Available", "message": "2/2 replicas available",
             "lastTransitionTime": EARLIER, "observedGeneration": 2},
            {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "no problems found",
             "lastTransitionTime": EARLIER, "observedGeneration": 2},
            {"type": "ModelResolved", "status": "True", "reason": "Resolved",
             "message": "models:/churn@champion is version 3", "lastTransitionTime": EARLIER, "observedGeneration": 2},
        ],
    })))
}

/// `healthy_md` scaled to three replicas (generation 3), and the steps up to the Deployment
/// apply, whose answer is `reply`.
fn md_scaled_until_deployment_apply(reply: Reply) -> (ModelDeployment, Vec<Step>) {
    let old = healthy_md();
    let current = md_children(&old, "3");
    let mut md = old;
    md.spec.replicas = 3;
    md.metadata.generation = Some(3);
    let steps = vec![
        get(
            format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
            Reply::Json(serde_json::to_value(tracking_server(json!({}))).unwrap()),
        ),
        get(DISCOVERY, monitoring_api()),
        get(KEDA_DISCOVERY, Reply::Status(404)),
        get(GATEWAY_DISCOVERY, Reply::Status(404)),
        get(
            list_uri(APPS, "deployments", SELECTOR_MD),
            list(vec![rolled_out(current.deployments[0].clone(), 2)]),
        ),
        patch_answered(apply_uri(APPS, "deployments", "churn"), reply),
    ];
    (md, steps)
}

#[tokio::test]
async fn md_forbidden_apply_writes_the_status_and_an_event_then_backs_off() {
    // RBAC: the operator may not patch Deployments. Before, the reconcile returned before the
    // status, and Ready=True stayed on a ModelDeployment whose spec was never applied.
    let (md, mut steps) =
        md_scaled_until_deployment_apply(forbidden("patch", "deployments", "apps", "churn"));
    steps.push(md_status());
    steps.push(post_event());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    let md = Arc::new(md);
    let err = guarded(model_deployment::reconcile(md.clone(), ctx.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Forbidden");
    // Backoff, never a hot loop: 5s, 10s, 20s.
    for secs in [5, 10, 20] {
        assert_eq!(
            model_deployment::error_policy(md.clone(), &err, ctx.clone()),
            Action::requeue(std::time::Duration::from_secs(secs))
        );
    }
    drop(ctx);
    let seen = server.await.unwrap();
    let status = statuses(&seen)[0];
    assert_eq!(status["observedGeneration"], 3);
    let ready = condition(status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("Forbidden"))
    );
    assert_eq!(ready["lastTransitionTime"], NOW);
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("could not apply Deployment \"churn\"")
            && message.contains("cannot patch resource \"deployments\"")
            && message.contains("HTTP 403"),
        "{message}"
    );
    assert_eq!(condition(status, "Degraded")["reason"], "Forbidden");
    // What the failure does not touch stays as it was.
    assert_eq!(condition(status, "ModelResolved")["status"], "True");
    assert_eq!(status["resolvedModel"]["version"], "3");
    let event = events(&seen)[0];
    assert_eq!(
        (
            event["type"].as_str(),
            event["reason"].as_str(),
            event["action"].as_str()
        ),
        (Some("Warning"), Some("Forbidden"), Some("Apply"))
    );
    assert_eq!(event["regarding"]["name"], "churn");
}

#[tokio::test]
async fn a_failing_object_is_not_rewritten_on_every_retry() {
    // The second attempt fails the same way: no status write (it would re-trigger the watch),
    // no second Event; only the reads and the failing apply.
    let (md, mut steps) =
        md_scaled_until_deployment_apply(forbidden("patch", "deployments", "apps", "churn"));
    steps.push(md_status());
    steps.push(post_event());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md.clone()), ctx))
        .await
        .unwrap_err();
    let failed = statuses(&server.await.unwrap())[0].clone();

    let mut again = md;
    again.status = Some(serde_json::from_value(failed).unwrap());
    let (_, steps) = md_scaled_until_deployment_apply(forbidden("patch", "deployments", "apps", "churn"));
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    let err = guarded(model_deployment::reconcile(Arc::new(again), ctx))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Forbidden");
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 6, "{seen:#?}");
}

/// The TrackingServer steps up to (and including) the list of Services, with every earlier child
/// current.
fn ts_until_services(ts: &TrackingServer, services: Reply) -> Vec<Step> {
    let children = ts_children(ts, true);
    vec![
        get(DISCOVERY, monitoring_api()),
        get(GATEWAY_DISCOVERY, Reply::Status(404)),
        get(
            list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
            list(applied_values(&children.persistent_volume_claims)),
        ),
        get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
        get(
            list_uri(APPS, "deployments", SELECTOR_TS),
            list(vec![rolled_out(children.deployments[0].clone(), 1)]),
        ),
        get(list_uri(CORE, "serviceaccounts", SELECTOR_TS), list(vec![])),
        get(list_uri(APPS, "daemonsets", SELECTOR_TS), list(vec![])),
        get(list_uri(CORE, "services", SELECTOR_TS), services),
    ]
}

#[tokio::test]
async fn conflict_invalid_and_server_errors_have_their_own_reasons() {
    let invalid = api_error(
        422,
        "Invalid",
        "Service \"mlflow\" is invalid: spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        json!({"name": "mlflow", "kind": "Service",
               "causes": [{"reason": "FieldValueForbidden", "field": "spec.ports[0].nodePort"}]}),
    );
    let conflict = api_error(
        409,
        "Conflict",
        "Operation cannot be fulfilled on services \"mlflow\": the object has been modified; please apply your changes to the latest version and try again",
        json!({"name": "mlflow", "kind": "services"}),
    );
    for (reply, reason, needle) in [
        (conflict, "Conflict", "the object has been modified"),
        (invalid, "Invalid", "may not be used when `type` is 'ClusterIP'"),
        (Reply::Status(500), "ApiServerError", "HTTP 500"),
        (Reply::Status(503), "ApiServerError", "ServiceUnavailable"),
    ] {
        let ts = tracking_server(json!({}));
        let mut steps = ts_until_services(&ts, list(vec![]));
        steps.push(absent(CORE, "services", "mlflow"));
        steps.push(patch_answered(apply_uri(CORE, "services", "mlflow"), reply));
        steps.push(ts_status());
        steps.push(post_event());
        let (ctx, handle) = context(FakeRegistry::resolving("3"));
        let server = serve(handle, steps);
        let err = guarded(tracking_server::reconcile(Arc::new(ts), ctx))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), reason);
        let seen = server.await.unwrap();
        let status = &seen[seen.len() - 2].body["status"];
        let degraded = condition(status, "Degraded");
        assert_eq!(degraded["reason"], reason);
        assert!(
            degraded["message"].as_str().unwrap().contains(needle),
            "{reason}: {degraded}"
        );
        assert_eq!(condition(status, "Ready")["status"], "False");
        assert_eq!(seen.last().unwrap().body["reason"], reason);
    }
}

#[tokio::test]
async fn throttled_and_expired_lists_back_off_as_the_server_asks() {
    for (reply, reason, first, second) in [
        // 429 with retryAfterSeconds 30: never sooner than asked.
        (throttled(30), "Throttled", 30, 30),
        // 410 (a compacted resourceVersion): the next attempt lists afresh, after the backoff.
        (expired(), "Expired", 5, 10),
    ] {
        let ts = Arc::new(tracking_server(json!({})));
        let (ctx, handle) = context(FakeRegistry::resolving("3"));
        let server = serve(
            handle,
            vec![
                get(DISCOVERY, monitoring_api()),
                get(GATEWAY_DISCOVERY, Reply::Status(404)),
                get(list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS), reply),
                ts_status(),
                post_event(),
            ],
        );
        let err = guarded(tracking_server::reconcile(ts.clone(), ctx.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), reason);
        assert_eq!(
            tracking_server::error_policy(ts.clone(), &err, ctx.clone()),
            Action::requeue(std::time::Duration::from_secs(first))
        );
        assert_eq!(
            tracking_server::error_policy(ts, &err, ctx.clone()),
            Action::requeue(std::time::Duration::from_secs(second))
        );
        drop(ctx);
        let seen = server.await.unwrap();
        assert_eq!(condition(statuses(&seen)[0], "Ready")["reason"], reason);
        assert_eq!(events(&seen)[0]["action"], "Apply");
    }
}

// === Name collisions ===

/// A Service named like our child that the user created (no owner).
fn users_service(annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "mlflow", "namespace": NAMESPACE, "uid": "22222222-0000-4000-8000-000000000000",
                        "resourceVersion": "77", "creationTimestamp": EARLIER, "annotations": annotations,
                        "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
                                           "apiVersion": "v1", "time": EARLIER, "fieldsType": "FieldsV1",
                                           "fieldsV1": {"f:spec": {"f:ports": {}}}}]},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.12", "selector": {"app": "my-mlflow"},
                    "ports": [{"name": "web", "port": 5000, "protocol": "TCP", "targetPort": 5000}]}})
}

#[tokio::test]
async fn an_object_we_do_not_own_is_never_taken_over() {
    // A user's Service/mlflow, and one that another TrackingServer controls.
    let mut others = users_service(json!({}));
    others["metadata"]["ownerReferences"] = json!([{"apiVersion": "mlkube.io/v1alpha1", "kind": "TrackingServer",
        "name": "other", "uid": "33333333-0000-4000-8000-000000000000", "controller": true}]);
    for (existing, holder) in [
        (
            users_service(json!({"note": "mine"})),
            "not controlled by anything",
        ),
        (others, "controlled by TrackingServer/other"),
    ] {
        let ts = tracking_server(json!({}));
        let mut steps = ts_until_services(&ts, list(vec![]));
        steps.push(get(by_name(CORE, "services", "mlflow"), list(vec![existing])));
        steps.push(ts_status());
        steps.push(post_event());
        let (ctx, handle) = context(FakeRegistry::resolving("3"));
        let server = serve(handle, steps);
        let err = guarded(tracking_server::reconcile(Arc::new(ts), ctx))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "NameConflict");
        let seen = server.await.unwrap();
        assert!(
            !seen
                .iter()
                .any(|s| s.method == http::Method::PATCH && s.uri.contains("/services/")),
            "{seen:#?}"
        );
        let ready = condition(&seen[seen.len() - 2].body["status"], "Ready");
        assert_eq!(ready["reason"], "NameConflict");
        let message = ready["message"].as_str().unwrap();
        assert!(
            message.contains("Service \"mlflow\" already exists")
                && message.contains(holder)
                && message.contains("mlkube.io/allow-adoption=true"),
            "{message}"
        );
        assert_eq!(seen.last().unwrap().body["reason"], "NameConflict");
    }
}

#[tokio::test]
async fn an_object_annotated_for_adoption_is_adopted() {
    let ts = tracking_server(json!({}));
    let mut steps = ts_until_services(&ts, list(vec![]));
    steps.push(get(
        by_name(CORE, "services", "mlflow"),
        list(vec![users_service(json!({"mlkube.io/allow-adoption": "true"}))]),
    ));
    steps.push(patch(apply_uri(CORE, "services", "mlflow")));
    steps.push(get(
        list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
        list(vec![]),
    ));
    steps.push(get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])));
    steps.push(get(
        list_uri(MONITORING, "servicemonitors", SELECTOR_TS),
        list(vec![]),
    ));
    steps.push(absent(MONITORING, "servicemonitors", "mlflow"));
    steps.push(patch(apply_uri(MONITORING, "servicemonitors", "mlflow")));
    steps.push(ts_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let service = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(CORE, "services", "mlflow"),
    );
    assert_eq!(service["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(
        service["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "mlkube"
    );
}

// === Live objects as a real API server returns them ===

/// The hand-written fixture `tests/fixtures/apiserver/<file>`, each object's applied-intent
/// annotation filled in from the built child of the same kind (the API server keeps it verbatim).
fn apiserver_fixture(file: &str, built: &build::ChildObjects) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/apiserver")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut objects: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let built: Vec<Value> = [
        applied_hash_input(&built.deployments),
        applied_hash_input(&built.services),
        applied_hash_input(&built.service_monitors),
        applied_hash_input(&built.prometheus_rules),
    ]
    .concat();
    for object in &mut objects {
        let twin = built
            .iter()
            .find(|b| b["kind"] == object["kind"] && b["metadata"]["name"] == object["metadata"]["name"])
            .unwrap_or_else(|| {
                panic!(
                    "{file}: the operator builds no {} {}",
                    object["kind"], object["metadata"]["name"]
                )
            });
        assert_eq!(
            object["metadata"]["annotations"]["mlkube.io/applied-hash"],
            "APPLIED_HASH"
        );
        object["metadata"]["annotations"]["mlkube.io/applied-hash"] =
            json!(mlkube_operator::apply::drift::applied_hash(twin));
    }
    objects
}

fn applied_hash_input<T: serde::Serialize>(items: &[T]) -> Vec<Value> {
    items.iter().map(|i| serde_json::to_value(i).unwrap()).collect()
}

#[tokio::test]
async fn md_against_objects_as_the_api_server_returns_them_makes_no_writes() {
    // Defaulted fields, normalised quantities (`cpu: "0.5"` is 500m, 1024Mi is 1Gi), server
    // metadata, other managers' entries and status: none of it is drift. Comparing whole objects
    // saw drift here on every resync and re-applied forever.
    let mut md = model_deployment(None);
    md.spec.resources = serde_json::from_value(json!({
        "requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "2048Mi"}}))
    .unwrap();
    let live = apiserver_fixture("modeldeployment-churn.yaml", &md_children(&md, "3"));
    let of = |kind: &str| -> Reply { list(live.iter().filter(|o| o["kind"] == kind).cloned().collect()) };
    let reads = || {
        vec![
            get(
                format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
                Reply::Json(serde_json::to_value(tracking_server(json!({}))).unwrap()),
            ),
            get(DISCOVERY, monitoring_api()),
            get(KEDA_DISCOVERY, Reply::Status(404)),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(list_uri(APPS, "deployments", SELECTOR_MD), of("Deployment")),
            get(list_uri(CORE, "services", SELECTOR_MD), of("Service")),
            get(list_uri(POLICY, "poddisruptionbudgets", SELECTOR_MD), md_budget()),
            get(
                list_uri(AUTOSCALING, "horizontalpodautoscalers", SELECTOR_MD),
                list(vec![]),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_MD), list(vec![])),
            get(
                list_uri(MONITORING, "servicemonitors", SELECTOR_MD),
                of("ServiceMonitor"),
            ),
            get(
                list_uri(MONITORING, "prometheusrules", SELECTOR_MD),
                of("PrometheusRule"),
            ),
        ]
    };
    // First pass: the children are current; only the status (and the resolved-version Event).
    let mut steps = reads();
    steps.push(post_event());
    steps.push(md_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md.clone()), ctx))
        .await
        .unwrap();
    let status = server.await.unwrap().last().unwrap().body["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Progressing")["reason"], "RolloutComplete");

    // Every resync after that: reads only.
    let mut settled = md;
    settled.status = Some(serde_json::from_value(status).unwrap());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, reads());
    guarded(model_deployment::reconcile(Arc::new(settled), ctx))
        .await
        .unwrap();
    assert_eq!(server.await.unwrap().len(), 11);
}

#[test]
fn the_fixture_is_drift_when_someone_else_takes_a_field() {
    // The same fixture after `kubectl scale deployment churn --replicas 5`: the API server gives
    // spec.replicas to kubectl's manager, and the operator applies again.
    let mut md = model_deployment(None);
    md.spec.resources = serde_json::from_value(json!({
        "requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"memory": "2048Mi"}}))
    .unwrap();
    let built = md_children(&md, "3");
    let mut live = apiserver_fixture("modeldeployment-churn.yaml", &built)
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    let desired = serde_json::to_value(&built.deployments[0]).unwrap();
    let hash = mlkube_operator::apply::drift::applied_hash(&desired);
    let mut with_annotation = desired.clone();
    with_annotation["metadata"]["annotations"] = json!({"mlkube.io/applied-hash": hash});
    assert_eq!(
        mlkube_operator::apply::drift::drift(&live, &with_annotation, &hash, "mlkube-operator"),
        None
    );
    live["spec"]["replicas"] = json!(5);
    take_fields(&mut live, "kubectl", &["/f:spec/f:replicas"]);
    assert_eq!(
        mlkube_operator::apply::drift::drift(&live, &with_annotation, &hash, "mlkube-operator").as_deref(),
        Some(".spec.replicas: owned by another field manager")
    );
}

// === https tracking servers ===

/// A ModelDeployment on an external `https://` tracking server with a private CA (ConfigMap
/// `tracking-ca`, key `ca.crt`) and payload capture on.
fn md_on_https(bundle: Value) -> ModelDeployment {
    let mut md = model_deployment(None);
    md.spec.tracking_server_ref = None;
    md.spec.tracking_uri = Some("https://mlflow.example.com".into());
    md.spec.tracking_ca_bundle = Some(serde_json::from_value(bundle).unwrap());
    md.spec.sidecar.capture.sample_rate = 0.1;
    md
}

#[tokio::test]
async fn md_on_an_https_tracking_server_trusts_its_ca_bundle_end_to_end() {
    // The operator's own lookups get the bundle; both containers mount it; the sidecar captures
    // over https (SSL_CERT_FILE), the model server loads over https (MLflow's cert path).
    let registry = FakeRegistry::resolving("3");
    let (ctx, handle) = context(registry.clone());
    let pem = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.crt"),
    )
    .unwrap();
    let md = md_on_https(json!({"configMapKeyRef": {"name": "tracking-ca", "key": "ca.crt"}}));
    let mut steps = vec![get(
        by_name(CORE, "configmaps", "tracking-ca"),
        list(vec![json!({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "tracking-ca", "namespace": NAMESPACE},
                         "data": {"ca.crt": pem}})]),
    )];
    steps.extend(md_full_pass(None).into_iter().skip(1));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(
        *registry.asked.lock().unwrap(),
        vec![(
            "https://mlflow.example.com ca=-----BEGIN CERTIFICATE-----".to_owned(),
            "models:/churn@champion".to_owned()
        )]
    );
    let pod = &sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    )["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tracking-ca")
        .unwrap();
    assert_eq!(
        volume["configMap"],
        json!({"name": "tracking-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]})
    );
    let env = |container: usize, name: &str| {
        pod["containers"][container]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env(0, "MLFLOW_TRACKING_SERVER_CERT_PATH"),
        Some(json!("/etc/mlkube/tracking-ca/ca.crt"))
    );
    assert_eq!(
        env(1, "SSL_CERT_FILE"),
        Some(json!("/etc/mlkube/tracking-ca/ca.crt"))
    );
    for container in 0..2 {
        let mounts = pod["containers"][container]["volumeMounts"].as_array().unwrap();
        assert!(
            mounts.iter().any(|m| m["name"] == "tracking-ca"
                && m["mountPath"] == "/etc/mlkube/tracking-ca"
                && m["readOnly"] == true),
            "{mounts:?}"
        );
    }
    let args = pod["containers"][1]["args"].as_array().unwrap();
    let at = args.iter().position(|a| a == "--tracking-uri").unwrap();
    assert_eq!(args[at + 1], "https://mlflow.example.com");
}

#[tokio::test]
async fn md_with_a_missing_ca_bundle_says_so() {
    let registry = FakeRegistry::resolving("3");
    let (ctx, handle) = context(registry.clone());
    let md = md_on_https(json!({"secretKeyRef": {"name": "tracking-ca", "key": "ca.crt"}}));
    let server = serve(
        handle,
        vec![
            get(object_uri(CORE, "secrets", "tracking-ca"), Reply::Status(404)),
            md_status(),
        ],
    );
    guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let ready = condition(&seen[1].body["status"], "Ready");
    assert_eq!(ready["reason"], "CaBundleNotFound");
    assert_eq!(
        ready["message"],
        "trackingCaBundle: Secret tracking-ca with key ca.crt not found in namespace ml"
    );
    assert!(registry.asked.lock().unwrap().is_empty());
}

// === Object-store artifacts ===

/// A TrackingServer on PostgreSQL with `replicas` pods, this artifact store and `extra` spec.
fn ts_on_object_store(replicas: i32, artifact_store: Value, extra: Value) -> TrackingServer {
    let mut spec = json!({
        "replicas": replicas,
        "backendStore": {"postgres": {"uriSecretRef": {"name": "mlflow-db", "key": "uri"}}},
        "artifactStore": artifact_store,
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    tracking_server(spec)
}

/// The first reconcile of a TrackingServer that needs no volume and no auth ConfigMap: every
/// request, in order; nothing is written for PVCs (there are none to create).
fn ts_create_pass_without_volumes() -> Vec<Step> {
    vec![
        get(DISCOVERY, monitoring_api()),
        get(GATEWAY_DISCOVERY, Reply::Status(404)),
        get(
            list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
            list(vec![]),
        ),
        get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
        get(list_uri(APPS, "deployments", SELECTOR_TS), list(vec![])),
        absent(APPS, "deployments", "mlflow"),
        patch(apply_uri(APPS, "deployments", "mlflow")),
        get(list_uri(CORE, "serviceaccounts", SELECTOR_TS), list(vec![])),
        get(list_uri(APPS, "daemonsets", SELECTOR_TS), list(vec![])),
        get(list_uri(CORE, "services", SELECTOR_TS), list(vec![])),
        absent(CORE, "services", "mlflow"),
        patch(apply_uri(CORE, "services", "mlflow")),
        // Several replicas: the default PodDisruptionBudget.
        get(
            list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
            list(vec![]),
        ),
        absent(POLICY, "poddisruptionbudgets", "mlflow"),
        patch(apply_uri(POLICY, "poddisruptionbudgets", "mlflow")),
        get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])),
        get(list_uri(MONITORING, "servicemonitors", SELECTOR_TS), list(vec![])),
        absent(MONITORING, "servicemonitors", "mlflow"),
        patch(apply_uri(MONITORING, "servicemonitors", "mlflow")),
        ts_status(),
    ]
}

/// Reconcile `ts` once through its whole create path; the applied Deployment.
async fn applied_server_deployment(ts: TrackingServer) -> Value {
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, ts_create_pass_without_volumes());
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let status = &seen.last().unwrap().body["status"];
    assert_eq!(condition(status, "Degraded")["status"], "False");
    sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "mlflow"),
    )
    .clone()
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn env_named<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
}

/// Every store credential a container could carry, whatever the cloud.
fn store_credentials(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str())
        .filter(|n| {
            n.starts_with("AWS_")
                || n.starts_with("AZURE_")
                || n.starts_with("GOOGLE_")
                || *n == "MLFLOW_S3_ENDPOINT_URL"
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn ts_proxied_s3_with_three_replicas() {
    let ts = ts_on_object_store(
        3,
        json!({"s3": {"bucket": "mlflow-artifacts", "prefix": "prod", "region": "eu-west-1",
                      "endpoint": "http://minio.storage.svc:9000",
                      "credentialsSecretRef": {"name": "mlflow-s3"}}}),
        json!({}),
    );
    let deployment = applied_server_deployment(ts).await;
    assert_eq!(deployment["spec"]["replicas"], 3);
    // Every replica reaches the same bucket: pods roll, they are not recreated.
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &deployment["spec"]["template"]["spec"];
    let server = &pod["containers"][0];
    let args = args_of(server);
    assert!(
        args.windows(4).any(|w| w
            == [
                "--default-artifact-root",
                "mlflow-artifacts:/",
                "--artifacts-destination",
                "s3://mlflow-artifacts/prod"
            ]),
        "{args:?}"
    );
    // The keys reach the server only through secretKeyRef, never as literal values.
    for (name, key) in [
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ] {
        let var = env_named(server, name).unwrap();
        assert!(var["value"].is_null(), "{var}");
        assert_eq!(
            var["valueFrom"]["secretKeyRef"],
            json!({"name": "mlflow-s3", "key": key})
        );
    }
    assert_eq!(env_named(server, "AWS_REGION").unwrap()["value"], "eu-west-1");
    assert_eq!(
        env_named(server, "MLFLOW_S3_ENDPOINT_URL").unwrap()["value"],
        "http://minio.storage.svc:9000"
    );
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["persistentVolumeClaim"].is_null())
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(pod["serviceAccountName"].is_null());
}

#[tokio::test]
async fn ts_gcs_with_a_mounted_key_file() {
    let ts = ts_on_object_store(
        2,
        json!({"gcs": {"bucket": "example-mlflow-artifacts", "prefix": "prod",
                       "credentialsSecretRef": {"name": "mlflow-gcs-key", "key": "sa.json"}}}),
        json!({}),
    );
    let deployment = applied_server_deployment(ts).await;
    let pod = &deployment["spec"]["template"]["spec"];
    let server = &pod["containers"][0];
    assert!(
        args_of(server)
            .windows(2)
            .any(|w| w == ["--artifacts-destination", "gs://example-mlflow-artifacts/prod"])
    );
    assert_eq!(
        env_named(server, "GOOGLE_APPLICATION_CREDENTIALS").unwrap(),
        &json!({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/etc/mlkube/gcs/key.json"})
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "gcs-credentials")
        .unwrap();
    assert_eq!(
        volume["secret"],
        json!({"secretName": "mlflow-gcs-key", "defaultMode": 288,
               "items": [{"key": "sa.json", "path": "key.json"}]})
    );
    let mount = server["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "gcs-credentials")
        .unwrap();
    assert_eq!(
        mount,
        &json!({"name": "gcs-credentials", "mountPath": "/etc/mlkube/gcs", "readOnly": true})
    );
}

#[tokio::test]
async fn ts_azure_with_workload_identity() {
    let ts = ts_on_object_store(
        2,
        json!({"azure": {"account": "examplemlstore", "container": "mlflow", "prefix": "prod", "dfs": true}}),
        json!({"serviceAccountName": "mlflow-azure"}),
    );
    let deployment = applied_server_deployment(ts).await;
    let template = &deployment["spec"]["template"];
    let pod = &template["spec"];
    let server = &pod["containers"][0];
    assert!(args_of(server).windows(2).any(|w| w
        == [
            "--artifacts-destination",
            "abfss://mlflow@examplemlstore.dfs.core.windows.net/prod"
        ]));
    // The identity's webhook injects AZURE_CLIENT_ID, AZURE_TENANT_ID and the federated token
    // into pods labelled for it; the operator adds no key and no API token.
    assert_eq!(pod["serviceAccountName"], "mlflow-azure");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        template["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    assert!(deployment["spec"]["selector"]["matchLabels"]["azure.workload.identity/use"].is_null());
    assert_eq!(store_credentials(server), Vec::<String>::new());
}

// === A dedicated artifact server ===

/// Two tracking replicas on PostgreSQL with proxied S3 behind a dedicated artifact server
/// (`dedicated: false`: the same TrackingServer without it).
fn ts_with_artifact_server(dedicated: bool) -> TrackingServer {
    let mut store = json!({"s3": {"bucket": "mlflow-artifacts", "prefix": "prod", "region": "eu-west-1",
                                  "credentialsSecretRef": {"name": "mlflow-s3"}}});
    if dedicated {
        store["dedicatedServer"] = json!({});
    }
    ts_on_object_store(2, store, json!({}))
}

#[tokio::test]
async fn ts_dedicated_artifact_server_create_path() {
    let ts = ts_with_artifact_server(true);
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(
        handle,
        vec![
            get(DISCOVERY, monitoring_api()),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
                list(vec![]),
            ),
            get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "deployments", SELECTOR_TS), list(vec![])),
            absent(APPS, "deployments", "mlflow"),
            patch(apply_uri(APPS, "deployments", "mlflow")),
            absent(APPS, "deployments", "mlflow-artifacts"),
            patch(apply_uri(APPS, "deployments", "mlflow-artifacts")),
            get(list_uri(CORE, "serviceaccounts", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "daemonsets", SELECTOR_TS), list(vec![])),
            get(list_uri(CORE, "services", SELECTOR_TS), list(vec![])),
            absent(CORE, "services", "mlflow"),
            patch(apply_uri(CORE, "services", "mlflow")),
            absent(CORE, "services", "mlflow-artifacts"),
            patch(apply_uri(CORE, "services", "mlflow-artifacts")),
            get(
                list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
                list(vec![]),
            ),
            absent(POLICY, "poddisruptionbudgets", "mlflow"),
            patch(apply_uri(POLICY, "poddisruptionbudgets", "mlflow")),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])),
            get(list_uri(MONITORING, "servicemonitors", SELECTOR_TS), list(vec![])),
            absent(MONITORING, "servicemonitors", "mlflow"),
            patch(apply_uri(MONITORING, "servicemonitors", "mlflow")),
            absent(MONITORING, "servicemonitors", "mlflow-artifacts"),
            patch(apply_uri(MONITORING, "servicemonitors", "mlflow-artifacts")),
            ts_status(),
        ],
    );
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();

    // The tracking server: no artifact proxy, no store credentials.
    let tracking = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "mlflow"),
    );
    let container = &tracking["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        args_of(container),
        [
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
    assert_eq!(store_credentials(container), Vec::<String>::new());
    assert_eq!(tracking["spec"]["replicas"], 2);

    // The artifact server: the proxy alone, with the bucket's keys from the Secret.
    let artifacts = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "mlflow-artifacts"),
    );
    assert_eq!(artifacts["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(artifacts["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(artifacts["spec"]["replicas"], 2);
    assert_eq!(artifacts["spec"]["strategy"]["type"], "RollingUpdate");
    let pod = &artifacts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        args_of(container),
        [
            "--artifacts-only",
            "--host",
            "0.0.0.0",
            "--port",
            "5000",
            "--artifacts-destination",
            "s3://mlflow-artifacts/prod",
            "--expose-prometheus",
            "/tmp/prometheus"
        ]
    );
    assert_eq!(
        store_credentials(container),
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_REGION"
        ]
    );
    assert_eq!(
        env_named(container, "AWS_SECRET_ACCESS_KEY").unwrap()["valueFrom"]["secretKeyRef"],
        json!({"name": "mlflow-s3", "key": "AWS_SECRET_ACCESS_KEY"})
    );
    assert!(env_named(container, "MLKUBE_BACKEND_STORE_URI").is_none());
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let component = "app.kubernetes.io/component";
    assert_eq!(
        artifacts["spec"]["selector"]["matchLabels"][component],
        "artifacts"
    );
    assert_eq!(
        artifacts["spec"]["template"]["metadata"]["labels"][component],
        "artifacts"
    );

    // Each Service and ServiceMonitor selects its own component.
    for (name, component_value) in [("mlflow", "tracking-server"), ("mlflow-artifacts", "artifacts")] {
        let service = sent(&seen, &http::Method::PATCH, &apply_uri(CORE, "services", name));
        assert_eq!(service["spec"]["selector"][component], component_value);
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "http", "port": 5000, "protocol": "TCP", "targetPort": "http"}])
        );
        let monitor = sent(
            &seen,
            &http::Method::PATCH,
            &apply_uri(MONITORING, "servicemonitors", name),
        );
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"][component],
            component_value
        );
    }
    let status = statuses(&seen)[0];
    assert_eq!(
        condition(status, "Monitoring")["message"],
        "ServiceMonitors mlflow and mlflow-artifacts scrape port http"
    );
    assert_eq!(status["url"], "http://mlflow.ml.svc:5000");
}

#[tokio::test]
async fn ts_is_ready_only_when_its_artifact_server_is() {
    let ts = ts_with_artifact_server(true);
    let children = ts_children(&ts, true);
    let pass = |artifacts: Value| {
        vec![
            get(DISCOVERY, monitoring_api()),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
                list(vec![]),
            ),
            get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
            get(
                list_uri(APPS, "deployments", SELECTOR_TS),
                list(vec![rolled_out(children.deployments[0].clone(), 2), artifacts]),
            ),
            get(list_uri(CORE, "serviceaccounts", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "daemonsets", SELECTOR_TS), list(vec![])),
            get(
                list_uri(CORE, "services", SELECTOR_TS),
                list(applied_values(&children.services)),
            ),
            get(
                list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
                list(applied_values(&children.pod_disruption_budgets)),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])),
            get(
                list_uri(MONITORING, "servicemonitors", SELECTOR_TS),
                list(applied_values(&children.service_monitors)),
            ),
            ts_status(),
        ]
    };
    // The tracking pods are up, the artifact server's are not yet: not Ready.
    let mut starting = rolled_out(children.deployments[1].clone(), 2);
    starting["status"] = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2});
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, pass(starting));
    guarded(tracking_server::reconcile(Arc::new(ts.clone()), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|s| s.method == http::Method::GET),
        "children are current: {seen:#?}"
    );
    let status = statuses(&seen)[0];
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(
        condition(status, "Ready")["message"],
        "artifact server: 0/2 replicas ready"
    );
    assert_eq!(status["readyReplicas"], 2, "the tracking server's pods");
    // Both rolled out: Ready.
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, pass(rolled_out(children.deployments[1].clone(), 2)));
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let status = statuses(&seen)[0];
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "Progressing")["status"], "False");
}

#[tokio::test]
async fn removing_the_dedicated_artifact_server_prunes_it() {
    // The children of the dedicated spec are live; the spec no longer has dedicatedServer.
    let old = ts_children(&ts_with_artifact_server(true), true);
    let ts = ts_with_artifact_server(false);
    let now = ts_children(&ts, true);
    assert_eq!(
        now.services,
        old.services[..1],
        "the tracking Service does not change"
    );
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(
        handle,
        vec![
            get(DISCOVERY, monitoring_api()),
            get(GATEWAY_DISCOVERY, Reply::Status(404)),
            get(
                list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
                list(vec![]),
            ),
            get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
            get(
                list_uri(APPS, "deployments", SELECTOR_TS),
                list(vec![
                    rolled_out(old.deployments[0].clone(), 2),
                    rolled_out(old.deployments[1].clone(), 2),
                ]),
            ),
            // The tracking server proxies the artifacts again.
            patch(apply_uri(APPS, "deployments", "mlflow")),
            delete(format!(
                "{APPS}/namespaces/{NAMESPACE}/deployments/mlflow-artifacts?"
            )),
            get(list_uri(CORE, "serviceaccounts", SELECTOR_TS), list(vec![])),
            get(list_uri(APPS, "daemonsets", SELECTOR_TS), list(vec![])),
            get(
                list_uri(CORE, "services", SELECTOR_TS),
                list(applied_values(&old.services)),
            ),
            delete(format!(
                "{CORE}/namespaces/{NAMESPACE}/services/mlflow-artifacts?"
            )),
            get(
                list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
                list(applied_values(&old.pod_disruption_budgets)),
            ),
            get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])),
            get(
                list_uri(MONITORING, "servicemonitors", SELECTOR_TS),
                list(applied_values(&old.service_monitors)),
            ),
            delete(format!(
                "{MONITORING}/namespaces/{NAMESPACE}/servicemonitors/mlflow-artifacts?"
            )),
            ts_status(),
        ],
    );
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(deleted(&seen).len(), 3);
    for body in deleted(&seen) {
        assert_eq!(body["propagationPolicy"], "Background");
    }
    let tracking = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "mlflow"),
    );
    let container = &tracking["spec"]["template"]["spec"]["containers"][0];
    assert!(
        args_of(container).windows(4).any(|w| w
            == [
                "--default-artifact-root",
                "mlflow-artifacts:/",
                "--artifacts-destination",
                "s3://mlflow-artifacts/prod"
            ]),
        "{container}"
    );
    assert_eq!(
        store_credentials(container),
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_REGION"
        ]
    );
    assert_eq!(
        condition(statuses(&seen)[0], "Monitoring")["message"],
        "ServiceMonitor mlflow scrapes port http"
    );
}

/// A ModelDeployment's create pass against the TrackingServer `ts`, which has basic auth on
/// (its admin Secret `admin` is read for the registry lookup).
fn md_create_pass_on(ts: &TrackingServer) -> Vec<Step> {
    let mut steps = md_full_pass(None);
    steps[0] = get(
        format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
        Reply::Json(serde_json::to_value(ts).unwrap()),
    );
    let admin = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "admin", "namespace": NAMESPACE},
        "data": {"username": "YWRtaW4=", "password": "cGFzc3dvcmQ="}});
    steps.insert(
        1,
        get(
            format!("{CORE}/namespaces/{NAMESPACE}/secrets/admin"),
            Reply::Json(admin),
        ),
    );
    steps
}

async fn applied_model_deployment(ts: &TrackingServer, registry: Arc<FakeRegistry>) -> Value {
    let (ctx, handle) = context(registry);
    let server = serve(handle, md_create_pass_on(ts));
    guarded(model_deployment::reconcile(Arc::new(model_deployment(None)), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    )
    .clone()
}

#[tokio::test]
async fn md_on_a_proxied_tracking_server_loads_through_it_without_store_credentials() {
    let ts = ts_on_object_store(
        3,
        json!({"s3": {"bucket": "mlflow-artifacts", "prefix": "prod", "region": "eu-west-1",
                      "credentialsSecretRef": {"name": "mlflow-s3"}}}),
        json!({"auth": {"adminSecretRef": {"name": "admin"}}}),
    );
    let registry = FakeRegistry::resolving("3");
    let deployment = applied_model_deployment(&ts, registry.clone()).await;
    assert_eq!(
        *registry.asked.lock().unwrap(),
        vec![(
            "admin@http://mlflow.ml.svc:5000".to_owned(),
            "models:/churn@champion".to_owned()
        )]
    );
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let model = &containers[0];
    // `models:/churn/3` resolves to `mlflow-artifacts:/…`, which MLflow downloads from
    // MLFLOW_TRACKING_URI's artifact proxy with the tracking account: nothing else is needed.
    assert_eq!(model["command"][4], "models:/churn/3");
    assert_eq!(
        env_named(model, "MLFLOW_TRACKING_URI").unwrap()["value"],
        "http://mlflow.ml.svc:5000"
    );
    assert_eq!(
        env_named(model, "MLFLOW_TRACKING_PASSWORD").unwrap()["valueFrom"]["secretKeyRef"],
        json!({"name": "admin", "key": "password"})
    );
    for container in containers {
        assert_eq!(
            store_credentials(container),
            Vec::<String>::new(),
            "{}",
            container["name"]
        );
    }
    assert!(
        !serde_json::to_string(&deployment).unwrap().contains("mlflow-s3"),
        "the bucket's Secret is not referenced anywhere in the model pods"
    );
}

#[tokio::test]
async fn md_on_a_direct_s3_tracking_server_gets_the_bucket_credentials() {
    let ts = ts_on_object_store(
        3,
        json!({"s3": {"bucket": "mlflow-artifacts", "access": "Direct", "region": "eu-west-1",
                      "endpoint": "http://minio.storage.svc:9000",
                      "credentialsSecretRef": {"name": "mlflow-s3"}}}),
        json!({"auth": {"adminSecretRef": {"name": "admin"}}}),
    );
    let deployment = applied_model_deployment(&ts, FakeRegistry::resolving("3")).await;
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let model = &containers[0];
    assert_eq!(
        store_credentials(model),
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_REGION",
            "MLFLOW_S3_ENDPOINT_URL"
        ]
    );
    assert_eq!(
        env_named(model, "AWS_SECRET_ACCESS_KEY").unwrap()["valueFrom"]["secretKeyRef"],
        json!({"name": "mlflow-s3", "key": "AWS_SECRET_ACCESS_KEY"})
    );
    // The sidecar only posts predictions to the tracking server.
    assert_eq!(store_credentials(&containers[1]), Vec::<String>::new());
}

// === Autoscaling, disruption budgets, exposure ===

/// `healthy_md` (version 3 already resolved: no Event for it) with `sections` merged into its
/// spec.
fn md_with(sections: Value) -> ModelDeployment {
    let mut md = healthy_md();
    let mut spec = serde_json::to_value(&md.spec).unwrap();
    for (k, v) in sections.as_object().unwrap() {
        spec[k] = v.clone();
    }
    md.spec = serde_json::from_value(spec).unwrap();
    md
}

/// Every child kind of a ModelDeployment, in apply order: (URL prefix, plural), the optional
/// APIs' only when served.
fn md_kinds(keda: bool, gateway: bool) -> Vec<(&'static str, &'static str)> {
    let mut kinds = vec![
        (APPS, "deployments"),
        (CORE, "services"),
        (POLICY, "poddisruptionbudgets"),
        (AUTOSCALING, "horizontalpodautoscalers"),
    ];
    if keda {
        kinds.push((KEDA, "scaledobjects"));
    }
    kinds.push((NETWORKING, "ingresses"));
    if gateway {
        kinds.push((GATEWAY, "httproutes"));
    }
    kinds.push((MONITORING, "servicemonitors"));
    kinds.push((MONITORING, "prometheusrules"));
    kinds
}

/// A ModelDeployment pass from the TrackingServer fetch to the last child: each kind listed
/// (`live` answers, empty when absent), the plurals in `created` name-checked and applied.
fn md_pass(keda: bool, gateway: bool, created: &[&str], live: &[(&str, Vec<Value>)]) -> Vec<Step> {
    let mut steps = vec![
        get(
            format!("{MLKUBE}/namespaces/{NAMESPACE}/trackingservers/mlflow"),
            Reply::Json(serde_json::to_value(tracking_server(json!({}))).unwrap()),
        ),
        get(DISCOVERY, monitoring_api()),
        get(KEDA_DISCOVERY, if keda { keda_api() } else { Reply::Status(404) }),
        get(
            GATEWAY_DISCOVERY,
            if gateway {
                gateway_api()
            } else {
                Reply::Status(404)
            },
        ),
    ];
    for (prefix, plural) in md_kinds(keda, gateway) {
        let items = live
            .iter()
            .find(|(p, _)| *p == plural)
            .map(|(_, items)| items.clone())
            .unwrap_or_default();
        steps.push(get(list_uri(prefix, plural, SELECTOR_MD), list(items)));
        if created.contains(&plural) {
            steps.push(absent(prefix, plural, "churn"));
            steps.push(patch(apply_uri(prefix, plural, "churn")));
        }
    }
    steps
}

const EVERY_CHILD: [&str; 5] = [
    "deployments",
    "services",
    "poddisruptionbudgets",
    "servicemonitors",
    "prometheusrules",
];

#[tokio::test]
async fn md_autoscaled_by_an_hpa_never_writes_replicas() {
    let md = md_with(json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 10,
                                             "target": {"inFlightRequests": 4}}}));
    let mut created = EVERY_CHILD.to_vec();
    created.push("horizontalpodautoscalers");
    let mut steps = md_pass(false, false, &created, &[]);
    steps.push(md_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let deployment = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    );
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "the autoscaler owns replicas: {}",
        deployment["spec"]
    );
    let hpa = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(AUTOSCALING, "horizontalpodautoscalers", "churn"),
    );
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "churn");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 10);
    assert_eq!(
        hpa["spec"]["metrics"][0]["pods"]["metric"]["name"],
        "mlflow_inference_in_flight"
    );
    assert_eq!(hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"], "4");
    // minReplicas 2: the default PodDisruptionBudget.
    let pdb = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(POLICY, "poddisruptionbudgets", "churn"),
    );
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let status = statuses(&seen)[0];
    let autoscaling = condition(status, "Autoscaling");
    assert_eq!(autoscaling["status"], "True");
    assert_eq!(autoscaling["reason"], "HorizontalPodAutoscaler");
    assert!(
        autoscaling["message"]
            .as_str()
            .unwrap()
            .contains("kubectl scale is refused"),
        "{autoscaling}"
    );
}

#[tokio::test]
async fn switching_autoscaling_on_hands_replicas_over_before_dropping_them() {
    // Our apply owns spec.replicas (2). Dropping it from the next apply would reset the
    // Deployment to 1 replica until the HPA acts, so the live count is first applied by a second
    // field manager that keeps owning it.
    let before = healthy_md();
    let children = md_children(&before, "3");
    let live = rolled_out(children.deployments[0].clone(), 2);
    let md = md_with(json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 6,
                                             "target": {"cpuUtilization": 70}},
                            "resources": {"requests": {"cpu": "1"}}}));
    let mut steps = md_pass(
        false,
        false,
        &["horizontalpodautoscalers"],
        &[
            ("deployments", vec![live]),
            ("services", applied_values(&children.services)),
            (
                "poddisruptionbudgets",
                applied_values(&children.pod_disruption_budgets),
            ),
            ("servicemonitors", applied_values(&children.service_monitors)),
            ("prometheusrules", applied_values(&children.prometheus_rules)),
        ],
    );
    let handover = format!(
        "{APPS}/namespaces/{NAMESPACE}/deployments/churn?&force=true&fieldManager=mlkube-operator-handover"
    );
    // After the Deployment list: the handover, then our apply.
    steps.insert(5, patch(handover.clone()));
    steps.insert(6, patch(apply_uri(APPS, "deployments", "churn")));
    steps.push(md_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let kept = sent(&seen, &http::Method::PATCH, &handover);
    assert_eq!(
        kept,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "churn", "namespace": NAMESPACE},
                "spec": {"replicas": 2}})
    );
    let ours = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    );
    assert!(ours["spec"].get("replicas").is_none());
    let hpa = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(AUTOSCALING, "horizontalpodautoscalers", "churn"),
    );
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
}

fn keda_md() -> ModelDeployment {
    md_with(
        json!({"autoscaling": {"engine": "KEDA", "minReplicas": 0, "maxReplicas": 4,
        "target": {"inFlightRequests": 2},
        "keda": {"prometheusAddress": "http://prometheus.monitoring.svc:9090",
                 "query": "sum(envoy_active_requests{route=\"churn\"})"}}}),
    )
}

#[tokio::test]
async fn keda_missing_is_a_condition_and_an_event_and_creates_nothing() {
    let md = keda_md();
    // minReplicas 0: no default PodDisruptionBudget.
    let mut steps = md_pass(
        false,
        false,
        &["deployments", "services", "servicemonitors", "prometheusrules"],
        &[],
    );
    steps.push(post_event());
    steps.push(md_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md.clone()), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    // No ScaledObject (its API is not even listed), no HPA in its place.
    assert!(
        !seen.iter().any(|s| s.uri.contains("scaledobjects")
            || (s.method == http::Method::PATCH && s.uri.contains("horizontalpodautoscalers"))),
        "{seen:#?}"
    );
    // Without its autoscaler the model still serves: one replica.
    let deployment = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    );
    assert_eq!(deployment["spec"]["replicas"], 1);
    let event = events(&seen)[0];
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("KedaMissing"))
    );
    let status = statuses(&seen)[0].clone();
    let autoscaling = condition(&status, "Autoscaling");
    assert_eq!(
        (autoscaling["status"].as_str(), autoscaling["reason"].as_str()),
        (Some("False"), Some("KedaMissing"))
    );

    // The next pass with that status: reads only, no second Event.
    let mut again = md;
    again.status = Some(serde_json::from_value(status).unwrap());
    let v = validate::validate_model_deployment(
        &again,
        &resolved("models:/churn@champion", "3"),
        TrackingAccess {
            uri: "http://mlflow.ml.svc:5000".into(),
            ..Default::default()
        },
        mlkube_operator::apply::Apis {
            monitoring: true,
            keda: false,
            gateway: false,
        },
        &defaults(),
    )
    .unwrap();
    let children = build::model_deployment(&v);
    let steps = md_pass(
        false,
        false,
        &[],
        &[
            (
                "deployments",
                vec![rolled_out(children.deployments[0].clone(), 1)],
            ),
            ("services", applied_values(&children.services)),
            ("servicemonitors", applied_values(&children.service_monitors)),
            ("prometheusrules", applied_values(&children.prometheus_rules)),
        ],
    );
    let mut steps = steps;
    // The rollout finished: Ready changes, KedaMissing stays.
    steps.push(md_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(again), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert!(events(&seen).is_empty(), "{seen:#?}");
    assert_eq!(
        condition(statuses(&seen)[0], "Autoscaling")["reason"],
        "KedaMissing"
    );
}

#[tokio::test]
async fn keda_served_gets_a_scaled_object_that_may_scale_to_zero() {
    let md = keda_md();
    let mut steps = md_pass(
        true,
        false,
        &[
            "deployments",
            "services",
            "scaledobjects",
            "servicemonitors",
            "prometheusrules",
        ],
        &[],
    );
    steps.push(md_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let deployment = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    );
    assert!(deployment["spec"].get("replicas").is_none());
    let scaled = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(KEDA, "scaledobjects", "churn"),
    );
    assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(scaled["spec"]["minReplicaCount"], 0);
    assert_eq!(scaled["spec"]["maxReplicaCount"], 4);
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "churn");
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "prometheus");
    assert_eq!(trigger["metadata"]["threshold"], "2");
    assert_eq!(
        trigger["metadata"]["query"],
        "sum(envoy_active_requests{route=\"churn\"})"
    );
    assert_eq!(
        condition(statuses(&seen)[0], "Autoscaling")["reason"],
        "ScaledObject"
    );
}

#[tokio::test]
async fn removing_a_section_prunes_its_child() {
    // Every optional child was created by an earlier spec; the spec now has none of the
    // sections and one replica (no default PodDisruptionBudget): each is deleted.
    let earlier = md_with(json!({
        "replicas": 1,
        "autoscaling": {"minReplicas": 2, "maxReplicas": 3, "target": {"inFlightRequests": 4}},
        "exposure": {"ingress": {"host": "churn.example.com"}}}));
    let with_hpa = md_children(&earlier, "3");
    let keda = md_children(&keda_md(), "3");
    let routed = md_children(
        &md_with(json!({"exposure": {"httpRoute": {"parentRefs": [{"name": "public"}]}}})),
        "3",
    );
    let md = md_with(json!({"replicas": 1}));
    let now = md_children(&md, "3");
    let mut steps = md_pass(
        true,
        true,
        &[],
        &[
            ("deployments", vec![rolled_out(now.deployments[0].clone(), 1)]),
            ("services", applied_values(&now.services)),
            (
                "poddisruptionbudgets",
                applied_values(&with_hpa.pod_disruption_budgets),
            ),
            (
                "horizontalpodautoscalers",
                applied_values(&with_hpa.horizontal_pod_autoscalers),
            ),
            ("scaledobjects", applied_values(&keda.scaled_objects)),
            ("ingresses", applied_values(&with_hpa.ingresses)),
            ("httproutes", applied_values(&routed.http_routes)),
            ("servicemonitors", applied_values(&now.service_monitors)),
            ("prometheusrules", applied_values(&now.prometheus_rules)),
        ],
    );
    // Each delete right after its kind's list.
    for (prefix, plural) in [
        (GATEWAY, "httproutes"),
        (NETWORKING, "ingresses"),
        (KEDA, "scaledobjects"),
        (AUTOSCALING, "horizontalpodautoscalers"),
        (POLICY, "poddisruptionbudgets"),
    ] {
        let at = steps
            .iter()
            .position(|s| s.uri == list_uri(prefix, plural, SELECTOR_MD))
            .unwrap();
        steps.insert(
            at + 1,
            delete(format!("{prefix}/namespaces/{NAMESPACE}/{plural}/churn?")),
        );
    }
    steps.push(md_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(deleted(&seen).len(), 5);
    let status = statuses(&seen)[0];
    for gone in ["Autoscaling", "Exposed"] {
        assert!(
            status["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["type"] != gone),
            "{status}"
        );
    }
}

/// A TrackingServer pass (one replica, SQLite, children current) from discovery to the last
/// child; `created` (ingresses, httproutes) are name-checked and applied.
fn ts_pass(ts: &TrackingServer, gateway: bool, created: &[&str]) -> Vec<Step> {
    let children = ts_children(ts, true);
    let mut steps = vec![
        get(DISCOVERY, monitoring_api()),
        get(
            GATEWAY_DISCOVERY,
            if gateway {
                gateway_api()
            } else {
                Reply::Status(404)
            },
        ),
        get(
            list_uri(CORE, "persistentvolumeclaims", SELECTOR_TS),
            list(applied_values(&children.persistent_volume_claims)),
        ),
        get(list_uri(CORE, "configmaps", SELECTOR_TS), list(vec![])),
        get(
            list_uri(APPS, "deployments", SELECTOR_TS),
            list(vec![rolled_out(children.deployments[0].clone(), 1)]),
        ),
        get(list_uri(CORE, "serviceaccounts", SELECTOR_TS), list(vec![])),
        get(list_uri(APPS, "daemonsets", SELECTOR_TS), list(vec![])),
        get(
            list_uri(CORE, "services", SELECTOR_TS),
            list(applied_values(&children.services)),
        ),
        get(
            list_uri(POLICY, "poddisruptionbudgets", SELECTOR_TS),
            list(vec![]),
        ),
        get(list_uri(NETWORKING, "ingresses", SELECTOR_TS), list(vec![])),
    ];
    if created.contains(&"ingresses") {
        steps.push(absent(NETWORKING, "ingresses", "mlflow"));
        steps.push(patch(apply_uri(NETWORKING, "ingresses", "mlflow")));
    }
    if gateway {
        steps.push(get(list_uri(GATEWAY, "httproutes", SELECTOR_TS), list(vec![])));
        if created.contains(&"httproutes") {
            steps.push(absent(GATEWAY, "httproutes", "mlflow"));
            steps.push(patch(apply_uri(GATEWAY, "httproutes", "mlflow")));
        }
    }
    steps.push(get(
        list_uri(MONITORING, "servicemonitors", SELECTOR_TS),
        list(applied_values(&children.service_monitors)),
    ));
    steps
}

#[tokio::test]
async fn an_http_route_without_the_gateway_api_is_a_condition_and_an_event() {
    let route = json!({"exposure": {"httpRoute": {"parentRefs": [{"name": "public", "namespace": "gateways"}],
                                                  "hostnames": ["mlflow.example.com"]}}});
    let ts = tracking_server(route.clone());
    let mut steps = ts_pass(&ts, false, &[]);
    steps.push(post_event());
    steps.push(ts_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert!(!seen.iter().any(|s| s.uri.contains("httproutes")), "{seen:#?}");
    assert_eq!(events(&seen)[0]["reason"], "GatewayAPIMissing");
    let exposed = condition(statuses(&seen)[0], "Exposed");
    assert_eq!(
        (exposed["status"].as_str(), exposed["reason"].as_str()),
        (Some("False"), Some("GatewayAPIMissing"))
    );

    // With the Gateway API: the route, attached to the Gateway, to the Service's port.
    let ts = tracking_server(route);
    let mut steps = ts_pass(&ts, true, &["httproutes"]);
    steps.push(ts_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let route = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(GATEWAY, "httproutes", "mlflow"),
    );
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["spec"]["parentRefs"][0]["namespace"], "gateways");
    assert_eq!(route["spec"]["hostnames"][0], "mlflow.example.com");
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0],
        json!({"name": "mlflow", "port": 5000})
    );
    assert_eq!(route["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(condition(statuses(&seen)[0], "Exposed")["reason"], "HTTPRoute");
}

#[tokio::test]
async fn an_ingress_needs_no_optional_api() {
    let ts = tracking_server(json!({"exposure": {"ingress": {"className": "nginx",
        "host": "mlflow.example.com", "tlsSecretName": "mlflow-tls"}}}));
    let mut steps = ts_pass(&ts, false, &["ingresses"]);
    steps.push(ts_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let ingress = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(NETWORKING, "ingresses", "mlflow"),
    );
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"],
        json!({"name": "mlflow", "port": {"name": "http"}})
    );
    assert_eq!(
        ingress["spec"]["tls"][0],
        json!({"hosts": ["mlflow.example.com"], "secretName": "mlflow-tls"})
    );
    assert_eq!(condition(statuses(&seen)[0], "Exposed")["status"], "True");
}

#[tokio::test]
async fn removing_a_tracking_servers_sections_prunes_their_children() {
    // Earlier specs created a PodDisruptionBudget and an Ingress, and an HTTPRoute; the spec now
    // has neither `disruptionBudget` nor `exposure` and one replica (no default budget): each
    // child is deleted right after its kind's list, and nothing else is written but the status.
    let budgeted = ts_children(
        &tracking_server(json!({"disruptionBudget": {"maxUnavailable": 1},
                                "exposure": {"ingress": {"host": "mlflow.example.com"}}})),
        true,
    );
    let routed = ts_children(
        &tracking_server(json!({"exposure": {"httpRoute": {"parentRefs": [{"name": "public"}]}}})),
        true,
    );
    assert_eq!(
        (
            budgeted.pod_disruption_budgets.len(),
            budgeted.ingresses.len(),
            routed.http_routes.len()
        ),
        (1, 1, 1)
    );
    let ts = tracking_server(json!({}));
    let mut steps = ts_pass(&ts, true, &[]);
    let mut want_deleted = Vec::new();
    for (prefix, plural, live) in [
        (
            POLICY,
            "poddisruptionbudgets",
            applied_values(&budgeted.pod_disruption_budgets),
        ),
        (NETWORKING, "ingresses", applied_values(&budgeted.ingresses)),
        (GATEWAY, "httproutes", applied_values(&routed.http_routes)),
    ] {
        let uri = list_uri(prefix, plural, SELECTOR_TS);
        let at = steps.iter().position(|s| s.uri == uri).unwrap();
        steps[at] = get(uri, list(live));
        let gone = format!("{prefix}/namespaces/{NAMESPACE}/{plural}/mlflow?");
        steps.insert(at + 1, delete(gone.clone()));
        want_deleted.push(gone);
    }
    steps.push(ts_status());
    let (ctx, handle) = context(FakeRegistry::resolving("3"));
    let server = serve(handle, steps);
    guarded(tracking_server::reconcile(Arc::new(ts), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let deletes: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == http::Method::DELETE)
        .map(|s| s.uri.as_str())
        .collect();
    assert_eq!(deletes, want_deleted);
    assert!(
        deleted(&seen)
            .iter()
            .all(|d| d["propagationPolicy"] == "Background")
    );
    let status = statuses(&seen)[0];
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] != "Exposed"),
        "{status}"
    );
}

// === canary rollouts ===

const CANARY_STARTED: &str = "2026-03-01T11:00:00Z";

/// `churn` (alias `champion`, 2 replicas) with a two-step canary judged on errors, latency and
/// accuracy, and `status` (resolved version 3 and `rollout`).
fn canary_md(rollout: Value) -> ModelDeployment {
    let mut md = model_deployment(Some(json!({
        "resolvedModel": {"reference": "models:/churn@champion", "name": "churn", "version": "3",
                          "runId": "run3", "source": "mlflow-artifacts:/1/run3/artifacts/model"},
        "rollout": rollout,
    })));
    md.spec = serde_json::from_value(json!({
        "trackingServerRef": {"name": "mlflow"},
        "model": {"name": "churn", "alias": "champion"},
        "replicas": 2,
        "rollout": {"strategy": "Canary", "canary": {
            "steps": [{"weight": 10, "hold": "10m"}, {"weight": 50, "hold": "10m"}],
            "analysis": {"interval": "1m", "failureLimit": 1, "minRequests": 100,
                         "maxErrorRate": 0.01, "maxLatencyP99Ratio": 1.5,
                         "quality": {"metric": "accuracy", "window": "1h", "labelDelay": "30m",
                                     "minLabelled": 50, "maxDrop": 0.02}},
            "onSuccess": {"setAlias": "production"}}},
    }))
    .unwrap();
    md
}

/// A canary of version 4 in flight at `step` since `step_started`.
fn canary_in_flight(step: i32, weight: i32, step_started: &str) -> Value {
    json!({"phase": "Canary", "stableVersion": "3", "canaryVersion": "4",
           "canaryModel": {"reference": "models:/churn@champion", "name": "churn", "version": "4",
                           "runId": "run4", "source": "mlflow-artifacts:/1/run4/artifacts/model"},
           "currentWeight": weight, "currentStep": step,
           "canaryStartedAt": CANARY_STARTED, "stepStartedAt": step_started})
}

/// The children of `md` serving `stable`, with a canary of (version, weight) when given.
fn canary_children(md: &ModelDeployment, stable: &str, canary: Option<(&str, i32)>) -> build::ChildObjects {
    let v = validate::validate_model_deployment(
        md,
        &resolved("models:/churn@champion", stable),
        TrackingAccess {
            uri: "http://mlflow.ml.svc:5000".into(),
            ..Default::default()
        },
        true,
        &defaults(),
    )
    .unwrap();
    let v = match canary {
        Some((version, weight)) => v.with_canary(&resolved("models:/churn@champion", version), weight),
        None => v,
    };
    build::model_deployment(&v)
}

/// The reads of a pass over `live` children (every kind listed, nothing written).
fn canary_reads(live: &build::ChildObjects) -> Vec<Step> {
    let deployments = live
        .deployments
        .iter()
        .map(|d| rolled_out(d.clone(), d.spec.replicas.unwrap_or(1)))
        .collect();
    md_pass(
        false,
        false,
        &[],
        &[
            ("deployments", deployments),
            ("services", applied_values(&live.services)),
            (
                "poddisruptionbudgets",
                applied_values(&live.pod_disruption_budgets),
            ),
            ("servicemonitors", applied_values(&live.service_monitors)),
            ("prometheusrules", applied_values(&live.prometheus_rules)),
        ],
    )
}

/// Healthy canary numbers: 1000 requests, 2 errors, p99 110ms vs 100ms, accuracy 0.90 vs 0.91.
fn healthy_snapshot() -> mlkube_operator::rollout::Snapshot {
    use mlkube_operator::rollout::{QualityReading, Snapshot};
    Snapshot {
        canary_requests: Some(1000.0),
        canary_errors: Some(2.0),
        canary_p99: Some(0.11),
        stable_p99: Some(0.10),
        prometheus_error: None,
        canary_quality: Some(QualityReading {
            value: Some(0.90),
            labelled: 300,
        }),
        stable_quality: Some(QualityReading {
            value: Some(0.91),
            labelled: 600,
        }),
        quality_error: None,
    }
}

fn md_status_of(md: &ModelDeployment) -> Step {
    patch_status(
        format!(
            "{MLKUBE}/namespaces/{NAMESPACE}/modeldeployments/churn/status?&force=true&fieldManager=mlkube-operator"
        ),
        md,
    )
}

#[tokio::test]
async fn md_canary_alias_move_3_to_4_starts_a_canary_at_the_first_step() {
    let md = canary_md(json!({"phase": "Stable", "stableVersion": "3"}));
    let live = canary_children(&md, "3", None);
    let measurements = FakeMeasurements::answering(healthy_snapshot());
    let (ctx, handle) = context_measuring(FakeRegistry::resolving("4"), measurements.clone());
    let mut steps = canary_reads(&live);
    // After the Deployments' list: the stable one is current, the canary is created.
    steps.splice(
        5..5,
        [
            absent(APPS, "deployments", "churn-canary"),
            patch(apply_uri(APPS, "deployments", "churn-canary")),
        ],
    );
    steps.push(post_event());
    steps.push(md_status_of(&md));
    let server = serve(handle, steps);
    let action = guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    // The stable pods are not touched: no write to Deployment churn.
    assert!(
        !seen
            .iter()
            .any(|s| s.method == http::Method::PATCH && s.uri == apply_uri(APPS, "deployments", "churn")),
        "{seen:#?}"
    );
    let canary = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn-canary"),
    );
    assert_eq!(canary["spec"]["replicas"], 1, "10% beside 2 stable pods");
    assert_eq!(
        canary["spec"]["selector"]["matchLabels"]["mlkube.io/track"],
        "canary"
    );
    let template = &canary["spec"]["template"];
    assert_eq!(template["metadata"]["labels"]["mlkube.io/model-version"], "4");
    assert_eq!(template["metadata"]["labels"]["mlkube.io/track"], "canary");
    assert_eq!(template["spec"]["containers"][0]["command"][4], "models:/churn/4");
    let event = events(&seen)[0];
    assert_eq!(event["reason"], "CanaryStarted");
    assert_eq!(
        event["note"],
        "models:/churn@champion moved to version 4: canary at 10% beside stable version 3"
    );
    let status = statuses(&seen)[0];
    assert_eq!(status["resolvedModel"]["version"], "3");
    let rollout = &status["rollout"];
    assert_eq!(rollout["phase"], "Canary");
    assert_eq!(rollout["stableVersion"], "3");
    assert_eq!(rollout["canaryVersion"], "4");
    assert_eq!(rollout["currentWeight"], 10);
    assert_eq!(rollout["currentStep"], 0);
    assert_eq!(rollout["stepStartedAt"], NOW);
    assert_eq!(condition(status, "Progressing")["reason"], "CanaryProgressing");
    // Not judged before its first interval; the next pass comes when it is due.
    assert!(measurements.asked.lock().unwrap().is_empty());
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(60)));
}

/// One analysis of the canary of `canary_in_flight(0, 10, 11:30)` that fails on `snapshot`:
/// the canary Deployment is deleted and the status and Event say why.
async fn canary_rolled_back_on(snapshot: mlkube_operator::rollout::Snapshot) -> (Vec<Seen>, Value) {
    let md = canary_md(canary_in_flight(0, 10, "2026-03-01T11:30:00Z"));
    let live = canary_children(&md, "3", Some(("4", 10)));
    let measurements = FakeMeasurements::answering(snapshot);
    let (ctx, handle) = context_measuring(FakeRegistry::resolving("4"), measurements.clone());
    let mut steps = canary_reads(&live);
    steps.insert(
        5,
        delete(format!("{APPS}/namespaces/{NAMESPACE}/deployments/churn-canary?")),
    );
    steps.push(post_event());
    steps.push(md_status_of(&md));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md.clone()), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    let asked = measurements.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].canary_requests.contains("model_version=\"4\""),
        "{:?}",
        asked[0]
    );
    let quality = asked[0].quality.clone().unwrap();
    assert_eq!(
        (quality.canary_version.as_str(), quality.stable_version.as_str()),
        ("4", "3")
    );
    // The window ends labelDelay (30m) before now.
    assert_eq!(quality.end_time_ms, time(NOW).0.as_millisecond() - 30 * 60 * 1000);
    let status = statuses(&seen)[0].clone();
    assert_eq!(status["rollout"]["phase"], "RolledBack");
    assert_eq!(status["rollout"]["failedVersions"], json!(["4"]));
    assert_eq!(status["rollout"]["currentWeight"], 0);
    assert_eq!(status["rollout"]["lastVerdict"]["result"], "Fail");
    assert_eq!(status["resolvedModel"]["version"], "3");
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "CanaryRolledBack");
    let event = events(&seen)[0];
    assert_eq!(event["reason"], "CanaryRolledBack");
    assert_eq!(event["type"], "Warning");

    // The next pass: the alias still points at 4, which is not tried again. Only reads.
    let mut after = md;
    after.status = Some(serde_json::from_value(status.clone()).unwrap());
    let measurements = FakeMeasurements::answering(healthy_snapshot());
    let (ctx, handle) = context_measuring(FakeRegistry::resolving("4"), measurements.clone());
    let server = serve(handle, canary_reads(&canary_children(&after, "3", None)));
    guarded(model_deployment::reconcile(Arc::new(after), ctx))
        .await
        .unwrap();
    let again = server.await.unwrap();
    assert!(again.iter().all(|s| s.method == http::Method::GET), "{again:#?}");
    assert!(measurements.asked.lock().unwrap().is_empty());
    (seen, status)
}

#[tokio::test]
async fn md_canary_error_rate_breach_rolls_back_and_4_is_not_retried() {
    let mut snapshot = healthy_snapshot();
    snapshot.canary_errors = Some(50.0);
    let (seen, status) = canary_rolled_back_on(snapshot).await;
    let verdict = status["rollout"]["lastVerdict"].clone();
    assert_eq!(verdict["measurements"]["canaryErrorRate"], 0.05);
    assert_eq!(verdict["measurements"]["canaryRequests"], 1000.0);
    let note = events(&seen)[0]["note"].as_str().unwrap().to_owned();
    assert!(
        note.starts_with("canary version 4 rolled back, stable version 3 keeps serving: ")
            && note.contains("FAIL: error rate 5.00% (50 of 1000), maxErrorRate 1.00%"),
        "{note}"
    );
    assert!(
        condition(&status, "Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("canary version 4 was rolled back"),
        "{status}"
    );
}

#[tokio::test]
async fn md_canary_with_worse_quality_and_healthy_latency_still_rolls_back() {
    let mut snapshot = healthy_snapshot();
    snapshot.canary_quality = Some(mlkube_operator::rollout::QualityReading {
        value: Some(0.80),
        labelled: 300,
    });
    let (_, status) = canary_rolled_back_on(snapshot).await;
    let verdict = &status["rollout"]["lastVerdict"];
    let message = verdict["message"].as_str().unwrap();
    assert!(message.contains("pass: error rate 0.20%"), "{message}");
    assert!(
        message.contains("pass: p99 latency 0.110s vs stable 0.100s"),
        "{message}"
    );
    assert!(
        message.contains("FAIL: accuracy 0.8000 vs stable 0.9100 over 1h (300/600 labelled)"),
        "{message}"
    );
    assert_eq!(verdict["measurements"]["canaryQuality"], 0.8);
    assert_eq!(verdict["measurements"]["stableQuality"], 0.91);
}

#[tokio::test]
async fn md_canary_holds_while_prometheus_is_unreachable() {
    let md = canary_md(canary_in_flight(1, 50, "2026-03-01T11:30:00Z"));
    let live = canary_children(&md, "3", Some(("4", 50)));
    let snapshot = mlkube_operator::rollout::Snapshot {
        prometheus_error: Some(
            "Prometheus at http://prometheus:9090 is unreachable (connection refused)".into(),
        ),
        ..healthy_snapshot()
    };
    let measurements = FakeMeasurements::answering(snapshot);
    let (ctx, handle) = context_measuring(FakeRegistry::resolving("4"), measurements.clone());
    let mut steps = canary_reads(&live);
    steps.push(md_status_of(&md));
    let server = serve(handle, steps);
    let action = guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    // Nothing but the status is written: no promotion (the last step's hold is over), no
    // rollback, no Event.
    assert_eq!(
        seen.iter().filter(|s| s.method != http::Method::GET).count(),
        1,
        "{seen:#?}"
    );
    assert_eq!(measurements.asked.lock().unwrap().len(), 1);
    let status = statuses(&seen)[0];
    let rollout = &status["rollout"];
    assert_eq!(rollout["phase"], "Canary");
    assert_eq!(rollout["currentWeight"], 50);
    assert_eq!(rollout["failedAnalyses"], 0);
    assert_eq!(rollout["lastVerdict"]["result"], "Inconclusive");
    assert_eq!(rollout["lastVerdict"]["time"], NOW);
    assert!(
        rollout["lastVerdict"]["message"].as_str().unwrap().contains(
            "inconclusive: serving metrics unavailable: Prometheus at http://prometheus:9090 is unreachable"
        ),
        "{rollout}"
    );
    assert_eq!(condition(status, "Degraded")["status"], "False");
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(60)));
}

#[tokio::test]
async fn md_canary_passing_its_last_step_is_promoted_and_the_alias_set() {
    let md = canary_md(canary_in_flight(1, 50, "2026-03-01T11:30:00Z"));
    let live = canary_children(&md, "3", Some(("4", 50)));
    let promoted = canary_children(&md, "4", None);
    let registry = FakeRegistry::resolving("4");
    let (ctx, handle) = context_measuring(registry.clone(), FakeMeasurements::answering(healthy_snapshot()));
    let mut steps = canary_reads(&live);
    // The stable Deployment rolls to 4; the canary's is deleted; the other children do not
    // change with the model version... except those labelled with it.
    steps.splice(
        5..5,
        [
            patch(apply_uri(APPS, "deployments", "churn")),
            delete(format!("{APPS}/namespaces/{NAMESPACE}/deployments/churn-canary?")),
        ],
    );
    // Services, ServiceMonitor and PrometheusRule carry the model version label: re-applied.
    for plural in ["services", "servicemonitors", "prometheusrules"] {
        let at = steps
            .iter()
            .position(|s| {
                s.uri
                    == list_uri(
                        if plural == "services" { CORE } else { MONITORING },
                        plural,
                        SELECTOR_MD,
                    )
            })
            .unwrap();
        let prefix = if plural == "services" { CORE } else { MONITORING };
        steps.insert(at + 1, patch(apply_uri(prefix, plural, "churn")));
    }
    steps.push(post_event()); // ModelVersionResolved: 3 → 4
    steps.push(post_event()); // CanaryPromoted
    steps.push(md_status_of(&md));
    let server = serve(handle, steps);
    guarded(model_deployment::reconcile(Arc::new(md), ctx))
        .await
        .unwrap();
    let seen = server.await.unwrap();
    assert_eq!(
        *registry.aliases_set.lock().unwrap(),
        vec![(
            "http://mlflow.ml.svc:5000".to_owned(),
            "models:/churn@production".to_owned(),
            "4".to_owned()
        )]
    );
    let stable = sent(
        &seen,
        &http::Method::PATCH,
        &apply_uri(APPS, "deployments", "churn"),
    );
    assert_eq!(
        stable["spec"]["template"]["metadata"]["labels"]["mlkube.io/model-version"],
        "4"
    );
    assert_eq!(
        as_applied(&serde_json::to_value(&promoted.deployments[0]).unwrap())["spec"]["template"],
        stable["spec"]["template"]
    );
    let reasons: Vec<_> = events(&seen).iter().map(|e| e["reason"].clone()).collect();
    assert_eq!(
        reasons,
        vec![json!("ModelVersionResolved"), json!("CanaryPromoted")]
    );
    let status = statuses(&seen)[0];
    assert_eq!(status["resolvedModel"]["version"], "4");
    assert_eq!(status["rollout"]["phase"], "Stable");
    assert_eq!(status["rollout"]["stableVersion"], "4");
    assert_eq!(status["rollout"]["lastVerdict"]["result"], "Pass");
    assert!(status["rollout"].get("canaryVersion").is_none(), "{status}");
}

#[tokio::test]
async fn md_canary_behind_a_gateway_splits_by_exact_weights() {
    let mut md = canary_md(json!({"phase": "Stable", "stableVersion": "3"}));
    md.spec.exposure = Some(
        serde_json::from_value(json!({"httpRoute": {"parentRefs": [{"name": "public"}],
                                                    "hostnames": ["churn.example.com"]}}))
        .unwrap(),
    );
    let v = validate::validate_model_deployment(
        &md,
        &resolved("models:/churn@champion", "3"),
        TrackingAccess::default(),
        mlkube_operator::apply::Apis {
            monitoring: true,
            keda: false,
            gateway: true,
        },
        &defaults(),
    )
    .unwrap()
    .with_canary(&resolved("models:/churn@champion", "4"), 10);
    let children = build::model_deployment(&v);
    let names: Vec<_> = children
        .services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["churn", "churn-canary", "churn-stable"]);
    let route = serde_json::to_value(&children.http_routes[0]).unwrap();
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"],
        json!([{"name": "churn-stable", "port": 8000, "weight": 90},
               {"name": "churn-canary", "port": 8000, "weight": 10}])
    );
    // The canary's pods: enough for its share behind exact weights.
    assert_eq!(children.deployments[1].spec.replicas, Some(1));
    let stable_selector = children.services[2]
        .spec
        .as_ref()
        .unwrap()
        .selector
        .clone()
        .unwrap();
    assert_eq!(stable_selector["mlkube.io/track"], "stable");
    // Stable pods carry the track label from the moment the strategy is Canary, so the
    // canary's arrival changes nothing about them.
    let plain = build::model_deployment(
        &validate::validate_model_deployment(
            &md,
            &resolved("models:/churn@champion", "3"),
            TrackingAccess::default(),
            true,
            &defaults(),
        )
        .unwrap(),
    );
    assert_eq!(
        plain.deployments[0].spec.template,
        children.deployments[0].spec.template
    );
    // The ServiceMonitor selects the model-server component only: not the split Services.
    assert_eq!(
        children.services[1].metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"],
        "traffic-split"
    );
}
