//! MLflow's input rules: key names, value lengths and batch limits (reference §3).

use crate::error::ApiError;
use crate::store::{Metric, Tag};

pub const MAX_ENTITY_KEY_LENGTH: usize = 250;
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
pub const MAX_TAG_VALUE_LENGTH: usize = 8000;
pub const MAX_EXPERIMENT_TAG_VALUE_LENGTH: usize = 5000;
pub const MAX_EXPERIMENT_NAME_LENGTH: usize = 500;
pub const MAX_METRICS_PER_BATCH: usize = 1000;
pub const MAX_PARAMS_TAGS_PER_BATCH: usize = 100;
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;
pub const MAX_DATASETS_PER_BATCH: usize = 1000;

/// A metric, param or tag key: allowed characters, length, and "path-unique" (no `a//b`, `./a`,
/// `a/`, leading `/` or `..`), so that keys can never be confused with file paths.
pub fn validate_key(kind: &str, key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::invalid(format!(
            "Invalid {kind} name: ''. Names may not be empty."
        )));
    }
    if key.chars().count() > MAX_ENTITY_KEY_LENGTH {
        return Err(ApiError::invalid(format!(
            "'{kind}' name '{}...' exceeds the maximum length of {MAX_ENTITY_KEY_LENGTH} characters.",
            key.chars().take(50).collect::<String>()
        )));
    }
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/' | ':');
    if !key.chars().all(allowed) {
        return Err(ApiError::invalid(format!(
            "Invalid {kind} name: '{key}'. Names may only contain alphanumerics, underscores (_), dashes (-), \
             periods (.), spaces ( ), colons (:) and slashes (/)."
        )));
    }
    let path_unique = !key.starts_with('/')
        && !key.ends_with('/')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if !path_unique {
        return Err(ApiError::invalid(format!(
            "Invalid {kind} name: '{key}'. Names cannot refer to a parent or current directory and may not be \
             absolute or contain empty path segments."
        )));
    }
    Ok(())
}

/// Truncate an over-long value to `max` characters (MLflow's MLFLOW_TRUNCATE_LONG_VALUES default).
pub fn truncate_value(kind: &str, key: &str, value: String, max: usize) -> String {
    if value.chars().count() <= max {
        return value;
    }
    tracing::warn!(kind, key, max, "truncating an over-long value");
    value.chars().take(max).collect()
}

pub fn validate_metric(m: &Metric) -> Result<(), ApiError> {
    validate_key("metric", &m.key)?;
    if m.timestamp < 0 {
        return Err(ApiError::invalid(format!(
            "Invalid timestamp {} for metric '{}': timestamps must be non-negative milliseconds.",
            m.timestamp, m.key
        )));
    }
    Ok(())
}

pub fn validate_batch_limits(metrics: usize, params: usize, tags: usize) -> Result<(), ApiError> {
    let over = |what: &str, n: usize, max: usize| {
        ApiError::invalid(format!(
            "A batch logging request can contain at most {max} {what}. Got {n} {what}. Please split up {what} \
             across multiple requests and try again."
        ))
    };
    if metrics > MAX_METRICS_PER_BATCH {
        return Err(over("metrics", metrics, MAX_METRICS_PER_BATCH));
    }
    if params > MAX_PARAMS_TAGS_PER_BATCH {
        return Err(over("params", params, MAX_PARAMS_TAGS_PER_BATCH));
    }
    if tags > MAX_PARAMS_TAGS_PER_BATCH {
        return Err(over("tags", tags, MAX_PARAMS_TAGS_PER_BATCH));
    }
    let total = metrics + params + tags;
    if total > MAX_ENTITIES_PER_BATCH {
        return Err(ApiError::invalid(format!(
            "A batch logging request can contain at most {MAX_ENTITIES_PER_BATCH} metrics, params, and tags in \
             total. Got {total} entities."
        )));
    }
    Ok(())
}

pub fn validate_experiment_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid(
            "Invalid experiment name: ''. Experiment names may not be empty.",
        ));
    }
    if name.chars().count() > MAX_EXPERIMENT_NAME_LENGTH {
        return Err(ApiError::invalid(format!(
            "Experiment name exceeds the maximum length of {MAX_EXPERIMENT_NAME_LENGTH} characters."
        )));
    }
    Ok(())
}

pub fn validate_experiment_tag(tag: &Tag) -> Result<(), ApiError> {
    validate_key("tag", &tag.key)?;
    if tag.value.chars().count() > MAX_EXPERIMENT_TAG_VALUE_LENGTH {
        return Err(ApiError::invalid(format!(
            "Experiment tag '{}' value exceeds the maximum length of {MAX_EXPERIMENT_TAG_VALUE_LENGTH} characters.",
            tag.key
        )));
    }
    Ok(())
}

/// An experiment's artifact location: no query, fragment, NUL or parent-directory segments after
/// decoding (CVE-2024-2928: a `#` fragment smuggled `../` past the checks).
pub fn validate_artifact_location(location: &str) -> Result<(), ApiError> {
    let decoded = crate::artifacts::fully_decode(location)
        .ok_or_else(|| ApiError::invalid("Invalid artifact location: it could not be decoded."))?;
    let bad = decoded.contains(['#', '?', '\0', '\\']) || decoded.split('/').any(|seg| seg == "..");
    if bad {
        return Err(ApiError::invalid(format!(
            "Invalid artifact location '{location}': it may not contain '..' segments, '#', '?', '\\' or NUL."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_rules() {
        for ok in ["acc", "a/b", "train loss", "x.y-z_1", "ns:metric"] {
            assert!(validate_key("metric", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "./a",
            "../a",
            "a/../b",
            "a\\b",
            "a;b",
            &"k".repeat(251),
        ] {
            assert!(validate_key("metric", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn batch_limits() {
        assert!(validate_batch_limits(1000, 0, 0).is_ok());
        assert!(validate_batch_limits(1001, 0, 0).is_err());
        assert!(validate_batch_limits(0, 101, 0).is_err());
        assert!(validate_batch_limits(900, 100, 1).is_err());
    }

    #[test]
    fn artifact_locations() {
        assert!(validate_artifact_location("s3://bucket/path").is_ok());
        assert!(validate_artifact_location("file:///tmp/x#/../../etc").is_err());
        assert!(validate_artifact_location("s3://b/%2e%2e/x").is_err());
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate_value("param", "k", "abcdef".into(), 3), "abc");
        assert_eq!(truncate_value("param", "k", "ab".into(), 3), "ab");
    }
}
