//! Monitors: exact rollups of a predictions table joined to an outcomes
//! table, maintained in the writing transaction. `README.md` beside this
//! file walks the write path end to end and states its invariants.
//!
//! Most of a monitor is SQL (`sql/monitors/`): its catalog, the PL/pgSQL
//! trigger functions generated per monitor, the reads. This module is the
//! native part of the write path:
//! - `write_trigger.rs`: the native statement trigger, which sends a
//!   statement to the single-row path, the statement path, or the monitor's
//!   PL/pgSQL trigger function;
//! - `single_row.rs`, `single_outcome.rs`: single-row INSERTs into the
//!   predictions and the outcomes table, by statements prepared per backend
//!   (`chunk_ranges.rs`: which keys may sit in a claim chunk);
//! - `bulk/`: the statement path: any large statement, keys restated in
//!   memory, bulk-loaded keys kept in claim chunks;
//! - `rollup.rs`: the rollup table's delta rows, written both ways;
//! - `locks.rs`: the bulk lock every writer takes;
//! - `catalog.rs`: a monitor's definition as the native paths need it.

use pgrx::prelude::*;

extension_sql_file!("../../sql/monitors/catalog.sql", name = "monitors_catalog_sql", requires = ["confusion_sql"]);
extension_sql_file!("../../sql/monitors/cell_states.sql", name = "monitors_cell_states_sql", requires = ["monitors_catalog_sql"]);
extension_sql_file!("../../sql/monitors/write_path.sql", name = "monitors_write_path_sql", requires = ["monitors_cell_states_sql"]);
extension_sql_file!("../../sql/monitors/triggers.sql", name = "monitors_triggers_sql", requires = ["monitors_write_path_sql"]);
extension_sql_file!("../../sql/monitors/lifecycle.sql", name = "monitors_lifecycle_sql", requires = ["monitors_triggers_sql"]);
extension_sql_file!("../../sql/monitors/reads.sql", name = "monitor_reads_sql", requires = ["monitors_lifecycle_sql"]);
extension_sql_file!("../../sql/monitors/alerts.sql", name = "monitor_alerts_sql", requires = ["monitor_reads_sql"]);

mod bulk;
mod catalog;
mod cell_states;
mod chunk_ranges;
mod locks;
mod rollup;
mod single_outcome;
mod single_row;
mod write_trigger;
