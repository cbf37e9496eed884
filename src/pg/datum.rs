//! By-reference values: the bytes behind a datum, copies that outlive the
//! row they were read from, and the buffer a type's receive function reads.

#![allow(unsafe_code)]

use pgrx::pg_sys::{self, Datum};
use pgrx::Internal;

/// The bytes of a by-reference value of a type of length `length` (-1: a
/// varlena, -2: a C string).
///
/// # Safety
/// `value` points to a valid value of the type, which outlives the slice.
pub unsafe fn datum_bytes<'a>(value: Datum, length: i16) -> &'a [u8] {
    // SAFETY: the caller's promise; the size is the value's own.
    unsafe {
        let source = value.cast_mut_ptr::<u8>();
        let size = match length {
            -1 => pgrx::varsize_any(source.cast()),
            -2 => std::ffi::CStr::from_ptr(source.cast()).to_bytes_with_nul().len(),
            n => n as usize,
        };
        std::slice::from_raw_parts(source, size)
    }
}

/// A copy of a by-reference value in the current memory context (datumCopy,
/// which pgrx does not bind). A varlena is copied as it is, compressed or a
/// TOAST pointer included: inserting it into a table detoasts as needed.
///
/// # Safety
/// As `datum_bytes`.
pub unsafe fn copy_by_reference(value: Datum, length: i16) -> Datum {
    // SAFETY: the caller's promise; the copy is palloc'd to the value's size.
    unsafe {
        let bytes = datum_bytes(value, length);
        let copy = pg_sys::palloc(bytes.len()).cast::<u8>();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
        Datum::from(copy)
    }
}

/// float8 is passed by value on the 64-bit platforms PostgreSQL 15 builds for.
pub fn float8(datum: Datum) -> f64 {
    f64::from_bits(datum.value() as u64)
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
