//! Single-row INSERTs into a monitor's predictions table, counted by the
//! native insert trigger (`insert_trigger`) instead of the PL/pgSQL trigger
//! function.
//!
//! The work is the PL/pgSQL trigger's single-row branch: claim the key
//! (insert its keys row, or lock the one there), count a new key's
//! contribution in the rollup, and have `apply_predictions` recount a key
//! that was already there. Under eight single-row writers, PL/pgSQL's share
//! was a third of the trigger: the SECURITY DEFINER call, setting up each
//! expression anew in every transaction, a statement over the transition
//! table. Here the claim is a statement prepared once per backend and
//! trigger, with the row's values as parameters, and the rollup's delta row
//! is appended without a statement (`Rollup::append`).
//!
//! Rows this path leaves to the PL/pgSQL function: rows that do not count
//! (a NULL time, label or weight; rare, and their claim differs), keys in
//! the range of a bulk load's claim chunk (whose entry must become a keys row
//! first), and tables that are not the monitor's predictions table.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::rc::Rc;

use pgrx::prelude::*;

use super::insert_trigger::{as_user, each_row, integer, lock_shared, Attributes};
use crate::monitor_bulk::{spi_error, Monitor};

/// The share of statements that also fold delta rows, as the PL/pgSQL
/// trigger's `random() < 0.005`.
const COMPACT_SHARE: f64 = 0.005;

/// A prepared statement kept for the life of the backend (or until the
/// table's columns change).
struct Plan(pg_sys::SPIPlanPtr);

impl Plan {
    /// SAFETY: within an SPI connection.
    unsafe fn prepare(sql: &str, types: &[pg_sys::Oid]) -> Plan {
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
    /// SAFETY: within an SPI connection; one value and null flag per parameter.
    unsafe fn execute(&self, values: &[pg_sys::Datum], nulls: &[c_char]) -> u64 {
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

struct Plans {
    owner: pg_sys::Oid,
    /// The live columns of the table (attribute index, type) when the plans
    /// were made: the claim's parameters.
    columns: Vec<(usize, pg_sys::Oid)>,
    key: (usize, pg_sys::Oid),
    /// The columns whose values a row needs to count (time, label, weight):
    /// the claim is made for rows that count.
    required: Vec<usize>,
    lock_id: i64,
    rollup: Rollup,
    /// The claim of the key (`_claim_key_sql` from `_one_row_claim_sql`).
    claim: Plan,
    /// `apply_predictions(ARRAY[$1])`: the recount of a key already counted.
    apply: Plan,
    /// `compact(false)`.
    compact: Plan,
    /// The claim chunks' ranges (lo, hi), ascending.
    chunk_ranges: Plan,
    /// Those ranges, as of a count of `INVALIDATIONS`.
    chunk_ranges_seen: RefCell<Option<(u64, Vec<(i64, i64)>)>>,
}

thread_local! {
    /// By trigger OID; None when the trigger's table is not a monitor's
    /// predictions table this path serves.
    static PLANS: RefCell<HashMap<pg_sys::Oid, Option<Rc<Plans>>>> = RefCell::default();
    /// Relcache invalidations this backend has taken in (of any relation,
    /// once `listen_for_invalidations` ran).
    static INVALIDATIONS: Cell<u64> = const { Cell::new(0) };
    static LISTENING: Cell<bool> = const { Cell::new(false) };
}

/// Tells every backend that a claims table has new chunks: a relcache
/// invalidation of the table, sent when the transaction commits, before it
/// releases the bulk lock that writers wait for (see `Plans::in_chunk`).
pub(crate) fn announce_chunks(claims_table: pg_sys::Oid) {
    // SAFETY: queues an invalidation message for the transaction's end.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(claims_table) };
}

unsafe extern "C-unwind" fn relation_invalidated(_: pg_sys::Datum, _: pg_sys::Oid) {
    INVALIDATIONS.with(|n| n.set(n.get() + 1));
}

fn listen_for_invalidations() {
    if !LISTENING.with(Cell::get) {
        // SAFETY: registers a callback for the life of the backend; it only
        // counts.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(relation_invalidated), pg_sys::Datum::from(0)) };
        LISTENING.with(|l| l.set(true));
    }
}

/// The live (not dropped) columns of a tuple descriptor: (index, type).
///
/// SAFETY: `desc` is valid.
unsafe fn live_columns(desc: pg_sys::TupleDesc) -> impl Iterator<Item = (usize, pg_sys::Oid)> {
    // SAFETY: the caller's promise.
    let attributes = unsafe { (*desc).attrs.as_slice((*desc).natts as usize) };
    attributes.iter().enumerate().filter(|(_, a)| !a.attisdropped).map(|(i, a)| (i, a.atttypid))
}

/// Counts the one row of a single-row INSERT statement; false when the
/// PL/pgSQL function must.
///
/// SAFETY: `data` is an INSERT statement trigger's, with a NEW TABLE of one row.
pub(super) unsafe fn insert(data: &pg_sys::TriggerData, monitor: &str) -> bool {
    // SAFETY: the caller's promise.
    unsafe {
        let Some(plans) = plans(data, monitor) else {
            return false;
        };
        let mut counted = false;
        each_row(data.tg_newtable, (*data.tg_relation).rd_att, |values, nulls| {
            counted = count(&plans, values, nulls);
            false
        });
        counted
    }
}

/// The trigger's plans, made on first use and again after the table's columns
/// changed. (The plan cache replans after other DDL on the tables.)
///
/// SAFETY: `data` is a trigger call's.
unsafe fn plans(data: &pg_sys::TriggerData, monitor: &str) -> Option<Rc<Plans>> {
    // SAFETY: the caller's promise.
    unsafe {
        let trigger = (*data.tg_trigger).tgoid;
        let desc = (*data.tg_relation).rd_att;
        let known = PLANS.with(|p| p.borrow().get(&trigger).cloned());
        match known {
            Some(None) => return None,
            Some(Some(plans)) if live_columns(desc).eq(plans.columns.iter().copied()) => return Some(plans),
            _ => {}
        }
        listen_for_invalidations();
        let fresh = prepare(data, monitor).map(Rc::new);
        PLANS.with(|p| p.borrow_mut().insert(trigger, fresh.clone()));
        fresh
    }
}

/// SAFETY: `data` is a trigger call's.
unsafe fn prepare(data: &pg_sys::TriggerData, name: &str) -> Option<Plans> {
    // SAFETY: the caller's promise.
    let relation = unsafe { &*data.tg_relation };
    let monitor = as_user(pg_sys::Oid::INVALID, || Spi::connect(|c| Monitor::load(c, name)))?;
    if monitor.predictions != relation.rd_id || monitor.predictions == monitor.outcomes || !monitor.integer_key {
        return None;
    }
    let attributes = Attributes(relation.rd_att);
    let key = attributes.find(&monitor.key_column).map(|(i, a)| (i, a.atttypid))?;
    let required: Option<Vec<usize>> = [Some(&monitor.predicted_at_column), Some(&monitor.predicted_column), monitor.weight_column.as_ref()]
        .into_iter()
        .flatten()
        .map(|name| attributes.find(name).map(|(i, _)| i))
        .collect();
    let required = required?;
    // SAFETY: the relation's descriptor is valid.
    let columns: Vec<(usize, pg_sys::Oid)> = unsafe { live_columns(relation.rd_att) }.collect();
    let sql = "SELECT mlmon._one_row_claim_sql(m),
                      format('SELECT %s(ARRAY[$1]::%s[])', mlmon._internal_function(m, 'apply_predictions'), m.key_type),
                      format('SELECT %s(false)', mlmon._internal_function(m, 'compact')),
                      format('SELECT c.lo, c.hi FROM %s c ORDER BY c.lo', mlmon._claims_table(m)),
                      mlmon._rollup_table(m)::regclass::oid
               FROM mlmon.monitor m WHERE m.name = $1";
    as_user(monitor.owner, || {
        Spi::connect(|client| {
            let rows = client.select(sql, Some(1), &[name.into()]).unwrap_or_else(|e| spi_error(e));
            let row = rows.first();
            let text = |i: usize| row.get::<String>(i).ok().flatten().unwrap_or_default();
            let types: Vec<pg_sys::Oid> = columns.iter().map(|&(_, t)| t).collect();
            // SAFETY: within the SPI connection.
            unsafe {
                Some(Plans {
                    owner: monitor.owner,
                    claim: Plan::prepare(&text(1), &types),
                    apply: Plan::prepare(&text(2), &[pg_sys::INT8OID]),
                    compact: Plan::prepare(&text(3), &[]),
                    chunk_ranges: Plan::prepare(&text(4), &[]),
                    chunk_ranges_seen: RefCell::new(None),
                    rollup: Rollup::describe(row.get::<pg_sys::Oid>(5).ok().flatten()?)?,
                    columns,
                    key,
                    required,
                    lock_id: monitor.lock_id,
                })
            }
        })
    })
}

const NULL: c_char = b'n' as c_char;
const NOT_NULL: c_char = b' ' as c_char;

/// Counts one row: what the PL/pgSQL trigger's prologue and single-row branch
/// do. False when the row does not count or its key lies in a claim chunk's
/// range.
///
/// SAFETY: `values` and `nulls` are a row of the table the plans were made for.
unsafe fn count(plans: &Plans, values: &[pg_sys::Datum], nulls: &[bool]) -> bool {
    if nulls[plans.key.0] {
        return true; // counts nowhere
    }
    if plans.required.iter().any(|&i| nulls[i]) {
        return false; // rare: a row that does not count still claims its key
    }
    let key = pg_sys::Datum::from(integer(values[plans.key.0], plans.key.1));
    let parameters: Vec<pg_sys::Datum> = plans.columns.iter().map(|&(i, _)| values[i]).collect();
    let parameter_nulls: Vec<c_char> = plans.columns.iter().map(|&(i, _)| if nulls[i] { NULL } else { NOT_NULL }).collect();
    as_user(plans.owner, || {
        // SAFETY: the statements run between SPI_connect and SPI_finish with
        // one value per parameter; results are read before the next runs.
        unsafe {
            if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
                pgrx::error!("mlmon: SPI_connect failed");
            }
            // The `_enter` trigger took the lock already; taken again (a
            // local lock-table hit) it also guards a disabled `_enter`.
            lock_shared(plans.lock_id);
            if plans.in_chunk(key.value() as i64) {
                pg_sys::SPI_finish();
                return false;
            }
            if pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) < COMPACT_SHARE {
                plans.compact.execute(&[], &[]);
            }
            let Some(rollup) = plans.rollup.open() else {
                pg_sys::SPI_finish();
                return false;
            };
            if plans.claim.execute(&parameters, &parameter_nulls) == 1 {
                if boolean_at(2) {
                    // The contribution the keys row got, counted once: columns
                    // 3-7 are bucket, segment, predicted, actual, weight.
                    let table = pg_sys::SPI_tuptable;
                    let mut cell = [(pg_sys::Datum::from(0), false); 5];
                    for (i, (value, null)) in cell.iter_mut().enumerate() {
                        *value = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, i as i32 + 3, null);
                    }
                    plans.rollup.append(rollup, cell);
                } else {
                    plans.apply.execute(&[key], &[NOT_NULL]);
                }
            }
            pg_sys::table_close(rollup, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::SPI_finish();
            true
        }
    })
}

/// The rollup table, for appending delta rows without a statement: the
/// second half of `_claim_one_sql`. Its plan's executor start-up (a second
/// ModifyTable and two CTE scans) cost more than the row.
struct Rollup {
    table: pg_sys::Oid,
    /// The table's attribute count when described.
    width: usize,
    /// The attribute index of each of `ROLLUP_COLUMNS`.
    positions: [usize; 7],
}

/// In the order `append` gives their values: the cell, then n and compacted.
const ROLLUP_COLUMNS: [&str; 7] = ["bucket", "segment", "predicted", "actual", "weight", "n", "compacted"];

impl Rollup {
    fn describe(table: pg_sys::Oid) -> Option<Rollup> {
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
    /// SAFETY: in a transaction.
    unsafe fn open(&self) -> Option<pg_sys::Relation> {
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
    /// entries, as logical replication applies an INSERT.
    ///
    /// SAFETY: `relation` came from `open`; the values are valid for their columns.
    unsafe fn append(&self, relation: pg_sys::Relation, cell: [(pg_sys::Datum, bool); 5]) {
        // SAFETY: the caller's promise; the executor state, slot and nodes
        // live in the executor state's memory context, freed at the end.
        unsafe {
            let estate = pg_sys::CreateExecutorState();
            let rte = pg_sys::palloc0(std::mem::size_of::<pg_sys::RangeTblEntry>()).cast::<pg_sys::RangeTblEntry>();
            (*rte).type_ = pg_sys::NodeTag::T_RangeTblEntry;
            (*rte).rtekind = pg_sys::RTEKind::RTE_RELATION;
            (*rte).relid = self.table;
            (*rte).relkind = (*(*relation).rd_rel).relkind;
            (*rte).rellockmode = pg_sys::RowExclusiveLock as i32;
            pg_sys::ExecInitRangeTable(estate, pg_sys::lappend(std::ptr::null_mut(), rte.cast()));
            let info = pg_sys::palloc0(std::mem::size_of::<pg_sys::ResultRelInfo>()).cast::<pg_sys::ResultRelInfo>();
            (*info).type_ = pg_sys::NodeTag::T_ResultRelInfo;
            pg_sys::InitResultRelInfo(info, relation, 1, std::ptr::null_mut(), 0);
            (*estate).es_output_cid = pg_sys::GetCurrentCommandId(true);
            pg_sys::ExecOpenIndices(info, false);
            let slot = pg_sys::ExecInitExtraTupleSlot(estate, (*relation).rd_att, &pg_sys::TTSOpsVirtual);
            let values = std::slice::from_raw_parts_mut((*slot).tts_values, self.width);
            let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, self.width);
            nulls.fill(true); // dropped columns
            let row = cell.into_iter().chain([(pg_sys::Datum::from(1i64), false), (pg_sys::Datum::from(false), false)]);
            for (&position, (value, null)) in self.positions.iter().zip(row) {
                values[position] = value;
                nulls[position] = null;
            }
            pg_sys::ExecStoreVirtualTuple(slot);
            pg_sys::ExecSimpleRelationInsert(info, estate, slot);
            pg_sys::ExecCloseIndices(info);
            pg_sys::ExecResetTupleTable((*estate).es_tupleTable, false);
            pg_sys::FreeExecutorState(estate);
        }
    }
}

impl Plans {
    /// Whether a claim chunk's range holds `key`, from the ranges cached
    /// since the last relcache invalidation this backend took in. A bulk load
    /// announces new chunks with one (`announce_chunks`), sent at its commit
    /// before it releases the bulk lock; we hold that lock shared, so the
    /// invalidations taken in now include every committed load's.
    ///
    /// SAFETY: within an SPI connection, holding the bulk lock.
    unsafe fn in_chunk(&self, key: i64) -> bool {
        // SAFETY: the caller's promise.
        unsafe {
            pg_sys::AcceptInvalidationMessages();
            let now = INVALIDATIONS.with(Cell::get);
            let mut seen = self.chunk_ranges_seen.borrow_mut();
            if seen.as_ref().is_none_or(|(at, _)| *at != now) {
                let rows = self.chunk_ranges.execute(&[], &[]) as usize;
                let table = pg_sys::SPI_tuptable;
                let ranges = (0..rows)
                    .map(|i| {
                        let tuple = *(*table).vals.add(i);
                        let mut null = false;
                        let lo = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, 1, &mut null).value() as i64;
                        let hi = pg_sys::SPI_getbinval(tuple, (*table).tupdesc, 2, &mut null).value() as i64;
                        (lo, hi)
                    })
                    .collect();
                *seen = Some((now, ranges));
            }
            let ranges = &seen.as_ref().expect("loaded above").1;
            let after = ranges.partition_point(|&(lo, _)| lo <= key);
            after > 0 && ranges[after - 1].1 >= key
        }
    }
}

/// Column `column` of the first row of the last statement's result, as a
/// boolean (NULL is false).
///
/// SAFETY: the last statement returned a row with a boolean there.
unsafe fn boolean_at(column: i32) -> bool {
    // SAFETY: the caller's promise.
    unsafe {
        let table = pg_sys::SPI_tuptable;
        let mut null = false;
        let value = pg_sys::SPI_getbinval(*(*table).vals, (*table).tupdesc, column, &mut null);
        !null && value.value() != 0
    }
}

