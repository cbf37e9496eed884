//! Statements prepared once per backend and kept (`SPI_keepplan`), run
//! with raw datums as parameters: a statement's parse and plan would cost
//! more than a single row's work.

#![allow(unsafe_code)]

use std::ffi::{c_char, CString};

use pgrx::pg_sys;

/// A parameter's null flag as SPI_execute_plan takes it.
pub const NULL: c_char = b'n' as c_char;
pub const NOT_NULL: c_char = b' ' as c_char;

/// A prepared statement kept for the life of the backend (or until dropped).
pub struct Plan(pg_sys::SPIPlanPtr);

impl Plan {
    /// # Safety
    /// Within an SPI connection.
    pub unsafe fn prepare(sql: &str, types: &[pg_sys::Oid]) -> Plan {
        let text = CString::new(sql).unwrap_or_else(|_| pgrx::error!("mlmon: generated SQL holds a NUL byte"));
        // SAFETY: the caller's promise; the types outlive the call.
        unsafe {
            let plan = pg_sys::SPI_prepare(text.as_ptr(), types.len() as i32, types.as_ptr().cast_mut());
            if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                let code = pg_sys::SPI_result;
                pgrx::error!("mlmon: could not prepare a monitor statement (SPI code {code})");
            }
            Plan(plan)
        }
    }

    /// Runs the statement; returns the number of rows it returned, which are
    /// then in SPI_tuptable.
    ///
    /// # Safety
    /// Within an SPI connection; one value and null flag per parameter.
    pub unsafe fn execute(&self, values: &[pg_sys::Datum], nulls: &[c_char]) -> u64 {
        // SAFETY: the caller's promise.
        unsafe {
            let code = pg_sys::SPI_execute_plan(self.0, values.as_ptr().cast_mut(), nulls.as_ptr(), false, 0);
            if code < 0 {
                pgrx::error!("mlmon: a monitor statement failed (SPI code {code})");
            }
            pg_sys::SPI_processed
        }
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: the plan was kept by SPI_keepplan and is freed once.
        unsafe { pg_sys::SPI_freeplan(self.0) };
    }
}

/// Column `column` (1-based) of row `row` of the last statement's result,
/// and whether it is NULL.
///
/// # Safety
/// The last statement returned more than `row` rows of at least `column`
/// columns.
pub unsafe fn result_value(row: usize, column: i32) -> (pg_sys::Datum, bool) {
    // SAFETY: the caller's promise.
    unsafe {
        let table = pg_sys::SPI_tuptable;
        let mut null = false;
        let value = pg_sys::SPI_getbinval(*(*table).vals.add(row), (*table).tupdesc, column, &mut null);
        (value, null)
    }
}

/// Column `column` of the first row of the last statement's result, as a
/// boolean (NULL is false).
///
/// # Safety
/// The last statement returned a row with a boolean there.
pub unsafe fn boolean_at(column: i32) -> bool {
    // SAFETY: the caller's promise.
    let (value, null) = unsafe { result_value(0, column) };
    !null && value.value() != 0
}
