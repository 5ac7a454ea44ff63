//! Model quality monitoring: logged predictions joined with ground truth that arrives later (by
//! request id), quality metrics per model version and time window, feature drift, and monitors
//! whose alert state is exported on `/metrics` and sent to webhooks.
//!
//! The HTTP endpoints under `/api/2.0/mlkube/` (and `/ajax-api/2.0/mlkube/`) are `crate::api::quality`.
//!
//! - [`store`]: the tables and their SQL (both engines);
//! - [`scores`], [`payload`], [`windows`]: pure metric math, payload parsing, window arithmetic;
//! - [`monitors`]: monitors, their state machine and their evaluation;
//! - [`webhook`]: the notifier (bounded queue, timeouts, retries, no private targets by default);
//! - [`exporter`]: the `mlflow_model_quality*` series;
//! - [`settings`]: the `--monitoring-*` flags.
//!
//! Ingestion only writes rows: evaluation runs on a schedule (and on demand) and never in an
//! ingestion request, and notifications leave through a queue that drops rather than waits.

pub mod exporter;
pub mod monitors;
pub mod payload;
pub mod scores;
pub mod settings;
pub mod store;
pub mod webhook;
pub mod windows;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use serde::Serialize;
use serde_json::Value;
use tracing::instrument;

use self::exporter::{Exporter, QualityMetrics};
use self::monitors::{Monitor, evaluation_time};
use self::payload::{number_at, numeric_features};
use self::scores::{Bins, PSI, Regressed, Scored, classification_metrics, regression_metrics};
pub use self::settings::{MonitoringArgs, MonitoringSettings};
use self::store::{MonitoringStore, PruneStats, Scope, StoredReference, WindowRow};
use self::webhook::Notifier;
use self::windows::Window;
use crate::store::schedule::Schedule;
use crate::store::{StoreResult, now_ms};

/// Drift compares at most this many of the window's newest predictions.
pub const MAX_DRIFT_ROWS: usize = 10_000;
/// Drift looks at most at this many features (the first by name).
pub const MAX_DRIFT_FEATURES: usize = 100;

/// What kind of model a quality query is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classification,
    Regression,
}

impl Task {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "classification" => Some(Self::Classification),
            "regression" => Some(Self::Regression),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::Regression => "regression",
        }
    }
}

/// How a prediction's score and label are read.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSpec {
    /// JSON pointer into `outputs`; `None`: the output itself if a number, else its first number.
    pub field: Option<String>,
    /// The positive class (default `1`); compared as a number when both sides are numbers.
    pub positive_label: String,
    positive_number: Option<f64>,
    /// Predicted positive when `score >= threshold` (default 0.5).
    pub threshold: f64,
}

pub const DEFAULT_POSITIVE_LABEL: &str = "1";
pub const DEFAULT_DECISION_THRESHOLD: f64 = 0.5;

impl ScoreSpec {
    pub fn new(field: Option<String>, positive_label: Option<&str>, threshold: Option<f64>) -> Self {
        let positive_label = positive_label
            .filter(|l| !l.is_empty())
            .unwrap_or(DEFAULT_POSITIVE_LABEL)
            .to_owned();
        Self {
            field: field.filter(|f| !f.is_empty()),
            positive_number: parse_number(&positive_label),
            positive_label,
            threshold: threshold.unwrap_or(DEFAULT_DECISION_THRESHOLD),
        }
    }

    /// Whether a stored label is the positive class.
    pub fn is_positive(&self, actual: &str, actual_number: Option<f64>) -> bool {
        match (actual_number, self.positive_number) {
            (Some(a), Some(p)) => a == p,
            _ => actual == self.positive_label,
        }
    }

    fn score_of(&self, row: &WindowRow) -> Option<f64> {
        match &self.field {
            None => row.score,
            Some(pointer) => row.outputs.as_deref().and_then(|o| number_at(o, pointer)),
        }
    }
}

/// A label or positive class given as text, read as a number when it is one.
pub fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A quality question: one model (one version or all), one window.
#[derive(Debug, Clone)]
pub struct QualityQuery {
    pub model_name: String,
    pub model_version: Option<String>,
    pub window: Window,
    /// The window ends here (ms); it holds predictions with `end - window < timestamp <= end`.
    pub end_time: i64,
    pub task: Task,
    pub score: ScoreSpec,
    /// Compute the task's metrics (else only the counts).
    pub quality: bool,
    /// Compute feature drift (PSI).
    pub drift: bool,
}

impl QualityQuery {
    fn scope(&self) -> Scope {
        Scope {
            model_name: self.model_name.clone(),
            model_version: self.model_version.clone(),
        }
    }

    /// Identifies queries with the same answer within one evaluation pass.
    pub fn cache_key(&self) -> String {
        format!(
            "{}\u{0}{:?}\u{0}{}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.model_name,
            self.model_version,
            self.window.millis(),
            self.end_time,
            self.task.as_str(),
            self.score.field,
            self.score.positive_label,
            self.score.threshold,
            self.quality,
            self.drift
        )
    }
}

/// Drift of the live window against the reference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DriftReport {
    /// `uploaded`, `predictions` (the first predictions of the version) or `none`.
    pub reference: String,
    pub reference_rows: i64,
    /// Predictions of the window whose inputs were compared (the newest, at most 10,000).
    pub live_rows: i64,
    /// PSI per numeric feature present in both.
    pub features: BTreeMap<String, f64>,
}

/// The answer to a [`QualityQuery`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QualityReport {
    pub model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    pub window: String,
    pub task: Task,
    pub start_time: i64,
    pub end_time: i64,
    /// Predictions in the window.
    pub predictions: i64,
    /// Predictions in the window that have ground truth.
    pub labelled: i64,
    pub unlabelled: i64,
    /// Ground truth logged in the window for predictions made before it.
    pub late_labels: i64,
    /// Labelled predictions with a usable score (and, for regression, a numeric label): the
    /// samples behind the metrics.
    pub evaluated: i64,
    pub metrics: BTreeMap<&'static str, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftReport>,
}

/// The metrics of a window's rows. Returns the metrics and the number of samples behind them.
pub fn window_metrics(
    rows: &[WindowRow],
    task: Task,
    spec: &ScoreSpec,
) -> (BTreeMap<&'static str, f64>, i64) {
    let labelled = rows.iter().filter_map(|r| Some((r, r.actual.as_deref()?)));
    match task {
        Task::Classification => {
            let mut samples: Vec<Scored> = labelled
                .filter_map(|(r, actual)| {
                    Some(Scored {
                        score: spec.score_of(r)?,
                        positive: spec.is_positive(actual, r.actual_number),
                    })
                })
                .collect();
            let n = samples.len() as i64;
            (classification_metrics(&mut samples, spec.threshold), n)
        }
        Task::Regression => {
            let samples: Vec<Regressed> = labelled
                .filter_map(|(r, _)| {
                    Some(Regressed {
                        predicted: spec.score_of(r)?,
                        actual: r.actual_number?,
                    })
                })
                .collect();
            (regression_metrics(&samples), samples.len() as i64)
        }
    }
}

/// Per-feature decile bins of a set of `inputs` payloads; `rows` is the largest number of values
/// any feature had.
pub fn reference_from_inputs<'a>(inputs: impl Iterator<Item = &'a Value>) -> (BTreeMap<String, Bins>, i64) {
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for payload in inputs {
        for (name, v) in numeric_features(payload) {
            if values.len() < MAX_DRIFT_FEATURES || values.contains_key(&name) {
                values.entry(name).or_default().push(v);
            }
        }
    }
    let rows = values.values().map(Vec::len).max().unwrap_or(0) as i64;
    let bins = values
        .into_iter()
        .filter_map(|(name, mut v)| Some((name, Bins::from_reference(&mut v)?)))
        .collect();
    (bins, rows)
}

/// Monitoring's shared state: its tables, settings, notifier and exported series.
pub struct QualityMonitoring {
    store: MonitoringStore,
    settings: MonitoringSettings,
    notifier: Notifier,
    exporter: Option<Exporter>,
    /// Evaluations run one at a time (scheduled and on demand), so each reads the state the
    /// previous one wrote.
    evaluation_lock: tokio::sync::Mutex<()>,
}

impl QualityMonitoring {
    /// Monitoring over the tracking store's database, exporting into `quality` (the series
    /// `ServerMetrics` registered) when given. Starts the webhook worker (needs a Tokio runtime);
    /// the evaluation schedule starts with [`Monitoring::spawn_scheduler`].
    pub fn new(
        database: crate::db::Database,
        quality: Option<QualityMetrics>,
        settings: MonitoringSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            store: MonitoringStore::new(database),
            notifier: Notifier::start(settings.webhook.clone(), quality.clone()),
            exporter: quality.map(Exporter::new),
            settings,
            evaluation_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &MonitoringSettings {
        &self.settings
    }

    pub fn store(&self) -> &MonitoringStore {
        &self.store
    }

    /// Evaluate all monitors and prune old data every `--monitoring-evaluation-interval`, starting
    /// now, until the process ends (or `self` is dropped). Replicas on one database take turns: each
    /// interval exactly one of them runs the pass ([`Schedule`]), so a state change notifies its
    /// webhook once, whatever the number of replicas. `replica` names this process among them.
    pub fn spawn_scheduler(self: &Arc<Self>, replica: String) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        let schedule = Schedule::new(
            self.store.database().clone(),
            "monitoring",
            self.settings.evaluation_interval,
            replica,
        );
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(schedule.poll_period());
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(monitoring) = weak.upgrade() else {
                    break;
                };
                match schedule.claim(now_ms()).await {
                    Ok(true) => monitoring.scheduled_pass(schedule.replica()).await,
                    Ok(false) => {}
                    Err(err) => tracing::warn!(error = %err, "monitoring schedule unavailable"),
                }
            }
        })
    }

    /// One scheduled pass: evaluate every monitor, then prune.
    async fn scheduled_pass(&self, replica: &str) {
        let now = evaluation_time();
        match self.evaluate_all(now).await {
            Ok(monitors) => {
                if let Some(e) = &self.exporter {
                    e.metrics().set_last_evaluation(now);
                }
                tracing::debug!(monitors = monitors.len(), replica, "monitors evaluated");
            }
            Err(err) => {
                tracing::warn!(error = %err, reason = err.reason(), "monitor evaluation failed")
            }
        }
        match self.prune(now_ms()).await {
            Ok(s) if s != PruneStats::default() => {
                tracing::info!(
                    predictions = s.predictions,
                    labels = s.labels,
                    "monitoring data pruned"
                )
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, reason = err.reason(), "monitoring pruning failed")
            }
        }
    }

    /// Apply the retention settings once.
    pub async fn prune(&self, now: i64) -> StoreResult<PruneStats> {
        let cutoff = self.settings.retention_age_ms.map(|age| now.saturating_sub(age));
        self.store.prune(cutoff, self.settings.retention_rows).await
    }

    /// Answer a quality query from the window's rows.
    #[instrument(skip_all, fields(model = %q.model_name, window = %q.window))]
    pub async fn quality(&self, q: &QualityQuery) -> StoreResult<QualityReport> {
        let scope = q.scope();
        let (start, end) = q.window.bounds(q.end_time);
        let (predictions, labelled, mut metrics, evaluated) = if q.quality {
            let rows = self
                .store
                .window_rows(&scope, start, end, q.score.field.is_some())
                .await?;
            let labelled = rows.iter().filter(|r| r.actual.is_some()).count() as i64;
            let (metrics, evaluated) = window_metrics(&rows, q.task, &q.score);
            (rows.len() as i64, labelled, metrics, evaluated)
        } else {
            let (p, l) = self.store.window_counts(&scope, start, end).await?;
            (p, l, BTreeMap::new(), 0)
        };
        let late_labels = self.store.late_labels(&scope, start, end).await?;
        let drift = if q.drift {
            Some(self.drift(&scope, start, end).await?)
        } else {
            None
        };
        if let Some(max) = drift
            .as_ref()
            .and_then(|d| d.features.values().copied().reduce(f64::max))
        {
            metrics.insert(PSI, max);
        }
        Ok(QualityReport {
            model_name: q.model_name.clone(),
            model_version: q.model_version.clone(),
            window: q.window.label().to_owned(),
            task: q.task,
            start_time: start,
            end_time: end,
            predictions,
            labelled,
            unlabelled: predictions - labelled,
            late_labels,
            evaluated,
            metrics,
            drift,
        })
    }

    async fn drift(&self, scope: &Scope, start: i64, end: i64) -> StoreResult<DriftReport> {
        let Some(reference) = self.reference_for(scope).await? else {
            return Ok(DriftReport {
                reference: "none".to_owned(),
                reference_rows: 0,
                live_rows: 0,
                features: BTreeMap::new(),
            });
        };
        let inputs = self
            .store
            .newest_inputs(scope, start, end, MAX_DRIFT_ROWS)
            .await?;
        let mut live: HashMap<String, Vec<f64>> = HashMap::new();
        for text in &inputs {
            let Ok(payload) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            for (name, v) in numeric_features(&payload) {
                if reference.features.contains_key(&name) {
                    live.entry(name).or_default().push(v);
                }
            }
        }
        let features = reference
            .features
            .iter()
            .filter_map(|(name, bins)| Some((name.clone(), bins.psi(live.get(name)?)?)))
            .collect();
        Ok(DriftReport {
            reference: reference.source,
            reference_rows: reference.rows,
            live_rows: inputs.len() as i64,
            features,
        })
    }

    /// The uploaded reference, else the first `--monitoring-reference-size` predictions (stored
    /// once that many exist, so later retention does not move it).
    async fn reference_for(&self, scope: &Scope) -> StoreResult<Option<StoredReference>> {
        if let Some(r) = self
            .store
            .get_reference(&scope.model_name, scope.version_key())
            .await?
        {
            return Ok(Some(r));
        }
        let texts = self
            .store
            .first_inputs(scope, self.settings.reference_size)
            .await?;
        if texts.is_empty() {
            return Ok(None);
        }
        let payloads: Vec<Value> = texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect();
        let (features, rows) = reference_from_inputs(payloads.iter());
        let reference = StoredReference {
            model_name: scope.model_name.clone(),
            model_version: scope.version_key().to_owned(),
            source: "predictions".to_owned(),
            rows,
            features,
            creation_time: now_ms(),
        };
        if texts.len() >= self.settings.reference_size && !reference.features.is_empty() {
            self.store.put_reference(&reference, false).await?;
        }
        Ok(Some(reference))
    }

    fn exporter_update(&self, monitor: &Monitor, report: &QualityReport) {
        if let Some(e) = &self.exporter {
            e.update(monitor, report);
        }
    }

    /// Drop a monitor's exported series (deleted, or its identity changed).
    pub fn exporter_remove(&self, monitor_id: &str) {
        if let Some(e) = &self.exporter {
            e.remove(monitor_id);
        }
    }

    fn exporter_retain(&self, monitors: &[Monitor]) {
        if let Some(e) = &self.exporter {
            let ids: BTreeSet<&str> = monitors.iter().map(|m| m.monitor_id.as_str()).collect();
            e.retain(&ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(score: Option<f64>, outputs: Option<&str>, actual: Option<&str>) -> WindowRow {
        WindowRow {
            score,
            outputs: outputs.map(str::to_owned),
            actual: actual.map(str::to_owned),
            actual_number: actual.and_then(parse_number),
        }
    }

    #[test]
    fn positive_labels_compare_as_numbers_or_text() {
        let numeric = ScoreSpec::new(None, None, None);
        assert!(numeric.is_positive("1", Some(1.0)));
        assert!(numeric.is_positive("1.0", Some(1.0)));
        assert!(!numeric.is_positive("0", Some(0.0)));
        assert!(!numeric.is_positive("yes", None));
        let text = ScoreSpec::new(None, Some("yes"), Some(0.3));
        assert!(text.is_positive("yes", None));
        assert!(!text.is_positive("no", None) && !text.is_positive("1", Some(1.0)));
        assert_eq!(text.threshold, 0.3);
    }

    #[test]
    fn window_metrics_use_labelled_scored_rows() {
        let rows = [
            row(Some(0.9), None, Some("1")),
            row(Some(0.2), None, Some("0")),
            row(Some(0.7), None, None),      // unlabelled
            row(None, None, Some("1")),      // no score
            row(Some(0.6), None, Some("0")), // false positive
        ];
        let (m, n) = window_metrics(&rows, Task::Classification, &ScoreSpec::new(None, None, None));
        assert_eq!(n, 3);
        assert_eq!(m["accuracy"], 2.0 / 3.0);
        assert_eq!(m["precision"], 0.5);
        assert_eq!(m["recall"], 1.0);
        let (r, n) = window_metrics(&rows, Task::Regression, &ScoreSpec::new(None, None, None));
        assert_eq!(n, 3);
        assert!((r["mae"] - (0.1 + 0.2 + 0.6) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn score_field_reads_outputs() {
        let rows = [
            row(Some(0.1), Some(r#"{"p": [0.1, 0.9]}"#), Some("1")),
            row(Some(0.8), Some(r#"{"p": [0.8, 0.2]}"#), Some("0")),
        ];
        let spec = ScoreSpec::new(Some("/p/1".into()), None, None);
        let (m, _) = window_metrics(&rows, Task::Classification, &spec);
        assert_eq!(m["accuracy"], 1.0);
        let (m, _) = window_metrics(&rows, Task::Classification, &ScoreSpec::new(None, None, None));
        assert_eq!(m["accuracy"], 0.0);
    }

    #[test]
    fn references_bin_each_feature() {
        let payloads: Vec<Value> = (1..=10)
            .map(|i| serde_json::json!({"dataframe_records": [{"x": i, "y": 1}]}))
            .collect();
        let (bins, rows) = reference_from_inputs(payloads.iter());
        assert_eq!(rows, 10);
        assert_eq!(bins["x"].edges.len(), 9);
        assert_eq!(bins["y"].edges, vec![1.0]);
    }
}
