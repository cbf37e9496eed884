//! `mlmon.regression`: mergeable regression-error summary and its metrics.

use std::ffi::{CStr, CString};

use mlmon_core::regression::RegressionSummary as Summary;
use mlmon_core::state::State;
use pgrx::prelude::*;
use pgrx::Internal;

use mlmon_core::Error;

use crate::errors::{raise, OrRaise};
use crate::memory::with_state;
use crate::state;

#[pg_extern(sql = false)]
fn regression_in(input: &CStr) -> Vec<u8> {
    state::text_in::<Summary>(input)
}

#[pg_extern(sql = false)]
fn regression_out(bytes: &[u8]) -> CString {
    state::text_out::<Summary>(bytes)
}

#[pg_extern(sql = false)]
fn regression_recv(buffer: Internal) -> Vec<u8> {
    state::binary_recv::<Summary>(buffer)
}

#[pg_extern(sql = false)]
fn regression_send(bytes: &[u8]) -> Vec<u8> {
    state::binary_send::<Summary>(bytes)
}

#[pg_extern(sql = false)]
fn regression_merge(a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Vec<u8>> {
    state::merge::<Summary>(a, b)
}

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

#[pg_extern(sql = false)]
fn regression_combine(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    state::combine::<Summary>(a, b, fcinfo)
}

#[pg_extern(sql = false)]
fn regression_serialize(state: Internal) -> Vec<u8> {
    state::serialize::<Summary>(state)
}

#[pg_extern(sql = false)]
fn regression_deserialize(bytes: &[u8], _unused: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    state::deserialize::<Summary>(bytes, fcinfo)
}

#[pg_extern(sql = false)]
fn regression_final(state: Internal) -> Option<Vec<u8>> {
    state::finish::<Summary>(&state).map(State::encode)
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

macro_rules! one_step_final {
    ($($fn_name:ident => $metric:literal),* $(,)?) => {$(
        #[pg_extern(sql = false)]
        fn $fn_name(state: Internal) -> Option<f64> {
            metric(state::finish::<Summary>(&state)?, $metric)
        }
    )*};
}

one_step_final! {
    regression_final_mae => "mae",
    regression_final_mse => "mse",
    regression_final_rmse => "rmse",
    regression_final_mape => "mape",
    regression_final_r2 => "r2",
}

#[pg_extern(sql = false)]
fn regression_count(bytes: &[u8]) -> i64 {
    state::decode::<Summary>(bytes).count() as i64
}
