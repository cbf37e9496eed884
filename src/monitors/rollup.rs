//! The rollup table's delta rows, as the native paths write them: a bulk
//! load's deltas in one INSERT over arrays, a single row's delta appended
//! without a statement. (The rollup table itself, its compaction and its
//! reads are SQL: `sql/monitors/`.)

#![allow(unsafe_code)]

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::catalog::spi_error;
use crate::pg::heap_insert::insert_row;
use crate::pg::tuples::Attributes;

/// One delta row: a cell (bucket, segment as jsonb text, predicted label,
/// actual label) and its change in count and weight.
pub struct Delta {
    pub bucket: i64,
    pub segment: String,
    pub predicted: String,
    pub actual: Option<String>,
    pub n: i64,
    pub weight: f64,
}

/// Inserts `deltas` (those that change a count or a weight: a key's new
/// weight may leave its cell) into the rollup table `table` (a quoted,
/// qualified name) in one statement.
pub fn write_deltas(client: &mut SpiClient<'_>, table: &str, deltas: Vec<Delta>) {
    let deltas: Vec<Delta> = deltas.into_iter().filter(|d| d.n != 0 || d.weight != 0.0).collect();
    if deltas.is_empty() {
        return;
    }
    let bucket: Vec<Option<TimestampWithTimeZone>> = deltas.iter().map(|d| TimestampWithTimeZone::try_from(d.bucket).ok()).collect();
    let segment: Vec<&str> = deltas.iter().map(|d| d.segment.as_str()).collect();
    let predicted: Vec<&str> = deltas.iter().map(|d| d.predicted.as_str()).collect();
    let actual: Vec<Option<&str>> = deltas.iter().map(|d| d.actual.as_deref()).collect();
    let n: Vec<i64> = deltas.iter().map(|d| d.n).collect();
    let weight: Vec<f64> = deltas.iter().map(|d| d.weight).collect();
    let sql = format!(
        "INSERT INTO {table} (bucket, segment, predicted, actual, n, weight)
         SELECT b, s::jsonb, p, a, n, w
         FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::float8[]) u(b, s, p, a, n, w)"
    );
    client
        .update(&sql, None, &[bucket.into(), segment.into(), predicted.into(), actual.into(), n.into(), weight.into()])
        .unwrap_or_else(|e| spi_error(e));
}

/// The rollup table, for appending a single row's delta without a
/// statement: the second half of `_claim_one_sql`. Its plan's executor
/// start-up (a second ModifyTable and two CTE scans) cost more than the row.
pub struct Rollup {
    table: pg_sys::Oid,
    /// The table's attribute count when described.
    width: usize,
    /// The attribute index of each of `ROLLUP_COLUMNS`.
    positions: [usize; 7],
}

/// In the order `append` gives their values: the cell, then n and compacted.
const ROLLUP_COLUMNS: [&str; 7] = ["bucket", "segment", "predicted", "actual", "weight", "n", "compacted"];

impl Rollup {
    pub fn describe(table: pg_sys::Oid) -> Option<Rollup> {
        // SAFETY: the relation is opened and closed with a lock.
        unsafe {
            let relation = pg_sys::table_open(table, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let attributes = Attributes((*relation).rd_att);
            let found: Option<Vec<usize>> = ROLLUP_COLUMNS.iter().map(|c| attributes.find(c).map(|(i, _)| i)).collect();
            let width = (*(*relation).rd_att).natts as usize;
            pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            Some(Rollup { table, width, positions: found?.try_into().ok()? })
        }
    }

    /// The table, locked for writing until the transaction ends, if rows can
    /// still be appended as described: no triggers or rules (which a
    /// statement would have fired), the same attributes.
    ///
    /// # Safety
    /// In a transaction.
    pub unsafe fn open(&self) -> Option<pg_sys::Relation> {
        // SAFETY: the caller's promise.
        unsafe {
            let relation = pg_sys::table_open(self.table, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let desc = (*relation).rd_att;
            if (*relation).trigdesc.is_null() && (*relation).rd_rules.is_null() && (*desc).natts as usize == self.width {
                return Some(relation);
            }
            pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
            None
        }
    }

    /// Appends the delta row (cell, n = 1, not compacted) with its index
    /// entries.
    ///
    /// # Safety
    /// `relation` came from `open`; the values are valid for their columns.
    pub unsafe fn append(&self, relation: pg_sys::Relation, cell: [(pg_sys::Datum, bool); 5]) {
        let row = cell.into_iter().chain([(pg_sys::Datum::from(1i64), false), (pg_sys::Datum::from(false), false)]);
        let values = self.positions.iter().zip(row).map(|(&position, (value, null))| (position, value, null));
        // SAFETY: the caller's promise; `open` checked the table still has
        // the described attributes and no triggers.
        unsafe { insert_row(relation, values) }
    }
}
