//! The key ranges of a monitor's claim chunks, as the single-row paths need
//! them: a key in a chunk's range may have its state in the chunk, not in a
//! keys row, and must be materialized (or left to PL/pgSQL) first.

#![allow(unsafe_code)]

use std::cell::RefCell;

use crate::pg::relcache;
use crate::pg::spi_plan::{result_value, Plan};

/// The chunks' ranges, read by a prepared statement and cached until the
/// next relcache invalidation this backend takes in.
pub struct ChunkRanges {
    /// `SELECT lo, hi FROM <claims> ORDER BY lo`.
    ranges: Plan,
    /// The ranges (lo, hi), ascending, as of a count of invalidations.
    seen: RefCell<Option<(u64, Vec<(i64, i64)>)>>,
}

impl ChunkRanges {
    /// # Safety
    /// Within an SPI connection.
    pub unsafe fn prepare(claims_table: &str) -> ChunkRanges {
        relcache::listen();
        // SAFETY: the caller's promise.
        let ranges = unsafe { Plan::prepare(&format!("SELECT c.lo, c.hi FROM {claims_table} c ORDER BY c.lo"), &[]) };
        ChunkRanges { ranges, seen: RefCell::new(None) }
    }

    /// Whether a chunk's range holds `key`. A bulk load announces new chunks
    /// with a relcache invalidation (`relcache::announce`), sent at its
    /// commit before it releases the bulk lock; the caller holds that lock
    /// shared, so the invalidations taken in now include every committed
    /// load's.
    ///
    /// # Safety
    /// Within an SPI connection, holding the bulk lock.
    pub unsafe fn hold(&self, key: i64) -> bool {
        // SAFETY: the caller's promise.
        unsafe {
            let now = relcache::invalidations_seen();
            let mut seen = self.seen.borrow_mut();
            if seen.as_ref().is_none_or(|(at, _)| *at != now) {
                let rows = self.ranges.execute(&[], &[]) as usize;
                let ranges = (0..rows)
                    .map(|i| (result_value(i, 1).0.value() as i64, result_value(i, 2).0.value() as i64))
                    .collect();
                *seen = Some((now, ranges));
            }
            let ranges = &seen.as_ref().expect("loaded above").1;
            let after = ranges.partition_point(|&(lo, _)| lo <= key);
            after > 0 && ranges[after - 1].1 >= key
        }
    }
}
