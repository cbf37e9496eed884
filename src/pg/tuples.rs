//! Rows as PostgreSQL hands them to a trigger: a tuple descriptor's
//! attributes, the rows of a transition table, and the values in them.

#![allow(unsafe_code)]

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::varlena;

use super::datum::{copy_by_reference, datum_bytes};

/// The attributes of a relation (its tuple descriptor), found by name.
pub struct Attributes(pub pg_sys::TupleDesc);

impl Attributes {
    /// A live (not dropped) attribute by name: its index and description.
    pub fn find(&self, name: &str) -> Option<(usize, &pg_sys::FormData_pg_attribute)> {
        // SAFETY: the relation's tuple descriptor outlives the trigger call.
        unsafe {
            let desc = &*self.0;
            let attributes = desc.attrs.as_slice(desc.natts as usize);
            attributes.iter().enumerate().find(|(_, a)| {
                !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()).to_bytes() == name.as_bytes()
            })
        }
    }
}

/// The live (not dropped) columns of a tuple descriptor: (index, type).
///
/// # Safety
/// `desc` is valid.
pub unsafe fn live_columns(desc: pg_sys::TupleDesc) -> impl Iterator<Item = (usize, pg_sys::Oid)> {
    // SAFETY: the caller's promise.
    let attributes = unsafe { (*desc).attrs.as_slice((*desc).natts as usize) };
    attributes.iter().enumerate().filter(|(_, a)| !a.attisdropped).map(|(i, a)| (i, a.atttypid))
}

/// The value of a smallint, integer or bigint datum as an i64.
pub fn integer(value: pg_sys::Datum, type_oid: pg_sys::Oid) -> i64 {
    match type_oid {
        pg_sys::INT2OID => value.value() as i16 as i64,
        pg_sys::INT4OID => value.value() as i32 as i64,
        _ => value.value() as i64,
    }
}

/// Whether a type is smallint, integer or bigint.
pub fn is_integer(type_oid: pg_sys::Oid) -> bool {
    matches!(type_oid, pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID)
}

/// Calls `row` with the values of every row of a transition table, until it
/// returns false; returns whether every row was read.
///
/// # Safety
/// `table` is the trigger's transition table of rows of `desc`.
pub unsafe fn each_row(table: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc, mut row: impl FnMut(&[pg_sys::Datum], &[bool]) -> bool) -> bool {
    // SAFETY: the caller's promise; the slot is made for `desc` and dropped
    // before returning, and each row's values are read while it is current.
    unsafe {
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        // A read pointer of our own, as a scan of the transition table in SQL
        // takes: a PL/pgSQL trigger may read the table after us.
        let pointer = pg_sys::tuplestore_alloc_read_pointer(table, pg_sys::EXEC_FLAG_REWIND as i32);
        pg_sys::tuplestore_select_read_pointer(table, pointer);
        pg_sys::tuplestore_rescan(table);
        let width = (*desc).natts as usize;
        let mut complete = true;
        let mut read = 0usize;
        while pg_sys::tuplestore_gettupleslot(table, true, false, slot) {
            // A load of millions of rows can be cancelled while it is read.
            read += 1;
            if read.is_multiple_of(65_536) {
                pgrx::check_for_interrupts!();
            }
            pg_sys::slot_getallattrs(slot);
            let values = std::slice::from_raw_parts((*slot).tts_values, width);
            let nulls = std::slice::from_raw_parts((*slot).tts_isnull, width);
            if !row(values, nulls) {
                complete = false;
                break;
            }
        }
        pg_sys::tuplestore_select_read_pointer(table, 0);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        complete
    }
}

/// A copy of a non-NULL value that outlives the row it was read from.
///
/// # Safety
/// `value` is a valid value of `attribute`'s type.
pub unsafe fn copy_value(value: pg_sys::Datum, attribute: &pg_sys::FormData_pg_attribute) -> pg_sys::Datum {
    if attribute.attbyval {
        value
    } else {
        // SAFETY: the caller's promise.
        unsafe { copy_by_reference(value, attribute.attlen) }
    }
}

/// The bytes that identify a by-reference value: a varlena's detoasted
/// contents, a fixed-length value's bytes.
///
/// # Safety
/// `value` is a valid, non-NULL value of `attribute`'s type.
pub unsafe fn value_bytes<'a>(value: pg_sys::Datum, attribute: &pg_sys::FormData_pg_attribute) -> &'a [u8] {
    // SAFETY: the caller's promise.
    unsafe {
        if attribute.attlen == -1 {
            let pointer = value.cast_mut_ptr::<pg_sys::varlena>();
            // A plain varlena (short or 4-byte header, uncompressed, inline),
            // as a load's values almost always are, is read where it lies:
            // the call below costs a guarded call into PostgreSQL a row.
            let plain = if varlena::varatt_is_1b_e(pointer) || varlena::varatt_is_4b_c(pointer) {
                pg_sys::pg_detoast_datum_packed(pointer)
            } else {
                pointer
            };
            return varlena::varlena_to_byte_slice(plain);
        }
        datum_bytes(value, attribute.attlen)
    }
}
