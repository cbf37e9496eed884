//! SQL plumbing shared by every mergeable state type: text and binary I/O,
//! `merge`, and the parallel combine/serialize/deserialize functions of
//! aggregates whose transition state is the core type itself. Each type's
//! module exports thin `#[pg_extern]` wrappers around these.

use std::ffi::{CStr, CString};

use mlmon_core::state::State;
use mlmon_core::Error;
use pgrx::prelude::*;
use pgrx::Internal;

use crate::pg::errors::{raise, OrRaise};
use crate::pg::aggregate_state::{new_state, state_ref, with_state};
use crate::pg::datum::take_receive_buffer;

pub fn decode<S: State>(bytes: &[u8]) -> S {
    S::decode(bytes).or_raise()
}

pub fn text_in<S: State>(input: &CStr) -> Vec<u8> {
    let text = input.to_str().unwrap_or_else(|_| raise(Error::BadText("not valid UTF-8".into())));
    S::from_json(text).or_raise().encode()
}

pub fn text_out<S: State>(bytes: &[u8]) -> CString {
    CString::new(decode::<S>(bytes).to_json()).expect("JSON has no NUL bytes")
}

/// Binary receive re-encodes, so what is stored is validated and canonical.
pub fn binary_recv<S: State>(buffer: Internal) -> Vec<u8> {
    decode::<S>(&take_receive_buffer(buffer)).encode()
}

pub fn binary_send<S: State>(bytes: &[u8]) -> Vec<u8> {
    decode::<S>(bytes).encode()
}

/// `merge(a, b)`; NULL acts as the empty state.
pub fn merge<S: State>(a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Vec<u8>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.to_vec()),
        (Some(a), Some(b)) => {
            let mut merged = decode::<S>(a);
            merged.merge_from(&decode::<S>(b)).or_raise();
            Some(merged.encode())
        }
    }
}

/// Parallel combine. The result lives in the aggregate context: a
/// deserialized input lives in per-tuple memory and must be copied.
pub fn combine<S: State + 'static>(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    match (state_ref::<S>(&a).is_some(), state_ref::<S>(&b)) {
        (_, None) => a,
        (false, Some(other)) => new_state(other.clone(), fcinfo),
        (true, Some(other)) => {
            let other = other.clone();
            with_state(a, fcinfo, || unreachable!("state is initialized"), |s: &mut S| s.merge_from(&other).or_raise()).0
        }
    }
}

pub fn serialize<S: State + 'static>(state: Internal) -> Vec<u8> {
    state_ref::<S>(&state).expect("serialize is strict").encode()
}

pub fn deserialize<S: State + 'static>(bytes: &[u8], fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    new_state(decode::<S>(bytes), fcinfo)
}

/// The final value of an aggregate whose state is `S`: NULL for no rows.
pub fn finish<S: State + 'static>(state: &Internal) -> Option<&S> {
    state_ref::<S>(state)
}

/// Exports the SQL-facing functions every state type has, named
/// `<prefix>_in`, `_out`, `_recv`, `_send`, `_merge` (type I/O and `merge`) and
/// `_combine`, `_serialize`, `_deserialize`, `_final` (parallel aggregation
/// over an internal state of the same type). `sql/aggregates/state_types.sql` binds them.
#[macro_export]
macro_rules! state_type {
    ($ty:ty, $prefix:ident) => {
        ::paste::paste! {
            #[pg_extern(sql = false)]
            fn [<$prefix _in>](input: &::std::ffi::CStr) -> Vec<u8> {
                $crate::aggregates::state::text_in::<$ty>(input)
            }
            #[pg_extern(sql = false)]
            fn [<$prefix _out>](bytes: &[u8]) -> ::std::ffi::CString {
                $crate::aggregates::state::text_out::<$ty>(bytes)
            }
            #[pg_extern(sql = false)]
            fn [<$prefix _recv>](buffer: ::pgrx::Internal) -> Vec<u8> {
                $crate::aggregates::state::binary_recv::<$ty>(buffer)
            }
            #[pg_extern(sql = false)]
            fn [<$prefix _send>](bytes: &[u8]) -> Vec<u8> {
                $crate::aggregates::state::binary_send::<$ty>(bytes)
            }
            #[pg_extern(sql = false)]
            fn [<$prefix _merge>](a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Vec<u8>> {
                $crate::aggregates::state::merge::<$ty>(a, b)
            }
            #[pg_extern(sql = false)]
            fn [<$prefix _combine>](
                a: ::pgrx::Internal,
                b: ::pgrx::Internal,
                fcinfo: ::pgrx::pg_sys::FunctionCallInfo,
            ) -> ::pgrx::Internal {
                $crate::aggregates::state::combine::<$ty>(a, b, fcinfo)
            }
            #[pg_extern(sql = false)]
            fn [<$prefix _serialize>](state: ::pgrx::Internal) -> Vec<u8> {
                $crate::aggregates::state::serialize::<$ty>(state)
            }
            #[pg_extern(sql = false)]
            fn [<$prefix _deserialize>](
                bytes: &[u8],
                _unused: ::pgrx::Internal,
                fcinfo: ::pgrx::pg_sys::FunctionCallInfo,
            ) -> ::pgrx::Internal {
                $crate::aggregates::state::deserialize::<$ty>(bytes, fcinfo)
            }
            #[pg_extern(sql = false)]
            fn [<$prefix _final>](state: ::pgrx::Internal) -> Option<Vec<u8>> {
                $crate::aggregates::state::finish::<$ty>(&state).map(::mlmon_core::state::State::encode)
            }
        }
    };
}

/// Final functions of one-step aggregates (`mlmon.mae(predicted, actual)`):
/// read one named metric from the internal state `$ty` with `$metric`.
#[macro_export]
macro_rules! one_step_finals {
    ($ty:ty, $metric:path, { $($fn_name:ident => $name:literal),* $(,)? }) => {$(
        #[pg_extern(sql = false)]
        fn $fn_name(state: ::pgrx::Internal) -> Option<f64> {
            $metric($crate::aggregates::state::finish::<$ty>(&state)?, $name)
        }
    )*};
}
