//! Transaction-level advisory locks taken without a SQL call.

#![allow(unsafe_code)]

use pgrx::pg_sys;

/// Takes advisory lock `key` in `mode` until the transaction ends, as
/// pg_advisory_xact_lock[_shared](bigint) would (its SET_LOCKTAG_INT64 tag);
/// with `wait` false, only if no other transaction holds it. Returns whether
/// it was taken.
pub fn xact_lock(key: i64, mode: u32, wait: bool) -> bool {
    let tag = pg_sys::LOCKTAG {
        // SAFETY: MyDatabaseId is set for the whole life of a backend.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: ((key as u64) >> 32) as u32,
        locktag_field3: key as u64 as u32,
        locktag_field4: 1,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    };
    // SAFETY: a transaction-level lock on a valid tag.
    let result = unsafe { pg_sys::LockAcquire(&tag, mode as pg_sys::LOCKMODE, false, !wait) };
    result != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
}
