//! The function manager: hand-written V1 entry points, calls of functions
//! by OID (with arguments, or as a trigger), and type input and output.

#![allow(unsafe_code)]

use pgrx::pg_sys;

/// Declares the V1 calling convention of a hand-written entry point
/// (`PG_FUNCTION_INFO_V1`). pgrx's generic wrapper (argument unboxing, panic
/// guard, result boxing) costs several times the per-row work of the
/// hottest functions, so those are written against `fcinfo` directly.
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
pub(crate) use v1_function;

/// Shared body of `(internal, a, b)` aggregate transition fast paths: `add`
/// updates the state `T` from the two argument datums, or returns false to
/// take `slow` (pgrx's guarded wrapper, which allocates the first state and
/// raises the proper errors). The fast path itself cannot panic or raise.
///
/// # Safety
/// `fcinfo` must carry three arguments whose first is NULL or a `T` created by
/// `aggregate_state::with_state` in this aggregate, as the SQL declarations
/// guarantee.
pub unsafe fn two_argument_fast_path<T: 'static>(
    fcinfo: pg_sys::FunctionCallInfo,
    slow: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    add: impl FnOnce(&mut T, pg_sys::Datum, pg_sys::Datum) -> bool,
) -> pg_sys::Datum {
    // SAFETY: see the function's contract.
    unsafe {
        let args = (*fcinfo).args.as_slice(3);
        let (state, a, b) = (args[0], args[1], args[2]);
        if !(state.isnull || a.isnull || b.isnull) {
            // A state of another type goes to `slow`, which raises.
            if let Some(value) = crate::pg::aggregate_state::typed_mut::<T>(state.value.cast_mut_ptr::<u8>()) {
                if add(value, a.value, b.value) {
                    return state.value;
                }
            }
        }
        slow(fcinfo)
    }
}

/// Calls `function` with `args` (any of which may be NULL) and returns its
/// result, setting the caller's NULL flag from the callee's.
///
/// # Safety
/// `fcinfo` is the current call's; `args` hold valid datums of the types
/// `function` takes.
pub unsafe fn call_function<const N: usize>(
    function: pg_sys::Oid,
    fcinfo: pg_sys::FunctionCallInfo,
    args: [pg_sys::NullableDatum; N],
) -> pg_sys::Datum {
    // SAFETY: the caller's promise; the call info is palloc'd to
    // SizeForFunctionCallInfo(N) in the current memory context.
    unsafe {
        let mut flinfo = pg_sys::FmgrInfo::default();
        pg_sys::fmgr_info(function, &mut flinfo);
        let size = std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>() + N * std::mem::size_of::<pg_sys::NullableDatum>();
        let call = pg_sys::palloc0(size).cast::<pg_sys::FunctionCallInfoBaseData>();
        (*call).flinfo = &mut flinfo;
        (*call).fncollation = (*fcinfo).fncollation;
        (*call).nargs = N as i16;
        (*call).args.as_mut_slice(N).copy_from_slice(&args);
        let result = flinfo.fn_addr.expect("a function address")(call);
        (*fcinfo).isnull = (*call).isnull;
        result
    }
}

/// Calls the trigger function `function` as the trigger manager would have,
/// with the trigger data of `fcinfo`.
///
/// # Safety
/// `fcinfo` is a trigger call's.
pub unsafe fn call_trigger_function(function: pg_sys::Oid, fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the FmgrInfo and call info live in the trigger call's memory
    // context; the call info has no arguments, as a trigger call's.
    unsafe {
        let flinfo = pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()).cast::<pg_sys::FmgrInfo>();
        pg_sys::fmgr_info(function, flinfo);
        let call = pg_sys::palloc0(std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>()).cast::<pg_sys::FunctionCallInfoBaseData>();
        (*call).flinfo = flinfo;
        (*call).context = (*fcinfo).context;
        let Some(function_address) = (*flinfo).fn_addr else {
            pgrx::error!("mlmon: trigger function {} has no address", function.to_u32());
        };
        pg_sys::ffi::pg_guard_ffi_boundary(|| function_address(call))
    }
}

/// A call by OID skips the EXECUTE check a SQL call makes: callers make it
/// with this.
pub fn may_execute(function: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup; a missing function is simply not executable.
    unsafe {
        pg_sys::pg_proc_aclcheck(function, pg_sys::GetUserId(), pg_sys::ACL_EXECUTE as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// A value of `type_oid` read from its text form by the type's input function
/// (which raises on malformed text, as a SQL cast would).
///
/// # Safety
/// `text` is a valid C string.
pub unsafe fn from_cstring(type_oid: pg_sys::Oid, text: *mut std::ffi::c_char) -> pg_sys::Datum {
    // SAFETY: the caller's promise; the lookups are by a type's OID.
    unsafe {
        let (mut input, mut io_param) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
        pg_sys::getTypeInputInfo(type_oid, &mut input, &mut io_param);
        pg_sys::OidInputFunctionCall(input, text, io_param, -1)
    }
}

/// The function a `regprocedure` text names (raising if there is none).
pub fn function_oid(signature: &std::ffi::CStr) -> pg_sys::Oid {
    // SAFETY: a valid C string, read by regprocedurein.
    let datum = unsafe { from_cstring(pg_sys::REGPROCEDUREOID, signature.as_ptr().cast_mut()) };
    pg_sys::Oid::from(datum.value() as u32)
}

/// `value::text` for a value of type `type_oid`, by the same coercion as the
/// SQL cast (a cast function, a binary-compatible relabeling, or the type's
/// output function).
///
/// # Safety
/// `value` is a valid, non-NULL datum of `type_oid`.
pub unsafe fn as_text(value: pg_sys::Datum, type_oid: pg_sys::Oid) -> pg_sys::Datum {
    // SAFETY: the caller's promise; the functions called are the type's own.
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
