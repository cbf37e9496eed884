//! In-database tests (`#[pg_test]`), one file per domain. pgrx runs each in
//! a transaction that is rolled back, so these cover behaviour inside one
//! transaction: the wiring of every SQL-bound function family, type I/O,
//! parallel plans, one monitor written and read, one feature view read.
//! Commit-time behaviour (monitors under concurrent writers, crashes) and
//! the comparisons with reference implementations are client tests in
//! `tests/`.
//!
//! pgrx calls every test as `tests.<name>()`, so each file's tests live in a
//! `#[pg_schema] mod tests`.

use pgrx::prelude::*;

mod aggregates;
mod features;
mod monitors;

/// Runs `sql` and returns the SQLSTATE it raised, or 'ok'.
fn sqlstate_of(sql: &str) -> String {
    Spi::run(
        "CREATE OR REPLACE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$",
    )
    .unwrap();
    Spi::get_one_with_args::<String>("SELECT pg_temp.sqlstate_of($1)", &[sql.into()]).unwrap().unwrap()
}
