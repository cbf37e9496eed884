//! Single-row INSERTs into a monitor's outcomes table (a late label arriving
//! on its own), counted by the native write trigger (`write_trigger.rs`)
//! instead of the PL/pgSQL trigger function.
//!
//! The work is the PL/pgSQL function's for one key, as statements prepared
//! once per backend and trigger, without PL/pgSQL's per-statement set-up, its
//! function calls or its deadlock-retry subtransaction (a single-key claim can
//! only deadlock on keys its transaction took earlier, which a retry could not
//! release; `single_row.rs` argues the same for predictions):
//! 1. a key in a claim chunk's range has its entry copied into a keys row
//!    (`_materialize_sql`), as the `_enter` statements do; a row inserted
//!    there is ours until we commit, so step 2 is skipped;
//! 2. the key is claimed (`_claim_one_sql`): a key without a keys row gets a
//!    placeholder, which counts nowhere, and we are done; a key with one is
//!    locked, so every other writer of it has finished;
//! 3. its actual label is recounted from the outcomes table in a fresh
//!    snapshot, and the keys row and the rollup follow (`_recount_sql`).
//!
//! The statements run with sequential scans off: a plan cached while the
//! outcomes table was nearly empty would otherwise scan all of it per row
//! once it grew.
//!
//! uuid and text keys take the same path without step 1 (bulk loads keep
//! them in keys rows, not chunks), the key passed as it is.
//!
//! Left to the PL/pgSQL function: monitors whose predictions and outcomes are
//! one table, and key types the statement path does not serve.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::prelude::*;

use super::catalog::{spi_error, Monitor};
use super::chunk_ranges::ChunkRanges;
use super::locks::lock_shared;
use crate::pg::session::{as_user, with_setting};
use crate::pg::spi_plan::{boolean_at, Plan, NOT_NULL};
use crate::pg::tuples::{each_row, integer, is_integer, live_columns, Attributes};

/// The share of statements that also fold delta rows, as the PL/pgSQL
/// trigger's `random() < 0.005`.
const COMPACT_SHARE: f64 = 0.005;

struct Plans {
    owner: pg_sys::Oid,
    /// The outcome key column (attribute index, type).
    key: (usize, pg_sys::Oid),
    lock_id: i64,
    /// Step 1, `$1` the key as bigint; returns a row when it inserted one.
    /// With the chunk ranges; None for uuid and text keys.
    materialize: Option<(Plan, ChunkRanges)>,
    /// Step 2: one row (key, inserted) for a non-NULL key.
    claim: Plan,
    /// Step 3.
    recount: Plan,
    /// `compact(false)`.
    compact: Plan,
    /// The outcomes table's schema and name when the plans were made.
    table: (pg_sys::Oid, String),
}

thread_local! {
    /// By trigger OID; None when the trigger's table is not a monitor's
    /// outcomes table this path serves.
    static PLANS: RefCell<HashMap<pg_sys::Oid, Option<Rc<Plans>>>> = RefCell::default();
}

/// Counts the one row of a single-row INSERT statement into the outcomes
/// table; false when the PL/pgSQL function must.
///
/// SAFETY: `data` is an INSERT statement trigger's, with a NEW TABLE of one row.
pub unsafe fn insert(data: &pg_sys::TriggerData, monitor: &str) -> bool {
    // SAFETY: the caller's promise.
    unsafe {
        let trigger = (*data.tg_trigger).tgoid;
        let desc = (*data.tg_relation).rd_att;
        let known = PLANS.with(|p| p.borrow().get(&trigger).cloned());
        // The plans hold the key column's position and type, and the
        // recount names the outcomes table: made again if the column's type
        // changed (ALTER TABLE ... TYPE) or the table was renamed or moved
        // (the plan cache would look the old name up again). Other DDL the
        // plan cache replans by itself.
        let plans = match known {
            Some(Some(plans))
                if key_type(desc, plans.key.0) == Some(plans.key.1) && plans.table == table_name(data.tg_relation) =>
            {
                Some(plans)
            }
            Some(None) => None,
            _ => {
                let fresh = prepare(data, monitor).map(Rc::new);
                PLANS.with(|p| p.borrow_mut().insert(trigger, fresh.clone()));
                fresh
            }
        };
        let Some(plans) = plans else {
            return false;
        };
        each_row(data.tg_newtable, desc, |values, nulls| {
            // Counted inside the loop: a by-reference key (uuid, text) points
            // into the transition table's current row. A NULL key counts
            // nowhere.
            if !nulls[plans.key.0] {
                count(&plans, match plans.materialize {
                    Some(_) => pg_sys::Datum::from(integer(values[plans.key.0], plans.key.1)),
                    None => values[plans.key.0],
                });
            }
            false
        });
        true
    }
}

/// The type of column `index` of `desc`, if it is a live column.
///
/// SAFETY: `desc` is a valid tuple descriptor.
unsafe fn key_type(desc: pg_sys::TupleDesc, index: usize) -> Option<pg_sys::Oid> {
    // SAFETY: the caller's promise.
    unsafe { live_columns(desc) }.find(|&(i, _)| i == index).map(|(_, type_oid)| type_oid)
}

/// A relation's schema and name.
///
/// SAFETY: `relation` is an open relation.
unsafe fn table_name(relation: pg_sys::Relation) -> (pg_sys::Oid, String) {
    // SAFETY: the caller's promise; relname is a NUL-terminated NameData.
    unsafe {
        let form = &*(*relation).rd_rel;
        (form.relnamespace, std::ffi::CStr::from_ptr(form.relname.data.as_ptr()).to_string_lossy().into_owned())
    }
}

/// SAFETY: `data` is a trigger call's.
unsafe fn prepare(data: &pg_sys::TriggerData, name: &str) -> Option<Plans> {
    // SAFETY: the caller's promise.
    let relation = unsafe { &*data.tg_relation };
    let monitor = as_user(pg_sys::Oid::INVALID, || Spi::connect(|c| Monitor::load(c, name)))?;
    if monitor.outcomes != relation.rd_id || monitor.predictions == monitor.outcomes || !(monitor.integer_key || monitor.text_key) {
        return None;
    }
    let key = Attributes(relation.rd_att).find(&monitor.outcome_key_column).map(|(i, a)| (i, a.atttypid))?;
    if monitor.integer_key != is_integer(key.1) {
        return None;
    }
    let sql = "SELECT mlmon._materialize_sql(m, 'SELECT $1::bigint') || ' RETURNING true',
                      mlmon._claim_one_sql(m, mlmon._outcome_claim_rows_sql(m, format('ARRAY[$1::%s]', m.key_type))),
                      mlmon._recount_sql(m, mlmon._outcome_recounted_sql(m, format('ARRAY[$1::%s]', m.key_type), false)),
                      format('SELECT %s(false)', mlmon._internal_function(m, 'compact')),
                      mlmon._claims_table(m)
               FROM mlmon.monitor m WHERE m.name = $1";
    as_user(monitor.owner, || {
        Spi::connect(|client| {
            let rows = client.select(sql, Some(1), &[name.into()]).unwrap_or_else(|e| spi_error(e));
            let row = rows.first();
            let text = |i: usize| row.get::<String>(i).ok().flatten().unwrap_or_default();
            let parameter = [if monitor.integer_key { pg_sys::INT8OID } else { key.1 }];
            // SAFETY: within the SPI connection.
            unsafe {
                Some(Plans {
                    owner: monitor.owner,
                    key,
                    lock_id: monitor.lock_id,
                    materialize: monitor
                        .integer_key
                        .then(|| (Plan::prepare(&text(1), &parameter), ChunkRanges::prepare(&text(5)))),
                    claim: Plan::prepare(&text(2), &parameter),
                    recount: Plan::prepare(&text(3), &parameter),
                    compact: Plan::prepare(&text(4), &[]),
                    table: table_name(data.tg_relation),
                })
            }
        })
    })
}

/// Steps 1-3 for `key` (bigint for integer keys, else the column's datum).
fn count(plans: &Plans, key: pg_sys::Datum) {
    let parameter = [key];
    as_user(plans.owner, || {
        with_setting(c"enable_seqscan", c"off", || {
            // SAFETY: the statements run between SPI_connect and SPI_finish
            // with one value per parameter; results are read before the next
            // runs.
            unsafe {
                if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
                    pgrx::error!("mlmon: SPI_connect failed");
                }
                // The `_enter` trigger took the lock already; taken again (a
                // local lock-table hit) it also guards a disabled `_enter`.
                lock_shared(plans.lock_id);
                if pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) < COMPACT_SHARE {
                    plans.compact.execute(&[], &[]);
                }
                // A keys row we inserted is ours until we commit (another
                // writer's insert of the key waits for us): no claim needed.
                let materialized = plans.materialize.as_ref().is_some_and(|(plan, chunks)| {
                    chunks.hold(key.value() as i64) && plan.execute(&parameter, &[NOT_NULL]) == 1
                });
                // Column 2 of the claim: inserted (a placeholder, counted nowhere).
                if materialized || (plans.claim.execute(&parameter, &[NOT_NULL]) == 1 && !boolean_at(2)) {
                    plans.recount.execute(&parameter, &[NOT_NULL]);
                }
                pg_sys::SPI_finish();
            }
        })
    })
}
