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

use std::cell::{RefCell, UnsafeCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::ffi::CString;

use mlmon_core::drift_monitors::layout::{bucket_of, unix_seconds_to_micros};
use mlmon_core::drift_monitors::state::{ColumnState, DriftState};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::{PgBuiltInOids, PgOid};

use super::catalog::{spi_error, DriftMonitor, Kind};
use super::catalog::Dictionary;
use crate::pg::datum::float8;
use crate::pg::fmgr::{from_cstring, v1_function};
use crate::pg::errors::{raise_coded, OrRaise};
use crate::pg::session::{as_user, is_current_transaction, is_member_of, report_progress, with_setting};
use crate::pg::trigger::{trigger_arguments, trigger_data};
use crate::pg::tuples::{each_row, integer, Attributes};

/// Groups held in memory before their deltas are written out (deltas add
/// up, so a statement may append several rows for one group): a numeric
/// column's state is about 1 kB, so this bounds a statement's memory to a
/// few tens of MB whatever its row count.
const MAX_GROUPS: usize = 2048;

/// PostgreSQL's timestamp range, in microseconds since 2000-01-01
/// (MIN_TIMESTAMP and END_TIMESTAMP of datatype/timestamp.h).
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

/// How a column's values are read: chosen once per statement by type, so a
/// row costs no catalog lookup.
enum Reader {
    Float8(Box<UnsafeCell<pg_sys::FmgrInfo>>),
    Float4(Box<UnsafeCell<pg_sys::FmgrInfo>>),
    Integer(pg_sys::Oid, Box<UnsafeCell<pg_sys::FmgrInfo>>),
    /// numeric: its text by numeric_out (looked up once), parsed to the
    /// nearest double as ::float8 rounds it (numeric_float8 itself, by way
    /// of a C string and float8in, cost twice as much).
    Numeric(Box<UnsafeCell<pg_sys::FmgrInfo>>),
    /// text and varchar: the bytes where they lie.
    Text,
    Bool,
    /// Anything else (char(n), enums, dates, ...): the type's output
    /// function, looked up once. Never a cast: a cast to text may be a
    /// user's SQL function, which would run with the monitor owner's rights
    /// under any writer (an output function is C, written by a superuser).
    Output(Box<UnsafeCell<pg_sys::FmgrInfo>>),
}

impl Reader {
    fn of(type_oid: pg_sys::Oid) -> Reader {
        match type_oid {
            pg_sys::FLOAT8OID => Reader::Float8(output_function(type_oid)),
            pg_sys::FLOAT4OID => Reader::Float4(output_function(type_oid)),
            pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID => Reader::Integer(type_oid, output_function(type_oid)),
            pg_sys::NUMERICOID => {
                Reader::Numeric(output_function(type_oid))
            }
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Reader::Text,
            pg_sys::BOOLOID => Reader::Bool,
            other => Reader::Output(output_function(other)),
        }
    }

    /// A non-NULL value as a number.
    ///
    /// # Safety
    /// `value` is a valid, non-NULL datum of the reader's type.
    unsafe fn number(&self, value: pg_sys::Datum) -> f64 {
        match self {
            Reader::Float8(_) => float8(value),
            Reader::Float4(_) => f32::from_bits(value.value() as u32) as f64,
            Reader::Integer(t, _) => integer(value, *t) as f64,
            // SAFETY: the caller's promise: a numeric datum; numeric_out does
            // not write to its FmgrInfo (no fn_extra), so sharing it is sound,
            // and returns a palloc'd C string, freed here.
            Reader::Numeric(function) => unsafe {
                with_output(function, value, |t| t.parse::<f64>().unwrap_or(f64::NAN))
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
        // detoasted form (freed after use when it is a copy), other types
        // through their output function's C string (freed after use): a
        // statement may read millions of values in one memory context.
        unsafe {
            match self {
                Reader::Bool => f(if value.value() != 0 { "true" } else { "false" }),
                Reader::Text => {
                    let raw = value.cast_mut_ptr::<pg_sys::varlena>();
                    let plain = pg_sys::pg_detoast_datum_packed(raw);
                    let bytes = pgrx::varlena::varlena_to_byte_slice(plain);
                    // The server encoding is UTF-8 almost always; else a lossy copy.
                    let result = match std::str::from_utf8(bytes) {
                        Ok(t) => f(t),
                        Err(_) => f(&String::from_utf8_lossy(bytes)),
                    };
                    if plain != raw {
                        pg_sys::pfree(plain.cast());
                    }
                    result
                }
                Reader::Float8(function) | Reader::Float4(function) | Reader::Integer(_, function) | Reader::Numeric(function)
                | Reader::Output(function) => with_output(function, value, f),
            }
        }
    }

    fn is_number(&self) -> bool {
        matches!(self, Reader::Float8(_) | Reader::Float4(_) | Reader::Numeric(_) | Reader::Integer(..))
    }

    fn is_float(&self) -> bool {
        matches!(self, Reader::Float8(_) | Reader::Float4(_) | Reader::Numeric(_))
    }
}

/// A type's output function, looked up once.
fn output_function(type_oid: pg_sys::Oid) -> Box<UnsafeCell<pg_sys::FmgrInfo>> {
    let function = Box::new(UnsafeCell::new(pg_sys::FmgrInfo::default()));
    // SAFETY: catalog lookups by a type's OID into a zeroed FmgrInfo that
    // lives as long as its reader.
    unsafe {
        let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
        pg_sys::getTypeOutputInfo(type_oid, &mut output, &mut varlena);
        pg_sys::fmgr_info(output, function.get());
    }
    function
}

/// Calls `f` with a value's output text, freed afterwards.
///
/// # Safety
/// `value` is a valid, non-NULL datum of the type `function` outputs.
unsafe fn with_output<R>(function: &UnsafeCell<pg_sys::FmgrInfo>, value: pg_sys::Datum, f: impl FnOnce(&str) -> R) -> R {
    // SAFETY: the caller's promise; the FmgrInfo is behind an UnsafeCell, as
    // an output function may cache in its fn_extra (a record's does, in
    // fn_mcxt: the statement's context), and the call returns a palloc'd C
    // string, freed here.
    unsafe {
        let text = pg_sys::OutputFunctionCall(function.get(), value);
        let bytes = std::ffi::CStr::from_ptr(text).to_bytes();
        let result = match std::str::from_utf8(bytes) {
            Ok(t) => f(t),
            Err(_) => f(&String::from_utf8_lossy(bytes)),
        };
        pg_sys::pfree(text.cast());
        result
    }
}

/// Where the monitor's columns sit in a tuple descriptor, and how to read them.
struct Positions {
    time: (usize, Reader),
    time_kind: TimeKind,
    segments: Vec<(usize, Reader)>,
    columns: Vec<(usize, Reader)>,
}

fn type_name(t: pg_sys::Oid) -> String {
    // SAFETY: format_type_be returns a palloc'd C string for any type OID.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::format_type_be(t)).to_string_lossy().into_owned() }
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
        // A column whose type changed since the monitor was created would be
        // read wrongly (a bigint's datum as a timestamp): refused.
        let changed = |name: &str, now: pg_sys::Oid| -> ! {
            raise_coded(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!("drift monitor \"{}\": column \"{name}\" changed type (now {})", monitor.name, type_name(now)),
                "drop the drift monitor (mlmon.drop_drift_monitor) and create it again for the column's new type",
            )
        };
        let time_type = attributes.find(&monitor.time_column).map(|(_, a)| a.atttypid).unwrap_or_else(|| missing_column(monitor, &monitor.time_column));
        if TimeKind::of_type(time_type) != Some(TimeKind::of(&monitor.time_kind)) {
            changed(&monitor.time_column, time_type);
        }
        for column in &monitor.columns {
            let t = attributes.find(&column.name).map(|(_, a)| a.atttypid).unwrap_or_else(|| missing_column(monitor, &column.name));
            if column.kind == Kind::Numeric && !Reader::of(t).is_number() {
                changed(&column.name, t);
            }
        }
        Positions {
            time: find(&monitor.time_column),
            time_kind: TimeKind::of(&monitor.time_kind),
            segments: monitor.segment_by.iter().map(|s| find(s)).collect(),
            columns: monitor.columns.iter().map(|c| find(&c.name)).collect(),
        }
    }
}

/// How a row's time becomes microseconds (`mlmon.drift_monitor.time_kind`).
#[derive(Clone, Copy, PartialEq)]
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
    /// The kind a column of this type gives (as create_drift_monitor chose it).
    fn of_type(type_oid: pg_sys::Oid) -> Option<TimeKind> {
        match type_oid {
            pg_sys::TIMESTAMPTZOID | pg_sys::TIMESTAMPOID => Some(TimeKind::Timestamp),
            pg_sys::DATEOID => Some(TimeKind::Date),
            pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID | pg_sys::NUMERICOID | pg_sys::FLOAT4OID | pg_sys::FLOAT8OID => {
                Some(TimeKind::Number)
            }
            pg_sys::TEXTOID | pg_sys::VARCHAROID => Some(TimeKind::Text),
            _ => None,
        }
    }

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
        TimeKind::Date => Some(value.value() as i32)
            .filter(|&d| d != i32::MIN && d != i32::MAX)
            .and_then(|d| (d as i64).checked_mul(86_400_000_000)),
        // SAFETY: the caller's promise.
        TimeKind::Number => unix_seconds_to_micros(unsafe { reader.number(value) }),
        TimeKind::Text => {
            // text: read by timestamptz's input function (22007 when malformed).
            // SAFETY: the caller's promise; the C string outlives the call.
            let c = unsafe { reader.with_text(value, |t| CString::new(t).unwrap_or_default()) };
            // ISO 8601 only, as documented: timestamptz's input also takes
            // words ('now', 'today', 'epoch'), whose time changes from the
            // INSERT to the DELETE of the same row.
            if !c.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                raise_coded(
                    PgSqlErrorCode::ERRCODE_INVALID_DATETIME_FORMAT,
                    format!("time {:?} is not an ISO 8601 timestamp", c.to_string_lossy()),
                    "argument time_column: the drift monitor's text time column must hold ISO 8601 text such as '2026-03-01 12:00:00+00'",
                );
            }
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
    lock_categories: OwnedPreparedStatement,
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
            lock_categories: prepare("SELECT pg_catalog.pg_advisory_xact_lock($1)", &[int8]),
            monitor,
        }
    }

    /// The trigger's, made on first use.
    fn of_trigger(client: &SpiClient<'_>, trigger: pg_sys::Oid, name: &str) -> Rc<Prepared> {
        if let Some(p) = PREPARED.with(|c| c.borrow().get(&trigger).cloned()) {
            return p;
        }
        let monitor = DriftMonitor::load_as_owner(client, name);
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
    /// Recomputing for mlmon.check_drift_monitor: every group kept in
    /// memory, no category added (an unknown one counts as *other*).
    checking: bool,
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
            checking: false,
            rows: 0,
        }
    }

    /// The id of a category, adding it to the dictionary while it has room;
    /// None: *other*.
    fn category_id(&mut self, client: &mut SpiClient<'_>, position: usize, category: &str) -> Option<u32> {
        if let Some(id) = self.prepared.committed.borrow().id(position, category).or_else(|| self.dictionary.id(position, category)) {
            return Some(id);
        }
        // A value this long is no category (an identifier, a document): it
        // counts as *other*, and never reaches the dictionary's index, whose
        // rows must stay under 2,704 bytes (a longer one failed the writer's
        // INSERT).
        if category.len() > MAX_CATEGORY_LENGTH {
            return None;
        }
        if !self.checking {
        // Writers adding categories to one column take turns until commit,
        // so the count below (a statement after the lock, a fresh snapshot
        // under READ COMMITTED) sees every category added before: the bound
        // holds. New categories are rare; the wait is short.
        let lock = self.monitor.lock_id ^ ((position as i64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64));
        client.update(&self.prepared.lock_categories, None, &[lock.into()]).unwrap_or_else(|e| spi_error(e));
        }
        let args = [(position as i32).into(), category.into(), self.monitor.max_categories.into()];
        let first = |table: pgrx::spi::SpiTupleTable<'_>| {
            let row = table.first();
            row.get::<i32>(1).ok().flatten().zip(row.get::<i64>(2).ok().flatten())
        };
        let mut found = if self.checking {
            None
        } else {
            first(client.update(&self.prepared.find_or_add_category, Some(1), &args).unwrap_or_else(|e| spi_error(e)))
        };
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
                if self.states.len() >= MAX_GROUPS && !self.checking {
                    self.flush(client);
                }
                let empty = self.monitor.empty_state();
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
        // Outside PostgreSQL's timestamps (4713 BC to 294276 AD) no bucket
        // can hold the row: not counted, as an infinite time.
        if !(MIN_TIMESTAMP..END_TIMESTAMP).contains(&micros) {
            return;
        }
        // Rows mostly come in time order: the previous row's bucket, without a division.
        let bucket = match self.bucket {
            Some(start) if (start..start.saturating_add(self.monitor.bucket_stride)).contains(&micros) => start,
            _ => {
                let Some(start) = bucket_of(micros, self.monitor.bucket_stride, self.monitor.bucket_origin)
                    .filter(|b| (MIN_TIMESTAMP..END_TIMESTAMP).contains(b))
                else {
                    return;
                };
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
                (Kind::Categorical, false) if reader.is_float() && unsafe { reader.number(values[*i]) }.is_nan() => None,
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
            // (The catalog is read as the owner, with only pg_catalog on the
            // search path: a writer's operators must not run inside the trigger.)
            let prepared = Prepared::of_trigger(client, (*data.tg_trigger).tgoid, &arguments[0]);
            let monitor = &prepared.monitor;
            // The function runs as the monitor's owner: only on the
            // monitor's own table (anyone may attach it to a table of theirs).
            if pg_sys::Oid::from(monitor.source) != (*data.tg_relation).rd_id {
                raise_coded(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    format!("mlmon._drift_write('{}') is attached to a table that is not the drift monitor's", monitor.name),
                    "only mlmon.create_drift_monitor attaches it, to the monitor's table",
                );
            }
            as_user(monitor.owner(), || {
                with_settings(|| {
                    if event == pg_sys::TRIGGER_EVENT_TRUNCATE {
                        // TRUNCATE, not DELETE: a DELETE under REPEATABLE READ would
                        // miss state rows committed after the snapshot. (The
                        // source's TRUNCATE holds it exclusively: no writer adds any.)
                        client.update(&format!("TRUNCATE {}", monitor.states_table), None, &[]).unwrap_or_else(|e| spi_error(e));
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

/// Runs `f` with TimeZone = UTC (a text time without an offset is UTC),
/// extra_float_digits = 1 (a number's category text is its shortest exact
/// form, as create_drift_monitor read the reference's), and the date,
/// interval and bytea output styles create_drift_monitor uses, whatever the
/// writer's session says: a row's bucket, segment and categories must not
/// depend on who writes or deletes it.
fn with_settings<R>(f: impl FnOnce() -> R) -> R {
    with_setting(c"TimeZone", c"UTC", || {
        with_setting(c"extra_float_digits", c"1", || {
            // Output functions of segment and category values (dates,
            // intervals, bytea) and text times follow these too.
            with_setting(c"DateStyle", c"ISO, YMD", || {
                with_setting(c"IntervalStyle", c"postgres", || with_setting(c"bytea_output", c"hex", f))
            })
        })
    })
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
        let monitor = DriftMonitor::load_as_owner(client, monitor);
        check_owner(&monitor, "rebuild");
        // SAFETY: reads the backend's isolation level.
        if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
            raise_coded(
                PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
                "rebuilding a drift monitor needs READ COMMITTED".into(),
                "its snapshot must be taken after its lock on the table; run it in a READ COMMITTED transaction",
            );
        }
        as_user(monitor.owner(), || {
            with_settings(|| {
                // Writers wait (SHARE) and no compaction runs (the monitor's
                // lock) while the states are recomputed; the statements below
                // then see every write committed before.
                client
                    .update(&format!("LOCK TABLE {} IN SHARE MODE", source_name(monitor.source)), None, &[])
                    .unwrap_or_else(|e| spi_error(e));
                client.update("SELECT pg_catalog.pg_advisory_xact_lock($1)", None, &[monitor.lock_id.into()]).unwrap_or_else(|e| spi_error(e));
                client.update(&format!("DELETE FROM {}", monitor.states_table), None, &[]).unwrap_or_else(|e| spi_error(e));
                let prepared = Prepared::new(client, monitor, true);
                let monitor = &prepared.monitor;
                let mut accumulator = Accumulator::new(&prepared);
                // SAFETY: within this SPI connection.
                unsafe { scan_table(client, monitor, &mut accumulator) };
                accumulator.flush(client);
                accumulator.rows
            })
        })
    })
}

/// Longest value, in bytes, a categorical column adds to its dictionary.
const MAX_CATEGORY_LENGTH: usize = 1024;

/// A progress NOTICE each this many rows of a backfill.
const PROGRESS_EVERY: u64 = 1_000_000;

/// Adds every row of the monitor's table to `accumulator`, by a cursor read
/// in batches.
///
/// # Safety
/// Within an SPI connection, as the monitor's owner.
unsafe fn scan_table(client: &mut SpiClient<'_>, monitor: &DriftMonitor, accumulator: &mut Accumulator<'_>) {
    let sql = CString::new(format!("SELECT * FROM {}", source_name(monitor.source))).expect("no NUL");
    // SAFETY: a cursor of this SPI connection, read in batches; each batch's
    // tuples are deformed with the batch's descriptor and freed after use.
    unsafe {
        let plan = pg_sys::SPI_prepare(sql.as_ptr(), 0, std::ptr::null_mut());
        if plan.is_null() {
            pgrx::error!("mlmon: could not read the drift monitor's table");
        }
        // Not read-only: a fresh snapshot, taken after the caller's locks (a
        // read-only cursor would use the calling statement's).
        let portal = pg_sys::SPI_cursor_open(std::ptr::null(), plan, std::ptr::null_mut(), std::ptr::null(), false);
        let (started, mut read, mut reported) = (std::time::Instant::now(), 0u64, 0u64);
        let operation = format!("drift monitor {}", monitor.name);
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
            read += count as u64;
            if read - reported >= PROGRESS_EVERY {
                report_progress(&operation, "backfill, rows read so far", read, started);
                reported = read;
            }
            pgrx::check_for_interrupts!();
        }
        pg_sys::SPI_cursor_close(portal);
        report_progress(&operation, "backfill done", read, started);
    }
}

/// `mlmon._drift_check_states(monitor)`: the drift monitor's missing or
/// disabled triggers, then each (bucket, segment, column) whose summed
/// counts differ from a recomputation from the table (O(rows)).
#[pg_extern(sql = false)]
fn drift_check_states(
    monitor: &str,
) -> TableIterator<
    'static,
    (
        name!(problem, String),
        name!(detail, Option<String>),
        name!(bucket, Option<TimestampWithTimeZone>),
        name!(segment, Option<String>),
        name!(column_name, Option<String>),
        name!(expected_n, Option<i64>),
        name!(counted_n, Option<i64>),
    ),
> {
    let rows = Spi::connect_mut(|client| {
        let monitor = DriftMonitor::load_as_owner(client, monitor);
        check_owner(&monitor, "check");
        as_user(monitor.owner(), || {
            with_settings(|| {
                let mut out = Vec::new();
                let triggers = "SELECT e.event, g.tgenabled::text FROM unnest(ARRAY['insert', 'update', 'delete', 'truncate']) e(event)
                                LEFT JOIN pg_catalog.pg_trigger g ON g.tgrelid = $1::oid AND g.tgname = 'mlmon_drift_' || $2 || '_' || e.event";
                let source = pg_sys::Oid::from(monitor.source);
                for row in client.select(triggers, None, &[source.into(), monitor.name.as_str().into()]).unwrap_or_else(|e| spi_error(e)) {
                    let event = row.get::<String>(1).ok().flatten().unwrap_or_default();
                    let problem = match row.get::<String>(2).ok().flatten().as_deref() {
                        None => "trigger missing",
                        Some("D") => "trigger disabled",
                        Some("R") => "trigger fires on replicas only",
                        _ => continue,
                    };
                    out.push((problem.to_owned(), Some(format!("{event} trigger of drift monitor {}", monitor.name)), None, None, None, None, None));
                }
                let prepared = Prepared::new(client, monitor, true);
                let monitor = &prepared.monitor;
                let mut accumulator = Accumulator::new(&prepared);
                accumulator.checking = true;
                // SAFETY: within this SPI connection, as the owner.
                unsafe { scan_table(client, monitor, &mut accumulator) };
                let mut expected: HashMap<(i64, String), DriftState> =
                    accumulator.states.drain(..).map(|(k, s)| (k, s)).collect();
                let sums = format!("SELECT bucket, segment::text, mlmon._drift_sum(state) FROM {} GROUP BY 1, 2", monitor.states_table);
                let mut counted: HashMap<(i64, String), DriftState> = HashMap::new();
                for row in client.select(&sums, None, &[]).unwrap_or_else(|e| spi_error(e)) {
                    let (Ok(Some(b)), Ok(Some(seg)), Ok(Some(state))) =
                        (row.get::<TimestampWithTimeZone>(1), row.get::<String>(2), row.get::<&[u8]>(3))
                    else {
                        continue;
                    };
                    let b: i64 = b.into();
                    // The segment as the write path spells it (jsonb's text form adds spaces).
                    let seg: Vec<Option<String>> = serde_json::from_str(&seg).unwrap_or_default();
                    let key = (b, serde_json::to_string(&seg).expect("strings serialize"));
                    counted.entry(key).or_default().add_encoded(state).or_raise();
                }
                let mut keys: Vec<(i64, String)> = expected.keys().chain(counted.keys()).cloned().collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let e = expected.remove(&key).unwrap_or_default();
                    let c = counted.remove(&key).unwrap_or_default();
                    for (i, column) in monitor.columns.iter().enumerate() {
                        let (ec, cc) = (e.columns.get(i), c.columns.get(i));
                        if counts_of(ec) != counts_of(cc) {
                            let n = |s: Option<&ColumnState>| s.map(|s| s.n() + s.nulls()).unwrap_or(0);
                            out.push((
                                "states differ".to_owned(),
                                None,
                                TimestampWithTimeZone::try_from(key.0).ok(),
                                Some(key.1.clone()),
                                Some(column.name.clone()),
                                Some(n(ec)),
                                Some(n(cc)),
                            ));
                        }
                    }
                }
                out
            })
        })
    });
    TableIterator::new(rows)
}

/// A column state's counts (not its sums), zero entries dropped, for comparison.
fn counts_of(state: Option<&ColumnState>) -> (Vec<i64>, Vec<(u32, i64)>, i64, i64) {
    match state {
        None => Default::default(),
        Some(ColumnState::Numeric(s)) => {
            let cells = if s.cells.iter().all(|&c| c == 0) { Vec::new() } else { s.cells.clone() };
            (cells, Vec::new(), s.nulls, s.infinite)
        }
        Some(ColumnState::Categorical(s)) => {
            let mut counts: Vec<(u32, i64)> = s.counts.iter().filter(|(_, n)| **n != 0).map(|(&i, &n)| (i, n)).collect();
            counts.sort_unstable();
            (Vec::new(), counts, s.nulls, s.other)
        }
    }
}

/// 42501 unless the current role is a member of the monitor's owner.
fn check_owner(monitor: &DriftMonitor, verb: &str) {
    if !is_member_of(monitor.owner()) {
        raise_coded(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be the owner of drift monitor {}", monitor.name),
            &format!("argument name: only the monitor's owner may {verb} it"),
        );
    }
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
        let monitor = DriftMonitor::load_as_owner(client, monitor);
        check_owner(&monitor, "compact");
        as_user(monitor.owner(), || compact(client, &monitor, wait))
    })
}
