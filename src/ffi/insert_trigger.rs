//! The native INSERT trigger of monitors with integer keys
//! (`mlmon._monitor_insert(monitor, fallback)`): an AFTER INSERT statement
//! trigger that counts the two statements where PL/pgSQL cost the most, and
//! hands every other statement to the monitor's PL/pgSQL trigger function
//! (`fallback`, by OID) with the same trigger data.
//! - Single rows (`one_row`): PL/pgSQL's call and expression set-up cost
//!   about a third of the trigger under many single-row writers.
//! - Bulk loads (`monitor_bulk`): reads the statement's transition table
//!   directly, where SQL over it cost more than the COPY itself (1M rows:
//!   grouping alone took 0.76x of the COPY's time, with deduplication 1.6x).
//!   Predictions are counted (`mlmon_core::bulk`) on a helper thread while
//!   this one reads them (`helper_thread`).

use std::ffi::CStr;
use std::hash::Hasher;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::varlena;

use mlmon_core::bulk::{Counter, PredictionRow};

use crate::monitor_bulk::{self, Actual, FastHasher, Monitor};

/// Statements of fewer rows take the usual path (`mlmon.bulk_min_rows`).
const DEFAULT_MIN_ROWS: i64 = 10_000;
/// Nor do statements of more rows (`mlmon.bulk_max_rows`): the bulk path
/// holds about 45 bytes a row in memory at its peak (the rows, 32 bytes, and
/// their chunks' encoded entries), 180 MB at this default. The usual path
/// spills to disk.
const DEFAULT_MAX_ROWS: i64 = 4_000_000;
/// Distinct labels or segments are turned into text one query each: a load
/// with more takes the usual path.
const MAX_DISTINCT: usize = 10_000;

/// An integer setting (a placeholder the user may SET), or its default.
fn setting(name: &CStr, default: i64) -> i64 {
    // SAFETY: GetConfigOption returns NULL or a string owned by the GUC machinery.
    unsafe {
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        if value.is_null() {
            return default;
        }
        CStr::from_ptr(value).to_str().ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
    }
}

/// Runs `f` as `user` (unless INVALID), with only pg_catalog on the search
/// path, as a SECURITY DEFINER function with `SET search_path = pg_catalog,
/// pg_temp` would (an error undoes both with the (sub)transaction).
///
/// The path is pushed as an override, not set: setting the search_path
/// setting and back made the writer's next statement recompute its path, and
/// the two cost 3% of a single-row INSERT.
pub(super) fn as_user<R>(user: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    // SAFETY: the calls save and restore the user as fmgr_security_definer
    // does; the override is popped before returning (or by the abort).
    unsafe {
        let (mut saved_user, mut context) = (pg_sys::Oid::INVALID, 0);
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut context);
        let mut catalog_only =
            pg_sys::OverrideSearchPath { schemas: std::ptr::null_mut(), addCatalog: true, addTemp: false, generation: 0 };
        pg_sys::PushOverrideSearchPath(&mut catalog_only);
        if user != pg_sys::Oid::INVALID {
            let restricted = (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION) as i32;
            pg_sys::SetUserIdAndSecContext(user, context | restricted);
        }
        let result = f();
        pg_sys::SetUserIdAndSecContext(saved_user, context);
        pg_sys::PopOverrideSearchPath();
        result
    }
}

/// Distinct values of a column (or of several, as one tuple) by their bytes,
/// each with a copy of its first occurrence.
///
/// A load asks it twice a row (label, segment). A value's identity is hashed
/// once and compared once with the identity stored under that hash; a single
/// column's value is its own identity, read where it lies. A map keyed by
/// built identities (copied, then compared two to four times a row) cost
/// 2-3% of a COPY.
#[derive(Default)]
struct Dictionary {
    /// Ids, found by the hash of their identity.
    ids: hashbrown::HashTable<u32>,
    /// The identity of each id: a single column's value bytes, or a tuple's
    /// null flags, lengths and bytes (`id_of_tuple`).
    identities: Vec<Vec<u8>>,
    /// The id of a single column's NULL.
    null_id: Option<u32>,
    /// The first few single values of at most 8 bytes, as (length, bytes as
    /// a word, id), also in `ids`: labels and segments mostly are such, and
    /// are found here by comparing registers instead of hashing bytes.
    short: Vec<(usize, u64, u32)>,
    values: Vec<Vec<(pg_sys::Datum, bool)>>,
    /// The tuple identity being built, kept to spare an allocation per row.
    identity: Vec<u8>,
}

/// How many values `Dictionary::short` holds.
const SHORT_VALUES: usize = 8;

/// Up to 8 bytes as a word.
fn word(bytes: &[u8]) -> u64 {
    let mut padded = [0u8; 8];
    padded[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(padded)
}

fn identity_hash(identity: &[u8]) -> u64 {
    let mut hasher = FastHasher::default();
    hasher.write(identity);
    hasher.finish()
}

impl Dictionary {
    fn len(&self) -> usize {
        self.values.len()
    }

    /// The id of one column's value. A dictionary takes single values or
    /// tuples (`id_of_tuple`), never both.
    ///
    /// SAFETY: `value` is valid for `attribute` unless `null`.
    unsafe fn id_of_value(&mut self, value: pg_sys::Datum, null: bool, attribute: &pg_sys::FormData_pg_attribute) -> u32 {
        if null {
            if let Some(id) = self.null_id {
                return id;
            }
            // Not findable by identity: an empty value's identity is empty too.
            let id = self.add(Vec::new(), None, vec![(value, true)]);
            self.null_id = Some(id);
            return id;
        }
        let by_value = value.value().to_le_bytes();
        // SAFETY: the caller's promise.
        let identity = if attribute.attbyval { &by_value[..] } else { unsafe { value_bytes(value, attribute) } };
        let short = (identity.len() <= 8).then(|| (identity.len(), word(identity)));
        if let Some(short) = short {
            if let Some(&(_, _, id)) = self.short.iter().find(|&&(length, word, _)| (length, word) == short) {
                return id;
            }
        }
        let hash = identity_hash(identity);
        let identities = &self.identities;
        if let Some(&id) = self.ids.find(hash, |&id| identities[id as usize] == identity) {
            return id;
        }
        // SAFETY: the caller's promise.
        let copy = unsafe { copy_value(value, attribute) };
        let id = self.add(identity.to_vec(), Some(hash), vec![(copy, false)]);
        if let Some((length, word)) = short.filter(|_| self.short.len() < SHORT_VALUES) {
            self.short.push((length, word, id));
        }
        id
    }

    /// The id of a tuple of values.
    ///
    /// SAFETY: each value is valid for its attribute unless NULL.
    unsafe fn id_of_tuple<'a>(&mut self, values: impl Iterator<Item = (pg_sys::Datum, bool, &'a pg_sys::FormData_pg_attribute)> + Clone) -> u32 {
        let identity = &mut self.identity;
        identity.clear();
        for (value, null, attribute) in values.clone() {
            identity.push(u8::from(null));
            if null {
                continue;
            }
            if attribute.attbyval {
                identity.extend_from_slice(&value.value().to_le_bytes());
            } else {
                let bytes = unsafe { value_bytes(value, attribute) };
                identity.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                identity.extend_from_slice(bytes);
            }
        }
        let hash = identity_hash(identity);
        let identities = &self.identities;
        if let Some(&id) = self.ids.find(hash, |&id| identities[id as usize] == *identity) {
            return id;
        }
        let identity = identity.clone();
        // SAFETY: the caller's promise.
        let copies = values.map(|(value, null, a)| (if null { value } else { unsafe { copy_value(value, a) } }, null)).collect();
        self.add(identity, Some(hash), copies)
    }

    /// A new id for `values`, found by `identity` in `ids` when `hash` (of
    /// the identity) is given.
    fn add(&mut self, identity: Vec<u8>, hash: Option<u64>, values: Vec<(pg_sys::Datum, bool)>) -> u32 {
        self.values.push(values);
        self.identities.push(identity);
        let id = (self.values.len() - 1) as u32;
        if let Some(hash) = hash {
            let identities = &self.identities;
            self.ids.insert_unique(hash, id, |&id| identity_hash(&identities[id as usize]));
        }
        id
    }
}

/// A copy of a non-NULL value that outlives the row it was read from.
///
/// SAFETY: `value` is a valid value of `attribute`'s type.
unsafe fn copy_value(value: pg_sys::Datum, attribute: &pg_sys::FormData_pg_attribute) -> pg_sys::Datum {
    if attribute.attbyval {
        value
    } else {
        // SAFETY: the caller's promise.
        unsafe { super::training_set::copy_by_reference(value, attribute.attlen) }
    }
}

/// The bytes that identify a by-reference value: a varlena's detoasted
/// contents, a fixed-length value's bytes.
///
/// SAFETY: `value` is a valid, non-NULL value of `attribute`'s type.
unsafe fn value_bytes<'a>(value: pg_sys::Datum, attribute: &pg_sys::FormData_pg_attribute) -> &'a [u8] {
    unsafe {
        if attribute.attlen == -1 {
            let pointer = value.cast_mut_ptr::<pg_sys::varlena>();
            // A plain varlena (short or 4-byte header, uncompressed, inline),
            // as a load's values almost always are, is read where it lies:
            // the call below costs a guarded call into PostgreSQL a row.
            let plain = if varlena::varatt_is_1b_e(pointer) || varlena::varatt_is_4b_c(pointer) {
                pg_sys::pg_detoast_datum_packed(pointer)
            } else {
                pointer
            };
            return varlena::varlena_to_byte_slice(plain);
        }
        super::training_set::datum_bytes(value, attribute.attlen)
    }
}

/// An attribute of the trigger's relation by name.
pub(super) struct Attributes(pub(super) pg_sys::TupleDesc);

impl Attributes {
    pub(super) fn find(&self, name: &str) -> Option<(usize, &pg_sys::FormData_pg_attribute)> {
        // SAFETY: the relation's tuple descriptor outlives the trigger call.
        unsafe {
            let desc = &*self.0;
            let attributes = desc.attrs.as_slice(desc.natts as usize);
            attributes.iter().enumerate().find(|(_, a)| {
                !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()).to_bytes() == name.as_bytes()
            })
        }
    }
}

pub(super) fn integer(value: pg_sys::Datum, type_oid: pg_sys::Oid) -> i64 {
    match type_oid {
        pg_sys::INT2OID => value.value() as i16 as i64,
        pg_sys::INT4OID => value.value() as i32 as i64,
        _ => value.value() as i64,
    }
}

fn is_integer(type_oid: pg_sys::Oid) -> bool {
    matches!(type_oid, pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID)
}

/// Calls `row` with the values of every row of a transition table.
///
/// SAFETY: `table` is the trigger's transition table of rows of `desc`.
pub(super) unsafe fn each_row(table: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc, mut row: impl FnMut(&[pg_sys::Datum], &[bool]) -> bool) -> bool {
    unsafe {
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        // A read pointer of our own, as a scan of the transition table in SQL
        // takes: the PL/pgSQL trigger reads the table after us.
        let pointer = pg_sys::tuplestore_alloc_read_pointer(table, pg_sys::EXEC_FLAG_REWIND as i32);
        pg_sys::tuplestore_select_read_pointer(table, pointer);
        pg_sys::tuplestore_rescan(table);
        let width = (*desc).natts as usize;
        let mut complete = true;
        let mut read = 0usize;
        while pg_sys::tuplestore_gettupleslot(table, true, false, slot) {
            // A load of millions of rows can be cancelled while it is read.
            read += 1;
            if read.is_multiple_of(65_536) {
                pgrx::check_for_interrupts!();
            }
            pg_sys::slot_getallattrs(slot);
            let values = std::slice::from_raw_parts((*slot).tts_values, width);
            let nulls = std::slice::from_raw_parts((*slot).tts_isnull, width);
            if !row(values, nulls) {
                complete = false;
                break;
            }
        }
        pg_sys::tuplestore_select_read_pointer(table, 0);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        complete
    }
}

/// `mlmon._monitor_insert(monitor, fallback)`: AFTER INSERT FOR EACH
/// STATEMENT trigger with a NEW TABLE; `fallback` is the OID of the
/// monitor's PL/pgSQL trigger function for the table.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn monitor_insert(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: PostgreSQL's trigger manager passes TriggerData as the context.
    unsafe {
        let data = (*fcinfo).context.cast::<pg_sys::TriggerData>();
        if data.is_null() || (*data).type_ != pg_sys::NodeTag::T_TriggerData {
            pgrx::error!("mlmon._monitor_insert may only be called as a trigger");
        }
        let data = &*data;
        let event = data.tg_event;
        let table = data.tg_newtable;
        let trigger = &*data.tg_trigger;
        let argument = |i: usize| CStr::from_ptr(*trigger.tgargs.add(i)).to_string_lossy().into_owned();
        let fallback = (trigger.tgnargs == 2).then(|| argument(1).parse::<u32>().ok()).flatten();
        let (Some(fallback), false, true, 0) = (
            fallback,
            table.is_null(),
            event & pg_sys::TRIGGER_EVENT_OPMASK == pg_sys::TRIGGER_EVENT_INSERT,
            event & pg_sys::TRIGGER_EVENT_ROW,
        ) else {
            pgrx::error!("mlmon._monitor_insert may only be called as a monitor's INSERT statement trigger");
        };
        // Both native paths take shortcuts that hold only for a snapshot
        // taken after every committed bulk load (see _enter_sql).
        if pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32 {
            let rows = pg_sys::tuplestore_tuple_count(table);
            let handled = if rows == 1 {
                super::one_row::insert(data, &argument(0))
            } else if (setting(c"mlmon.bulk_min_rows", DEFAULT_MIN_ROWS)..=setting(c"mlmon.bulk_max_rows", DEFAULT_MAX_ROWS))
                .contains(&rows)
            {
                bulk_insert(data, &argument(0))
            } else {
                false
            };
            if handled {
                return pg_sys::Datum::from(0);
            }
        }
        call_trigger_function(pg_sys::Oid::from(fallback), fcinfo)
    }
}

/// Calls the trigger function `function` as the trigger manager would have,
/// with the trigger data of `fcinfo`.
///
/// SAFETY: `fcinfo` is a trigger call's.
unsafe fn call_trigger_function(function: pg_sys::Oid, fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: the FmgrInfo and call info live in the trigger call's memory
    // context; the call info has no arguments, as a trigger call's.
    unsafe {
        let flinfo = pg_sys::palloc0(std::mem::size_of::<pg_sys::FmgrInfo>()).cast::<pg_sys::FmgrInfo>();
        pg_sys::fmgr_info(function, flinfo);
        let call = pg_sys::palloc0(std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>()).cast::<pg_sys::FunctionCallInfoBaseData>();
        (*call).flinfo = flinfo;
        (*call).context = (*fcinfo).context;
        let Some(function_address) = (*flinfo).fn_addr else {
            pgrx::error!("mlmon: trigger function {} has no address", function.to_u32());
        };
        pg_sys::ffi::pg_guard_ffi_boundary(|| function_address(call))
    }
}

/// The bulk path: whether it counted the statement.
///
/// SAFETY: `data` is an INSERT statement trigger's, with a NEW TABLE.
unsafe fn bulk_insert(data: &pg_sys::TriggerData, name: &str) -> bool {
    // SAFETY: the caller's promise.
    unsafe {
        let relation = &*data.tg_relation;
        let Some(monitor) = as_user(pg_sys::Oid::INVALID, || Spi::connect(|c| Monitor::load(c, name))) else {
            return false;
        };
        let attributes = Attributes(relation.rd_att);
        if monitor.predictions == monitor.outcomes || !monitor.integer_key {
            false
        } else if relation.rd_id == monitor.predictions {
            bulk_predictions(&monitor, &attributes, data.tg_newtable)
        } else if relation.rd_id == monitor.outcomes {
            bulk_outcomes(&monitor, &attributes, data.tg_newtable)
        } else {
            false
        }
    }
}

/// SAFETY: `table` holds rows of the predictions table described by `attributes`.
unsafe fn bulk_predictions(monitor: &Monitor, attributes: &Attributes, table: *mut pg_sys::Tuplestorestate) -> bool {
    let column = |name: &str| attributes.find(name);
    let (Some(key), Some(at), Some(label)) =
        (column(&monitor.key_column), column(&monitor.predicted_at_column), column(&monitor.predicted_column))
    else {
        return false;
    };
    let segments: Option<Vec<_>> = monitor.segment_by.iter().map(|c| column(c)).collect();
    let weight = monitor.weight_column.as_deref().map(column);
    let (Some(segments), Some(weight)) = (segments, weight.map_or(Some(None), |w| w.map(Some))) else {
        return false;
    };
    if !is_integer(key.1.atttypid)
        || at.1.atttypid != pg_sys::TIMESTAMPTZOID
        || weight.is_some_and(|w| w.1.atttypid != pg_sys::FLOAT8OID)
    {
        return false;
    }
    let mut labels = Dictionary::default();
    let mut segment_values = Dictionary::default();
    // SAFETY: the caller's promise.
    let expected_rows = unsafe { pg_sys::tuplestore_tuple_count(table) } as usize;
    let counter = Counter::new(monitor.first, monitor.buckets, monitor.actual_column.is_none(), expected_rows);
    // The rows are counted on a helper thread as they are read here.
    let (complete, counted) = super::helper_thread::pipelined(
        move |batches| {
            let mut counter = counter;
            for batch in batches {
                counter.push(&batch);
            }
            counter.finish()
        },
        // SAFETY: the caller's promise; every attribute index comes from its descriptor.
        |rows| unsafe {
            each_row(table, attributes.0, |values, nulls| {
                if nulls[key.0] {
                    return true;
                }
                let mut countable = !nulls[at.0] && !nulls[label.0];
                let mut w = 1.0;
                if let Some((i, _)) = weight {
                    countable &= !nulls[i];
                    if countable {
                        w = f64::from_bits(values[i].value() as u64);
                        if !(w.is_finite() && w >= 0.0) {
                            return false; // the usual path raises the proper error
                        }
                    }
                }
                if labels.len() > MAX_DISTINCT || segment_values.len() > MAX_DISTINCT {
                    return false;
                }
                let (predicted, segment) = if countable {
                    let segment = match segments.as_slice() {
                        [(i, a)] => segment_values.id_of_value(values[*i], nulls[*i], a),
                        _ => segment_values.id_of_tuple(segments.iter().map(|&(i, a)| (values[i], nulls[i], a))),
                    };
                    (labels.id_of_value(values[label.0], false, label.1), segment)
                } else {
                    (PredictionRow::NOT_COUNTED, 0)
                };
                rows.push(PredictionRow {
                    key: integer(values[key.0], key.1.atttypid),
                    at: values[at.0].value() as i64,
                    weight: w,
                    predicted,
                    segment,
                });
                true
            })
        },
    );
    let (true, Some(counted)) = (complete, counted) else {
        return false;
    };
    as_user(monitor.owner, || {
        let predicted = texts(&labels, "SELECT $1::text", &[], &[label.1.atttypid]);
        let names: Vec<&str> = monitor.segment_by.iter().map(String::as_str).collect();
        let segment_sql = if names.is_empty() {
            "SELECT '{}'::text".to_owned()
        } else {
            let pairs: Vec<String> = (0..names.len()).map(|i| format!("$1[{}], ${}", i + 1, i + 2)).collect();
            format!("SELECT jsonb_build_object({})::text", pairs.join(", "))
        };
        let types: Vec<pg_sys::Oid> = segments.iter().map(|s| s.1.atttypid).collect();
        let segment_texts = texts(&segment_values, &segment_sql, &names, &types);
        monitor_bulk::insert_predictions(monitor, counted, &predicted, &segment_texts)
    })
}

/// The text of each dictionary value, by a query over it as parameters of
/// `types`, after `names` as a text[] first parameter when there are any.
fn texts(dictionary: &Dictionary, sql: &str, names: &[&str], types: &[pg_sys::Oid]) -> Vec<String> {
    Spi::connect(|client| {
        dictionary
            .values
            .iter()
            .map(|values| {
                let mut args: Vec<DatumWithOid> = Vec::new();
                if !names.is_empty() {
                    args.push(names.to_vec().into());
                }
                for (&(value, null), &type_oid) in values.iter().zip(types) {
                    // SAFETY: the value is a copy of a value of this type.
                    args.push(if null { DatumWithOid::null_oid(type_oid) } else { unsafe { DatumWithOid::new(value, type_oid) } });
                }
                let rows = client.select(sql, Some(1), &args).unwrap_or_else(|e| monitor_bulk::spi_error(e));
                rows.first().get::<String>(1).ok().flatten().unwrap_or_default()
            })
            .collect()
    })
}

/// SAFETY: `table` holds rows of the outcomes table described by `attributes`.
unsafe fn bulk_outcomes(monitor: &Monitor, attributes: &Attributes, table: *mut pg_sys::Tuplestorestate) -> bool {
    let Some(key) = attributes.find(&monitor.outcome_key_column) else {
        return false;
    };
    let actual = match monitor.actual_column.as_deref() {
        None => None,
        Some(name) => match attributes.find(name) {
            Some(a) if monitor.label_kind == "binary" && a.1.atttypid == pg_sys::BOOLOID => Some((a, false)),
            Some(a) if monitor.label_kind == "integer" && is_integer(a.1.atttypid) => Some((a, true)),
            _ => return false,
        },
    };
    if !is_integer(key.1.atttypid) {
        return false;
    }
    let mut rows: Vec<(i64, Actual)> = Vec::new();
    // SAFETY: the caller's promise; every attribute index comes from its descriptor.
    unsafe {
        each_row(table, attributes.0, |values, nulls| {
            if nulls[key.0] {
                return true;
            }
            let value = match actual {
                None => Actual::Present,
                Some(((i, _), false)) => Actual::Bool((!nulls[i]).then(|| values[i].value() != 0)),
                Some(((i, a), true)) => Actual::Integer((!nulls[i]).then(|| integer(values[i], a.atttypid))),
            };
            rows.push((integer(values[key.0], key.1.atttypid), value));
            true
        });
    }
    // One combined label per key, in key order (a load in key order is sorted already).
    if !rows.windows(2).all(|w| w[0].0 <= w[1].0) {
        rows.sort_by_key(|&(key, _)| key);
    }
    let mut outcomes: Vec<(i64, Actual)> = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        match outcomes.last_mut() {
            Some(last) if last.0 == key => last.1 = last.1.combine(value),
            _ => outcomes.push((key, value)),
        }
    }
    as_user(monitor.owner, || monitor_bulk::insert_outcomes(monitor, &outcomes))
}

/// Takes a monitor's bulk lock in `mode` until the transaction ends, as
/// pg_advisory_xact_lock[_shared](bigint) would (its SET_LOCKTAG_INT64 tag);
/// with `wait` false, only if no other transaction holds it. Returns whether
/// it was taken.
fn bulk_lock(lock: i64, mode: u32, wait: bool) -> bool {
    let tag = pg_sys::LOCKTAG {
        // SAFETY: MyDatabaseId is set for the whole life of a backend.
        locktag_field1: unsafe { pg_sys::MyDatabaseId }.to_u32(),
        locktag_field2: ((lock as u64) >> 32) as u32,
        locktag_field3: lock as u64 as u32,
        locktag_field4: 1,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    };
    // SAFETY: a transaction-level lock on a valid tag.
    let result = unsafe { pg_sys::LockAcquire(&tag, mode as pg_sys::LOCKMODE, false, !wait) };
    result != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL
}

pub(super) fn lock_shared(lock: i64) {
    bulk_lock(lock, pg_sys::ShareLock, true);
}

/// The bulk lock exclusively, without waiting (pg_try_advisory_xact_lock).
pub(crate) fn try_bulk_lock(lock: i64) -> bool {
    bulk_lock(lock, pg_sys::ExclusiveLock, false)
}

/// `mlmon._monitor_enter(lock)`: BEFORE INSERT OR UPDATE OR DELETE FOR EACH
/// STATEMENT trigger that takes the monitor's bulk lock shared before the
/// statement changes a row. Taken only after the change (in the AFTER
/// trigger), a writer could hold the row lock another transaction's bulk
/// load then waits for, while itself waiting for that load's lock.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn monitor_enter(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: PostgreSQL's trigger manager passes TriggerData as the context.
    unsafe {
        let data = (*fcinfo).context.cast::<pg_sys::TriggerData>();
        if data.is_null() || (*data).type_ != pg_sys::NodeTag::T_TriggerData || (*(*data).tg_trigger).tgnargs != 1 {
            pgrx::error!("mlmon._monitor_enter may only be called as a monitor's trigger");
        }
        let argument = CStr::from_ptr(*(*(*data).tg_trigger).tgargs).to_string_lossy();
        let Ok(lock) = argument.parse::<i64>() else {
            pgrx::error!("mlmon._monitor_enter: bad lock argument {argument:?}");
        };
        lock_shared(lock);
        pg_sys::Datum::from(0)
    }
}

/// `mlmon._bulk_enter(lock bigint, claims oid) RETURNS boolean`: takes a
/// monitor's bulk lock shared (until the transaction ends) and tells whether
/// its claims table may hold chunks (has pages). Every trigger call but a
/// bulk load's runs it first, as a PL/pgSQL expression: a query there cost a
/// single-row INSERT an executor start-up more.
#[pg_extern(sql = false)]
fn bulk_enter(lock: i64, claims: pg_sys::Oid) -> bool {
    lock_shared(lock);
    has_pages(claims)
}

/// Whether a relation has pages (a claims table may hold chunks).
fn has_pages(relation: pg_sys::Oid) -> bool {
    // SAFETY: the relation is opened and closed with a lock, as any reader of
    // its size does.
    unsafe {
        let relation = pg_sys::relation_open(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let blocks = pg_sys::RelationGetNumberOfBlocksInFork(relation, pg_sys::ForkNumber::MAIN_FORKNUM);
        pg_sys::relation_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        blocks > 0
    }
}
