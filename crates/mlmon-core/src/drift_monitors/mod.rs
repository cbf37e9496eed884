//! Drift monitors: per time bucket, segment and column, an additive and
//! retractable state of a table's input columns, and the comparison of a
//! current period's merged states with a reference period's
//! (`docs/drift-monitors.md` is the user's view).
//!
//! - `state`: what one column keeps (histogram cells on fixed edges, or
//!   category counts by dictionary id), signed so that a DELETE's delta
//!   cancels its INSERT's exactly, and the compact binary form stored per
//!   rollup row;
//! - `layout`: how a monitor's columns are binned (edges from the reference
//!   quantiles), and the time column's conversion to a bucket;
//! - `compare`: Evidently's choice of method, the statistics from binned
//!   states, and the sample-size-aware drift decision.

pub mod compare;
pub mod layout;
pub mod state;
mod varint;
