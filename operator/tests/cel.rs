//! The CRDs' CEL rules (`x-kubernetes-validations`), evaluated client-side with kube-cel on the
//! generated schemas after defaulting, as the API server would at `kubectl apply`.

#![allow(clippy::unwrap_used, clippy::panic)]

use kube::CustomResourceExt;
use mlkube_operator::crd::{ModelDeployment, TrackingServer};
use serde_json::{Value, json};

fn schema<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Validate `spec` as an object of kind `K` named `name`; `Err` carries every failure message.
fn check<K: CustomResourceExt>(name: &str, spec: Value) -> Result<(), Vec<String>> {
    let schema = schema::<K>();
    let object = json!({
        "apiVersion": "mlkube.io/v1alpha1",
        "kind": K::crd().spec.names.kind,
        "metadata": {"name": name, "namespace": "ml"},
        "spec": spec,
    });
    let object = kube_cel::apply_defaults(&schema, &object);
    kube_cel::validate(&schema, &object, None)
        .map_err(|errors| errors.into_vec().into_iter().map(|e| e.message).collect())
}

fn refused<K: CustomResourceExt>(spec: Value, needle: &str) {
    match check::<K>("x", spec.clone()) {
        Ok(()) => panic!("accepted {spec}"),
        Err(messages) => assert!(
            messages.iter().any(|m| m.contains(needle)),
            "{spec}: {messages:?} does not mention {needle:?}"
        ),
    }
}

#[test]
fn tracking_server_rules() {
    check::<TrackingServer>("mlflow", json!({})).unwrap();
    check::<TrackingServer>(
        "mlflow",
        json!({"replicas": 3, "backendStore": {"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}},
               "artifactStore": {"s3": {"bucket": "models", "credentialsSecretRef": {"name": "s3"}}}}),
    )
    .unwrap();
    check::<TrackingServer>(
        "mlflow",
        json!({"replicas": 2, "backendStore": {"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}},
               "artifactStore": {"pvc": {"accessModes": ["ReadWriteMany"]}}}),
    )
    .unwrap();
    refused::<TrackingServer>(
        json!({"replicas": 2}),
        "sqlite backendStore supports exactly one replica",
    );
    refused::<TrackingServer>(
        json!({"backendStore": {"sqlite": {}, "postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}}}),
        "exactly one of backendStore.sqlite and backendStore.postgres",
    );
    refused::<TrackingServer>(json!({"backendStore": {}}), "exactly one of backendStore");
    refused::<TrackingServer>(
        json!({"replicas": 2, "backendStore": {"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}}}),
        "ReadWriteMany",
    );
    refused::<TrackingServer>(
        json!({"artifactStore": {"pvc": {}, "s3": {"bucket": "models", "credentialsSecretRef": {"name": "s3"}}}}),
        "exactly one of artifactStore.pvc and artifactStore.s3",
    );
    refused::<TrackingServer>(
        json!({"serviceMonitor": {"interval": "15s", "scrapeTimeout": "20s"}}),
        "scrapeTimeout must not exceed interval",
    );
    check::<TrackingServer>(
        "mlflow",
        json!({"serviceMonitor": {"interval": "1m", "scrapeTimeout": "30s"}}),
    )
    .unwrap();
}

#[test]
fn names_must_fit_the_children() {
    let long = "a".repeat(51);
    assert!(check::<TrackingServer>(&long, json!({})).is_err());
    assert!(check::<TrackingServer>("9lives", json!({})).is_err());
    assert!(check::<TrackingServer>(&"a".repeat(50), json!({})).is_ok());
}

fn md(extra: Value) -> Value {
    let mut spec =
        json!({"trackingServerRef": {"name": "mlflow"}, "model": {"name": "churn", "version": "3"}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

#[test]
fn model_deployment_rules() {
    check::<ModelDeployment>("churn", md(json!({}))).unwrap();
    check::<ModelDeployment>(
        "churn",
        md(json!({"model": {"name": "churn", "alias": "champion"}})),
    )
    .unwrap();
    check::<ModelDeployment>(
        "churn",
        md(json!({"model": {"name": "churn", "uri": "runs:/abc/model"}})),
    )
    .unwrap();
    refused::<ModelDeployment>(
        md(json!({"model": {"name": "churn", "version": "3", "alias": "champion"}})),
        "exactly one of model.version, model.alias and model.uri",
    );
    refused::<ModelDeployment>(
        md(json!({"model": {"name": "churn"}})),
        "exactly one of model.version, model.alias and model.uri",
    );
    refused::<ModelDeployment>(
        md(json!({"trackingUri": "http://mlflow:5000"})),
        "exactly one of trackingServerRef and trackingUri",
    );
    refused::<ModelDeployment>(
        json!({"model": {"name": "churn", "version": "3"}}),
        "exactly one of trackingServerRef and trackingUri",
    );
    refused::<ModelDeployment>(
        md(json!({"port": 8001})),
        "must differ from the sidecar's serving port 8000 and metrics port 8001",
    );
    refused::<ModelDeployment>(md(json!({"port": 8000})), "metrics port 8001");
    check::<ModelDeployment>("churn", md(json!({"port": 9000}))).unwrap();
    refused::<ModelDeployment>(
        md(json!({"trackingCredentialsSecretRef": {"name": "reader"}})),
        "trackingCredentialsSecretRef goes with trackingUri",
    );
    check::<ModelDeployment>(
        "churn",
        json!({"trackingUri": "https://mlflow.example.com", "trackingCredentialsSecretRef": {"name": "reader"},
               "model": {"name": "churn", "version": "3"}}),
    )
    .unwrap();
    let https = |bundle: Value| {
        json!({"trackingUri": "https://mlflow.example.com", "trackingCaBundle": bundle,
               "model": {"name": "churn", "version": "3"}})
    };
    check::<ModelDeployment>(
        "churn",
        https(json!({"configMapKeyRef": {"name": "ca", "key": "ca.crt"}})),
    )
    .unwrap();
    refused::<ModelDeployment>(
        https(json!({"configMapKeyRef": {"name": "ca", "key": "ca.crt"},
                     "secretKeyRef": {"name": "ca", "key": "ca.crt"}})),
        "exactly one of trackingCaBundle.configMapKeyRef and trackingCaBundle.secretKeyRef",
    );
    refused::<ModelDeployment>(
        json!({"trackingUri": "http://mlflow:5000", "trackingCaBundle": {"secretKeyRef": {"name": "ca", "key": "ca.crt"}},
               "model": {"name": "churn", "version": "3"}}),
        "trackingCaBundle goes with an https:// trackingUri",
    );
    refused::<ModelDeployment>(
        md(json!({"trackingCaBundle": {"secretKeyRef": {"name": "ca", "key": "ca.crt"}}})),
        "trackingCaBundle goes with an https:// trackingUri",
    );
    refused::<ModelDeployment>(
        md(json!({"monitoring": {"quality": {"thresholds": [{"metric": "accuracy"}]}}})),
        "needs min, max or both",
    );
    refused::<ModelDeployment>(
        md(json!({"monitoring": {"quality": {"thresholds": [{"metric": "r2", "min": 0.9, "max": 0.5}]}}})),
        "min must not exceed max",
    );
}

#[test]
fn every_example_passes_the_rules() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let object: Value = serde_saphyr::from_str(&text).unwrap();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let result = match object["kind"].as_str().unwrap() {
            "TrackingServer" => check::<TrackingServer>(&name, object["spec"].clone()),
            "ModelDeployment" => check::<ModelDeployment>(&name, object["spec"].clone()),
            other => panic!("{}: unexpected kind {other}", path.display()),
        };
        assert!(result.is_ok(), "{}: {result:?}", path.display());
        seen += 1;
    }
    assert!(seen >= 3);
}
