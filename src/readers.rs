//! The online read path of feature views: `mlmon._feature_at_fast(view,
//! entity, at)` finds the view's generated reader (see "Readers" in
//! `sql/features.sql`) in a per-backend cache and calls it by OID.
//!
//! The SQL path (`mlmon._feature_at_checked`) finds the reader with a catalog
//! query (a hash of the view's definition names it) and runs it through
//! EXECUTE; that query and the parse/plan of the EXECUTE cost more than the
//! reader's own cached query. Here the reader is resolved once per backend
//! (with `mlmon._fv_resolve`) and afterwards re-validated on every call from
//! the system caches only: the reader still exists under the same name (a
//! dropped or re-created view drops its readers; a changed definition renames
//! them), the source keeps its schema and name, the entity column keeps its
//! type, and every column the view reads is still there. When any check fails
//! the reader is resolved again, and when there is none the function returns
//! NULL and the SQL wrappers fall back to the checked path, which also raises
//! the errors of a broken view.
//!
//! Calling by OID bypasses the checks of a SQL call, so this makes them: the
//! function is one of mlmon's readers in schema `mlmon` with the expected
//! signature (`mlmon._fv_resolve` only returns those), and the caller must have
//! EXECUTE on it. Readers run as the caller, like any SQL call, so table
//! privileges and row security apply.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};

use pgrx::prelude::*;

use crate::memory::v1_function;

/// A resolved reader and what must still hold to keep using it.
struct Reader {
    oid: pg_sys::Oid,
    name: CString,
    source: pg_sys::Oid,
    source_schema: CString,
    source_table: CString,
    entity_column: CString,
    key_type: pg_sys::Oid,
    /// Every other column the view reads.
    columns: Vec<CString>,
}

thread_local! {
    /// View name → reader. A backend runs one query at a time on one thread.
    static READERS: RefCell<HashMap<String, Reader>> = RefCell::new(HashMap::new());
}

v1_function!(feature_at_fast);

/// `mlmon._feature_at_fast(view text, entity text, at timestamptz) RETURNS
/// jsonb`, STRICT: the view's reader at (entity, at), or NULL when the view has
/// no usable reader. Readers never return NULL (an entity without data gives
/// NULL feature values), so NULL always means "take the checked path".
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn feature_at_fast(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: sql/features.sql declares this function STRICT with arguments
    // (text, text, timestamptz), so all three datums are present and valid.
    unsafe {
        let args = (*fcinfo).args.as_slice(3);
        let view = CStr::from_ptr(pg_sys::text_to_cstring(args[0].value.cast_mut_ptr())).to_string_lossy().into_owned();
        let Some((reader, key_type)) = usable_reader(&view).filter(|&(reader, _)| may_execute(reader)) else {
            (*fcinfo).isnull = true;
            return pg_sys::Datum::from(0);
        };
        // The entity is compared in the view's key type, converted from text
        // by the type's input function, exactly as the checked path's cast.
        let entity = pg_sys::text_to_cstring(args[1].value.cast_mut_ptr());
        let (mut input, mut io_param) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
        pg_sys::getTypeInputInfo(key_type, &mut input, &mut io_param);
        let key = pg_sys::OidInputFunctionCall(input, entity, io_param, -1);
        let mut flinfo = pg_sys::FmgrInfo::default();
        pg_sys::fmgr_info(reader, &mut flinfo);
        // FunctionCall2Coll raises if a reader ever returned NULL.
        pg_sys::FunctionCall2Coll(&mut flinfo, pg_sys::InvalidOid, key, args[2].value)
    }
}

/// The cached reader of `view` if it is still valid, else a freshly resolved
/// one (cached), else None.
fn usable_reader(view: &str) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    let cached = READERS.with_borrow(|readers| readers.get(view).filter(|r| still_valid(r)).map(|r| (r.oid, r.key_type)));
    if cached.is_some() {
        return cached;
    }
    let resolved = resolve(view);
    let found = resolved.as_ref().map(|r| (r.oid, r.key_type));
    READERS.with_borrow_mut(|readers| match resolved {
        Some(reader) => readers.insert(view.to_owned(), reader),
        None => readers.remove(view),
    });
    found
}

/// Asks the catalog for the view's reader (NULL row fields: none usable).
fn resolve(view: &str) -> Option<Reader> {
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT reader, reader_name, source, source_schema, source_table, entity_column, key_type, columns \
                 FROM mlmon._fv_resolve($1)",
                Some(1),
                &[view.into()],
            )
            .ok()?;
        let row = rows.first();
        let text = |i: usize| -> Option<CString> { CString::new(row.get::<String>(i).ok()??).ok() };
        Some(Reader {
            oid: row.get::<pg_sys::Oid>(1).ok()??,
            name: text(2)?,
            source: row.get::<pg_sys::Oid>(3).ok()??,
            source_schema: text(4)?,
            source_table: text(5)?,
            entity_column: text(6)?,
            key_type: row.get::<pg_sys::Oid>(7).ok()??,
            columns: row.get::<Vec<String>>(8).ok()??.into_iter().filter_map(|c| CString::new(c).ok()).collect(),
        })
    })
}

/// Re-checks a cached reader against the system caches (see module docs).
fn still_valid(r: &Reader) -> bool {
    // SAFETY: syscache lookups by OID and name; returned strings are palloc'd
    // copies or NULL.
    unsafe {
        let same = |p: *mut std::ffi::c_char, expected: &CStr| !p.is_null() && CStr::from_ptr(p) == expected;
        let column_exists = |c: &CString| pg_sys::get_attnum(r.source, c.as_ptr()) != pg_sys::InvalidAttrNumber as i16;
        let entity = pg_sys::get_attnum(r.source, r.entity_column.as_ptr());
        same(pg_sys::get_func_name(r.oid), &r.name)
            && same(pg_sys::get_rel_name(r.source), &r.source_table)
            && same(pg_sys::get_namespace_name(pg_sys::get_rel_namespace(r.source)), &r.source_schema)
            && entity != pg_sys::InvalidAttrNumber as i16
            && pg_sys::get_atttype(r.source, entity) == r.key_type
            && r.columns.iter().all(column_exists)
    }
}

/// A call by OID skips the EXECUTE check a SQL call makes, so make it. A
/// caller without EXECUTE on the reader (an internal function) takes the
/// checked path, which reads the source directly, as the SQL path does.
fn may_execute(reader: pg_sys::Oid) -> bool {
    // SAFETY: a catalog lookup for an existing function (checked by the caller).
    unsafe {
        pg_sys::pg_proc_aclcheck(reader, pg_sys::GetUserId(), pg_sys::ACL_EXECUTE as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
    }
}
