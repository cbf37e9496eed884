//! `mlmon.scores`: score-level state of a binary classifier (ranking,
//! probability and calibration metrics), plus the exact one-step aggregates.

mod fast_path;

use mlmon_core::scores::ScoreSummary as Summary;
use mlmon_core::state::State;
use mlmon_core::Error;
use pgrx::prelude::*;
use pgrx::Internal;

use crate::pg::errors::{bigint_count, raise, OrRaise};
use crate::pg::aggregate_state::{new_state, with_state};
use crate::aggregates::state;

crate::state_type!(Summary, scores);

fn add_row(
    state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    init: fn() -> Summary,
    score: Option<f64>,
    actual: Option<bool>,
    weight: Option<f64>,
) -> Internal {
    let (Some(s), Some(a), Some(w)) = (score, actual, weight) else { return state };
    with_state(state, fcinfo, init, |summary| summary.add(s, a, w).or_raise()).0
}

// Transition functions skip rows with any NULL input. The bounded state
// (score_summary) compresses beyond 4096 distinct scores; the exact one-step
// aggregates keep every distinct score.

/// The unweighted and weighted transition functions of a score aggregate
/// whose state starts as `$init()`.
macro_rules! score_transitions {
    ($unweighted:ident, $weighted:ident, $init:path) => {
        #[pg_extern(sql = false)]
        fn $unweighted(state: Internal, score: Option<f64>, actual: Option<bool>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
            add_row(state, fcinfo, $init, score, actual, Some(1.0))
        }

        #[pg_extern(sql = false)]
        fn $weighted(
            state: Internal,
            score: Option<f64>,
            actual: Option<bool>,
            weight: Option<f64>,
            fcinfo: pg_sys::FunctionCallInfo,
        ) -> Internal {
            add_row(state, fcinfo, $init, score, actual, weight)
        }
    };
}

score_transitions!(scores_trans, scores_trans_w, Summary::new);
score_transitions!(scores_exact_trans, scores_exact_trans_w, Summary::unbounded);

/// The stored form does not carry "unbounded"; the exact aggregates restore it.
#[pg_extern(sql = false)]
fn scores_exact_deserialize(bytes: &[u8], _unused: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    new_state(Summary::decode_unbounded(bytes).or_raise(), fcinfo)
}

fn metric(summary: &Summary, name: &str) -> Option<f64> {
    match name {
        "roc_auc" => summary.roc_auc(),
        "average_precision" => summary.average_precision(),
        "log_loss" => summary.log_loss(),
        "brier_score" => summary.brier_score(),
        other => raise(Error::invalid(
            "metric",
            format!("unknown score metric {other:?}"),
            "use roc_auc, average_precision, log_loss or brier_score",
        )),
    }
}

#[pg_extern(sql = false)]
fn scores_metric(bytes: &[u8], name: &str) -> Option<f64> {
    metric(&state::decode::<Summary>(bytes), name)
}

crate::one_step_finals!(Summary, metric, {
    scores_final_roc_auc => "roc_auc",
    scores_final_average_precision => "average_precision",
    scores_final_log_loss => "log_loss",
    scores_final_brier_score => "brier_score",
});

#[pg_extern(sql = false)]
fn scores_count(bytes: &[u8]) -> i64 {
    bigint_count(state::decode::<Summary>(bytes).count())
}

#[pg_extern(sql = false)]
fn scores_is_exact(bytes: &[u8]) -> bool {
    state::decode::<Summary>(bytes).is_exact()
}

fn bin_count(bins: i32) -> usize {
    if bins <= 0 {
        raise(Error::invalid("bins", format!("bins must be positive, got {bins}"), "pass e.g. bins => 10"));
    }
    bins as usize
}

#[pg_extern(sql = false)]
fn scores_ece(bytes: &[u8], bins: i32) -> Option<f64> {
    state::decode::<Summary>(bytes).ece(bin_count(bins)).or_raise()
}

#[pg_extern(sql = false)]
fn scores_calibration(
    bytes: &[u8],
    bins: i32,
) -> TableIterator<
    'static,
    (
        name!(bin_lower, f64),
        name!(bin_upper, f64),
        name!(mean_predicted, f64),
        name!(fraction_positive, f64),
        name!(n, i64),
    ),
> {
    let rows = state::decode::<Summary>(bytes).calibration(bin_count(bins)).or_raise();
    TableIterator::new(rows.into_iter().map(|(lo, hi, mean, frac, n)| (lo, hi, mean, frac, bigint_count(n))))
}

#[pg_extern(sql = false)]
fn scores_roc_curve(bytes: &[u8]) -> TableIterator<'static, (name!(threshold, f64), name!(fpr, f64), name!(tpr, f64))> {
    TableIterator::new(state::decode::<Summary>(bytes).roc_curve())
}

#[pg_extern(sql = false)]
fn scores_pr_curve(
    bytes: &[u8],
) -> TableIterator<'static, (name!(threshold, f64), name!(precision, f64), name!(recall, f64))> {
    TableIterator::new(state::decode::<Summary>(bytes).pr_curve())
}

#[pg_extern(sql = false)]
fn scores_confusion_at(bytes: &[u8], threshold: f64) -> Vec<u8> {
    state::decode::<Summary>(bytes).confusion_at(threshold).or_raise().encode()
}

#[pg_extern(sql = false)]
fn scores_best_threshold(
    bytes: &[u8],
    fp_cost: f64,
    fn_cost: f64,
) -> TableIterator<'static, (name!(threshold, f64), name!(expected_cost, f64))> {
    let best = state::decode::<Summary>(bytes).best_threshold(fp_cost, fn_cost).or_raise();
    TableIterator::new(best)
}
