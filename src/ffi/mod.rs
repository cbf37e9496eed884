//! The only module allowed `unsafe`: everything that touches raw PostgreSQL
//! pointers. Aggregate transition state lives in the aggregate's memory
//! context, reached through `internal` pointers; binary receive reads a
//! `StringInfo`; the hottest transition functions have hand-written V1 entry
//! points; and the online feature read calls a view's reader by OID
//! (`readers.rs` holds its logic, this module its calls into PostgreSQL).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};

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
/// `init` in the aggregate memory context on first use. The state is dropped
/// (and its Rust allocations freed) when that context is reset.
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

/// Takes the unread bytes of a binary-receive buffer (`StringInfo`).
pub fn take_receive_buffer(buffer: Internal) -> Vec<u8> {
    let Some(datum) = buffer.unwrap() else {
        pgrx::error!("receive function called without a buffer");
    };
    // SAFETY: PostgreSQL passes a valid StringInfo to type receive functions.
    unsafe {
        let info = datum.cast_mut_ptr::<pg_sys::StringInfoData>();
        let start = (*info).cursor as usize;
        let len = (*info).len as usize;
        let bytes = std::slice::from_raw_parts((*info).data.cast::<u8>().add(start), len - start).to_vec();
        (*info).cursor = (*info).len;
        bytes
    }
}

// Hand-written V1 entry points for the hottest transition functions.
//
// The per-row work of `confusion_matrix(boolean, boolean)` is two compares and
// two adds, of `regression_summary` a few multiply-adds, of `score_summary` a
// hash-map update; pgrx's generic wrapper (argument unboxing, panic guard,
// result boxing) costs several times that, which put these aggregates at 2-5x
// a `count(*)` scan. The fast paths read the arguments directly and cannot
// panic or raise: every row they do not handle (the first row, NULLs, invalid
// values, a state that must compress) goes to a guarded function, which
// allocates the state in the aggregate context or raises the proper error.

/// Declares the V1 calling convention of a hand-written entry point.
macro_rules! v1_function {
    ($name:ident) => {
        ::paste::paste! {
            #[no_mangle]
            pub extern "C" fn [<pg_finfo_ $name>]() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
                static V1: ::pgrx::pg_sys::Pg_finfo_record = ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
                &V1
            }
        }
    };
}

v1_function!(confusion_trans_bool_fast);
v1_function!(scores_trans_fast);
v1_function!(scores_exact_trans_fast);
v1_function!(regression_trans_fast);
v1_function!(monitor_insert);
v1_function!(monitor_enter);

// pgrx's guarded wrappers of the transition functions in `scores.rs` and
// `regression.rs`: the slow paths.
extern "C-unwind" {
    fn scores_trans_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    fn scores_exact_trans_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
    fn regression_trans_wrapper(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// Shared body of the `(internal, a, b)` fast paths: `add` updates the state
/// `T` from the two argument datums, or returns false to take `slow`.
///
/// # Safety
/// `fcinfo` must carry three arguments whose first is NULL or a `T` created by
/// `with_state` in this aggregate, as the SQL declarations guarantee.
unsafe fn two_argument_fast_path<T>(
    fcinfo: pg_sys::FunctionCallInfo,
    slow: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    add: impl FnOnce(&mut T, pg_sys::Datum, pg_sys::Datum) -> bool,
) -> pg_sys::Datum {
    // SAFETY: see the function's contract.
    unsafe {
        let args = (*fcinfo).args.as_slice(3);
        let (state, a, b) = (args[0], args[1], args[2]);
        if !(state.isnull || a.isnull || b.isnull) && add(&mut *state.value.cast_mut_ptr::<T>(), a.value, b.value) {
            return state.value;
        }
        slow(fcinfo)
    }
}

/// float8 is passed by value on the 64-bit platforms PostgreSQL 15 builds for.
fn float8(datum: pg_sys::Datum) -> f64 {
    f64::from_bits(datum.value() as u64)
}

/// A `(score float8, actual boolean)` row for the score fast paths.
fn add_score(summary: &mut mlmon_core::scores::ScoreSummary, score: pg_sys::Datum, actual: pg_sys::Datum) -> bool {
    summary.try_add_unweighted(float8(score), actual.value() != 0)
}

/// `score_summary(score, actual)`.
#[no_mangle]
pub unsafe extern "C-unwind" fn scores_trans_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: sql/scores.sql declares (internal, float8, boolean) with this state.
    unsafe { two_argument_fast_path(fcinfo, scores_trans_wrapper, add_score) }
}

/// The exact one-step score aggregates (`roc_auc(score, actual)`, ...).
#[no_mangle]
pub unsafe extern "C-unwind" fn scores_exact_trans_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: as above.
    unsafe { two_argument_fast_path(fcinfo, scores_exact_trans_wrapper, add_score) }
}

/// `regression_summary(predicted, actual)` and the one-step mae, mse, ....
#[no_mangle]
pub unsafe extern "C-unwind" fn regression_trans_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    use mlmon_core::regression::RegressionSummary;
    // SAFETY: sql/regression.sql declares (internal, float8, float8) with this state.
    unsafe {
        two_argument_fast_path(fcinfo, regression_trans_wrapper, |s: &mut RegressionSummary, predicted, actual| {
            s.try_add_unweighted(float8(predicted), float8(actual))
        })
    }
}

/// `confusion_matrix(boolean, boolean)` and its one-step siblings: the first
/// row goes through the guarded `start_binary_state`, which allocates the
/// state in the aggregate context.
#[no_mangle]
pub unsafe extern "C-unwind" fn confusion_trans_bool_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    use mlmon_core::accumulator::Accumulator;
    // SAFETY: PostgreSQL calls this with three arguments (internal, bool, bool),
    // as declared in sql/confusion.sql; the state pointer was created by
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
        if let Accumulator::Binary { cells, .. } = &mut *state.value.cast_mut_ptr::<Accumulator>() {
            let cell = &mut cells[(a as usize) * 2 + p as usize];
            cell.n += 1;
            cell.w += 1.0;
        }
        state.value
    }
}

#[pg_guard]
extern "C-unwind" fn start_binary_state(fcinfo: pg_sys::FunctionCallInfo, actual: bool, predicted: bool) -> pg_sys::Datum {
    use mlmon_core::{accumulator::Accumulator, LabelKind};
    let mut accumulator = Accumulator::new(LabelKind::Binary, false);
    accumulator.add_binary(actual, predicted, 1.0);
    new_state(accumulator, fcinfo).unwrap().expect("new state is not null")
}

// The online feature read (see `readers.rs`).

v1_function!(feature_at_entry);
v1_function!(latest_features_entry);

/// `mlmon.feature_at(view text, entity anyelement|text, at timestamptz) RETURNS
/// jsonb`: the view's reader when it has a usable one, else the checked path.
/// A C function rather than a SQL wrapper: the planner re-parses the body of
/// an inlined SQL function every time it plans the caller's query, which cost
/// about a sixth of a `latest_features` call.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn feature_at_entry(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: sql/features.sql declares this function with three arguments.
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
    // SAFETY: sql/features.sql declares this function with two arguments.
    unsafe {
        let args = (*fcinfo).args.as_slice(2);
        let now = pg_sys::NullableDatum { value: pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp()), isnull: false };
        read_features(fcinfo, args[0], args[1], now)
    }
}

/// The features of `entity` (argument 1 of `fcinfo`, of any type) as known at
/// `at`: called by OID through the view's cached reader, or by the checked
/// path (`mlmon._feature_at_checked`), which also handles NULL arguments and
/// raises the errors of unknown or broken views.
///
/// SAFETY: `fcinfo` is the current call's, and the datums are its arguments.
unsafe fn read_features(
    fcinfo: pg_sys::FunctionCallInfo,
    view: pg_sys::NullableDatum,
    entity: pg_sys::NullableDatum,
    at: pg_sys::NullableDatum,
) -> pg_sys::Datum {
    unsafe {
        let entity_type = pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 1);
        if entity_type == pg_sys::InvalidOid {
            pgrx::error!("mlmon could not determine the type of the entity argument");
        }
        if !view.isnull && !entity.isnull && !at.isnull {
            let name = CStr::from_ptr(pg_sys::text_to_cstring(view.value.cast_mut_ptr())).to_string_lossy().into_owned();
            if let Some((reader, key_type)) = crate::readers::usable_reader(&name).filter(|&(reader, _)| may_execute(reader)) {
                // The entity is compared in the view's key type, as the
                // checked path does: through text, unless it already has it.
                let key = if entity_type == key_type {
                    entity.value
                } else {
                    let text = entity_as_text(entity.value, entity_type);
                    from_cstring(key_type, pg_sys::text_to_cstring(text.cast_mut_ptr()))
                };
                let mut flinfo = pg_sys::FmgrInfo::default();
                pg_sys::fmgr_info(reader, &mut flinfo);
                // FunctionCall2Coll raises if a reader ever returned NULL.
                return pg_sys::FunctionCall2Coll(&mut flinfo, pg_sys::InvalidOid, key, at.value);
            }
        }
        let entity_text = pg_sys::NullableDatum {
            value: if entity.isnull { pg_sys::Datum::from(0) } else { entity_as_text(entity.value, entity_type) },
            isnull: entity.isnull,
        };
        call_checked(fcinfo, [view, entity_text, at])
    }
}

/// `value::text` for a value of type `type_oid`, by the same coercion as the
/// SQL cast (a cast function, a binary-compatible relabeling, or the type's
/// output function).
///
/// SAFETY: `value` is a valid, non-NULL datum of `type_oid`.
unsafe fn entity_as_text(value: pg_sys::Datum, type_oid: pg_sys::Oid) -> pg_sys::Datum {
    unsafe {
        let mut cast = pg_sys::InvalidOid;
        match pg_sys::find_coercion_pathway(pg_sys::TEXTOID, type_oid, pg_sys::CoercionContext::COERCION_EXPLICIT, &mut cast) {
            pg_sys::CoercionPathType::COERCION_PATH_RELABELTYPE => value,
            pg_sys::CoercionPathType::COERCION_PATH_FUNC => pg_sys::OidFunctionCall1Coll(cast, pg_sys::DEFAULT_COLLATION_OID, value),
            _ => {
                let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
                pg_sys::getTypeOutputInfo(type_oid, &mut output, &mut varlena);
                pg_sys::Datum::from(pg_sys::cstring_to_text(pg_sys::OidOutputFunctionCall(output, value)))
            }
        }
    }
}

/// A value of `type_oid` read from its text form by the type's input function
/// (which raises on malformed text, as a SQL cast would).
///
/// SAFETY: `text` is a valid C string.
unsafe fn from_cstring(type_oid: pg_sys::Oid, text: *mut std::ffi::c_char) -> pg_sys::Datum {
    unsafe {
        let (mut input, mut io_param) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
        pg_sys::getTypeInputInfo(type_oid, &mut input, &mut io_param);
        pg_sys::OidInputFunctionCall(input, text, io_param, -1)
    }
}

/// Calls `mlmon._feature_at_checked(view text, entity text, at timestamptz)`
/// with `args`, any of which may be NULL, and returns its result (or NULL).
///
/// SAFETY: `fcinfo` is the current call's; `args` hold valid datums.
unsafe fn call_checked(fcinfo: pg_sys::FunctionCallInfo, args: [pg_sys::NullableDatum; 3]) -> pg_sys::Datum {
    unsafe {
        let signature = c"mlmon._feature_at_checked(text, text, timestamp with time zone)";
        let checked = from_cstring(pg_sys::REGPROCEDUREOID, signature.as_ptr().cast_mut());
        let checked = pg_sys::Oid::from(checked.value() as u32);
        let mut flinfo = pg_sys::FmgrInfo::default();
        pg_sys::fmgr_info(checked, &mut flinfo);
        // A FunctionCallInfo for three arguments (SizeForFunctionCallInfo(3)).
        let size = std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>() + 3 * std::mem::size_of::<pg_sys::NullableDatum>();
        let call = pg_sys::palloc0(size).cast::<pg_sys::FunctionCallInfoBaseData>();
        (*call).flinfo = &mut flinfo;
        (*call).fncollation = (*fcinfo).fncollation;
        (*call).nargs = 3;
        (*call).args.as_mut_slice(3).copy_from_slice(&args);
        let result = flinfo.fn_addr.expect("a function address")(call);
        (*fcinfo).isnull = (*call).isnull;
        result
    }
}

/// A call by OID skips the EXECUTE check a SQL call makes, so make it.
fn may_execute(function: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup; a missing function is simply not executable.
    unsafe {
        pg_sys::pg_proc_aclcheck(function, pg_sys::GetUserId(), pg_sys::ACL_EXECUTE as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// Copies a palloc'd C string (NULL: None).
fn owned(p: *mut std::ffi::c_char) -> Option<CString> {
    // SAFETY: PostgreSQL's lsyscache functions return NULL or a valid C string.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_owned())
}

/// A function's name from the system cache, if it exists.
pub fn function_name(function: pg_sys::Oid) -> Option<CString> {
    // SAFETY: a syscache lookup by OID.
    owned(unsafe { pg_sys::get_func_name(function) })
}

/// A relation's (schema, name) from the system cache, if it exists.
pub fn relation_name(relation: pg_sys::Oid) -> Option<(CString, CString)> {
    // SAFETY: syscache lookups by OID.
    unsafe {
        let table = owned(pg_sys::get_rel_name(relation))?;
        Some((owned(pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relation)))?, table))
    }
}

/// The type of a relation's live (not dropped) column, if there is one.
pub fn column_type(relation: pg_sys::Oid, column: &CStr) -> Option<pg_sys::Oid> {
    // SAFETY: syscache lookups by OID and name.
    unsafe {
        let attnum = pg_sys::get_attnum(relation, column.as_ptr());
        (attnum != pg_sys::InvalidAttrNumber as i16).then(|| pg_sys::get_atttype(relation, attnum))
    }
}

mod helper_thread;
mod insert_trigger;
mod one_row;
pub(crate) use insert_trigger::try_bulk_lock;
pub(crate) use one_row::announce_chunks;
mod fill_helper;
mod probe;
mod spine;
mod training_set;
