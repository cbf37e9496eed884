//! `mlmon._fv_fill_training_set`: the rows of a training set whose feature
//! views can all be walked (`probe.rs`), written straight into the target.
//!
//! Why not `_fv_probe` per spine row: the chosen rows of consecutive spine
//! rows lie on random pages of the source, and reading one random page per
//! spine row and view (buffer-table lookup, page prune check, cache misses)
//! was about a third of `build_training_set`. Here the sorted spine is read
//! in chunks; for each chunk and view the walk settles every point it can
//! from the index and the visibility map alone (`Walk::locate`), the TIDs are
//! sorted, and the rows are fetched in table order, many per page. Points the
//! map cannot settle (ties, created_time, pages not all-visible) are read at
//! once by the walk, exactly as `_fv_probe` reads them.
//!
//! With a helper process (`helper.rs`), a parallel worker walks half
//! the views for each chunk while this process walks the rest, and it walks
//! the next chunk while this one is written.
//!
//! The spine comes from a query built by `build_training_set` (its own
//! columns, then any entity casts and TTL bounds the views need), read in
//! (entity, at) order by `spine.rs`; the target table exists, with the
//! spine's columns followed by the feature columns. Reads run as the caller
//! under the caller's statement snapshot, like the SQL path.

#![allow(unsafe_code)]

use pgrx::pg_sys::{self, Datum, Oid};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

mod helper;
mod spine;

use helper::{Helper, HelperView, HELPED_CHUNKS, MIN_HELPED_POINTS};
use spine::{open_cursor, Spine, SpineReader, SpinePlan};
use super::probe::{block_number, check_setup, Located, Row, Walk};
use crate::pg::datum::copy_by_reference;
use crate::pg::errors::raise_coded as raise;
use crate::pg::fmgr::v1_function;

v1_function!(fv_fill_training_set);

/// Bytes of memory a chunk holds per spine row and view (the chosen row's
/// feature values), to size chunks by maintenance_work_mem. Measured with
/// three views of three features (float8, int4, a 32-byte text): 94 bytes
/// per view (the text copies most of it).
const VIEW_BYTES: usize = 96;

/// Rows inserted per table_multi_insert call, as COPY FROM batches them: one
/// WAL record per page filled instead of one per row.
const INSERT_BATCH: usize = 1000;

/// `mlmon._fv_fill_training_set(target regclass, spine_query text,
/// spine_order text, spine_columns int, at_column int, indexes regclass[], entity_columns
/// smallint[], not_before_columns smallint[], created_times smallint[],
/// feature_views smallint[], feature_attnums smallint[]) RETURNS bigint`:
/// inserts one target row per row of `spine_query` and returns their number.
/// `spine_order` is the ORDER BY list that sorts the query by (entity, at).
/// The query's first `spine_columns` columns are the spine's; column
/// `at_column` (numbers are 1-based) is the time. View v walks `indexes[v]`
/// with the entity in column `entity_columns[v]`, the TTL bound in column
/// `not_before_columns[v]` (0: no TTL) and the created time in attribute
/// `created_times[v]` of its table (0: none). Target column
/// `spine_columns + k` is attribute `feature_attnums[k]` of the row chosen in
/// view `feature_views[k]` (1-based).
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn fv_fill_training_set(fcinfo: pg_sys::FunctionCallInfo) -> Datum {
    // SAFETY: sql/features/ declares this STRICT function with these eleven
    // arguments; the relations are opened, scanned and written through the
    // table and index access method APIs, as COPY FROM and index scans do.
    unsafe {
        let args = (*fcinfo).args.as_slice(11);
        let number = |i: usize| args[i].value.value() as i32;
        let text = |i: usize| String::from_datum(args[i].value, false).unwrap_or_default();
        let list = |i: usize| Vec::<i16>::from_datum(args[i].value, false).unwrap_or_default();
        let spec = Spec {
            target: Oid::from(args[0].value.value() as u32),
            query: text(1),
            order: text(2),
            spine_columns: number(3),
            at_column: number(4),
            indexes: Vec::<Oid>::from_datum(args[5].value, false).unwrap_or_default(),
            entity_columns: list(6),
            not_before_columns: list(7),
            created_times: list(8),
            feature_views: list(9),
            feature_attnums: list(10),
        };
        let views = spec.indexes.len();
        if views == 0
            || [&spec.entity_columns, &spec.not_before_columns, &spec.created_times].iter().any(|l| l.len() != views)
            || spec.feature_views.len() != spec.feature_attnums.len()
            || spec.feature_views.iter().any(|&v| v < 1 || v as usize > views)
            || spec.spine_columns < 0
        {
            bad_arguments();
        }
        Datum::from(Fill::start(&spec).run() as i64)
    }
}

/// The arguments, as passed.
struct Spec {
    target: Oid,
    query: String,
    order: String,
    spine_columns: i32,
    at_column: i32,
    indexes: Vec<Oid>,
    entity_columns: Vec<i16>,
    not_before_columns: Vec<i16>,
    created_times: Vec<i16>,
    feature_views: Vec<i16>,
    feature_attnums: Vec<i16>,
}

fn bad_arguments() -> ! {
    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "mlmon._fv_fill_training_set got inconsistent arguments".into(),
          "it is internal to mlmon.build_training_set")
}

/// A point of one view: (entity, at, TTL bound).
pub(super) type Point = (Datum, i64, Option<i64>);

/// One view's part of the fill.
pub(super) struct View {
    walk: Walk,
    /// A second walk for the rare point whose row `locate` promised but the
    /// snapshot does not see: it starts again at that point's entity.
    recheck: Option<Walk>,
    /// Query columns (0-based) of the view's entity and TTL bound.
    entity_column: usize,
    not_before_column: Option<usize>,
    pub(super) columns: Columns,
}

/// The columns of a view's source the target takes.
pub(super) struct Columns {
    /// The source's row descriptor, to take chosen rows apart.
    row_desc: pg_sys::TupleDesc,
    /// The attributes, and how to copy each (by value, length).
    attnums: Vec<usize>,
    pub(super) copy: Vec<(bool, i16)>,
}

impl View {
    /// Opens the walk of `index` for points whose entity (of `entity_type`)
    /// and TTL bound sit in the given query columns.
    ///
    /// SAFETY: inside a transaction; the current memory context lives as
    /// long as the walk.
    pub(super) unsafe fn open(index: Oid, created_time: i16, entity_type: Oid, entity_column: usize,
                              not_before_column: Option<usize>) -> View {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let walk = Walk::open(check_setup(index, created_time, None, entity_type));
            let row_desc = walk.row_desc();
            View { walk, recheck: None, entity_column, not_before_column,
                   columns: Columns { row_desc, attnums: Vec::new(), copy: Vec::new() } }
        }
    }

    /// The values of the view's attributes (`width` per point) in each
    /// point's chosen row, NULL where there is none (or no point), in the
    /// current memory context. `walk_context` holds the walks.
    ///
    /// SAFETY: the points come sorted as the module comment says, or the
    /// walks merely start again more often.
    pub(super) unsafe fn choose(&mut self, walk_context: pg_sys::MemoryContext, points: &[Option<Point>]) -> (Vec<Datum>, Vec<bool>) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let width = self.columns.attnums.len();
            let mut values = vec![Datum::from(0); points.len() * width];
            let mut nulls = vec![true; points.len() * width];
            let mut deferred: Vec<(pg_sys::ItemPointerData, usize)> = Vec::new();
            for (i, point) in points.iter().enumerate() {
                let Some((entity, at, not_before)) = *point else { continue };
                match self.walk.locate(walk_context, entity, at, not_before) {
                    Located::Nothing => {}
                    Located::Row(row) => self.columns.take_composite(row, &mut values[i * width..], &mut nulls[i * width..]),
                    Located::At(tid) => deferred.push((tid, i)),
                }
            }
            // In table order: consecutive rows mostly share a page.
            deferred.sort_unstable_by_key(|(tid, _)| tid_key(tid));
            let mut missed: Vec<usize> = Vec::new();
            let columns = &self.columns;
            let (values_at, nulls_at) = (values.as_ptr(), nulls.as_ptr());
            self.walk.fetch_sorted(&deferred, |i, row| match row {
                Some(row) => columns.take(row, true, &mut values[i * width..], &mut nulls[i * width..]),
                None => missed.push(i),
            }, |i| {
                // Point i's values sit at a random place in the arrays.
                prefetch(Datum::from(values_at.wrapping_add(i * width)));
                prefetch(Datum::from(nulls_at.wrapping_add(i * width)));
            });
            // A row `locate` promised that the snapshot does not see after
            // all: the per-point rule, by a walk that starts again at the
            // point's entity.
            for &i in &missed {
                let Some((entity, at, not_before)) = points[i] else { continue };
                let setup = self.walk.setup();
                let walk = self.recheck.get_or_insert_with(|| {
                    let caller = pg_sys::MemoryContextSwitchTo(walk_context);
                    let walk = Walk::open(setup);
                    pg_sys::MemoryContextSwitchTo(caller);
                    walk
                });
                if let Some(row) = walk.point(walk_context, entity, at, not_before) {
                    self.columns.take_composite(row, &mut values[i * width..], &mut nulls[i * width..]);
                }
            }
            (values, nulls)
        }
    }

    /// Closes the walks.
    ///
    /// SAFETY: in the query that opened them.
    pub(super) unsafe fn close(self) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            self.walk.close();
            if let Some(walk) = self.recheck {
                walk.close();
            }
        }
    }
}

impl Columns {
    /// Takes attribute `attnum` of the chosen rows too.
    pub(super) unsafe fn push(&mut self, attnum: usize) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let natts = (*self.row_desc).natts as usize;
            let attribute = (*self.row_desc).attrs.as_slice(natts)[attnum - 1];
            self.attnums.push(attnum);
            self.copy.push((attribute.attbyval, attribute.attlen));
        }
    }
}

/// The rows go in through the table access method alone: no index entries,
/// constraints, triggers, row security or privilege checks, which COPY FROM
/// would apply. So the target must be a table that has none of them to miss:
/// one this transaction created (build_training_set's CREATE TABLE), owned by
/// the caller, plain, empty, and bare. Anything else is refused, whoever
/// calls this function.
///
/// SAFETY: `target` is open.
unsafe fn check_target(target: pg_sys::Relation) {
    // SAFETY: the caller's promise (this function's contract).
    unsafe {
        let form = (*target).rd_rel;
        let desc = (*target).rd_att;
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        let bare = (*form).relkind as u8 == pg_sys::RELKIND_RELATION
            && (*target).rd_createSubid != 0 // InvalidSubTransactionId: created before this transaction
            && pg_sys::pg_class_ownercheck((*target).rd_id, pg_sys::GetUserId())
            && !(*form).relhasindex
            && !(*form).relhastriggers
            && !(*form).relrowsecurity
            && (*form).relchecks == 0
            && attrs.iter().all(|a| !a.attnotnull && !a.atthasdef)
            && pg_sys::RelationGetNumberOfBlocksInFork(target, pg_sys::ForkNumber::MAIN_FORKNUM) == 0;
        if !bare {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                  "mlmon._fv_fill_training_set writes only into the empty table build_training_set has just created".into(),
                  "it is internal to mlmon.build_training_set");
        }
    }
}

/// One chunk's chosen feature values: those of point i in view v are
/// `values[v][i * w .. (i + 1) * w]` (w: the view's number of attributes),
/// in the chunk's memory context.
struct Chosen {
    values: Vec<Vec<Datum>>,
    nulls: Vec<Vec<bool>>,
}

struct Fill {
    target: pg_sys::Relation,
    /// The rows of one multi-insert batch.
    slots: Vec<*mut pg_sys::TupleTableSlot>,
    bulk: pg_sys::BulkInsertState,
    spine: Option<SpineReader>,
    views: Vec<View>,
    /// The worker walking some of the views, if one could be had.
    helper: Option<Helper>,
    spine_columns: usize,
    at_column: usize,
    /// Per target feature column: (view, index into the view's `columns`).
    features: Vec<(usize, usize)>,
    /// The memory of the walks (the caller's) and of one chunk's rows.
    walk_context: pg_sys::MemoryContext,
    chunk_context: pg_sys::MemoryContext,
}

impl Fill {
    /// Opens the target, the walks and the spine cursor, checking that the
    /// query's columns and the target's fit the views.
    ///
    /// SAFETY: inside a transaction, with an active snapshot.
    unsafe fn start(spec: &Spec) -> Fill {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let walk_context = pg_sys::CurrentMemoryContext;
            if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
                raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "SPI_connect failed".into(), "");
            }
            // The unsorted query first: its columns are checked here, and
            // `SpineReader::open` reads it or turns to the sorted one.
            let portal = open_cursor(&spec.query).unwrap_or_else(|| bad_arguments());
            let columns = (*portal).tupDesc;
            // A 1-based column number of the query, checked, as 0-based.
            let column = |number: i32| -> usize {
                if number < 1 || number > (*columns).natts {
                    bad_arguments();
                }
                number as usize - 1
            };
            let column_type = |i: usize| (*columns).attrs.as_slice((*columns).natts as usize)[i].atttypid;
            if spec.spine_columns > (*columns).natts {
                bad_arguments();
            }
            let spine_columns = spec.spine_columns as usize;
            let at_column = column(spec.at_column);
            if column_type(at_column) != pg_sys::TIMESTAMPTZOID {
                bad_arguments();
            }
            let caller = pg_sys::MemoryContextSwitchTo(walk_context);
            let mut views = Vec::with_capacity(spec.indexes.len());
            for v in 0..spec.indexes.len() {
                let entity_column = column(spec.entity_columns[v].into());
                let not_before_column = (spec.not_before_columns[v] != 0).then(|| column(spec.not_before_columns[v].into()));
                if not_before_column.is_some_and(|c| column_type(c) != pg_sys::TIMESTAMPTZOID) {
                    bad_arguments();
                }
                views.push(View::open(spec.indexes[v], spec.created_times[v], column_type(entity_column), entity_column,
                                      not_before_column));
            }
            let target_rel = pg_sys::table_open(spec.target, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            check_target(target_rel);
            let slots = (0..INSERT_BATCH).map(|_| pg_sys::table_slot_create(target_rel, std::ptr::null_mut())).collect();
            let bulk = pg_sys::GetBulkInsertState();
            pg_sys::MemoryContextSwitchTo(caller);

            // The target's columns: the spine's, then the features, typed alike.
            let target_desc = (*target_rel).rd_att;
            let target_attrs = (*target_desc).attrs.as_slice((*target_desc).natts as usize);
            if target_attrs.len() != spine_columns + spec.feature_views.len()
                || target_attrs.iter().any(|a| a.attisdropped)
                || (0..spine_columns).any(|i| target_attrs[i].atttypid != column_type(i))
            {
                bad_arguments();
            }
            let mut features = Vec::with_capacity(spec.feature_views.len());
            for (k, (&v, &attnum)) in spec.feature_views.iter().zip(&spec.feature_attnums).enumerate() {
                let columns = &mut views[v as usize - 1].columns;
                let natts = (*columns.row_desc).natts as usize;
                let attnum = attnum as usize;
                if attnum < 1 || attnum > natts {
                    bad_arguments();
                }
                let attribute = (*columns.row_desc).attrs.as_slice(natts)[attnum - 1];
                if attribute.attisdropped || target_attrs[spine_columns + k].atttypid != attribute.atttypid {
                    bad_arguments();
                }
                features.push((v as usize - 1, columns.attnums.len()));
                columns.push(attnum);
            }
            // Points go to a helper as plain integers, and it must be able to
            // read the tables (not temporary ones).
            let query_attrs = (*columns).attrs.as_slice((*columns).natts as usize);
            let helpable = views.len() >= 2
                && views.iter().all(|v| query_attrs[v.entity_column].attbyval && v.walk.readable_by_workers());
            let entity_types: Vec<Oid> = views.iter().map(|v| column_type(v.entity_column)).collect();
            // A bulk build, like CREATE INDEX: the spine in memory and the
            // chunks are sized by maintenance_work_mem (the spine's sort, if
            // it does not fit, by work_mem).
            let plan = SpinePlan {
                query: &spec.query,
                order: &spec.order,
                entity_column: views[0].entity_column,
                at_column,
                budget: pg_sys::maintenance_work_mem as usize * 1024,
                point_bytes: VIEW_BYTES * views.len(),
            };
            let mut spine = SpineReader::open(portal, &plan, walk_context).unwrap_or_else(|| bad_arguments());
            // Only with the spine already in memory: in parallel mode the
            // session may run no parallel-unsafe function, and a spine read
            // through a cursor (a view, say) could call one. From here on the
            // session walks, inserts into the bare target, and nothing else.
            let helper = if helpable
                && pg_sys::max_parallel_maintenance_workers > 0
                && !pg_sys::IsInParallelMode()
                && spine.rows().is_some_and(|n| n >= MIN_HELPED_POINTS)
            {
                let helped: Vec<usize> = (views.len() / 2..views.len()).collect();
                let specs: Vec<HelperView> = helped.iter().map(|&v| HelperView {
                    index: spec.indexes[v], created_time: spec.created_times[v], entity_type: entity_types[v],
                    attnums: views[v].columns.attnums.clone(),
                }).collect();
                let caller = pg_sys::MemoryContextSwitchTo(walk_context);
                let helper = Helper::start(helped, &specs);
                pg_sys::MemoryContextSwitchTo(caller);
                if helper.is_some() {
                    spine.split(HELPED_CHUNKS);
                }
                helper
            } else {
                None
            };
            Fill {
                target: target_rel,
                slots,
                bulk,
                spine: Some(spine),
                helper,
                views,
                spine_columns,
                at_column,
                features,
                walk_context,
                chunk_context: pg_sys::AllocSetContextCreateInternal(
                    walk_context, c"mlmon training set chunk".as_ptr(), 0, 8 * 1024, 8 * 1024 * 1024),
            }
        }
    }

    /// Fills the target chunk by chunk; returns the rows written.
    ///
    /// SAFETY: `self` was just started.
    unsafe fn run(mut self) -> u64 {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let mut written = 0u64;
            let mut reader = self.spine.take().expect("started");
            // With a helper (whose spine is held in memory, chunks owned), the
            // next chunk's points go out before this chunk is written: the
            // helper walks while the leader writes. Without one, the next
            // chunk is read only after this one is written: a cursor's chunk
            // lives until the next is fetched, and two would overrun the
            // memory the chunks were sized for.
            let ahead = self.helper.is_some();
            let mut next = reader.next();
            if let Some(spine) = &next {
                self.send_points(spine);
            }
            while let Some(spine) = next.take() {
                pgrx::check_for_interrupts!();
                let caller = pg_sys::MemoryContextSwitchTo(self.chunk_context);
                let chosen = self.choose_rows(&spine);
                if ahead {
                    next = reader.next();
                    if let Some(following) = &next {
                        self.send_points(following);
                    }
                }
                self.write_rows(&spine, &chosen);
                pg_sys::MemoryContextSwitchTo(caller);
                pg_sys::MemoryContextReset(self.chunk_context);
                written += spine.rows as u64;
                if !ahead {
                    next = reader.next();
                }
            }
            reader.close();
            self.finish();
            written
        }
    }

    /// Sends the helper, if any, the points of its views in a chunk.
    unsafe fn send_points(&mut self, spine: &Spine) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let Some(helped) = self.helper.as_ref().map(|h| h.views.clone()) else { return };
            let theirs: Vec<Vec<Option<Point>>> = helped.iter().map(|&v| self.points(spine, v)).collect();
            self.helper.as_mut().expect("helped").send_points(&theirs);
        }
    }

    /// The feature values of every point's chosen row in every view (NULL
    /// where there is none), in the current (chunk) context. The helper, if
    /// any, was sent the chunk's points and has been computing its views.
    unsafe fn choose_rows(&mut self, spine: &Spine) -> Chosen {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let mut chosen = Chosen { values: vec![Vec::new(); self.views.len()], nulls: vec![Vec::new(); self.views.len()] };
            for v in 0..self.views.len() {
                if self.helper.as_ref().is_some_and(|h| h.views.contains(&v)) {
                    continue;
                }
                let mine = self.points(spine, v);
                (chosen.values[v], chosen.nulls[v]) = self.views[v].choose(self.walk_context, &mine);
            }
            if let Some(helper) = &mut self.helper {
                for k in 0..helper.views.len() {
                    let v = helper.views[k];
                    (chosen.values[v], chosen.nulls[v]) = helper.receive_values(spine.rows, &self.views[v].columns);
                }
            }
            chosen
        }
    }

    /// Every point of a chunk for view `v`.
    fn points(&self, spine: &Spine, v: usize) -> Vec<Option<Point>> {
        (0..spine.rows).map(|i| self.point(spine, i, v)).collect()
    }

    /// A point's (entity, at, not_before) for view `v`, None when the spine
    /// row has no entity or no time (its features stay NULL).
    fn point(&self, spine: &Spine, i: usize, v: usize) -> Option<Point> {
        let view = &self.views[v];
        let at = spine.value(i, self.at_column)?.value() as i64;
        let entity = spine.value(i, view.entity_column)?;
        Some((entity, at, view.not_before_column.and_then(|c| spine.value(i, c)).map(|d| d.value() as i64)))
    }

    /// Inserts one target row per point: its spine columns, then each
    /// feature from the point's chosen row in its view.
    unsafe fn write_rows(&mut self, spine: &Spine, chosen: &Chosen) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let widths: Vec<usize> = self.views.iter().map(|v| v.columns.attnums.len()).collect();
            let command = pg_sys::GetCurrentCommandId(true);
            let width = self.spine_columns + self.features.len();
            let mut batched = 0;
            for i in 0..spine.rows {
                let (spine_values, spine_nulls) = spine.row(i);
                let slot = self.slots[batched];
                pg_sys::ExecClearTuple(slot);
                let values = std::slice::from_raw_parts_mut((*slot).tts_values, width);
                let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, width);
                values[..self.spine_columns].copy_from_slice(&spine_values[..self.spine_columns]);
                nulls[..self.spine_columns].copy_from_slice(&spine_nulls[..self.spine_columns]);
                for (k, &(v, j)) in self.features.iter().enumerate() {
                    let (value, null) = (chosen.values[v][i * widths[v] + j], chosen.nulls[v][i * widths[v] + j]);
                    values[self.spine_columns + k] = value;
                    nulls[self.spine_columns + k] = null;
                    if !null && !self.views[v].columns.copy[j].0 {
                        prefetch(value);
                    }
                }
                pg_sys::ExecStoreVirtualTuple(slot);
                batched += 1;
                if batched == INSERT_BATCH || i + 1 == spine.rows {
                    // Before the chunk's memory, which the slots point into, goes.
                    pg_sys::table_multi_insert(self.target, self.slots.as_mut_ptr(), batched as i32, command, 0, self.bulk);
                    batched = 0;
                }
            }
        }
    }

    /// Closes everything `start` opened (on error, PostgreSQL's resource
    /// owner and memory contexts release them instead).
    unsafe fn finish(self) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            if let Some(helper) = self.helper {
                helper.finish();
            }
            pg_sys::SPI_finish();
            pg_sys::FreeBulkInsertState(self.bulk);
            pg_sys::table_finish_bulk_insert(self.target, 0);
            for slot in self.slots {
                pg_sys::ExecDropSingleTupleTableSlot(slot);
            }
            pg_sys::table_close(self.target, pg_sys::NoLock as pg_sys::LOCKMODE);
            for view in self.views {
                view.close();
            }
            pg_sys::MemoryContextDelete(self.chunk_context);
        }
    }
}

impl Columns {
    /// Keeps the target's attributes of a chosen row given as a composite
    /// datum (built in the chunk's context: nothing to copy). `values` and
    /// `nulls` start at the point's first.
    pub(super) unsafe fn take_composite(&self, row: Datum, values: &mut [Datum], nulls: &mut [bool]) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            let header = row.cast_mut_ptr::<pg_sys::HeapTupleHeaderData>();
            let mut tuple: pg_sys::HeapTupleData = std::mem::zeroed();
            tuple.t_len = pgrx::varsize_any(header.cast()) as u32;
            tuple.t_data = header;
            self.take(Row::Tuple(&mut tuple), false, values, nulls);
        }
    }

    /// Keeps the target's attributes of a row; `on_page`: the row lies on a
    /// table page (`Walk::fetch_sorted`), so values passed by reference are
    /// copied into the current (chunk) context.
    unsafe fn take(&self, row: Row, on_page: bool, values: &mut [Datum], nulls: &mut [bool]) {
        // SAFETY: the caller's promise (this function's contract).
        unsafe {
            for (j, (&attnum, &(by_value, length))) in self.attnums.iter().zip(&self.copy).enumerate() {
                let value = match row {
                    Row::Tuple(tuple) => pg_sys::heap_getattr(tuple, attnum as i32, self.row_desc, &mut nulls[j]),
                    Row::Slot(slot) => pg_sys::slot_getattr(slot, attnum as i32, &mut nulls[j]),
                };
                values[j] = if nulls[j] || by_value || !on_page { value } else { copy_by_reference(value, length) };
            }
        }
    }
}

/// Asks the CPU to bring a by-reference value into cache: the multi-insert
/// reads it when it forms the batch's tuples, and values copied in table
/// order sit in memory in no order the spine's rows follow (a cache miss
/// each, a good part of the write).
fn prefetch(value: Datum) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(value.cast_mut_ptr::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// A TID as one integer in table order.
fn tid_key(tid: &pg_sys::ItemPointerData) -> u64 {
    (u64::from(block_number(tid)) << 16) | u64::from(tid.ip_posid)
}
