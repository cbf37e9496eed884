//! The native write trigger of monitors with integer keys
//! (`mlmon._monitor_write(monitor, fallback)`): an AFTER INSERT, UPDATE or
//! DELETE statement trigger that counts the statements where PL/pgSQL cost
//! the most, and hands every other statement to the monitor's PL/pgSQL
//! trigger function (`fallback`, by OID) with the same trigger data.
//! - Single-row INSERTs (`single_row.rs` into predictions,
//!   `single_outcome.rs` into outcomes): PL/pgSQL's call and expression
//!   set-up cost about a third of the trigger under many single-row writers
//!   of predictions, most of it for late outcomes.
//! - Large statements of any kind (`bulk/`): read the statement's transition
//!   tables directly, where SQL over them cost more than the statement itself
//!   (1M rows: grouping alone took 0.76x of the COPY's time, with
//!   deduplication 1.6x), and restate the touched keys without a claim each.
//!   Predictions are counted (`mlmon_core::monitors::bulk`) on a helper
//!   thread while this one reads them (`pg::helper_thread`).

#![allow(unsafe_code)]

use pgrx::prelude::*;

use super::{bulk, single_outcome, single_row};
use crate::pg::fmgr::{call_trigger_function, v1_function};
use crate::pg::session::setting;
use crate::pg::trigger::{trigger_arguments, trigger_data};

/// Statements of fewer rows take the usual path (`mlmon.bulk_min_rows`).
const DEFAULT_MIN_ROWS: i64 = 10_000;
/// Nor do statements of more rows (`mlmon.bulk_max_rows`): the statement
/// path holds about 45 bytes a row in memory at its peak (the rows, 32 bytes,
/// and their chunks' encoded entries; an UPDATE, its old keys too), 180 MB at
/// this default. The usual path spills to disk.
const DEFAULT_MAX_ROWS: i64 = 4_000_000;

v1_function!(monitor_write);

/// `mlmon._monitor_write(monitor, fallback)`: AFTER INSERT, UPDATE or DELETE
/// FOR EACH STATEMENT trigger with its transition tables; `fallback` is the
/// OID of the monitor's PL/pgSQL trigger function for the table.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn monitor_write(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the trigger data is the current call's; its transition tables
    // and relation are valid for the whole call.
    unsafe {
        let Some(data) = trigger_data(fcinfo) else {
            pgrx::error!("mlmon._monitor_write may only be called as a trigger");
        };
        let event = data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
        let arguments = trigger_arguments(data);
        let fallback = (arguments.len() == 2).then(|| arguments[1].parse::<u32>().ok()).flatten();
        // The transition table that counts the statement's rows.
        let table = match event {
            pg_sys::TRIGGER_EVENT_INSERT => data.tg_newtable,
            pg_sys::TRIGGER_EVENT_UPDATE if !data.tg_newtable.is_null() => data.tg_oldtable,
            pg_sys::TRIGGER_EVENT_DELETE => data.tg_oldtable,
            _ => std::ptr::null_mut(),
        };
        let (Some(fallback), false, 0) = (fallback, table.is_null(), data.tg_event & pg_sys::TRIGGER_EVENT_ROW) else {
            pgrx::error!("mlmon._monitor_write may only be called as a monitor's statement trigger with transition tables");
        };
        // Both native paths take shortcuts that hold only for a snapshot
        // taken after every committed bulk load (see _enter_sql).
        if pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32 {
            let rows = pg_sys::tuplestore_tuple_count(table);
            let handled = if rows == 1 && event == pg_sys::TRIGGER_EVENT_INSERT {
                single_row::insert(data, &arguments[0]) || single_outcome::insert(data, &arguments[0])
            } else if (setting(c"mlmon.bulk_min_rows", DEFAULT_MIN_ROWS)..=setting(c"mlmon.bulk_max_rows", DEFAULT_MAX_ROWS))
                .contains(&rows)
            {
                bulk::write_statement(data, &arguments[0])
            } else {
                false
            };
            if handled {
                return pg_sys::Datum::from(0);
            }
        }
        if !is_monitors_table(&arguments[0], (*data.tg_relation).rd_id) {
            pgrx::error!("mlmon._monitor_write for monitor {} fired on a table that is not the monitor's", arguments[0]);
        }
        call_trigger_function(pg_sys::Oid::from(fallback), fcinfo)
    }
}

/// Whether `relation` is one of `monitor`'s two tables. The fallback is the
/// monitor's SECURITY DEFINER trigger function, and those generated before
/// 0.2.0 do not check the table themselves: a trigger of another role's
/// table naming this monitor must not have its rows counted (the native
/// paths check the table already). Operators are qualified: the query runs
/// on the writer's search path.
fn is_monitors_table(monitor: &str, relation: pg_sys::Oid) -> bool {
    Spi::connect(|client| {
        client
            .select(
                "SELECT m.predictions::oid OPERATOR(pg_catalog.=) $2 OR m.outcomes::oid OPERATOR(pg_catalog.=) $2 \
                 FROM mlmon.monitor m WHERE m.name OPERATOR(pg_catalog.=) $1",
                Some(1),
                &[monitor.into(), relation.into()],
            )
            .ok()
            .and_then(|rows| rows.first().get_one::<bool>().ok().flatten())
            .unwrap_or(false)
    })
}

v1_function!(monitor_insert);

/// The INSERT-only trigger's symbol in installs whose SQL predates
/// `_monitor_write` (their monitors' INSERT triggers call it): the same
/// function, so a library upgrade does not break them.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn monitor_insert(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the caller's promise, passed on.
    unsafe { monitor_write(fcinfo) }
}
