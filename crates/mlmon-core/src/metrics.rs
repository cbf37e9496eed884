//! Classification metrics read from a [`Confusion`], with scikit-learn's
//! definitions. All are computed on the summed sample weights.
//!
//! Zero denominators: we follow scikit-learn's `zero_division=np.nan`. A metric
//! whose denominator is zero is `None` (SQL NULL); in `macro` and `weighted`
//! averages such per-class values are left out, and the average is `None` only
//! when every class is undefined. MCC and Cohen's kappa are `None` where their
//! denominator is zero (scikit-learn returns 0.0 for MCC there; NULL says
//! "undefined" rather than "no correlation").

use crate::confusion::{Confusion, LabelKind};
use crate::error::{Error, Result};

/// How per-class precision/recall/F are combined.
#[derive(Clone, Debug, PartialEq)]
pub enum Average {
    /// One class against the rest (binary matrices default to `true`).
    Label(String),
    Macro,
    Micro,
    Weighted,
}

impl Average {
    /// Resolves the SQL arguments `average` and `label` against a matrix.
    pub fn resolve(cm: &Confusion, average: Option<&str>, label: Option<&str>) -> Result<Average> {
        match (average, label) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "average",
                "pass either average or label, not both",
                "average => 'macro' | 'micro' | 'weighted' combines classes; label => '...' scores one class",
            )),
            (None, Some(label)) => {
                if cm.knows_label(label) {
                    Ok(Average::Label(label.to_owned()))
                } else {
                    Err(Error::invalid(
                        "label",
                        format!("label {label:?} does not occur in the confusion matrix"),
                        format!("label must be one of {}", preview(&cm.labels())),
                    ))
                }
            }
            (Some(name), None) => match name {
                "macro" => Ok(Average::Macro),
                "micro" => Ok(Average::Micro),
                "weighted" => Ok(Average::Weighted),
                "binary" if cm.kind() == LabelKind::Binary => Ok(Average::Label("true".into())),
                other => Err(Error::invalid(
                    "average",
                    format!("unknown average {other:?}"),
                    "average must be 'macro', 'micro' or 'weighted' ('binary' for boolean matrices)",
                )),
            },
            (None, None) if cm.kind() == LabelKind::Binary => Ok(Average::Label("true".into())),
            (None, None) => Ok(Average::Macro),
        }
    }
}

fn preview(labels: &[&str]) -> String {
    let shown: Vec<String> = labels.iter().take(10).map(|l| format!("'{l}'")).collect();
    let more = if labels.len() > 10 { format!(" (and {} more)", labels.len() - 10) } else { String::new() };
    format!("{}{more}", shown.join(", "))
}

/// Per-class sums: true positives, row (actual) sum, column (predicted) sum.
#[derive(Clone, Copy, Debug, Default)]
struct ClassSums {
    tp: f64,
    actual: f64,
    predicted: f64,
}

/// The sums every metric is built from, in sorted label order.
struct Sums<'a> {
    labels: Vec<&'a str>,
    classes: Vec<ClassSums>,
    trace: f64,
    total: f64,
}

fn sums(cm: &Confusion) -> Sums<'_> {
    let labels = cm.labels();
    let mut classes = vec![ClassSums::default(); labels.len()];
    let position = |l: &str| labels.iter().position(|x| *x == l).expect("present label");
    let (mut trace, mut total) = (0.0, 0.0);
    for (a, p, cell) in cm.sorted_cells() {
        let (ai, pi) = (position(a), position(p));
        classes[ai].actual += cell.w;
        classes[pi].predicted += cell.w;
        if ai == pi {
            classes[ai].tp += cell.w;
            trace += cell.w;
        }
        total += cell.w;
    }
    Sums { labels, classes, trace, total }
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den != 0.0).then(|| num / den)
}

#[derive(Clone, Copy, PartialEq)]
enum Score {
    Precision,
    Recall,
    FBeta(f64),
}

fn class_score(c: ClassSums, score: Score) -> Option<f64> {
    match score {
        Score::Precision => ratio(c.tp, c.predicted),
        Score::Recall => ratio(c.tp, c.actual),
        // (1+b²)tp / ((1+b²)tp + b²fn + fp) = (1+b²)tp / (b²·actual + predicted)
        Score::FBeta(beta) => {
            let b2 = beta * beta;
            ratio((1.0 + b2) * c.tp, b2 * c.actual + c.predicted)
        }
    }
}

/// Sums for one class against the rest, even when it has no rows (binary `true`).
fn one_vs_rest(s: &Sums, label: &str) -> ClassSums {
    s.labels.iter().position(|l| *l == label).map(|i| s.classes[i]).unwrap_or_default()
}

/// Mean of the defined values, weighted when weights are given (scikit-learn's
/// `_nanaverage`: if every weight is zero, an unweighted mean).
fn nan_average(values: &[Option<f64>], weights: Option<&[f64]>) -> Option<f64> {
    let defined: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (v, weights.map_or(1.0, |w| w[i]))))
        .collect();
    if defined.is_empty() {
        return None;
    }
    let weight_sum: f64 = defined.iter().map(|(_, w)| w).sum();
    if weight_sum == 0.0 {
        return Some(defined.iter().map(|(v, _)| v).sum::<f64>() / defined.len() as f64);
    }
    Some(defined.iter().map(|(v, w)| v * w).sum::<f64>() / weight_sum)
}

fn averaged(cm: &Confusion, average: &Average, score: Score) -> Option<f64> {
    let s = sums(cm);
    if s.total == 0.0 && !matches!(average, Average::Label(_)) {
        return None;
    }
    match average {
        Average::Label(label) => class_score(one_vs_rest(&s, label), score),
        Average::Micro => {
            let all = ClassSums { tp: s.trace, actual: s.total, predicted: s.total };
            class_score(all, score)
        }
        Average::Macro | Average::Weighted => {
            let values: Vec<Option<f64>> = s.classes.iter().map(|c| class_score(*c, score)).collect();
            let support: Vec<f64> = s.classes.iter().map(|c| c.actual).collect();
            let weights = (*average == Average::Weighted).then_some(support.as_slice());
            nan_average(&values, weights)
        }
    }
}

pub fn accuracy(cm: &Confusion) -> Option<f64> {
    let s = sums(cm);
    ratio(s.trace, s.total)
}

pub fn precision(cm: &Confusion, average: &Average) -> Option<f64> {
    averaged(cm, average, Score::Precision)
}

pub fn recall(cm: &Confusion, average: &Average) -> Option<f64> {
    averaged(cm, average, Score::Recall)
}

pub fn fbeta(cm: &Confusion, beta: f64, average: &Average) -> Result<Option<f64>> {
    if !(beta.is_finite() && beta > 0.0) {
        return Err(Error::invalid("beta", format!("beta must be a positive finite number, got {beta}"), "beta weighs recall beta times as much as precision; use beta => 1 for F1"));
    }
    Ok(averaged(cm, average, Score::FBeta(beta)))
}

pub fn f1(cm: &Confusion, average: &Average) -> Option<f64> {
    averaged(cm, average, Score::FBeta(1.0))
}

/// True negatives over actual negatives for `label` against the rest.
pub fn specificity(cm: &Confusion, label: &str) -> Option<f64> {
    let s = sums(cm);
    let c = one_vs_rest(&s, label);
    let fp = c.predicted - c.tp;
    let tn = s.total - c.actual - fp;
    ratio(tn, tn + fp)
}

/// Mean recall over classes that occur as actual labels.
pub fn balanced_accuracy(cm: &Confusion) -> Option<f64> {
    let s = sums(cm);
    let recalls: Vec<Option<f64>> = s.classes.iter().map(|c| ratio(c.tp, c.actual)).collect();
    nan_average(&recalls, None)
}

/// Matthews correlation coefficient, multiclass form (Gorodkin 2004), as in
/// scikit-learn's `matthews_corrcoef`.
pub fn mcc(cm: &Confusion) -> Option<f64> {
    let s = sums(cm);
    let (c, n) = (s.trace, s.total);
    let tp_sum: f64 = s.classes.iter().map(|k| k.actual * k.predicted).sum();
    let cov_true_pred = c * n - tp_sum;
    let cov_pred = n * n - s.classes.iter().map(|k| k.predicted * k.predicted).sum::<f64>();
    let cov_true = n * n - s.classes.iter().map(|k| k.actual * k.actual).sum::<f64>();
    let den = cov_pred * cov_true;
    (den > 0.0).then(|| cov_true_pred / den.sqrt())
}

/// Cohen's kappa: agreement beyond chance between actual and predicted labels.
pub fn cohen_kappa(cm: &Confusion) -> Option<f64> {
    let s = sums(cm);
    if s.total == 0.0 {
        return None;
    }
    let observed = s.trace / s.total;
    let expected = s.classes.iter().map(|k| k.actual * k.predicted).sum::<f64>() / (s.total * s.total);
    ratio(observed - expected, 1.0 - expected)
}

/// Binary cell counts (tp, fp, tn, fn) for `label` against the rest.
pub fn binary_counts(cm: &Confusion, label: &str) -> (u64, u64, u64, u64) {
    let (mut tp, mut fp, mut tn, mut fn_) = (0, 0, 0, 0);
    for (a, p, cell) in cm.sorted_cells() {
        match (a == label, p == label) {
            (true, true) => tp += cell.n,
            (false, true) => fp += cell.n,
            (false, false) => tn += cell.n,
            (true, false) => fn_ += cell.n,
        }
    }
    (tp, fp, tn, fn_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(cells: &[(bool, bool, u32)]) -> Confusion {
        let mut cm = Confusion::new(LabelKind::Binary);
        for &(a, p, n) in cells {
            for _ in 0..n {
                cm.add(&a.to_string(), &p.to_string(), 1.0).unwrap();
            }
        }
        cm
    }

    #[test]
    fn binary_metrics_by_hand() {
        // tp=3 fp=1 tn=4 fn=2
        let cm = binary(&[(true, true, 3), (false, true, 1), (false, false, 4), (true, false, 2)]);
        let pos = Average::Label("true".into());
        assert_eq!(accuracy(&cm), Some(0.7));
        assert_eq!(precision(&cm, &pos), Some(0.75));
        assert_eq!(recall(&cm, &pos), Some(0.6));
        assert!((f1(&cm, &pos).unwrap() - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-15);
        assert_eq!(specificity(&cm, "true"), Some(0.8));
        let expected_mcc = (3.0 * 4.0 - 1.0 * 2.0) / ((4.0f64) * 5.0 * 5.0 * 6.0).sqrt();
        assert!((mcc(&cm).unwrap() - expected_mcc).abs() < 1e-15);
    }

    #[test]
    fn empty_and_degenerate_are_none() {
        let cm = Confusion::new(LabelKind::Binary);
        assert_eq!(accuracy(&cm), None);
        assert_eq!(mcc(&cm), None);
        let all_negative = binary(&[(false, false, 5)]);
        assert_eq!(precision(&all_negative, &Average::Label("true".into())), None);
        assert_eq!(mcc(&all_negative), None);
        assert_eq!(cohen_kappa(&all_negative), None);
    }

    #[test]
    fn bad_beta_and_average_are_errors() {
        let cm = binary(&[(true, true, 1)]);
        assert!(fbeta(&cm, 0.0, &Average::Macro).is_err());
        assert!(fbeta(&cm, f64::NAN, &Average::Macro).is_err());
        assert!(Average::resolve(&cm, Some("sideways"), None).is_err());
        assert!(Average::resolve(&cm, None, Some("maybe")).is_err());
    }
}
