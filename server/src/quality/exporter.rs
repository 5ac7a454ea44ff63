//! Model-quality series on the server's `/metrics` (registered into `ServerMetrics`' registry).
//!
//! Every label value comes from a monitor — its model name, version (`""` for a monitor over all
//! versions), window, metric and name — never from logged data, so the number of series is bounded
//! by the number of monitors. After each evaluation the monitor's last results replace its
//! previous ones; series no monitor produces any more are removed. When several monitors produce
//! the same series, the oldest monitor's value is shown.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::QualityReport;
use super::monitors::{AlertState, Monitor, MonitorMetric};
use super::scores::PSI;
use super::webhook::Outcome;

/// Metric names (a public interface: dashboards and alert rules use them).
pub mod names {
    /// `{model_name, model_version, metric, window}`: the metric's value over the window.
    pub const QUALITY: &str = "mlflow_model_quality";
    /// `{model_name, model_version, window}`: predictions logged in the window.
    pub const PREDICTIONS: &str = "mlflow_model_quality_predictions";
    /// Predictions in the window with ground truth.
    pub const LABELLED: &str = "mlflow_model_quality_labelled";
    /// Predictions in the window still without ground truth.
    pub const UNLABELLED: &str = "mlflow_model_quality_unlabelled";
    /// Ground truth that arrived in the window for predictions made before it.
    pub const LATE_LABELS: &str = "mlflow_model_quality_late_labels";
    /// `{model_name, model_version, metric, window, monitor}`: 1 while the monitor is FIRING.
    pub const THRESHOLD_BREACHED: &str = "mlflow_model_quality_threshold_breached";
    /// `{outcome}`: webhook notifications by outcome (exposed with `_total`).
    pub const WEBHOOK_NOTIFICATIONS: &str = "mlkube_monitoring_webhook_notifications";
    /// Unix time of the last scheduled evaluation of all monitors.
    pub const LAST_EVALUATION: &str = "mlkube_monitoring_last_evaluation_timestamp_seconds";
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct QualityLabels {
    model_name: String,
    model_version: String,
    metric: String,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CountLabels {
    model_name: String,
    model_version: String,
    window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct BreachLabels {
    model_name: String,
    model_version: String,
    metric: String,
    window: String,
    monitor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The metric families (cheap to clone: handles to the same series).
#[derive(Clone)]
pub struct QualityMetrics {
    quality: Family<QualityLabels, Gauge<f64, AtomicU64>>,
    predictions: Family<CountLabels, Gauge>,
    labelled: Family<CountLabels, Gauge>,
    unlabelled: Family<CountLabels, Gauge>,
    late_labels: Family<CountLabels, Gauge>,
    breached: Family<BreachLabels, Gauge>,
    notifications: Family<OutcomeLabel, Counter>,
    last_evaluation: Gauge,
}

impl QualityMetrics {
    /// Register the families into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            quality: Family::default(),
            predictions: Family::default(),
            labelled: Family::default(),
            unlabelled: Family::default(),
            late_labels: Family::default(),
            breached: Family::default(),
            notifications: Family::default(),
            last_evaluation: Gauge::default(),
        };
        registry.register(
            names::QUALITY,
            "Model quality metric over a window, for each monitored model version",
            m.quality.clone(),
        );
        registry.register(
            names::PREDICTIONS,
            "Predictions logged in the window",
            m.predictions.clone(),
        );
        registry.register(
            names::LABELLED,
            "Predictions in the window that have ground truth",
            m.labelled.clone(),
        );
        registry.register(
            names::UNLABELLED,
            "Predictions in the window still without ground truth",
            m.unlabelled.clone(),
        );
        registry.register(
            names::LATE_LABELS,
            "Ground truth logged in the window for predictions made before the window",
            m.late_labels.clone(),
        );
        registry.register(
            names::THRESHOLD_BREACHED,
            "1 while the monitor's metric is past its threshold (the monitor is FIRING), else 0",
            m.breached.clone(),
        );
        registry.register(
            names::WEBHOOK_NOTIFICATIONS,
            "Monitor webhook notifications by outcome (delivered, failed, refused, dropped)",
            m.notifications.clone(),
        );
        registry.register(
            names::LAST_EVALUATION,
            "Unix time of the last scheduled evaluation of all monitors",
            m.last_evaluation.clone(),
        );
        for outcome in Outcome::ALL {
            // Create every outcome's series at 0, so rates work from the first scrape.
            m.notifications.get_or_create_owned(&OutcomeLabel {
                outcome: outcome.as_str(),
            });
        }
        m
    }

    pub fn count_notification(&self, outcome: Outcome) {
        self.notifications
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn set_last_evaluation(&self, unix_ms: i64) {
        self.last_evaluation.set(unix_ms / 1000);
    }
}

/// One monitor's last results, as exported.
#[derive(Debug, Clone)]
struct MonitorSeries {
    /// Oldest monitor first when series collide.
    order: (i64, String),
    counts: CountLabels,
    count_values: [i64; 4],
    metrics: Vec<(String, f64)>,
    breach: BreachLabels,
    breached: bool,
}

#[derive(Default)]
struct State {
    monitors: BTreeMap<String, MonitorSeries>,
    shown_quality: BTreeSet<QualityLabels>,
    shown_counts: BTreeSet<CountLabels>,
    shown_breached: BTreeSet<BreachLabels>,
}

/// The exported state of every monitor.
pub struct Exporter {
    metrics: QualityMetrics,
    state: Mutex<State>,
}

impl Exporter {
    pub fn new(metrics: QualityMetrics) -> Self {
        Self {
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    pub fn metrics(&self) -> &QualityMetrics {
        &self.metrics
    }

    fn with_state(&self, f: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
        self.render(&mut state);
    }

    /// Replace a monitor's series with the results of its latest evaluation.
    pub fn update(&self, monitor: &Monitor, report: &QualityReport) {
        let version = monitor.model_version.clone().unwrap_or_default();
        let mut metrics: Vec<(String, f64)> = match monitor.parsed_metric() {
            Some(MonitorMetric::Quality { .. }) => report
                .metrics
                .iter()
                .filter(|(name, _)| **name != PSI)
                .map(|(name, v)| ((*name).to_owned(), *v))
                .collect(),
            Some(MonitorMetric::Drift { .. }) => report
                .metrics
                .get(PSI)
                .map(|v| vec![(PSI.to_owned(), *v)])
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if let (Some(MonitorMetric::Drift { feature: Some(_) }), Some(value)) =
            (monitor.parsed_metric(), monitor.last_value)
        {
            metrics.push((monitor.metric.clone(), value));
        }
        let series = MonitorSeries {
            order: (monitor.creation_timestamp, monitor.monitor_id.clone()),
            counts: CountLabels {
                model_name: monitor.model_name.clone(),
                model_version: version.clone(),
                window: monitor.window.clone(),
            },
            count_values: [
                report.predictions,
                report.labelled,
                report.unlabelled,
                report.late_labels,
            ],
            metrics,
            breach: BreachLabels {
                model_name: monitor.model_name.clone(),
                model_version: version,
                metric: monitor.metric.clone(),
                window: monitor.window.clone(),
                monitor: monitor.name.clone(),
            },
            breached: monitor.state == AlertState::Firing,
        };
        self.with_state(|s| {
            s.monitors.insert(monitor.monitor_id.clone(), series);
        });
    }

    /// Forget a deleted or reconfigured monitor.
    pub fn remove(&self, monitor_id: &str) {
        self.with_state(|s| {
            s.monitors.remove(monitor_id);
        });
    }

    /// Keep only these monitors (after an evaluation of all of them).
    pub fn retain(&self, monitor_ids: &BTreeSet<&str>) {
        self.with_state(|s| s.monitors.retain(|id, _| monitor_ids.contains(id.as_str())));
    }

    fn render(&self, state: &mut State) {
        let mut ordered: Vec<&MonitorSeries> = state.monitors.values().collect();
        ordered.sort_by(|a, b| a.order.cmp(&b.order));
        let mut quality: BTreeMap<QualityLabels, f64> = BTreeMap::new();
        let mut counts: BTreeMap<CountLabels, [i64; 4]> = BTreeMap::new();
        let mut breached: BTreeMap<BreachLabels, bool> = BTreeMap::new();
        for series in ordered {
            for (metric, value) in &series.metrics {
                quality
                    .entry(QualityLabels {
                        model_name: series.counts.model_name.clone(),
                        model_version: series.counts.model_version.clone(),
                        metric: metric.clone(),
                        window: series.counts.window.clone(),
                    })
                    .or_insert(*value);
            }
            counts.entry(series.counts.clone()).or_insert(series.count_values);
            breached.entry(series.breach.clone()).or_insert(series.breached);
        }
        let m = &self.metrics;
        for gone in state.shown_quality.iter().filter(|l| !quality.contains_key(*l)) {
            m.quality.remove(gone);
        }
        for gone in state.shown_counts.iter().filter(|l| !counts.contains_key(*l)) {
            for family in [&m.predictions, &m.labelled, &m.unlabelled, &m.late_labels] {
                family.remove(gone);
            }
        }
        for gone in state.shown_breached.iter().filter(|l| !breached.contains_key(*l)) {
            m.breached.remove(gone);
        }
        for (labels, value) in &quality {
            m.quality.get_or_create(labels).set(*value);
        }
        for (labels, values) in &counts {
            for (family, value) in [&m.predictions, &m.labelled, &m.unlabelled, &m.late_labels]
                .into_iter()
                .zip(values)
            {
                family.get_or_create(labels).set(*value);
            }
        }
        for (labels, on) in &breached {
            m.breached.get_or_create(labels).set(i64::from(*on));
        }
        state.shown_quality = quality.into_keys().collect();
        state.shown_counts = counts.into_keys().collect();
        state.shown_breached = breached.into_keys().collect();
    }
}
