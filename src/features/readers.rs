//! The online read path of feature views: `mlmon.feature_at(view, entity, at)`
//! and `mlmon.latest_features` find the view's generated reader (see "Readers"
//! in `sql/features/`) in a per-backend cache and call it by OID (the call
//! itself is in `online_read.rs`, the system-cache lookups in `pg::catalog`).
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
//! the reader is resolved again, and when there is none the call takes the
//! checked path (`mlmon._feature_at_checked`), which also raises the errors of
//! a broken view.
//!
//! Calling by OID bypasses the checks of a SQL call, so this makes them: the
//! function is one of mlmon's readers in schema `mlmon` with the expected
//! signature (`mlmon._fv_resolve` only returns those), and the caller must have
//! EXECUTE on it. Readers run as the caller, like any SQL call, so table
//! privileges and row security apply.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

use pgrx::prelude::*;

use crate::pg::catalog::{column_type, function_name, relation_name};

/// A resolved reader and what must still hold to keep using it.
struct Reader {
    oid: pg_sys::Oid,
    name: CString,
    source: pg_sys::Oid,
    source_schema: CString,
    source_table: CString,
    entity_column: CString,
    key_type: pg_sys::Oid,
    /// Every column the view reads (as `mlmon._fv_columns` lists them).
    columns: Vec<CString>,
}

thread_local! {
    /// View name → reader. A backend runs one query at a time on one thread.
    static READERS: RefCell<HashMap<String, Reader>> = RefCell::new(HashMap::new());
}

/// The cached reader of `view` if it is still valid, else a freshly resolved
/// one (cached), else None.
pub(crate) fn usable_reader(view: &str) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
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
    function_name(r.oid).as_ref() == Some(&r.name)
        && relation_name(r.source).is_some_and(|(schema, table)| schema == r.source_schema && table == r.source_table)
        && column_type(r.source, &r.entity_column) == Some(r.key_type)
        && r.columns.iter().all(|c| column_type(r.source, c).is_some())
}
