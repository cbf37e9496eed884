//! mlmon: ML monitoring, point-in-time features and metrics inside PostgreSQL.
//!
//! One folder per domain, each using the mechanisms in `pg/` and the pure
//! math and rules in `mlmon-core`:
//! - `aggregates/`: two-step aggregates and their state types;
//! - `monitors/`: the native parts of monitors' write path;
//! - `drift_monitors/`: drift monitors' write path and reads;
//! - `features/`: the online feature read and the training-set build;
//! - `pg/`: what talks to PostgreSQL and knows no domain.
//!
//! The SQL surface (types, functions, aggregates) is declared by hand in
//! `sql/<domain>/`, because aggregates need explicit combine/serialize
//! wiring; the Rust functions are exported with `sql = false` and bound by
//! symbol name. Each domain's `mod.rs` loads its SQL files, in the order
//! their `requires` give, after the state types loaded here. `pg/` is not allowed to import a domain, and no domain
//! imports another's internals.

use pgrx::prelude::*;

mod aggregates;
mod drift_monitors;
mod features;
mod monitors;
mod pg;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/aggregates/state_types.sql", name = "state_types_sql");
// Comments on the objects whose definitions carry none, after everything else.
extension_sql_file!("../sql/comments.sql", name = "comments_sql", finalize);

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

/// The in-database tests (`#[pg_test]`), kept in the top-level `pgrx-tests/`
/// folder and compiled into the test build only.
#[cfg(any(test, feature = "pg_test"))]
#[path = "../pgrx-tests/mod.rs"]
mod pgrx_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
