//! mlmon: ML monitoring, point-in-time features and metrics inside PostgreSQL.
//!
//! This crate is the thin PostgreSQL layer: it converts SQL values, wires
//! aggregates and reports errors. The math lives in `mlmon-core`. The SQL
//! surface (types, functions, aggregates) is declared by hand in `sql/*.sql`,
//! because aggregates need explicit combine/serialize wiring; the Rust
//! functions here are exported with `sql = false` and bound by symbol name.

use pgrx::prelude::*;

mod confusion;
mod drift;
mod errors;
mod ffi;
mod readers;
mod monitor_bulk;
mod regression;
mod scores;
mod state;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/state_types.sql", name = "state_types_sql");
extension_sql_file!("../sql/confusion.sql", name = "confusion_sql", requires = ["state_types_sql"]);
extension_sql_file!("../sql/regression.sql", name = "regression_sql", requires = ["confusion_sql"]);
extension_sql_file!("../sql/scores.sql", name = "scores_sql", requires = ["confusion_sql"]);
extension_sql_file!("../sql/drift.sql", name = "drift_sql", requires = ["confusion_sql"]);
extension_sql_file!("../sql/monitors.sql", name = "monitors_sql", requires = ["confusion_sql"]);
extension_sql_file!("../sql/monitor_reads.sql", name = "monitor_reads_sql", requires = ["monitors_sql"]);
extension_sql_file!("../sql/features.sql", name = "features_sql", requires = ["monitors_sql"]);

/// How the loaded library was built. The benchmarks refuse a debug build:
/// `cargo pgrx test` installs one over the release build, and its assertions
/// made the training-set benchmark 1.6x slower without anyone noticing.
#[pg_extern(sql = false)]
fn build_info() -> pgrx::JsonB {
    pgrx::JsonB(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    }))
}

#[cfg(any(test, feature = "pg_test"))]
mod sql_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
