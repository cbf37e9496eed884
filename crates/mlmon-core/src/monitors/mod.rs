//! The pure parts of a monitor's write path (the extension's
//! `src/monitors/` is the rest):
//! - `bulk`: counting a bulk load of predictions (best row per key, buckets,
//!   rollup cells, chunk entries);
//! - `claims`: the claim chunk format that stores a bulk load's per-key
//!   contributions;
//! - `actual`: how a key's outcome rows combine into one actual label;
//! - `dictionary`: the distinct labels and segments of a load, by bytes;
//! - `restate`: any large statement's keys restated from their stored
//!   state and the transition tables, and chunks rewritten;
//! - `score_cells`, `regression_cells`: the additive, retractable states a
//!   score or regression monitor's rollup cell keeps beside its count;
//! - `cbpe`: estimated performance of unlabeled predictions from score cells.

pub mod actual;
pub mod bulk;
pub mod cbpe;
pub mod claims;
pub mod dictionary;
pub mod regression_cells;
pub mod restate;
pub mod score_cells;
