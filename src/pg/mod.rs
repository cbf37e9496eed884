//! Mechanisms: what talks to PostgreSQL and knows no domain of mlmon.
//!
//! Each file is one mechanism a domain (`aggregates`, `monitors`, `features`)
//! uses; nothing here imports a domain. Files that hold `unsafe` code say so
//! with `#![allow(unsafe_code)]` (the workspace denies it) and give each
//! unsafe block a `// SAFETY:` line.
//!
//! | file | mechanism |
//! |---|---|
//! | `aggregate_state.rs` | an aggregate's Rust state in its memory context, behind `internal` |
//! | `datum.rs` | by-reference values: their bytes, copies, a type's receive buffer |
//! | `fmgr.rs` | V1 entry points, calls by OID (functions, trigger functions), type I/O |
//! | `catalog.rs` | system-cache lookups: names, column types, a relation's size |
//! | `tuples.rs` | a tuple descriptor's attributes, a transition table's rows |
//! | `session.rs` | running as another user with a pinned search path; settings |
//! | `advisory_lock.rs` | transaction-level advisory locks without SQL |
//! | `spi_plan.rs` | statements prepared once per backend and kept |
//! | `trigger.rs` | a trigger call's data and arguments |
//! | `relcache.rs` | announcing and noticing relcache invalidations |
//! | `heap_insert.rs` | appending a row with its index entries, without a statement |
//! | `helper_thread.rs` | a second thread that never calls PostgreSQL |
//! | `shm_queue.rs` | messages over a shared-memory queue (parallel workers) |
//! | `errors.rs` | core errors as PostgreSQL errors with a SQLSTATE and hint |

pub mod advisory_lock;
pub mod aggregate_state;
pub mod catalog;
pub mod datum;
pub mod errors;
pub mod fmgr;
pub mod heap_insert;
pub mod helper_thread;
pub mod relcache;
pub mod session;
pub mod shm_queue;
pub mod spi_plan;
pub mod trigger;
pub mod tuples;
