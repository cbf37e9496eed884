//! System-cache lookups by OID: no catalog query, no snapshot.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString};

use pgrx::pg_sys;

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

/// Whether a relation has pages in its main fork.
pub fn has_pages(relation: pg_sys::Oid) -> bool {
    // SAFETY: the relation is opened and closed with a lock, as any reader of
    // its size does.
    unsafe {
        let relation = pg_sys::relation_open(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let blocks = pg_sys::RelationGetNumberOfBlocksInFork(relation, pg_sys::ForkNumber::MAIN_FORKNUM);
        pg_sys::relation_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        blocks > 0
    }
}
