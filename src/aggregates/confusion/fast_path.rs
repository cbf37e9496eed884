//! The V1 entry point of `confusion_matrix(boolean, boolean)` and its
//! one-step siblings (`accuracy(boolean, boolean)`, ...): the per-row work
//! is two compares and two adds, which pgrx's generic wrapper cost several
//! times over (2-5x a `count(*)` scan). Every row it does not handle (the
//! first, which allocates the state) goes to a guarded function.

#![allow(unsafe_code)]

use mlmon_core::accumulator::Accumulator;
use mlmon_core::LabelKind;
use pgrx::prelude::*;

use crate::pg::aggregate_state::new_state;
use crate::pg::fmgr::v1_function;

v1_function!(confusion_trans_bool_fast);

/// `confusion_matrix(boolean, boolean)`: the first row goes through the
/// guarded `start_binary_state`, which allocates the state in the aggregate
/// context.
#[no_mangle]
pub unsafe extern "C-unwind" fn confusion_trans_bool_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: PostgreSQL calls this with three arguments (internal, bool, bool),
    // as declared in sql/aggregates/confusion.sql; the state pointer was created by
    // `start_binary_state` and lives in the aggregate memory context.
    unsafe {
        let args = (*fcinfo).args.as_slice(3);
        let (state, predicted, actual) = (args[0], args[1], args[2]);
        if predicted.isnull || actual.isnull {
            (*fcinfo).isnull = state.isnull;
            return state.value;
        }
        let (p, a) = (predicted.value.value() != 0, actual.value.value() != 0);
        if state.isnull {
            return start_binary_state(fcinfo, a, p);
        }
        match crate::pg::aggregate_state::typed_mut::<Accumulator>(state.value.cast_mut_ptr::<u8>()) {
            Some(Accumulator::Binary { cells, .. }) => {
                let cell = &mut cells[(a as usize) * 2 + p as usize];
                cell.n += 1;
                cell.w += 1.0;
            }
            Some(_) => {}
            // A state of another type (a user's aggregate pairing functions
            // of different aggregates): refused, in a guarded call.
            None => wrong_state(fcinfo),
        }
        state.value
    }
}

#[pg_guard]
extern "C-unwind" fn start_binary_state(fcinfo: pg_sys::FunctionCallInfo, actual: bool, predicted: bool) -> pg_sys::Datum {
    let mut accumulator = Accumulator::new(LabelKind::Binary, false);
    accumulator.add_binary(actual, predicted, 1.0);
    new_state(accumulator, fcinfo).unwrap().expect("new state is not null")
}

#[pg_guard]
extern "C-unwind" fn wrong_state(_fcinfo: pg_sys::FunctionCallInfo) {
    pgrx::error!("mlmon: an aggregate state of another type (a transition and a final function of different aggregates)")
}
