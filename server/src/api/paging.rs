//! Page tokens (base64 of `{"offset": N}`, as MLflow writes them) and `max_results` bounds.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::ApiError;

pub fn encode(offset: u64) -> String {
    STANDARD.encode(format!("{{\"offset\": {offset}}}"))
}

pub fn decode(token: Option<&str>) -> Result<u64, ApiError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(0);
    };
    let bytes = STANDARD
        .decode(token)
        .map_err(|_| ApiError::invalid("Invalid page token, could not base64-decode"))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::invalid("Invalid page token, decoded value is not JSON"))?;
    value
        .get("offset")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| ApiError::invalid("Invalid page token, it must hold a non-negative integer 'offset'"))
}

/// `max_results` with a default, refused when below 1 or above the cap.
pub fn max_results(requested: Option<i64>, default: u64, cap: u64) -> Result<u64, ApiError> {
    match requested {
        None => Ok(default),
        Some(n) if n >= 1 && (n as u64) <= cap => Ok(n as u64),
        Some(n) => Err(ApiError::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied. It must be between 1 and {cap}."
        ))),
    }
}

pub fn next_token(next_offset: Option<u64>) -> Option<String> {
    next_offset.map(encode)
}

/// A search response: `{key: items}` plus `next_page_token` when another page exists.
pub fn page_body<T: serde::Serialize>(
    key: &str,
    page: crate::store::Page<T>,
) -> axum::Json<serde_json::Value> {
    let mut body = serde_json::json!({ key: page.items });
    if let Some(token) = next_token(page.next_offset) {
        body["next_page_token"] = serde_json::json!(token);
    }
    axum::Json(body)
}

/// Parse every non-blank `order_by` entry with `parse`, as INVALID_PARAMETER_VALUE on failure.
pub fn order_by<T>(
    entries: &[String],
    parse: fn(&str) -> Result<T, crate::search::SearchError>,
) -> Result<Vec<T>, ApiError> {
    entries
        .iter()
        .filter(|o| !o.trim().is_empty())
        .map(|o| parse(o).map_err(|e| ApiError::invalid(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mlflow_form() {
        assert_eq!(encode(1000), "eyJvZmZzZXQiOiAxMDAwfQ==");
        assert_eq!(decode(Some(&encode(42))).unwrap(), 42);
        assert_eq!(decode(None).unwrap(), 0);
        assert!(decode(Some("!!!")).is_err());
        assert!(decode(Some(&STANDARD.encode("{\"offset\": -1}"))).is_err());
    }

    #[test]
    fn bounds() {
        assert_eq!(max_results(None, 1000, 50000).unwrap(), 1000);
        assert!(max_results(Some(0), 1000, 50000).is_err());
        assert!(max_results(Some(50001), 1000, 50000).is_err());
    }
}
