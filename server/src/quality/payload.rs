//! Reading logged payloads: the score in a prediction's `outputs` and the numeric features in its
//! `inputs`. Pure.
//!
//! Outputs are kept as the JSON text the client sent, so "the first number" is the first number in
//! the document as written (depth first, in document order), whatever map type `serde_json` was
//! built with.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The score of an output: the output itself when it is a number, else the first number in it in
/// document order (`{"predictions": [0.75]}` → 0.75). `None` when it holds no number.
pub fn first_number(json: &str) -> Option<f64> {
    let mut de = serde_json::Deserializer::from_str(json);
    FirstNumber.deserialize(&mut de).ok().flatten()
}

/// The number at a JSON pointer (`/predictions/0`, `/probability`) of an output. `None` when the
/// pointer finds nothing or something that is not a number.
pub fn number_at(json: &str, pointer: &str) -> Option<f64> {
    let value: Value = serde_json::from_str(json).ok()?;
    value.pointer(pointer)?.as_f64()
}

/// Whether `pointer` is a JSON pointer (RFC 6901): empty, or `/`-separated tokens.
pub fn is_json_pointer(pointer: &str) -> bool {
    pointer.is_empty() || pointer.starts_with('/')
}

struct FirstNumber;

impl<'de> DeserializeSeed<'de> for FirstNumber {
    type Value = Option<f64>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstNumber {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.is_finite().then_some(v))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        FirstNumber.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while found.is_none() {
            match seq.next_element_seed(FirstNumber)? {
                Some(v) => found = v,
                None => return Ok(None),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(found)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while found.is_none() {
            if map.next_key::<IgnoredAny>()?.is_none() {
                return Ok(None);
            }
            found = map.next_value_seed(FirstNumber)?;
        }
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(found)
    }
}

/// Numeric input features of one logged `inputs` payload, as `(feature name, value)` pairs (one
/// pair per row and column). Understood shapes, as MLflow's scoring server takes them:
/// - `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`
/// - `{"dataframe_records": [{"col": v, ...}, ...]}`
/// - `{"instances": [...]}` and `{"inputs": [...]}`: rows that are objects (named columns), arrays
///   (columns named by position, `"0"`, `"1"`, …) or scalars (column `"0"`)
/// - `{"inputs": {"col": [v, ...], ...}}` (columnar) and a flat object `{"col": v, ...}` (one row;
///   a column whose value is an array of numbers contributes each of them)
/// - a bare array of rows.
///
/// Only JSON numbers count; strings, booleans and nested objects are skipped.
pub fn numeric_features(inputs: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    match inputs {
        Value::Object(map) => {
            if let Some(split) = map.get("dataframe_split") {
                dataframe_split(split, &mut out);
            } else if let Some(records) = map.get("dataframe_records") {
                rows(records, &mut out);
            } else if let Some(instances) = map.get("instances") {
                rows(instances, &mut out);
            } else if let Some(inputs) = map.get("inputs") {
                match inputs {
                    Value::Object(columns) => columnar(columns, &mut out),
                    other => rows(other, &mut out),
                }
            } else {
                columnar(map, &mut out);
            }
        }
        Value::Array(_) => rows(inputs, &mut out),
        _ => {}
    }
    out
}

fn push_number(name: &str, value: &Value, out: &mut Vec<(String, f64)>) {
    if let Some(v) = value.as_f64().filter(|v| v.is_finite())
        && value.is_number()
    {
        out.push((name.to_owned(), v));
    }
}

fn column_name(value: &Value, position: usize) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => position.to_string(),
    }
}

fn dataframe_split(split: &Value, out: &mut Vec<(String, f64)>) {
    let columns: Vec<String> = match split.get("columns") {
        Some(Value::Array(cols)) => cols.iter().enumerate().map(|(i, c)| column_name(c, i)).collect(),
        _ => Vec::new(),
    };
    let Some(Value::Array(data)) = split.get("data") else {
        return;
    };
    for row in data {
        match row {
            Value::Array(cells) => {
                for (i, cell) in cells.iter().enumerate() {
                    let name = columns.get(i).cloned().unwrap_or_else(|| i.to_string());
                    push_number(&name, cell, out);
                }
            }
            scalar => {
                let name = columns.first().cloned().unwrap_or_else(|| "0".to_owned());
                push_number(&name, scalar, out);
            }
        }
    }
}

fn rows(value: &Value, out: &mut Vec<(String, f64)>) {
    let items: &[Value] = match value {
        Value::Array(items) => items,
        single => std::slice::from_ref(single),
    };
    for row in items {
        match row {
            Value::Object(fields) => {
                for (name, v) in fields {
                    push_number(name, v, out);
                }
            }
            Value::Array(cells) => {
                for (i, cell) in cells.iter().enumerate() {
                    push_number(&i.to_string(), cell, out);
                }
            }
            scalar => push_number("0", scalar, out),
        }
    }
}

fn columnar(columns: &serde_json::Map<String, Value>, out: &mut Vec<(String, f64)>) {
    for (name, v) in columns {
        match v {
            Value::Array(items) => {
                for item in items {
                    push_number(name, item, out);
                }
            }
            other => push_number(name, other, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn first_number_in_document_order() {
        assert_eq!(first_number("0.25"), Some(0.25));
        assert_eq!(first_number(r#"{"predictions": [0.75]}"#), Some(0.75));
        // Document order, not key order: "probability" comes before "label" as written.
        assert_eq!(first_number(r#"{"probability": 0.8, "label": 1}"#), Some(0.8));
        assert_eq!(
            first_number(r#"{"z": "x", "a": [null, true, {"b": [3]}], "c": 4}"#),
            Some(3.0)
        );
        assert_eq!(first_number(r#"[[], {}, "7", -2]"#), Some(-2.0));
        assert_eq!(first_number(r#"{"label": "cat"}"#), None);
        assert_eq!(first_number("null"), None);
        assert_eq!(first_number("not json"), None);
    }

    #[test]
    fn pointers() {
        let out = r#"{"predictions": [[0.2, 0.8]], "probability": 0.9, "label": "x"}"#;
        assert_eq!(number_at(out, "/predictions/0/1"), Some(0.8));
        assert_eq!(number_at(out, "/probability"), Some(0.9));
        assert_eq!(number_at(out, "/label"), None);
        assert_eq!(number_at(out, "/missing"), None);
        assert_eq!(number_at("0.5", ""), Some(0.5));
        assert!(is_json_pointer("/a/0") && is_json_pointer("") && !is_json_pointer("a"));
    }

    fn sorted(mut v: Vec<(String, f64)>) -> Vec<(String, f64)> {
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        v
    }

    fn pairs(items: &[(&str, f64)]) -> Vec<(String, f64)> {
        sorted(items.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
    }

    #[test]
    fn feature_shapes() {
        let split = json!({"dataframe_split": {"columns": ["age", "income", "city"],
            "data": [[30, 1000.5, "x"], [40, 2000, "y"]]}});
        assert_eq!(
            sorted(numeric_features(&split)),
            pairs(&[
                ("age", 30.0),
                ("age", 40.0),
                ("income", 1000.5),
                ("income", 2000.0)
            ])
        );
        let records = json!({"dataframe_records": [{"age": 1, "ok": true}, {"age": 2}]});
        assert_eq!(
            sorted(numeric_features(&records)),
            pairs(&[("age", 1.0), ("age", 2.0)])
        );
        let instances = json!({"instances": [[1, 2], [3, 4]]});
        assert_eq!(
            sorted(numeric_features(&instances)),
            pairs(&[("0", 1.0), ("0", 3.0), ("1", 2.0), ("1", 4.0)])
        );
        let tensor_cols = json!({"inputs": {"a": [1, 2], "b": 3}});
        assert_eq!(
            sorted(numeric_features(&tensor_cols)),
            pairs(&[("a", 1.0), ("a", 2.0), ("b", 3.0)])
        );
        let tensor_rows = json!({"inputs": [{"a": 5}]});
        assert_eq!(numeric_features(&tensor_rows), pairs(&[("a", 5.0)]));
        let flat = json!({"x": 1.5, "name": "n", "nested": {"y": 2}});
        assert_eq!(numeric_features(&flat), pairs(&[("x", 1.5)]));
        assert!(numeric_features(&json!("text")).is_empty());
        assert!(numeric_features(&json!({"dataframe_split": {"data": "bad"}})).is_empty());
    }
}
