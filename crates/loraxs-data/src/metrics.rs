//! The GLUE metrics, computed exactly as GLUE (scikit-learn, SciPy) does.

use serde::{Deserialize, Serialize};

/// A metric asked of fewer examples than it is defined for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{metric} needs at least {needed} example(s), got {got}")]
pub struct TooFewExamples {
    /// The metric's name.
    pub metric: &'static str,
    /// The fewest examples it is defined for.
    pub needed: usize,
    /// How many it was given.
    pub got: usize,
}

/// A GLUE metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Fraction of exact class matches.
    Accuracy,
    /// F1 of the positive class (label 1): MRPC, QQP.
    F1,
    /// Matthews correlation coefficient: CoLA.
    Matthews,
    /// Pearson correlation: STS-B.
    Pearson,
    /// Spearman rank correlation (average ranks for ties): STS-B.
    Spearman,
}

impl Metric {
    /// The name used in tables and result files.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::F1 => "f1",
            Metric::Matthews => "matthews",
            Metric::Pearson => "pearson",
            Metric::Spearman => "spearman",
        }
    }

    /// Classification metrics from predicted and gold classes. No examples
    /// is an error, as in scikit-learn (`Found empty input array`), not a
    /// score.
    ///
    /// # Panics
    /// On a correlation metric (use [`Metric::regression`]) or lengths that
    /// differ.
    pub fn classification(self, predictions: &[usize], labels: &[usize]) -> Result<f64, TooFewExamples> {
        assert_eq!(predictions.len(), labels.len(), "one prediction per label");
        self.at_least(1, labels.len())?;
        Ok(match self {
            Metric::Accuracy => accuracy(predictions, labels),
            Metric::F1 => f1(predictions, labels),
            Metric::Matthews => matthews(predictions, labels),
            Metric::Pearson | Metric::Spearman => panic!("{} is a regression metric", self.name()),
        })
    }

    fn at_least(self, needed: usize, got: usize) -> Result<(), TooFewExamples> {
        if got < needed {
            return Err(TooFewExamples {
                metric: self.name(),
                needed,
                got,
            });
        }
        Ok(())
    }

    /// Correlation metrics from predicted and gold scores. As SciPy:
    /// Pearson needs two examples (`pearsonr` raises below), Spearman is
    /// NaN below two (`spearmanr` returns NaN).
    ///
    /// # Panics
    /// On a classification metric or lengths that differ.
    pub fn regression(self, predictions: &[f64], targets: &[f64]) -> Result<f64, TooFewExamples> {
        assert_eq!(predictions.len(), targets.len(), "one prediction per target");
        match self {
            Metric::Pearson => {
                self.at_least(2, targets.len())?;
                Ok(pearson(predictions, targets))
            }
            Metric::Spearman if targets.len() < 2 => Ok(f64::NAN),
            Metric::Spearman => Ok(pearson(&ranks(predictions), &ranks(targets))),
            _ => panic!("{} is a classification metric", self.name()),
        }
    }
}

/// Fraction of `predictions` equal to `labels` (NaN, 0/0, for no examples;
/// [`Metric::classification`] refuses that case).
pub fn accuracy(predictions: &[usize], labels: &[usize]) -> f64 {
    predictions.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

/// F1 of class 1; 0 when there is no true positive (scikit-learn's
/// `zero_division` behaviour).
pub fn f1(predictions: &[usize], labels: &[usize]) -> f64 {
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for (&p, &l) in predictions.iter().zip(labels) {
        match (p == 1, l == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    if tp == 0 {
        return 0.0;
    }
    2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
}

/// Matthews correlation for any number of classes (scikit-learn's
/// multiclass formula; 0 when undefined).
pub fn matthews(predictions: &[usize], labels: &[usize]) -> f64 {
    let k = predictions
        .iter()
        .chain(labels)
        .copied()
        .max()
        .map_or(0, |m| m + 1);
    let mut confusion = vec![vec![0f64; k]; k];
    for (&p, &l) in predictions.iter().zip(labels) {
        confusion[l][p] += 1.0;
    }
    let t: Vec<f64> = (0..k).map(|i| confusion[i].iter().sum()).collect(); // true counts
    let p: Vec<f64> = (0..k).map(|j| (0..k).map(|i| confusion[i][j]).sum()).collect(); // predicted counts
    let c: f64 = (0..k).map(|i| confusion[i][i]).sum();
    let s = labels.len() as f64;
    let cov_ytyp = c * s - t.iter().zip(&p).map(|(a, b)| a * b).sum::<f64>();
    let cov_ypyp = s * s - p.iter().map(|x| x * x).sum::<f64>();
    let cov_ytyt = s * s - t.iter().map(|x| x * x).sum::<f64>();
    if cov_ypyp * cov_ytyt == 0.0 {
        return 0.0;
    }
    cov_ytyp / (cov_ytyt * cov_ypyp).sqrt()
}

/// Pearson correlation (NaN when a side is constant, as SciPy).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    sxy / (sxx * syy).sqrt()
}

/// 1-based ranks, ties given their average rank (SciPy's `rankdata`).
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}
