//! An aggregate's transition state: a Rust value living in the aggregate's
//! memory context, reached through the `internal` pointer PostgreSQL passes
//! from call to call. The value is dropped (its Rust allocations freed) when
//! that context is reset.

#![allow(unsafe_code)]

use pgrx::prelude::*;
use pgrx::{Internal, PgMemoryContexts};

/// Returns the aggregate memory context, or raises if not called as an aggregate.
fn aggregate_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::MemoryContext {
    let mut context: pg_sys::MemoryContext = std::ptr::null_mut();
    // SAFETY: fcinfo comes from PostgreSQL's function manager for this call.
    let is_aggregate = unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) };
    if is_aggregate == 0 {
        pgrx::error!("mlmon transition functions may only be called by aggregates");
    }
    context
}

/// Gives mutable access to the aggregate state behind `state`, creating it with
/// `init` in the aggregate memory context on first use.
pub fn with_state<T, R>(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    init: impl FnOnce() -> T,
    f: impl FnOnce(&mut T) -> R,
) -> (Internal, R) {
    if !state.initialized() {
        let context = aggregate_context(fcinfo);
        let value = init();
        // SAFETY: the aggregate context outlives every call of this aggregate.
        state = unsafe { PgMemoryContexts::For(context).switch_to(|_| Internal::new(value)) };
    }
    // SAFETY: every mlmon aggregate stores exactly one `T` behind its internal
    // state, created above by this function with the same `T`.
    let value = unsafe { state.get_mut::<T>() }.expect("initialized state");
    let result = f(value);
    (state, result)
}

/// Reads the aggregate state, if any.
pub fn state_ref<T>(state: &Internal) -> Option<&T> {
    // SAFETY: as in `with_state`, the pointer was created for this `T`.
    unsafe { state.get::<T>() }
}

/// Moves `value` into the aggregate memory context as a new state.
pub fn new_state<T>(value: T, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let context = aggregate_context(fcinfo);
    // SAFETY: as above.
    unsafe { PgMemoryContexts::For(context).switch_to(|_| Internal::new(value)) }
}
