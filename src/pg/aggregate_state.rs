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

/// Every state lives behind this header. The `internal` pointer PostgreSQL
/// passes carries no type, and anyone may CREATE AGGREGATE pairing one mlmon
/// transition function with another aggregate's final function (or with
/// another extension's): read as the wrong type, a state leaked memory
/// addresses (found by review). The tag, at offset 0 whatever `T` is
/// (`repr(C)`), is checked before a state is read as a `T`.
#[repr(C)]
struct Tagged<T> {
    tag: u64,
    value: T,
}

/// A tag per state type, fixed within a build (its `TypeId`, hashed by
/// SipHash with fixed keys), never 0.
fn tag_of<T: 'static>() -> u64 {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    std::any::TypeId::of::<T>().hash(&mut h);
    h.finish() | 1
}

/// The `T` behind a state pointer, or None if the state is not a `T`.
///
/// # Safety
/// `pointer` is a non-NULL `internal` aggregate state: a palloc'd chunk, of
/// at least 8 bytes (palloc's smallest), that stays valid for 'a.
pub unsafe fn typed_mut<'a, T: 'static>(pointer: *mut u8) -> Option<&'a mut T> {
    // SAFETY: the caller's promise; the tag is read as bytes whatever the
    // chunk holds, and only a chunk this module tagged for T is cast.
    unsafe {
        let tag = (pointer as *const u64).read_unaligned();
        (tag == tag_of::<T>()).then(|| &mut (*(pointer as *mut Tagged<T>)).value)
    }
}

fn wrong_type() -> ! {
    pgrx::error!("mlmon: an aggregate state of another type (a transition and a final function of different aggregates)")
}

/// Gives mutable access to the aggregate state behind `state`, creating it with
/// `init` in the aggregate memory context on first use.
pub fn with_state<T: 'static, R>(
    mut state: Internal,
    fcinfo: pg_sys::FunctionCallInfo,
    init: impl FnOnce() -> T,
    f: impl FnOnce(&mut T) -> R,
) -> (Internal, R) {
    if !state.initialized() {
        let context = aggregate_context(fcinfo);
        let value = Tagged { tag: tag_of::<T>(), value: init() };
        // SAFETY: the aggregate context outlives every call of this aggregate.
        state = unsafe { PgMemoryContexts::For(context).switch_to(|_| Internal::new(value)) };
    }
    // SAFETY: an initialized state is a non-NULL palloc'd chunk for this call.
    let value = unsafe { state.get_mut::<u8>().and_then(|p| typed_mut::<T>(p)) }.unwrap_or_else(|| wrong_type());
    let result = f(value);
    (state, result)
}

/// Reads the aggregate state, if any.
pub fn state_ref<T: 'static>(state: &Internal) -> Option<&T> {
    // SAFETY: as in `with_state`: an initialized state is a non-NULL palloc'd chunk.
    let pointer = unsafe { state.get::<u8>() }? as *const u8 as *mut u8;
    // SAFETY: the same chunk, valid as long as `state`; the reference handed
    // out is shared, the chunk is not written through it.
    Some(unsafe { typed_mut::<T>(pointer) }.map(|v| &*v).unwrap_or_else(|| wrong_type()))
}

/// Moves `value` into the aggregate memory context as a new state.
pub fn new_state<T: 'static>(value: T, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let context = aggregate_context(fcinfo);
    let value = Tagged { tag: tag_of::<T>(), value };
    // SAFETY: as above.
    unsafe { PgMemoryContexts::For(context).switch_to(|_| Internal::new(value)) }
}
