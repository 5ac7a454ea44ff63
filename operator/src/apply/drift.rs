//! Is a live child up to date? Decided on what *we* manage, never by comparing whole objects:
//! the API server defaults fields (`imagePullPolicy`, probe timings, `clusterIP`, …) and
//! normalises values (`1024Mi` comes back as `1Gi`, `cpu: 0.5` as `500m`), so a live object never
//! equals what we sent.
//!
//! Two checks, both on data the API server keeps for us:
//! - **intent**: the annotation `mlkube.io/applied-hash` holds a hash of the object we last
//!   applied; a different desired object (new spec, new model version, new operator) hashes
//!   differently;
//! - **ownership**: our field manager's `managedFields` entry (operation `Apply`) still owns every
//!   field we set. When someone else changes one of them (`kubectl edit`, `kubectl scale`, another
//!   forced apply), the API server moves that field to their manager, and we apply again.
//!
//! Neither looks at values, so defaulting and normalisation are invisible to both.

use serde_json::Value;

use crate::build::labels;

/// Why a live object needs an apply, or `None` when it is up to date.
pub fn drift(live: &Value, desired: &Value, hash: &str, field_manager: &str) -> Option<String> {
    let recorded = live["metadata"]["annotations"][labels::APPLIED_HASH].as_str();
    if recorded != Some(hash) {
        return Some(match recorded {
            Some(old) => format!("applied intent changed ({old} -> {hash})"),
            None => "no applied-intent annotation".to_owned(),
        });
    }
    let Some(ours) = live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| {
            entry["manager"] == field_manager
                && entry["operation"] == "Apply"
                && entry["subresource"].as_str().is_none_or(str::is_empty)
        })
    else {
        return Some(format!("no managedFields entry of {field_manager}"));
    };
    let fields = &ours["fieldsV1"];
    let mut desired = desired.clone();
    // Identity and type are not fields anyone manages.
    if let Some(object) = desired.as_object_mut() {
        object.remove("apiVersion");
        object.remove("kind");
        object.remove("status");
    }
    if let Some(meta) = desired["metadata"].as_object_mut() {
        meta.remove("name");
        meta.remove("namespace");
    }
    covers(&desired, fields, "").err()
}

/// Whether `field_manager`'s `Apply` entry in `live`'s `managedFields` owns the field at `path`
/// (FieldsV1 keys, e.g. `["f:spec", "f:replicas"]`).
pub fn manages(live: &Value, field_manager: &str, path: &[&str]) -> bool {
    live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| {
            entry["manager"] == field_manager
                && entry["operation"] == "Apply"
                && entry["subresource"].as_str().is_none_or(str::is_empty)
        })
        .any(|entry| {
            path.iter()
                .try_fold(&entry["fieldsV1"], |node, key| node.get(*key))
                .is_some()
        })
}

/// A stable hash of the object we apply: FNV-1a over its JSON with keys sorted at every level.
pub fn applied_hash(desired: &Value) -> String {
    let mut text = String::new();
    canonical(desired, &mut text);
    crate::fingerprint::fingerprint(&text)
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Whether the field set `fields` (a `fieldsV1` tree: `f:<name>` for fields, `k:<json>` for
/// elements of keyed lists, `v:<json>` for elements of sets, `.` for the node itself) owns every
/// field of `desired`. A node without children owns its whole value (a scalar, or an atomic map
/// or list such as `args` or `selector`).
fn covers(desired: &Value, fields: &Value, path: &str) -> Result<(), String> {
    let Some(node) = fields.as_object() else {
        return Err(format!("{path}: not in our managed fields"));
    };
    if node.keys().all(|k| k == ".") {
        return Ok(());
    }
    match desired {
        Value::Object(map) => {
            for (key, value) in map {
                if value.is_null() {
                    continue;
                }
                let child = format!("{path}.{key}");
                let Some(sub) = node.get(&format!("f:{key}")) else {
                    return Err(format!("{child}: owned by another field manager"));
                };
                covers(value, sub, &child)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let child = format!("{path}[{i}]");
                match item {
                    Value::Object(element) => {
                        let Some(sub) = node.iter().find_map(|(k, v)| {
                            let key: serde_json::Map<String, Value> =
                                serde_json::from_str(k.strip_prefix("k:")?).ok()?;
                            key_matches(&key, element).then_some(v)
                        }) else {
                            return Err(format!("{child}: element owned by another field manager"));
                        };
                        covers(item, sub, &child)?;
                    }
                    scalar => {
                        if !node.contains_key(&format!("v:{scalar}")) {
                            return Err(format!("{child}: value owned by another field manager"));
                        }
                    }
                }
            }
            Ok(())
        }
        // A scalar whose node has children: the field is not what we think it is.
        _ => Err(format!("{path}: unexpected managed fields")),
    }
}

/// Whether a keyed-list key (`{"name": "x"}`, `{"containerPort": 8000, "protocol": "TCP"}`) names
/// `element`: every key field the element sets is equal, and it sets at least one (the API server
/// fills in key fields it defaults, such as a port's `protocol`).
fn key_matches(key: &serde_json::Map<String, Value>, element: &serde_json::Map<String, Value>) -> bool {
    let mut matched = false;
    for (field, value) in key {
        match element.get(field) {
            Some(v) if numbers_equal(v, value) => matched = true,
            Some(_) => return false,
            None => {}
        }
    }
    matched
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MANAGER: &str = "mlkube-operator";

    /// What we apply: a Service with two ports and labels.
    fn desired() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "churn", "namespace": "ml", "labels": {"app": "churn"},
                         "annotations": {"mlkube.io/applied-hash": "h1"},
                         "ownerReferences": [{"apiVersion": "mlkube.io/v1alpha1", "kind": "ModelDeployment",
                                              "name": "churn", "uid": "u-1", "controller": true}]},
            "spec": {"type": "ClusterIP", "selector": {"app": "churn"},
                     "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"},
                               {"name": "metrics", "port": 8001, "targetPort": "metrics", "protocol": "TCP"}]},
        })
    }

    /// Our managedFields entry as the API server records it for `desired()`.
    fn ours() -> Value {
        json!({"manager": MANAGER, "operation": "Apply", "apiVersion": "v1", "time": "2026-03-01T12:00:00Z",
               "fieldsType": "FieldsV1", "fieldsV1": {
            "f:metadata": {"f:labels": {"f:app": {}}, "f:annotations": {"f:mlkube.io/applied-hash": {}},
                           "f:ownerReferences": {"k:{\"uid\":\"u-1\"}": {}}},
            "f:spec": {"f:type": {}, "f:selector": {},
                       "f:ports": {"k:{\"port\":8000,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}},
                                   "k:{\"port\":8001,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}}}}})
    }

    fn live(managed: Vec<Value>) -> Value {
        let mut live = desired();
        live["metadata"]["managedFields"] = Value::Array(managed);
        live["spec"]["clusterIP"] = json!("10.96.4.7");
        live
    }

    #[test]
    fn up_to_date_when_the_intent_and_every_field_are_ours() {
        let status_writer = json!({"manager": "kube-controller-manager", "operation": "Update",
                                   "subresource": "status", "fieldsV1": {"f:status": {}}});
        assert_eq!(
            drift(&live(vec![ours(), status_writer]), &desired(), "h1", MANAGER),
            None
        );
    }

    #[test]
    fn a_new_intent_or_a_missing_entry_is_drift() {
        let reason = drift(&live(vec![ours()]), &desired(), "h2", MANAGER).unwrap();
        assert!(reason.contains("h1 -> h2"), "{reason}");
        let reason = drift(&live(vec![]), &desired(), "h1", MANAGER).unwrap();
        assert!(reason.contains("no managedFields entry"), "{reason}");
    }

    #[test]
    fn a_field_taken_by_another_manager_is_drift() {
        // `kubectl edit` changed the metrics port's targetPort: the field moved to kubectl.
        let mut taken = ours();
        taken["fieldsV1"]["f:spec"]["f:ports"]["k:{\"port\":8001,\"protocol\":\"TCP\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:targetPort");
        let reason = drift(&live(vec![taken]), &desired(), "h1", MANAGER).unwrap();
        assert_eq!(
            reason,
            ".spec.ports[1].targetPort: owned by another field manager"
        );
        // A port we want is gone from our set.
        let mut gone = ours();
        gone["fieldsV1"]["f:spec"]["f:ports"]
            .as_object_mut()
            .unwrap()
            .remove("k:{\"port\":8001,\"protocol\":\"TCP\"}");
        let reason = drift(&live(vec![gone]), &desired(), "h1", MANAGER).unwrap();
        assert!(reason.starts_with(".spec.ports[1]"), "{reason}");
    }

    #[test]
    fn key_fields_the_server_defaults_still_match() {
        let key: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"containerPort":8000,"protocol":"TCP"}"#).unwrap();
        let element = json!({"name": "http", "containerPort": 8000});
        assert!(key_matches(&key, element.as_object().unwrap()));
        let other = json!({"name": "metrics", "containerPort": 8001});
        assert!(!key_matches(&key, other.as_object().unwrap()));
    }

    #[test]
    fn who_manages_a_field() {
        let live = live(vec![ours()]);
        assert!(manages(&live, "mlkube-operator", &["f:spec"]));
        assert!(!manages(&live, "mlkube-operator", &["f:spec", "f:nope"]));
        assert!(!manages(&live, "someone-else", &["f:spec"]));
    }

    #[test]
    fn the_hash_ignores_key_order_but_not_values() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b = json!({"a": {"x": "s", "y": [1, 2]}, "b": 1});
        assert_eq!(applied_hash(&a), applied_hash(&b));
        assert_ne!(
            applied_hash(&a),
            applied_hash(&json!({"b": 2, "a": {"y": [1, 2], "x": "s"}}))
        );
    }
}
