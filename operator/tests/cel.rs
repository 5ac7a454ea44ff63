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
        "set exactly one of artifactStore.pvc, artifactStore.s3, artifactStore.gcs and artifactStore.azure",
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

fn postgres(replicas: i32, artifact_store: Value, extra: Value) -> Value {
    let mut spec = json!({"replicas": replicas,
        "backendStore": {"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}},
        "artifactStore": artifact_store});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

#[test]
fn object_store_rules() {
    let ok = |spec: Value| {
        if let Err(messages) = check::<TrackingServer>("mlflow", spec.clone()) {
            panic!("{spec}: {messages:?}");
        }
    };
    // Every object store takes several replicas, with a Secret or with workload identity.
    ok(postgres(
        3,
        json!({"s3": {"bucket": "models", "region": "eu-west-1", "credentialsSecretRef": {"name": "s3"}}}),
        json!({}),
    ));
    ok(postgres(
        3,
        json!({"s3": {"bucket": "models"}}),
        json!({"serviceAccountName": "mlflow-irsa"}),
    ));
    ok(postgres(
        3,
        json!({"s3": {"bucket": "models", "access": "Direct", "credentialsSecretRef": {"name": "s3"}}}),
        json!({}),
    ));
    ok(postgres(
        3,
        json!({"gcs": {"bucket": "ml-artifacts", "credentialsSecretRef": {"name": "gcs"}}}),
        json!({}),
    ));
    ok(postgres(
        3,
        json!({"gcs": {"bucket": "ml-artifacts", "prefix": "prod"}}),
        json!({"serviceAccountName": "mlflow-gcs"}),
    ));
    ok(postgres(
        3,
        json!({"azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az"}}}),
        json!({}),
    ));
    ok(postgres(
        3,
        json!({"azure": {"account": "mlstore", "container": "artifacts", "dfs": true, "credentialsSecretRef": {"name": "az", "sasTokenKey": "sas"}}}),
        json!({}),
    ));
    ok(postgres(
        3,
        json!({"azure": {"account": "mlstore", "container": "artifacts"}}),
        json!({"serviceAccountName": "mlflow-azure"}),
    ));
    // Schema defaulting makes new S3 stores proxied.
    let schema = schema::<TrackingServer>();
    let object = kube_cel::apply_defaults(
        &schema,
        &json!({"apiVersion": "mlkube.io/v1alpha1", "kind": "TrackingServer", "metadata": {"name": "mlflow"},
                "spec": postgres(1, json!({"s3": {"bucket": "models"}}), json!({}))}),
    );
    assert_eq!(object["spec"]["artifactStore"]["s3"]["access"], "Proxied");

    // Replicas: a local directory would split the artifacts (the existing rule, now naming
    // every way out).
    refused::<TrackingServer>(
        postgres(2, json!({"pvc": {"accessModes": ["ReadWriteOnce"]}}), json!({})),
        "more than one replica needs an artifact store every replica sees: an object store (artifactStore.s3, gcs or azure) or an artifactStore.pvc whose accessModes include ReadWriteMany",
    );
    ok(postgres(1, json!({"pvc": {}}), json!({})));
    ok(postgres(
        2,
        json!({"pvc": {"accessModes": ["ReadWriteMany"]}}),
        json!({}),
    ));
    // Exactly one store.
    for two in [
        json!({"s3": {"bucket": "models"}, "gcs": {"bucket": "ml-artifacts"}}),
        json!({"gcs": {"bucket": "ml-artifacts"}, "azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az"}}}),
        json!({"pvc": {}, "azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az"}}}),
    ] {
        refused::<TrackingServer>(
            postgres(1, two, json!({})),
            "set exactly one of artifactStore.pvc",
        );
    }
    refused::<TrackingServer>(
        postgres(1, json!({}), json!({})),
        "set exactly one of artifactStore.pvc",
    );
    // Direct is S3's, and needs the Secret it hands to model servers.
    refused::<TrackingServer>(
        postgres(
            1,
            json!({"s3": {"bucket": "models", "access": "Direct"}}),
            json!({"serviceAccountName": "mlflow-irsa"}),
        ),
        "access: Direct gives clients and model servers the bucket's credentials, so it needs credentialsSecretRef",
    );
    refused::<TrackingServer>(
        postgres(
            1,
            json!({"gcs": {"bucket": "ml-artifacts", "access": "Direct"}}),
            json!({}),
        ),
        "gcs artifacts are served through the tracking server only: set access: Proxied",
    );
    refused::<TrackingServer>(
        postgres(
            1,
            json!({"azure": {"account": "mlstore", "container": "artifacts", "access": "Direct", "credentialsSecretRef": {"name": "az"}}}),
            json!({}),
        ),
        "azure artifacts are served through the tracking server only: set access: Proxied",
    );
    // Azure needs a key, a SAS token or workload identity; one key at most.
    refused::<TrackingServer>(
        postgres(
            1,
            json!({"azure": {"account": "mlstore", "container": "artifacts"}}),
            json!({}),
        ),
        "artifactStore.azure needs credentials: set artifactStore.azure.credentialsSecretRef (account key or SAS token) or spec.serviceAccountName (Azure Workload Identity)",
    );
    refused::<TrackingServer>(
        postgres(
            1,
            json!({"azure": {"account": "mlstore", "container": "artifacts",
                             "credentialsSecretRef": {"name": "az", "accountKeyKey": "key", "sasTokenKey": "sas"}}}),
            json!({}),
        ),
        "set at most one of accountKeyKey and sasTokenKey",
    );
    // Enums and patterns are the schema's (kube-cel evaluates only the rules; the examples
    // are checked against the schema by scripts/check-manifests.py).
    let spec = &schema["properties"]["spec"]["properties"];
    let store = &spec["artifactStore"]["properties"];
    for kind in ["s3", "gcs", "azure"] {
        assert_eq!(
            store[kind]["properties"]["access"]["enum"],
            json!(["Proxied", "Direct"]),
            "{kind}"
        );
        assert_eq!(
            store[kind]["properties"]["access"]["default"], "Proxied",
            "{kind}"
        );
    }
    assert_eq!(store["azure"]["properties"]["dfs"]["default"], false);
    assert!(spec["serviceAccountName"]["pattern"].is_string());
    assert_eq!(spec["serviceAccountName"]["maxLength"], 253);
}

#[test]
fn dedicated_artifact_server_rules() {
    let ok = |spec: Value| {
        if let Err(messages) = check::<TrackingServer>("mlflow", spec.clone()) {
            panic!("{spec}: {messages:?}");
        }
    };
    // An object store behind the proxy: S3 (Proxied by default), GCS, Azure.
    ok(postgres(
        3,
        json!({"s3": {"bucket": "models", "credentialsSecretRef": {"name": "s3"}}, "dedicatedServer": {}}),
        json!({}),
    ));
    ok(postgres(
        1,
        json!({"s3": {"bucket": "models", "access": "Proxied"},
               "dedicatedServer": {"replicas": 4, "advertisedUrl": "artifacts.example.com:443"}}),
        json!({"serviceAccountName": "mlflow-irsa"}),
    ));
    ok(postgres(
        2,
        json!({"gcs": {"bucket": "ml-artifacts"}, "dedicatedServer": {}}),
        json!({"serviceAccountName": "mlflow-gcs"}),
    ));
    ok(postgres(
        2,
        json!({"azure": {"account": "mlstore", "container": "artifacts", "credentialsSecretRef": {"name": "az"}},
               "dedicatedServer": {}}),
        json!({"auth": {"enabled": false, "adminSecretRef": {"name": "admin"}}}),
    ));
    // Schema defaulting gives the artifact server two replicas.
    let schema = schema::<TrackingServer>();
    let object = kube_cel::apply_defaults(
        &schema,
        &json!({"apiVersion": "mlkube.io/v1alpha1", "kind": "TrackingServer", "metadata": {"name": "mlflow"},
                "spec": postgres(1, json!({"s3": {"bucket": "models"}, "dedicatedServer": {}}), json!({}))}),
    );
    assert_eq!(object["spec"]["artifactStore"]["dedicatedServer"]["replicas"], 2);

    let store_rule = "artifactStore.dedicatedServer needs an object store behind the artifact proxy: artifactStore.s3 with access: Proxied, artifactStore.gcs or artifactStore.azure";
    // A PVC, whatever its access modes, and the default store (a PVC).
    refused::<TrackingServer>(
        postgres(1, json!({"pvc": {}, "dedicatedServer": {}}), json!({})),
        store_rule,
    );
    refused::<TrackingServer>(
        postgres(
            2,
            json!({"pvc": {"accessModes": ["ReadWriteMany"]}, "dedicatedServer": {}}),
            json!({}),
        ),
        store_rule,
    );
    refused::<TrackingServer>(json!({"artifactStore": {"dedicatedServer": {}}}), store_rule);
    // Direct access has no proxy to run.
    refused::<TrackingServer>(
        postgres(
            3,
            json!({"s3": {"bucket": "models", "access": "Direct", "credentialsSecretRef": {"name": "s3"}},
                   "dedicatedServer": {}}),
            json!({}),
        ),
        store_rule,
    );
    // Basic auth: the artifact server could not check users and permissions.
    refused::<TrackingServer>(
        postgres(
            2,
            json!({"s3": {"bucket": "models"}, "dedicatedServer": {}}),
            json!({"auth": {"adminSecretRef": {"name": "admin"}}}),
        ),
        "artifactStore.dedicatedServer does not go with auth",
    );
    // A host and port, no scheme.
    refused::<TrackingServer>(
        postgres(
            2,
            json!({"s3": {"bucket": "models"}, "dedicatedServer": {"advertisedUrl": "https://artifacts.example.com"}}),
            json!({}),
        ),
        "advertisedUrl is a host and optional port without a scheme",
    );
    // Several tracking replicas on a ReadWriteOnce PVC stay refused as before.
    refused::<TrackingServer>(
        postgres(2, json!({"pvc": {}, "dedicatedServer": {}}), json!({})),
        "more than one replica needs an artifact store every replica sees",
    );
    // Bounds the API server's cost estimator needs, and the pattern the operator checks too.
    let dedicated = &schema["properties"]["spec"]["properties"]["artifactStore"]["properties"]["dedicatedServer"]
        ["properties"];
    assert_eq!(dedicated["advertisedUrl"]["maxLength"], 259);
    assert!(dedicated["advertisedUrl"]["pattern"].is_string());
    assert_eq!(dedicated["replicas"]["maximum"], 100.0);
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

// === Cost: every list and string a rule iterates or matches is bounded ===

/// A rule found in a schema: where it sits, its expression, and the lists it sits under.
struct Found {
    path: String,
    rule: String,
    node: Value,
    lists_above: Vec<(String, Value)>,
}

fn rules_in(node: &Value, path: &str, lists_above: &[(String, Value)], out: &mut Vec<Found>) {
    for rule in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
        out.push(Found {
            path: path.to_owned(),
            rule: rule["rule"].as_str().unwrap().to_owned(),
            node: node.clone(),
            lists_above: lists_above.to_vec(),
        });
    }
    if let Some(properties) = node["properties"].as_object() {
        for (name, child) in properties {
            rules_in(child, &format!("{path}.{name}"), lists_above, out);
        }
    }
    if node["items"].is_object() {
        let mut above = lists_above.to_vec();
        above.push((path.to_owned(), node.clone()));
        rules_in(&node["items"], &format!("{path}[]"), &above, out);
    }
    if node["additionalProperties"].is_object() {
        rules_in(
            &node["additionalProperties"],
            &format!("{path}{{}}"),
            lists_above,
            out,
        );
    }
}

/// What the API server's cost estimator needs to bound `node` when a rule reads all of it.
fn unbounded(node: &Value) -> Option<&'static str> {
    match node["type"].as_str() {
        Some("string") if node["maxLength"].is_null() && node["enum"].is_null() => Some("maxLength"),
        Some("array") if node["maxItems"].is_null() => Some("maxItems"),
        Some("object") if node["additionalProperties"].is_object() && node["maxProperties"].is_null() => {
            Some("maxProperties")
        }
        _ => None,
    }
}

/// Problems of one rule: an unbounded list above it (the rule runs once per element), or an
/// unbounded string, list or map it reads (`has(…)` only tests presence, and `metadata.name` is
/// bounded by the API server).
fn cost_problems(found: &Found) -> Vec<String> {
    let mut problems = Vec::new();
    for (list, node) in &found.lists_above {
        if node["maxItems"].is_null() {
            problems.push(format!(
                "the rule runs once per element of {list}, which has no maxItems"
            ));
        }
    }
    let mut expression = found.rule.clone();
    while let Some(start) = expression.find("has(") {
        let end = expression[start..]
            .find(')')
            .map_or(expression.len(), |e| start + e + 1);
        expression.replace_range(start..end, "true");
    }
    let bytes = expression.as_bytes();
    let mut i = 0;
    while let Some(at) = expression[i..].find("self") {
        let start = i + at;
        i = start + 4;
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue; // e.g. `oldSelf`
        }
        let mut fields = Vec::new();
        let mut rest = &expression[start + 4..];
        while let Some(tail) = rest.strip_prefix('.') {
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            // A call (`.exists(`, `.size(`, `.matches(`) ends the path.
            if tail[len..].starts_with('(') {
                break;
            }
            fields.push(&tail[..len]);
            rest = &tail[len..];
        }
        if fields.first() == Some(&"metadata") {
            continue;
        }
        let mut node = &found.node;
        for field in &fields {
            node = &node["properties"][*field];
        }
        if node.is_null() {
            problems.push(format!(
                "reads self.{} which the schema does not have",
                fields.join(".")
            ));
        } else if let Some(bound) = unbounded(node) {
            problems.push(format!("reads self.{} which has no {bound}", fields.join(".")));
        }
    }
    problems
}

#[test]
fn every_list_and_string_a_rule_reads_is_bounded() {
    // The API server estimates each rule's cost from maxItems/maxLength/maxProperties and refuses
    // the CRD itself (at `kubectl apply -f crds/`) when an unbounded list or string makes the
    // estimate exceed its budget. kube-cel evaluates the rules but cannot refuse a CRD, so this
    // walks every rule of both CRDs (new ones included) and checks what it reads.
    let mut problems = Vec::new();
    let mut count = 0;
    for (kind, schema) in [
        ("TrackingServer", schema::<TrackingServer>()),
        ("ModelDeployment", schema::<ModelDeployment>()),
    ] {
        let mut found = Vec::new();
        rules_in(&schema, kind, &[], &mut found);
        count += found.len();
        for rule in &found {
            for problem in cost_problems(rule) {
                problems.push(format!("{} `{}`: {problem}", rule.path, rule.rule));
            }
            let warnings = kube_cel::analyze_rule(
                &rule.rule,
                &kube_cel::compile_schema(&rule.node),
                kube_cel::ScopeContext::CrdValidation,
            );
            // Its scope check does not know comprehension variables; its cost estimate is coarse
            // but must not exceed the budget either.
            for w in warnings
                .iter()
                .filter(|w| w.kind == kube_cel::WarningKind::CostExceeded)
            {
                problems.push(format!("{} `{}`: kube-cel: {}", rule.path, rule.rule, w.message));
            }
        }
    }
    assert!(count >= 15, "only {count} rules found: the walk misses some");
    assert!(
        problems.is_empty(),
        "unbounded CEL rules:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_bounds_check_catches_an_unbounded_rule() {
    let schema = json!({"type": "object", "properties": {
        "names": {"type": "array", "items": {"type": "string"}},
        "uri": {"type": "string", "maxLength": 100},
        "hosts": {"type": "array", "items": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.name.matches('^a')"}],
            "properties": {"name": {"type": "string"}}}}},
        "x-kubernetes-validations": [
            {"rule": "self.names.exists(n, n == 'x') && self.uri.startsWith('https://') && has(self.hosts)"}]});
    let mut found = Vec::new();
    rules_in(&schema, "T", &[], &mut found);
    let problems: Vec<String> = found.iter().flat_map(cost_problems).collect();
    assert_eq!(
        problems,
        [
            "reads self.names which has no maxItems",
            "the rule runs once per element of T.hosts, which has no maxItems",
            "reads self.name which has no maxLength",
        ]
    );
}

/// `check`, as an update of `old` (transition rules see `oldSelf`).
fn check_update<K: CustomResourceExt>(old: Value, new: Value) -> Result<(), Vec<String>> {
    let schema = schema::<K>();
    let object = |spec: Value| {
        let object = json!({
            "apiVersion": "mlkube.io/v1alpha1",
            "kind": K::crd().spec.names.kind,
            "metadata": {"name": "churn", "namespace": "ml"},
            "spec": spec,
        });
        kube_cel::apply_defaults(&schema, &object)
    };
    kube_cel::validate(&schema, &object(new), Some(&object(old)))
        .map_err(|errors| errors.into_vec().into_iter().map(|e| e.message).collect())
}

#[test]
fn rollout_and_disruption_budget_rules() {
    let ok = |spec: Value| {
        if let Err(messages) = check::<ModelDeployment>("churn", md(spec.clone())) {
            panic!("{spec}: {messages:?}");
        }
    };
    ok(json!({"rolloutStrategy": {"maxSurge": 0, "maxUnavailable": 1}}));
    ok(json!({"rolloutStrategy": {"maxSurge": "0%", "maxUnavailable": "50%"}}));
    ok(json!({"rolloutStrategy": {"maxSurge": 0}}));
    for zero in [
        json!({"maxSurge": 0, "maxUnavailable": 0}),
        json!({"maxSurge": "0%", "maxUnavailable": 0}),
        json!({"maxSurge": 0, "maxUnavailable": "0%"}),
    ] {
        refused::<ModelDeployment>(
            md(json!({"rolloutStrategy": zero})),
            "maxSurge and maxUnavailable must not both be zero",
        );
    }
    ok(json!({"disruptionBudget": {"minAvailable": "50%"}}));
    ok(json!({"disruptionBudget": {"enabled": false}}));
    refused::<ModelDeployment>(
        md(json!({"disruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}})),
        "at most one of disruptionBudget.minAvailable and disruptionBudget.maxUnavailable",
    );
    let pg = json!({"postgres": {"uriSecretRef": {"name": "db", "key": "uri"}}});
    check::<TrackingServer>(
        "mlflow",
        json!({"replicas": 3, "backendStore": pg, "artifactStore": {"s3": {"bucket": "models"}},
               "rolloutStrategy": {"maxUnavailable": 0}, "disruptionBudget": {"minAvailable": 2}}),
    )
    .unwrap();
    refused::<TrackingServer>(
        json!({"rolloutStrategy": {"maxSurge": 1}}),
        "rolloutStrategy needs a rolling Deployment",
    );
    refused::<TrackingServer>(
        json!({"backendStore": pg, "rolloutStrategy": {"maxSurge": 1}}),
        "rolloutStrategy needs a rolling Deployment",
    );
    refused::<TrackingServer>(
        json!({"disruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}),
        "at most one of disruptionBudget.minAvailable",
    );
}

#[test]
fn autoscaling_rules() {
    let ok = |autoscaling: Value| {
        let spec = md(json!({"autoscaling": autoscaling}));
        if let Err(messages) = check::<ModelDeployment>("churn", spec.clone()) {
            panic!("{spec}: {messages:?}");
        }
    };
    let no = |autoscaling: Value, needle: &str| {
        refused::<ModelDeployment>(md(json!({"autoscaling": autoscaling})), needle);
    };
    let keda = json!({"prometheusAddress": "http://prometheus:9090"});
    ok(json!({"maxReplicas": 5, "target": {"inFlightRequests": 4}}));
    ok(json!({"minReplicas": 2, "maxReplicas": 5, "target": {"cpuUtilization": 70}}));
    ok(json!({"engine": "KEDA", "maxReplicas": 5, "target": {"inFlightRequests": 4}, "keda": keda}));
    ok(json!({"engine": "KEDA", "maxReplicas": 5, "target": {"cpuUtilization": 80}}));
    ok(
        json!({"engine": "KEDA", "minReplicas": 0, "maxReplicas": 5, "target": {"inFlightRequests": 4},
               "keda": {"prometheusAddress": "http://prometheus:9090", "query": "sum(gateway_active{route=\"churn\"})"}}),
    );
    no(
        json!({"minReplicas": 0, "maxReplicas": 5, "target": {"inFlightRequests": 4}}),
        "only KEDA scales to zero",
    );
    no(
        json!({"engine": "KEDA", "minReplicas": 0, "maxReplicas": 5, "target": {"inFlightRequests": 4}, "keda": keda}),
        "minReplicas: 0 needs target.inFlightRequests and autoscaling.keda.query",
    );
    no(
        json!({"engine": "KEDA", "minReplicas": 0, "maxReplicas": 5, "target": {"cpuUtilization": 50}}),
        "minReplicas: 0 needs target.inFlightRequests",
    );
    no(
        json!({"minReplicas": 6, "maxReplicas": 5, "target": {"inFlightRequests": 4}}),
        "minReplicas must not exceed autoscaling.maxReplicas",
    );
    no(
        json!({"maxReplicas": 5, "target": {"inFlightRequests": 4, "cpuUtilization": 50}}),
        "exactly one of autoscaling.target.inFlightRequests and autoscaling.target.cpuUtilization",
    );
    no(
        json!({"maxReplicas": 5, "target": {}}),
        "exactly one of autoscaling.target.inFlightRequests",
    );
    no(
        json!({"engine": "KEDA", "maxReplicas": 5, "target": {"inFlightRequests": 4}}),
        "needs autoscaling.keda.prometheusAddress",
    );
    no(
        json!({"maxReplicas": 5, "target": {"inFlightRequests": 4}, "keda": keda}),
        "autoscaling.keda goes with engine: KEDA",
    );
    // (Enums and ranges are the schema's, checked by tests/manifests.rs, not CEL.)
    no(
        json!({"maxReplicas": 0, "target": {"inFlightRequests": 4}}),
        "minReplicas must not exceed",
    );
}

#[test]
fn kubectl_scale_is_refused_while_autoscaling_is_on() {
    let autoscaled = |replicas: i32| {
        md(json!({"replicas": replicas,
                  "autoscaling": {"maxReplicas": 5, "target": {"inFlightRequests": 4}}}))
    };
    // What the scale subresource does: a new spec.replicas, everything else as it was.
    let messages = check_update::<ModelDeployment>(autoscaled(1), autoscaled(4)).unwrap_err();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("spec.replicas is not used while spec.autoscaling is set")),
        "{messages:?}"
    );
    check_update::<ModelDeployment>(autoscaled(1), autoscaled(1)).unwrap();
    // Turning autoscaling on or off in the same change as replicas is fine.
    check_update::<ModelDeployment>(md(json!({"replicas": 2})), autoscaled(3)).unwrap();
    check_update::<ModelDeployment>(autoscaled(3), md(json!({"replicas": 2}))).unwrap();
    check_update::<ModelDeployment>(md(json!({"replicas": 2})), md(json!({"replicas": 5}))).unwrap();
}

#[test]
fn exposure_rules() {
    let route = json!({"parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "https"}],
                       "hostnames": ["churn.models.example.com"], "pathPrefix": "/churn"});
    let ingress =
        json!({"className": "nginx", "host": "churn.models.example.com", "tlsSecretName": "churn-tls"});
    check::<ModelDeployment>("churn", md(json!({"exposure": {"httpRoute": route}}))).unwrap();
    check::<ModelDeployment>("churn", md(json!({"exposure": {"ingress": ingress}}))).unwrap();
    check::<TrackingServer>("mlflow", json!({"exposure": {"ingress": ingress}})).unwrap();
    refused::<ModelDeployment>(
        md(json!({"exposure": {"httpRoute": route, "ingress": ingress}})),
        "exactly one of exposure.httpRoute and exposure.ingress",
    );
    refused::<TrackingServer>(json!({"exposure": {}}), "exactly one of exposure.httpRoute");
}

#[test]
fn canary_rollout_rules() {
    let rollout = |steps: Value| {
        md(
            json!({"rollout": {"strategy": "Canary", "canary": {"steps": steps,
            "analysis": {"maxErrorRate": 0.01, "maxLatencyP99Ratio": 1.2,
                         "quality": {"metric": "accuracy", "labelDelay": "30m", "maxDrop": 0.02}},
            "onSuccess": {"setAlias": "champion"}}}}),
        )
    };
    check::<ModelDeployment>(
        "churn",
        rollout(json!([{"weight": 10, "hold": "10m"}, {"weight": 50, "hold": "30m"}, {"weight": 100, "hold": "5m"}])),
    )
    .unwrap();
    // Equal weights hold longer; they do not decrease.
    check::<ModelDeployment>(
        "churn",
        rollout(json!([{"weight": 20, "hold": "10m"}, {"weight": 20, "hold": "10m"}])),
    )
    .unwrap();
    check::<ModelDeployment>("churn", md(json!({"rollout": {"strategy": "Rolling"}}))).unwrap();
    refused::<ModelDeployment>(
        rollout(json!([{"weight": 50, "hold": "10m"}, {"weight": 10, "hold": "10m"}])),
        "canary.steps weights must not decrease",
    );
    refused::<ModelDeployment>(
        rollout(json!([{"weight": 10, "hold": "10m"}, {"weight": 150, "hold": "10m"}])),
        "a canary step's weight is a percentage from 1 to 100",
    );
    refused::<ModelDeployment>(
        rollout(json!([{"weight": 0, "hold": "10m"}])),
        "a canary step's weight is a percentage from 1 to 100",
    );
    refused::<ModelDeployment>(
        md(json!({"rollout": {"strategy": "Canary"}})),
        "rollout.canary goes with (and is needed by) strategy: Canary",
    );
    refused::<ModelDeployment>(
        md(json!({"rollout": {"canary": {"steps": [{"weight": 10, "hold": "1m"}]}}})),
        "rollout.canary goes with (and is needed by) strategy: Canary",
    );
}
