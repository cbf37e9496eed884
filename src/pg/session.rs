//! The session a native function runs in: as which user, with which search
//! path, and the settings a user may SET.

#![allow(unsafe_code)]

use std::ffi::CStr;

use pgrx::pg_sys;

/// An integer setting (a placeholder the user may SET), or its default.
pub fn setting(name: &CStr, default: i64) -> i64 {
    // SAFETY: GetConfigOption returns NULL or a string owned by the GUC machinery.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        if value.is_null() {
            return default;
        }
        CStr::from_ptr(value).to_str().ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
    }
}

/// Whether long operations report progress (`SET mlmon.progress = off`
/// silences them; the SQL side is `mlmon._progress`).
pub fn progress_enabled() -> bool {
    // SAFETY: GetConfigOption returns NULL or a string owned by the GUC machinery.
    unsafe {
        let value = pg_sys::GetConfigOption(c"mlmon.progress".as_ptr(), true, false);
        value.is_null() || !matches!(CStr::from_ptr(value).to_str().map(str::trim), Ok("off" | "false" | "0"))
    }
}

/// A NOTICE for one phase or batch of a long operation: rows done, seconds
/// since `since`, rate (the SQL side's format, `mlmon._progress`).
pub fn report_progress(operation: &str, phase: &str, rows: u64, since: std::time::Instant) {
    if progress_enabled() {
        let seconds = since.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 { format!("{:.0}", rows as f64 / seconds) } else { "-".into() };
        pgrx::notice!("{operation}: {phase} ({rows} rows in {seconds:.1} s, {rate} rows/s)");
    }
}

/// Runs `f` as `user` (unless INVALID), with only pg_catalog on the search
/// path, as a SECURITY DEFINER function with `SET search_path = pg_catalog,
/// pg_temp` would (an error undoes both with the (sub)transaction).
///
/// The path is pushed as an override, not set: setting the search_path
/// setting and back made the writer's next statement recompute its path, and
/// the two cost 3% of a single-row INSERT.
pub fn as_user<R>(user: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    // SAFETY: the calls save and restore the user as fmgr_security_definer
    // does; the override is popped before returning (or by the abort).
    unsafe {
        let (mut saved_user, mut context) = (pg_sys::Oid::INVALID, 0);
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut context);
        let mut catalog_only =
            pg_sys::OverrideSearchPath { schemas: std::ptr::null_mut(), addCatalog: true, addTemp: false, generation: 0 };
        pg_sys::PushOverrideSearchPath(&mut catalog_only);
        if user != pg_sys::Oid::INVALID {
            let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32;
            pg_sys::SetUserIdAndSecContext(user, context | restricted);
        }
        let result = f();
        pg_sys::SetUserIdAndSecContext(saved_user, context);
        pg_sys::PopOverrideSearchPath();
        result
    }
}

/// Runs `f` with setting `name` at `value`, restored afterwards, as a
/// function's `SET name = value` clause would (an error restores it with
/// the (sub)transaction).
pub fn with_setting<R>(name: &CStr, value: &CStr, f: impl FnOnce() -> R) -> R {
    // SAFETY: the nest level is opened and closed around `f` as
    // fmgr_security_definer does for a function's SET clauses.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            pgrx::PgLogLevel::ERROR as i32,
            false,
        );
        let result = f();
        pg_sys::AtEOXact_GUC(true, level);
        result
    }
}

/// Whether a row's xmin (as a number) is the current transaction or one of
/// its live subtransactions: a row it wrote, which may still roll back.
pub fn is_current_transaction(xmin: i64) -> bool {
    // SAFETY: a lookup in the backend's own transaction state.
    unsafe { pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from(xmin as u32)) }
}

/// Whether the current role is a member of `role` (has its rights by
/// membership, as `pg_has_role(role, 'MEMBER')`).
pub fn is_member_of(role: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup of role membership.
    unsafe { pg_sys::is_member_of_role(pg_sys::GetUserId(), role) }
}
