//! The V1 entry point of the unweighted regression transition: the per-row
//! work is a few multiply-adds, which pgrx's generic wrapper cost several
//! times over. Rows it does not take (the first, NULLs, non-finite values)
//! go to pgrx's guarded wrapper of `regression_trans` in `mod.rs`.

#![allow(unsafe_code)]

use mlmon_core::regression::RegressionSummary;
use pgrx::prelude::*;

use crate::pg::datum::float8;
use crate::pg::fmgr::{two_argument_fast_path, v1_function};

v1_function!(regression_trans_fast);

// pgrx's guarded wrapper of `regression_trans`.
extern "C-unwind" {
    fn regression_trans_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// `regression_summary(predicted, actual)` and the one-step mae, mse, ....
#[no_mangle]
pub unsafe extern "C-unwind" fn regression_trans_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: sql/aggregates/regression.sql declares (internal, float8, float8) with this state.
    unsafe {
        two_argument_fast_path(fcinfo, regression_trans_wrapper, |s: &mut RegressionSummary, predicted, actual| {
            s.try_add_unweighted(float8(predicted), float8(actual))
        })
    }
}
