//! A scripted, request-exact mock API server (the tower-test pattern of kube-rs/controller-rs)
//! and fixtures with a fixed namespace, uid and timestamps.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

pub mod apiserver;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use mlkube_operator::controller::Context;
use mlkube_operator::crd::model_deployment::ResolvedModel;
use mlkube_operator::metrics::Metrics;
use mlkube_operator::registry::{Endpoint, ModelReference, ModelRegistry, RegistryError};
use mlkube_operator::rollout::measure::MeasurementSource;
use mlkube_operator::rollout::{Snapshot, SnapshotQuery};
use mlkube_operator::validate::Defaults;
use serde_json::{Value, json};

pub const NAMESPACE: &str = "ml";
pub const UID: &str = "11111111-2222-4333-8444-555555555555";
pub const NOW: &str = "2026-03-01T12:00:00Z";
pub const EARLIER: &str = "2026-02-01T08:00:00Z";

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// What the mock API server answers.
pub enum Reply {
    /// 200 with this JSON.
    Json(Value),
    /// 200 with the request body echoed back (what server-side apply returns, near enough).
    Echo,
    /// An API error status, with the reason the API server gives that code.
    Status(u16),
    /// An API error: the `Status` object the API server sends, answered with its `code`.
    Error(Value),
    /// 200 with this object, overlaid with the request body's top-level fields (a status
    /// patch answered with the whole resource).
    Merge(Value),
}

/// One expected request: exact method and URI (path and query), and the reply.
pub struct Step {
    pub method: Method,
    pub uri: String,
    pub reply: Reply,
}

pub fn get(uri: impl Into<String>, reply: Reply) -> Step {
    Step {
        method: Method::GET,
        uri: uri.into(),
        reply,
    }
}

pub fn patch(uri: impl Into<String>) -> Step {
    Step {
        method: Method::PATCH,
        uri: uri.into(),
        reply: Reply::Echo,
    }
}

/// A status patch, answered with `object` carrying the new status.
pub fn patch_status(uri: impl Into<String>, object: &impl serde::Serialize) -> Step {
    Step {
        method: Method::PATCH,
        uri: uri.into(),
        reply: Reply::Merge(serde_json::to_value(object).unwrap()),
    }
}

/// An Event the recorder creates (`events.k8s.io/v1`).
pub fn post_event() -> Step {
    Step {
        method: Method::POST,
        uri: format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events?"),
        reply: Reply::Echo,
    }
}

pub fn delete(uri: impl Into<String>) -> Step {
    Step {
        method: Method::DELETE,
        uri: uri.into(),
        reply: Reply::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
    }
}

/// A request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub body: Value,
}

/// Serve `steps` in order, asserting each request's method and URI, and record what came.
pub fn serve(mut handle: Handle, steps: Vec<Step>) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for (i, step) in steps.into_iter().enumerate() {
            let Some((request, send)) = handle.next_request().await else {
                panic!("step {i}: the client stopped before {} {}", step.method, step.uri);
            };
            let method = request.method().clone();
            let uri = request.uri().to_string();
            let bytes = http_body_util::BodyExt::collect(request.into_body())
                .await
                .unwrap()
                .to_bytes();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            assert_eq!(
                (&method, uri.as_str()),
                (&step.method, step.uri.as_str()),
                "step {i}: unexpected request (requests so far: {:#?})",
                seen.iter()
                    .map(|s: &Seen| format!("{} {}", s.method, s.uri))
                    .collect::<Vec<_>>()
            );
            let (status, reply) = match step.reply {
                Reply::Json(v) => (StatusCode::OK, v),
                Reply::Echo => (StatusCode::OK, body.clone()),
                Reply::Merge(mut base) => {
                    if let (Some(b), Some(patch)) = (base.as_object_mut(), body.as_object()) {
                        for (k, v) in patch {
                            b.insert(k.clone(), v.clone());
                        }
                    }
                    (StatusCode::OK, base)
                }
                Reply::Status(code) => (
                    StatusCode::from_u16(code).unwrap(),
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "code": code, "reason": status_reason(code), "message": "mock"}),
                ),
                Reply::Error(body) => (
                    StatusCode::from_u16(u16::try_from(body["code"].as_u64().unwrap()).unwrap()).unwrap(),
                    body,
                ),
            };
            let mut response = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            if let Some(after) = reply["details"]["retryAfterSeconds"].as_u64() {
                response = response.header("retry-after", after.to_string());
            }
            let response = response
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
            seen.push(Seen { method, uri, body });
        }
        // Nothing may follow the script. The wait ends at once when the test has dropped every
        // client (the reconcile's context); a request the controller makes after the last
        // scripted one is already on its way by then.
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await
        {
            panic!(
                "unexpected request after the script: {} {} (requests: {:#?})",
                request.method(),
                request.uri(),
                seen.iter()
                    .map(|s| format!("{} {}", s.method, s.uri))
                    .collect::<Vec<_>>()
            );
        }
        seen
    })
}

/// What the fake registry answers.
pub enum Answer {
    Resolve(ResolvedModel),
    Unreachable(String),
    /// The registry answered: no such model, version or alias.
    NotFound,
}

/// The `reason` the API server gives an HTTP status (`metav1.StatusReason`).
pub fn status_reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// A `Status` failure as the API server writes it.
pub fn api_error(code: u16, reason: &str, message: &str, details: Value) -> Reply {
    Reply::Error(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code,
    }))
}

/// 403 from RBAC: the operator's ServiceAccount may not `verb` the resource.
pub fn forbidden(verb: &str, resource: &str, group: &str, name: &str) -> Reply {
    let what = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    api_error(
        403,
        "Forbidden",
        &format!(
            "{what} \"{name}\" is forbidden: User \"system:serviceaccount:mlkube:mlkube-operator\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{NAMESPACE}\""
        ),
        json!({"name": name, "group": group, "kind": resource}),
    )
}

/// 429 from API Priority and Fairness, with its retry hint.
pub fn throttled(retry_after_seconds: u32) -> Reply {
    api_error(
        429,
        "TooManyRequests",
        "storage is (re)initializing",
        json!({"retryAfterSeconds": retry_after_seconds}),
    )
}

/// 410 for a list or watch whose resourceVersion was compacted.
pub fn expired() -> Reply {
    api_error(410, "Expired", "too old resource version: 1 (4242)", json!({}))
}

/// A registry with one scripted answer, recording what it was asked.
pub struct FakeRegistry {
    pub answer: Mutex<Answer>,
    pub asked: Mutex<Vec<(String, String)>>,
    /// Aliases set (a promoted canary): `(tracking URI, "models:/name@alias", version)`.
    pub aliases_set: Mutex<Vec<(String, String, String)>>,
}

impl FakeRegistry {
    fn answering(answer: Answer) -> Arc<Self> {
        Arc::new(Self {
            answer: Mutex::new(answer),
            asked: Mutex::new(Vec::new()),
            aliases_set: Mutex::new(Vec::new()),
        })
    }

    pub fn resolving(version: &str) -> Arc<Self> {
        Self::answering(Answer::Resolve(resolved("models:/churn@champion", version)))
    }

    pub fn unreachable() -> Arc<Self> {
        Self::answering(Answer::Unreachable("connection refused".into()))
    }

    pub fn not_found() -> Arc<Self> {
        Self::answering(Answer::NotFound)
    }
}

pub fn resolved(reference: &str, version: &str) -> ResolvedModel {
    ResolvedModel {
        reference: reference.into(),
        name: "churn".into(),
        version: version.into(),
        run_id: Some(format!("run{version}")),
        source: Some(format!("mlflow-artifacts:/1/run{version}/artifacts/model")),
    }
}

#[async_trait::async_trait]
impl ModelRegistry for FakeRegistry {
    async fn resolve(
        &self,
        endpoint: &Endpoint<'_>,
        reference: &ModelReference,
    ) -> Result<ResolvedModel, RegistryError> {
        let tracking_uri = endpoint.uri;
        let who = endpoint
            .credentials
            .map(|c| format!("{}@", c.username))
            .unwrap_or_default();
        // A CA bundle shows as `ca=<its first line>` after the URI.
        let ca = endpoint
            .ca_bundle
            .map(|pem| {
                format!(
                    " ca={}",
                    String::from_utf8_lossy(pem).lines().next().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        self.asked
            .lock()
            .unwrap()
            .push((format!("{who}{tracking_uri}{ca}"), reference.to_string()));
        match &*self.answer.lock().unwrap() {
            Answer::Resolve(r) => Ok(r.clone()),
            Answer::Unreachable(msg) => Err(RegistryError::Unreachable {
                uri: tracking_uri.to_owned(),
                source: msg.clone().into(),
            }),
            Answer::NotFound => Err(RegistryError::NotFound(reference.to_string())),
        }
    }

    async fn set_alias(
        &self,
        endpoint: &Endpoint<'_>,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), RegistryError> {
        self.aliases_set.lock().unwrap().push((
            endpoint.uri.to_owned(),
            format!("models:/{name}@{alias}"),
            version.to_owned(),
        ));
        Ok(())
    }
}

/// Canary measurements with one scripted snapshot, recording the queries asked.
pub struct FakeMeasurements {
    pub snapshot: Snapshot,
    pub asked: Mutex<Vec<SnapshotQuery>>,
}

impl FakeMeasurements {
    pub fn answering(snapshot: Snapshot) -> Arc<Self> {
        Arc::new(Self {
            snapshot,
            asked: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl MeasurementSource for FakeMeasurements {
    async fn snapshot(&self, _tracking: &Endpoint<'_>, query: &SnapshotQuery) -> Snapshot {
        self.asked.lock().unwrap().push(query.clone());
        self.snapshot.clone()
    }
}

/// A client talking to the mock server, and a context with a fixed clock whose canary
/// measurements come from `measurements`.
pub fn context_measuring(
    registry: Arc<dyn ModelRegistry>,
    measurements: Arc<dyn MeasurementSource>,
) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    let ctx = Context::new(client, registry, defaults(), Arc::new(Metrics::default()))
        .with_clock(|| time(NOW))
        .with_measurements(measurements);
    (Arc::new(ctx), handle)
}

pub fn time(s: &str) -> Time {
    Time(s.parse().unwrap())
}

pub fn defaults() -> Defaults {
    Defaults::for_version("0.1.0")
}

/// A client talking to the mock server, and a context with a fixed clock.
pub fn context(registry: Arc<dyn ModelRegistry>) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    let ctx =
        Context::new(client, registry, defaults(), Arc::new(Metrics::default())).with_clock(|| time(NOW));
    (Arc::new(ctx), handle)
}

/// Run a future under a generous hang guard: a missing request shows up as a timeout, not a hang.
pub async fn guarded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("reconcile did not finish: it waits for a request the scenario does not script")
}

pub fn list(items: Vec<Value>) -> Reply {
    Reply::Json(
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

pub fn monitoring_api() -> Reply {
    Reply::Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "monitoring.coreos.com/v1",
        "resources": [
            {"name": "servicemonitors", "singularName": "servicemonitor", "namespaced": true, "kind": "ServiceMonitor",
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"name": "prometheusrules", "singularName": "prometheusrule", "namespaced": true, "kind": "PrometheusRule",
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}
        ]
    }))
}

pub const DISCOVERY: &str = "/apis/monitoring.coreos.com/v1";
/// Discovery of KEDA's ScaledObjects (ModelDeployments only).
pub const KEDA_DISCOVERY: &str = "/apis/keda.sh/v1alpha1";
/// Discovery of the Gateway API's HTTPRoutes.
pub const GATEWAY_DISCOVERY: &str = "/apis/gateway.networking.k8s.io/v1";

fn api_resources(group_version: &str, kind: &str, plural: &str) -> Reply {
    Reply::Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": [
            {"name": plural, "singularName": kind.to_lowercase(), "namespaced": true, "kind": kind,
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"name": format!("{plural}/status"), "singularName": "", "namespaced": true, "kind": kind,
             "verbs": ["get", "patch", "update"]}
        ]
    }))
}

/// KEDA is installed.
pub fn keda_api() -> Reply {
    api_resources("keda.sh/v1alpha1", "ScaledObject", "scaledobjects")
}

/// The Gateway API CRDs are installed.
pub fn gateway_api() -> Reply {
    api_resources("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes")
}
