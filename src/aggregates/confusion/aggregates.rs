//! Transition, combine, serialize and final functions of the confusion-matrix
//! aggregates. `sql/aggregates/confusion.sql` wires them into `CREATE AGGREGATE`s.
//!
//! Transition functions are called once per row, so they do no allocation on
//! the boolean path and skip rows with any NULL input (NULL never becomes a class).

use mlmon_core::accumulator::Accumulator;
use mlmon_core::cost::BinaryCosts;
use mlmon_core::error::{check_finite, check_weight};
use mlmon_core::metrics::{self, Average};
use mlmon_core::{Confusion, LabelKind};
use pgrx::prelude::*;
use pgrx::Internal;

use super::{decode, encode};
use crate::pg::errors::OrRaise;
use crate::pg::aggregate_state::{new_state, state_ref, with_state};

fn update(
    state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    kind: LabelKind,
    weighted: bool,
    add: impl FnOnce(&mut Accumulator),
) -> Internal {
    with_state(state, fcinfo, || Accumulator::new(kind, weighted), add).0
}

/// Validated weight, or None to skip the row (NULL weight).
fn weight_of(weight: Option<f64>) -> Option<f64> {
    let w = weight?;
    check_weight("weight", w).or_raise();
    Some(w)
}

// confusion_matrix(boolean, boolean) uses the hand-written fast path in `fast_path.rs`.

#[pg_extern(sql = false)]
fn confusion_trans_bool_w(
    state: Internal,
    predicted: Option<bool>,
    actual: Option<bool>,
    weight: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let (Some(p), Some(a), Some(w)) = (predicted, actual, weight_of(weight)) else { return state };
    update(state, fcinfo, LabelKind::Binary, true, |acc| acc.add_binary(a, p, w))
}

/// Predicted positive when `score >= threshold` (scikit-learn's convention for
/// thresholded decision scores).
fn thresholded(score: Option<f64>, threshold: Option<f64>) -> Option<bool> {
    let (s, t) = (score?, threshold?);
    check_finite("threshold", t).or_raise();
    check_finite("score", s).or_raise();
    Some(s >= t)
}

#[pg_extern(sql = false)]
fn confusion_trans_score(
    state: Internal,
    score: Option<f64>,
    actual: Option<bool>,
    threshold: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let (Some(p), Some(a)) = (thresholded(score, threshold), actual) else { return state };
    update(state, fcinfo, LabelKind::Binary, false, |acc| acc.add_binary(a, p, 1.0))
}

#[pg_extern(sql = false)]
fn confusion_trans_score_w(
    state: Internal,
    score: Option<f64>,
    actual: Option<bool>,
    threshold: Option<f64>,
    weight: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let (Some(p), Some(a), Some(w)) = (thresholded(score, threshold), actual, weight_of(weight)) else {
        return state;
    };
    update(state, fcinfo, LabelKind::Binary, true, |acc| acc.add_binary(a, p, w))
}

#[pg_extern(sql = false)]
fn confusion_trans_int(state: Internal, predicted: Option<i64>, actual: Option<i64>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let (Some(p), Some(a)) = (predicted, actual) else { return state };
    update(state, fcinfo, LabelKind::Integer, false, |acc| acc.add_integer(a, p, 1.0).or_raise())
}

#[pg_extern(sql = false)]
fn confusion_trans_int_w(
    state: Internal,
    predicted: Option<i64>,
    actual: Option<i64>,
    weight: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let (Some(p), Some(a), Some(w)) = (predicted, actual, weight_of(weight)) else { return state };
    update(state, fcinfo, LabelKind::Integer, true, |acc| acc.add_integer(a, p, w).or_raise())
}

#[pg_extern(sql = false)]
fn confusion_trans_text(state: Internal, predicted: Option<&str>, actual: Option<&str>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let (Some(p), Some(a)) = (predicted, actual) else { return state };
    update(state, fcinfo, LabelKind::Text, false, |acc| acc.add_text(a, p, 1.0).or_raise())
}

#[pg_extern(sql = false)]
fn confusion_trans_text_w(
    state: Internal,
    predicted: Option<&str>,
    actual: Option<&str>,
    weight: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let (Some(p), Some(a), Some(w)) = (predicted, actual, weight_of(weight)) else { return state };
    update(state, fcinfo, LabelKind::Text, true, |acc| acc.add_text(a, p, w).or_raise())
}

/// Combine for parallel aggregation. The result always lives in the aggregate
/// context: a deserialized input lives in per-tuple memory and must be copied.
#[pg_extern(sql = false)]
fn confusion_combine(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    match (state_ref::<Accumulator>(&a).is_some(), state_ref::<Accumulator>(&b)) {
        (_, None) => a,
        (false, Some(other)) => new_state(other.clone(), fcinfo),
        (true, Some(other)) => {
            let other = other.clone();
            with_state(a, fcinfo, || unreachable!("state is initialized"), |acc: &mut Accumulator| acc.merge(&other).or_raise()).0
        }
    }
}

#[pg_extern(sql = false)]
fn confusion_serialize(state: Internal) -> Vec<u8> {
    let acc = state_ref::<Accumulator>(&state).expect("serialize is strict");
    encode(&acc.to_confusion().or_raise())
}

#[pg_extern(sql = false)]
fn confusion_deserialize(bytes: &[u8], _unused: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    new_state(Accumulator::from_confusion(decode(bytes)).or_raise(), fcinfo)
}

fn final_matrix(state: &Internal) -> Option<Confusion> {
    state_ref::<Accumulator>(state).map(|acc| acc.to_confusion().or_raise())
}

#[pg_extern(sql = false)]
fn confusion_final(state: Internal) -> Option<Vec<u8>> {
    final_matrix(&state).map(|cm| encode(&cm))
}

// One-step aggregates: the same state, read with the default averaging
// (positive class for booleans, macro for multiclass).

fn default_average(cm: &Confusion) -> Average {
    Average::resolve(cm, None, None).or_raise()
}

#[pg_extern(sql = false)]
fn confusion_final_accuracy(state: Internal) -> Option<f64> {
    metrics::accuracy(&final_matrix(&state)?)
}

#[pg_extern(sql = false)]
fn confusion_final_precision(state: Internal) -> Option<f64> {
    let cm = final_matrix(&state)?;
    metrics::precision(&cm, &default_average(&cm))
}

#[pg_extern(sql = false)]
fn confusion_final_recall(state: Internal) -> Option<f64> {
    let cm = final_matrix(&state)?;
    metrics::recall(&cm, &default_average(&cm))
}

#[pg_extern(sql = false)]
fn confusion_final_f1(state: Internal) -> Option<f64> {
    let cm = final_matrix(&state)?;
    metrics::f1(&cm, &default_average(&cm))
}

/// `mlmon.cost_weighted_loss`: a running float8 sum, combined with `float8pl`.
#[pg_extern(sql = false)]
fn cost_loss_trans(
    total: Option<f64>,
    predicted: Option<bool>,
    actual: Option<bool>,
    fp_cost: Option<f64>,
    fn_cost: Option<f64>,
    tp_cost: Option<f64>,
    tn_cost: Option<f64>,
) -> Option<f64> {
    let (Some(p), Some(a), Some(fp), Some(fn_), Some(tp), Some(tn)) = (predicted, actual, fp_cost, fn_cost, tp_cost, tn_cost)
    else {
        return total;
    };
    let costs = BinaryCosts { fp, fn_, tp, tn }.validated().or_raise();
    Some(total.unwrap_or(0.0) + costs.of(a, p))
}

#[pg_extern(sql = false)]
fn cost_loss_trans4(total: Option<f64>, predicted: Option<bool>, actual: Option<bool>, fp_cost: Option<f64>, fn_cost: Option<f64>) -> Option<f64> {
    cost_loss_trans(total, predicted, actual, fp_cost, fn_cost, Some(0.0), Some(0.0))
}
