//! Accessors that read metrics from an `mlmon.confusion` state.

use mlmon_core::cost::{self, BinaryCosts};
use mlmon_core::error::Error;
use mlmon_core::interval::wilson;
use mlmon_core::metrics::{self, Average};
use mlmon_core::{Confusion, LabelKind};
use pgrx::prelude::*;
use pgrx::JsonB;

use super::decode;
use crate::pg::errors::{raise, OrRaise};

fn average(cm: &Confusion, average: Option<&str>, label: Option<&str>) -> Average {
    Average::resolve(cm, average, label).or_raise()
}

/// The class scored against the rest: `label`, or `true` for boolean matrices.
fn one_class(cm: &Confusion, label: Option<&str>) -> String {
    match (label, cm.kind()) {
        (Some(_), _) => match average(cm, None, label) {
            Average::Label(l) => l,
            _ => unreachable!("a label resolves to a label"),
        },
        (None, LabelKind::Binary) => "true".into(),
        (None, _) => raise(Error::invalid(
            "label",
            "this metric scores one class of a multiclass matrix",
            "pass label => '<class>'",
        )),
    }
}

#[pg_extern(sql = false)]
fn confusion_accuracy(cm: &[u8]) -> Option<f64> {
    metrics::accuracy(&decode(cm))
}

#[pg_extern(sql = false)]
fn confusion_precision(cm: Option<&[u8]>, average_name: Option<&str>, label: Option<&str>) -> Option<f64> {
    let cm = decode(cm?);
    metrics::precision(&cm, &average(&cm, average_name, label))
}

#[pg_extern(sql = false)]
fn confusion_recall(cm: Option<&[u8]>, average_name: Option<&str>, label: Option<&str>) -> Option<f64> {
    let cm = decode(cm?);
    metrics::recall(&cm, &average(&cm, average_name, label))
}

#[pg_extern(sql = false)]
fn confusion_f1(cm: Option<&[u8]>, average_name: Option<&str>, label: Option<&str>) -> Option<f64> {
    let cm = decode(cm?);
    metrics::f1(&cm, &average(&cm, average_name, label))
}

#[pg_extern(sql = false)]
fn confusion_fbeta(cm: Option<&[u8]>, beta: Option<f64>, average_name: Option<&str>, label: Option<&str>) -> Option<f64> {
    let cm = decode(cm?);
    let beta = beta.unwrap_or_else(|| raise(Error::invalid("beta", "beta must not be NULL", "pass beta => 1 for F1")));
    metrics::fbeta(&cm, beta, &average(&cm, average_name, label)).or_raise()
}

#[pg_extern(sql = false)]
fn confusion_specificity(cm: Option<&[u8]>, label: Option<&str>) -> Option<f64> {
    let cm = decode(cm?);
    metrics::specificity(&cm, &one_class(&cm, label))
}

#[pg_extern(sql = false)]
fn confusion_balanced_accuracy(cm: &[u8]) -> Option<f64> {
    metrics::balanced_accuracy(&decode(cm))
}

#[pg_extern(sql = false)]
fn confusion_mcc(cm: &[u8]) -> Option<f64> {
    metrics::mcc(&decode(cm))
}

#[pg_extern(sql = false)]
fn confusion_cohen_kappa(cm: &[u8]) -> Option<f64> {
    metrics::cohen_kappa(&decode(cm))
}

#[pg_extern(sql = false)]
fn confusion_total(cm: &[u8]) -> i64 {
    decode(cm).total().n as i64
}

#[pg_extern(sql = false)]
fn confusion_total_weight(cm: &[u8]) -> f64 {
    decode(cm).total().w
}

/// Which of tp/fp/tn/fn to return, in `metrics::binary_counts` order.
fn count(cm: Option<&[u8]>, label: Option<&str>, which: usize) -> Option<i64> {
    let cm = decode(cm?);
    let (tp, fp, tn, fn_) = metrics::binary_counts(&cm, &one_class(&cm, label));
    Some([tp, fp, tn, fn_][which] as i64)
}

#[pg_extern(sql = false)]
fn confusion_tp(cm: Option<&[u8]>, label: Option<&str>) -> Option<i64> {
    count(cm, label, 0)
}

#[pg_extern(sql = false)]
fn confusion_fp(cm: Option<&[u8]>, label: Option<&str>) -> Option<i64> {
    count(cm, label, 1)
}

#[pg_extern(sql = false)]
fn confusion_tn(cm: Option<&[u8]>, label: Option<&str>) -> Option<i64> {
    count(cm, label, 2)
}

#[pg_extern(sql = false)]
fn confusion_fn(cm: Option<&[u8]>, label: Option<&str>) -> Option<i64> {
    count(cm, label, 3)
}

#[pg_extern(sql = false)]
fn confusion_labels(cm: &[u8]) -> Vec<String> {
    decode(cm).labels().into_iter().map(str::to_owned).collect()
}

#[pg_extern(sql = false)]
fn confusion_cells(
    cm: &[u8],
) -> TableIterator<'static, (name!(actual, String), name!(predicted, String), name!(n, i64), name!(weight, f64))> {
    let cm = decode(cm);
    let rows: Vec<_> =
        cm.sorted_cells().into_iter().map(|(a, p, c)| (a.to_owned(), p.to_owned(), c.n as i64, c.w)).collect();
    TableIterator::new(rows)
}

// Wilson intervals use the unweighted counts: the interval is about how many
// observations support the proportion, which weights do not change.

fn interval(successes: u64, trials: u64, confidence: f64) -> Option<Vec<f64>> {
    wilson(successes as f64, trials as f64, confidence).or_raise().map(|(lo, hi)| vec![lo, hi])
}

/// `mlmon._wilson(successes, trials, confidence)`: the interval of any
/// proportion given as successes of trials (fractional successes too: a
/// weighted monitor's proportion times its unweighted count).
#[pg_extern(sql = false)]
fn wilson_interval(successes: f64, trials: f64, confidence: f64) -> Option<Vec<f64>> {
    if !(trials.is_finite() && trials >= 0.0) {
        raise(Error::invalid("trials", format!("trials must be a finite count, got {trials}"), "pass the proportion's denominator"));
    }
    if !(successes.is_finite() && (0.0..=trials).contains(&successes)) {
        raise(Error::invalid("successes", format!("successes must lie in [0, {trials}], got {successes}"), "pass the proportion times trials"));
    }
    wilson(successes, trials, confidence).or_raise().map(|(lo, hi)| vec![lo, hi])
}

#[pg_extern(sql = false)]
fn confusion_accuracy_ci(cm: &[u8], confidence: f64) -> Option<Vec<f64>> {
    let cm = decode(cm);
    let correct: u64 = cm.sorted_cells().iter().filter(|(a, p, _)| a == p).map(|(_, _, c)| c.n).sum();
    interval(correct, cm.total().n, confidence)
}

#[pg_extern(sql = false)]
fn confusion_precision_ci(cm: Option<&[u8]>, confidence: Option<f64>, label: Option<&str>) -> Option<Vec<f64>> {
    let cm = decode(cm?);
    let (tp, fp, _, _) = metrics::binary_counts(&cm, &one_class(&cm, label));
    interval(tp, tp + fp, confidence?)
}

#[pg_extern(sql = false)]
fn confusion_recall_ci(cm: Option<&[u8]>, confidence: Option<f64>, label: Option<&str>) -> Option<Vec<f64>> {
    let cm = decode(cm?);
    let (tp, _, _, fn_) = metrics::binary_counts(&cm, &one_class(&cm, label));
    interval(tp, tp + fn_, confidence?)
}

#[pg_extern(sql = false)]
fn confusion_cost(cm: &[u8], fp_cost: f64, fn_cost: f64, tp_cost: f64, tn_cost: f64) -> Option<f64> {
    cost::binary_cost(&decode(cm), BinaryCosts { fp: fp_cost, fn_: fn_cost, tp: tp_cost, tn: tn_cost }).or_raise()
}

#[pg_extern(sql = false)]
fn confusion_cost_matrix(cm: &[u8], costs: JsonB) -> Option<f64> {
    let costs = cost::parse_cost_matrix(&costs.0).or_raise();
    cost::matrix_cost(&decode(cm), &costs).or_raise()
}

fn per_prediction(cm: &[u8], total_cost: Option<f64>) -> Option<f64> {
    let n = decode(cm).total().n;
    total_cost.filter(|_| n > 0).map(|c| c / n as f64)
}

#[pg_extern(sql = false)]
fn confusion_mean_cost(cm: &[u8], fp_cost: f64, fn_cost: f64, tp_cost: f64, tn_cost: f64) -> Option<f64> {
    per_prediction(cm, confusion_cost(cm, fp_cost, fn_cost, tp_cost, tn_cost))
}

#[pg_extern(sql = false)]
fn confusion_mean_cost_matrix(cm: &[u8], costs: JsonB) -> Option<f64> {
    per_prediction(cm, confusion_cost_matrix(cm, costs))
}
