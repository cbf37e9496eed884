//! The spine of a training set for `_fv_fill_training_set`, a chunk of rows
//! at a time, in (entity, at) order so that the index walks move forward.
//!
//! Why not always `ORDER BY`: at a million spine rows PostgreSQL's sort took
//! 0.7-0.8 s of a build of about 4.5 s (the unsorted scan alone 0.05-0.08 s).
//! A spine whose rows fit in maintenance_work_mem, with an integer or uuid
//! entity, is read unsorted instead, kept compactly in memory, and sorted
//! here on (entity, at) as plain integers. Any other spine is read from a
//! cursor over the query sorted by `ORDER BY`, as before.
//!
//! The order only decides how fast the walks go, never what they find: a
//! point out of order starts its walk again at its entity (`probe.rs`).

#![allow(unsafe_code)]

use pgrx::pg_sys::{self, Datum};

use mlmon_core::features::spine_order::{ordered, sort_positions};

use crate::pg::datum::copy_by_reference;

/// Bytes of memory a chunk holds per spine row read from the sorted cursor
/// (its SPI copy and its columns taken apart), to size chunks by
/// maintenance_work_mem. Measured with three spine columns (int4, int8,
/// timestamptz): 170 + 27 bytes.
const CURSOR_ROW_BYTES: usize = 200;

/// Bytes per row of the sort's array of (entity, at, row) entries: the
/// peak, with the sort, of an in-memory spine beyond its values.
const SORT_ENTRY_BYTES: usize = 32;

/// Rows fetched from the unsorted cursor at a time.
const READ_BATCH: i64 = 10_000;

/// The fewest points per chunk (maintenance_work_mem's 1MB minimum gives
/// about 2000 with three views). Chunks much smaller than the source's page
/// count fetch about one row per page, no better than probing in spine
/// order: raise maintenance_work_mem for big spines.
const MIN_CHUNK_POINTS: usize = 1024;

/// Spine rows taken apart: row i's column c is `values[i * columns + c]`
/// (values by reference point into SPI tuples or into the in-memory
/// spine's context).
pub(super) struct Spine {
    pub(super) rows: usize,
    columns: usize,
    values: Vec<Datum>,
    nulls: Vec<bool>,
}

impl Spine {
    fn new(columns: usize) -> Spine {
        Spine { rows: 0, columns, values: Vec::new(), nulls: Vec::new() }
    }

    /// Appends rows, taken apart (by-reference values stay where they are).
    ///
    /// SAFETY: `desc` describes `rows`.
    unsafe fn push_tuples(&mut self, rows: &[pg_sys::HeapTuple], desc: pg_sys::TupleDesc) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let start = self.values.len();
            self.values.resize(start + rows.len() * self.columns, Datum::from(0));
            self.nulls.resize(start + rows.len() * self.columns, true);
            for (i, &row) in rows.iter().enumerate() {
                let at = start + i * self.columns;
                pg_sys::heap_deform_tuple(row, desc, self.values[at..].as_mut_ptr(), self.nulls[at..].as_mut_ptr());
            }
            self.rows += rows.len();
        }
    }

    pub(super) fn value(&self, i: usize, column: usize) -> Option<Datum> {
        (!self.nulls[i * self.columns + column]).then(|| self.values[i * self.columns + column])
    }

    pub(super) fn row(&self, i: usize) -> (&[Datum], &[bool]) {
        let range = i * self.columns..(i + 1) * self.columns;
        (&self.values[range.clone()], &self.nulls[range])
    }

    fn bytes(&self) -> usize {
        self.values.capacity() * size_of::<Datum>() + self.nulls.capacity()
    }
}

/// How the spine's entity orders when sorted here: as an integer, or as
/// the 16 bytes of a uuid (big-endian, which is uuid's order).
#[derive(Clone, Copy)]
enum EntityOrder {
    Int2,
    Int4,
    Int8,
    Uuid,
}

impl EntityOrder {
    fn of(type_oid: pg_sys::Oid) -> Option<EntityOrder> {
        match type_oid {
            pg_sys::INT2OID => Some(EntityOrder::Int2),
            pg_sys::INT4OID => Some(EntityOrder::Int4),
            pg_sys::INT8OID => Some(EntityOrder::Int8),
            pg_sys::UUIDOID => Some(EntityOrder::Uuid),
            _ => None,
        }
    }
}

/// The positions of the spine's rows in (entity, at) order, NULLs last, with
/// `key` the sort key of an entity (`mlmon_core::features::spine_order`).
fn sorted<K: Ord + Copy>(spine: &Spine, key: impl Fn(Datum) -> K, null_key: K, at_column: usize,
                         entity_column: usize) -> Vec<u32> {
    let rows = (0..spine.rows).map(|i| (spine.value(i, entity_column).map(&key), spine.value(i, at_column).map(|d| d.value() as i64)));
    sort_positions(rows, null_key)
}

/// Where the chunks come from.
enum Source {
    /// The whole spine, read unsorted, and the positions of its rows in
    /// (entity, at) order; chunks are runs of `order` from `next`.
    Memory { all: Spine, order: Vec<u32>, next: usize, context: pg_sys::MemoryContext },
    /// A cursor over the query sorted by ORDER BY, and the SPI rows of the
    /// chunk last returned (freed when the next is fetched).
    Cursor { portal: pg_sys::Portal, held: *mut pg_sys::SPITupleTable },
}

/// The spine, chunk by chunk.
pub(super) struct SpineReader {
    source: Source,
    /// The query's number of columns.
    columns: usize,
    chunk_points: usize,
}

/// The query's shape and the memory the fill may use, to open a reader.
pub(super) struct SpinePlan<'a> {
    /// The spine query without ORDER BY, and its ORDER BY list.
    pub(super) query: &'a str,
    pub(super) order: &'a str,
    /// 0-based columns of the query: the entity to sort by, and the time.
    pub(super) entity_column: usize,
    pub(super) at_column: usize,
    /// The memory budget (maintenance_work_mem), and the bytes a chunk
    /// holds per point beyond the spine row (the chosen feature values).
    pub(super) budget: usize,
    pub(super) point_bytes: usize,
}

/// Opens a cursor over `query` as the caller, under the caller's snapshot.
///
/// SAFETY: inside SPI_connect.
pub(super) unsafe fn open_cursor(query: &str) -> Option<pg_sys::Portal> {
    // SAFETY: the caller's promise (this function's contract).
    unsafe {
        let query = std::ffi::CString::new(query).ok()?;
        let plan = pg_sys::SPI_prepare(query.as_ptr(), 0, std::ptr::null_mut());
        if plan.is_null() {
            return None;
        }
        // read_only: the cursor runs under the caller's active snapshot, the
        // one the walks read with.
        Some(pg_sys::SPI_cursor_open(std::ptr::null(), plan, std::ptr::null_mut(), std::ptr::null(), true))
    }
}

impl SpineReader {
    /// Reads the spine into memory and sorts it when it can (see the module
    /// comment), else opens the sorted cursor. `unsorted` is the open cursor
    /// over `plan.query`; `context` is where the in-memory spine lives.
    ///
    /// SAFETY: inside SPI_connect; the columns of `plan` were checked
    /// against the cursor's.
    pub(super) unsafe fn open(unsorted: pg_sys::Portal, plan: &SpinePlan, context: pg_sys::MemoryContext) -> Option<SpineReader> {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            // Read before the cursor, which owns the descriptor, is closed.
            let desc = (*unsorted).tupDesc;
            let columns = (*desc).natts as usize;
            let entity_type = (*desc).attrs.as_slice(columns)[plan.entity_column].atttypid;
            if let Some(order) = EntityOrder::of(entity_type) {
                let memory = pg_sys::AllocSetContextCreateInternal(
                    context, c"mlmon training set spine".as_ptr(), 0, 8 * 1024, 8 * 1024 * 1024);
                if let Some(all) = read_all(unsorted, memory, plan.budget) {
                    pg_sys::SPI_cursor_close(unsorted);
                    let order = match order {
                        EntityOrder::Int2 => sorted(&all, |d| ordered(d.value() as i16 as i64), u64::MAX, plan.at_column, plan.entity_column),
                        EntityOrder::Int4 => sorted(&all, |d| ordered(d.value() as i32 as i64), u64::MAX, plan.at_column, plan.entity_column),
                        EntityOrder::Int8 => sorted(&all, |d| ordered(d.value() as i64), u64::MAX, plan.at_column, plan.entity_column),
                        EntityOrder::Uuid => sorted(&all, |d| u128::from_be_bytes(*d.cast_mut_ptr::<[u8; 16]>()),
                                                            u128::MAX, plan.at_column, plan.entity_column),
                    };
                    let held = all.bytes() + pg_sys::MemoryContextMemAllocated(memory, true) + order.capacity() * 4;
                    // The chunk's copy of its spine rows, and its feature values.
                    let per_point = plan.point_bytes + all.columns * (size_of::<Datum>() + 1);
                    let chunk_points = (plan.budget.saturating_sub(held) / per_point).max(MIN_CHUNK_POINTS);
                    let source = Source::Memory { all, order, next: 0, context: memory };
                    return Some(SpineReader { source, columns, chunk_points });
                }
                pg_sys::MemoryContextDelete(memory);
            }
            pg_sys::SPI_cursor_close(unsorted);
            let portal = open_cursor(&format!("{} ORDER BY {}", plan.query, plan.order))?;
            let chunk_points = (plan.budget / (CURSOR_ROW_BYTES + plan.point_bytes)).max(MIN_CHUNK_POINTS);
            Some(SpineReader { source: Source::Cursor { portal, held: std::ptr::null_mut() }, columns, chunk_points })
        }
    }

    /// The number of spine rows, when it is held in memory.
    pub(super) fn rows(&self) -> Option<usize> {
        match &self.source {
            Source::Memory { all, .. } => Some(all.rows),
            Source::Cursor { .. } => None,
        }
    }

    /// At least `chunks` chunks, when the spine is held in memory: a
    /// helper walks one chunk while the leader writes the one before.
    pub(super) fn split(&mut self, chunks: usize) {
        if let Some(rows) = self.rows() {
            self.chunk_points = self.chunk_points.min(rows.div_ceil(chunks).max(MIN_CHUNK_POINTS));
        }
    }

    /// The next chunk of spine rows in (entity, at) order, or None at the
    /// end. Values by reference stay valid until the next call (for ever
    /// when the spine is held in memory).
    ///
    /// SAFETY: inside the SPI connection `open` ran in.
    pub(super) unsafe fn next(&mut self) -> Option<Spine> {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            match &mut self.source {
                Source::Memory { all, order, next, .. } => {
                    let rows = &order[*next..(*next + self.chunk_points).min(order.len())];
                    if rows.is_empty() {
                        return None;
                    }
                    *next += rows.len();
                    let mut chunk = Spine::new(all.columns);
                    chunk.values.reserve(rows.len() * all.columns);
                    chunk.nulls.reserve(rows.len() * all.columns);
                    for &r in rows {
                        let (values, nulls) = all.row(r as usize);
                        chunk.values.extend_from_slice(values);
                        chunk.nulls.extend_from_slice(nulls);
                    }
                    chunk.rows = rows.len();
                    Some(chunk)
                }
                Source::Cursor { portal, held } => {
                    if !held.is_null() {
                        pg_sys::SPI_freetuptable(*held);
                        *held = std::ptr::null_mut();
                    }
                    pg_sys::SPI_cursor_fetch(*portal, true, self.chunk_points as std::ffi::c_long);
                    let table = pg_sys::SPI_tuptable;
                    let n = pg_sys::SPI_processed as usize;
                    if n == 0 {
                        pg_sys::SPI_freetuptable(table);
                        return None;
                    }
                    *held = table;
                    let mut chunk = Spine::new(self.columns);
                    chunk.push_tuples(std::slice::from_raw_parts((*table).vals, n), (*table).tupdesc);
                    Some(chunk)
                }
            }
        }
    }

    /// Closes the cursor or frees the in-memory spine.
    ///
    /// SAFETY: inside the SPI connection `open` ran in.
    pub(super) unsafe fn close(self) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            match self.source {
                Source::Memory { context, .. } => pg_sys::MemoryContextDelete(context),
                Source::Cursor { portal, held } => {
                    if !held.is_null() {
                        pg_sys::SPI_freetuptable(held);
                    }
                    pg_sys::SPI_cursor_close(portal);
                }
            }
        }
    }
}

/// Every row of the unsorted cursor, values by reference copied into
/// `memory`; None (and `memory` left to be freed) once the rows, with the
/// sort's entries, would pass `budget` bytes.
///
/// SAFETY: inside SPI_connect.
unsafe fn read_all(portal: pg_sys::Portal, memory: pg_sys::MemoryContext, budget: usize) -> Option<Spine> {
    // SAFETY: the caller's promise (this function's contract).
    unsafe {
        let desc = (*portal).tupDesc;
        let columns = (*desc).natts as usize;
        let copy: Vec<(bool, i16)> = (*desc).attrs.as_slice(columns).iter().map(|a| (a.attbyval, a.attlen)).collect();
        let mut all = Spine::new(columns);
        loop {
            pgrx::check_for_interrupts!();
            pg_sys::SPI_cursor_fetch(portal, true, READ_BATCH as std::ffi::c_long);
            let table = pg_sys::SPI_tuptable;
            let n = pg_sys::SPI_processed as usize;
            if n == 0 {
                // What the chunks may use is what the spine leaves.
                all.values.shrink_to_fit();
                all.nulls.shrink_to_fit();
                return Some(all);
            }
            let start = all.rows;
            all.push_tuples(std::slice::from_raw_parts((*table).vals, n), (*table).tupdesc);
            let caller = pg_sys::MemoryContextSwitchTo(memory);
            for i in start * columns..all.rows * columns {
                let (by_value, length) = copy[i % columns];
                if !by_value && !all.nulls[i] {
                    all.values[i] = copy_by_reference(all.values[i], length);
                }
            }
            pg_sys::MemoryContextSwitchTo(caller);
            pg_sys::SPI_freetuptable(table);
            let held = all.bytes() + pg_sys::MemoryContextMemAllocated(memory, true) + all.rows * SORT_ENTRY_BYTES;
            if held > budget {
                return None;
            }
        }
    }
}
