//! Basic auth (`--app-name basic-auth`) over HTTP: authentication (401 + challenge), the route table
//! covering every route (fail closed), permissions per route class (tracking, registry, artifacts,
//! ajax, logged models, 3.0), READ / EDIT / MANAGE levels, creator grants, filtered searches, the
//! default permission, and the users/permissions endpoints with MLflow's shapes and error codes.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use common::{ADMIN, TestApp, assert_error, test_app_with_auth};
use mlkube_server::auth::Permission;
use serde_json::{Value, json};
use tower::ServiceExt;

type Who<'a> = Option<(&'a str, &'a str)>;

const ALICE: (&str, &str) = ("alice", "alice-password-1");
const BOB: (&str, &str) = ("bob", "bob-password-123");
const MALLORY: (&str, &str) = ("mallory", "mallory-password");

fn basic((user, password): (&str, &str)) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn request(who: Who<'_>, method: Method, uri: &str, body: Option<Value>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(who) = who {
        req = req.header(header::AUTHORIZATION, basic(who));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    req.body(body).unwrap()
}

async fn call(
    app: &TestApp,
    who: Who<'_>,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.send(request(who, method, uri, body)).await
}

async fn post(app: &TestApp, who: (&str, &str), path: &str, body: Value) -> (StatusCode, Value) {
    call(
        app,
        Some(who),
        Method::POST,
        &format!("/api/2.0/mlflow/{path}"),
        Some(body),
    )
    .await
}

async fn get(app: &TestApp, who: (&str, &str), path_and_query: &str) -> (StatusCode, Value) {
    call(
        app,
        Some(who),
        Method::GET,
        &format!("/api/2.0/mlflow/{path_and_query}"),
        None,
    )
    .await
}

async fn ok(app: &TestApp, who: (&str, &str), method: Method, uri: &str, body: Option<Value>) -> Value {
    let (status, body) = call(app, Some(who), method.clone(), uri, body).await;
    assert_eq!(status, StatusCode::OK, "{method} {uri} as {}: {body}", who.0);
    body
}

async fn put_artifact(app: &TestApp, who: (&str, &str), path: &str, bytes: &'static str) -> StatusCode {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/api/2.0/mlflow-artifacts/artifacts/{path}"))
        .header(header::AUTHORIZATION, basic(who))
        .body(Body::from(bytes))
        .unwrap();
    app.send(req).await.0
}

async fn create_user(app: &TestApp, (username, password): (&str, &str)) {
    ok(
        app,
        ADMIN,
        Method::POST,
        "/api/2.0/mlflow/users/create",
        Some(json!({ "username": username, "password": password })),
    )
    .await;
}

async fn grant_experiment(app: &TestApp, experiment_id: &str, username: &str, permission: &str) {
    ok(
        app,
        ADMIN,
        Method::POST,
        "/api/2.0/mlflow/experiments/permissions/create",
        Some(json!({ "experiment_id": experiment_id, "username": username, "permission": permission })),
    )
    .await;
}

async fn grant_model(app: &TestApp, name: &str, username: &str, permission: &str) {
    ok(
        app,
        ADMIN,
        Method::POST,
        "/api/2.0/mlflow/registered-models/permissions/create",
        Some(json!({ "name": name, "username": username, "permission": permission })),
    )
    .await;
}

/// What the admin sets up: an experiment with a run (a metric, an artifact), a logged model, a
/// registered model with one version.
struct World {
    experiment_id: String,
    run_id: String,
    model_id: String,
    model: String,
}

async fn world(app: &TestApp, name: &str) -> World {
    let (_, b) = post(app, ADMIN, "experiments/create", json!({ "name": name })).await;
    let experiment_id = b["experiment_id"].as_str().unwrap().to_owned();
    let (_, b) = post(
        app,
        ADMIN,
        "runs/create",
        json!({ "experiment_id": experiment_id }),
    )
    .await;
    let run_id = b["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let (s, b) = post(
        app,
        ADMIN,
        "runs/log-metric",
        json!({ "run_id": run_id, "key": "m", "value": 1.0, "timestamp": 1 }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let path = format!("{experiment_id}/{run_id}/artifacts/f.txt");
    assert_eq!(put_artifact(app, ADMIN, &path, "hello").await, StatusCode::OK);
    let (s, b) = post(
        app,
        ADMIN,
        "logged-models",
        json!({ "experiment_id": experiment_id }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let model_id = b["model"]["info"]["model_id"].as_str().unwrap().to_owned();
    let model = format!("{name}-model");
    let (s, b) = post(app, ADMIN, "registered-models/create", json!({ "name": model })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = post(
        app,
        ADMIN,
        "model-versions/create",
        json!({ "name": model, "source": format!("runs:/{run_id}/model"), "run_id": run_id }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    World {
        experiment_id,
        run_id,
        model_id,
        model,
    }
}

#[tokio::test]
async fn unauthenticated_requests_get_401_with_a_challenge() {
    let app = test_app_with_auth(Permission::Read).await;
    create_user(&app, ALICE).await;
    for (who, uri) in [
        (None, "/api/2.0/mlflow/experiments/search"),
        (
            Some(("alice", "wrong-password!!")),
            "/api/2.0/mlflow/experiments/search",
        ),
        (
            Some(("nobody", "alice-password-1")),
            "/api/2.0/mlflow/experiments/search",
        ),
        (None, "/ajax-api/2.0/mlflow/experiments/search"),
        (None, "/api/3.0/mlflow/server-info"),
        (None, "/api/2.0/mlflow-artifacts/artifacts/0/x"),
        (None, "/api/2.0/mlflow/users/create"),
        (None, "/no/such/route"),
    ] {
        let resp = app
            .router
            .clone()
            .oneshot(request(who, Method::GET, uri, None))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{uri} as {who:?}");
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"mlflow\"",
            "{uri}"
        );
    }
    // Malformed Authorization headers are no credentials.
    for value in ["Basic !!!", "Bearer abc", "Basic YWxpY2U="] {
        let req = Request::builder()
            .uri("/api/2.0/mlflow/experiments/search")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        let (s, b) = app.send(req).await;
        assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    }
    // Probes stay public.
    for uri in ["/health", "/version"] {
        let (s, _) = call(&app, None, Method::GET, uri, None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }
    // With credentials: 200, and the cached second call too.
    for _ in 0..2 {
        ok(
            &app,
            ALICE,
            Method::GET,
            "/api/2.0/mlflow/experiments/search",
            None,
        )
        .await;
    }
    ok(&app, ALICE, Method::GET, "/api/3.0/mlflow/server-info", None).await;
    // An unknown route is a 404 once authenticated.
    let (s, b) = call(&app, Some(ALICE), Method::GET, "/no/such/route", None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND");
}

/// A user with no permission anywhere is refused on a representative route of every class, and the
/// admin is not.
#[tokio::test]
async fn a_user_without_permission_gets_403_on_every_route_class() {
    let app = test_app_with_auth(Permission::NoPermissions).await;
    create_user(&app, MALLORY).await;
    let w = world(&app, "secret").await;
    let (e, r, lm, m) = (&w.experiment_id, &w.run_id, &w.model_id, &w.model);
    let artifact = format!("/api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts/f.txt");
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        // tracking reads
        (
            Method::GET,
            format!("/api/2.0/mlflow/experiments/get?experiment_id={e}"),
            None,
        ),
        (
            Method::GET,
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=secret".into(),
            None,
        ),
        (Method::GET, format!("/api/2.0/mlflow/runs/get?run_id={r}"), None),
        (
            Method::GET,
            format!("/api/2.0/mlflow/metrics/get-history?run_id={r}&metric_key=m"),
            None,
        ),
        (
            Method::GET,
            format!("/api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids={r}&metric_key=m"),
            None,
        ),
        (
            Method::GET,
            format!("/api/2.0/mlflow/artifacts/list?run_id={r}"),
            None,
        ),
        // tracking writes
        (
            Method::POST,
            "/api/2.0/mlflow/runs/create".into(),
            Some(json!({ "experiment_id": e })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/runs/log-metric".into(),
            Some(json!({ "run_id": r, "key": "m", "value": 2.0, "timestamp": 2 })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/runs/log-batch".into(),
            Some(json!({ "run_id": r })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/runs/log-inputs".into(),
            Some(json!({ "run_id": r, "datasets": [] })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/runs/delete".into(),
            Some(json!({ "run_id": r })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/experiments/update".into(),
            Some(json!({ "experiment_id": e, "new_name": "x" })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/experiments/delete".into(),
            Some(json!({ "experiment_id": e })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/runs/search".into(),
            Some(json!({ "experiment_ids": [e] })),
        ),
        // registry
        (
            Method::GET,
            format!("/api/2.0/mlflow/registered-models/get?name={m}"),
            None,
        ),
        (
            Method::GET,
            format!("/api/2.0/mlflow/model-versions/get?name={m}&version=1"),
            None,
        ),
        (
            Method::GET,
            format!("/api/2.0/mlflow/model-versions/get-download-uri?name={m}&version=1"),
            None,
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/registered-models/rename".into(),
            Some(json!({ "name": m, "new_name": "stolen" })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/registered-models/alias".into(),
            Some(json!({ "name": m, "alias": "prod", "version": "1" })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/model-versions/create".into(),
            Some(json!({ "name": m, "source": format!("runs:/{r}/model"), "run_id": r })),
        ),
        (
            Method::DELETE,
            "/api/2.0/mlflow/registered-models/delete".into(),
            Some(json!({ "name": m })),
        ),
        // artifacts: GET, PUT, DELETE, listing, multipart, and paths outside an experiment
        (Method::GET, artifact.clone(), None),
        (Method::PUT, artifact.clone(), None),
        (Method::DELETE, artifact.clone(), None),
        (
            Method::GET,
            format!("/api/2.0/mlflow-artifacts/artifacts?path={e}/{r}/artifacts"),
            None,
        ),
        (
            Method::GET,
            "/api/2.0/mlflow-artifacts/artifacts?path=".into(),
            None,
        ),
        (
            Method::POST,
            format!("/api/2.0/mlflow-artifacts/mpu/create/{e}/{r}/artifacts/big.bin"),
            Some(json!({ "path": "big.bin", "num_parts": 2 })),
        ),
        (
            Method::GET,
            "/api/2.0/mlflow-artifacts/artifacts/custom/location.txt".into(),
            None,
        ),
        (
            Method::PUT,
            format!("/api/2.0/mlflow-artifacts/artifacts/0{e}/x.txt"),
            None,
        ),
        // ajax prefix
        (
            Method::GET,
            format!("/ajax-api/2.0/mlflow/runs/get?run_id={r}"),
            None,
        ),
        (
            Method::GET,
            format!("/ajax-api/2.0/mlflow/metrics/get-history-bulk?run_id={r}&metric_key=m"),
            None,
        ),
        (
            Method::GET,
            format!("/ajax-api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts/f.txt"),
            None,
        ),
        // logged models
        (Method::GET, format!("/api/2.0/mlflow/logged-models/{lm}"), None),
        (
            Method::DELETE,
            format!("/api/2.0/mlflow/logged-models/{lm}"),
            None,
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/logged-models".into(),
            Some(json!({ "experiment_id": e })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/logged-models/search".into(),
            Some(json!({ "experiment_ids": [e] })),
        ),
        // users and permissions (creating users is admin-only: CVE-2023-6014)
        (
            Method::POST,
            "/api/2.0/mlflow/users/create".into(),
            Some(json!({ "username": "eve", "password": "eve-password-12" })),
        ),
        (Method::GET, "/api/2.0/mlflow/users/list".into(), None),
        (
            Method::GET,
            "/api/2.0/mlflow/users/get?username=admin".into(),
            None,
        ),
        (
            Method::PATCH,
            "/api/2.0/mlflow/users/update-admin".into(),
            Some(json!({ "username": "mallory", "is_admin": true })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/experiments/permissions/create".into(),
            Some(json!({ "experiment_id": e, "username": "mallory", "permission": "MANAGE" })),
        ),
        (
            Method::POST,
            "/ajax-api/2.0/mlflow/registered-models/permissions/create".into(),
            Some(json!({ "name": m, "username": "mallory", "permission": "MANAGE" })),
        ),
        // a registered path with a method the table does not list: fail closed
        (Method::PUT, "/api/2.0/mlflow/runs/get".into(), None),
    ];
    for (method, uri, body) in &cases {
        let (s, b) = call(&app, Some(MALLORY), method.clone(), uri, body.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {uri}: {b}");
        assert_eq!(b["error_code"], "PERMISSION_DENIED", "{method} {uri}: {b}");
    }
    // The admin passes the same checks.
    for uri in [
        format!("/api/2.0/mlflow/experiments/get?experiment_id={e}"),
        format!("/api/2.0/mlflow/runs/get?run_id={r}"),
        format!("/api/2.0/mlflow/metrics/get-history?run_id={r}&metric_key=m"),
        format!("/api/2.0/mlflow/registered-models/get?name={m}"),
        artifact.clone(),
        format!("/api/2.0/mlflow-artifacts/artifacts?path={e}/{r}/artifacts"),
        format!("/api/2.0/mlflow/logged-models/{lm}"),
        format!("/ajax-api/2.0/mlflow/runs/get?run_id={r}"),
        "/api/2.0/mlflow/users/list".to_owned(),
    ] {
        ok(&app, ADMIN, Method::GET, &uri, None).await;
    }
    // Nothing of the admin's shows in mallory's searches (the Default experiment included).
    let b = ok(
        &app,
        MALLORY,
        Method::GET,
        "/api/2.0/mlflow/experiments/search",
        None,
    )
    .await;
    assert!(b.get("experiments").is_none(), "{b}");
    let b = ok(
        &app,
        MALLORY,
        Method::GET,
        "/api/2.0/mlflow/registered-models/search",
        None,
    )
    .await;
    assert!(b.get("registered_models").is_none(), "{b}");
    let b = ok(
        &app,
        MALLORY,
        Method::GET,
        "/api/2.0/mlflow/model-versions/search",
        None,
    )
    .await;
    assert!(b.get("model_versions").is_none(), "{b}");
    let b = ok(
        &app,
        MALLORY,
        Method::POST,
        "/api/2.0/mlflow/logged-models/search",
        Some(json!({ "experiment_ids": [] })),
    )
    .await;
    assert!(b.get("models").is_none(), "{b}");
    // The run and the artifact are untouched.
    let b = ok(
        &app,
        ADMIN,
        Method::GET,
        &format!("/api/2.0/mlflow/runs/get?run_id={r}"),
        None,
    )
    .await;
    assert_eq!(b["run"]["info"]["lifecycle_stage"], "active");
    assert_eq!(b["run"]["data"]["metrics"][0]["value"], 1.0);
}

/// READ reads, EDIT writes but does not delete, MANAGE deletes and grants.
#[tokio::test]
async fn read_edit_manage_levels_on_experiments_runs_and_artifacts() {
    let app = test_app_with_auth(Permission::NoPermissions).await;
    create_user(&app, ALICE).await;
    create_user(&app, BOB).await;
    let w = world(&app, "levels").await;
    let (e, r) = (&w.experiment_id, &w.run_id);
    let file = format!("{e}/{r}/artifacts/f.txt");
    let log_metric = json!({ "run_id": r, "key": "m", "value": 3.0, "timestamp": 3 });

    grant_experiment(&app, e, "alice", "READ").await;
    ok(
        &app,
        ALICE,
        Method::GET,
        &format!("/api/2.0/mlflow/runs/get?run_id={r}"),
        None,
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::GET,
        &format!("/api/2.0/mlflow-artifacts/artifacts/{file}"),
        None,
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::GET,
        &format!("/api/2.0/mlflow-artifacts/artifacts?path={e}/{r}/artifacts"),
        None,
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/runs/search",
        Some(json!({ "experiment_ids": [e] })),
    )
    .await;
    let (s, _) = post(&app, ALICE, "runs/log-metric", log_metric.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        put_artifact(&app, ALICE, &format!("{e}/{r}/artifacts/g.txt"), "x").await,
        StatusCode::FORBIDDEN
    );

    ok(
        &app,
        ADMIN,
        Method::PATCH,
        "/api/2.0/mlflow/experiments/permissions/update",
        Some(json!({ "experiment_id": e, "username": "alice", "permission": "EDIT" })),
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/runs/log-metric",
        Some(log_metric.clone()),
    )
    .await;
    assert_eq!(
        put_artifact(&app, ALICE, &format!("{e}/{r}/artifacts/g.txt"), "x").await,
        StatusCode::OK
    );
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/runs/create",
        Some(json!({ "experiment_id": e })),
    )
    .await;
    for (method, uri, body) in [
        (
            Method::POST,
            "/api/2.0/mlflow/runs/delete".to_owned(),
            Some(json!({ "run_id": r })),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/experiments/delete".to_owned(),
            Some(json!({ "experiment_id": e })),
        ),
        // Deleting artifacts needs MANAGE (CVE-2024-4263).
        (
            Method::DELETE,
            format!("/api/2.0/mlflow-artifacts/artifacts/{file}"),
            None,
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/experiments/permissions/create".to_owned(),
            Some(json!({ "experiment_id": e, "username": "bob", "permission": "READ" })),
        ),
    ] {
        let (s, b) = call(&app, Some(ALICE), method.clone(), &uri, body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "EDIT may not {method} {uri}: {b}");
    }

    ok(
        &app,
        ADMIN,
        Method::PATCH,
        "/api/2.0/mlflow/experiments/permissions/update",
        Some(json!({ "experiment_id": e, "username": "alice", "permission": "MANAGE" })),
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::DELETE,
        &format!("/api/2.0/mlflow-artifacts/artifacts/{file}"),
        None,
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/runs/delete",
        Some(json!({ "run_id": r })),
    )
    .await;
    // MANAGE grants: alice lets bob read, and bob then can.
    let (s, _) = get(&app, BOB, &format!("runs/get?run_id={r}")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/experiments/permissions/create",
        Some(json!({ "experiment_id": e, "username": "bob", "permission": "READ" })),
    )
    .await;
    ok(
        &app,
        BOB,
        Method::GET,
        &format!("/api/2.0/mlflow/runs/get?run_id={r}"),
        None,
    )
    .await;
    let b = ok(
        &app,
        ALICE,
        Method::GET,
        &format!("/api/2.0/mlflow/experiments/permissions/get?experiment_id={e}&username=bob"),
        None,
    )
    .await;
    assert_eq!(b["experiment_permission"]["permission"], "READ");
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/experiments/delete",
        Some(json!({ "experiment_id": e })),
    )
    .await;
    // NO_PERMISSIONS is a row that denies.
    ok(
        &app,
        ALICE,
        Method::PATCH,
        "/api/2.0/mlflow/experiments/permissions/update",
        Some(json!({ "experiment_id": e, "username": "bob", "permission": "NO_PERMISSIONS" })),
    )
    .await;
    let (s, _) = get(&app, BOB, &format!("runs/get?run_id={r}")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn read_edit_manage_levels_on_registered_models() {
    let app = test_app_with_auth(Permission::NoPermissions).await;
    create_user(&app, ALICE).await;
    let w = world(&app, "reg").await;
    let m = &w.model;
    let set_tag = json!({ "name": m, "key": "k", "value": "v" });

    grant_model(&app, m, "alice", "READ").await;
    ok(
        &app,
        ALICE,
        Method::GET,
        &format!("/api/2.0/mlflow/registered-models/get?name={m}"),
        None,
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::GET,
        &format!("/api/2.0/mlflow/model-versions/get?name={m}&version=1"),
        None,
    )
    .await;
    let (s, _) = post(&app, ALICE, "registered-models/set-tag", set_tag.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    ok(
        &app,
        ADMIN,
        Method::PATCH,
        "/api/2.0/mlflow/registered-models/permissions/update",
        Some(json!({ "name": m, "username": "alice", "permission": "EDIT" })),
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/registered-models/set-tag",
        Some(set_tag),
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/model-versions/transition-stage",
        Some(json!({ "name": m, "version": "1", "stage": "Production", "archive_existing_versions": false })),
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/registered-models/alias",
        Some(json!({ "name": m, "alias": "champion", "version": "1" })),
    )
    .await;
    // A new version from a run alice cannot read is refused, even with EDIT on the model.
    let (s, b) = post(
        &app,
        ALICE,
        "model-versions/create",
        json!({ "name": m, "source": format!("runs:/{}/model", w.run_id), "run_id": w.run_id }),
    )
    .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    for (method, uri, body) in [
        (Method::DELETE, "registered-models/delete", json!({ "name": m })),
        (
            Method::DELETE,
            "model-versions/delete",
            json!({ "name": m, "version": "1" }),
        ),
        (
            Method::DELETE,
            "registered-models/alias",
            json!({ "name": m, "alias": "champion" }),
        ),
    ] {
        let (s, b) = call(
            &app,
            Some(ALICE),
            method,
            &format!("/api/2.0/mlflow/{uri}"),
            Some(body),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "EDIT may not {uri}: {b}");
    }

    ok(
        &app,
        ADMIN,
        Method::PATCH,
        "/api/2.0/mlflow/registered-models/permissions/update",
        Some(json!({ "name": m, "username": "alice", "permission": "MANAGE" })),
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::DELETE,
        "/api/2.0/mlflow/registered-models/alias",
        Some(json!({ "name": m, "alias": "champion" })),
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::DELETE,
        "/api/2.0/mlflow/registered-models/delete",
        Some(json!({ "name": m })),
    )
    .await;
    // Deleting the model removed its permission rows.
    let (s, b) = get(
        &app,
        ADMIN,
        &format!("registered-models/permissions/get?name={m}&username=alice"),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
}

#[tokio::test]
async fn creators_get_manage_and_renames_keep_permissions() {
    let app = test_app_with_auth(Permission::Read).await;
    create_user(&app, ALICE).await;
    create_user(&app, BOB).await;
    let (_, b) = post(&app, ALICE, "experiments/create", json!({ "name": "alices" })).await;
    let e = b["experiment_id"].as_str().unwrap().to_owned();
    let b = ok(
        &app,
        ADMIN,
        Method::GET,
        &format!("/api/2.0/mlflow/experiments/permissions/get?experiment_id={e}&username=alice"),
        None,
    )
    .await;
    assert_eq!(
        b,
        json!({ "experiment_permission": { "experiment_id": e, "user_id": b["experiment_permission"]["user_id"], "permission": "MANAGE" } })
    );
    assert!(b["experiment_permission"]["user_id"].is_i64());
    // bob has the default READ: reads, cannot write.
    ok(
        &app,
        BOB,
        Method::GET,
        &format!("/api/2.0/mlflow/experiments/get?experiment_id={e}"),
        None,
    )
    .await;
    let (s, _) = post(&app, BOB, "runs/create", json!({ "experiment_id": e })).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, b) = post(
        &app,
        ALICE,
        "registered-models/create",
        json!({ "name": "alices-model" }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let b = ok(
        &app,
        ALICE,
        Method::GET,
        "/api/2.0/mlflow/users/get?username=alice",
        None,
    )
    .await;
    assert_eq!(b["user"]["username"], "alice");
    assert_eq!(b["user"]["is_admin"], false);
    assert_eq!(
        b["user"]["registered_model_permissions"][0],
        json!({ "name": "alices-model", "user_id": b["user"]["id"], "permission": "MANAGE" })
    );
    assert_eq!(b["user"]["experiment_permissions"][0]["experiment_id"], e);
    // Renaming moves the rows: alice still manages the model under its new name.
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/registered-models/rename",
        Some(json!({ "name": "alices-model", "new_name": "alices-model-2" })),
    )
    .await;
    ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/registered-models/permissions/create",
        Some(json!({ "name": "alices-model-2", "username": "bob", "permission": "EDIT" })),
    )
    .await;
    ok(
        &app,
        BOB,
        Method::POST,
        "/api/2.0/mlflow/registered-models/set-tag",
        Some(json!({ "name": "alices-model-2", "key": "k", "value": "v" })),
    )
    .await;
}

#[tokio::test]
async fn search_results_are_filtered_to_readable_items() {
    let app = test_app_with_auth(Permission::NoPermissions).await;
    create_user(&app, ALICE).await;
    let a = world(&app, "visible").await;
    let b_world = world(&app, "hidden").await;
    grant_experiment(&app, &a.experiment_id, "alice", "READ").await;
    grant_model(&app, &a.model, "alice", "READ").await;

    for (method, uri, body) in [
        (
            Method::GET,
            "/api/2.0/mlflow/experiments/search?max_results=100",
            None,
        ),
        (
            Method::POST,
            "/ajax-api/2.0/mlflow/experiments/search",
            Some(json!({ "max_results": 100 })),
        ),
    ] {
        let b = ok(&app, ALICE, method, uri, body).await;
        let names: Vec<&str> = b["experiments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["visible"], "{b}");
    }
    let b = ok(
        &app,
        ALICE,
        Method::GET,
        "/api/2.0/mlflow/registered-models/search",
        None,
    )
    .await;
    assert_eq!(b["registered_models"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["registered_models"][0]["name"], a.model);
    let b = ok(
        &app,
        ALICE,
        Method::GET,
        "/api/2.0/mlflow/model-versions/search",
        None,
    )
    .await;
    assert_eq!(b["model_versions"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["model_versions"][0]["name"], a.model);
    let b = ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/logged-models/search",
        Some(json!({ "experiment_ids": [] })),
    )
    .await;
    assert_eq!(b["models"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["models"][0]["info"]["model_id"], a.model_id);
    // runs/search over an experiment alice cannot read is refused, over hers it works.
    let both = json!({ "experiment_ids": [a.experiment_id, b_world.experiment_id] });
    let (s, _) = post(&app, ALICE, "runs/search", both).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let b = ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/runs/search",
        Some(json!({ "experiment_ids": [a.experiment_id] })),
    )
    .await;
    assert_eq!(b["runs"][0]["info"]["run_id"], a.run_id);
    // Paging still works: a page of one, filtered, keeps its token.
    let b = ok(
        &app,
        ALICE,
        Method::GET,
        "/api/2.0/mlflow/experiments/search?max_results=1",
        None,
    )
    .await;
    assert!(b.get("next_page_token").is_some(), "{b}");
    // The admin sees everything.
    let b = ok(
        &app,
        ADMIN,
        Method::GET,
        "/api/2.0/mlflow/experiments/search?max_results=100",
        None,
    )
    .await;
    assert_eq!(b["experiments"].as_array().unwrap().len(), 3, "{b}");
}

#[tokio::test]
async fn default_permission_applies_without_a_row() {
    let app = test_app_with_auth(Permission::Read).await;
    create_user(&app, BOB).await;
    let w = world(&app, "shared").await;
    ok(
        &app,
        BOB,
        Method::GET,
        &format!("/api/2.0/mlflow/runs/get?run_id={}", w.run_id),
        None,
    )
    .await;
    ok(
        &app,
        BOB,
        Method::GET,
        &format!("/api/2.0/mlflow/registered-models/get?name={}", w.model),
        None,
    )
    .await;
    let b = ok(&app, BOB, Method::GET, "/api/2.0/mlflow/experiments/search", None).await;
    assert_eq!(b["experiments"].as_array().unwrap().len(), 2, "{b}");
    let (s, _) = post(
        &app,
        BOB,
        "runs/set-tag",
        json!({ "run_id": w.run_id, "key": "k", "value": "v" }),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let app = test_app_with_auth(Permission::Edit).await;
    create_user(&app, BOB).await;
    let w = world(&app, "shared").await;
    ok(
        &app,
        BOB,
        Method::POST,
        "/api/2.0/mlflow/runs/set-tag",
        Some(json!({ "run_id": w.run_id, "key": "k", "value": "v" })),
    )
    .await;
    let (s, _) = post(&app, BOB, "runs/delete", json!({ "run_id": w.run_id })).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn runs_record_the_signed_in_user() {
    let app = test_app_with_auth(Permission::Edit).await;
    create_user(&app, ALICE).await;
    let b = ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/runs/create",
        Some(json!({ "experiment_id": "0" })),
    )
    .await;
    assert_eq!(b["run"]["info"]["user_id"], "alice");
    // Without experiment_id (the Default experiment) too.
    let b = ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/runs/create",
        Some(json!({})),
    )
    .await;
    assert_eq!(b["run"]["info"]["user_id"], "alice");
    assert_eq!(b["run"]["info"]["experiment_id"], "0");
    let b = ok(
        &app,
        ALICE,
        Method::POST,
        "/api/2.0/mlflow/runs/create",
        Some(json!({ "experiment_id": "0", "user_id": "pipeline" })),
    )
    .await;
    assert_eq!(b["run"]["info"]["user_id"], "pipeline");
}

#[tokio::test]
async fn users_endpoints_follow_mlflow() {
    let app = test_app_with_auth(Permission::Read).await;
    let b = ok(
        &app,
        ADMIN,
        Method::POST,
        "/api/2.0/mlflow/users/create",
        Some(json!({ "username": "alice", "password": ALICE.1 })),
    )
    .await;
    assert_eq!(
        b,
        json!({ "user": { "id": b["user"]["id"], "username": "alice", "is_admin": false,
                          "experiment_permissions": [], "registered_model_permissions": [] } })
    );
    let (s, b) = post(
        &app,
        ADMIN,
        "users/create",
        json!({ "username": "alice", "password": ALICE.1 }),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS");
    let (s, b) = post(
        &app,
        ADMIN,
        "users/create",
        json!({ "username": "short", "password": "short" }),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let (s, b) = post(
        &app,
        ADMIN,
        "users/create",
        json!({ "username": "a:b", "password": ALICE.1 }),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let (s, b) = post(&app, ADMIN, "users/create", json!({ "password": ALICE.1 })).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let (s, b) = get(&app, ADMIN, "users/get?username=nobody").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");

    // A user reads and changes only themself.
    ok(
        &app,
        ALICE,
        Method::GET,
        "/ajax-api/2.0/mlflow/users/get?username=alice",
        None,
    )
    .await;
    let b = ok(&app, ALICE, Method::GET, "/api/2.0/mlflow/users/current", None).await;
    assert_eq!(b["user"]["username"], "alice");
    let new_password = "alice-new-password";
    ok(
        &app,
        ALICE,
        Method::PATCH,
        "/api/2.0/mlflow/users/update-password",
        Some(json!({ "username": "alice", "password": new_password })),
    )
    .await;
    // The old password stops working at once (the credential cache forgets it).
    let (s, _) = get(&app, ALICE, "experiments/search").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let alice = ("alice", new_password);
    ok(
        &app,
        alice,
        Method::GET,
        "/api/2.0/mlflow/experiments/search",
        None,
    )
    .await;
    // MLflow 3's current_password, when given, must be right.
    let (s, _) = call(
        &app,
        Some(alice),
        Method::PATCH,
        "/api/2.0/mlflow/users/update-password",
        Some(json!({ "username": "alice", "password": "another-password", "current_password": "wrong" })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &app,
        Some(alice),
        Method::PATCH,
        "/api/2.0/mlflow/users/update-password",
        Some(json!({ "username": "admin", "password": "taken-over-admin" })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Admin-only: list, update-admin, delete.
    let (s, _) = get(&app, alice, "users/list").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let b = ok(&app, ADMIN, Method::GET, "/api/2.0/mlflow/users/list", None).await;
    assert_eq!(b["users"].as_array().unwrap().len(), 2, "{b}");
    ok(
        &app,
        ADMIN,
        Method::PATCH,
        "/api/2.0/mlflow/users/update-admin",
        Some(json!({ "username": "alice", "is_admin": true })),
    )
    .await;
    // Now an admin, alice passes admin-only routes.
    ok(&app, alice, Method::GET, "/api/2.0/mlflow/users/list", None).await;
    ok(
        &app,
        ADMIN,
        Method::DELETE,
        "/api/2.0/mlflow/users/delete",
        Some(json!({ "username": "alice" })),
    )
    .await;
    let (s, _) = get(&app, alice, "experiments/search").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = call(
        &app,
        Some(ADMIN),
        Method::DELETE,
        "/api/2.0/mlflow/users/delete",
        Some(json!({ "username": "alice" })),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
}

#[tokio::test]
async fn permission_endpoints_follow_mlflow() {
    let app = test_app_with_auth(Permission::Read).await;
    create_user(&app, BOB).await;
    grant_experiment(&app, "0", "bob", "EDIT").await;
    let (s, b) = post(
        &app,
        ADMIN,
        "experiments/permissions/create",
        json!({ "experiment_id": "0", "username": "bob", "permission": "READ" }),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS");
    let (s, b) = post(
        &app,
        ADMIN,
        "experiments/permissions/create",
        json!({ "experiment_id": "0", "username": "nobody", "permission": "READ" }),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    let (s, b) = post(
        &app,
        ADMIN,
        "registered-models/permissions/create",
        json!({ "name": "m", "username": "bob", "permission": "OWNER" }),
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let (s, b) = get(
        &app,
        ADMIN,
        "registered-models/permissions/get?name=m&username=bob",
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    grant_model(&app, "m", "bob", "READ").await;
    let b = ok(
        &app,
        ADMIN,
        Method::GET,
        "/api/2.0/mlflow/registered-models/permissions/get?name=m&username=bob",
        None,
    )
    .await;
    assert_eq!(b["registered_model_permission"]["name"], "m");
    assert_eq!(b["registered_model_permission"]["permission"], "READ");
    ok(
        &app,
        ADMIN,
        Method::DELETE,
        "/api/2.0/mlflow/registered-models/permissions/delete",
        Some(json!({ "name": "m", "username": "bob" })),
    )
    .await;
    let (s, b) = call(
        &app,
        Some(ADMIN),
        Method::DELETE,
        "/api/2.0/mlflow/registered-models/permissions/delete",
        Some(json!({ "name": "m", "username": "bob" })),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    let (s, b) = call(
        &app,
        Some(ADMIN),
        Method::PATCH,
        "/api/2.0/mlflow/experiments/permissions/update",
        Some(json!({ "experiment_id": "9", "username": "bob", "permission": "READ" })),
    )
    .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    ok(
        &app,
        ADMIN,
        Method::DELETE,
        "/ajax-api/2.0/mlflow/experiments/permissions/delete",
        Some(json!({ "experiment_id": "0", "username": "bob" })),
    )
    .await;
}

/// Every route the server registers (with basic auth and /metrics on) has an entry in the
/// authorisation table for every method it accepts. A new route without one fails here, and is
/// refused to non-admins at runtime until it gets one.
#[tokio::test]
async fn route_table_covers_every_registered_route() {
    let dir = tempfile::tempdir().unwrap();
    let sql_store = Arc::new(
        mlkube_server::store::open(
            &format!("sqlite:///{}", dir.path().join("t.db").display()),
            "mlflow-artifacts:/",
        )
        .await
        .unwrap(),
    );
    let store: Arc<dyn mlkube_server::store::Store> = sql_store.clone();
    let config = mlkube_server::auth::AuthConfig::new(
        format!("sqlite:///{}", dir.path().join("a.db").display()),
        ADMIN.0,
        ADMIN.1,
        Permission::Read,
    )
    .unwrap();
    let auth = mlkube_server::auth::Auth::open(&config, store.clone())
        .await
        .unwrap();
    let state = mlkube_server::AppState {
        store,
        artifacts: None,
        metrics: Some(Arc::new(mlkube_server::prometheus::ServerMetrics::new())),
        auth: Some(Arc::new(auth)),
        monitoring: common::monitoring_for(sql_store, None),
        ui: Some(common::fake_ui(dir.path())),
    };
    let router = mlkube_server::app(state, 1024 * 1024);
    // The Prometheus scrape stays public (aggregates only), as do the probes and the UI's assets.
    for uri in [
        "/metrics",
        "/health",
        "/version",
        "/static-files/static/js/main.abc123.js",
    ] {
        let resp = router
            .clone()
            .oneshot(request(None, Method::GET, uri, None))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
    }

    // axum does not list its routes, but its Debug output names every path template (those of
    // `path_router`; the fallback router's come after).
    let debug = format!("{router:?}");
    let routes = debug.split("fallback_router").next().unwrap_or("");
    let mut templates: Vec<String> = routes
        .split('"')
        .filter(|s| s.starts_with('/') && !s.contains("__private__") && !s.contains(' '))
        .map(str::to_owned)
        .collect();
    templates.sort();
    templates.dedup();
    assert!(
        templates.len() > 100,
        "found only {} routes in {debug}",
        templates.len()
    );

    let mut missing = Vec::new();
    let mut checked = 0;
    for template in &templates {
        // A concrete path for the template; TRACE is registered nowhere, so the answer is 405 with
        // the route's methods in `Allow`.
        let path = template
            .replace("{*path}", "1/probe/file.txt")
            .replace("{model_id}", "m-probe")
            .replace("{key}", "k");
        assert!(!path.contains('{'), "unknown path parameter in {template}");
        let req = request(Some(ADMIN), Method::TRACE, &path, None);
        let resp = router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{template}");
        let allow = resp.headers()[header::ALLOW].to_str().unwrap().to_owned();
        for method in allow.split(',').map(str::trim).filter(|m| *m != "HEAD") {
            let method: Method = method.parse().unwrap();
            checked += 1;
            if mlkube_server::auth::permissions::lookup(template, &method).is_none() {
                missing.push(format!("{method} {template}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes without an authorization rule (add them to auth::permissions::ROUTES):\n{}",
        missing.join("\n")
    );
    assert!(checked > 100, "checked only {checked} route/method pairs");
}

#[tokio::test]
async fn version_sources_must_be_readable_by_the_registrant() {
    let app = test_app_with_auth(Permission::NoPermissions).await;
    create_user(&app, BOB).await;
    let secret = world(&app, "secret").await;
    // Bob owns a model of his own but may read nothing of the secret world.
    let (s, b) = post(&app, BOB, "registered-models/create", json!({ "name": "bobs" })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for source in [
        format!("models:/{}/1", secret.model),
        format!("models:/{}", secret.model_id),
        format!("runs:/{}/model", secret.run_id),
        format!(
            "mlflow-artifacts:/{}/{}/artifacts/model",
            secret.experiment_id, secret.run_id
        ),
    ] {
        let (s, b) = post(
            &app,
            BOB,
            "model-versions/create",
            json!({ "name": "bobs", "source": source }),
        )
        .await;
        assert_error(s, &b, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    }
    // Once Bob may read the secret model, copying its version is allowed.
    grant_model(&app, &secret.model, "bob", "READ").await;
    let (s, b) = post(
        &app,
        BOB,
        "model-versions/create",
        json!({ "name": "bobs", "source": format!("models:/{}/1", secret.model) }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// Failed logins are limited per username and per client address (README "Basic auth"): past ten
/// failures in the window, attempts get 429 `RESOURCE_EXHAUSTED` with `Retry-After` before any
/// password is checked — also with the right password, also for a username that does not exist —
/// while other users and other addresses are unaffected.
#[tokio::test]
async fn failed_logins_are_limited() {
    use axum::extract::ConnectInfo;
    let app = test_app_with_auth(Permission::Read).await;
    create_user(&app, BOB).await;
    let from = |who: (&str, &str), addr: &str| {
        let mut req = request(
            Some(who),
            Method::GET,
            "/api/2.0/mlflow/experiments/get?experiment_id=0",
            None,
        );
        let addr: std::net::SocketAddr = addr.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        req
    };
    let wrong_bob = (BOB.0, "not-the-password");
    for _ in 0..10 {
        let (s, _) = app.send(from(wrong_bob, "10.0.0.1:40000")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    for who in [wrong_bob, BOB] {
        let resp = app
            .router
            .clone()
            .oneshot(from(who, "10.0.0.2:40000"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = resp.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=300).contains(&wait), "{wait}");
    }
    // Alice, from anywhere else, is unaffected.
    create_user(&app, ALICE).await;
    let (s, _) = app.send(from(ALICE, "10.0.0.3:40000")).await;
    assert_eq!(s, StatusCode::OK);
    // One address guessing many (also unknown) usernames is stopped too, and so is that address's
    // next attempt at a real account; another address is not.
    for i in 0..10 {
        let (s, _) = app
            .send(from((&format!("ghost{i}"), "guess"), "10.0.0.9:1"))
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, b) = app.send(from(ALICE, "10.0.0.9:2")).await;
    assert_error(s, &b, StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED");
    let (s, _) = app.send(from(ALICE, "10.0.0.8:2")).await;
    assert_eq!(s, StatusCode::OK);
}

/// What tests/reliability/hostile.py found with basic auth on: a body over the limit read by the
/// permission check was a 400 (now MLflow's 413, the handlers' answer too); a wrong method is 401
/// without credentials, 403 for a user (no rule) and MLflow's JSON 405 for an admin.
#[tokio::test]
async fn hostile_requests_with_basic_auth() {
    let app = test_app_with_auth(Permission::Read).await;
    create_user(&app, BOB).await;
    let big = json!({ "run_id": "x", "tags": [{ "key": "k", "value": "x".repeat(2 << 20) }] }).to_string();
    for who in [BOB, ADMIN] {
        let req = Request::post("/api/2.0/mlflow/runs/log-batch")
            .header(header::AUTHORIZATION, basic(who))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(big.clone()))
            .unwrap();
        let (s, b) = app.send(req).await;
        assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "BAD_REQUEST");
    }
    let (s, b) = call(&app, None, Method::PUT, "/api/2.0/mlflow/runs/create", None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let (s, b) = call(&app, Some(BOB), Method::PUT, "/api/2.0/mlflow/runs/create", None).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    let (s, b) = call(
        &app,
        Some(ADMIN),
        Method::PUT,
        "/api/2.0/mlflow/runs/create",
        None,
    )
    .await;
    assert_error(s, &b, StatusCode::METHOD_NOT_ALLOWED, "ENDPOINT_NOT_FOUND");
    let (s, b) = call(
        &app,
        Some(ADMIN),
        Method::GET,
        "/api/2.0/mlflow/logged-models/%FF",
        None,
    )
    .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "BAD_REQUEST");
}

/// Deleting users concurrently (the same user twice, others beside): the auth store read the user
/// and then wrote in one transaction, which SQLite cannot let wait for a concurrent writer, so some
/// deletes failed with "database is locked" (500). Found by tests/reliability/hostile.py.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_user_deletes_are_200_or_404() {
    let app = Arc::new(test_app_with_auth(Permission::Read).await);
    let users: Vec<String> = (0..12).map(|i| format!("doomed{i}")).collect();
    for user in &users {
        create_user(&app, (user.as_str(), "doomed-password")).await;
    }
    let mut tasks = Vec::new();
    for user in users.iter().chain(users.iter()) {
        let (app, user) = (app.clone(), user.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({ "username": user });
            call(
                &app,
                Some(ADMIN),
                Method::DELETE,
                "/api/2.0/mlflow/users/delete",
                Some(body),
            )
            .await
        }));
    }
    let mut deleted = 0;
    for task in tasks {
        let (s, b) = task.await.unwrap();
        match s {
            StatusCode::OK => deleted += 1,
            _ => assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
        }
    }
    assert_eq!(deleted, users.len());
}

/// A refusal that leaves the request body unread closes the connection and says so
/// (`Connection: close`), so a keep-alive client does not send its next request down a connection
/// the server is about to drop; a refusal without a body keeps the connection.
#[tokio::test]
async fn refusals_with_an_unread_body_close_the_connection() {
    let app = test_app_with_auth(Permission::Read).await;
    create_user(&app, ALICE).await;
    let body = json!({ "username": "eve", "password": "eve-password-123" }).to_string();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/2.0/mlflow/users/create")
        .header(header::AUTHORIZATION, basic(ALICE))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers().get(header::CONNECTION).unwrap(), "close");

    let req = request(
        Some(ALICE),
        Method::GET,
        "/api/2.0/mlflow/users/get?username=admin",
        None,
    );
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get(header::CONNECTION).is_none());
}
