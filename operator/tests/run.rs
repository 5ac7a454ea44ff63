//! The wiring in `run.rs` against a mock API server that answers by route (watches run
//! concurrently, so their order is not scripted): which lists and watches the controllers open,
//! discovery outcomes, a watch that relists after 410 Gone, the TrackingServer → ModelDeployment
//! mapping, and leader election (standby, takeover when the Lease expires, exit when it is lost).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use mlkube_operator::crd::{ModelDeployment, TrackingServer};
use mlkube_operator::metrics::Metrics;
use mlkube_operator::registry::{Endpoint, ModelReference, ModelRegistry, RegistryError};
use mlkube_operator::run::{self, LeaderElection, Operation, RunError};
use mlkube_operator::validate::Defaults;
use serde_json::{Value, json};

const NS: &str = "ml";
const MLKUBE: &str = "/apis/mlkube.io/v1alpha1/namespaces/ml";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ml/leases/mlkube-operator";
const CHILDREN: &str = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dmlkube";

type ResponseBody = axum::body::Body;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Monitoring {
    Served,
    Absent,
    Forbidden,
}

/// The mock API server's state: what it was asked, and what it serves.
struct State {
    seen: Vec<(Method, String, String)>,
    monitoring: Monitoring,
    crds: bool,
    /// The first watch of this path ends with a 410 Gone event.
    expire_first_watch_of: Option<String>,
    lease: Option<Value>,
    lease_version: u64,
}

#[derive(Clone)]
struct ApiServer(Arc<Mutex<State>>);

fn body(value: &Value) -> ResponseBody {
    ResponseBody::from(serde_json::to_vec(value).unwrap())
}

fn reply(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body(value))
        .unwrap()
}

fn failure(code: u16, reason: &str) -> Response<ResponseBody> {
    reply(
        StatusCode::from_u16(code).unwrap(),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "mock", "reason": reason, "code": code}),
    )
}

/// Merge `patch` into `into` (JSON merge semantics: null removes).
fn merge(into: &mut Value, patch: &Value) {
    match (into.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    target.remove(k);
                } else if v.is_object() && target.get(k).is_some_and(Value::is_object) {
                    merge(target.get_mut(k).unwrap(), v);
                } else {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        _ => *into = patch.clone(),
    }
}

impl ApiServer {
    fn new(monitoring: Monitoring) -> Self {
        ApiServer(Arc::new(Mutex::new(State {
            seen: Vec::new(),
            monitoring,
            crds: true,
            expire_first_watch_of: None,
            lease: None,
            lease_version: 1,
        })))
    }

    fn client(&self) -> Client {
        let server = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.handle(request).await) }
        });
        Client::new(service, NS)
    }

    /// Requests so far: (method, path, query).
    fn seen(&self) -> Vec<(Method, String, String)> {
        self.0.lock().unwrap().seen.clone()
    }

    /// Paths watched, with how many watches each (children's watches must carry our label).
    fn watches(&self) -> BTreeMap<String, usize> {
        let mut watches = BTreeMap::new();
        for (_, path, query) in self
            .seen()
            .iter()
            .filter(|(m, _, q)| m == Method::GET && q.contains("watch=true"))
        {
            let labelled = query.contains(CHILDREN);
            let key = format!("{path}{}", if labelled { " (children)" } else { "" });
            *watches.entry(key).or_insert(0) += 1;
        }
        watches
    }

    /// Lists of `path` by a controller (not the discovery's `limit=1`).
    fn lists_of(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|(m, p, q)| {
                m == Method::GET && p == path && !q.contains("watch=true") && !q.contains("limit=1")
            })
            .count()
    }

    async fn handle(&self, request: Request<Body>) -> Response<ResponseBody> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let payload: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mut state = self.0.lock().unwrap();
        state.seen.push((method.clone(), path.clone(), query.clone()));

        if path == "/apis/monitoring.coreos.com/v1" {
            return match state.monitoring {
                Monitoring::Served => reply(
                    StatusCode::OK,
                    &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
                            "resources": [
                                {"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true,
                                 "kind": "ServiceMonitor", "verbs": ["get", "list", "watch"]},
                                {"name": "prometheusrules", "singularName": "prometheusrule", "namespaced": true,
                                 "kind": "PrometheusRule", "verbs": ["get", "list", "watch"]}]}),
                ),
                Monitoring::Absent => failure(404, "NotFound"),
                Monitoring::Forbidden => failure(403, "Forbidden"),
            };
        }
        // Neither KEDA nor the Gateway API is installed.
        if path == "/apis/keda.sh/v1alpha1" || path == "/apis/gateway.networking.k8s.io/v1" {
            return failure(404, "NotFound");
        }
        if path == LEASE {
            return self.lease(&mut state, &method, &content_type, &payload);
        }
        if method == Method::POST && path.ends_with("/events") {
            return reply(StatusCode::CREATED, &payload);
        }
        if method != Method::GET {
            return failure(404, "NotFound");
        }
        if !state.crds && path.starts_with("/apis/mlkube.io/") {
            return failure(404, "NotFound");
        }
        if query.contains("watch=true") {
            let expire = state.expire_first_watch_of.as_deref() == Some(path.as_str());
            if expire {
                state.expire_first_watch_of = None;
                let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": "too old resource version: 1 (4242)", "reason": "Expired", "code": 410}});
                let mut line = serde_json::to_vec(&gone).unwrap();
                line.push(b'\n');
                return Response::new(ResponseBody::from(line));
            }
            // A watch with nothing to say: it stays open until the client goes.
            let open = futures_util::stream::pending::<Result<Bytes, Infallible>>();
            return Response::new(ResponseBody::from_stream(open));
        }
        reply(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
        )
    }

    /// A Lease as the API server keeps it: get, create, server-side apply (a conflict when the
    /// holder is someone else's), strategic merge.
    fn lease(
        &self,
        state: &mut State,
        method: &Method,
        content_type: &str,
        payload: &Value,
    ) -> Response<ResponseBody> {
        match (method, state.lease.as_mut()) {
            (&Method::GET, Some(lease)) => reply(StatusCode::OK, lease),
            (&Method::GET, None) => failure(404, "NotFound"),
            (&Method::PATCH, Some(lease)) => {
                let holder = lease["spec"]["holderIdentity"].as_str().map(str::to_owned);
                let wanted = payload["spec"]["holderIdentity"].as_str();
                if content_type.starts_with("application/apply-patch")
                    && let (Some(holder), Some(wanted)) = (holder.as_deref(), wanted)
                    && holder != wanted
                {
                    return failure(409, "Conflict");
                }
                merge(&mut lease["spec"], &payload["spec"]);
                state.lease_version += 1;
                lease["metadata"]["resourceVersion"] = json!(state.lease_version.to_string());
                reply(StatusCode::OK, lease)
            }
            _ => failure(404, "NotFound"),
        }
    }

    fn set_lease(&self, holder: &str, duration_secs: u64, transitions: u64) {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut state = self.0.lock().unwrap();
        state.lease_version += 1;
        state.lease = Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "mlkube-operator", "namespace": NS, "resourceVersion": state.lease_version.to_string()},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration_secs,
                     "acquireTime": now, "renewTime": now, "leaseTransitions": transitions}}));
    }

    fn lease_holder(&self) -> Option<String> {
        let state = self.0.lock().unwrap();
        state.lease.as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    }
}

/// A registry nobody should call: these tests list nothing to reconcile.
struct NoRegistry;

#[async_trait::async_trait]
impl ModelRegistry for NoRegistry {
    async fn resolve(
        &self,
        endpoint: &Endpoint<'_>,
        _: &ModelReference,
    ) -> Result<mlkube_operator::crd::model_deployment::ResolvedModel, RegistryError> {
        Err(RegistryError::InvalidUri(endpoint.uri.to_owned()))
    }

    async fn set_alias(
        &self,
        endpoint: &Endpoint<'_>,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<(), RegistryError> {
        Err(RegistryError::InvalidUri(endpoint.uri.to_owned()))
    }
}

fn operation(leader_election: Option<LeaderElection>) -> (Operation, Arc<AtomicBool>) {
    let ready = Arc::new(AtomicBool::new(false));
    let operation = Operation {
        namespace: Some(NS.to_owned()),
        defaults: Defaults::for_version("0.1.0"),
        registry: Arc::new(NoRegistry),
        measurements: Arc::new(mlkube_operator::rollout::measure::NotConfigured),
        metrics: Arc::new(Metrics::default()),
        resolve_interval: Duration::from_secs(60),
        instance: Some("op-b".to_owned()),
        leader_election,
        ready: ready.clone(),
    };
    (operation, ready)
}

/// Wait (up to `secs`) until `done` holds.
async fn eventually(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Running = (
    tokio::task::JoinHandle<Result<(), RunError>>,
    tokio::sync::oneshot::Sender<()>,
);

fn start(server: &ApiServer, operation: Operation) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = server.client();
    let task = tokio::spawn(run::operate(client, operation, async move {
        let _ = stopped.await;
    }));
    (task, stop)
}

async fn stop((task, stop): Running) -> Result<(), RunError> {
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("operate did not stop on shutdown")
        .unwrap()
}

fn expected_watches(monitoring: bool) -> BTreeMap<String, usize> {
    let mut watches = BTreeMap::from([
        // The TrackingServer controller, and the ModelDeployment controller's mapping watch.
        (format!("{MLKUBE}/trackingservers"), 2),
        (format!("{MLKUBE}/modeldeployments"), 1),
        // Children of both controllers, or of the TrackingServer alone.
        ("/apis/apps/v1/namespaces/ml/deployments (children)".to_owned(), 2),
        ("/api/v1/namespaces/ml/services (children)".to_owned(), 2),
        ("/apis/apps/v1/namespaces/ml/daemonsets (children)".to_owned(), 1),
        ("/api/v1/namespaces/ml/serviceaccounts (children)".to_owned(), 1),
        (
            "/api/v1/namespaces/ml/persistentvolumeclaims (children)".to_owned(),
            1,
        ),
        ("/api/v1/namespaces/ml/configmaps (children)".to_owned(), 1),
        (
            "/apis/policy/v1/namespaces/ml/poddisruptionbudgets (children)".to_owned(),
            2,
        ),
        (
            "/apis/networking.k8s.io/v1/namespaces/ml/ingresses (children)".to_owned(),
            2,
        ),
        // The ModelDeployment controller's alone.
        (
            "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers (children)".to_owned(),
            1,
        ),
    ]);
    if monitoring {
        watches.insert(
            "/apis/monitoring.coreos.com/v1/namespaces/ml/servicemonitors (children)".to_owned(),
            2,
        );
        watches.insert(
            "/apis/monitoring.coreos.com/v1/namespaces/ml/prometheusrules (children)".to_owned(),
            1,
        );
    }
    watches
}

#[tokio::test]
async fn the_controllers_watch_their_resources_and_every_child_kind() {
    for (monitoring, served) in [
        (Monitoring::Served, true),
        (Monitoring::Absent, false),
        // Discovery refused by RBAC: run without ServiceMonitor/PrometheusRule watches.
        (Monitoring::Forbidden, false),
    ] {
        let server = ApiServer::new(monitoring);
        let (operation, ready) = operation(None);
        let running = start(&server, operation);
        let expected = expected_watches(served);
        eventually(10, "every watch", || server.watches() == expected).await;
        assert!(ready.load(Ordering::Relaxed));
        // Discovery came first: both CRDs, then the monitoring API.
        let first: Vec<String> = server.seen()[..3]
            .iter()
            .map(|(m, p, q)| format!("{m} {p}?{q}"))
            .collect();
        assert_eq!(
            first,
            [
                format!("GET {MLKUBE}/trackingservers?&limit=1"),
                format!("GET {MLKUBE}/modeldeployments?&limit=1"),
                "GET /apis/monitoring.coreos.com/v1?".to_owned(),
            ]
        );
        stop(running).await.unwrap();
        assert_eq!(
            server.watches(),
            expected,
            "no watch was opened after the expected ones"
        );
    }
}

#[tokio::test]
async fn missing_crds_stop_the_operator_with_a_clear_error() {
    let server = ApiServer::new(Monitoring::Served);
    server.0.lock().unwrap().crds = false;
    let (operation, ready) = operation(None);
    let (task, _stop) = start(&server, operation);
    let err = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, RunError::Crd("trackingservers.mlkube.io", _)),
        "{err:?}"
    );
    assert!(err.to_string().contains("kubectl apply -f crds/"), "{err}");
    assert!(!ready.load(Ordering::Relaxed));
}

#[tokio::test]
async fn a_watch_that_expires_lists_again() {
    // 410 Gone on a watch (its resourceVersion was compacted): the watcher starts over with a
    // fresh list, then watches from there.
    let server = ApiServer::new(Monitoring::Served);
    let path = format!("{MLKUBE}/modeldeployments");
    server.0.lock().unwrap().expire_first_watch_of = Some(path.clone());
    let (operation, _) = operation(None);
    let running = start(&server, operation);
    eventually(15, "a second list after the 410", || server.lists_of(&path) >= 2).await;
    eventually(10, "a new watch after the relist", || {
        server.watches().get(&path).copied().unwrap_or_default() >= 2
    })
    .await;
    stop(running).await.unwrap();
}

#[test]
fn a_tracking_server_change_reconciles_the_model_deployments_that_reference_it() {
    let ts: TrackingServer = serde_json::from_value(json!({
        "apiVersion": "mlkube.io/v1alpha1", "kind": "TrackingServer",
        "metadata": {"name": "mlflow", "namespace": "ml"}, "spec": {}}))
    .unwrap();
    let md = |name: &str, namespace: &str, tracking: Value| -> Arc<ModelDeployment> {
        let mut spec = json!({"model": {"name": "churn", "version": "1"}});
        spec.as_object_mut()
            .unwrap()
            .extend(tracking.as_object().unwrap().clone());
        Arc::new(
            serde_json::from_value(
                json!({"apiVersion": "mlkube.io/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}),
            )
            .unwrap(),
        )
    };
    let mds = vec![
        md("churn", "ml", json!({"trackingServerRef": {"name": "mlflow"}})),
        md(
            "other-server",
            "ml",
            json!({"trackingServerRef": {"name": "mlflow-2"}}),
        ),
        md(
            "elsewhere",
            "prod",
            json!({"trackingServerRef": {"name": "mlflow"}}),
        ),
        md(
            "external",
            "ml",
            json!({"trackingUri": "http://mlflow.ml.svc:5000"}),
        ),
        md("fraud", "ml", json!({"trackingServerRef": {"name": "mlflow"}})),
    ];
    let names: Vec<String> = run::referencing(&ts, mds)
        .into_iter()
        .map(|r| format!("{}/{}", r.namespace.unwrap(), r.name))
        .collect();
    assert_eq!(names, ["ml/churn", "ml/fraud"]);
}

#[tokio::test]
async fn a_standby_takes_over_when_the_lease_expires_and_exits_when_it_is_lost() {
    let server = ApiServer::new(Monitoring::Absent);
    // Another replica holds the Lease (2 s) and stops renewing it.
    server.set_lease("op-a", 2, 3);
    let election = LeaderElection {
        namespace: NS.to_owned(),
        identity: Some("op-b".to_owned()),
        duration_secs: 2,
        grace_secs: 1,
    };
    let (operation, ready) = operation(Some(election));
    let (task, _stop) = start(&server, operation);

    // Standby: ready (so the Deployment rolls), but no controller runs.
    eventually(10, "readiness", || ready.load(Ordering::Relaxed)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(server.watches().is_empty(), "{:?}", server.watches());
    assert_eq!(server.lease_holder().as_deref(), Some("op-a"));

    // The Lease expires: op-b takes it and starts the controllers.
    eventually(15, "the takeover", || {
        server.lease_holder().as_deref() == Some("op-b")
    })
    .await;
    let expected = expected_watches(false);
    eventually(10, "every watch", || server.watches() == expected).await;

    // op-a takes the Lease back: op-b notices at its next renewal and exits, so that its
    // Deployment restarts it as a standby.
    server.set_lease("op-a", 2, 5);
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the lost lease did not stop the operator")
        .unwrap();
    assert!(matches!(result, Err(RunError::LostLease)), "{result:?}");
}
