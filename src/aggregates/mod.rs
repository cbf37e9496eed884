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

pub mod confusion;
mod drift;
mod regression;
mod scores;
pub mod state;
