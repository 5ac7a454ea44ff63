//! How requests arrive and responses leave, the MLflow way: GET parameters in the query string
//! (repeated keys, `k[]`, `k[0]`), JSON bodies on POST/PATCH/DELETE (double-encoded bodies decoded
//! twice, a missing body read as `{}`), `application/json` required on POST and PUT (the
//! CVE-2023-43472 CSRF fix), int64 accepted as numbers or strings, NaN/Infinity as strings.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode};

/// A request message, read from the query string for GET and from the JSON body otherwise.
#[derive(Debug)]
pub struct Req<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Req<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let method = req.method().clone();
        let value = if method == Method::GET || method == Method::HEAD {
            query_to_json(req.uri().query().unwrap_or(""))
        } else {
            if method == Method::POST || method == Method::PUT {
                require_json_content_type(req.headers())?;
            }
            let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
            body_to_json(&bytes)?
        };
        from_value(value).map(Req)
    }
}

/// A body past `--max-request-body-bytes`: 413.
pub fn body_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::RequestTooLarge,
        "The request body is larger than this server accepts (--max-request-body-bytes).",
    )
}

/// What a body that could not be read answers: 413 past the body limit, else 400.
pub fn body_rejection(err: BytesRejection) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        body_too_large()
    } else {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("Could not read the request body: {err}"),
        )
    }
}

/// [`body_rejection`] for a body read with `axum::body::to_bytes`.
pub fn body_read_error(err: axum::Error) -> ApiError {
    let inner = err.into_inner();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return body_too_large();
        }
        source = err.source();
    }
    ApiError::new(
        ErrorCode::BadRequest,
        format!("Could not read the request body: {inner}"),
    )
}

/// Decode a message from JSON, turning serde's complaint into MLflow's error.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|err| ApiError::invalid(format!("Invalid request body: {err}")))
}

pub fn require_json_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "Bad Request. Content-Type must be one of [application/json]",
        ))
    }
}

/// Parse a JSON body: empty means `{}`, a JSON string holding JSON is decoded a second time.
pub fn body_to_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|err| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("Malformed JSON in request body: {err}"),
        )
    })?;
    let value = match value {
        Value::String(inner) => serde_json::from_str(&inner).map_err(|err| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("Malformed JSON in request body: {err}"),
            )
        })?,
        other => other,
    };
    match value {
        Value::Object(_) => Ok(value),
        _ => Err(ApiError::new(
            ErrorCode::BadRequest,
            "The request body must be a JSON object.",
        )),
    }
}

/// Turn a query string into a JSON object: repeated keys (and `k[]` / `k[N]`) become arrays.
pub fn query_to_json(query: &str) -> Value {
    let mut map = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let key = match key.find('[') {
            Some(i) if key.ends_with(']') => key[..i].to_owned(),
            _ => key.into_owned(),
        };
        let value = Value::String(value.into_owned());
        match map.get_mut(&key) {
            None => {
                map.insert(key, value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
    Value::Object(map)
}

/// Serde helpers for proto-JSON leniency.
pub mod lenient {
    use super::*;

    fn as_i64(value: &Value) -> Option<i64> {
        match value {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// An optional int64 given as a number or a numeric string.
    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let value = Option::<Value>::deserialize(d)?;
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v) => as_i64(&v)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, got {v}"))),
        }
    }

    /// An optional boolean given as a JSON bool or "true"/"false".
    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(serde::de::Error::custom(format!("expected a boolean, got {v}"))),
        }
    }

    /// A repeated string field: an array, a single value (GET), or absent.
    pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        fn one<E: serde::de::Error>(v: Value) -> Result<String, E> {
            match v {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(E::custom(format!("expected a string, got {other}"))),
            }
        }
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.into_iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }

    /// A repeated message field where `null` means empty.
    pub fn list<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
        Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
    }

    /// A string field that may arrive as a number.
    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(v) => Err(serde::de::Error::custom(format!("expected a string, got {v}"))),
        }
    }

    /// A metric value: a number, or "NaN" / "Infinity" / "-Infinity" (or a numeric string).
    pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("expected a number")),
            Some(Value::String(s)) => parse_f64(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("expected a number, got \"{s}\""))),
            Some(v) => Err(serde::de::Error::custom(format!("expected a number, got {v}"))),
        }
    }

    pub fn parse_f64(s: &str) -> Option<f64> {
        match s.trim() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            other => other.parse().ok().filter(|f: &f64| f.is_finite()),
        }
    }
}

/// MLflow's encoding of doubles lives with the domain types that use it.
pub use crate::store::ser_f64;

/// Take a required field or answer MLflow's "Missing value for required parameter" error.
pub fn required<T>(value: Option<T>, name: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::missing(name))
}

/// A required string: absent or empty is missing.
pub fn required_str(value: Option<String>, name: &str) -> Result<String, ApiError> {
    match value {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::missing(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_repeated_keys_become_arrays() {
        let v = query_to_json("run_ids=a&run_ids=b&metric_key=m&x[]=1&y[0]=2&y[1]=3");
        assert_eq!(v["run_ids"], serde_json::json!(["a", "b"]));
        assert_eq!(v["metric_key"], "m");
        assert_eq!(v["x"], "1");
        assert_eq!(v["y"], serde_json::json!(["2", "3"]));
    }

    #[test]
    fn body_empty_double_encoded_and_bad() {
        assert_eq!(body_to_json(b"").unwrap(), serde_json::json!({}));
        assert_eq!(
            body_to_json(br#""{\"a\": 1}""#).unwrap(),
            serde_json::json!({"a": 1})
        );
        assert!(body_to_json(b"{").is_err());
        assert!(body_to_json(b"[1]").is_err());
    }

    #[derive(Deserialize)]
    struct Msg {
        #[serde(default, deserialize_with = "lenient::opt_i64")]
        n: Option<i64>,
        #[serde(default, deserialize_with = "lenient::strings")]
        ids: Vec<String>,
        #[serde(default, deserialize_with = "lenient::opt_f64")]
        v: Option<f64>,
    }

    #[test]
    fn lenient_fields() {
        let m: Msg = serde_json::from_value(serde_json::json!({"n": "12", "ids": "a", "v": "NaN"})).unwrap();
        assert_eq!(m.n, Some(12));
        assert_eq!(m.ids, vec!["a"]);
        assert!(m.v.unwrap().is_nan());
        let m: Msg =
            serde_json::from_value(serde_json::json!({"n": 3, "ids": ["a", "b"], "v": 1.5})).unwrap();
        assert_eq!((m.n, m.ids.len(), m.v), (Some(3), 2, Some(1.5)));
        assert!(serde_json::from_value::<Msg>(serde_json::json!({"v": true})).is_err());
        assert!(serde_json::from_value::<Msg>(serde_json::json!({"n": "x"})).is_err());
    }
}
