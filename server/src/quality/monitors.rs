//! Monitors: a metric of a model (one version, or all versions together) over a window, compared
//! with a threshold. Their alert state moves OK → FIRING → RESOLVED (→ FIRING …), is stored with
//! the monitor, and each move to FIRING or RESOLVED sends the monitor's webhook.
//!
//! The state machine ([`next_state`]) and the comparison ([`Direction::breached`]) are pure; the
//! evaluation itself (`impl Monitoring` below) reads the window, records the outcome and notifies.

use std::collections::HashMap;

use serde::Serialize;
use tracing::instrument;

use super::scores::{CLASSIFICATION_METRICS, PSI, REGRESSION_METRICS};
use super::windows::Window;
use super::{QualityMonitoring, QualityQuery, QualityReport, ScoreSpec, Task};
use crate::store::ser_f64;
use crate::store::{StoreResult, now_ms};

/// Which side of the threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Breached when the value is above the threshold (errors, log loss, drift).
    Above,
    /// Breached when the value is below the threshold (accuracy, F1, AUC, R²).
    Below,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "above" => Some(Self::Above),
            "below" => Some(Self::Below),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Above => "above",
            Self::Below => "below",
        }
    }

    /// The natural direction of a metric: below for scores where higher is better, above for
    /// errors and drift.
    pub fn default_for(metric: &MonitorMetric) -> Self {
        match metric {
            MonitorMetric::Quality { name, .. } => match *name {
                "accuracy" | "precision" | "recall" | "f1" | "roc_auc" | "r2" => Self::Below,
                _ => Self::Above,
            },
            MonitorMetric::Drift { .. } => Self::Above,
        }
    }

    /// Whether `value` is on the bad side of `threshold` (strictly).
    pub fn breached(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Above => value > threshold,
            Self::Below => value < threshold,
        }
    }
}

/// A monitor's alert state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AlertState {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "FIRING")]
    Firing,
    #[serde(rename = "RESOLVED")]
    Resolved,
}

impl AlertState {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OK" => Some(Self::Ok),
            "FIRING" => Some(Self::Firing),
            "RESOLVED" => Some(Self::Resolved),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Firing => "FIRING",
            Self::Resolved => "RESOLVED",
        }
    }
}

/// The state after an evaluation. `breached` is `None` when the metric could not be computed
/// (no data, too few samples): the state stays as it was.
pub fn next_state(current: AlertState, breached: Option<bool>) -> AlertState {
    match (current, breached) {
        (state, None) => state,
        (_, Some(true)) => AlertState::Firing,
        (AlertState::Firing, Some(false)) => AlertState::Resolved,
        (state, Some(false)) => state,
    }
}

/// What a monitor watches: a quality metric (which fixes the task) or drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorMetric {
    Quality {
        name: &'static str,
        task: Task,
    },
    /// `psi` (the largest PSI over the features) or `psi:<feature>`.
    Drift {
        feature: Option<String>,
    },
}

impl MonitorMetric {
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(name) = CLASSIFICATION_METRICS.iter().find(|m| **m == s) {
            return Some(Self::Quality {
                name,
                task: Task::Classification,
            });
        }
        if let Some(name) = REGRESSION_METRICS.iter().find(|m| **m == s) {
            return Some(Self::Quality {
                name,
                task: Task::Regression,
            });
        }
        if s == PSI {
            return Some(Self::Drift { feature: None });
        }
        match s.strip_prefix("psi:") {
            Some(feature) if !feature.is_empty() => Some(Self::Drift {
                feature: Some(feature.to_owned()),
            }),
            _ => None,
        }
    }

    /// The message listing what `metric` may be.
    pub fn expected() -> String {
        let mut all: Vec<&str> = CLASSIFICATION_METRICS.to_vec();
        all.extend(REGRESSION_METRICS);
        format!("{}, psi or psi:<feature>", all.join(", "))
    }

    /// The value of this metric in a report.
    pub fn value_in(&self, report: &QualityReport) -> Option<f64> {
        match self {
            Self::Quality { name, .. } => report.metrics.get(*name).copied(),
            Self::Drift { feature: None } => report.metrics.get(PSI).copied(),
            Self::Drift {
                feature: Some(feature),
            } => report
                .drift
                .as_ref()
                .and_then(|d| d.features.get(feature).copied()),
        }
    }

    /// How many samples stood behind the value: labelled and scored predictions for quality,
    /// live rows of the feature(s) for drift.
    pub fn samples_in(&self, report: &QualityReport) -> i64 {
        match self {
            Self::Quality { .. } => report.evaluated,
            Self::Drift { .. } => report.drift.as_ref().map_or(0, |d| d.live_rows),
        }
    }
}

/// A monitor as stored and as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Monitor {
    pub monitor_id: String,
    pub name: String,
    pub model_name: String,
    /// `None`: all versions of the model together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    pub metric: String,
    pub window: String,
    #[serde(serialize_with = "ser_f64")]
    pub threshold: f64,
    pub direction: Direction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score_field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub positive_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_threshold: Option<f64>,
    pub min_samples: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    pub state: AlertState,
    pub state_since: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<i64>,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    /// Bumped by every update, so an evaluation that read an older configuration does not
    /// overwrite the state of the newer one.
    #[serde(skip)]
    pub revision: i64,
}

impl Monitor {
    /// The parsed metric (validated when the monitor was written).
    pub fn parsed_metric(&self) -> Option<MonitorMetric> {
        MonitorMetric::parse(&self.metric)
    }

    /// The quality query this monitor evaluates, ending at `end`.
    pub fn query(&self, end: i64) -> Option<QualityQuery> {
        let metric = self.parsed_metric()?;
        let window = Window::parse(&self.window).ok()?;
        let (task, drift) = match &metric {
            MonitorMetric::Quality { task, .. } => (*task, false),
            MonitorMetric::Drift { .. } => (Task::Classification, true),
        };
        Some(QualityQuery {
            model_name: self.model_name.clone(),
            model_version: self.model_version.clone(),
            window,
            end_time: end,
            task,
            score: ScoreSpec::new(
                self.score_field.clone(),
                self.positive_label.as_deref(),
                self.decision_threshold,
            ),
            quality: !drift,
            drift,
        })
    }
}

/// The notification a state change sends to the monitor's webhook (and what the exporter and
/// logs report).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Notification {
    /// A one-line summary (Slack-style incoming webhooks show it as the message).
    pub text: String,
    pub monitor_id: String,
    pub monitor: String,
    pub model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    pub metric: String,
    pub window: String,
    #[serde(serialize_with = "ser_f64")]
    pub threshold: f64,
    pub direction: Direction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    pub state: AlertState,
    pub previous_state: AlertState,
    pub timestamp: i64,
}

impl Notification {
    pub fn new(m: &Monitor, previous: AlertState, value: Option<f64>, at: i64) -> Self {
        let version = m
            .model_version
            .as_deref()
            .map_or_else(|| "all versions".to_owned(), |v| format!("version {v}"));
        let shown = value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.6}"));
        Self {
            text: format!(
                "[{}] mlkube monitor '{}': {} of {} ({version}) over {} is {shown} (alert when {} {})",
                m.state.as_str(),
                m.name,
                m.metric,
                m.model_name,
                m.window,
                m.direction.as_str(),
                m.threshold
            ),
            monitor_id: m.monitor_id.clone(),
            monitor: m.name.clone(),
            model_name: m.model_name.clone(),
            model_version: m.model_version.clone(),
            metric: m.metric.clone(),
            window: m.window.clone(),
            threshold: m.threshold,
            direction: m.direction,
            value,
            state: m.state,
            previous_state: previous,
            timestamp: at,
        }
    }
}

/// Reports computed during one evaluation pass, shared by monitors that ask the same question.
#[derive(Default)]
pub struct EvaluationCache {
    reports: HashMap<String, QualityReport>,
}

// === impl Monitoring (evaluation) ===

impl QualityMonitoring {
    /// Evaluate every monitor (oldest first) at `now`. Errors of one monitor are logged and do not
    /// stop the others. Returns the monitors as they are afterwards.
    #[instrument(skip_all)]
    pub async fn evaluate_all(&self, now: i64) -> StoreResult<Vec<Monitor>> {
        let _serial = self.evaluation_lock.lock().await;
        let monitors = self.store.list_monitors(None).await?;
        // Series of deleted monitors go; those of a monitor whose evaluation failed stay.
        self.exporter_retain(&monitors);
        let mut cache = EvaluationCache::default();
        let mut out = Vec::with_capacity(monitors.len());
        for monitor in monitors {
            let id = monitor.monitor_id.clone();
            match self.evaluate_one(monitor, now, &mut cache).await {
                Ok(m) => out.push(m),
                Err(err) => {
                    tracing::warn!(monitor_id = %id, error = %err, reason = err.reason(), "monitor evaluation failed")
                }
            }
        }
        Ok(out)
    }

    /// Evaluate one monitor now.
    pub async fn evaluate_monitor(&self, monitor_id: &str, now: i64) -> StoreResult<Monitor> {
        let _serial = self.evaluation_lock.lock().await;
        let monitor = self.store.get_monitor(monitor_id).await?;
        self.evaluate_one(monitor, now, &mut EvaluationCache::default())
            .await
    }

    async fn evaluate_one(
        &self,
        monitor: Monitor,
        now: i64,
        cache: &mut EvaluationCache,
    ) -> StoreResult<Monitor> {
        let (Some(metric), Some(query)) = (monitor.parsed_metric(), monitor.query(now)) else {
            // Written through the API, so unreachable short of a hand-edited database.
            tracing::warn!(monitor_id = %monitor.monitor_id, "monitor has an invalid metric or window; skipped");
            return Ok(monitor);
        };
        let key = query.cache_key();
        let report = match cache.reports.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = self.quality(&query).await?;
                cache.reports.insert(key, r.clone());
                r
            }
        };
        let value = metric.value_in(&report);
        let enough = metric.samples_in(&report) >= monitor.min_samples.max(1);
        let breached = value
            .filter(|_| enough)
            .map(|v| monitor.direction.breached(v, monitor.threshold));
        let previous = monitor.state;
        let state = next_state(previous, breached);
        let state_since = if state == previous {
            monitor.state_since
        } else {
            now
        };
        let recorded = self
            .store
            .record_evaluation(
                &monitor.monitor_id,
                monitor.revision,
                previous,
                state,
                state_since,
                value,
                now,
            )
            .await?;
        let mut updated = monitor;
        if !recorded {
            // Deleted, reconfigured, or evaluated by another replica meanwhile: the next evaluation
            // starts from what is stored now.
            tracing::debug!(monitor_id = %updated.monitor_id, "monitor changed during evaluation; result dropped");
            return Ok(updated);
        }
        updated.state = state;
        updated.state_since = state_since;
        updated.last_value = value;
        updated.last_evaluated = Some(now);
        self.exporter_update(&updated, &report);
        if state != previous {
            tracing::info!(
                monitor_id = %updated.monitor_id,
                monitor = %updated.name,
                from = previous.as_str(),
                to = state.as_str(),
                value = ?value,
                "monitor state changed"
            );
            if let Some(url) = &updated.webhook_url {
                self.notifier
                    .notify(url, Notification::new(&updated, previous, value, now));
            }
        }
        Ok(updated)
    }
}

/// Current time for evaluations (a function so the scheduler and the API agree).
pub fn evaluation_time() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine() {
        use AlertState::*;
        let cases = [
            (Ok, Some(false), Ok),
            (Ok, Some(true), Firing),
            (Ok, None, Ok),
            (Firing, Some(true), Firing),
            (Firing, None, Firing),
            (Firing, Some(false), Resolved),
            (Resolved, Some(false), Resolved),
            (Resolved, None, Resolved),
            (Resolved, Some(true), Firing),
        ];
        for (from, breached, to) in cases {
            assert_eq!(next_state(from, breached), to, "{from:?} + {breached:?}");
        }
    }

    #[test]
    fn directions_are_strict() {
        assert!(Direction::Above.breached(0.51, 0.5));
        assert!(!Direction::Above.breached(0.5, 0.5));
        assert!(Direction::Below.breached(0.49, 0.5));
        assert!(!Direction::Below.breached(0.5, 0.5));
    }

    #[test]
    fn metrics_parse_with_their_task_and_direction() {
        let f1 = MonitorMetric::parse("f1").unwrap();
        assert_eq!(
            f1,
            MonitorMetric::Quality {
                name: "f1",
                task: Task::Classification
            }
        );
        assert_eq!(Direction::default_for(&f1), Direction::Below);
        let mae = MonitorMetric::parse("mae").unwrap();
        assert!(matches!(
            mae,
            MonitorMetric::Quality {
                task: Task::Regression,
                ..
            }
        ));
        assert_eq!(Direction::default_for(&mae), Direction::Above);
        assert_eq!(
            MonitorMetric::parse("psi:age"),
            Some(MonitorMetric::Drift {
                feature: Some("age".into())
            })
        );
        assert_eq!(
            MonitorMetric::parse("psi"),
            Some(MonitorMetric::Drift { feature: None })
        );
        for bad in ["", "auc", "F1", "psi:", "latency"] {
            assert_eq!(MonitorMetric::parse(bad), None, "{bad}");
        }
    }
}
