//! Model-quality metric math, pure and deterministic: binary classification (accuracy, precision,
//! recall, F1, ROC AUC with tied scores, log loss), regression (MSE, RMSE, MAE, R²) and the
//! population stability index (PSI) of a numeric feature.
//!
//! Every definition follows scikit-learn's so the numbers agree with it on the same data
//! (`tests/compat/test_quality.py` checks that to 1e-9):
//! - precision / recall / F1 are 0 when their denominator is 0 (`zero_division=0`);
//! - ROC AUC is the Mann–Whitney statistic (a tie between a positive and a negative counts one
//!   half), equal to the area under the trapezoidal ROC curve; it needs both classes;
//! - log loss clips probabilities to `[eps, 1 - eps]` with `eps` = `f64::EPSILON` (numpy's
//!   `finfo(float64).eps`, as scikit-learn does) and is only defined for scores in `[0, 1]`;
//! - R² is `1 - SS_res / SS_tot`, with scikit-learn's finite conventions when `SS_tot` is 0; it
//!   needs two samples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Classification metric names, as responses and monitors spell them.
pub const CLASSIFICATION_METRICS: [&str; 6] =
    ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"];
/// Regression metric names.
pub const REGRESSION_METRICS: [&str; 4] = ["mse", "rmse", "mae", "r2"];
/// The drift metric: the largest PSI over the numeric input features.
pub const PSI: &str = "psi";

/// Probabilities are clipped to `[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]` (numpy's float64 eps).
pub const LOG_LOSS_EPS: f64 = f64::EPSILON;
/// Reference deciles: PSI compares ten bins.
pub const PSI_BINS: usize = 10;
/// An empty bin counts as this proportion, so the logarithm stays finite.
pub const PSI_EMPTY_BIN: f64 = 1e-4;

/// One labelled binary prediction: the model's score and whether the truth is the positive class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub score: f64,
    pub positive: bool,
}

/// Sum with Neumaier's compensation, so long windows do not drift from numpy's pairwise sums.
#[derive(Debug, Default, Clone, Copy)]
struct Sum {
    sum: f64,
    compensation: f64,
}

impl Sum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(self) -> f64 {
        self.sum + self.compensation
    }
}

/// The confusion matrix of thresholded scores.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Confusion {
    pub true_positives: u64,
    pub false_positives: u64,
    pub true_negatives: u64,
    pub false_negatives: u64,
}

impl Confusion {
    /// Predicted positive when `score >= threshold`.
    pub fn new(samples: &[Scored], threshold: f64) -> Self {
        let mut c = Self::default();
        for s in samples {
            match (s.score >= threshold, s.positive) {
                (true, true) => c.true_positives += 1,
                (true, false) => c.false_positives += 1,
                (false, false) => c.true_negatives += 1,
                (false, true) => c.false_negatives += 1,
            }
        }
        c
    }

    pub fn total(&self) -> u64 {
        self.true_positives + self.false_positives + self.true_negatives + self.false_negatives
    }

    pub fn accuracy(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| (self.true_positives + self.true_negatives) as f64 / total as f64)
    }

    pub fn precision(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_positives)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_negatives)
    }

    /// `2·TP / (2·TP + FP + FN)`, which is the harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        ratio(
            2 * self.true_positives,
            2 * self.true_positives + self.false_positives + self.false_negatives,
        )
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// ROC AUC by one sort of the scores: for each group of equal scores, every positive in it beats
/// every negative below it and ties with every negative in it (one half). `None` unless both
/// classes are present. Reorders `samples`.
pub fn roc_auc(samples: &mut [Scored]) -> Option<f64> {
    samples.sort_unstable_by(|a, b| a.score.total_cmp(&b.score));
    let mut negatives_below = 0u64;
    let mut positives = 0u64;
    // Counts of pairs, doubled so ties stay integral; exact in u128.
    let mut twice_wins: u128 = 0;
    let mut i = 0;
    while i < samples.len() {
        let score = samples[i].score;
        let (mut pos, mut neg) = (0u64, 0u64);
        while i < samples.len() && samples[i].score == score {
            if samples[i].positive {
                pos += 1;
            } else {
                neg += 1;
            }
            i += 1;
        }
        twice_wins += u128::from(pos) * (2 * u128::from(negatives_below) + u128::from(neg));
        negatives_below += neg;
        positives += pos;
    }
    let negatives = negatives_below;
    if positives == 0 || negatives == 0 {
        return None;
    }
    Some(twice_wins as f64 / 2.0 / (positives as f64 * negatives as f64))
}

/// Mean binary cross-entropy of the scores as probabilities of the positive class, each clipped
/// to `[eps, 1 - eps]`. `None` when there are no samples or a score lies outside `[0, 1]`
/// (scikit-learn refuses those).
pub fn log_loss(samples: &[Scored]) -> Option<f64> {
    if samples.is_empty() || samples.iter().any(|s| !(0.0..=1.0).contains(&s.score)) {
        return None;
    }
    let clip = |p: f64| p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
    let mut total = Sum::default();
    for s in samples {
        // Like scikit-learn: the pair (1 - p, p) is formed first, then each side is clipped.
        let p = if s.positive { s.score } else { 1.0 - s.score };
        total.add(-clip(p).ln());
    }
    Some(total.value() / samples.len() as f64)
}

/// Every classification metric that is defined for these samples. Reorders `samples`.
pub fn classification_metrics(samples: &mut [Scored], threshold: f64) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    let confusion = Confusion::new(samples, threshold);
    let Some(accuracy) = confusion.accuracy() else {
        return out;
    };
    out.insert("accuracy", accuracy);
    out.insert("precision", confusion.precision());
    out.insert("recall", confusion.recall());
    out.insert("f1", confusion.f1());
    if let Some(loss) = log_loss(samples) {
        out.insert("log_loss", loss);
    }
    if let Some(auc) = roc_auc(samples) {
        out.insert("roc_auc", auc);
    }
    out
}

/// One labelled regression prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regressed {
    pub predicted: f64,
    pub actual: f64,
}

/// MSE, RMSE, MAE (any non-empty sample) and R² (two samples or more).
pub fn regression_metrics(samples: &[Regressed]) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    if samples.is_empty() {
        return out;
    }
    let n = samples.len() as f64;
    let (mut squared, mut absolute, mut actual_sum) = (Sum::default(), Sum::default(), Sum::default());
    for s in samples {
        let err = s.actual - s.predicted;
        squared.add(err * err);
        absolute.add(err.abs());
        actual_sum.add(s.actual);
    }
    let mse = squared.value() / n;
    out.insert("mse", mse);
    out.insert("rmse", mse.sqrt());
    out.insert("mae", absolute.value() / n);
    if samples.len() >= 2 {
        let mean = actual_sum.value() / n;
        let mut total = Sum::default();
        for s in samples {
            let d = s.actual - mean;
            total.add(d * d);
        }
        let (ss_res, ss_tot) = (squared.value(), total.value());
        let r2 = match (ss_res != 0.0, ss_tot != 0.0) {
            (_, true) => 1.0 - ss_res / ss_tot,
            (false, false) => 1.0,
            (true, false) => 0.0,
        };
        out.insert("r2", r2);
    }
    out
}

/// A feature's reference distribution: decile edges and the share of reference values in each
/// bin. Bin `i` holds values `v` with `edges[i-1] < v <= edges[i]` (the first bin is open below,
/// the last open above).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bins {
    pub edges: Vec<f64>,
    pub expected: Vec<f64>,
}

impl Bins {
    /// Decile edges of the reference values (the `ceil(i·n/10)`-th smallest value for
    /// i = 1…9, duplicates merged) and each bin's share. `None` for no values. Sorts `values`.
    pub fn from_reference(values: &mut [f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f64::total_cmp);
        let n = values.len();
        let mut edges: Vec<f64> = Vec::with_capacity(PSI_BINS - 1);
        for i in 1..PSI_BINS {
            let rank = (i * n).div_ceil(PSI_BINS).max(1);
            let edge = values[rank - 1];
            if edges.last() != Some(&edge) {
                edges.push(edge);
            }
        }
        // The top edge is the maximum itself when n < 10 would repeat it; it is harmless either way.
        let counts = Self::count(&edges, values.iter().copied());
        let expected = counts.iter().map(|c| *c as f64 / n as f64).collect();
        Some(Self { edges, expected })
    }

    fn bin_of(edges: &[f64], value: f64) -> usize {
        edges.partition_point(|e| *e < value)
    }

    fn count(edges: &[f64], values: impl Iterator<Item = f64>) -> Vec<u64> {
        let mut counts = vec![0u64; edges.len() + 1];
        for v in values {
            counts[Self::bin_of(edges, v)] += 1;
        }
        counts
    }

    /// PSI of `live` against this reference: `Σ (a − e)·ln(a / e)` over the bins, with `a` and
    /// `e` the live and reference shares and an empty bin counted as [`PSI_EMPTY_BIN`]. `None`
    /// for no live values or a malformed reference.
    pub fn psi(&self, live: &[f64]) -> Option<f64> {
        if live.is_empty() || self.expected.len() != self.edges.len() + 1 {
            return None;
        }
        let counts = Self::count(&self.edges, live.iter().copied());
        let n = live.len() as f64;
        let floor = |p: f64| if p > 0.0 { p } else { PSI_EMPTY_BIN };
        let mut total = Sum::default();
        for (count, expected) in counts.iter().zip(&self.expected) {
            let a = floor(*count as f64 / n);
            let e = floor(*expected);
            total.add((a - e) * (a / e).ln());
        }
        Some(total.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(scores: &[f64], labels: &[u8]) -> Vec<Scored> {
        scores
            .iter()
            .zip(labels)
            .map(|(s, l)| Scored {
                score: *s,
                positive: *l == 1,
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12
    }

    // Values below come from scikit-learn 1.9.1 on the same data (and by hand in the comments).
    #[test]
    fn classification_by_hand() {
        let mut s = scored(&[0.1, 0.4, 0.35, 0.8, 0.8, 0.6], &[0, 0, 1, 1, 0, 1]);
        let m = classification_metrics(&mut s, 0.5);
        // TP 2 (0.8, 0.6), FP 1 (0.8), TN 2, FN 1 (0.35).
        assert!(close(m["accuracy"], 4.0 / 6.0));
        assert!(close(m["precision"], 2.0 / 3.0));
        assert!(close(m["recall"], 2.0 / 3.0));
        assert!(close(m["f1"], 2.0 / 3.0));
        // Pairs won by positives: 0.35 beats 0.1 (1); 0.8 beats 0.1, 0.4 and ties 0.8 (2.5);
        // 0.6 beats 0.1, 0.4 (2): 5.5 of 9.
        assert!(close(m["roc_auc"], 5.5 / 9.0));
        assert!(close(m["roc_auc"], 0.6111111111111112));
        // −(ln .9 + ln .6 + ln .35 + ln .8 + ln .2 + ln .6) / 6
        assert!(close(m["log_loss"], 0.6682358919061326));
    }

    #[test]
    fn threshold_moves_the_confusion_matrix() {
        let s = scored(&[0.1, 0.4, 0.35, 0.8, 0.8, 0.6], &[0, 0, 1, 1, 0, 1]);
        let c = Confusion::new(&s, 0.3);
        assert_eq!(
            (
                c.true_positives,
                c.false_positives,
                c.true_negatives,
                c.false_negatives
            ),
            (3, 2, 1, 0)
        );
        assert!(close(c.f1(), 6.0 / 8.0));
    }

    #[test]
    fn zero_division_is_zero_like_scikit_learn() {
        let s = scored(&[0.1, 0.2, 0.3], &[0, 1, 0]);
        let c = Confusion::new(&s, 0.5);
        assert_eq!((c.precision(), c.recall(), c.f1()), (0.0, 0.0, 0.0));
        let none = Confusion::new(&scored(&[0.1], &[0]), 0.5);
        assert_eq!((none.precision(), none.recall(), none.f1()), (0.0, 0.0, 0.0));
        assert_eq!(none.accuracy(), Some(1.0));
    }

    #[test]
    fn roc_auc_handles_ties_and_single_classes() {
        // All scores equal: every pair is a tie, AUC 0.5.
        let mut tied = scored(&[0.7, 0.7, 0.7, 0.7], &[1, 0, 1, 0]);
        assert_eq!(roc_auc(&mut tied), Some(0.5));
        // Perfect and inverted rankings.
        assert_eq!(
            roc_auc(&mut scored(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1])),
            Some(1.0)
        );
        assert_eq!(
            roc_auc(&mut scored(&[0.1, 0.2, 0.8, 0.9], &[1, 1, 0, 0])),
            Some(0.0)
        );
        // One class only: undefined (scikit-learn raises).
        assert_eq!(roc_auc(&mut scored(&[0.1, 0.9], &[1, 1])), None);
        assert_eq!(roc_auc(&mut []), None);
        // Scores outside [0, 1] are fine for AUC (only the order matters).
        assert_eq!(roc_auc(&mut scored(&[-3.0, 12.0], &[0, 1])), Some(1.0));
    }

    #[test]
    fn log_loss_clips_like_scikit_learn() {
        // y = [0, 1, 1], p = [0, 1, 0]: the last term is −ln(eps) = 36.04…; mean 12.0145…
        let s = scored(&[0.0, 1.0, 0.0], &[0, 1, 1]);
        assert!(close(log_loss(&s).unwrap(), 12.014551129705717));
        assert_eq!(
            log_loss(&scored(&[1.5], &[1])),
            None,
            "scores must be probabilities"
        );
        assert_eq!(log_loss(&[]), None);
    }

    #[test]
    fn empty_classification_has_no_metrics() {
        assert!(classification_metrics(&mut [], 0.5).is_empty());
    }

    #[test]
    fn regression_by_hand() {
        // scikit-learn's documentation example.
        let samples: Vec<Regressed> = [(2.5, 3.0), (0.0, -0.5), (2.0, 2.0), (8.0, 7.0)]
            .iter()
            .map(|(p, a)| Regressed {
                predicted: *p,
                actual: *a,
            })
            .collect();
        let m = regression_metrics(&samples);
        assert!(close(m["mse"], 0.375)); // (0.25 + 0.25 + 0 + 1) / 4
        assert!(close(m["rmse"], 0.6123724356957945));
        assert!(close(m["mae"], 0.5)); // (0.5 + 0.5 + 0 + 1) / 4
        // SS_res = 1.5; mean 2.875, SS_tot = 29.1875; 1 − 1.5 / 29.1875
        assert!(close(m["r2"], 0.9486081370449679));
    }

    #[test]
    fn r2_conventions_for_constant_truth() {
        let same = [Regressed {
            predicted: 1.0,
            actual: 1.0,
        }; 2];
        assert_eq!(regression_metrics(&same)["r2"], 1.0);
        let off = [
            Regressed {
                predicted: 1.0,
                actual: 1.0,
            },
            Regressed {
                predicted: 2.0,
                actual: 1.0,
            },
        ];
        assert_eq!(regression_metrics(&off)["r2"], 0.0);
        let one = regression_metrics(&same[..1]);
        assert!(one.contains_key("mse") && !one.contains_key("r2"));
        assert!(regression_metrics(&[]).is_empty());
    }

    #[test]
    fn psi_by_hand() {
        let mut reference: Vec<f64> = (1..=10).map(f64::from).collect();
        let bins = Bins::from_reference(&mut reference).unwrap();
        assert_eq!(bins.edges, (1..=9).map(f64::from).collect::<Vec<_>>());
        assert!(bins.expected.iter().all(|e| close(*e, 0.1)));
        // Same distribution: no drift.
        let same: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!(close(bins.psi(&same).unwrap(), 0.0));
        // Live shares [.5, .1, .1, .1, .1, 0, 0, 0, 0, .1]:
        // 0.4·ln 5 + 4·(1e-4 − 0.1)·ln(1e-4 / 0.1) = 0.64377… + 2.76033… = 3.40411…
        let live = [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0];
        let want = 0.4 * 5f64.ln() + 4.0 * (1e-4 - 0.1) * (1e-4f64 / 0.1).ln();
        assert!(close(bins.psi(&live).unwrap(), want));
        assert!(close(want, 3.404114174454902));
        assert_eq!(bins.psi(&[]), None);
    }

    #[test]
    fn psi_bins_merge_repeated_edges() {
        let mut constant = vec![5.0; 20];
        let bins = Bins::from_reference(&mut constant).unwrap();
        assert_eq!(bins.edges, vec![5.0]);
        assert_eq!(bins.expected, vec![1.0, 0.0]);
        // Everything above the constant: both bins flip.
        let psi = bins.psi(&[6.0, 7.0]).unwrap();
        let want = (1e-4 - 1.0) * (1e-4f64).ln() + (1.0 - 1e-4) * (1.0f64 / 1e-4).ln();
        assert!(close(psi, want));
        assert_eq!(Bins::from_reference(&mut []), None);
    }
}
