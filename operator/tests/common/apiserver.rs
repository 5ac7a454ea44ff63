//! What the API server adds to an object the operator applied, for scenarios that feed live
//! children back: the applied-intent annotation kept verbatim, `metadata` the server owns (uid,
//! resourceVersion, creationTimestamp) and our field manager's `managedFields` entry.
//!
//! The field set is simulated here from the object (keyed lists by their merge keys, everything
//! else granular or atomic as the Kubernetes types declare it). The hand-written fixtures under
//! `tests/fixtures/apiserver/` are the realistic check: full defaulting, normalised quantities
//! and managed fields as an API server returns them.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use mlkube_operator::apply::FIELD_MANAGER;
use mlkube_operator::apply::drift::applied_hash;
use serde_json::{Map, Value, json};

use super::{NOW, UID};

/// `obj` as the API server returns it after the operator's server-side apply.
pub fn as_applied(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    let hash = applied_hash(&obj);
    let annotations = obj["metadata"]
        .as_object_mut()
        .unwrap()
        .entry("annotations")
        .or_insert_with(|| json!({}));
    annotations["mlkube.io/applied-hash"] = json!(hash);
    let fields = managed_fields(&obj);
    let api_version = obj["apiVersion"].clone();
    let meta = obj["metadata"].as_object_mut().unwrap();
    meta.insert("uid".into(), json!(format!("{}-child", &UID[..8])));
    meta.insert("resourceVersion".into(), json!("4242"));
    meta.insert("creationTimestamp".into(), json!(NOW));
    meta.insert(
        "managedFields".into(),
        json!([{"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": api_version,
                "time": NOW, "fieldsType": "FieldsV1", "fieldsV1": fields}]),
    );
    obj
}

/// Every item of `items` as applied.
pub fn applied_values<T: serde::Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .map(|i| as_applied(&serde_json::to_value(i).unwrap()))
        .collect()
}

/// Hand `paths` (JSON pointers into `fieldsV1`, e.g. `/f:spec/f:replicas`) of our entry over to
/// another manager, as the API server does when someone else writes those fields (`kubectl edit`,
/// `kubectl scale`).
pub fn take_fields(live: &mut Value, manager: &str, paths: &[&str]) {
    let ours = &mut live["metadata"]["managedFields"][0]["fieldsV1"];
    for path in paths {
        let (parent, leaf) = path.rsplit_once('/').unwrap();
        ours.pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .and_then(|m| m.remove(leaf))
            .unwrap_or_else(|| panic!("{path} is not in our managed fields"));
    }
    let api_version = live["apiVersion"].clone();
    live["metadata"]["managedFields"].as_array_mut().unwrap().push(
        json!({"manager": manager, "operation": "Update", "apiVersion": api_version,
                     "time": NOW, "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}),
    );
}

fn managed_fields(obj: &Value) -> Value {
    let mut obj = obj.clone();
    let o = obj.as_object_mut().unwrap();
    o.remove("apiVersion");
    o.remove("kind");
    let meta = o.get_mut("metadata").unwrap().as_object_mut().unwrap();
    meta.remove("name");
    meta.remove("namespace");
    fields(&obj, "")
}

/// Merge keys of the keyed lists our children use; every other list is atomic.
fn list_keys(field: &str, element: &Map<String, Value>) -> Option<&'static [&'static str]> {
    Some(match field {
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => &["name"],
        "volumeMounts" => &["mountPath"],
        "ownerReferences" => &["uid"],
        "ports" if element.contains_key("containerPort") => &["containerPort", "protocol"],
        "ports" => &["port", "protocol"],
        _ => return None,
    })
}

/// Atomic structs (`+structType=atomic`): owned as a whole.
fn atomic_struct(field: &str) -> bool {
    matches!(field, "selector" | "ownerReferences")
}

fn fields(value: &Value, field: &str) -> Value {
    match value {
        Value::Object(map) if !atomic_struct(field) || field.is_empty() => {
            let mut node = Map::new();
            for (k, v) in map {
                if v.is_null() {
                    continue;
                }
                node.insert(format!("f:{k}"), fields(v, k));
            }
            if !field.is_empty() && !node.is_empty() {
                node.insert(".".into(), json!({}));
            }
            Value::Object(node)
        }
        Value::Array(items) => {
            let mut node = Map::new();
            for item in items {
                let Some(element) = item.as_object() else {
                    return json!({});
                };
                let Some(keys) = list_keys(field, element) else {
                    return json!({});
                };
                let mut key = Map::new();
                for k in keys {
                    let v = element.get(*k).cloned().unwrap_or_else(|| {
                        if *k == "protocol" {
                            json!("TCP")
                        } else {
                            Value::Null
                        }
                    });
                    key.insert((*k).to_owned(), v);
                }
                let entry = if field == "ownerReferences" {
                    json!({})
                } else {
                    fields(item, "")
                };
                let mut entry = entry;
                if let Some(e) = entry.as_object_mut()
                    && !e.is_empty()
                {
                    e.insert(".".into(), json!({}));
                }
                node.insert(format!("k:{}", Value::Object(key)), entry);
            }
            Value::Object(node)
        }
        _ => json!({}),
    }
}
