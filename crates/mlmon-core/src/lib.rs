//! Pure math behind mlmon, with no PostgreSQL dependency.
//!
//! The extension crate converts SQL values into these types, calls into them and
//! turns [`Error`] into an `ereport` with a SQLSTATE. Everything a reader needs to
//! check a formula (MCC, Wilson interval, cost) lives here and is unit-tested with
//! plain `cargo test`.

pub mod accumulator;
pub mod bulk;
pub mod claims;
pub mod codec;
pub mod confusion;
pub mod cost;
pub mod drift;
pub mod error;
pub mod fast_hash;
pub mod interval;
pub mod metrics;
pub mod regression;
pub mod scores;
pub mod state;
pub mod text;

mod kolmogorov;
mod wire;

pub use confusion::{Cell, Confusion, LabelKind};
pub use error::Error;
