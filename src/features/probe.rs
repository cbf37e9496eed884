//! `mlmon._fv_probe`: one entity's row of a feature view as known at a time,
//! read straight from the source's (entity, event_time) btree index.
//!
//! `build_training_set` calls it once per spine row and view, with the spine
//! sorted by (entity, at), when some view is not walked; otherwise its fill
//! (`training_set/`) drives the same walk through `locate` and
//! `fetch_sorted`. In SQL the same answer (`mlmon._fv_latest_parts`)
//! is an index descent per point plus a second probe looking for a full tie.
//! Here one forward index scan walks in step with the points: it reads index
//! keys (not table rows) up to each point's `at`, descends from the root
//! again only to skip a long stretch or when a point comes out of order, and
//! fetches from the table only the newest entries and those tied with them.
//!
//! The rule is the SQL one, and the tests compare the two: among rows with
//! entity = `entity`, `not_before` <= event_time <= `at`, and created_time <=
//! `at` when the view has one, the newest event_time wins, then the newest
//! created_time, then the greatest row text in byte order (`COLLATE "C"`).
//!
//! It reads as the caller, like the SQL path: SELECT on the table is required,
//! and tables under row security are refused (the SQL path handles those).

#![allow(unsafe_code)]

use std::ffi::CStr;

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use mlmon_core::features::tie_break;

use crate::pg::errors::raise_coded as raise;
use crate::pg::fmgr::v1_function;

v1_function!(fv_probe);

/// What a call site needs, checked once per query and kept in `fn_extra`.
#[derive(Clone, Copy)]
pub(super) struct Setup {
    index: Oid,
    created_attnum: i16,
    heap: Oid,
    entity_ge: pg_sys::RegProcedure,
    entity_collation: Oid,
}

/// An index entry of the current entity: where its row is and its event_time.
#[derive(Clone, Copy)]
struct Entry {
    tid: pg_sys::ItemPointerData,
    event_time: i64,
}

/// The next index entry, read but not yet consumed.
struct Pending {
    entity: Datum,
    entry: Entry,
    /// NULL event_time: such a row is never chosen.
    no_time: bool,
}

/// A forward walk over the index, in step with points sorted by (entity, at):
/// kept across calls in `fn_extra`, closed when the query's expression
/// context shuts down (`close_walk`).
pub(super) struct Walk {
    setup: Setup,
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    scan: pg_sys::IndexScanDesc,
    fetch: *mut pg_sys::IndexFetchTableData,
    slot: *mut pg_sys::TupleTableSlot,
    compare: *mut pg_sys::FmgrInfo,
    /// The entity order computed here instead of by `compare` (a function
    /// call per index entry read) for the integer types.
    native_order: NativeOrder,
    entity_byval: bool,
    entity_len: i16,
    snapshot: pg_sys::Snapshot,
    pending: Option<Pending>,
    /// The entity of the last point, and the entries read for it so far
    /// (ascending event_time, all at or before the last point's `at`).
    entity: Option<Datum>,
    entries: Vec<Entry>,
    last_at: i64,
    /// The visibility-map page last read by `locate` (or InvalidBuffer).
    vm_buffer: pg_sys::Buffer,
    /// The scan key's argument (see `restart`).
    key_argument: Option<Datum>,
    /// Where event_time sits in an index tuple's data, when the entity has a
    /// fixed length (then both columns sit at fixed offsets in a tuple
    /// without NULLs); None: index_deform_tuple reads them.
    event_time_offset: Option<usize>,
}

/// MAXALIGN(sizeof(IndexTupleData)): where the data of an index tuple without
/// a NULL bitmap starts.
const INDEX_TUPLE_DATA_OFFSET: usize = 8;

#[derive(Clone, Copy, PartialEq)]
enum NativeOrder {
    Int8,
    Int4,
    Call,
}

/// How many rows before reading one `fetch_sorted` tells its caller
/// (`ahead`), who may prefetch where that row's values will go.
const FETCH_AHEAD: usize = 16;

/// A row `Walk::fetch_sorted` read: a heap tuple on a locked page, or a
/// slot (other table access methods).
pub(super) enum Row {
    Tuple(pg_sys::HeapTuple),
    Slot(*mut pg_sys::TupleTableSlot),
}

/// Where `Walk::locate` found a point's row.
pub(super) enum Located {
    /// No row of the entity is known at the point's time.
    Nothing,
    /// The row, already read (a composite datum of the table's row type).
    Row(Datum),
    /// The row is the visible one at this TID: read it with `fetch_sorted`.
    At(pg_sys::ItemPointerData),
}

/// A visible, known row of the newest event_time seen so far.
struct Candidate {
    row: Datum,
    event_time: i64,
    created_time: Option<i64>,
    /// The row's text, computed only when a tie needs it.
    text: Option<Vec<u8>>,
}

/// `mlmon._fv_probe(source_index regclass, source_row anyelement, entity "any",
/// at timestamptz, not_before timestamptz, created_time smallint) RETURNS SETOF
/// anyelement`: one row per call, the chosen row of the index's table (whose
/// row type `source_row` names) or NULL. `not_before` is the TTL bound (NULL:
/// none); `created_time` the attribute number of the created-time column (0:
/// none). Declared as a set-returning function only to get the expression
/// context whose shutdown closes the walk; it always returns exactly one row.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn fv_probe(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: sql/features/ declares this function with six arguments; the
    // walk follows the protocol of PostgreSQL's own index scans.
    unsafe {
        let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
        if rsinfo.is_null() || (*rsinfo).type_ != pg_sys::NodeTag::T_ReturnSetInfo
            || (*rsinfo).allowedModes & pg_sys::SetFunctionReturnMode::SFRM_ValuePerCall as i32 == 0
        {
            raise(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, "mlmon._fv_probe must be called in a select list".into(),
                  "it is internal to mlmon.build_training_set");
        }
        (*rsinfo).returnMode = pg_sys::SetFunctionReturnMode::SFRM_ValuePerCall;
        (*rsinfo).isDone = pg_sys::ExprDoneCond::ExprSingleResult;
        let args = (*fcinfo).args.as_slice(6);
        if args[0].isnull || args[2].isnull || args[3].isnull || args[5].isnull {
            (*fcinfo).isnull = true;
            return Datum::from(0);
        }
        let index = Oid::from(args[0].value.value() as u32);
        let created_attnum = args[5].value.value() as i16;
        let site = call_site(fcinfo);
        if (*site).setup.is_none_or(|s| s.index != index || s.created_attnum != created_attnum) {
            close_walk(Datum::from(site));
            (*site).setup = Some(check_setup(index, created_attnum,
                                             Some(pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 1)),
                                             pg_sys::get_fn_expr_argtype((*fcinfo).flinfo, 2)));
        }
        if (*site).walk.is_null() {
            let context = pg_sys::MemoryContextSwitchTo((*site).context);
            (*site).walk = Box::into_raw(Box::new(Walk::open((*site).setup.expect("checked above"))));
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::RegisterExprContextCallback((*rsinfo).econtext, Some(close_walk), Datum::from(site));
        }
        let not_before = (!args[4].isnull).then(|| args[4].value.value() as i64);
        match (*(*site).walk).point((*site).context, args[2].value, args[3].value.value() as i64, not_before) {
            Some(row) => row,
            None => {
                (*fcinfo).isnull = true;
                Datum::from(0)
            }
        }
    }
}

/// What a call site keeps in `fn_extra` for the rest of the query.
struct CallSite {
    /// The query's memory context (`fn_mcxt`): the walk's home.
    context: pg_sys::MemoryContext,
    setup: Option<Setup>,
    /// The open walk, or null.
    walk: *mut Walk,
    /// Frees the walk's Rust memory if the query ends in an error, when the
    /// shutdown callback does not run (PostgreSQL releases the scan's pins,
    /// locks and memory itself then).
    forget: pg_sys::MemoryContextCallback,
}

/// The call site's state, created on the first call.
///
/// SAFETY: `fcinfo` is the current call's.
unsafe fn call_site(fcinfo: pg_sys::FunctionCallInfo) -> *mut CallSite {
    // SAFETY: the caller's promise (this function's contract).
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if (*flinfo).fn_extra.is_null() {
            let context = (*flinfo).fn_mcxt;
            let site = pg_sys::MemoryContextAlloc(context, std::mem::size_of::<CallSite>()).cast::<CallSite>();
            site.write(CallSite {
                context,
                setup: None,
                walk: std::ptr::null_mut(),
                forget: pg_sys::MemoryContextCallback { func: Some(forget_walk), arg: site.cast(), next: std::ptr::null_mut() },
            });
            pg_sys::MemoryContextRegisterResetCallback(context, &mut (*site).forget);
            (*flinfo).fn_extra = site.cast();
        }
        (*flinfo).fn_extra.cast()
    }
}

/// Expression-context shutdown (end of query, or a rescan): ends the scan and
/// closes the relations. The next call, if any, opens a new walk.
unsafe extern "C-unwind" fn close_walk(site: Datum) {
    // SAFETY: `site` is a CallSite registered by fv_probe.
    unsafe {
        let site = site.cast_mut_ptr::<CallSite>();
        if !(*site).walk.is_null() {
            let walk = Box::from_raw((*site).walk);
            (*site).walk = std::ptr::null_mut();
            walk.close();
        }
    }
}

/// Memory-context reset after an error: drops the walk's Rust memory only.
unsafe extern "C-unwind" fn forget_walk(site: *mut std::ffi::c_void) {
    // SAFETY: `site` is the CallSite that registered this callback.
    unsafe {
        let site = site.cast::<CallSite>();
        if !(*site).walk.is_null() {
            drop(Box::from_raw((*site).walk));
            (*site).walk = std::ptr::null_mut();
        }
    }
}

/// How far the walk goes forward looking for the next entity before it
/// descends the index from the root instead (a new scan start): a few leaf
/// items cost less than a descent, a sparse spine would otherwise read the
/// whole index.
const WALK_BEFORE_DESCENT: usize = 32;

impl Walk {
    /// Opens the relations and an index scan (in the current memory context,
    /// which must be the query's).
    ///
    /// SAFETY: `setup` was checked by `check_setup` in this query.
    pub(super) unsafe fn open(setup: Setup) -> Walk {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let heap = pg_sys::table_open(setup.heap, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let index = pg_sys::index_open(setup.index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
            let snapshot = pg_sys::GetActiveSnapshot();
            let scan = pg_sys::index_beginscan(heap, index, snapshot, 1, 0);
            // Index keys come back with each TID: the walk compares them
            // without reading the table.
            (*scan).xs_want_itup = true;
            let compare = pg_sys::index_getprocinfo(index, 1, 1 /* BTORDER_PROC */);
            let native_order = match (*compare).fn_oid.to_u32() {
                pg_sys::F_BTINT8CMP => NativeOrder::Int8,
                pg_sys::F_BTINT4CMP => NativeOrder::Int4,
                _ => NativeOrder::Call,
            };
            let (mut entity_len, mut entity_byval) = (0i16, false);
            pg_sys::get_typlenbyval((*(*(*index).rd_att).attrs.as_ptr()).atttypid, &mut entity_len, &mut entity_byval);
            Walk {
                setup,
                heap,
                index,
                scan,
                snapshot,
                fetch: pg_sys::table_index_fetch_begin(heap),
                slot: pg_sys::table_slot_create(heap, std::ptr::null_mut()),
                compare,
                native_order,
                entity_byval,
                entity_len,
                pending: None,
                entity: None,
                entries: Vec::new(),
                last_at: i64::MIN,
                vm_buffer: pg_sys::InvalidBuffer as pg_sys::Buffer,
                key_argument: None,
                event_time_offset: fixed_event_time_offset(index),
            }
        }
    }

    /// What the walk was opened with.
    pub(super) fn setup(&self) -> Setup {
        self.setup
    }

    /// The descriptor of the rows the walk returns (its table's).
    pub(super) fn row_desc(&self) -> pg_sys::TupleDesc {
        // SAFETY: the table stays open while the walk is.
        unsafe { (*self.heap).rd_att }
    }

    /// Whether another process of the session may read the table: a
    /// temporary table lives in this backend's local buffers only.
    pub(super) fn readable_by_workers(&self) -> bool {
        // SAFETY: the table stays open while the walk is.
        unsafe { (*(*self.heap).rd_rel).relpersistence as u8 != pg_sys::RELPERSISTENCE_TEMP }
    }

    /// SAFETY: called once, in the query that opened the walk.
    pub(super) unsafe fn close(self) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            if self.vm_buffer != pg_sys::InvalidBuffer as pg_sys::Buffer {
                pg_sys::ReleaseBuffer(self.vm_buffer);
            }
            pg_sys::index_endscan(self.scan);
            pg_sys::table_index_fetch_end(self.fetch);
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::index_close(self.index, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::table_close(self.heap, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }

    /// The chosen row for (`entity`, `at`), built in the caller's memory
    /// context; the walk's own state lives in `context` (the query's).
    /// Points normally come sorted by (entity, at), and the walk only moves
    /// forward; a point out of that order starts it again at its entity.
    ///
    /// SAFETY: `entity` has the index's key type; `context` is the query's.
    pub(super) unsafe fn point(&mut self, context: pg_sys::MemoryContext, entity: Datum, at: i64, not_before: Option<i64>) -> Option<Datum> {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            self.read_to(context, entity, at);
            self.choose(at, not_before)
        }
    }

    /// As `point`, but when the answer is the newest entry alone (no tie,
    /// no created_time to check) on a page the visibility map marks
    /// all-visible, returns its TID without reading the table: that row is
    /// visible to every snapshot, as an index-only scan relies on. A caller
    /// with many points fetches such rows later in TID order, a page at a
    /// time, instead of one random page per point.
    ///
    /// SAFETY: as `point`.
    pub(super) unsafe fn locate(&mut self, context: pg_sys::MemoryContext, entity: Datum, at: i64, not_before: Option<i64>) -> Located {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            self.read_to(context, entity, at);
            let Some(newest) = self.entries.last().copied() else {
                return Located::Nothing;
            };
            if not_before.is_some_and(|bound| newest.event_time < bound) {
                return Located::Nothing; // outside the TTL, as is everything older
            }
            let tied = self.entries.len() >= 2 && self.entries[self.entries.len() - 2].event_time == newest.event_time;
            if !tied && self.setup.created_attnum == 0 && self.all_visible(newest.tid) {
                return Located::At(newest.tid);
            }
            match self.choose(at, not_before) {
                Some(row) => Located::Row(row),
                None => Located::Nothing,
            }
        }
    }

    /// Reads the row `locate` returned the TID of, with the walk's snapshot:
    /// the walk's slot holding it, or None if it is not visible after all
    /// (the caller then asks `point`).
    ///
    /// SAFETY: `tid` came from `locate` of this walk.
    pub(super) unsafe fn fetch(&mut self, tid: pg_sys::ItemPointerData) -> Option<*mut pg_sys::TupleTableSlot> {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let mut tid = tid;
            let (mut call_again, mut all_dead) = (false, false);
            pg_sys::table_index_fetch_tuple(self.fetch, &mut tid, self.snapshot, self.slot, &mut call_again, &mut all_dead)
                .then_some(self.slot)
        }
    }

    /// Reads the rows `locate` returned TIDs of, given in table order as
    /// (TID, caller's tag): calls `take(tag, row)` for each, with the row
    /// (None if not visible after all; the caller then asks `point`). A heap
    /// page is read and share-locked once for all its rows, where
    /// `fetch` pins, locks and stores into a slot per row; `take` runs under
    /// that lock and must copy what it keeps. Tables of other access methods
    /// go through `fetch`.
    ///
    /// SAFETY: the TIDs came from `locate` of this walk, sorted.
    pub(super) unsafe fn fetch_sorted(&mut self, tids: &[(pg_sys::ItemPointerData, usize)],
                                      mut take: impl FnMut(usize, Option<Row>), mut ahead: impl FnMut(usize)) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            if (*(*self.heap).rd_rel).relam != pg_sys::HEAP_TABLE_AM_OID {
                for &(tid, tag) in tids {
                    take(tag, self.fetch(tid).map(Row::Slot));
                }
                return;
            }
            let mut buffer = pg_sys::InvalidBuffer as pg_sys::Buffer;
            let mut block = pg_sys::InvalidBlockNumber;
            for (k, &(tid, tag)) in tids.iter().enumerate() {
                if let Some(&(_, later)) = tids.get(k + FETCH_AHEAD) {
                    ahead(later);
                }
                if block_number(&tid) != block {
                    if buffer != pg_sys::InvalidBuffer as pg_sys::Buffer {
                        pg_sys::UnlockReleaseBuffer(buffer);
                    }
                    block = block_number(&tid);
                    buffer = pg_sys::ReadBuffer(self.heap, block);
                    pg_sys::LockBuffer(buffer, pg_sys::BUFFER_LOCK_SHARE as i32);
                }
                let mut tid = tid;
                let mut tuple: pg_sys::HeapTupleData = std::mem::zeroed();
                let mut all_dead = false;
                let found = pg_sys::heap_hot_search_buffer(&mut tid, self.heap, buffer, self.snapshot, &mut tuple, &mut all_dead, true);
                take(tag, found.then_some(Row::Tuple(&mut tuple)));
            }
            if buffer != pg_sys::InvalidBuffer as pg_sys::Buffer {
                pg_sys::UnlockReleaseBuffer(buffer);
            }
        }
    }

    /// Whether the visibility map marks the page of `tid` all-visible.
    unsafe fn all_visible(&mut self, tid: pg_sys::ItemPointerData) -> bool {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let status = pg_sys::visibilitymap_get_status(self.heap, block_number(&tid), &mut self.vm_buffer);
            u32::from(status) & pg_sys::VISIBILITYMAP_ALL_VISIBLE != 0
        }
    }

    /// Reads the index up to the point (`entity`, `at`): afterwards `entries`
    /// holds the entity's entries at or before `at`, oldest first.
    unsafe fn read_to(&mut self, context: pg_sys::MemoryContext, entity: Datum, at: i64) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let caller = pg_sys::MemoryContextSwitchTo(context);
            let order = self.entity.map(|current| self.compare(entity, current));
            match order {
                Some(0) if at >= self.last_at => {}
                Some(o) if o > 0 => {
                    self.set_entity(entity);
                    self.seek(entity);
                }
                _ => {
                    self.set_entity(entity);
                    self.restart(entity);
                }
            }
            self.last_at = at;
            while let Some(p) = &self.pending {
                if self.compare(p.entity, entity) != 0 || (!p.no_time && p.entry.event_time > at) {
                    break;
                }
                if !p.no_time {
                    self.entries.push(p.entry);
                }
                self.advance();
            }
            pg_sys::MemoryContextSwitchTo(caller);
        }
    }

    /// The newest visible, known entry among those read for this entity
    /// (all at or before `at`), ties resolved as the module comment says.
    /// The row is built in the current memory context (the caller's).
    unsafe fn choose(&mut self, at: i64, not_before: Option<i64>) -> Option<Datum> {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let mut chosen: Option<Candidate> = None;
            for i in (0..self.entries.len()).rev() {
                let entry = self.entries[i];
                if chosen.as_ref().is_some_and(|c| c.event_time != entry.event_time) {
                    break; // older than the newest event_time: cannot win
                }
                if not_before.is_some_and(|bound| entry.event_time < bound) {
                    break; // outside the TTL, as is everything older
                }
                let mut tid = entry.tid;
                let (mut call_again, mut all_dead) = (false, false);
                if !pg_sys::table_index_fetch_tuple(self.fetch, &mut tid, self.snapshot, self.slot, &mut call_again, &mut all_dead) {
                    continue; // not visible to this snapshot
                }
                let created_time = if self.setup.created_attnum > 0 {
                    let mut null = false;
                    let value = pg_sys::slot_getattr(self.slot, self.setup.created_attnum as i32, &mut null).value() as i64;
                    if null || value > at {
                        continue; // not known at `at`
                    }
                    Some(value)
                } else {
                    None
                };
                let candidate = Candidate { row: row_datum(self.slot), event_time: entry.event_time, created_time, text: None };
                chosen = Some(match chosen {
                    None => candidate,
                    Some(current) => tie_break::newer(current, candidate),
                });
            }
            chosen.map(|c| c.row)
        }
    }

    /// Forgets the previous entity's entries and remembers `entity` (copied
    /// into the current context when passed by reference).
    unsafe fn set_entity(&mut self, entity: Datum) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            if let Some(old) = self.entity.take() {
                self.free_entity(old);
            }
            self.entity = Some(self.copy_entity(entity));
            self.entries.clear();
        }
    }

    /// Moves forward to the first entry of `entity` or after it; descends
    /// from the root instead when that is more than a few entries away.
    unsafe fn seek(&mut self, entity: Datum) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            for _ in 0..WALK_BEFORE_DESCENT {
                match &self.pending {
                    Some(p) if self.compare(p.entity, entity) < 0 => self.advance(),
                    _ => return,
                }
            }
            if self.pending.as_ref().is_some_and(|p| self.compare(p.entity, entity) < 0) {
                self.restart(entity);
            }
        }
    }

    /// Starts the scan again at the first entry with key >= `entity`.
    /// The scan keeps the key's argument and checks every entry it returns
    /// against it, so the argument is a copy that lives until the next
    /// restart: a caller's value passed by reference may be gone before the
    /// scan is (build_training_set frees each chunk of spine rows).
    unsafe fn restart(&mut self, entity: Datum) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let argument = self.copy_entity(entity);
            let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
            pg_sys::ScanKeyEntryInitialize(&mut key, 0, 1, pg_sys::BTGreaterEqualStrategyNumber as u16, pg_sys::InvalidOid,
                                           self.setup.entity_collation, self.setup.entity_ge, argument);
            pg_sys::index_rescan(self.scan, &mut key, 1, std::ptr::null_mut(), 0);
            if let Some(old) = self.key_argument.replace(argument) {
                self.free_entity(old);
            }
            self.advance();
        }
    }

    /// Reads the next index entry into `pending` (None at the end, and at
    /// entries with a NULL entity, which sort last and never match).
    unsafe fn advance(&mut self) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            if let Some(old) = self.pending.take() {
                self.free_entity(old.entity);
            }
            if pg_sys::index_getnext_tid(self.scan, pg_sys::ScanDirection::ForwardScanDirection).is_null() {
                return;
            }
            let itup = (*self.scan).xs_itup;
            let (entity, event_time) = match self.event_time_offset {
                // The two leading columns where a tuple without NULLs keeps
                // them (access/itup.h): what index_getattr reads, without a
                // call per entry.
                Some(event_time_offset) if u32::from((*itup).t_info) & pg_sys::INDEX_NULL_MASK == 0 => {
                    let data = itup.cast::<u8>().add(INDEX_TUPLE_DATA_OFFSET);
                    (Some(self.fetch_entity(data)), Some(data.add(event_time_offset).cast::<i64>().read_unaligned()))
                }
                _ => {
                    // index_deform_tuple fills as many columns as the index has.
                    let mut values = [Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
                    let mut nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
                    pg_sys::index_deform_tuple(itup, (*self.scan).xs_itupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
                    ((!nulls[0]).then_some(values[0]), (!nulls[1]).then(|| values[1].value() as i64))
                }
            };
            let Some(entity) = entity else {
                return;
            };
            self.pending = Some(Pending {
                entity: self.copy_entity(entity),
                entry: Entry { tid: (*self.scan).xs_heaptid, event_time: event_time.unwrap_or(0) },
                no_time: event_time.is_none(),
            });
        }
    }

    /// The entity value stored at `data` (a fixed-length type).
    unsafe fn fetch_entity(&self, data: *const u8) -> Datum {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            if !self.entity_byval {
                return Datum::from(data);
            }
            match self.entity_len {
                8 => Datum::from(data.cast::<i64>().read_unaligned()),
                4 => Datum::from(data.cast::<i32>().read_unaligned()),
                2 => Datum::from(data.cast::<i16>().read_unaligned()),
                _ => Datum::from(data.read()),
            }
        }
    }

    /// The btree order of two entity values.
    unsafe fn compare(&self, a: Datum, b: Datum) -> i32 {
        match self.native_order {
            NativeOrder::Int8 => (a.value() as i64).cmp(&(b.value() as i64)) as i32,
            NativeOrder::Int4 => (a.value() as i32).cmp(&(b.value() as i32)) as i32,
            // SAFETY: both datums are entity values of the index's key type, compared
            // by the operator family's comparison function found by check_setup.
            NativeOrder::Call => unsafe {
                pg_sys::FunctionCall2Coll(self.compare, self.setup.entity_collation, a, b).value() as i32
            },
        }
    }

    /// A copy of an entity value that outlives the index page it came from.
    unsafe fn copy_entity(&self, value: Datum) -> Datum {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            if self.entity_byval {
                value
            } else if self.entity_len == -1 {
                Datum::from(pg_sys::pg_detoast_datum_copy(value.cast_mut_ptr()))
            } else {
                let len = self.entity_len as usize;
                let copy = pg_sys::palloc(len);
                std::ptr::copy_nonoverlapping(value.cast_mut_ptr::<u8>(), copy.cast::<u8>(), len);
                Datum::from(copy)
            }
        }
    }

    unsafe fn free_entity(&self, value: Datum) {
        if !self.entity_byval {
            // SAFETY: a by-reference entity was palloc'd by copy_entity and is freed once.
            unsafe { pg_sys::pfree(value.cast_mut_ptr()) }
        }
    }
}


/// Checks that `index` is a plain btree index leading with (entity,
/// event_time timestamptz) of a table the caller may read whole, that
/// `row_type` (when given) is the table's row type and `entity_type` its
/// entity column's type, and looks up the comparison functions of the scan
/// keys.
///
/// SAFETY: called inside a transaction.
pub(super) unsafe fn check_setup(index: Oid, created_attnum: i16, row_type: Option<Oid>, entity_type: Oid) -> Setup {
    // SAFETY: the caller's promise (this function's contract).
    unsafe {
        let heap = pg_sys::IndexGetRelation(index, true);
        if heap == pg_sys::InvalidOid {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("relation {} is not an index", index.to_u32()),
                  "argument source_index: a btree index on (entity, event_time) of the feature view's source");
        }
        if pg_sys::pg_class_aclcheck(heap, pg_sys::GetUserId(), pg_sys::ACL_SELECT as pg_sys::AclMode) != pg_sys::AclResult::ACLCHECK_OK {
            raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, "permission denied for the feature view's source table".into(),
                  "argument source_index: reading features needs SELECT on the source table");
        }
        if pg_sys::check_enable_rls(heap, pg_sys::InvalidOid, true) == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32 {
            raise(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, "the index probe does not apply row security".into(),
                  "argument source_index: read tables under row security through mlmon.feature_at");
        }
        let index_rel = pg_sys::index_open(index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let heap_rel = pg_sys::table_open(heap, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let form = (*index_rel).rd_index;
        let keys = (*form).indkey.values.as_slice((*form).indnatts as usize);
        let heap_desc = (*heap_rel).rd_att;
        let column_type = |attnum: i16| -> Oid {
            let natts = (*heap_desc).natts as i16;
            if attnum < 1 || attnum > natts {
                return pg_sys::InvalidOid;
            }
            let attribute = (*heap_desc).attrs.as_slice(natts as usize)[attnum as usize - 1];
            if attribute.attisdropped { pg_sys::InvalidOid } else { attribute.atttypid }
        };
        let usable = (*(*index_rel).rd_rel).relam == pg_sys::BTREE_AM_OID
            && (*form).indnkeyatts >= 2
            && keys[0] > 0
            && keys[1] > 0
            && column_type(keys[1]) == pg_sys::TIMESTAMPTZOID
            && *(*index_rel).rd_opcintype.add(1) == pg_sys::TIMESTAMPTZOID
            && row_type.is_none_or(|t| t == (*(*heap_rel).rd_rel).reltype)
            && entity_type == column_type(keys[0])
            && (created_attnum == 0 || column_type(created_attnum) == pg_sys::TIMESTAMPTZOID);
        if !usable {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "the index probe does not fit these arguments".into(),
                  "arguments: a btree index on (entity, event_time timestamptz), NULL of its table's row type, an entity of the key column's type, and 0 or a timestamptz column's number");
        }
        let operator = |column: usize, strategy: u32| -> pg_sys::RegProcedure {
            let family = *(*index_rel).rd_opfamily.add(column);
            let input = *(*index_rel).rd_opcintype.add(column);
            let op = pg_sys::get_opfamily_member(family, input, input, strategy as i16);
            if op == pg_sys::InvalidOid {
                raise(PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION, "the index's operator family lacks a comparison".into(),
                      "argument source_index: use a btree index with the default operator classes");
            }
            pg_sys::get_opcode(op)
        };
        let setup = Setup {
            index,
            created_attnum,
            heap,
            entity_ge: operator(0, pg_sys::BTGreaterEqualStrategyNumber),
            entity_collation: *(*index_rel).rd_indcollation,
        };
        pg_sys::index_close(index_rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        pg_sys::table_close(heap_rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        setup
    }
}

/// The tie-break rule itself is `mlmon_core::features::tie_break`; a
/// candidate renders its row text only when a full tie needs it.
impl tie_break::Candidate for Candidate {
    fn created_time(&self) -> Option<i64> {
        self.created_time
    }

    /// The row's text as `(t.*)::text` gives it, in bytes.
    fn row_text(&mut self) -> &[u8] {
        let row = self.row;
        self.text.get_or_insert_with(|| {
            // SAFETY: `row` is a composite datum made by `row_datum`.
            unsafe {
                let text = pg_sys::OidOutputFunctionCall(Oid::from(pg_sys::F_RECORD_OUT), row);
                CStr::from_ptr(text).to_bytes().to_vec()
            }
        })
    }
}

/// The slot's row as a composite datum of the table's row type: every column
/// (defaults of columns added later filled in), no out-of-line values.
///
/// SAFETY: `slot` holds a row of its table.
unsafe fn row_datum(slot: *mut pg_sys::TupleTableSlot) -> Datum {
    // SAFETY: the caller's promise (this function's contract).
    unsafe {
        pg_sys::slot_getallattrs(slot);
        let desc = (*slot).tts_tupleDescriptor;
        let tuple = pg_sys::heap_form_tuple(desc, (*slot).tts_values, (*slot).tts_isnull);
        pg_sys::heap_copy_tuple_as_datum(tuple, desc)
    }
}

/// The block number of a TID (ItemPointerGetBlockNumber, a macro in 15).
pub(super) fn block_number(tid: &pg_sys::ItemPointerData) -> pg_sys::BlockNumber {
    (u32::from(tid.ip_blkid.bi_hi) << 16) | u32::from(tid.ip_blkid.bi_lo)
}

/// The offset of the second key column in the data of an index tuple without
/// NULLs, when the first has a fixed length: the first starts the data, the
/// second follows at its alignment (att_align_nominal).
///
/// SAFETY: `index` is open.
unsafe fn fixed_event_time_offset(index: pg_sys::Relation) -> Option<usize> {
    // SAFETY: the caller's promise (this function's contract).
    unsafe {
        let desc = (*index).rd_att;
        if (*desc).natts < 2 {
            return None;
        }
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        let (first, second) = (&attrs[0], &attrs[1]);
        let alignment = match second.attalign as u8 {
            b'c' => 1,
            b's' => 2,
            b'i' => 4,
            _ => 8,
        };
        (first.attlen > 0 && second.attlen == 8 && second.attbyval)
            .then(|| (first.attlen as usize).div_ceil(alignment) * alignment)
    }
}
