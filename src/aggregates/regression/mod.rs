//! `mlmon.regression`: mergeable regression-error summary and its metrics.

mod fast_path;

use mlmon_core::regression::RegressionSummary as Summary;
use pgrx::prelude::*;
use pgrx::Internal;

use mlmon_core::Error;

use crate::pg::errors::{bigint_count, raise, OrRaise};
use crate::pg::aggregate_state::with_state;
use crate::aggregates::state;

crate::state_type!(Summary, regression);

fn add_row(state: Internal, fcinfo: pg_sys::FunctionCallInfo, predicted: Option<f64>, actual: Option<f64>, weight: Option<f64>) -> Internal {
    let (Some(p), Some(a), Some(w)) = (predicted, actual, weight) else { return state };
    with_state(state, fcinfo, Summary::new, |s| s.add(p, a, w).or_raise()).0
}

/// Transition functions skip rows with any NULL input.
#[pg_extern(sql = false)]
fn regression_trans(state: Internal, predicted: Option<f64>, actual: Option<f64>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    add_row(state, fcinfo, predicted, actual, Some(1.0))
}

#[pg_extern(sql = false)]
fn regression_trans_w(
    state: Internal,
    predicted: Option<f64>,
    actual: Option<f64>,
    weight: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    add_row(state, fcinfo, predicted, actual, weight)
}

/// Which metric a one-step aggregate or accessor reads.
fn metric(summary: &Summary, name: &str) -> Option<f64> {
    match name {
        "mae" => summary.mae(),
        "mse" => summary.mse(),
        "rmse" => summary.rmse(),
        "mape" => summary.mape(),
        "r2" => summary.r2(),
        "mean_error" => summary.mean_error(),
        "explained_variance" => summary.explained_variance(),
        other => raise(Error::invalid("metric", format!("unknown regression metric {other:?}"), "use mae, mse, rmse, mape, r2, mean_error or explained_variance")),
    }
}

#[pg_extern(sql = false)]
fn regression_metric(bytes: &[u8], name: &str) -> Option<f64> {
    metric(&state::decode::<Summary>(bytes), name)
}

crate::one_step_finals!(Summary, metric, {
    regression_final_mae => "mae",
    regression_final_mse => "mse",
    regression_final_rmse => "rmse",
    regression_final_mape => "mape",
    regression_final_r2 => "r2",
});

#[pg_extern(sql = false)]
fn regression_count(bytes: &[u8]) -> i64 {
    bigint_count(state::decode::<Summary>(bytes).count())
}
