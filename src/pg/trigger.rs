//! A function called by the trigger manager: its trigger data and the
//! trigger's arguments.

#![allow(unsafe_code)]

use std::ffi::CStr;

use pgrx::pg_sys;

/// The trigger data of the current call, or None when the function was not
/// called as a trigger.
///
/// # Safety
/// `fcinfo` is the current call's.
pub unsafe fn trigger_data<'a>(fcinfo: pg_sys::FunctionCallInfo) -> Option<&'a pg_sys::TriggerData> {
    // SAFETY: the caller's promise; the trigger manager passes TriggerData
    // as the context, which lives for the whole call.
    unsafe {
        let data = (*fcinfo).context.cast::<pg_sys::TriggerData>();
        (!data.is_null() && (*data).type_ == pg_sys::NodeTag::T_TriggerData).then(|| &*data)
    }
}

/// The arguments given in CREATE TRIGGER.
pub fn trigger_arguments(data: &pg_sys::TriggerData) -> Vec<String> {
    // SAFETY: tg_trigger and its tgnargs arguments are valid C strings for
    // the whole trigger call.
    unsafe {
        let trigger = &*data.tg_trigger;
        (0..trigger.tgnargs as usize).map(|i| CStr::from_ptr(*trigger.tgargs.add(i)).to_string_lossy().into_owned()).collect()
    }
}
