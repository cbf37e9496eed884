//! The pure rules of point-in-time features (the extension's
//! `src/features/` is the rest):
//! - `tie_break`: which of two rows of one entity and event time is the
//!   row a `latest` view returns;
//! - `spine_order`: the (entity, at) order a training set's spine is
//!   sorted in when it is sorted in memory.

pub mod spine_order;
pub mod tie_break;
