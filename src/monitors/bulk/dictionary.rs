//! The distinct labels and segments of a bulk load as PostgreSQL values:
//! `mlmon_core::monitors::dictionary` gives each distinct identity an id,
//! and this keeps a copy of each id's first value, turned into text once
//! the load is read (`read::texts`).

#![allow(unsafe_code)]

use mlmon_core::monitors::dictionary::{self, Lookup};
use pgrx::pg_sys;

use crate::pg::tuples::{copy_value, value_bytes};

/// Distinct values of a column (or of several, as one tuple) by their bytes,
/// each with a copy of its first occurrence.
#[derive(Default)]
pub struct Dictionary {
    ids: dictionary::Dictionary,
    /// The values of each id: one for a single column, one per column of a
    /// tuple, each (value, is NULL).
    pub values: Vec<Vec<(pg_sys::Datum, bool)>>,
}

impl Dictionary {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The id of one column's value. A dictionary takes single values or
    /// tuples (`id_of_tuple`), never both.
    ///
    /// # Safety
    /// `value` is valid for `attribute` unless `null`.
    pub unsafe fn id_of_value(&mut self, value: pg_sys::Datum, null: bool, attribute: &pg_sys::FormData_pg_attribute) -> u32 {
        if null {
            let lookup = self.ids.id_of_null();
            return self.keep(lookup, || vec![(value, true)]);
        }
        let by_value = value.value().to_le_bytes();
        // SAFETY: the caller's promise; a single column's value is its own
        // identity, read where it lies.
        let identity = if attribute.attbyval { &by_value[..] } else { unsafe { value_bytes(value, attribute) } };
        let lookup = self.ids.id_of_value(identity);
        // SAFETY: the caller's promise.
        self.keep(lookup, || vec![(unsafe { copy_value(value, attribute) }, false)])
    }

    /// The id of a tuple of values.
    ///
    /// # Safety
    /// Each value is valid for its attribute unless NULL.
    pub unsafe fn id_of_tuple<'a>(
        &mut self,
        values: impl Iterator<Item = (pg_sys::Datum, bool, &'a pg_sys::FormData_pg_attribute)> + Clone,
    ) -> u32 {
        let lookup = self.ids.id_of_tuple(|identity| {
            for (value, null, attribute) in values.clone() {
                if null {
                    identity.push_null();
                } else if attribute.attbyval {
                    identity.push_by_value(value.value() as u64);
                } else {
                    // SAFETY: the caller's promise.
                    identity.push_bytes(unsafe { value_bytes(value, attribute) });
                }
            }
        });
        // SAFETY: the caller's promise.
        self.keep(lookup, || values.map(|(value, null, a)| (if null { value } else { unsafe { copy_value(value, a) } }, null)).collect())
    }

    /// The id of `lookup`, keeping `copies()` as its values when it is new.
    fn keep(&mut self, lookup: Lookup, copies: impl FnOnce() -> Vec<(pg_sys::Datum, bool)>) -> u32 {
        if let Lookup::New(id) = lookup {
            debug_assert_eq!(id as usize, self.values.len());
            self.values.push(copies());
        }
        lookup.id()
    }
}
