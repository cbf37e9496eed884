//! The pure parts of a monitor's write path (the extension's
//! `src/monitors/` is the rest):
//! - `bulk`: counting a bulk load of predictions (best row per key, buckets,
//!   rollup cells, chunk entries);
//! - `claims`: the claim chunk format that stores a bulk load's per-key
//!   contributions;
//! - `actual`: how a key's outcome rows combine into one actual label;
//! - `dictionary`: the distinct labels and segments of a load, by bytes;
//! - `late_outcomes`: outcomes applied to keys stored in claim chunks.

pub mod actual;
pub mod bulk;
pub mod claims;
pub mod dictionary;
pub mod late_outcomes;
