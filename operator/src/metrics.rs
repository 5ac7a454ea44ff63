//! The operator's own Prometheus metrics (served on `/metrics`, port 8080). Labels are bounded:
//! the controller name, an error *reason* from the error enums, a rollout phase or transition
//! reason, never object names.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

// Names as registered; the text format adds `_total` to counters (`mlkube_operator_reconcile_total`,
// `mlkube_operator_reconcile_errors_total`) and `_bucket`/`_sum`/`_count` to the histogram.
pub const RECONCILE_TOTAL: &str = "mlkube_operator_reconcile";
pub const RECONCILE_ERRORS: &str = "mlkube_operator_reconcile_errors";
pub const RECONCILE_DURATION: &str = "mlkube_operator_reconcile_duration_seconds";
/// ModelDeployments with `rollout.strategy: Canary`, by rollout phase (a gauge).
pub const CANARY_ROLLOUTS: &str = "mlkube_operator_canary_rollouts";
/// Canary transitions (`CanaryStarted`, `CanaryPromoted`, `CanaryRolledBack`, …), by reason;
/// the text format adds `_total`.
pub const CANARY_TRANSITIONS: &str = "mlkube_operator_canary_transitions";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Reconcile counters and timings, registered once per process.
#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Family<ControllerLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub canary_rollouts: Family<PhaseLabels, Gauge>,
    pub canary_transitions: Family<ReasonLabels, Counter>,
    /// The rollout phase of each canary ModelDeployment, by object key (the gauge counts them;
    /// the keys never become labels).
    phases: Mutex<HashMap<String, &'static str>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
            canary_rollouts: Family::default(),
            canary_transitions: Family::default(),
            phases: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            RECONCILE_TOTAL,
            "Reconciliations started",
            self.reconciles.clone(),
        );
        registry.register(
            RECONCILE_ERRORS,
            "Reconciliations that failed, by reason",
            self.errors.clone(),
        );
        registry.register_with_unit(
            "mlkube_operator_reconcile_duration",
            "Time one reconciliation took",
            prometheus_client::registry::Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            CANARY_ROLLOUTS,
            "ModelDeployments with a canary rollout strategy, by rollout phase",
            self.canary_rollouts.clone(),
        );
        registry.register(
            CANARY_TRANSITIONS,
            "Canary rollout transitions, by reason",
            self.canary_transitions.clone(),
        );
    }

    /// Record the rollout phase of object `key` (`None`: no canary strategy, or deleted).
    pub fn rollout_phase(&self, key: &str, phase: Option<&'static str>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        match phase {
            Some(p) => phases.insert(key.to_owned(), p),
            None => phases.remove(key),
        };
        for p in ["Stable", "Canary", "Paused", "RolledBack"] {
            let n = phases.values().filter(|v| **v == p).count();
            self.canary_rollouts
                .get_or_create(&PhaseLabels { phase: p })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Count a canary transition.
    pub fn canary_transition(&self, reason: &'static str) {
        self.canary_transitions
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Count a reconcile and time it until the guard drops.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&ControllerLabels { controller })
            .inc();
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }

    pub fn failed(&self, controller: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { controller, reason })
            .inc();
    }
}

/// Records the reconcile duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: &'static str,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}
