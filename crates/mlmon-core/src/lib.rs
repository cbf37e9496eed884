//! Pure math and rules behind mlmon, with no PostgreSQL dependency.
//!
//! The extension crate converts SQL values into these types, calls into them and
//! turns [`Error`] into an `ereport` with a SQLSTATE. Everything a reader needs to
//! check a formula (MCC, Wilson interval, cost) or a rule (a monitor's dedup
//! and outcome combination, a feature view's tie-break) lives here and is
//! unit-tested with plain `cargo test`.
//!
//! - the aggregates' math: `confusion`, `accumulator`, `metrics`, `interval`,
//!   `cost`, `scores`, `regression`, `drift`, and their stored form (`codec`,
//!   `state`, `text`);
//! - `monitors`: counting bulk loads, claim chunks, outcome combination, the
//!   dictionary of a load's distinct labels and segments;
//! - `features`: the tie-break between rows of one event time, the order a
//!   training set's spine is sorted in.

pub mod accumulator;
pub mod codec;
pub mod compensated;
pub mod confusion;
pub mod cost;
pub mod drift;
pub mod drift_monitors;
pub mod error;
pub mod fast_hash;
pub mod features;
pub mod interval;
pub mod metrics;
pub mod monitors;
pub mod regression;
pub mod scores;
pub mod state;
pub mod text;

mod kolmogorov;
mod wire;

pub use confusion::{Cell, Confusion, LabelKind};
pub use error::Error;
