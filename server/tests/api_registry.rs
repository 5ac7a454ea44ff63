//! HTTP tests of the model registry: models, versions, stages, aliases, tags, search, and the
//! model-version source checks of the CVE-2023-1177 family.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

mod common;

use axum::http::{Method, StatusCode};
use common::{assert_error, test_app};
use serde_json::json;

#[tokio::test]
async fn registered_model_lifecycle() {
    let app = test_app().await;
    let (s, b) = app
        .post(
            "registered-models/create",
            json!({ "name": "iris", "description": "d", "tags": [{ "key": "team", "value": "a" }] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["registered_model"]["name"], "iris");
    let (s, b) = app
        .post("registered-models/create", json!({ "name": "iris" }))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS");
    let (s, b) = app.post("registered-models/create", json!({ "name": "" })).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");

    let (s, b) = app
        .call(
            Method::PATCH,
            "/api/2.0/mlflow/registered-models/update",
            Some(json!({ "name": "iris", "description": "new" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["registered_model"]["description"], "new");
    let (s, b) = app
        .post(
            "registered-models/rename",
            json!({ "name": "iris", "new_name": "iris2" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.get("registered-models/get?name=iris").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
    let (_, b) = app.get("registered-models/get?name=iris2").await;
    assert_eq!(
        b["registered_model"]["tags"],
        json!([{ "key": "team", "value": "a" }]),
        "tags follow a rename"
    );

    let (s, _) = app
        .post(
            "registered-models/set-tag",
            json!({ "name": "iris2", "key": "k", "value": "v" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .call(
            Method::DELETE,
            "/api/2.0/mlflow/registered-models/delete-tag",
            Some(json!({ "name": "iris2", "key": "k" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .call(
            Method::DELETE,
            "/api/2.0/mlflow/registered-models/delete",
            Some(json!({ "name": "iris2" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app.get("registered-models/get?name=iris2").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
}

#[tokio::test]
async fn versions_stages_aliases() {
    let app = test_app().await;
    let run = app.create_run("0").await;
    app.post("registered-models/create", json!({ "name": "m" })).await;
    let mut versions = Vec::new();
    for _ in 0..3 {
        let (s, b) = app
            .post(
                "model-versions/create",
                json!({ "name": "m", "source": format!("runs:/{run}/model"), "run_id": run }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["model_version"]["status"], "READY");
        assert_eq!(b["model_version"]["current_stage"], "None");
        versions.push(b["model_version"]["version"].as_str().unwrap().to_owned());
    }
    assert_eq!(versions, ["1", "2", "3"]);
    let (_, b) = app.get("model-versions/get-download-uri?name=m&version=2").await;
    assert_eq!(
        b["artifact_uri"],
        format!("mlflow-artifacts:/0/{run}/artifacts/model")
    );

    let (s, b) = app
        .post(
            "model-versions/transition-stage",
            json!({ "name": "m", "version": "1", "stage": "production", "archive_existing_versions": false }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["model_version"]["current_stage"], "Production");
    let (_, b) = app
        .post(
            "model-versions/transition-stage",
            json!({ "name": "m", "version": "2", "stage": "Production", "archive_existing_versions": true }),
        )
        .await;
    assert_eq!(b["model_version"]["current_stage"], "Production");
    let (_, b) = app.get("model-versions/get?name=m&version=1").await;
    assert_eq!(
        b["model_version"]["current_stage"], "Archived",
        "archive_existing_versions archived v1"
    );
    let (s, b) = app
        .post(
            "model-versions/transition-stage",
            json!({ "name": "m", "version": "2", "stage": "Live", "archive_existing_versions": false }),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let (s, b) = app
        .post(
            "model-versions/transition-stage",
            json!({ "name": "m", "version": "2", "stage": "Staging" }),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");

    let (s, b) = app
        .post(
            "registered-models/get-latest-versions",
            json!({ "name": "m", "stages": ["Production"] }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["model_versions"].as_array().unwrap().len(), 1);
    assert_eq!(b["model_versions"][0]["version"], "2");
    let (_, b) = app.get("registered-models/get-latest-versions?name=m").await;
    let stages: Vec<&str> = b["model_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["current_stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages.len(), 3, "one per stage in use: {stages:?}");

    let (s, _) = app
        .post(
            "registered-models/alias",
            json!({ "name": "m", "alias": "champion", "version": "3" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = app.get("registered-models/alias?name=m&alias=champion").await;
    assert_eq!(b["model_version"]["version"], "3");
    assert_eq!(b["model_version"]["aliases"], json!(["champion"]));
    let (_, b) = app.get("registered-models/get?name=m").await;
    assert_eq!(
        b["registered_model"]["aliases"],
        json!([{ "alias": "champion", "version": "3" }])
    );
    for bad in ["latest", "v2", "has space"] {
        let (s, b) = app
            .post(
                "registered-models/alias",
                json!({ "name": "m", "alias": bad, "version": "3" }),
            )
            .await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    }
    let (s, b) = app
        .post(
            "registered-models/alias",
            json!({ "name": "m", "alias": "x", "version": "99" }),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");

    // Deleting a version drops its aliases and never reuses its number.
    let (s, _) = app
        .call(
            Method::DELETE,
            "/api/2.0/mlflow/model-versions/delete",
            Some(json!({ "name": "m", "version": "3" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app.get("registered-models/alias?name=m&alias=champion").await;
    // Upstream's answer for an unknown alias: 400 INVALID_PARAMETER_VALUE, not 404.
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    assert_eq!(b["message"], "Registered model alias champion not found.");
    let (_, b) = app
        .post(
            "model-versions/create",
            json!({ "name": "m", "source": format!("runs:/{run}/model"), "run_id": run }),
        )
        .await;
    assert_eq!(b["model_version"]["version"], "4");

    let (s, _) = app
        .post(
            "model-versions/set-tag",
            json!({ "name": "m", "version": "4", "key": "validated", "value": "yes" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = app
        .get("model-versions/search?filter=tags.validated%20%3D%20%27yes%27")
        .await;
    assert_eq!(b["model_versions"].as_array().unwrap().len(), 1);
    let (_, b) = app
        .get(&format!(
            "model-versions/search?filter=run_id%20%3D%20%27{run}%27&order_by=version_number%20ASC"
        ))
        .await;
    let found: Vec<&str> = b["model_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["1", "2", "4"]);
    let (s, _) = app
        .call(
            Method::DELETE,
            "/api/2.0/mlflow/model-versions/delete-tag",
            Some(json!({ "name": "m", "version": "4", "key": "validated" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app.get("model-versions/get?name=m&version=abc").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
}

#[tokio::test]
async fn search_registered_models() {
    let app = test_app().await;
    for name in ["alpha", "beta", "gamma", "alphabet"] {
        app.post(
            "registered-models/create",
            json!({ "name": name, "tags": [{ "key": "len", "value": name.len().to_string() }] }),
        )
        .await;
    }
    let (_, b) = app
        .get("registered-models/search?filter=name%20LIKE%20%27alpha%25%27&order_by=name%20DESC")
        .await;
    let names: Vec<&str> = b["registered_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alphabet", "alpha"]);
    let (_, b) = app
        .get("registered-models/search?filter=tags.len%20%3D%20%275%27")
        .await;
    let names: Vec<&str> = b["registered_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "gamma"]);
    let (_, b) = app.get("registered-models/search?max_results=3").await;
    assert_eq!(b["registered_models"].as_array().unwrap().len(), 3);
    let token = b["next_page_token"].as_str().unwrap().to_owned();
    let (_, b) = app
        .get(&format!(
            "registered-models/search?max_results=3&page_token={token}"
        ))
        .await;
    assert_eq!(b["registered_models"].as_array().unwrap().len(), 1);
    let (s, b) = app.get("registered-models/search?max_results=1001").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    let (s, b) = app.get("registered-models/search?filter=bogus%20%3D%201").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
}

#[tokio::test]
async fn model_version_sources_are_checked() {
    let app = test_app().await;
    let run = app.create_run("0").await;
    app.post("registered-models/create", json!({ "name": "m" })).await;
    for bad in [
        "/etc/passwd",
        "file:///etc/passwd",
        "//proc/self/environ",
        "mlflow-artifacts:/0/../../etc",
        "mlflow-artifacts:/0/%2e%2e/%2e%2e/etc",
        "mlflow-artifacts:/0/%252e%252e/etc",
        "s3://bucket/a\\..\\b",
        "file:///tmp/x#/../etc",
        "http://evil.example/api/2.0/mlflow-artifacts/artifacts/x",
        "runs:/does-not-exist/model",
        "mlflow-artifacts:/0/someone-elses-run/artifacts/model",
        "runs:/another-run/model",
        "models:/../../etc",
    ] {
        let (s, b) = app
            .post(
                "model-versions/create",
                json!({ "name": "m", "source": bad, "run_id": run }),
            )
            .await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");
    }
    let (_, b) = app.get("model-versions/search?filter=name%3D%27m%27").await;
    assert_eq!(b["model_versions"], json!([]), "no version was created");
    for good in [
        "s3://bucket/models/m",
        "mlflow-artifacts:/0/abc/artifacts/model",
        &format!("runs:/{run}/model"),
    ] {
        let (s, b) = app
            .post("model-versions/create", json!({ "name": "m", "source": good }))
            .await;
        assert_eq!(s, StatusCode::OK, "{good}: {b}");
    }
    let (s, b) = app
        .post(
            "model-versions/create",
            json!({ "name": "nope", "source": "s3://b/x" }),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");
}

/// Behaviours the MLflow client relies on, found by tests/compat/test_registry.py against MLflow's
/// own server: deleting an absent tag or alias is a no-op, a version of a logged model records the
/// model's run, `copy_model_version` works, and searches hide prompts unless asked for them (3.x clients always append
/// ``tag.`mlflow.prompt.is_prompt` != 'true'``).
#[tokio::test]
async fn mlflow_client_expectations() {
    let app = test_app().await;
    let exp = app.create_experiment("e").await;
    let run = app.create_run(&exp).await;
    app.post("registered-models/create", json!({ "name": "m" })).await;
    let (s, b) = app
        .post(
            "model-versions/create",
            json!({ "name": "m", "source": format!("runs:/{run}/model"), "run_id": run }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    for (path, body) in [
        (
            "registered-models/delete-tag",
            json!({ "name": "m", "key": "absent" }),
        ),
        (
            "model-versions/delete-tag",
            json!({ "name": "m", "version": "1", "key": "absent" }),
        ),
        (
            "registered-models/alias",
            json!({ "name": "m", "alias": "absent" }),
        ),
    ] {
        let (s, b) = app
            .call(Method::DELETE, &format!("/api/2.0/mlflow/{path}"), Some(body))
            .await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
    }
    let (s, b) = app
        .call(
            Method::DELETE,
            "/api/2.0/mlflow/registered-models/delete-tag",
            Some(json!({ "name": "absent", "key": "k" })),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST");

    let (s, b) = app
        .post(
            "logged-models",
            json!({ "experiment_id": exp, "name": "model", "source_run_id": run }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let model_id = b["model"]["info"]["model_id"].as_str().unwrap().to_owned();
    let (s, b) = app
        .post(
            "model-versions/create",
            json!({ "name": "m", "source": format!("models:/{model_id}"), "model_id": model_id }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["model_version"]["version"], "2");
    assert_eq!(b["model_version"]["run_id"], run.as_str());

    // copy_model_version: a `models:/<name>/<version>` source shares that version's files and run.
    app.post("registered-models/create", json!({ "name": "copy" }))
        .await;
    let (s, b) = app
        .post(
            "model-versions/create",
            json!({ "name": "copy", "source": "models:/m/1" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["model_version"]["source"], "models:/m/1");
    assert_eq!(b["model_version"]["run_id"], run.as_str());
    let (_, original) = app.get("model-versions/get-download-uri?name=m&version=1").await;
    let (_, copy) = app
        .get("model-versions/get-download-uri?name=copy&version=1")
        .await;
    assert_eq!(copy["artifact_uri"], original["artifact_uri"]);
    let (s, b) = app
        .post(
            "model-versions/create",
            json!({ "name": "copy", "source": "models:/m/99" }),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE");

    app.post(
        "registered-models/create",
        json!({ "name": "p", "tags": [{ "key": "mlflow.prompt.is_prompt", "value": "true" }] }),
    )
    .await;
    let names = |b: &serde_json::Value| {
        b["registered_models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| m["name"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let (_, b) = app
        .get("registered-models/search?filter=tag.%60mlflow.prompt.is_prompt%60%20!%3D%20%27true%27")
        .await;
    assert_eq!(names(&b), ["copy", "m"]);
    let (_, b) = app.get("registered-models/search").await;
    assert_eq!(names(&b), ["copy", "m"]);
    let (_, b) = app
        .get("registered-models/search?filter=tags.%60mlflow.prompt.is_prompt%60%20%3D%20%27true%27")
        .await;
    assert_eq!(names(&b), ["p"]);
}
