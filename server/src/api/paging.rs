//! Page tokens (base64 of `{"offset": N}`, as MLflow writes them), `max_results` bounds, and how
//! big one search may be.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::ApiError;
use crate::search::{Clause, Value};

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
    // A database offset is a signed 64-bit integer; beyond it no page exists, and offset
    // arithmetic would overflow.
    value
        .get("offset")
        .and_then(serde_json::Value::as_u64)
        .filter(|offset| i64::try_from(*offset).is_ok())
        .ok_or_else(|| {
            ApiError::invalid("Invalid page token, it must hold a non-negative integer 'offset' below 2^63")
        })
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
    key: &'static str,
    page: crate::store::Page<T>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::Json(PageBody {
        key,
        items: page.items,
        next_page_token: next_token(page.next_offset),
    })
    .into_response()
}

/// `{"<key>": [items…], "next_page_token": "…"}`, serialised straight from the items (a page of
/// 25 000 history points never becomes a `serde_json::Value` tree first).
struct PageBody<T> {
    key: &'static str,
    items: Vec<T>,
    next_page_token: Option<String>,
}

impl<T: serde::Serialize> serde::Serialize for PageBody<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1 + usize::from(self.next_page_token.is_some())))?;
        map.serialize_entry(self.key, &self.items)?;
        if let Some(token) = &self.next_page_token {
            map.serialize_entry("next_page_token", token)?;
        }
        map.end()
    }
}

/// How big one search may be. Past these the database refuses the query (SQLite: expressions
/// nested 1000 deep — each filter clause nests one —, 32 766 bound values, 64 tables in a join) or
/// worse: each metric, param or tag sort key left-joins a table, and SQLite (3.40 to 3.46 at least)
/// crashes the whole process executing 31 such joins sorted with a LIMIT. The client learns a 400.
pub const MAX_ORDER_BY: usize = 16;
pub const MAX_FILTER_CLAUSES: usize = 500;
/// Values in a filter's `IN` lists together, and ids in a request's id list.
pub const MAX_FILTER_VALUES: usize = 10_000;
pub const MAX_SEARCH_IDS: usize = 10_000;

/// Parse a search filter with `parse` and hold it to the size limits.
pub fn filter(
    text: Option<&str>,
    parse: fn(&str) -> Result<Vec<Clause>, crate::search::SearchError>,
) -> Result<Vec<Clause>, ApiError> {
    let clauses = parse(text.unwrap_or("")).map_err(|e| ApiError::invalid(e.to_string()))?;
    if clauses.len() > MAX_FILTER_CLAUSES {
        return Err(ApiError::invalid(format!(
            "A search filter may hold at most {MAX_FILTER_CLAUSES} clauses; this one has {}.",
            clauses.len()
        )));
    }
    let values: usize = clauses
        .iter()
        .map(|c| match &c.value {
            Value::List(items) => items.len(),
            _ => 1,
        })
        .sum();
    if values > MAX_FILTER_VALUES {
        return Err(ApiError::invalid(format!(
            "A search filter may compare with at most {MAX_FILTER_VALUES} values; this one has {values}."
        )));
    }
    Ok(clauses)
}

/// A request's list of ids to search in (`experiment_ids`), held to [`MAX_SEARCH_IDS`].
pub fn ids(field: &str, ids: Vec<String>) -> Result<Vec<String>, ApiError> {
    if ids.len() > MAX_SEARCH_IDS {
        return Err(ApiError::invalid(format!(
            "A search may name at most {MAX_SEARCH_IDS} {field}; this one names {}.",
            ids.len()
        )));
    }
    Ok(ids)
}

/// At most [`MAX_ORDER_BY`] sort keys.
pub fn check_order_by_count(count: usize) -> Result<(), ApiError> {
    if count > MAX_ORDER_BY {
        return Err(ApiError::invalid(format!(
            "A search may sort by at most {MAX_ORDER_BY} keys; this one sorts by {count}."
        )));
    }
    Ok(())
}

/// Parse every non-blank `order_by` entry with `parse`, as INVALID_PARAMETER_VALUE on failure.
pub fn order_by<T>(
    entries: &[String],
    parse: fn(&str) -> Result<T, crate::search::SearchError>,
) -> Result<Vec<T>, ApiError> {
    check_order_by_count(entries.iter().filter(|o| !o.trim().is_empty()).count())?;
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
        let max = i64::MAX;
        assert_eq!(
            decode(Some(&STANDARD.encode(format!("{{\"offset\": {max}}}")))).unwrap(),
            max as u64
        );
        for huge in ["9223372036854775808", "18446744073709551615"] {
            let token = STANDARD.encode(format!("{{\"offset\": {huge}}}"));
            assert!(decode(Some(&token)).is_err(), "{huge}");
        }
    }

    #[test]
    fn search_sizes() {
        let parse = crate::search::parse_run_filter;
        let clauses = |n: usize| vec!["metrics.m > 1"; n].join(" AND ");
        assert_eq!(
            filter(Some(&clauses(MAX_FILTER_CLAUSES)), parse).unwrap().len(),
            500
        );
        assert!(filter(Some(&clauses(MAX_FILTER_CLAUSES + 1)), parse).is_err());
        let values = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("'{i}'")).collect();
            format!("attributes.run_id IN ({})", list.join(","))
        };
        assert!(filter(Some(&values(MAX_FILTER_VALUES)), parse).is_ok());
        assert!(filter(Some(&values(MAX_FILTER_VALUES + 1)), parse).is_err());
        assert!(filter(None, parse).unwrap().is_empty());
        assert!(ids("experiment_ids", vec!["1".into(); MAX_SEARCH_IDS]).is_ok());
        assert!(ids("experiment_ids", vec!["1".into(); MAX_SEARCH_IDS + 1]).is_err());
        let keys = vec!["metrics.m".to_owned(); MAX_ORDER_BY + 1];
        assert!(order_by(&keys, crate::search::parse_run_order_by).is_err());
        let most = order_by(&keys[1..], crate::search::parse_run_order_by).unwrap();
        assert_eq!(most.len(), MAX_ORDER_BY);
    }

    #[test]
    fn bounds() {
        assert_eq!(max_results(None, 1000, 50000).unwrap(), 1000);
        assert!(max_results(Some(0), 1000, 50000).is_err());
        assert!(max_results(Some(50001), 1000, 50000).is_err());
    }
}
