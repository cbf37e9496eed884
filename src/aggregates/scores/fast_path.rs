//! V1 entry points of the unweighted score transitions: the per-row work is
//! a hash-map update, which pgrx's generic wrapper cost several times over.
//! Rows the fast path does not take (the first, NULLs, invalid scores, a
//! state that must compress) go to pgrx's guarded wrappers of the functions
//! in `mod.rs`.

#![allow(unsafe_code)]

use mlmon_core::scores::ScoreSummary;
use pgrx::prelude::*;

use crate::pg::datum::float8;
use crate::pg::fmgr::{two_argument_fast_path, v1_function};

v1_function!(scores_trans_fast);
v1_function!(scores_exact_trans_fast);

// pgrx's guarded wrappers of `scores_trans` and `scores_exact_trans`.
extern "C-unwind" {
    fn scores_trans_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    fn scores_exact_trans_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// A `(score float8, actual boolean)` row.
fn add_score(summary: &mut ScoreSummary, score: pg_sys::Datum, actual: pg_sys::Datum) -> bool {
    summary.try_add_unweighted(float8(score), actual.value() != 0)
}

/// `score_summary(score, actual)`.
#[no_mangle]
pub unsafe extern "C-unwind" fn scores_trans_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: sql/aggregates/scores.sql declares (internal, float8, boolean) with this state.
    unsafe { two_argument_fast_path(fcinfo, scores_trans_wrapper, add_score) }
}

/// The exact one-step score aggregates (`roc_auc(score, actual)`, ...).
#[no_mangle]
pub unsafe extern "C-unwind" fn scores_exact_trans_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: as above.
    unsafe { two_argument_fast_path(fcinfo, scores_exact_trans_wrapper, add_score) }
}
