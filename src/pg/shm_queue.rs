//! Messages over a shared-memory queue between a leader and its parallel
//! worker (`shm_mq`).

#![allow(unsafe_code)]

use pgrx::pg_sys;

/// Sends a message, waiting for room; false if the other side detached.
///
/// # Safety
/// `queue` is attached as the sender.
pub unsafe fn send(queue: *mut pg_sys::shm_mq_handle, message: &[u8]) -> bool {
    // SAFETY: the caller's promise; the message outlives the call.
    unsafe {
        pg_sys::shm_mq_send(queue, message.len(), message.as_ptr().cast(), false, true) == pg_sys::shm_mq_result::SHM_MQ_SUCCESS
    }
}

/// Receives the next message, waiting for it (valid until the next
/// receive); None if the other side detached.
///
/// # Safety
/// `queue` is attached as the receiver.
pub unsafe fn receive<'a>(queue: *mut pg_sys::shm_mq_handle) -> Option<&'a [u8]> {
    // SAFETY: the caller's promise; shm_mq_receive returns the message's
    // length and address in the queue's buffer.
    unsafe {
        let mut length = 0usize;
        let mut data: *mut std::ffi::c_void = std::ptr::null_mut();
        (pg_sys::shm_mq_receive(queue, &mut length, &mut data, false) == pg_sys::shm_mq_result::SHM_MQ_SUCCESS)
            .then(|| std::slice::from_raw_parts(data.cast::<u8>(), length))
    }
}
