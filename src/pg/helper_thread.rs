//! A helper thread for work that needs no database: the one place mlmon
//! uses a second thread in a backend.
//!
//! The monitors' bulk path (`monitors::bulk`) reads a load's rows (PostgreSQL calls,
//! this thread only) while a helper counts them (`mlmon_core::monitors::bulk`, plain
//! Rust): on a 1M-row COPY the counting was a third of the trigger's time.
//!
//! The helper must never call into PostgreSQL (pgrx refuses such calls from
//! other threads) and takes no signals: they stay with the backend's thread,
//! whose handlers expect to run there.

#![allow(unsafe_code)]

use std::sync::mpsc;

/// Rows per message to the helper: large enough that sending costs nothing
/// per row, small enough that the helper starts early.
const BATCH: usize = 16_384;

/// Rows on their way to the helper.
pub struct Batches<T> {
    batch: Vec<T>,
    sender: mpsc::SyncSender<Vec<T>>,
}

impl<T> Batches<T> {
    pub fn push(&mut self, row: T) {
        self.batch.push(row);
        if self.batch.len() == BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        // The helper only stops receiving by panicking; `pipelined` reports that.
        let _ = self.sender.send(batch);
    }
}

/// Runs `produce` here, and `consume` on a helper thread over the rows
/// `produce` pushes, in order; returns both results. A panic of the helper
/// becomes an error here; an error here (a panic) waits for the helper,
/// which stops when the rows stop coming, before it goes on.
pub fn pipelined<T: Send, P, C: Send>(
    consume: impl FnOnce(mpsc::Receiver<Vec<T>>) -> C + Send,
    produce: impl FnOnce(&mut Batches<T>) -> P,
) -> (P, C) {
    // A few batches in flight: if the helper falls behind, the reader waits.
    let (sender, receiver) = mpsc::sync_channel(4);
    std::thread::scope(|scope| {
        let helper = without_signals(|| std::thread::Builder::new().name("mlmon helper".into()).spawn_scoped(scope, move || consume(receiver)));
        let helper = helper.unwrap_or_else(|e| pgrx::error!("mlmon: could not start a helper thread: {e}"));
        let mut batches = Batches { batch: Vec::with_capacity(BATCH), sender };
        let produced = produce(&mut batches);
        if !batches.batch.is_empty() {
            batches.send();
        }
        drop(batches);
        let consumed = helper.join().unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            pgrx::error!("mlmon: the helper thread failed: {message}")
        });
        (produced, consumed)
    })
}

/// Runs `f` (which starts a thread) with every signal blocked, so that the
/// new thread inherits a mask that blocks them all; this thread's mask is
/// restored afterwards and signals that arrived meanwhile are delivered then.
fn without_signals<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: pthread_sigmask only reads and writes the given sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut saved: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut saved);
        let result = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut());
        result
    }
}
