//! The statement path's reading of a statement's transition tables: the
//! rows of predictions, counted on a helper thread while they are read; of
//! outcomes, combined per key; or only the keys. A statement this path
//! cannot read returns `None` and goes the usual way.

#![allow(unsafe_code)]

use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use mlmon_core::monitors::actual::Actual;
use mlmon_core::monitors::bulk::{Counted, Counter, PredictionRow};

use super::dictionary::Dictionary;
use crate::monitors::catalog::{spi_error, Monitor};
use crate::pg::helper_thread;
use crate::pg::session::as_user;
use crate::pg::tuples::{each_row, integer, is_integer, value_bytes, Attributes};

/// Distinct labels or segments are turned into text one query each: a load
/// with more takes the usual path.
const MAX_DISTINCT: usize = 10_000;

/// Predictions rows as counted (`bulk::Counter`), with the texts of the
/// counter's label and segment ids.
pub struct CountedPredictions {
    pub counted: Counted,
    pub labels: Vec<String>,
    pub segments: Vec<String>,
}

/// How a statement's keys become the `i64`s the statement path works with:
/// integer keys are themselves; uuid and text keys get ids in order of first
/// appearance, and their texts are kept for the SQL that reads and writes
/// keys rows.
pub enum KeyIds {
    Integer,
    /// SipHash, not `FastMap`: FxHash leaves the low bits, which pick the
    /// bucket, to the first bytes of a key's last word, the same for keys
    /// like 'evt-000000123456' (a profile: 60% of a DELETE in memcmp).
    Text { ids: HashMap<String, i64>, texts: Vec<String> },
}

impl KeyIds {
    pub fn for_monitor(monitor: &Monitor) -> Option<KeyIds> {
        if monitor.integer_key {
            Some(KeyIds::Integer)
        } else if monitor.text_key && database_is_utf8() {
            Some(KeyIds::Text { ids: HashMap::new(), texts: Vec::new() })
        } else {
            None
        }
    }

    /// Whether this reader takes keys of type `type_oid`.
    fn takes(&self, type_oid: pg_sys::Oid) -> bool {
        match self {
            KeyIds::Integer => is_integer(type_oid),
            KeyIds::Text { .. } => matches!(type_oid, pg_sys::UUIDOID | pg_sys::TEXTOID | pg_sys::VARCHAROID),
        }
    }

    /// The id of a non-NULL key value.
    ///
    /// SAFETY: `value` is a valid, non-NULL value of `attribute`'s type, one `takes`.
    unsafe fn id(&mut self, value: pg_sys::Datum, attribute: &pg_sys::FormData_pg_attribute) -> i64 {
        match self {
            KeyIds::Integer => integer(value, attribute.atttypid),
            KeyIds::Text { ids, texts } => {
                // SAFETY: the caller's promise.
                let bytes = unsafe { value_bytes(value, attribute) };
                let text = if attribute.atttypid == pg_sys::UUIDOID {
                    uuid_text(bytes)
                } else {
                    // UTF-8 (checked by `for_monitor`), as the server stores it.
                    String::from_utf8_lossy(bytes).into_owned()
                };
                if let Some(&id) = ids.get(&text) {
                    return id;
                }
                let id = texts.len() as i64;
                ids.insert(text.clone(), id);
                texts.push(text);
                id
            }
        }
    }

    /// The id of a text key as SQL gives it (`key::text`).
    pub fn id_of_text(&self, text: &str) -> Option<i64> {
        match self {
            KeyIds::Integer => unreachable!("integer keys are their own ids"),
            KeyIds::Text { ids, .. } => ids.get(text).copied(),
        }
    }

    /// The text of a key id (text keys).
    pub fn text(&self, id: i64) -> &str {
        match self {
            KeyIds::Integer => unreachable!("integer keys have no text"),
            KeyIds::Text { texts, .. } => &texts[id as usize],
        }
    }
}

fn database_is_utf8() -> bool {
    // SAFETY: reads the database's encoding, set for the session's life.
    unsafe { pg_sys::GetDatabaseEncoding() == pg_sys::pg_enc::PG_UTF8 as i32 }
}

/// A uuid's 16 bytes as uuid_out writes them.
fn uuid_text(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(36);
    for (i, &byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(HEX[usize::from(byte >> 4)] as char);
        text.push(HEX[usize::from(byte & 15)] as char);
    }
    text
}

/// The distinct non-NULL keys (ids) of a transition table's column
/// `column`, ascending; `None` if the column is missing or of a type `ids`
/// does not take.
///
/// SAFETY: `table` holds rows described by `attributes`.
pub unsafe fn read_keys(attributes: &Attributes, column: &str, table: *mut pg_sys::Tuplestorestate, ids: &mut KeyIds) -> Option<Vec<i64>> {
    let (index, attribute) = attributes.find(column)?;
    if !ids.takes(attribute.atttypid) {
        return None;
    }
    let mut keys = Vec::new();
    // SAFETY: the caller's promise; the index comes from its descriptor.
    unsafe {
        each_row(table, attributes.0, |values, nulls| {
            if !nulls[index] {
                keys.push(ids.id(values[index], attribute));
            }
            true
        });
    }
    keys.sort_unstable();
    keys.dedup();
    Some(keys)
}

/// The predictions rows of `table`, counted.
///
/// SAFETY: `table` holds rows of the predictions table described by `attributes`.
pub unsafe fn read_predictions(
    monitor: &Monitor,
    attributes: &Attributes,
    table: *mut pg_sys::Tuplestorestate,
    ids: &mut KeyIds,
) -> Option<CountedPredictions> {
    let column = |name: &str| attributes.find(name);
    let (Some(key), Some(at), Some(label)) =
        (column(&monitor.key_column), column(&monitor.predicted_at_column), column(&monitor.predicted_column))
    else {
        return None;
    };
    let segments: Option<Vec<_>> = monitor.segment_by.iter().map(|c| column(c)).collect();
    let weight = monitor.weight_column.as_deref().map(column);
    let (Some(segments), Some(weight)) = (segments, weight.map_or(Some(None), |w| w.map(Some))) else {
        return None;
    };
    if !ids.takes(key.1.atttypid)
        || at.1.atttypid != pg_sys::TIMESTAMPTZOID
        || weight.is_some_and(|w| w.1.atttypid != pg_sys::FLOAT8OID)
    {
        return None;
    }
    let mut labels = Dictionary::default();
    let mut segment_values = Dictionary::default();
    // SAFETY: the caller's promise.
    let expected_rows = unsafe { pg_sys::tuplestore_tuple_count(table) } as usize;
    let counter = Counter::new(monitor.first, monitor.buckets, monitor.actual_column.is_none(), expected_rows);
    // The rows are counted on a helper thread as they are read here.
    let (complete, counted) = helper_thread::pipelined(
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
                    key: ids.id(values[key.0], key.1),
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
        return None;
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
        let segments = texts(&segment_values, &segment_sql, &names, &types);
        Some(CountedPredictions { counted, labels: predicted, segments })
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
                let rows = client.select(sql, Some(1), &args).unwrap_or_else(|e| spi_error(e));
                rows.first().get::<String>(1).ok().flatten().unwrap_or_default()
            })
            .collect()
    })
}

/// Each key's new outcomes of `table`, combined, ascending by key.
///
/// SAFETY: `table` holds rows of the outcomes table described by `attributes`.
pub unsafe fn read_outcomes(
    monitor: &Monitor,
    attributes: &Attributes,
    table: *mut pg_sys::Tuplestorestate,
    ids: &mut KeyIds,
) -> Option<Vec<(i64, Actual)>> {
    let key = attributes.find(&monitor.outcome_key_column)?;
    let actual = match monitor.actual_column.as_deref() {
        None => None,
        Some(name) => match attributes.find(name) {
            Some(a) if monitor.label_kind == "binary" && a.1.atttypid == pg_sys::BOOLOID => Some((a, false)),
            Some(a) if monitor.label_kind == "integer" && is_integer(a.1.atttypid) => Some((a, true)),
            _ => return None,
        },
    };
    if !ids.takes(key.1.atttypid) {
        return None;
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
            rows.push((ids.id(values[key.0], key.1), value));
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
    Some(outcomes)
}
