//! Canary rollouts of a new model version (`spec.rollout.strategy: Canary`).
//!
//! Everything here but [`measure`] is pure: [`CanaryParams::from_spec`] resolves the spec's
//! defaults, [`start`] decides what a registry answer does to the rollout (a new version starts
//! a canary, a failed one stays rolled back), [`analysis::analyze`] judges a canary on a
//! [`analysis::Snapshot`], and [`advance`] turns its decision into the next status. The
//! controller reads the snapshot ([`measure`]) and writes the status.

pub mod analysis;
pub mod measure;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::model_deployment::{QualityMetric, ResolvedModel};
use crate::crd::rollout::{CanaryFailureAction, RolloutPhase, RolloutStatus};

pub use analysis::{Next, QualityReading, Snapshot, Step, analyze};

/// How many failed versions the status keeps.
pub const MAX_FAILED_VERSIONS: usize = 10;

/// Milliseconds from `from` to `to` (negative when `to` is earlier).
pub fn ms_between(from: &Time, to: &Time) -> i64 {
    to.0.as_millisecond() - from.0.as_millisecond()
}

/// One canary step, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct StepParams {
    pub weight: i32,
    pub hold_ms: i64,
}

/// The quality gate, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityGateParams {
    pub metric: QualityMetric,
    pub window: String,
    pub window_ms: i64,
    pub label_delay: String,
    pub label_delay_ms: i64,
    pub min_labelled: i64,
    pub max_drop: f64,
    /// Accuracy-like metrics; error metrics (`log_loss`, `mse`, `rmse`, `mae`) get worse upwards.
    pub higher_is_better: bool,
    /// The quality API's `task` for the metric.
    pub task: &'static str,
    pub score_field: Option<String>,
    pub positive_label: Option<String>,
}

/// A canary with every default resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryParams {
    pub steps: Vec<StepParams>,
    pub interval: String,
    pub interval_ms: i64,
    pub failure_limit: i32,
    pub min_requests: f64,
    pub max_error_rate: Option<f64>,
    pub max_latency_p99_ratio: Option<f64>,
    pub quality: Option<QualityGateParams>,
    pub on_failure: CanaryFailureAction,
    pub set_alias: Option<String>,
}

/// What happened to a rollout in one reconcile, for its Event.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// A new version started as a canary at the first step's weight.
    Started,
    /// The model reference went back to the stable version: the canary was dropped.
    Aborted,
    /// The canary moved to a later step.
    Advanced,
    /// The canary became the stable version.
    Promoted,
    /// The canary failed and was removed.
    RolledBack,
    /// The canary failed and was kept at its weight.
    Paused,
}

impl Transition {
    /// The Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Started => "CanaryStarted",
            Self::Aborted => "CanaryAborted",
            Self::Advanced => "CanaryAdvanced",
            Self::Promoted => "CanaryPromoted",
            Self::RolledBack => "CanaryRolledBack",
            Self::Paused => "CanaryPaused",
        }
    }

    pub fn warning(&self) -> bool {
        matches!(self, Self::RolledBack | Self::Paused)
    }
}

/// The rollout after a registry answer, before any analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    /// The version the stable pods serve.
    pub stable: ResolvedModel,
    pub status: RolloutStatus,
    pub transition: Option<Transition>,
}

/// What a registry answer does to a canary rollout. `served` is the version the stable pods run
/// (`status.resolvedModel`); `target` the registry's answer now, `None` while the registry
/// cannot be asked (the rollout then carries on as it was).
pub fn start(
    params: &CanaryParams,
    previous: Option<&RolloutStatus>,
    served: Option<&ResolvedModel>,
    target: Option<&ResolvedModel>,
    now: &Time,
) -> Option<Started> {
    let prev = previous.cloned().unwrap_or_default();
    // Nothing served yet: the first version is the stable one, no canary.
    let stable = served.or(target).cloned()?;
    let stable_status = |prev: RolloutStatus| RolloutStatus {
        phase: RolloutPhase::Stable,
        stable_version: Some(stable.version.clone()),
        canary_version: None,
        canary_model: None,
        current_weight: 0,
        current_step: None,
        canary_started_at: None,
        step_started_at: None,
        failed_analyses: 0,
        last_verdict: prev.last_verdict,
        failed_versions: prev.failed_versions,
    };
    let in_flight = matches!(prev.phase, RolloutPhase::Canary | RolloutPhase::Paused);
    let Some(target) = target else {
        return Some(Started {
            status: if in_flight || prev.phase == RolloutPhase::RolledBack {
                RolloutStatus {
                    stable_version: Some(stable.version.clone()),
                    ..prev
                }
            } else {
                stable_status(prev)
            },
            stable,
            transition: None,
        });
    };
    if target.version == stable.version {
        let transition = in_flight.then_some(Transition::Aborted);
        return Some(Started {
            status: stable_status(prev),
            stable,
            transition,
        });
    }
    let same_canary = prev.canary_version.as_deref() == Some(target.version.as_str());
    if same_canary && (in_flight || prev.phase == RolloutPhase::RolledBack) {
        // Carry on (or stay rolled back until the reference resolves to another version).
        return Some(Started {
            status: RolloutStatus {
                stable_version: Some(stable.version.clone()),
                ..prev
            },
            stable,
            transition: None,
        });
    }
    let first = params.steps.first().map_or(0, |s| s.weight);
    Some(Started {
        status: RolloutStatus {
            phase: RolloutPhase::Canary,
            stable_version: Some(stable.version.clone()),
            canary_version: Some(target.version.clone()),
            canary_model: Some(target.clone()),
            current_weight: first,
            current_step: Some(0),
            canary_started_at: Some(now.clone()),
            step_started_at: Some(now.clone()),
            failed_analyses: 0,
            last_verdict: None,
            failed_versions: prev.failed_versions,
        },
        stable,
        transition: Some(Transition::Started),
    })
}

/// The status after the analysis decided `next`, and what changed. On `Promote` the stable
/// version becomes the canary's (the caller moves `status.resolvedModel`).
pub fn advance(state: &RolloutStatus, next: &Next, now: &Time) -> (RolloutStatus, Option<Transition>) {
    use crate::crd::rollout::VerdictResult;
    let mut s = state.clone();
    s.last_verdict = Some(next.verdict.clone());
    s.failed_analyses = match next.verdict.result {
        VerdictResult::Pass => 0,
        VerdictResult::Fail => state.failed_analyses.saturating_add(1),
        VerdictResult::Inconclusive => state.failed_analyses,
    };
    let transition = match &next.step {
        Step::Hold | Step::CountFailure => None,
        Step::Advance { step, weight } => {
            s.current_step = i32::try_from(*step).ok();
            s.current_weight = *weight;
            s.step_started_at = Some(now.clone());
            Some(Transition::Advanced)
        }
        Step::Promote => {
            s.phase = RolloutPhase::Stable;
            s.stable_version = state.canary_version.clone();
            s.canary_version = None;
            s.canary_model = None;
            s.current_weight = 0;
            s.current_step = None;
            s.canary_started_at = None;
            s.step_started_at = None;
            s.failed_analyses = 0;
            Some(Transition::Promoted)
        }
        Step::Rollback => {
            s.phase = RolloutPhase::RolledBack;
            s.current_weight = 0;
            s.current_step = None;
            s.step_started_at = None;
            if let Some(v) = &state.canary_version {
                s.failed_versions.retain(|f| f != v);
                s.failed_versions.push(v.clone());
                let extra = s.failed_versions.len().saturating_sub(MAX_FAILED_VERSIONS);
                s.failed_versions.drain(..extra);
            }
            Some(Transition::RolledBack)
        }
        Step::Pause => {
            s.phase = RolloutPhase::Paused;
            Some(Transition::Paused)
        }
    };
    (s, transition)
}

/// The queries of one analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotQuery {
    /// PromQL: canary requests and errors in the interval, canary and stable p99 latency.
    pub canary_requests: String,
    pub canary_errors: String,
    pub canary_p99: String,
    pub stable_p99: String,
    /// The quality API requests (`None` without a quality gate).
    pub quality: Option<QualityQuery>,
}

/// A quality API request for both versions over the same window.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityQuery {
    /// The metric's name in the answer's `metrics`.
    pub metric: String,
    pub model_name: String,
    pub canary_version: String,
    pub stable_version: String,
    pub window: String,
    /// End of the window, ms since the epoch: `labelDelay` before now.
    pub end_time_ms: i64,
    pub task: &'static str,
    pub score_field: Option<String>,
    pub positive_label: Option<String>,
}

impl QualityQuery {
    /// The `quality/get` path and query for one version.
    pub fn path(&self, version: &str) -> String {
        let enc = |v: &str| {
            percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut path = format!(
            "/api/2.0/mlkube/quality/get?model_name={}&model_version={}&window={}&end_time={}&task={}",
            enc(&self.model_name),
            enc(version),
            enc(&self.window),
            self.end_time_ms,
            self.task
        );
        if let Some(f) = &self.score_field {
            path.push_str(&format!("&score_field={}", enc(f)));
        }
        if let Some(l) = &self.positive_label {
            path.push_str(&format!("&positive_label={}", enc(l)));
        }
        path
    }
}

fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The queries that judge canary `canary` against stable `stable` of model `model_name` whose
/// pods run in `namespace`.
pub fn snapshot_query(
    params: &CanaryParams,
    namespace: &str,
    model_name: &str,
    stable: &str,
    canary: &str,
    now: &Time,
) -> SnapshotQuery {
    let selector = |version: &str| {
        format!(
            "namespace=\"{}\", model_name=\"{}\", model_version=\"{}\"",
            label_value(namespace),
            label_value(model_name),
            label_value(version)
        )
    };
    let range = format!("{}s", (params.interval_ms / 1000).max(1));
    let p99 = |version: &str| {
        format!(
            "histogram_quantile(0.99, sum by (le) (rate(mlflow_inference_latency_seconds_bucket{{{}}}[{range}])))",
            selector(version)
        )
    };
    SnapshotQuery {
        canary_requests: format!(
            "sum(increase(mlflow_predictions_total{{{}}}[{range}]))",
            selector(canary)
        ),
        canary_errors: format!(
            "sum(increase(mlflow_prediction_errors_total{{{}}}[{range}]))",
            selector(canary)
        ),
        canary_p99: p99(canary),
        stable_p99: p99(stable),
        quality: params.quality.as_ref().map(|q| QualityQuery {
            metric: q.metric.as_str().to_owned(),
            model_name: model_name.to_owned(),
            canary_version: canary.to_owned(),
            stable_version: stable.to_owned(),
            window: q.window.clone(),
            end_time_ms: now.0.as_millisecond() - q.label_delay_ms,
            task: q.task,
            score_field: q.score_field.clone(),
            positive_label: q.positive_label.clone(),
        }),
    }
}

/// Pods of the canary for `weight` percent when the one Service spreads requests over all pods
/// (no Gateway API): `stable` pods stay as they are, so the canary gets about
/// `canary / (stable + canary)` of the requests, at least one pod and at most as many as stable.
pub fn replica_ratio(stable: i32, weight: i32) -> i32 {
    let stable = stable.max(1);
    if weight >= 100 {
        return stable;
    }
    let w = f64::from(weight.max(0));
    #[allow(clippy::cast_possible_truncation)]
    let canary = (f64::from(stable) * w / (100.0 - w)).round() as i32;
    canary.clamp(1, stable)
}

/// Pods of the canary for `weight` percent behind a weighted HTTPRoute: enough for its share.
pub fn replicas_for_share(stable: i32, weight: i32) -> i32 {
    let stable = stable.max(1);
    ((stable * weight.clamp(0, 100) + 99) / 100).clamp(1, stable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::rollout::{
        CanaryAnalysis, CanarySpec, CanaryStep, RolloutSpec, RolloutStrategy, Verdict, VerdictResult,
    };

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn model(version: &str) -> ResolvedModel {
        ResolvedModel {
            reference: "models:/churn@champion".into(),
            name: "churn".into(),
            version: version.into(),
            run_id: None,
            source: None,
        }
    }

    fn canary(steps: &[(i32, &str)]) -> RolloutSpec {
        RolloutSpec {
            strategy: RolloutStrategy::Canary,
            canary: Some(CanarySpec {
                steps: steps
                    .iter()
                    .map(|(w, h)| CanaryStep {
                        weight: *w,
                        hold: (*h).into(),
                    })
                    .collect(),
                analysis: CanaryAnalysis::default(),
                on_success: None,
                on_failure: CanaryFailureAction::Rollback,
            }),
        }
    }

    #[test]
    fn params_resolve_and_refuse_what_the_schema_refuses() {
        let p = CanaryParams::from_spec(Some(&canary(&[(10, "5m"), (50, "1h")])))
            .unwrap()
            .unwrap();
        assert_eq!(p.steps[1].hold_ms, 3_600_000);
        assert_eq!(p.interval_ms, 60_000);
        assert_eq!(p.min_requests, 100.0);
        assert!(CanaryParams::from_spec(None).unwrap().is_none());
        for bad in [
            canary(&[(50, "5m"), (10, "5m")]),
            canary(&[(101, "5m")]),
            canary(&[(0, "5m")]),
            canary(&[]),
            canary(&[(10, "soon")]),
        ] {
            assert!(CanaryParams::from_spec(Some(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn alias_moves_start_canaries_and_failed_versions_stay_out() {
        let p = CanaryParams::from_spec(Some(&canary(&[(10, "5m"), (50, "5m")])))
            .unwrap()
            .unwrap();
        let now = t("2026-03-01T12:00:00Z");
        // First deployment: no canary.
        let s = start(&p, None, None, Some(&model("3")), &now).unwrap();
        assert_eq!(s.status.phase, RolloutPhase::Stable);
        assert_eq!(s.stable.version, "3");
        // 3 → 4: a canary at the first step.
        let s = start(&p, Some(&s.status), Some(&model("3")), Some(&model("4")), &now).unwrap();
        assert_eq!(s.transition, Some(Transition::Started));
        assert_eq!(s.status.canary_version.as_deref(), Some("4"));
        assert_eq!(s.status.current_weight, 10);
        assert_eq!(s.stable.version, "3");
        // The registry is down: the canary carries on.
        let same = start(&p, Some(&s.status), Some(&model("3")), None, &now).unwrap();
        assert_eq!(same.status, s.status);
        // Rolled back: 4 is not tried again while the alias points at it...
        let next = Next {
            step: Step::Rollback,
            verdict: Verdict {
                result: VerdictResult::Fail,
                message: "FAIL".into(),
                time: now.clone(),
                measurements: Default::default(),
            },
        };
        let (rolled, transition) = advance(&s.status, &next, &now);
        assert_eq!(transition, Some(Transition::RolledBack));
        assert_eq!(rolled.failed_versions, vec!["4".to_owned()]);
        let again = start(&p, Some(&rolled), Some(&model("3")), Some(&model("4")), &now).unwrap();
        assert_eq!(again.status.phase, RolloutPhase::RolledBack);
        assert_eq!(again.transition, None);
        // ...and is once the alias moves on to 5.
        let five = start(&p, Some(&rolled), Some(&model("3")), Some(&model("5")), &now).unwrap();
        assert_eq!(five.transition, Some(Transition::Started));
        assert_eq!(five.status.failed_versions, vec!["4".to_owned()]);
        // The alias back on the stable version drops a canary in flight.
        let back = start(&p, Some(&five.status), Some(&model("3")), Some(&model("3")), &now).unwrap();
        assert_eq!(back.transition, Some(Transition::Aborted));
        assert_eq!(back.status.phase, RolloutPhase::Stable);
    }

    #[test]
    fn queries_read_both_versions_over_the_same_window_ending_label_delay_ago() {
        let mut spec = canary(&[(10, "5m")]);
        if let Some(c) = spec.canary.as_mut() {
            c.analysis.quality = Some(crate::crd::rollout::CanaryQualityGate {
                metric: QualityMetric::Accuracy,
                window: "1h".into(),
                label_delay: "30m".into(),
                min_labelled: 10,
                max_drop: 0.02,
                score_field: None,
                positive_label: None,
            });
        }
        let p = CanaryParams::from_spec(Some(&spec)).unwrap().unwrap();
        let now = t("2026-03-01T12:00:00Z");
        let q = snapshot_query(&p, "ml", "churn", "3", "4", &now);
        assert_eq!(
            q.canary_requests,
            "sum(increase(mlflow_predictions_total{namespace=\"ml\", model_name=\"churn\", model_version=\"4\"}[60s]))"
        );
        assert!(q.stable_p99.contains("model_version=\"3\""), "{}", q.stable_p99);
        let quality = q.quality.unwrap();
        assert_eq!(quality.end_time_ms, now.0.as_millisecond() - 1_800_000);
        assert_eq!(
            quality.path("4"),
            format!(
                "/api/2.0/mlkube/quality/get?model_name=churn&model_version=4&window=1h&end_time={}&task=classification",
                quality.end_time_ms
            )
        );
    }

    #[test]
    fn traffic_by_replicas() {
        assert_eq!(replica_ratio(4, 10), 1);
        assert_eq!(replica_ratio(4, 50), 4);
        assert_eq!(replica_ratio(3, 25), 1);
        assert_eq!(replica_ratio(9, 25), 3);
        assert_eq!(replica_ratio(2, 90), 2);
        assert_eq!(replicas_for_share(4, 10), 1);
        assert_eq!(replicas_for_share(10, 30), 3);
    }
}
