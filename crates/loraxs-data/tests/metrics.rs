//! The metrics against values computed once with scikit-learn 1.x and SciPy
//! (accuracy_score, f1_score, matthews_corrcoef, pearsonr, spearmanr, rankdata).

use loraxs_data::Metric;
use loraxs_data::metrics::{matthews, ranks};

const P: [usize; 12] = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1];
const L: [usize; 12] = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1];

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

#[test]
fn classification_metrics_match_scikit_learn() {
    close(Metric::Accuracy.classification(&P, &L).unwrap(), 0.75);
    close(Metric::F1.classification(&P, &L).unwrap(), 0.7692307692307693);
    close(Metric::Matthews.classification(&P, &L).unwrap(), 0.50709255283711);
    // Multiclass Matthews.
    close(
        matthews(&[0, 1, 2, 2, 1, 0, 0, 2, 1, 1], &[0, 1, 2, 1, 1, 0, 2, 2, 0, 1]),
        0.5454545454545454,
    );
}

#[test]
fn degenerate_cases_follow_scikit_learn() {
    close(
        Metric::Matthews.classification(&[1, 1, 1], &[0, 1, 1]).unwrap(),
        0.0,
    );
    close(Metric::F1.classification(&[0, 0], &[1, 1]).unwrap(), 0.0);
}

/// What scikit-learn 1.9 and SciPy do with too few examples:
/// `accuracy_score([], [])`, `f1_score`, `matthews_corrcoef` raise
/// "Found empty input array"; `pearsonr` raises "`x` and `y` must have
/// length at least 2"; `spearmanr([], [])` returns NaN.
#[test]
fn too_few_examples_follow_scikit_learn_and_scipy() {
    for metric in [Metric::Accuracy, Metric::F1, Metric::Matthews] {
        let err = metric.classification(&[], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} needs at least 1 example(s), got 0", metric.name())
        );
    }
    assert_eq!(Metric::Accuracy.classification(&[1], &[1]), Ok(1.0));
    let err = Metric::Pearson.regression(&[1.0], &[2.0]).unwrap_err();
    assert_eq!(err.to_string(), "pearson needs at least 2 example(s), got 1");
    assert!(Metric::Spearman.regression(&[], &[]).unwrap().is_nan());
    assert!(Metric::Spearman.regression(&[1.0], &[2.0]).unwrap().is_nan());
}

#[test]
fn correlations_match_scipy() {
    let x = [0.5, 2.0, 2.0, 3.5, 4.0, 1.0, 2.0, 5.0];
    let y = [1.0, 2.5, 1.5, 3.0, 4.5, 0.5, 2.0, 4.0];
    close(Metric::Pearson.regression(&x, &y).unwrap(), 0.925272314580338);
    close(Metric::Spearman.regression(&x, &y).unwrap(), 0.9271050693011065);
    assert_eq!(ranks(&x), vec![1.0, 4.0, 4.0, 6.0, 7.0, 2.0, 4.0, 8.0]);
}
