//! The canary analysis: a pure function of the canary's parameters, its rollout status, a
//! snapshot of measurements and the time, to the next action. Missing data, NaN and too few
//! samples are *inconclusive*: the canary holds where it is, and is never promoted on them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{CanaryParams, QualityGateParams, ms_between};
use crate::crd::rollout::{CanaryFailureAction, Measurements, RolloutStatus, Verdict, VerdictResult};

/// One version's quality over the window, as the tracking server's quality API answers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QualityReading {
    /// The metric; `None` when the server could not compute it.
    pub value: Option<f64>,
    /// Labelled predictions with a usable score (the API's `evaluated`).
    pub labelled: i64,
}

/// What one analysis reads: serving numbers from Prometheus, quality from the tracking server.
/// `None` is a missing series; an error stands for every number of its source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Canary requests in the interval (`mlflow_predictions_total`).
    pub canary_requests: Option<f64>,
    /// Failed canary requests in the interval (`mlflow_prediction_errors_total`).
    pub canary_errors: Option<f64>,
    pub canary_p99: Option<f64>,
    pub stable_p99: Option<f64>,
    /// Why Prometheus could not be read.
    pub prometheus_error: Option<String>,
    pub canary_quality: Option<QualityReading>,
    pub stable_quality: Option<QualityReading>,
    /// Why the quality API could not be read.
    pub quality_error: Option<String>,
}

/// What the rollout does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Stay at the current step (inconclusive, or passing while the step's hold lasts).
    Hold,
    /// A failed analysis below the failure limit: counted, the canary stays.
    CountFailure,
    /// Go to step `step` with `weight` percent.
    Advance { step: usize, weight: i32 },
    /// The last step passed: the canary becomes the stable version.
    Promote,
    /// Failed `failureLimit` times: remove the canary.
    Rollback,
    /// Failed `failureLimit` times with `onFailure: Pause`: keep it, stop judging.
    Pause,
}

impl Step {
    /// The action's name, as `canary-analysis` prints it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Hold => "Hold",
            Self::CountFailure => "CountFailure",
            Self::Advance { .. } => "Advance",
            Self::Promote => "Promote",
            Self::Rollback => "Rollback",
            Self::Pause => "Pause",
        }
    }
}

/// The next action and the verdict behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Next {
    pub step: Step,
    pub verdict: Verdict,
}

/// Whether an analysis is due: `interval` after the last one (or after the step started).
pub fn due(params: &CanaryParams, state: &RolloutStatus, now: &Time) -> bool {
    let last = state
        .last_verdict
        .as_ref()
        .map(|v| &v.time)
        .or(state.step_started_at.as_ref());
    match last {
        None => true,
        Some(last) => ms_between(last, now) >= params.interval_ms,
    }
}

/// Milliseconds until the next analysis is due (0 when due now).
pub fn until_due(params: &CanaryParams, state: &RolloutStatus, now: &Time) -> i64 {
    let last = state
        .last_verdict
        .as_ref()
        .map(|v| &v.time)
        .or(state.step_started_at.as_ref());
    last.map_or(0, |last| (params.interval_ms - ms_between(last, now)).max(0))
}

enum Gate {
    Pass(String),
    Fail(String),
    Inconclusive(String),
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn percent(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn seconds(x: f64) -> String {
    format!("{:.3}s", x)
}

fn serving_gates(params: &CanaryParams, s: &Snapshot, gates: &mut Vec<Gate>) {
    if let Some(err) = &s.prometheus_error {
        gates.push(Gate::Inconclusive(format!("serving metrics unavailable: {err}")));
        return;
    }
    let Some(requests) = finite(s.canary_requests) else {
        gates.push(Gate::Inconclusive(
            "no canary request series in Prometheus yet".to_owned(),
        ));
        return;
    };
    if requests < params.min_requests {
        gates.push(Gate::Inconclusive(format!(
            "{requests:.0} canary requests in {}, fewer than minRequests {:.0}",
            params.interval, params.min_requests
        )));
        return;
    }
    if let Some(max) = params.max_error_rate {
        match finite(s.canary_errors) {
            None => gates.push(Gate::Inconclusive(
                "no canary error series in Prometheus".to_owned(),
            )),
            Some(errors) => {
                let rate = errors / requests;
                let text = format!(
                    "error rate {} ({errors:.0} of {requests:.0}), maxErrorRate {}",
                    percent(rate),
                    percent(max)
                );
                gates.push(if rate > max {
                    Gate::Fail(text)
                } else {
                    Gate::Pass(text)
                });
            }
        }
    }
    if let Some(ratio) = params.max_latency_p99_ratio {
        match (finite(s.canary_p99), finite(s.stable_p99)) {
            (Some(canary), Some(stable)) => {
                let text = format!(
                    "p99 latency {} vs stable {} (at most {ratio}x)",
                    seconds(canary),
                    seconds(stable)
                );
                gates.push(if canary > stable * ratio {
                    Gate::Fail(text)
                } else {
                    Gate::Pass(text)
                });
            }
            (canary, _) => gates.push(Gate::Inconclusive(format!(
                "no p99 latency for the {} version",
                if canary.is_none() { "canary" } else { "stable" }
            ))),
        }
    }
    if params.max_error_rate.is_none() && params.max_latency_p99_ratio.is_none() {
        gates.push(Gate::Pass(format!("{requests:.0} canary requests")));
    }
}

fn quality_gate(
    q: &QualityGateParams,
    state: &RolloutStatus,
    s: &Snapshot,
    now: &Time,
    gates: &mut Vec<Gate>,
) {
    let metric = q.metric.as_str();
    // The window ends labelDelay ago: the canary's predictions must be older than that.
    if let Some(started) = &state.canary_started_at {
        let age = ms_between(started, now);
        if age <= q.label_delay_ms {
            gates.push(Gate::Inconclusive(format!(
                "{metric}: ground truth for the canary's predictions is not due yet (labelDelay {})",
                q.label_delay
            )));
            return;
        }
    }
    if let Some(err) = &s.quality_error {
        gates.push(Gate::Inconclusive(format!(
            "{metric}: quality unavailable: {err}"
        )));
        return;
    }
    let reading = |r: &Option<QualityReading>| {
        r.as_ref()
            .map(|r| (finite(r.value), r.labelled))
            .unwrap_or((None, 0))
    };
    let (canary, canary_n) = reading(&s.canary_quality);
    let (stable, stable_n) = reading(&s.stable_quality);
    if canary_n < q.min_labelled || stable_n < q.min_labelled {
        gates.push(Gate::Inconclusive(format!(
            "{metric}: {canary_n} canary and {stable_n} stable labelled predictions in {}, fewer than minLabelled {}",
            q.window, q.min_labelled
        )));
        return;
    }
    let (Some(canary), Some(stable)) = (canary, stable) else {
        gates.push(Gate::Inconclusive(format!(
            "{metric} could not be computed for both versions"
        )));
        return;
    };
    let drop = if q.higher_is_better {
        stable - canary
    } else {
        canary - stable
    };
    let text = format!(
        "{metric} {canary:.4} vs stable {stable:.4} over {} ({canary_n}/{stable_n} labelled), maxDrop {}",
        q.window, q.max_drop
    );
    gates.push(if drop > q.max_drop {
        Gate::Fail(text)
    } else {
        Gate::Pass(text)
    });
}

/// The measurements of a snapshot, as the status records them (non-finite numbers left out).
pub fn measurements(s: &Snapshot) -> Measurements {
    let requests = finite(s.canary_requests);
    Measurements {
        canary_requests: requests,
        canary_error_rate: match (requests, finite(s.canary_errors)) {
            (Some(r), Some(e)) if r > 0.0 => Some(e / r),
            _ => None,
        },
        canary_latency_p99: finite(s.canary_p99),
        stable_latency_p99: finite(s.stable_p99),
        canary_quality: s.canary_quality.as_ref().and_then(|q| finite(q.value)),
        stable_quality: s.stable_quality.as_ref().and_then(|q| finite(q.value)),
        canary_labelled: s.canary_quality.as_ref().map(|q| q.labelled),
        stable_labelled: s.stable_quality.as_ref().map(|q| q.labelled),
    }
}

/// Judge the canary on `snapshot` and decide the next action.
pub fn analyze(params: &CanaryParams, state: &RolloutStatus, snapshot: &Snapshot, now: &Time) -> Next {
    let mut gates = Vec::new();
    serving_gates(params, snapshot, &mut gates);
    if let Some(q) = &params.quality {
        quality_gate(q, state, snapshot, now, &mut gates);
    }
    let failed = gates.iter().any(|g| matches!(g, Gate::Fail(_)));
    let inconclusive = gates.iter().any(|g| matches!(g, Gate::Inconclusive(_)));
    let result = if failed {
        VerdictResult::Fail
    } else if inconclusive {
        VerdictResult::Inconclusive
    } else {
        VerdictResult::Pass
    };
    let message = gates
        .iter()
        .map(|g| match g {
            Gate::Pass(t) => format!("pass: {t}"),
            Gate::Fail(t) => format!("FAIL: {t}"),
            Gate::Inconclusive(t) => format!("inconclusive: {t}"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let verdict = Verdict {
        result,
        message,
        time: now.clone(),
        measurements: measurements(snapshot),
    };
    let step = match result {
        VerdictResult::Fail => {
            if state.failed_analyses.saturating_add(1) >= params.failure_limit {
                match params.on_failure {
                    CanaryFailureAction::Rollback => Step::Rollback,
                    CanaryFailureAction::Pause => Step::Pause,
                }
            } else {
                Step::CountFailure
            }
        }
        VerdictResult::Inconclusive => Step::Hold,
        VerdictResult::Pass => {
            let current = usize::try_from(state.current_step.unwrap_or(0)).unwrap_or(0);
            let held = state
                .step_started_at
                .as_ref()
                .map_or(0, |started| ms_between(started, now));
            match params.steps.get(current) {
                Some(s) if held < s.hold_ms => Step::Hold,
                _ => match params.steps.get(current + 1) {
                    Some(next) => Step::Advance {
                        step: current + 1,
                        weight: next.weight,
                    },
                    None => Step::Promote,
                },
            }
        }
    };
    Next { step, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::model_deployment::QualityMetric;
    use crate::crd::rollout::RolloutPhase;
    use crate::rollout::StepParams;

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    const START: &str = "2026-03-01T12:00:00Z";

    fn params() -> CanaryParams {
        CanaryParams {
            steps: vec![
                StepParams {
                    weight: 10,
                    hold_ms: 600_000,
                },
                StepParams {
                    weight: 50,
                    hold_ms: 600_000,
                },
            ],
            interval: "1m".into(),
            interval_ms: 60_000,
            failure_limit: 2,
            min_requests: 100.0,
            max_error_rate: Some(0.01),
            max_latency_p99_ratio: Some(1.2),
            quality: Some(QualityGateParams {
                metric: QualityMetric::Accuracy,
                window: "1h".into(),
                window_ms: 3_600_000,
                label_delay: "30m".into(),
                label_delay_ms: 1_800_000,
                min_labelled: 50,
                max_drop: 0.02,
                higher_is_better: true,
                task: "classification",
                score_field: None,
                positive_label: None,
            }),
            on_failure: CanaryFailureAction::Rollback,
            set_alias: None,
        }
    }

    fn state(step: i32, step_started: &str, failures: i32) -> RolloutStatus {
        RolloutStatus {
            phase: RolloutPhase::Canary,
            stable_version: Some("3".into()),
            canary_version: Some("4".into()),
            current_weight: [10, 50][usize::try_from(step).unwrap()],
            current_step: Some(step),
            canary_started_at: Some(t(START)),
            step_started_at: Some(t(step_started)),
            failed_analyses: failures,
            ..Default::default()
        }
    }

    fn reading(value: f64, labelled: i64) -> Option<QualityReading> {
        Some(QualityReading {
            value: Some(value),
            labelled,
        })
    }

    /// Healthy numbers for both versions.
    fn healthy() -> Snapshot {
        Snapshot {
            canary_requests: Some(1000.0),
            canary_errors: Some(2.0),
            canary_p99: Some(0.11),
            stable_p99: Some(0.10),
            prometheus_error: None,
            canary_quality: reading(0.90, 200),
            stable_quality: reading(0.91, 400),
            quality_error: None,
        }
    }

    fn with(f: impl Fn(&mut Snapshot)) -> Snapshot {
        let mut s = healthy();
        f(&mut s);
        s
    }

    #[test]
    fn the_analysis_table() {
        // (case, params, state, snapshot, now, expected step, expected verdict)
        let quality_off = CanaryParams {
            quality: None,
            ..params()
        };
        let pause = CanaryParams {
            on_failure: CanaryFailureAction::Pause,
            ..params()
        };
        let late = "2026-03-01T13:00:00Z"; // an hour in: labels for the canary are due
        let cases: Vec<(
            &str,
            CanaryParams,
            RolloutStatus,
            Snapshot,
            &str,
            Step,
            VerdictResult,
        )> = vec![
            (
                "healthy, step held long enough: advance to 50%",
                params(),
                state(0, START, 0),
                healthy(),
                late,
                Step::Advance { step: 1, weight: 50 },
                VerdictResult::Pass,
            ),
            (
                "healthy on the last step: promote",
                params(),
                state(1, "2026-03-01T12:40:00Z", 0),
                healthy(),
                late,
                Step::Promote,
                VerdictResult::Pass,
            ),
            (
                "healthy but the step's hold is not over: hold",
                params(),
                state(1, "2026-03-01T12:55:00Z", 0),
                healthy(),
                late,
                Step::Hold,
                VerdictResult::Pass,
            ),
            (
                "error-rate breach, first failure of two: counted",
                params(),
                state(0, START, 0),
                with(|s| s.canary_errors = Some(50.0)),
                late,
                Step::CountFailure,
                VerdictResult::Fail,
            ),
            (
                "error-rate breach reaching the failure limit: roll back",
                params(),
                state(0, START, 1),
                with(|s| s.canary_errors = Some(50.0)),
                late,
                Step::Rollback,
                VerdictResult::Fail,
            ),
            (
                "failure limit with onFailure Pause: pause",
                pause,
                state(0, START, 1),
                with(|s| s.canary_errors = Some(50.0)),
                late,
                Step::Pause,
                VerdictResult::Fail,
            ),
            (
                "p99 latency breach against stable",
                params(),
                state(0, START, 1),
                with(|s| s.canary_p99 = Some(0.5)),
                late,
                Step::Rollback,
                VerdictResult::Fail,
            ),
            (
                "worse quality with healthy latency and errors: fail",
                params(),
                state(0, START, 1),
                with(|s| s.canary_quality = reading(0.80, 200)),
                late,
                Step::Rollback,
                VerdictResult::Fail,
            ),
            (
                "a fail beats an inconclusive gate",
                params(),
                state(0, START, 1),
                with(|s| {
                    s.canary_errors = Some(50.0);
                    s.quality_error = Some("down".into());
                }),
                late,
                Step::Rollback,
                VerdictResult::Fail,
            ),
            (
                "too few requests: inconclusive, hold",
                params(),
                state(1, "2026-03-01T12:00:00Z", 0),
                with(|s| s.canary_requests = Some(99.0)),
                late,
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "missing request series: inconclusive even on the last step",
                params(),
                state(1, "2026-03-01T12:00:00Z", 0),
                with(|s| s.canary_requests = None),
                late,
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "NaN p99 (no latency samples): inconclusive",
                params(),
                state(1, "2026-03-01T12:00:00Z", 0),
                with(|s| s.canary_p99 = Some(f64::NAN)),
                late,
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "missing stable p99 series: inconclusive",
                params(),
                state(1, "2026-03-01T12:00:00Z", 0),
                with(|s| s.stable_p99 = None),
                late,
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "NaN error counter: inconclusive",
                params(),
                state(1, "2026-03-01T12:00:00Z", 0),
                with(|s| s.canary_errors = Some(f64::NAN)),
                late,
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "Prometheus unreachable: inconclusive, never promote",
                params(),
                state(1, "2026-03-01T12:00:00Z", 1),
                with(|s| {
                    s.prometheus_error = Some("connection refused".into());
                    s.canary_requests = None;
                }),
                late,
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "too few labelled predictions: inconclusive",
                params(),
                state(1, "2026-03-01T12:00:00Z", 0),
                with(|s| s.canary_quality = reading(0.5, 49)),
                late,
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "NaN quality: inconclusive",
                params(),
                state(1, "2026-03-01T12:00:00Z", 0),
                with(|s| s.stable_quality = reading(f64::NAN, 400)),
                late,
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "missing quality reading: inconclusive",
                params(),
                state(1, "2026-03-01T12:00:00Z", 0),
                with(|s| s.canary_quality = None),
                late,
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "label delay: 20 minutes in, labels are not due for 30; even worse numbers do not count",
                params(),
                state(0, START, 1),
                with(|s| s.canary_quality = reading(0.10, 200)),
                "2026-03-01T12:20:00Z",
                Step::Hold,
                VerdictResult::Inconclusive,
            ),
            (
                "label delay passed: the same numbers fail",
                params(),
                state(0, START, 1),
                with(|s| s.canary_quality = reading(0.10, 200)),
                "2026-03-01T12:31:00Z",
                Step::Rollback,
                VerdictResult::Fail,
            ),
            (
                "without a quality gate the serving gates decide",
                quality_off,
                state(0, START, 0),
                with(|s| s.canary_quality = None),
                "2026-03-01T12:10:00Z",
                Step::Advance { step: 1, weight: 50 },
                VerdictResult::Pass,
            ),
        ];
        for (name, params, state, snapshot, now, want_step, want_result) in cases {
            let next = analyze(&params, &state, &snapshot, &t(now));
            assert_eq!(next.step, want_step, "{name}: {}", next.verdict.message);
            assert_eq!(
                next.verdict.result, want_result,
                "{name}: {}",
                next.verdict.message
            );
        }
    }

    #[test]
    fn an_error_metric_drops_upwards() {
        let mut p = params();
        if let Some(q) = p.quality.as_mut() {
            q.metric = QualityMetric::Rmse;
            q.higher_is_better = false;
            q.max_drop = 0.1;
        }
        let now = t("2026-03-01T13:00:00Z");
        let worse = with(|s| {
            s.canary_quality = reading(1.5, 200);
            s.stable_quality = reading(1.2, 200);
        });
        assert_eq!(
            analyze(&p, &state(0, START, 1), &worse, &now).step,
            Step::Rollback
        );
        let better = with(|s| {
            s.canary_quality = reading(0.9, 200);
            s.stable_quality = reading(1.2, 200);
        });
        assert_eq!(
            analyze(&p, &state(0, START, 1), &better, &now).verdict.result,
            VerdictResult::Pass
        );
    }

    #[test]
    fn the_verdict_carries_the_numbers() {
        let now = t("2026-03-01T13:00:00Z");
        let next = analyze(
            &params(),
            &state(0, START, 1),
            &with(|s| s.canary_errors = Some(50.0)),
            &now,
        );
        assert_eq!(next.verdict.measurements.canary_error_rate, Some(0.05));
        assert_eq!(next.verdict.measurements.canary_requests, Some(1000.0));
        assert_eq!(next.verdict.measurements.canary_labelled, Some(200));
        assert!(
            next.verdict
                .message
                .contains("FAIL: error rate 5.00% (50 of 1000), maxErrorRate 1.00%"),
            "{}",
            next.verdict.message
        );
        // NaN never reaches the status.
        let nan = measurements(&with(|s| s.canary_p99 = Some(f64::NAN)));
        assert_eq!(nan.canary_latency_p99, None);
    }

    #[test]
    fn analyses_run_once_per_interval() {
        let p = params();
        let mut s = state(0, START, 0);
        assert!(!due(&p, &s, &t("2026-03-01T12:00:30Z")));
        assert_eq!(until_due(&p, &s, &t("2026-03-01T12:00:30Z")), 30_000);
        assert!(due(&p, &s, &t("2026-03-01T12:01:00Z")));
        s.last_verdict = Some(Verdict {
            result: VerdictResult::Pass,
            message: String::new(),
            time: t("2026-03-01T12:05:00Z"),
            measurements: Measurements::default(),
        });
        assert!(!due(&p, &s, &t("2026-03-01T12:05:59Z")));
        assert!(due(&p, &s, &t("2026-03-01T12:06:00Z")));
    }
}
