//! The write path of drift monitors: the native statement trigger
//! (`mlmon._drift_write(monitor)`) and the rebuild from the whole table
//! (`mlmon._drift_rebuild(monitor)`) feed rows to one [`Accumulator`],
//! which bins each row's columns into the state of its (bucket, segment)
//! and appends those states as signed delta rows.
//!
//! - INSERT adds the new rows, DELETE subtracts the old ones, UPDATE does
//!   both; each statement appends one delta row per (bucket, segment) it
//!   touched, in the writing transaction (a rollback takes it away).
//!   Writers never update a shared row; compaction folds deltas now and
//!   then under an advisory lock no writer waits for.
//! - TRUNCATE deletes every state row.
//! - Everything after reading the catalog runs as the monitor's owner with a
//!   pinned search path (`pg::session::as_user`), and with TimeZone = UTC so
//!   a text time without an offset means UTC whatever the writer's session.

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::ffi::CString;

use mlmon_core::drift_monitors::layout::{bucket_of, unix_seconds_to_micros};
use mlmon_core::drift_monitors::state::{CategoricalState, ColumnState, DriftState, NumericState};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::{PgBuiltInOids, PgOid};

use super::catalog::{spi_error, DriftMonitor, Kind};
use super::catalog::Dictionary;
use crate::pg::datum::float8;
use crate::pg::fmgr::{as_text, from_cstring, v1_function};
use crate::pg::errors::raise_coded;
use crate::pg::session::{as_user, is_current_transaction, with_setting};
use crate::pg::trigger::{trigger_arguments, trigger_data};
use crate::pg::tuples::{each_row, integer, Attributes};

/// Groups held in memory before their deltas are written out (deltas add
/// up, so a statement may append several rows for one group): a numeric
/// column's state is about 1 kB, so this bounds a statement's memory to a
/// few tens of MB whatever its row count.
const MAX_GROUPS: usize = 2048;

/// How a column's values are read: chosen once per statement by type, so a
/// row costs no catalog lookup.
enum Reader {
    Float8,
    Float4,
    Integer(pg_sys::Oid),
    /// numeric: its text by numeric_out (looked up once), parsed to the
    /// nearest double as ::float8 rounds it (numeric_float8 itself, by way
    /// of a C string and float8in, cost twice as much).
    Numeric(Box<pg_sys::FmgrInfo>),
    /// text and varchar: the bytes where they lie.
    Text,
    Bool,
    /// Anything else (char(n), enums, ...): `value::text`.
    AsText(pg_sys::Oid),
}

impl Reader {
    fn of(type_oid: pg_sys::Oid) -> Reader {
        match type_oid {
            pg_sys::FLOAT8OID => Reader::Float8,
            pg_sys::FLOAT4OID => Reader::Float4,
            pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID => Reader::Integer(type_oid),
            pg_sys::NUMERICOID => {
                let mut function = Box::new(pg_sys::FmgrInfo::default());
                // SAFETY: a built-in function's lookup into a zeroed FmgrInfo
                // that lives as long as the reader.
                unsafe { pg_sys::fmgr_info(pg_sys::Oid::from(pg_sys::F_NUMERIC_OUT), function.as_mut()) };
                Reader::Numeric(function)
            }
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Reader::Text,
            pg_sys::BOOLOID => Reader::Bool,
            other => Reader::AsText(other),
        }
    }

    fn is_number(&self) -> bool {
        matches!(self, Reader::Float8 | Reader::Float4 | Reader::Numeric(_))
    }

    /// A non-NULL value as a number.
    ///
    /// # Safety
    /// `value` is a valid, non-NULL datum of the reader's type.
    unsafe fn number(&self, value: pg_sys::Datum) -> f64 {
        match self {
            Reader::Float8 => float8(value),
            Reader::Float4 => f32::from_bits(value.value() as u32) as f64,
            Reader::Integer(t) => integer(value, *t) as f64,
            // SAFETY: the caller's promise: a numeric datum; numeric_out does
            // not write to its FmgrInfo (no fn_extra), so sharing it is sound,
            // and returns a palloc'd C string, freed here.
            Reader::Numeric(function) => unsafe {
                let text = pg_sys::OutputFunctionCall(std::ptr::from_ref(function.as_ref()).cast_mut(), value);
                let v = std::ffi::CStr::from_ptr(text).to_str().ok().and_then(|t| t.parse::<f64>().ok()).unwrap_or(f64::NAN);
                pg_sys::pfree(text.cast());
                v
            },
            // SAFETY: as above.
            _ => unsafe { self.with_text(value, |t| t.parse::<f64>().unwrap_or(f64::NAN)) },
        }
    }

    /// Calls `f` with a non-NULL value's text, as `value::text` gives it
    /// (booleans: 'true' and 'false').
    ///
    /// # Safety
    /// `value` is a valid, non-NULL datum of the reader's type.
    unsafe fn with_text<R>(&self, value: pg_sys::Datum, f: impl FnOnce(&str) -> R) -> R {
        // SAFETY: the caller's promise; a text datum is read through its
        // detoasted form, valid until the end of the call.
        unsafe {
            let text = match self {
                Reader::Bool => return f(if value.value() != 0 { "true" } else { "false" }),
                Reader::Text => value,
                Reader::Float8 => as_text(value, pg_sys::FLOAT8OID),
                Reader::Float4 => as_text(value, pg_sys::FLOAT4OID),
                Reader::Integer(t) | Reader::AsText(t) => as_text(value, *t),
                Reader::Numeric(_) => as_text(value, pg_sys::NUMERICOID),
            };
            let plain = pg_sys::pg_detoast_datum_packed(text.cast_mut_ptr());
            let bytes = pgrx::varlena::varlena_to_byte_slice(plain);
            // The server encoding is UTF-8 almost always; else a lossy copy.
            match std::str::from_utf8(bytes) {
                Ok(t) => f(t),
                Err(_) => f(&String::from_utf8_lossy(bytes)),
            }
        }
    }
}

/// Where the monitor's columns sit in a tuple descriptor, and how to read them.
struct Positions {
    time: (usize, Reader),
    time_kind: TimeKind,
    segments: Vec<(usize, Reader)>,
    columns: Vec<(usize, Reader)>,
}

fn missing_column(monitor: &DriftMonitor, column: &str) -> ! {
    raise_coded(
        PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        format!("drift monitor \"{}\": its table has no column \"{column}\" any more", monitor.name),
        "drop the drift monitor (mlmon.drop_drift_monitor) and create it again for the table's new shape",
    )
}

impl Positions {
    fn find(desc: pg_sys::TupleDesc, monitor: &DriftMonitor) -> Positions {
        let attributes = Attributes(desc);
        let find = |name: &str| {
            attributes.find(name).map(|(i, a)| (i, Reader::of(a.atttypid))).unwrap_or_else(|| missing_column(monitor, name))
        };
        Positions {
            time: find(&monitor.time_column),
            time_kind: TimeKind::of(&monitor.time_kind),
            segments: monitor.segment_by.iter().map(|s| find(s)).collect(),
            columns: monitor.columns.iter().map(|c| find(&c.name)).collect(),
        }
    }
}

/// How a row's time becomes microseconds (`mlmon.drift_monitor.time_kind`).
#[derive(Clone, Copy)]
enum TimeKind {
    /// timestamptz, or timestamp read as UTC: the same microseconds.
    Timestamp,
    Date,
    /// Seconds since 1970-01-01 UTC.
    Number,
    /// ISO 8601 text, read by timestamptz's input function.
    Text,
}

impl TimeKind {
    fn of(kind: &str) -> TimeKind {
        match kind {
            "timestamptz" | "timestamp" => TimeKind::Timestamp,
            "date" => TimeKind::Date,
            "number" => TimeKind::Number,
            _ => TimeKind::Text,
        }
    }
}

/// The microseconds (since 2000-01-01 UTC) of a row's time, None when
/// infinite.
///
/// # Safety
/// `value` is a valid, non-NULL datum of the reader's type.
unsafe fn micros_of(kind: TimeKind, value: pg_sys::Datum, reader: &Reader) -> Option<i64> {
    match kind {
        TimeKind::Timestamp => Some(value.value() as i64).filter(|&t| t != i64::MIN && t != i64::MAX),
        TimeKind::Date => Some(value.value() as i32).filter(|&d| d != i32::MIN && d != i32::MAX).map(|d| d as i64 * 86_400_000_000),
        // SAFETY: the caller's promise.
        TimeKind::Number => unix_seconds_to_micros(unsafe { reader.number(value) }),
        TimeKind::Text => {
            // text: read by timestamptz's input function (22007 when malformed).
            // SAFETY: the caller's promise; the C string outlives the call.
            let c = unsafe { reader.with_text(value, |t| CString::new(t).unwrap_or_default()) };
            // SAFETY: a valid C string, read by the type's input function.
            Some(unsafe { from_cstring(pg_sys::TIMESTAMPTZOID, c.as_ptr().cast_mut()) }.value() as i64)
                .filter(|&t| t != i64::MIN && t != i64::MAX)
        }
    }
}

/// What the write path keeps of a drift monitor between statements (per
/// trigger, so a monitor dropped and created again, whose triggers are new,
/// is read afresh): its definition, the statements it runs, and the
/// categories known to be committed (a category this transaction added may
/// still roll back, and is kept for the statement only).
pub struct Prepared {
    monitor: DriftMonitor,
    committed: RefCell<Dictionary>,
    insert_deltas: OwnedPreparedStatement,
    find_or_add_category: OwnedPreparedStatement,
    find_category: OwnedPreparedStatement,
}

thread_local! {
    /// By trigger OID.
    static PREPARED: RefCell<HashMap<pg_sys::Oid, Rc<Prepared>>> = RefCell::default();
}

impl Prepared {
    fn new(client: &SpiClient<'_>, monitor: DriftMonitor, compacted: bool) -> Prepared {
        let (states, categories) = (&monitor.states_table, &monitor.categories_table);
        let insert = if compacted {
            // A rebuild writes one row per group; the ON CONFLICT adds a
            // group's later rows to its first (a flush may split a group).
            format!(
                "INSERT INTO {states} AS c (bucket, segment, state, compacted)
                 SELECT b, s::jsonb, st, true FROM unnest($1::timestamptz[], $2::text[], $3::bytea[]) u(b, s, st)
                 ON CONFLICT (bucket, segment) WHERE compacted DO UPDATE SET state = mlmon._drift_merge(c.state, EXCLUDED.state)"
            )
        } else {
            format!(
                "INSERT INTO {states} (bucket, segment, state)
                 SELECT b, s::jsonb, st FROM unnest($1::timestamptz[], $2::text[], $3::bytea[]) u(b, s, st)"
            )
        };
        let find_or_add = format!(
            "WITH found AS (SELECT id, xmin FROM {categories} WHERE position = $1 AND category = $2),
                  added AS (INSERT INTO {categories} (position, category)
                            SELECT $1, $2 WHERE NOT EXISTS (SELECT FROM found)
                               AND (SELECT count(*) FROM {categories} WHERE position = $1) < $3
                            ON CONFLICT (position, category) DO NOTHING RETURNING id, xmin)
             SELECT id, xmin::text::bigint FROM found UNION ALL SELECT id, xmin::text::bigint FROM added"
        );
        let find = format!("SELECT id, xmin::text::bigint FROM {categories} WHERE position = $1 AND category = $2");
        let prepare = |sql: &str, types: &[PgOid]| client.prepare_mut(sql, types).unwrap_or_else(|e| spi_error(e)).keep();
        let (int4, text, int8) = (PgOid::BuiltIn(PgBuiltInOids::INT4OID), PgOid::BuiltIn(PgBuiltInOids::TEXTOID), PgOid::BuiltIn(PgBuiltInOids::INT8OID));
        Prepared {
            committed: RefCell::new(Dictionary::load(client, &monitor, true)),
            insert_deltas: prepare(
                &insert,
                &[
                    PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZARRAYOID),
                    PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID),
                    PgOid::BuiltIn(PgBuiltInOids::BYTEAARRAYOID),
                ],
            ),
            find_or_add_category: prepare(&find_or_add, &[int4, text, int8]),
            find_category: prepare(&find, &[int4, text]),
            monitor,
        }
    }

    /// The trigger's, made on first use.
    fn of_trigger(client: &SpiClient<'_>, trigger: pg_sys::Oid, name: &str) -> Rc<Prepared> {
        if let Some(p) = PREPARED.with(|c| c.borrow().get(&trigger).cloned()) {
            return p;
        }
        let monitor = DriftMonitor::load(client, name);
        let prepared = as_user(monitor.owner(), || Rc::new(Prepared::new(client, monitor, false)));
        PREPARED.with(|c| c.borrow_mut().insert(trigger, prepared.clone()));
        prepared
    }
}

/// Bins rows into per-(bucket, segment) delta states and writes them.
pub struct Accumulator<'a> {
    monitor: &'a DriftMonitor,
    prepared: &'a Prepared,
    /// Categories this transaction added (seen by this statement).
    dictionary: Dictionary,
    /// Each group's index in `states`; rows mostly arrive in time order, so
    /// `last` (the previous row's group) saves most lookups.
    groups: HashMap<(i64, String), usize>,
    states: Vec<((i64, String), DriftState)>,
    last: Option<usize>,
    /// This row's category ids, one per column (reused between rows).
    categories: Vec<Option<Option<u32>>>,
    segment: String,
    /// The previous row's bucket.
    bucket: Option<i64>,
    rows: i64,
}

impl<'a> Accumulator<'a> {
    pub fn new(prepared: &'a Prepared) -> Self {
        let monitor = &prepared.monitor;
        Accumulator {
            monitor,
            prepared,
            dictionary: Dictionary::default(),
            groups: HashMap::new(),
            states: Vec::new(),
            last: None,
            categories: Vec::with_capacity(monitor.columns.len()),
            segment: String::from("[]"),
            bucket: None,
            rows: 0,
        }
    }

    fn empty_state(&self) -> DriftState {
        DriftState {
            columns: self
                .monitor
                .columns
                .iter()
                .map(|c| match c.kind {
                    Kind::Numeric => ColumnState::Numeric(NumericState::new(c.edges().len())),
                    Kind::Categorical => ColumnState::Categorical(CategoricalState::default()),
                })
                .collect(),
        }
    }

    /// The id of a category, adding it to the dictionary while it has room;
    /// None: *other*.
    fn category_id(&mut self, client: &mut SpiClient<'_>, position: usize, category: &str) -> Option<u32> {
        if let Some(id) = self.prepared.committed.borrow().id(position, category).or_else(|| self.dictionary.id(position, category)) {
            return Some(id);
        }
        let args = [(position as i32).into(), category.into(), self.monitor.max_categories.into()];
        let first = |table: pgrx::spi::SpiTupleTable<'_>| {
            let row = table.first();
            row.get::<i32>(1).ok().flatten().zip(row.get::<i64>(2).ok().flatten())
        };
        let mut found = first(client.update(&self.prepared.find_or_add_category, Some(1), &args).unwrap_or_else(|e| spi_error(e)));
        if found.is_none() {
            // Another writer added it after our snapshot (ON CONFLICT did
            // nothing): a new statement sees it. Or the dictionary is full.
            found = first(client.select(&self.prepared.find_category, Some(1), &args[..2]).unwrap_or_else(|e| spi_error(e)));
        }
        let (id, xmin) = found?;
        let id = id as u32;
        if is_current_transaction(xmin) {
            self.dictionary.insert(position, category.to_owned(), id);
        } else {
            self.prepared.committed.borrow_mut().insert(position, category.to_owned(), id);
        }
        Some(id)
    }

    /// The index of a group's state, created empty when new.
    fn group(&mut self, client: &mut SpiClient<'_>, bucket: i64) -> usize {
        if let Some(i) = self.last {
            let (b, s) = &self.states[i].0;
            if *b == bucket && *s == self.segment {
                return i;
            }
        }
        let key = (bucket, self.segment.clone());
        let i = match self.groups.get(&key) {
            Some(&i) => i,
            None => {
                if self.states.len() >= MAX_GROUPS {
                    self.flush(client);
                }
                let empty = self.empty_state();
                self.states.push((key.clone(), empty));
                self.groups.insert(key, self.states.len() - 1);
                self.states.len() - 1
            }
        };
        self.last = Some(i);
        i
    }

    /// Adds one row `sign` times (−1: the row left the table).
    ///
    /// # Safety
    /// `values` and `nulls` are a row of the tuple descriptor `positions` was found in.
    unsafe fn add_row(&mut self, client: &mut SpiClient<'_>, positions: &Positions, values: &[pg_sys::Datum], nulls: &[bool], sign: i64) {
        let (t, ref time_reader) = positions.time;
        if nulls[t] {
            return;
        }
        // SAFETY: the caller's promise (a non-NULL value of its column's type).
        let Some(micros) = (unsafe { micros_of(positions.time_kind, values[t], time_reader) }) else { return };
        // Rows mostly come in time order: the previous row's bucket, without a division.
        let bucket = match self.bucket {
            Some(start) if (start..start.saturating_add(self.monitor.bucket_stride)).contains(&micros) => start,
            _ => {
                let Some(start) = bucket_of(micros, self.monitor.bucket_stride, self.monitor.bucket_origin) else { return };
                self.bucket = Some(start);
                start
            }
        };
        if !positions.segments.is_empty() {
            let segment: Vec<Option<String>> = positions
                .segments
                .iter()
                // SAFETY: as above.
                .map(|(i, reader)| (!nulls[*i]).then(|| unsafe { reader.with_text(values[*i], str::to_owned) }))
                .collect();
            self.segment = serde_json::to_string(&segment).expect("strings serialize");
        }
        // Categories first: the dictionary may need a statement.
        let mut categories = std::mem::take(&mut self.categories);
        categories.clear();
        for (position, ((i, reader), column)) in positions.columns.iter().zip(&self.monitor.columns).enumerate() {
            categories.push(match (column.kind, nulls[*i]) {
                // NaN in a number column read as categories is NULL, as in numeric ones.
                // SAFETY: as above.
                (Kind::Categorical, false) if reader.is_number() && unsafe { reader.number(values[*i]) }.is_nan() => None,
                (Kind::Categorical, false) => {
                    // SAFETY: as above.
                    Some(unsafe { reader.with_text(values[*i], |text| self.category_id(client, position, text)) })
                }
                _ => None,
            });
        }
        let g = self.group(client, bucket);
        let state = &mut self.states[g].1;
        for (((i, reader), column), (target, category)) in
            positions.columns.iter().zip(&self.monitor.columns).zip(state.columns.iter_mut().zip(&categories))
        {
            match target {
                ColumnState::Numeric(s) => {
                    // SAFETY: as above.
                    let v = (!nulls[*i]).then(|| unsafe { reader.number(values[*i]) });
                    s.add(column.edges(), v, sign);
                }
                ColumnState::Categorical(s) => match category {
                    Some(id) => s.add(*id, sign),
                    None => s.add_null(sign),
                },
            }
        }
        self.categories = categories;
        self.rows += 1;
    }

    /// Appends the held groups' states as delta rows (compacted rows when rebuilding).
    pub fn flush(&mut self, client: &mut SpiClient<'_>) {
        self.groups.clear();
        self.last = None;
        let groups: Vec<((i64, String), DriftState)> = self.states.drain(..).filter(|(_, s)| !s.is_zero()).collect();
        if groups.is_empty() {
            return;
        }
        let buckets: Vec<Option<TimestampWithTimeZone>> =
            groups.iter().map(|((b, _), _)| TimestampWithTimeZone::try_from(*b).ok()).collect();
        let segments: Vec<&str> = groups.iter().map(|((_, s), _)| s.as_str()).collect();
        let states: Vec<Vec<u8>> = groups.iter().map(|(_, s)| s.encode()).collect();
        client
            .update(&self.prepared.insert_deltas, None, &[buckets.into(), segments.into(), states.into()])
            .unwrap_or_else(|e| spi_error(e));
    }
}

/// Folds delta rows into one compacted row per (bucket, segment) unless
/// another session is at it; returns the delta rows folded.
pub fn compact(client: &mut SpiClient<'_>, monitor: &DriftMonitor, wait: bool) -> i64 {
    let lock = if wait { "pg_catalog.pg_advisory_xact_lock($1) IS NOT NULL" } else { "pg_catalog.pg_try_advisory_xact_lock($1)" };
    let got = client
        .update(&format!("SELECT {lock}"), Some(1), &[monitor.lock_id.into()])
        .unwrap_or_else(|e| spi_error(e))
        .first()
        .get::<bool>(1)
        .ok()
        .flatten()
        .unwrap_or(false);
    if !got {
        return 0;
    }
    let t = &monitor.states_table;
    let sql = format!(
        "WITH gone AS (DELETE FROM {t} WHERE NOT compacted RETURNING bucket, segment, state),
              kept AS (INSERT INTO {t} AS c (bucket, segment, state, compacted)
                       SELECT bucket, segment, mlmon._drift_sum(state), true FROM gone GROUP BY 1, 2
                       ON CONFLICT (bucket, segment) WHERE compacted
                       DO UPDATE SET state = mlmon._drift_merge(c.state, EXCLUDED.state) RETURNING 1)
         SELECT count(*) FROM gone"
    );
    client.update(&sql, Some(1), &[]).unwrap_or_else(|e| spi_error(e)).first().get::<i64>(1).ok().flatten().unwrap_or(0)
}

v1_function!(drift_write);

/// `mlmon._drift_write(monitor)`: AFTER INSERT, UPDATE, DELETE or TRUNCATE
/// FOR EACH STATEMENT trigger, with transition tables for the first three.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn drift_write(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the trigger data is the current call's; its relation and
    // transition tables are valid for the whole call.
    unsafe {
        let Some(data) = trigger_data(fcinfo) else {
            pgrx::error!("mlmon._drift_write may only be called as a trigger");
        };
        let arguments = trigger_arguments(data);
        if arguments.len() != 1 || data.tg_event & pg_sys::TRIGGER_EVENT_ROW != 0 {
            pgrx::error!("mlmon._drift_write may only be called as a drift monitor's statement trigger");
        }
        let event = data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
        let desc = (*data.tg_relation).rd_att;
        Spi::connect_mut(|client| {
            let prepared = Prepared::of_trigger(client, (*data.tg_trigger).tgoid, &arguments[0]);
            let monitor = &prepared.monitor;
            as_user(monitor.owner(), || {
                with_settings(|| {
                    if event == pg_sys::TRIGGER_EVENT_TRUNCATE {
                        client.update(&format!("DELETE FROM {}", monitor.states_table), None, &[]).unwrap_or_else(|e| spi_error(e));
                        return;
                    }
                    let positions = Positions::find(desc, monitor);
                    let mut accumulator = Accumulator::new(&prepared);
                    for (table, sign) in [(data.tg_oldtable, -1), (data.tg_newtable, 1)] {
                        if table.is_null() {
                            continue;
                        }
                        each_row(table, desc, |values, nulls| {
                            accumulator.add_row(client, &positions, values, nulls, sign);
                            true
                        });
                    }
                    accumulator.flush(client);
                    // Now and then, fold the deltas so reads stay O(buckets); only
                    // under READ COMMITTED (a stricter snapshot could see rows
                    // another compactor deleted).
                    if pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32 && rand_percent() {
                        compact(client, monitor, false);
                    }
                })
            })
        });
        pg_sys::Datum::from(0)
    }
}

/// Runs `f` with TimeZone = UTC (a text time without an offset is UTC) and
/// extra_float_digits = 1 (a number's category text is its shortest exact
/// form, as create_drift_monitor read the reference's), whatever the
/// writer's session says.
fn with_settings<R>(f: impl FnOnce() -> R) -> R {
    with_setting(c"TimeZone", c"UTC", || with_setting(c"extra_float_digits", c"1", f))
}

/// True about once in a hundred calls.
fn rand_percent() -> bool {
    // SAFETY: pg_prng_uint64 on the backend's global generator.
    unsafe { pg_sys::pg_prng_uint64(std::ptr::addr_of_mut!(pg_sys::pg_global_prng_state)) % 100 == 0 }
}

/// `mlmon._drift_rebuild(monitor)`: the monitor's states recomputed from
/// every row of its table; returns the rows counted.
#[pg_extern(sql = false)]
fn drift_rebuild(monitor: &str) -> i64 {
    Spi::connect_mut(|client| {
        let monitor = DriftMonitor::load(client, monitor);
        as_user(monitor.owner(), || {
            with_settings(|| {
                client.update(&format!("DELETE FROM {}", monitor.states_table), None, &[]).unwrap_or_else(|e| spi_error(e));
                let prepared = Prepared::new(client, monitor, true);
                let monitor = &prepared.monitor;
                let mut accumulator = Accumulator::new(&prepared);
                let sql = CString::new(format!("SELECT * FROM {}", source_name(monitor.source))).expect("no NUL");
                // SAFETY: a cursor of this SPI connection, read in batches; each
                // batch's tuples are deformed with the batch's descriptor and
                // freed after use.
                unsafe {
                    let plan = pg_sys::SPI_prepare(sql.as_ptr(), 0, std::ptr::null_mut());
                    if plan.is_null() {
                        pgrx::error!("mlmon: could not read the drift monitor's table");
                    }
                    let portal = pg_sys::SPI_cursor_open(std::ptr::null(), plan, std::ptr::null_mut(), std::ptr::null(), true);
                    loop {
                        pg_sys::SPI_cursor_fetch(portal, true, 10_000);
                        let (count, table) = (pg_sys::SPI_processed as usize, pg_sys::SPI_tuptable);
                        if count == 0 || table.is_null() {
                            break;
                        }
                        let desc = (*table).tupdesc;
                        let positions = Positions::find(desc, monitor);
                        let width = (*desc).natts as usize;
                        let (mut values, mut nulls) = (vec![pg_sys::Datum::from(0); width], vec![false; width]);
                        for i in 0..count {
                            pg_sys::heap_deform_tuple(*(*table).vals.add(i), desc, values.as_mut_ptr(), nulls.as_mut_ptr());
                            accumulator.add_row(client, &positions, &values, &nulls, 1);
                        }
                        pg_sys::SPI_freetuptable(table);
                        pgrx::check_for_interrupts!();
                    }
                    pg_sys::SPI_cursor_close(portal);
                }
                accumulator.flush(client);
                accumulator.rows
            })
        })
    })
}

/// A relation's quoted, qualified name.
fn source_name(relation: u32) -> String {
    match crate::pg::catalog::relation_name(pg_sys::Oid::from(relation)) {
        Some((schema, name)) => {
            // SAFETY: quote_identifier returns its argument or a palloc'd copy.
            let quote = |s: &std::ffi::CStr| unsafe {
                std::ffi::CStr::from_ptr(pg_sys::quote_identifier(s.as_ptr())).to_string_lossy().into_owned()
            };
            format!("{}.{}", quote(&schema), quote(&name))
        }
        None => pgrx::error!("the drift monitor's table no longer exists"),
    }
}

/// `mlmon._drift_compact(monitor, wait)`.
#[pg_extern(sql = false)]
fn drift_compact(monitor: &str, wait: bool) -> i64 {
    Spi::connect_mut(|client| {
        let monitor = DriftMonitor::load(client, monitor);
        as_user(monitor.owner(), || compact(client, &monitor, wait))
    })
}
