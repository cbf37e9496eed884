//! Single-row INSERTs into a monitor's predictions table, counted by the
//! native write trigger (`write_trigger.rs`) instead of the PL/pgSQL trigger
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
//! is appended without a statement (`rollup.rs`).
//!
//! Rows this path leaves to the PL/pgSQL function: rows that do not count
//! (a NULL time, label or weight; rare, and their claim differs), keys in
//! the range of a bulk load's claim chunk (whose entry must become a keys row
//! first; integer keys only: uuid and text keys have no chunks), and tables
//! that are not the monitor's predictions table.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_char;
use std::rc::Rc;

use pgrx::prelude::*;

use super::catalog::{spi_error, Monitor};
use super::chunk_ranges::ChunkRanges;
use super::locks::lock_shared;
use super::rollup::Rollup;
use crate::pg::relcache;
use crate::pg::session::as_user;
use crate::pg::spi_plan::{boolean_at, result_value, Plan, NOT_NULL, NULL};
use crate::pg::tuples::{each_row, integer, live_columns, Attributes};

/// The share of statements that also fold delta rows, as the PL/pgSQL
/// trigger's `random() < 0.005`.
const COMPACT_SHARE: f64 = 0.005;

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
    /// The claim chunks' ranges: keys in them are left to PL/pgSQL. None
    /// for uuid and text keys, which bulk loads keep in keys rows only.
    chunks: Option<ChunkRanges>,
}

thread_local! {
    /// By trigger OID; None when the trigger's table is not a monitor's
    /// predictions table this path serves.
    static PLANS: RefCell<HashMap<pg_sys::Oid, Option<Rc<Plans>>>> = RefCell::default();
}

/// Counts the one row of a single-row INSERT statement; false when the
/// PL/pgSQL function must.
///
/// SAFETY: `data` is an INSERT statement trigger's, with a NEW TABLE of one row.
pub unsafe fn insert(data: &pg_sys::TriggerData, monitor: &str) -> bool {
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
        relcache::listen();
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
    if monitor.predictions != relation.rd_id || monitor.predictions == monitor.outcomes || !(monitor.integer_key || monitor.text_key) {
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
                      mlmon._claims_table(m),
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
                    // Integer keys are passed as bigint, others as they are.
                    apply: Plan::prepare(&text(2), &[if monitor.integer_key { pg_sys::INT8OID } else { key.1 }]),
                    compact: Plan::prepare(&text(3), &[]),
                    chunks: monitor.integer_key.then(|| ChunkRanges::prepare(&text(4))),
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
    let key = match plans.chunks {
        Some(_) => pg_sys::Datum::from(integer(values[plans.key.0], plans.key.1)),
        None => values[plans.key.0],
    };
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
            if plans.chunks.as_ref().is_some_and(|c| c.hold(key.value() as i64)) {
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
                    let mut cell = [(pg_sys::Datum::from(0), false); 5];
                    for (i, value) in cell.iter_mut().enumerate() {
                        *value = result_value(0, i as i32 + 3);
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
