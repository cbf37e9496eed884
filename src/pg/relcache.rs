//! Relcache invalidations as a cheap cross-backend signal: a writer queues
//! one for a relation (sent when its transaction commits), and every
//! backend that listens counts those it takes in, so a cache of its own can
//! tell that it may be stale without asking the catalog.

#![allow(unsafe_code)]

use std::cell::Cell;

use pgrx::pg_sys;

thread_local! {
    /// Relcache invalidations this backend has taken in (of any relation,
    /// once `listen` ran).
    static INVALIDATIONS: Cell<u64> = const { Cell::new(0) };
    static LISTENING: Cell<bool> = const { Cell::new(false) };
}

/// Queues a relcache invalidation of `relation` for the transaction's end.
pub fn announce(relation: pg_sys::Oid) {
    // SAFETY: queues an invalidation message for the transaction's end.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relation) };
}

unsafe extern "C-unwind" fn relation_invalidated(_: pg_sys::Datum, _: pg_sys::Oid) {
    INVALIDATIONS.with(|n| n.set(n.get() + 1));
}

/// Starts counting this backend's relcache invalidations (once per backend).
pub fn listen() {
    if !LISTENING.with(Cell::get) {
        // SAFETY: registers a callback for the life of the backend; it only
        // counts.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(relation_invalidated), pg_sys::Datum::from(0)) };
        LISTENING.with(|l| l.set(true));
    }
}

/// Takes in pending invalidation messages and returns how many this backend
/// has counted since it started listening: a cache made at one count is
/// still good while the count is unchanged.
pub fn invalidations_seen() -> u64 {
    // SAFETY: processes the shared invalidation queue, as any statement start does.
    unsafe { pg_sys::AcceptInvalidationMessages() };
    INVALIDATIONS.with(Cell::get)
}
