//! `spec.rollout` resolved into [`CanaryParams`]: durations parsed, defaults applied, and the
//! rules the CRD schema also enforces checked again (an object written before them, or by a client
//! that skips them). The rollout logic itself is in [`crate::rollout`].

use crate::crd::model_deployment::QualityMetric;
use crate::crd::parse_duration_ms;
use crate::crd::rollout::{CanarySpec, RolloutSpec, RolloutStrategy};
use crate::rollout::{CanaryParams, QualityGateParams, StepParams};

use super::ValidationError;

fn duration_ms(field: &'static str, text: &str) -> Result<i64, ValidationError> {
    parse_duration_ms(text)
        .and_then(|ms| i64::try_from(ms).ok())
        .ok_or_else(|| ValidationError::field(field, format!("{text:?} is not a duration such as 30s or 5m")))
}

impl CanaryParams {
    /// The canary of `spec.rollout`, `None` for the `Rolling` strategy. The rules the schema also
    /// enforces hold here too (an object written before them, or by a client that skips them).
    pub fn from_spec(rollout: Option<&RolloutSpec>) -> Result<Option<Self>, ValidationError> {
        let Some(rollout) = rollout else {
            return Ok(None);
        };
        match (rollout.strategy, &rollout.canary) {
            (RolloutStrategy::Rolling, None) => Ok(None),
            (RolloutStrategy::Rolling, Some(_)) => Err(ValidationError::field(
                "spec.rollout.canary",
                "goes with strategy: Canary",
            )),
            (RolloutStrategy::Canary, None) => Err(ValidationError::field(
                "spec.rollout.canary",
                "is needed by strategy: Canary",
            )),
            (RolloutStrategy::Canary, Some(c)) => Self::from_canary(c).map(Some),
        }
    }

    fn from_canary(c: &CanarySpec) -> Result<Self, ValidationError> {
        if c.steps.is_empty() {
            return Err(ValidationError::field(
                "spec.rollout.canary.steps",
                "needs at least one step",
            ));
        }
        let mut steps = Vec::with_capacity(c.steps.len());
        let mut last = 0;
        for s in &c.steps {
            if !(1..=100).contains(&s.weight) || s.weight < last {
                return Err(ValidationError::field(
                    "spec.rollout.canary.steps",
                    "weights are percentages from 1 to 100 that never decrease",
                ));
            }
            last = s.weight;
            steps.push(StepParams {
                weight: s.weight,
                hold_ms: duration_ms("spec.rollout.canary.steps.hold", &s.hold)?,
            });
        }
        let a = &c.analysis;
        let interval_ms = duration_ms("spec.rollout.canary.analysis.interval", &a.interval)?;
        if interval_ms < 1000 {
            return Err(ValidationError::field(
                "spec.rollout.canary.analysis.interval",
                "must be at least 1s",
            ));
        }
        let quality = match &a.quality {
            None => None,
            Some(q) => {
                let window_ms = duration_ms("spec.rollout.canary.analysis.quality.window", &q.window)?;
                if window_ms < 60_000 {
                    return Err(ValidationError::field(
                        "spec.rollout.canary.analysis.quality.window",
                        "must be at least 1m (the tracking server's smallest window)",
                    ));
                }
                let regression = matches!(
                    q.metric,
                    QualityMetric::Mse | QualityMetric::Rmse | QualityMetric::Mae | QualityMetric::R2
                );
                Some(QualityGateParams {
                    metric: q.metric,
                    window: q.window.clone(),
                    window_ms,
                    label_delay: q.label_delay.clone(),
                    label_delay_ms: duration_ms(
                        "spec.rollout.canary.analysis.quality.labelDelay",
                        &q.label_delay,
                    )?,
                    min_labelled: q.min_labelled.max(1),
                    max_drop: q.max_drop.max(0.0),
                    higher_is_better: !matches!(
                        q.metric,
                        QualityMetric::LogLoss
                            | QualityMetric::Mse
                            | QualityMetric::Rmse
                            | QualityMetric::Mae
                    ),
                    task: if regression {
                        "regression"
                    } else {
                        "classification"
                    },
                    score_field: q.score_field.clone(),
                    positive_label: q.positive_label.clone(),
                })
            }
        };
        Ok(Self {
            steps,
            interval: a.interval.clone(),
            interval_ms,
            failure_limit: a.failure_limit.max(1),
            #[allow(clippy::cast_precision_loss)]
            min_requests: a.min_requests.max(1) as f64,
            max_error_rate: a.max_error_rate,
            max_latency_p99_ratio: a.max_latency_p99_ratio,
            quality,
            on_failure: c.on_failure,
            set_alias: c.on_success.as_ref().and_then(|s| s.set_alias.clone()),
        })
    }
}
