//! Two-step aggregates: an aggregate returns a state type (`mlmon.confusion`,
//! `mlmon.scores`, `mlmon.regression`, `mlmon.histogram`,
//! `mlmon.frequencies`), accessors read metrics from it, and
//! `mlmon.rollup(state)` merges states.
//!
//! Each family is one module here, holding its SQL-bound functions (type
//! I/O, transition, combine, accessors) and, where it has one, the V1 fast
//! path of its hottest transition (`fast_path.rs`). The math is in
//! `mlmon-core`; the SQL declarations (`CREATE AGGREGATE` with explicit
//! combine/serialize wiring) are in `sql/aggregates/`. `state.rs` holds the
//! I/O and parallel plumbing every state type shares.

use pgrx::prelude::*;

extension_sql_file!("../../sql/aggregates/confusion.sql", name = "confusion_sql", requires = ["state_types_sql"]);
extension_sql_file!("../../sql/aggregates/regression.sql", name = "regression_sql", requires = ["confusion_sql"]);
extension_sql_file!("../../sql/aggregates/scores.sql", name = "scores_sql", requires = ["confusion_sql"]);
extension_sql_file!("../../sql/aggregates/drift.sql", name = "drift_sql", requires = ["confusion_sql"]);

pub mod confusion;
mod drift;
mod regression;
mod scores;
pub mod state;
