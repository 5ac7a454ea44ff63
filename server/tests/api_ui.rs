//! The web UI's routes over HTTP (docs/web-ui.md): index and static assets, the artifact downloads
//! with MLflow's XSS guard, search-datasets, GraphQL as the 3.x pages query it, the 3.x shell's
//! empty answers, `--static-prefix`, and basic auth on all of them. The real UI in a real browser
//! is tests/ui (run by scripts/test-all).
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use common::{ADMIN, TestApp, assert_error, test_app_ui, test_app_with_auth_ui};
use mlkube_server::auth::Permission;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn raw(app: &TestApp, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, bytes)
}

fn get(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

async fn put_artifact(app: &TestApp, path: &str, bytes: &'static str) {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/api/2.0/mlflow-artifacts/artifacts/{path}"))
        .body(Body::from(bytes))
        .unwrap();
    assert_eq!(app.send(req).await.0, StatusCode::OK);
}

/// An experiment with a run that has a NaN metric point, a text artifact, an MLmodel file and a
/// registered version of its model.
async fn filled(app: &TestApp) -> (String, String) {
    let exp = app.create_experiment("ui").await;
    let run = app.create_run(&exp).await;
    for (step, value) in [(0, json!(0.5)), (1, json!("NaN")), (2, json!(0.25))] {
        let (s, b) = app
            .post(
                "runs/log-metric",
                json!({"run_id": run, "key": "rmse", "value": value, "timestamp": 1_700_000_000_000_i64 + step, "step": step}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    app.post(
        "runs/log-parameter",
        json!({"run_id": run, "key": "alpha", "value": "0.125"}),
    )
    .await;
    put_artifact(
        app,
        &format!("{exp}/{run}/artifacts/notes/readme.txt"),
        "<script>alert(1)</script>",
    )
    .await;
    put_artifact(
        app,
        &format!("{exp}/{run}/artifacts/model/MLmodel"),
        "flavors: {}\n",
    )
    .await;
    let (s, b) = app.post("registered-models/create", json!({"name": "m"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .post(
            "model-versions/create",
            json!({"name": "m", "source": format!("runs:/{run}/model"), "run_id": run}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    (exp, run)
}

#[tokio::test]
async fn index_and_static_assets() {
    let app = test_app_ui(true).await;
    let (s, h, body) = raw(&app, get("/")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    assert!(String::from_utf8(body).unwrap().contains("mlflow ui"));

    // Hashed assets: long cache, gzip when asked for.
    let req = Request::builder()
        .uri("/static-files/static/js/main.abc123.js")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .unwrap();
    let (s, h, body) = raw(&app, req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CACHE_CONTROL], "public, max-age=2419200");
    assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    assert!(
        body.len() < 1000,
        "9 KB of repeated script should compress, got {} bytes",
        body.len()
    );
    let (s, h, _) = raw(&app, get("/static-files/static/js/main.abc123.js")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get(header::CONTENT_ENCODING).is_none());

    // Nothing outside the build is reachable.
    for uri in [
        "/static-files/../ui/index.html",
        "/static-files/%2e%2e/%2e%2e/mlkube.db",
        "/static-files/static/js/missing.js",
        "/static-files/..%2fmlkube.db",
    ] {
        let (s, _, _) = raw(&app, get(uri)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test]
async fn without_a_build_the_page_says_why_and_the_api_works() {
    let app = test_app_ui(false).await;
    // No UI at all (--no-ui): `/` is an unknown endpoint in MLflow's shape.
    let (s, b) = app.call(Method::GET, "/", None).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND");
    // A UI that was looked for and not found: a plain explanation.
    let missing = mlkube_server::ui::Ui::Missing(mlkube_server::ui::NoUi("no build here".into()));
    let router: axum::Router = mlkube_server::ui::router(&missing);
    let resp = router.oneshot(get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    use http_body_util::BodyExt;
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("no build here") && text.contains("/api/2.0/mlflow/"),
        "{text}"
    );
}

#[tokio::test]
async fn get_artifact_downloads_as_attachments() {
    let app = test_app_ui(true).await;
    let (_, run) = filled(&app).await;
    let (s, h, body) = raw(
        &app,
        get(&format!("/get-artifact?run_uuid={run}&path=notes/readme.txt")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, b"<script>alert(1)</script>");
    // MLflow's XSS guard: never rendered on this origin.
    assert_eq!(h[header::CONTENT_TYPE], "text/plain");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(
        h[header::CONTENT_DISPOSITION],
        "attachment; filename=\"readme.txt\""
    );
    let (s, h, _) = raw(
        &app,
        get(&format!("/get-artifact?run_id={run}&path=model/MLmodel")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/plain");

    // The model version's files, by name and version.
    let (s, h, body) = raw(
        &app,
        get("/model-versions/get-artifact?name=m&version=1&path=MLmodel"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"flavors: {}\n");
    assert_eq!(h[header::CONTENT_DISPOSITION], "attachment; filename=\"MLmodel\"");

    // Client mistakes are 4xx in MLflow's shape and reveal nothing.
    for (uri, status, code) in [
        (
            format!("/get-artifact?run_uuid={run}&path=../../../etc/passwd"),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            format!("/get-artifact?run_uuid={run}&path=%2e%2e%2fsecret"),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            format!("/get-artifact?run_uuid={run}&path=/etc/passwd"),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            format!("/get-artifact?run_uuid={run}&path=notes"),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            format!("/get-artifact?run_uuid={run}&path=nope.txt"),
            StatusCode::NOT_FOUND,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            format!("/get-artifact?run_uuid={run}"),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "/get-artifact?run_uuid=0000&path=a.txt".to_owned(),
            StatusCode::NOT_FOUND,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            "/model-versions/get-artifact?name=m&version=9&path=MLmodel".to_owned(),
            StatusCode::NOT_FOUND,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            "/model-versions/get-artifact?name=m&path=MLmodel".to_owned(),
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
        ),
    ] {
        let (s, b) = app.call(Method::GET, &uri, None).await;
        assert_error(s, &b, status, code);
    }
}

#[tokio::test]
async fn search_datasets_and_the_3x_shell() {
    let app = test_app_ui(true).await;
    let (exp, run) = filled(&app).await;
    let uri = "/ajax-api/2.0/mlflow/experiments/search-datasets";
    let (s, b) = app
        .call(Method::POST, uri, Some(json!({"experiment_ids": [exp]})))
        .await;
    assert_eq!((s, b), (StatusCode::OK, json!({})));
    let (s, b) = app
        .post(
            "runs/log-inputs",
            json!({"run_id": run, "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "train"}],
                "dataset": {"name": "iris", "digest": "d1", "source_type": "local", "source": "{}"}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .call(Method::POST, uri, Some(json!({"experiment_ids": [exp]})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        json!({"dataset_summaries": [{"experiment_id": exp, "name": "iris", "digest": "d1", "context": "train"}]})
    );
    let (s, b) = app
        .call(Method::POST, uri, Some(json!({"experiment_ids": []})))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let too_many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
    let (s, b) = app
        .call(Method::POST, uri, Some(json!({"experiment_ids": too_many})))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");

    // The experiment list of MLflow 3's UI filters on a tag's absence.
    let (s, b) = app
        .call(
            Method::GET,
            "/ajax-api/2.0/mlflow/experiments/search?max_results=25&filter=tags.%60mlflow.experiment.isGateway%60+IS+NULL",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["experiments"].as_array().unwrap().len(), 2, "{b}");

    for (method, uri, want) in [
        (Method::POST, "/ajax-api/3.0/mlflow/traces/search", json!({})),
        (
            Method::POST,
            "/ajax-api/3.0/mlflow/traces/metrics",
            json!({"data_points": []}),
        ),
        (Method::POST, "/ajax-api/3.0/mlflow/datasets/search", json!({})),
        (
            Method::GET,
            "/ajax-api/3.0/mlflow/assistant/providers",
            json!({"providers": []}),
        ),
        (
            Method::POST,
            "/ajax-api/3.0/mlflow/ui-telemetry",
            json!({"status": "disabled"}),
        ),
        (
            Method::GET,
            "/ajax-api/2.0/mlflow/gateway-proxy",
            json!({"endpoints": []}),
        ),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        let (s, b) = app.call(method, uri, body).await;
        assert_eq!((s, b), (StatusCode::OK, want), "{uri}");
    }
    let (s, b) = app
        .call(Method::GET, "/ajax-api/3.0/mlflow/ui-telemetry", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["disable_ui_telemetry"], true);
}

async fn graphql(app: &TestApp, auth: Option<(&str, &str)>, query: &str, variables: Value) -> Value {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/graphql")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req = req.header(header::AUTHORIZATION, format!("Basic {token}"));
    }
    let body = json!({"query": query, "variables": variables, "operationName": null});
    let (s, b) = app.send(req.body(Body::from(body.to_string())).unwrap()).await;
    assert_eq!(s, StatusCode::OK, "GraphQL always answers 200: {b}");
    b
}

/// The run page's query of MLflow 3.17's UI, as Apollo sends it (`__typename` added).
const GET_RUN: &str = r#"query GetRun($data: MlflowGetRunInput!) @component(name: "MLflow.ExperimentRunTracking") {
  mlflowGetRun(input: $data) {
    apiError { helpUrl code message __typename }
    run {
      info { runName status runUuid experimentId artifactUri endTime lifecycleStage startTime userId __typename }
      experiment { experimentId name tags { key value __typename } artifactLocation lifecycleStage lastUpdateTime __typename }
      modelVersions { status version name source __typename }
      data { metrics { key value step timestamp __typename } params { key value __typename } tags { key value __typename } __typename }
      inputs { datasetInputs { dataset { digest name profile schema source sourceType __typename } tags { key value __typename } __typename } modelInputs { modelId __typename } __typename }
      outputs { modelOutputs { modelId step __typename } __typename }
      __typename
    }
    __typename
  }
}"#;

#[tokio::test]
async fn graphql_answers_the_3x_run_page() {
    let app = test_app_ui(true).await;
    let (exp, run) = filled(&app).await;
    let b = graphql(&app, None, GET_RUN, json!({"data": {"runId": run}})).await;
    assert_eq!(b["errors"], Value::Null, "{b}");
    let r = &b["data"]["mlflowGetRun"];
    assert_eq!(r["__typename"], "MlflowGetRunResponse");
    assert_eq!(r["run"]["__typename"], "MlflowRunExtension");
    assert_eq!(r["run"]["info"]["runUuid"], run.as_str());
    assert_eq!(r["run"]["info"]["status"], "RUNNING");
    assert_eq!(r["run"]["info"]["startTime"], "1", "int64 as a string: {r}");
    assert_eq!(r["run"]["experiment"]["experimentId"], exp.as_str());
    assert_eq!(r["run"]["experiment"]["tags"], json!([]));
    assert_eq!(
        r["run"]["data"]["params"],
        json!([{"key": "alpha", "value": "0.125", "__typename": "MlflowParam"}])
    );
    // The latest value is the one at the highest step.
    let metrics = r["run"]["data"]["metrics"].as_array().unwrap();
    assert_eq!(metrics[0]["value"], 0.25);
    assert_eq!(metrics[0]["step"], "2");
    assert_eq!(r["run"]["modelVersions"][0]["name"], "m");
    assert_eq!(r["run"]["modelVersions"][0]["version"], "1");
    assert_eq!(r["run"]["modelVersions"][0]["status"], "READY");
    assert_eq!(r["run"]["inputs"]["datasetInputs"], json!([]));

    // Metric history for the charts: NaN becomes null.
    let q = r#"query GetMetricHistoryBulkInterval($data: MlflowGetMetricHistoryBulkIntervalInput!)
      @component(name: "MLflow.ExperimentRunTracking") {
        mlflowGetMetricHistoryBulkInterval(input: $data) { __typename metrics { timestamp step runId key value __typename } apiError { code message __typename } }
      }"#;
    let b = graphql(
        &app,
        None,
        q,
        json!({"data": {"runIds": [run], "metricKey": "rmse", "maxResults": 320}}),
    )
    .await;
    assert_eq!(b["errors"], Value::Null, "{b}");
    let points = b["data"]["mlflowGetMetricHistoryBulkInterval"]["metrics"]
        .as_array()
        .unwrap()
        .clone();
    let values: Vec<Value> = points.iter().map(|p| p["value"].clone()).collect();
    assert_eq!(values, vec![json!(0.5), Value::Null, json!(0.25)]);
    assert_eq!(points[0]["timestamp"], "1700000000000");

    // The runs table query, as a mutation and as a query.
    for kind in ["query", "mutation"] {
        let q = format!(
            "{kind} SearchRuns($data: MlflowSearchRunsInput!) {{ mlflowSearchRuns(input: $data) {{ runs {{ info {{ runUuid }} data {{ params {{ key value }} }} }} nextPageToken }} }}"
        );
        let b = graphql(&app, None, &q, json!({"data": {"experimentIds": [exp], "filter": "params.alpha = '0.125'", "runViewType": "ACTIVE_ONLY", "maxResults": 10, "orderBy": ["attributes.start_time DESC"]}})).await;
        assert_eq!(b["errors"], Value::Null, "{b}");
        assert_eq!(
            b["data"]["mlflowSearchRuns"]["runs"][0]["info"]["runUuid"],
            run.as_str()
        );
    }

    // The experiment page's query.
    let q = r#"query MlflowGetExperimentQuery($input: MlflowGetExperimentInput!) @component(name: "MLflow.ExperimentRunTracking") {
        mlflowGetExperiment(input: $input) { apiError { code message } experiment { experimentId name creationTime lastUpdateTime lifecycleStage artifactLocation effectiveTraceArchivalRetention tags { key value } } }
      }"#;
    let b = graphql(&app, None, q, json!({"input": {"experimentId": exp}})).await;
    assert_eq!(b["errors"], Value::Null, "{b}");
    assert_eq!(b["data"]["mlflowGetExperiment"]["experiment"]["name"], "ui");
    assert!(b["data"]["mlflowGetExperiment"]["experiment"]["creationTime"].is_string());

    // Artifacts and model versions through GraphQL.
    let q = r#"{ mlflowListArtifacts(input: {runId: "RUN", path: "notes"}) { files { path isDir fileSize } }
                mlflowSearchModelVersions(input: {filter: "name = 'm'"}) { modelVersions { version source } } }"#
        .replace("RUN", &run);
    let b = graphql(&app, None, &q, json!({})).await;
    assert_eq!(b["errors"], Value::Null, "{b}");
    assert_eq!(
        b["data"]["mlflowListArtifacts"]["files"][0]["path"],
        "notes/readme.txt"
    );
    assert_eq!(b["data"]["mlflowListArtifacts"]["files"][0]["fileSize"], "25");
    assert_eq!(
        b["data"]["mlflowSearchModelVersions"]["modelVersions"][0]["version"],
        "1"
    );
}

#[tokio::test]
async fn graphql_errors_are_200_with_messages() {
    let app = test_app_ui(true).await;
    // A missing run: the field is null and the message is in `errors` (as upstream answers).
    let b = graphql(&app, None, GET_RUN, json!({"data": {"runId": "0123"}})).await;
    assert_eq!(b["data"]["mlflowGetRun"], Value::Null, "{b}");
    assert!(b["errors"][0].as_str().unwrap().contains("0123"), "{b}");
    // Syntax errors, unknown fields, undeclared directives, wrong variable types.
    for query in [
        "{ mlflowGetRun(input: {runId: ",
        "{ nope }",
        "query Q @unknown { test { output } }",
        "query Q($d: MlflowGetRunInput!) { mlflowGetRun(input: $d) { run { info { runId } } } }",
    ] {
        let b = graphql(&app, None, query, json!({"d": 5})).await;
        assert_eq!(b["data"], Value::Null, "{query}: {b}");
        assert!(b["errors"][0].is_string(), "{query}: {b}");
    }
    // Upstream's limits: root fields and aliases.
    let many: String = (0..11)
        .map(|i| format!("a{i}: test(inputString: \"x\") {{ output }} "))
        .collect();
    let b = graphql(&app, None, &format!("{{ {many} }}"), json!({})).await;
    assert!(b["errors"][0].as_str().unwrap().contains("root fields"), "{b}");
    // The directive the UI uses is declared.
    let b = graphql(
        &app,
        None,
        "{ __schema { directives { name locations } } }",
        json!({}),
    )
    .await;
    let directives = b["data"]["__schema"]["directives"].as_array().unwrap();
    assert!(
        directives
            .iter()
            .any(|d| d["name"] == "component" && d["locations"] == json!(["QUERY", "MUTATION"])),
        "{b}"
    );
    // Not a GraphQL request at all: MLflow's 400.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let (s, b) = app.send(req).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
}

#[tokio::test]
async fn static_prefix_serves_everything_under_it() {
    let app = test_app_ui(true).await;
    let router = mlkube_server::ui::prefix::with_static_prefix(app.router.clone(), Some("/mlflow"));
    let call = |uri: &'static str| {
        let router = router.clone();
        async move { router.oneshot(get(uri)).await.unwrap() }
    };
    let resp = call("/mlflow").await;
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()[header::LOCATION], "/mlflow/");
    let resp = call("/mlflow?x=1").await;
    assert_eq!(resp.headers()[header::LOCATION], "/mlflow/?x=1");
    for uri in [
        "/mlflow/",
        "/mlflow/static-files/static/js/main.abc123.js",
        "/mlflow/health",
        "/mlflow/api/2.0/mlflow/experiments/get?experiment_id=0",
        "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=1",
        // Unprefixed paths keep working for in-cluster clients.
        "/api/2.0/mlflow/experiments/get?experiment_id=0",
        "/health",
    ] {
        assert_eq!(call(uri).await.status(), StatusCode::OK, "{uri}");
    }
    // A look-alike prefix is not the prefix.
    assert_eq!(call("/mlflowx/health").await.status(), StatusCode::NOT_FOUND);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/mlflow/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"query": "{ test(inputString: \"p\") { output } }"}).to_string(),
        ))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

const BOB: (&str, &str) = ("bob", "bob-password-long-enough");

#[tokio::test]
async fn basic_auth_covers_the_ui() {
    let app = test_app_with_auth_ui(Permission::NoPermissions, true).await;
    // Assets are public; the page and everything with data need credentials.
    let (s, _, _) = raw(&app, get("/static-files/static/js/main.abc123.js")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, _) = raw(&app, get("/")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h[header::WWW_AUTHENTICATE], "Basic realm=\"mlflow\"");
    let b = {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/graphql")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"query": "{ test { output } }"}).to_string()))
            .unwrap();
        app.send(req).await
    };
    assert_eq!(b.0, StatusCode::UNAUTHORIZED);

    // The admin fills the server; bob exists but may read nothing.
    let admin = |method: Method, uri: String, body: Option<Value>| {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1));
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Basic {token}"));
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        req.body(body).unwrap()
    };
    let (_, b) = app
        .send(admin(
            Method::POST,
            "/api/2.0/mlflow/experiments/create".into(),
            Some(json!({"name": "secret"})),
        ))
        .await;
    let exp = b["experiment_id"].as_str().unwrap().to_owned();
    let (_, b) = app
        .send(admin(
            Method::POST,
            "/api/2.0/mlflow/runs/create".into(),
            Some(json!({"experiment_id": exp})),
        ))
        .await;
    let run = b["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let req = admin(
        Method::PUT,
        format!("/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/a.txt"),
        None,
    );
    let req = Request::from_parts(req.into_parts().0, Body::from("classified"));
    assert_eq!(app.send(req).await.0, StatusCode::OK);
    let (s, _) = app
        .send(admin(
            Method::POST,
            "/api/2.0/mlflow/users/create".into(),
            Some(json!({"username": BOB.0, "password": BOB.1})),
        ))
        .await;
    assert_eq!(s, StatusCode::OK);

    let as_bob = |uri: String| {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", BOB.0, BOB.1));
        Request::builder()
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Basic {token}"))
            .body(Body::empty())
            .unwrap()
    };
    // Bob may open the UI, but not the run's files or data.
    let (s, _, _) = raw(&app, as_bob("/".into())).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app
        .send(as_bob(format!("/get-artifact?run_uuid={run}&path=a.txt")))
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    let b = graphql(&app, Some(BOB), GET_RUN, json!({"data": {"runId": run}})).await;
    assert_eq!(b["data"]["mlflowGetRun"], Value::Null, "{b}");
    assert!(b["errors"][0].as_str().unwrap().contains("ermission"), "{b}");
    let q = format!(
        "mutation {{ mlflowSearchRuns(input: {{experimentIds: [\"{exp}\"]}}) {{ runs {{ info {{ runUuid }} }} }} }}"
    );
    let b = graphql(&app, Some(BOB), &q, json!({})).await;
    assert_eq!(b["data"]["mlflowSearchRuns"], Value::Null, "{b}");

    // Granted READ, he sees them.
    let (s, _) = app
        .send(admin(
            Method::POST,
            "/api/2.0/mlflow/experiments/permissions/create".into(),
            Some(json!({"experiment_id": exp, "username": BOB.0, "permission": "READ"})),
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = raw(&app, as_bob(format!("/get-artifact?run_uuid={run}&path=a.txt"))).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, b"classified".as_slice()));
    let b = graphql(&app, Some(BOB), GET_RUN, json!({"data": {"runId": run}})).await;
    assert_eq!(b["errors"], Value::Null, "{b}");
    assert_eq!(b["data"]["mlflowGetRun"]["run"]["info"]["runUuid"], run.as_str());
    assert_eq!(b["data"]["mlflowGetRun"]["run"]["experiment"]["name"], "secret");
}

/// What tests/reliability/hostile.py found on the UI's routes: an undecodable static-file path was a
/// text/plain 400 and an over-long one a 500; a GraphQL body over the limit a text/plain 413;
/// fragments spreading each other many times over took exponential time to count (a query of
/// 40-wide, 8-deep spreads held a worker thread for minutes); a wrong method an empty 405.
#[tokio::test]
async fn hostile_ui_requests() {
    let app = test_app_ui(true).await;
    for uri in [
        "/static-files/%FF%FE.js".to_owned(),
        format!("/static-files/{}", "a".repeat(60_000)),
        format!("/static-files/static/{}.js", "a".repeat(256)),
    ] {
        let (s, _, _) = raw(&app, get(&uri)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{}", &uri[..40]);
    }

    let big = format!(r#"{{"query": "{}"}}"#, "x".repeat(2 << 20));
    let req = Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .unwrap();
    let (s, b) = app.send(req).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "BAD_REQUEST");

    let mut fan: Vec<String> = (0..7)
        .map(|i| {
            format!(
                "fragment F{i} on Query {{ {} }}",
                format!("...F{} ", i + 1).repeat(40)
            )
        })
        .collect();
    fan.push("fragment F7 on Query { test(inputString: \"x\") { output } } { ...F0 }".to_owned());
    let started = std::time::Instant::now();
    let b = graphql(&app, None, &fan.join(" "), json!({})).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(b["errors"][0].as_str().unwrap().contains("root fields"), "{b}");
    let long = format!(
        "{{ test(inputString: \"{}\") {{ output }} }}",
        "x".repeat(100_000)
    );
    let b = graphql(&app, None, &long, json!({})).await;
    assert!(b["errors"][0].as_str().unwrap().contains("bytes"), "{b}");

    let req = Request::builder()
        .method(Method::DELETE)
        .uri("/graphql")
        .body(Body::empty())
        .unwrap();
    let (s, b) = app.send(req).await;
    assert_error(s, &b, StatusCode::METHOD_NOT_ALLOWED, "ENDPOINT_NOT_FOUND");
    // The page keeps MLflow's plain answers only for what it does not have.
    let (s, _, body) = raw(&app, get("/static-files/missing.js")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}
