//! A helper process for `_fv_fill_training_set`: one parallel worker that
//! walks some of the views while the leader walks the others and writes the
//! rows, as CREATE INDEX builds with a parallel worker.
//!
//! Why: the walks and table-order fetches are about 60% of a build, the
//! leader's spine read and table write most of the rest, and the machines
//! this runs on have two or more cores. A parallel worker may only read, so
//! the leader keeps every write; the helper gets the points of its views
//! through one shared-memory queue and returns their chosen feature values
//! through another, a chunk at a time.
//!
//! The worker runs in the leader's transaction, with its snapshot and user
//! (PostgreSQL's parallel infrastructure restores them), so it reads exactly
//! what the leader would. Its errors reach the leader, which raises them.
//! Without a worker to be had (max_parallel_maintenance_workers = 0, or none
//! free) the leader walks every view itself. A worker is asked for only when
//! the spine is held in memory (`spine.rs`): in parallel mode the leader may
//! run no parallel-unsafe function, and reading the spine through a cursor
//! could (a view may call one).
//!
//! Messages, all little-endian:
//! - to the helper, per chunk: the point count n (u32; 0 ends the fill),
//!   then the points in batches of `BATCH_POINTS`, each point as, per
//!   helper view, a flag byte (1: a point, 2: with a TTL bound) and the
//!   entity datum, `at` and the bound as 8 bytes each;
//! - to the leader, per chunk and helper view: the chosen values in batches
//!   of `BATCH_POINTS` points, per point and attribute a null byte, then a
//!   by-value datum as 8 bytes, or a by-reference value as its length (u32)
//!   and bytes, the bytes starting at a multiple of 8 from the message's
//!   start: the leader keeps each message whole and points into it.

#![allow(unsafe_code)]

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::{Columns, Point, View};
use crate::pg::datum::datum_bytes;
use crate::pg::errors::raise_coded as raise;
use crate::pg::shm_queue;

const KEY_SETUP: u64 = 1;
const KEY_TO_HELPER: u64 = 2;
const KEY_TO_LEADER: u64 = 3;

/// Bytes of each shared-memory queue.
const QUEUE_BYTES: usize = 4 << 20;

/// Points per message.
const BATCH_POINTS: usize = 4096;

/// Bytes of a point of one view in a message.
const POINT_BYTES: usize = 25;

/// The fewest spine rows worth starting a worker for (its start-up takes a
/// few milliseconds).
pub(super) const MIN_HELPED_POINTS: usize = 20_000;

/// The fewest chunks a helped fill takes: the helper walks the first alone,
/// and each later one while the leader writes the one before.
pub(super) const HELPED_CHUNKS: usize = 4;

/// What the helper needs to walk a view: its index, created-time attribute
/// (0: none), entity type and the attributes to return.
pub(super) struct HelperView {
    pub(super) index: Oid,
    pub(super) created_time: i16,
    pub(super) entity_type: Oid,
    pub(super) attnums: Vec<usize>,
}

/// The leader's side of a running helper.
pub(super) struct Helper {
    /// The fill's views the helper walks.
    pub(super) views: Vec<usize>,
    context: *mut pg_sys::ParallelContext,
    to_helper: *mut pg_sys::shm_mq_handle,
    to_leader: *mut pg_sys::shm_mq_handle,
}

/// BUFFERALIGN: how shm_toc places chunks.
fn buffer_align(bytes: usize) -> usize {
    (bytes + 31) & !31
}

impl Helper {
    /// Starts a worker for the fill's `views`, described by `specs`; None
    /// when no worker could be launched (the leader then walks them).
    ///
    /// SAFETY: inside a transaction that has its xid (the target was
    /// created in it) and is not in parallel mode; the current memory
    /// context outlives the helper.
    pub(super) unsafe fn start(views: Vec<usize>, specs: &[HelperView]) -> Option<Helper> {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let mut setup = Vec::new();
            put_u32(&mut setup, specs.len() as u32);
            for spec in specs {
                put_u32(&mut setup, spec.index.to_u32());
                setup.extend_from_slice(&spec.created_time.to_le_bytes());
                put_u32(&mut setup, spec.entity_type.to_u32());
                put_u32(&mut setup, spec.attnums.len() as u32);
                for &attnum in &spec.attnums {
                    put_u32(&mut setup, attnum as u32);
                }
            }
            let mut framed = Vec::with_capacity(setup.len() + 4);
            put_u32(&mut framed, setup.len() as u32);
            framed.extend_from_slice(&setup);

            pg_sys::EnterParallelMode();
            let context = pg_sys::CreateParallelContext(c"$libdir/mlmon".as_ptr(), c"mlmon_fill_helper".as_ptr(), 1);
            (*context).estimator.space_for_chunks += buffer_align(framed.len()) + 2 * buffer_align(QUEUE_BYTES);
            (*context).estimator.number_of_keys += 3;
            pg_sys::InitializeParallelDSM(context);
            if (*context).seg.is_null() {
                // No dynamic shared memory: no workers either.
                pg_sys::DestroyParallelContext(context);
                pg_sys::ExitParallelMode();
                return None;
            }
            let toc = (*context).toc;
            let space = pg_sys::shm_toc_allocate(toc, framed.len()).cast::<u8>();
            std::ptr::copy_nonoverlapping(framed.as_ptr(), space, framed.len());
            pg_sys::shm_toc_insert(toc, KEY_SETUP, space.cast());
            let to_helper_queue = pg_sys::shm_mq_create(pg_sys::shm_toc_allocate(toc, QUEUE_BYTES), QUEUE_BYTES);
            pg_sys::shm_mq_set_sender(to_helper_queue, pg_sys::MyProc);
            pg_sys::shm_toc_insert(toc, KEY_TO_HELPER, to_helper_queue.cast());
            let to_leader_queue = pg_sys::shm_mq_create(pg_sys::shm_toc_allocate(toc, QUEUE_BYTES), QUEUE_BYTES);
            pg_sys::shm_mq_set_receiver(to_leader_queue, pg_sys::MyProc);
            pg_sys::shm_toc_insert(toc, KEY_TO_LEADER, to_leader_queue.cast());
            pg_sys::LaunchParallelWorkers(context);
            if (*context).nworkers_launched == 0 {
                pg_sys::DestroyParallelContext(context);
                pg_sys::ExitParallelMode();
                return None;
            }
            // With the worker's handle the queues notice if it never starts
            // or dies.
            let handle = (*(*context).worker).bgwhandle;
            let to_helper = pg_sys::shm_mq_attach(to_helper_queue, (*context).seg, handle);
            let to_leader = pg_sys::shm_mq_attach(to_leader_queue, (*context).seg, handle);
            Some(Helper { views, context, to_helper, to_leader })
        }
    }

    /// Sends a chunk's points: `points[k]` those of the helper's view k.
    ///
    /// SAFETY: the helper is running.
    pub(super) unsafe fn send_points(&mut self, points: &[Vec<Option<Point>>]) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let n = points.first().map_or(0, Vec::len);
            self.send(&(n as u32).to_le_bytes());
            let mut message = Vec::with_capacity(BATCH_POINTS * points.len() * POINT_BYTES);
            for start in (0..n).step_by(BATCH_POINTS) {
                message.clear();
                for i in start..(start + BATCH_POINTS).min(n) {
                    for view_points in points {
                        put_point(&mut message, view_points[i]);
                    }
                }
                self.send(&message);
            }
        }
    }

    /// Receives the values of the helper's next view for a chunk of `n`
    /// points, laid out as `View::choose` returns them; by-reference values
    /// point into copies of the messages in the current memory context.
    ///
    /// SAFETY: the helper is running and was sent the chunk's points.
    pub(super) unsafe fn receive_values(&mut self, n: usize, columns: &Columns) -> (Vec<Datum>, Vec<bool>) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let width = columns.copy.len();
            let mut values = vec![Datum::from(0); n * width];
            let mut nulls = vec![true; n * width];
            for start in (0..n).step_by(BATCH_POINTS) {
                // A copy of the message, MAXALIGNed, that by-reference
                // values point into (one copy instead of one per value).
                let received = self.receive();
                let kept = pg_sys::palloc(received.len().max(1)).cast::<u8>();
                std::ptr::copy_nonoverlapping(received.as_ptr(), kept, received.len());
                let mut message = Reader::new(std::slice::from_raw_parts(kept, received.len()));
                for i in start..(start + BATCH_POINTS).min(n) {
                    for (j, &(by_value, _)) in columns.copy.iter().enumerate() {
                        let at = i * width + j;
                        nulls[at] = message.byte() != 0;
                        if nulls[at] {
                            continue;
                        }
                        values[at] = if by_value {
                            Datum::from(message.u64() as usize)
                        } else {
                            let length = message.u32() as usize;
                            message.align();
                            Datum::from(message.bytes(length).as_ptr())
                        };
                    }
                }
                message.finish();
            }
            (values, nulls)
        }
    }

    /// Tells the helper the fill is done and waits for it to exit.
    ///
    /// SAFETY: the helper is running.
    pub(super) unsafe fn finish(mut self) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            self.send(&0u32.to_le_bytes());
            pg_sys::WaitForParallelWorkersToFinish(self.context);
            pg_sys::shm_mq_detach(self.to_helper);
            pg_sys::shm_mq_detach(self.to_leader);
            pg_sys::DestroyParallelContext(self.context);
            pg_sys::ExitParallelMode();
        }
    }

    unsafe fn send(&mut self, message: &[u8]) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            if !shm_queue::send(self.to_helper, message) {
                self.helper_gone();
            }
        }
    }

    unsafe fn receive(&mut self) -> &[u8] {
        // SAFETY: the caller's promise (this function's contract); the leader
        // is attached to `to_leader` as its receiver.
        unsafe { shm_queue::receive(self.to_leader).unwrap_or_else(|| self.helper_gone()) }
    }

    /// The helper detached early: raises its error if it had one.
    unsafe fn helper_gone(&mut self) -> ! {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            pg_sys::WaitForParallelWorkersToFinish(self.context);
            raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "the helper process of build_training_set exited early".into(),
                  "set max_parallel_maintenance_workers = 0 to build without it")
        }
    }
}

/// The helper's main function, run by a parallel worker of the fill.
///
/// SAFETY: called by PostgreSQL's ParallelWorkerMain with the segment and
/// table of contents `Helper::start` set up.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn mlmon_fill_helper(segment: *mut pg_sys::dsm_segment, toc: *mut pg_sys::shm_toc) {
    // SAFETY: the caller's promise (this function's contract).
    unsafe {
        let framed = pg_sys::shm_toc_lookup(toc, KEY_SETUP, false).cast::<u8>();
        let length = u32::from_le_bytes(*framed.cast::<[u8; 4]>()) as usize;
        let mut setup = Reader::new(std::slice::from_raw_parts(framed.add(4), length));
        let to_helper_queue = pg_sys::shm_toc_lookup(toc, KEY_TO_HELPER, false).cast::<pg_sys::shm_mq>();
        pg_sys::shm_mq_set_receiver(to_helper_queue, pg_sys::MyProc);
        let from_leader = pg_sys::shm_mq_attach(to_helper_queue, segment, std::ptr::null_mut());
        let to_leader_queue = pg_sys::shm_toc_lookup(toc, KEY_TO_LEADER, false).cast::<pg_sys::shm_mq>();
        pg_sys::shm_mq_set_sender(to_leader_queue, pg_sys::MyProc);
        let to_leader = pg_sys::shm_mq_attach(to_leader_queue, segment, std::ptr::null_mut());

        let walk_context = pg_sys::CurrentMemoryContext;
        let chunk_context = pg_sys::AllocSetContextCreateInternal(
            walk_context, c"mlmon training set helper chunk".as_ptr(), 0, 8 * 1024, 8 * 1024 * 1024);
        let mut views = Vec::new();
        for _ in 0..setup.u32() {
            let index = Oid::from(setup.u32());
            let created_time = i16::from_le_bytes(setup.bytes(2).try_into().unwrap_or_default());
            let entity_type = Oid::from(setup.u32());
            let mut view = View::open(index, created_time, entity_type, 0, None);
            for _ in 0..setup.u32() {
                view.columns.push(setup.u32() as usize);
            }
            views.push(view);
        }
        setup.finish();

        let leader_gone = || -> ! {
            raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "the leader of build_training_set went away".into(), "")
        };
        let receive = || Reader::new(shm_queue::receive(from_leader).unwrap_or_else(|| leader_gone()));
        let send = |message: &[u8]| {
            if !shm_queue::send(to_leader, message) {
                leader_gone();
            }
        };
        loop {
            pgrx::check_for_interrupts!();
            let mut header = receive();
            let n = header.u32() as usize;
            header.finish();
            if n == 0 {
                break;
            }
            let mut points: Vec<Vec<Option<Point>>> = (0..views.len()).map(|_| Vec::with_capacity(n)).collect();
            for start in (0..n).step_by(BATCH_POINTS) {
                let mut message = receive();
                for _ in start..(start + BATCH_POINTS).min(n) {
                    for view_points in &mut points {
                        view_points.push(message.point());
                    }
                }
                message.finish();
            }
            let caller = pg_sys::MemoryContextSwitchTo(chunk_context);
            // Every view before any is sent: the leader receives only after
            // its own views, and a view sent while the next waited would
            // keep the two processes taking turns.
            let chosen: Vec<(Vec<Datum>, Vec<bool>)> =
                views.iter_mut().zip(&points).map(|(view, view_points)| view.choose(walk_context, view_points)).collect();
            let mut message = Vec::new();
            for (view, (values, nulls)) in views.iter().zip(&chosen) {
                let width = view.columns.copy.len();
                for start in (0..n).step_by(BATCH_POINTS) {
                    message.clear();
                    for at in start * width..(start + BATCH_POINTS).min(n) * width {
                        put_value(&mut message, values[at], nulls[at], view.columns.copy[at % width]);
                    }
                    send(&message);
                }
            }
            pg_sys::MemoryContextSwitchTo(caller);
            pg_sys::MemoryContextReset(chunk_context);
        }
        for view in views {
            view.close();
        }
        pg_sys::shm_mq_detach(to_leader);
        pg_sys::shm_mq_detach(from_leader);
    }
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_point(out: &mut Vec<u8>, point: Option<Point>) {
    let (flags, entity, at, not_before) = match point {
        None => (0u8, 0u64, 0i64, 0i64),
        Some((entity, at, not_before)) => (1 | if not_before.is_some() { 2 } else { 0 }, entity.value() as u64, at,
                                           not_before.unwrap_or(0)),
    };
    out.push(flags);
    out.extend_from_slice(&entity.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&not_before.to_le_bytes());
}

/// Appends a value as the module comment says; `copy` is (by value, length).
///
/// SAFETY: a by-reference `value` that is not null points to a valid value
/// of its type.
unsafe fn put_value(out: &mut Vec<u8>, value: Datum, null: bool, (by_value, length): (bool, i16)) {
    out.push(u8::from(null));
    if null {
        return;
    }
    if by_value {
        out.extend_from_slice(&(value.value() as u64).to_le_bytes());
        return;
    }
    // SAFETY: the caller's promise: a non-NULL by-reference value of this length.
    let bytes = unsafe { datum_bytes(value, length) };
    put_u32(out, bytes.len() as u32);
    out.resize(out.len().next_multiple_of(8), 0);
    out.extend_from_slice(bytes);
}

/// Reads a message; running past its end, or not reaching it, is an error
/// (a bug, not bad input: both ends are this module).
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, at: 0 }
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        if self.at + n > self.data.len() {
            malformed();
        }
        let bytes = &self.data[self.at..self.at + n];
        self.at += n;
        bytes
    }

    /// Skips to the next multiple of 8 from the start.
    fn align(&mut self) {
        self.at = self.at.next_multiple_of(8).min(self.data.len());
    }

    fn byte(&mut self) -> u8 {
        self.bytes(1)[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes(4).try_into().unwrap_or_default())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes(8).try_into().unwrap_or_default())
    }

    fn point(&mut self) -> Option<Point> {
        let flags = self.byte();
        let (entity, at, not_before) = (self.u64(), self.u64() as i64, self.u64() as i64);
        (flags & 1 != 0).then(|| (Datum::from(entity as usize), at, (flags & 2 != 0).then_some(not_before)))
    }

    fn finish(self) {
        if self.at != self.data.len() {
            malformed();
        }
    }
}

fn malformed() -> ! {
    raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "a message between build_training_set and its helper is malformed".into(), "")
}
