//! A monitor's bulk lock: an advisory lock that a bulk load holds
//! exclusively (never waiting for it) and every other trigger call holds
//! shared until its transaction ends, so that a bulk load runs only while
//! no other writer is in flight on any key (see `bulk/mod.rs`).

#![allow(unsafe_code)]

use pgrx::prelude::*;

use crate::pg::advisory_lock::xact_lock;
use crate::pg::catalog::has_pages;
use crate::pg::fmgr::v1_function;
use crate::pg::trigger::{trigger_arguments, trigger_data};

/// The bulk lock shared, waiting for a bulk load that holds it.
pub fn lock_shared(lock: i64) {
    xact_lock(lock, pg_sys::ShareLock, true);
}

/// The bulk lock exclusively, without waiting (pg_try_advisory_xact_lock).
pub fn try_bulk_lock(lock: i64) -> bool {
    xact_lock(lock, pg_sys::ExclusiveLock, false)
}

v1_function!(monitor_enter);

/// `mlmon._monitor_enter(lock)`: BEFORE INSERT OR UPDATE OR DELETE FOR EACH
/// STATEMENT trigger that takes the monitor's bulk lock shared before the
/// statement changes a row. Taken only after the change (in the AFTER
/// trigger), a writer could hold the row lock another transaction's bulk
/// load then waits for, while itself waiting for that load's lock.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn monitor_enter(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: fcinfo is the function manager's, for this call.
    let data = unsafe { trigger_data(fcinfo) };
    let arguments = data.map(trigger_arguments).unwrap_or_default();
    let [argument] = arguments.as_slice() else {
        pgrx::error!("mlmon._monitor_enter may only be called as a monitor's trigger");
    };
    let Ok(lock) = argument.parse::<i64>() else {
        pgrx::error!("mlmon._monitor_enter: bad lock argument {argument:?}");
    };
    lock_shared(lock);
    pg_sys::Datum::from(0)
}

/// `mlmon._bulk_enter(lock bigint, claims oid) RETURNS boolean`: takes a
/// monitor's bulk lock shared (until the transaction ends) and tells whether
/// its claims table may hold chunks (has pages). Every trigger call but a
/// bulk load's runs it first, as a PL/pgSQL expression: a query there cost a
/// single-row INSERT an executor start-up more.
#[pg_extern(sql = false)]
fn bulk_enter(lock: i64, claims: pg_sys::Oid) -> bool {
    lock_shared(lock);
    has_pages(claims)
}
