//! Single-row INSERTs into a monitor's predictions table, counted by the
//! native insert trigger (`insert_trigger`) instead of the PL/pgSQL trigger
//! function.
//!
//! The work is the PL/pgSQL trigger's single-row branch: one statement claims
//! the key (`_claim_one_sql`), and a key that was already there is recounted
//! by `apply_predictions`. Under eight single-row writers, PL/pgSQL's share of
//! that was a third: the SECURITY DEFINER call, setting up each expression
//! anew in every transaction, and a statement over the transition table. Here
//! the statements are prepared once per backend and trigger, with the row's
//! values as parameters.
//!
//! A row this path does not serve is left to the PL/pgSQL function: a key in
//! the range of a bulk load's claim chunk (whose entry must become a keys row
//! first), or a table that is not the monitor's predictions table.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::rc::Rc;

use pgrx::prelude::*;

use super::insert_trigger::{as_user, each_row, has_pages, integer, lock_shared, Attributes};
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
    lock_id: i64,
    claims_table: pg_sys::Oid,
    /// The claim of the key (SQL from `_on_insert_predictions_sql`).
    claim: Plan,
    /// `apply_predictions(ARRAY[$1])`: the recount of a key already counted.
    apply: Plan,
    /// `compact(false)`.
    compact: Plan,
    /// Whether a claim chunk's range holds the key $1.
    in_chunk: Plan,
}

thread_local! {
    /// By trigger OID; None when the trigger's table is not a monitor's
    /// predictions table this path serves.
    static PLANS: RefCell<HashMap<pg_sys::Oid, Option<Rc<Plans>>>> = RefCell::default();
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
        let fresh = prepare(data, monitor).map(Rc::new);
        PLANS.with(|p| p.borrow_mut().insert(trigger, fresh.clone()));
        fresh
    }
}

/// SAFETY: `data` is a trigger call's.
unsafe fn prepare(data: &pg_sys::TriggerData, name: &str) -> Option<Plans> {
    // SAFETY: the caller's promise.
    let relation = unsafe { &*data.tg_relation };
    let monitor = as_user(pg_sys::Oid::INVALID, || Spi::connect(|c| Monitor::load(&c, name)))?;
    if monitor.predictions != relation.rd_id || monitor.predictions == monitor.outcomes || !monitor.integer_key {
        return None;
    }
    let key = Attributes(relation.rd_att).find(&monitor.key_column).map(|(i, a)| (i, a.atttypid))?;
    // SAFETY: the relation's descriptor is valid.
    let columns: Vec<(usize, pg_sys::Oid)> = unsafe { live_columns(relation.rd_att) }.collect();
    let sql = "SELECT (mlmon._on_insert_predictions_sql(m)).one_row_claim,
                      format('SELECT %s(ARRAY[$1]::%s[])', mlmon._internal_function(m, 'apply_predictions'), m.key_type),
                      format('SELECT %s(false)', mlmon._internal_function(m, 'compact')),
                      format('SELECT c.hi >= $1 FROM %s c WHERE c.lo <= $1 ORDER BY c.lo DESC LIMIT 1', mlmon._claims_table(m)),
                      mlmon._claims_table(m)::regclass::oid
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
                    in_chunk: Plan::prepare(&text(4), &[pg_sys::INT8OID]),
                    claims_table: row.get::<pg_sys::Oid>(5).ok().flatten()?,
                    columns,
                    key,
                    lock_id: monitor.lock_id,
                })
            }
        })
    })
}

const NULL: c_char = b'n' as c_char;
const NOT_NULL: c_char = b' ' as c_char;

/// Counts one row: what the PL/pgSQL trigger's prologue and single-row branch
/// do. False when the key lies in a claim chunk's range.
///
/// SAFETY: `values` and `nulls` are a row of the table the plans were made for.
unsafe fn count(plans: &Plans, values: &[pg_sys::Datum], nulls: &[bool]) -> bool {
    if nulls[plans.key.0] {
        return true; // counts nowhere
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
            if has_pages(plans.claims_table) && plans.in_chunk.execute(&[key], &[NOT_NULL]) == 1 && boolean_at(1) {
                pg_sys::SPI_finish();
                return false;
            }
            if pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) < COMPACT_SHARE {
                plans.compact.execute(&[], &[]);
            }
            if plans.claim.execute(&parameters, &parameter_nulls) == 1 && !boolean_at(2) {
                plans.apply.execute(&[key], &[NOT_NULL]);
            }
            pg_sys::SPI_finish();
            true
        }
    })
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

