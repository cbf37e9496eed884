//! The online feature read's entry points: `mlmon.feature_at` and
//! `mlmon.latest_features` as C functions. They call the view's cached
//! reader by OID (`readers.rs` finds and re-validates it), or the checked
//! SQL path (`mlmon._feature_at_checked`), which also handles NULL
//! arguments and raises the errors of unknown or broken views.
//!
//! A C function rather than a SQL wrapper: the planner re-parses the body of
//! an inlined SQL function every time it plans the caller's query, which cost
//! about a sixth of a `latest_features` call.

#![allow(unsafe_code)]

use std::ffi::CStr;

use pgrx::prelude::*;

use super::readers::usable_reader;
use crate::pg::fmgr::{as_text, call_function, from_cstring, function_oid, may_execute, v1_function};

v1_function!(feature_at_entry);
v1_function!(latest_features_entry);

/// `mlmon.feature_at(view text, entity anyelement|text, at timestamptz) RETURNS
/// jsonb`: the view's reader when it has a usable one, else the checked path.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn feature_at_entry(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: sql/features declares this function with three arguments.
    unsafe {
        let args = (*fcinfo).args.as_slice(3);
        read_features(fcinfo, args[0], args[1], args[2])
    }
}

/// `mlmon.latest_features(view text, entity anyelement|text) RETURNS jsonb`:
/// `feature_at(view, entity, now())`. now() is the transaction's start.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn latest_features_entry(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: sql/features declares this function with two arguments.
    unsafe {
        let args = (*fcinfo).args.as_slice(2);
        let now = pg_sys::NullableDatum { value: pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp()), isnull: false };
        read_features(fcinfo, args[0], args[1], now)
    }
}

/// The features of `entity` (argument 1 of `fcinfo`, of any type) as known at
/// `at`: called by OID through the view's cached reader, or by the checked
/// path.
///
/// # Safety
/// `fcinfo` is the current call's, and the datums are its arguments.
unsafe fn read_features(
    fcinfo: pg_sys::FunctionCallInfo,
    view: pg_sys::NullableDatum,
    entity: pg_sys::NullableDatum,
    at: pg_sys::NullableDatum,
) -> pg_sys::Datum {
    // SAFETY: the caller's promise; the reader is one of mlmon's, with the
    // signature (key type, timestamptz) that `readers.rs` checked.
    unsafe {
        let entity_type = pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 1);
        if entity_type == pg_sys::InvalidOid {
            pgrx::error!("mlmon could not determine the type of the entity argument");
        }
        if !view.isnull && !entity.isnull && !at.isnull {
            let name = CStr::from_ptr(pg_sys::text_to_cstring(view.value.cast_mut_ptr())).to_string_lossy().into_owned();
            if let Some((reader, key_type)) = usable_reader(&name).filter(|&(reader, _)| may_execute(reader)) {
                // The entity is compared in the view's key type, as the
                // checked path does: through text, unless it already has it.
                let key = if entity_type == key_type {
                    entity.value
                } else {
                    let text = as_text(entity.value, entity_type);
                    from_cstring(key_type, pg_sys::text_to_cstring(text.cast_mut_ptr()))
                };
                let mut flinfo = pg_sys::FmgrInfo::default();
                pg_sys::fmgr_info(reader, &mut flinfo);
                // FunctionCall2Coll raises if a reader ever returned NULL.
                return pg_sys::FunctionCall2Coll(&mut flinfo, pg_sys::InvalidOid, key, at.value);
            }
        }
        let entity_text = pg_sys::NullableDatum {
            value: if entity.isnull { pg_sys::Datum::from(0) } else { as_text(entity.value, entity_type) },
            isnull: entity.isnull,
        };
        let checked = function_oid(c"mlmon._feature_at_checked(text, text, timestamp with time zone)");
        call_function(checked, fcinfo, [view, entity_text, at])
    }
}
