//! The statement path: a large statement of any kind on a monitored table,
//! counted by restating the keys it touched (see the module's comment in
//! `mod.rs` for when it may run, `mlmon_core::monitors::restate` for the
//! rules). Returns false, before writing anything, for a statement it cannot
//! take: the PL/pgSQL trigger function then runs.

#![allow(unsafe_code)]

use std::collections::HashMap;

use mlmon_core::monitors::actual::Actual;
use mlmon_core::monitors::bulk::Text;
use mlmon_core::monitors::claims::Chunk;
use mlmon_core::monitors::restate::{
    add_change, chunk_states, resolve, rewrite_chunks, Cells, Outcomes, Predictions, Resolution, State, StoredChunk, Texts,
};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::read::{read_keys, read_outcomes, read_predictions, CountedPredictions, KeyIds};
use super::write_new_predictions;
use crate::monitors::catalog::{spi_error, Monitor};
use crate::monitors::rollup::{write_deltas, Delta};
use crate::pg::errors::raise;
use crate::pg::session::as_user;
use crate::pg::tuples::Attributes;

/// A touched key and what the statement says of it.
type Touched = (i64, Predictions, Outcomes);

/// The statement path; whether it counted the statement.
///
/// SAFETY: `data` is a statement trigger's, with the transition tables of its event.
pub unsafe fn write_statement(data: &pg_sys::TriggerData, name: &str) -> bool {
    // SAFETY: the caller's promise.
    unsafe {
        let relation = &*data.tg_relation;
        let Some(monitor) = as_user(pg_sys::Oid::INVALID, || Spi::connect(|c| Monitor::load(c, name))) else {
            return false;
        };
        if monitor.predictions == monitor.outcomes {
            return false;
        }
        let Some(mut ids) = KeyIds::for_monitor(&monitor) else {
            return false;
        };
        let attributes = Attributes(relation.rd_att);
        let event = data.tg_event & pg_sys::TRIGGER_EVENT_OPMASK;
        let on_predictions = relation.rd_id == monitor.predictions;
        if !on_predictions && relation.rd_id != monitor.outcomes {
            return false;
        }
        // uuid and text keys keep their state in keys rows, which the
        // statement path reads and writes one statement each: against the
        // PL/pgSQL claims that pays for UPDATE and DELETE of predictions
        // (bench/RESULTS.md: DELETE of a day uuid 38x -> 19x, text 64x ->
        // 16x; UPDATE of labels 4.8x -> 3.0x), not for the rest (uuid: a
        // COPY of new keys 2.4x -> 3.1x, late outcomes 3.3x -> 6.5x), which
        // PL/pgSQL keeps.
        if matches!(ids, KeyIds::Text { .. }) && !(on_predictions && event != pg_sys::TRIGGER_EVENT_INSERT) {
            return false;
        }
        let key_column = if on_predictions { &monitor.key_column } else { &monitor.outcome_key_column };
        let old_keys = if event == pg_sys::TRIGGER_EVENT_INSERT {
            Vec::new()
        } else {
            match read_keys(&attributes, key_column, data.tg_oldtable, &mut ids) {
                Some(keys) => keys,
                None => return false,
            }
        };
        let has_new = event != pg_sys::TRIGGER_EVENT_DELETE;
        if on_predictions {
            let new = if has_new {
                match read_predictions(&monitor, &attributes, data.tg_newtable, &mut ids) {
                    Some(read) => Some(read),
                    None => return false,
                }
            } else {
                None
            };
            as_user(monitor.owner, || restate_predictions(&monitor, &ids, event == pg_sys::TRIGGER_EVENT_INSERT, new, &old_keys))
        } else {
            let new = if has_new {
                match read_outcomes(&monitor, &attributes, data.tg_newtable, &mut ids) {
                    Some(read) => read,
                    None => return false,
                }
            } else {
                Vec::new()
            };
            as_user(monitor.owner, || restate_outcomes(&monitor, &ids, event == pg_sys::TRIGGER_EVENT_INSERT, &new, &old_keys))
        }
    }
}

fn restate_predictions(monitor: &Monitor, ids: &KeyIds, insert: bool, new: Option<CountedPredictions>, old_keys: &[i64]) -> bool {
    Spi::connect_mut(|client| {
        if !monitor.try_bulk_lock() {
            return false;
        }
        // A load of integer keys with no state anywhere in their range: every
        // key is new, written as counted.
        if let (true, Some(read), KeyIds::Integer) = (insert, &new, ids) {
            let (lo, hi) = (read.counted.lo, read.counted.hi);
            if !monitor.any_keys_row(client, lo, hi) && !monitor.any_chunk(client, lo, hi) {
                write_new_predictions(monitor, client, new.expect("checked above"));
                monitor.record_bulk_load(client);
                return true;
            }
        }
        let mut texts = Texts::default();
        let mut said = match &new {
            Some(read) => predictions_by_key(read, &mut texts),
            None => Vec::new(),
        };
        // Keys whose rows the statement removed and gave no new row.
        let before = said.len();
        for &key in old_keys {
            if said[..before].binary_search_by_key(&key, |&(k, _)| k).is_err() {
                said.push((key, Predictions::Gone));
            }
        }
        said.sort_unstable_by_key(|&(k, _)| k);
        let touched: Vec<Touched> = said.into_iter().map(|(k, p)| (k, p, Outcomes::Unchanged)).collect();
        restate(monitor, ids, client, &mut texts, touched, monitor.unique_key);
        true
    })
}

fn restate_outcomes(monitor: &Monitor, ids: &KeyIds, insert: bool, new: &[(i64, Actual)], old_keys: &[i64]) -> bool {
    Spi::connect_mut(|client| {
        if !monitor.try_bulk_lock() {
            return false;
        }
        let mut touched: Vec<Touched> = new
            .iter()
            .map(|&(key, actual)| {
                let outcomes = if insert { Outcomes::Added(actual) } else { Outcomes::Exactly(Some(actual)) };
                (key, Predictions::Unchanged, outcomes)
            })
            .collect();
        for &key in old_keys {
            if new.binary_search_by_key(&key, |&(k, _)| k).is_err() {
                touched.push((key, Predictions::Unchanged, Outcomes::Exactly(None)));
            }
        }
        touched.sort_unstable_by_key(|t| t.0);
        // Added outcomes combine with what is stored whatever else exists.
        restate(monitor, ids, client, &mut Texts::default(), touched, insert || monitor.unique_outcome_key);
        true
    })
}

/// Each key's best new row, from the counted load's encoded runs.
fn predictions_by_key(read: &CountedPredictions, texts: &mut Texts) -> Vec<(i64, Predictions)> {
    let text = |t: Text| match t {
        Text::Label(l) => read.labels[l as usize].as_str(),
        Text::Segment(s) => read.segments[s as usize].as_str(),
        Text::Absent => "false",
    };
    let mut said = Vec::new();
    for run in &read.counted.runs {
        let chunk = Chunk::decode(&run.assemble(text)).unwrap_or_else(|e| raise(e));
        for (key, state) in chunk_states(&chunk, texts) {
            let predictions = match state.bucket {
                Some(bucket) => Predictions::Counted { bucket, segment: state.segment, predicted: state.predicted, weight: state.weight },
                None => Predictions::Uncounted,
            };
            said.push((key, predictions));
        }
    }
    said
}

/// A key's old state, its new state, and whether a keys row holds it.
struct Restated {
    key: i64,
    old: Option<State>,
    new: Option<State>,
    in_row: bool,
}

/// Restates `touched` (ascending keys): finds their stored states, resolves
/// each (`certain`: what the statement says of a key with a stored state
/// holds; else such keys are recounted), recounts the rest, and writes the
/// deltas, keys rows and chunks.
fn restate(monitor: &Monitor, ids: &KeyIds, client: &mut SpiClient<'_>, texts: &mut Texts, touched: Vec<Touched>, certain: bool) {
    let integer = matches!(ids, KeyIds::Integer);
    let (Some(&(lo, _, _)), Some(&(hi, _, _))) = (touched.first(), touched.last()) else {
        return;
    };
    let keys: Vec<i64> = touched.iter().map(|t| t.0).collect();
    // Old states side by side with `keys` (a hash map of a statement's keys
    // cost half the path in cache misses).
    // Integer keys: a range probe first (ids of other keys are not ordered
    // as the table's keys), and claim chunks; other keys live in keys rows.
    let rows = if !integer || monitor.any_keys_row(client, lo, hi) { monitor.keys_rows(client, ids, &keys, texts) } else { HashMap::new() };
    let stored = if integer { monitor.chunks_in(client, lo, hi) } else { Vec::new() };
    let (ctids, chunks): (Vec<String>, Vec<StoredChunk>) =
        stored.into_iter().map(|(ctid, chunk)| (ctid, StoredChunk::new(&chunk, texts))).unzip();
    let mut entries: Vec<Option<State>> = vec![None; keys.len()];
    for stored in &chunks {
        let states = &stored.states;
        let first = keys.partition_point(|&k| k < stored.lo);
        let last = keys.partition_point(|&k| k <= stored.hi);
        let mut at = 0;
        for (i, &key) in keys[first..last].iter().enumerate() {
            // Both ascending: search only past the last match.
            if let Ok(j) = states[at..].binary_search_by_key(&key, |&(k, _)| k) {
                entries[first + i] = Some(states[at + j].1);
                at += j + 1;
            }
        }
    }

    let absent = monitor.actual_column.is_none().then(|| texts.intern("false"));
    let mut restated = Vec::with_capacity(touched.len());
    let mut recount = Vec::new();
    for (i, (key, predictions, outcomes)) in touched.into_iter().enumerate() {
        let (old, in_row) = match rows.get(&key) {
            Some(&state) => (Some(state), true),
            None => (entries[i], false),
        };
        let (predictions, outcomes) = if certain || old.is_none() {
            (predictions, outcomes)
        } else {
            (if predictions == Predictions::Unchanged { predictions } else { Predictions::Unknown },
             if outcomes == Outcomes::Unchanged { outcomes } else { Outcomes::Unknown })
        };
        let new = match resolve(old.as_ref(), predictions, outcomes, absent, texts) {
            Resolution::Set(new) => new,
            Resolution::Recount => {
                recount.push(key);
                None
            }
        };
        restated.push(Restated { key, old, new, in_row });
    }
    if !recount.is_empty() {
        let mut fresh = monitor.recount(client, ids, &recount, texts);
        for r in restated.iter_mut().filter(|r| recount.binary_search(&r.key).is_ok()) {
            r.new = fresh.remove(&r.key);
        }
    }

    let mut cells = Cells::default();
    let (mut row_updates, mut row_deletes, mut row_inserts, mut chunk_changes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (r, entry) in restated.iter().zip(&entries) {
        // A keys row wins over an entry of its key, left stale: it goes when
        // its chunk is rewritten, so that it cannot outlive the row.
        let stale_entry = r.in_row && entry.is_some();
        if r.old == r.new && !stale_entry {
            continue;
        }
        add_change(&mut cells, r.old.as_ref(), r.new.as_ref());
        if r.in_row {
            match r.new {
                Some(state) if r.old != r.new => row_updates.push((r.key, state)),
                Some(_) => {}
                None => row_deletes.push(r.key),
            }
            if stale_entry {
                chunk_changes.push((r.key, None));
            }
        } else if integer {
            chunk_changes.push((r.key, r.new));
        } else if let Some(state) = r.new {
            row_inserts.push((r.key, state));
        }
    }
    let deltas = cells
        .into_iter()
        .map(|((bucket, segment, predicted, actual), (n, weight))| Delta {
            bucket,
            segment: texts.text(segment).to_owned(),
            predicted: texts.text(predicted).to_owned(),
            actual: actual.map(|a| texts.text(a).to_owned()),
            n,
            weight,
        })
        .collect();
    write_deltas(client, &monitor.rollup_table, deltas);
    monitor.write_keys_rows(client, ids, &row_updates, &row_deletes, &row_inserts, texts);
    if !chunk_changes.is_empty() {
        let (replaced, written) = rewrite_chunks(&chunks, &chunk_changes, texts);
        let ctids: Vec<&str> = replaced.iter().map(|&i| ctids[i].as_str()).collect();
        monitor.delete_chunks(client, &ctids);
        let written = written.iter().map(|c| (c.entries[0].key, c.entries[c.entries.len() - 1].key, c.encode())).collect();
        monitor.write_chunks(client, written);
    }
    monitor.record_bulk_load(client);
}

/// States as arrays $2..$6 beside keys $1, for keys rows.
const UNNEST_STATES: &str =
    "unnest($1, $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::float8[]) u(key, b, s, p, a, w)";

/// The condition that keys row `k`'s key is one of `$1` (as `key_param`
/// passes them). `= ANY` over a known array: index probes, or a sequential
/// scan with the array hashed when that is cheaper (300k of 1M text keys:
/// 0.55 s, where a semi-join over unnest took 1.26 s as a nested loop).
fn key_match(ids: &KeyIds, key_type: &str) -> String {
    match ids {
        KeyIds::Integer => "k.key = ANY($1::bigint[])".to_owned(),
        KeyIds::Text { .. } => format!("k.key = ANY($1::text[]::{key_type}[])"),
    }
}

/// Keys as an SQL parameter: bigint[] of integer keys, text[] of other keys' texts.
fn key_param<'a>(ids: &'a KeyIds, keys: &[i64]) -> pgrx::datum::DatumWithOid<'a> {
    match ids {
        KeyIds::Integer => keys.to_vec().into(),
        KeyIds::Text { .. } => keys.iter().map(|&k| ids.text(k)).collect::<Vec<&str>>().into(),
    }
}

fn timestamp(bucket: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(bucket).ok()
}

impl Monitor {
    /// The keys rows of `keys`, as states.
    fn keys_rows(&self, client: &SpiClient<'_>, ids: &KeyIds, keys: &[i64], texts: &mut Texts) -> HashMap<i64, State> {
        let key = match ids {
            KeyIds::Integer => "k.key::bigint",
            KeyIds::Text { .. } => "k.key::text",
        };
        let sql = format!(
            "SELECT {key}, k.bucket, k.segment::text, k.predicted, k.actual, k.weight FROM {} k WHERE {}",
            self.keys_table,
            key_match(ids, &self.key_type)
        );
        let rows = client.select(&sql, None, &[key_param(ids, keys)]).unwrap_or_else(|e| spi_error(e));
        rows.filter_map(|row| Some((row_key(ids, &row)?, state_of_row(&row, texts, false)))).collect()
    }

    /// `keys` recounted from the raw tables (`mlmon._statement_recount_sql`);
    /// a key without raw rows is left out.
    fn recount(&self, client: &SpiClient<'_>, ids: &KeyIds, keys: &[i64], texts: &mut Texts) -> HashMap<i64, State> {
        // Generated when needed: most statements recount nothing.
        let generate = "SELECT mlmon._statement_recount_sql(m) FROM mlmon.monitor m WHERE m.name = $1";
        let sql = super::one::<String>(client, generate, &[self.name.as_str().into()])
            .unwrap_or_else(|| pgrx::error!("mlmon: monitor {} is gone", self.name));
        let rows = client.select(&sql, None, &[key_param(ids, keys)]).unwrap_or_else(|e| spi_error(e));
        rows.filter_map(|row| Some((row_key(ids, &row)?, state_of_row(&row, texts, true)))).collect()
    }

    /// Writes keys rows: `updates` of rows there, `deletes`, `inserts` of
    /// keys new to the table (keys without claim chunks).
    fn write_keys_rows(
        &self,
        client: &mut SpiClient<'_>,
        ids: &KeyIds,
        updates: &[(i64, State)],
        deletes: &[i64],
        inserts: &[(i64, State)],
        texts: &Texts,
    ) {
        if !deletes.is_empty() {
            let sql = format!("DELETE FROM {} k WHERE {}", self.keys_table, key_match(ids, &self.key_type));
            client.update(&sql, None, &[key_param(ids, deletes)]).unwrap_or_else(|e| spi_error(e));
        }
        let key = match ids {
            KeyIds::Integer => "u.key".to_owned(),
            KeyIds::Text { .. } => format!("u.key::{}", self.key_type),
        };
        for (rows, sql) in [
            (
                updates,
                format!(
                    "UPDATE {} k SET bucket = u.b, segment = u.s::jsonb, predicted = u.p, actual = u.a, weight = u.w
                     FROM {UNNEST_STATES} WHERE k.key = {key}",
                    self.keys_table
                ),
            ),
            (
                inserts,
                format!(
                    "INSERT INTO {} (key, bucket, segment, predicted, actual, weight)
                     SELECT {key}, u.b, u.s::jsonb, u.p, u.a, u.w FROM {UNNEST_STATES}",
                    self.keys_table
                ),
            ),
        ] {
            if rows.is_empty() {
                continue;
            }
            let counted = |s: &State| s.counted();
            let keys: Vec<i64> = rows.iter().map(|u| u.0).collect();
            let bucket: Vec<Option<TimestampWithTimeZone>> = rows.iter().map(|(_, s)| s.bucket.and_then(timestamp)).collect();
            let segment: Vec<Option<&str>> = rows.iter().map(|(_, s)| counted(s).then(|| texts.text(s.segment))).collect();
            let predicted: Vec<Option<&str>> = rows.iter().map(|(_, s)| counted(s).then(|| texts.text(s.predicted))).collect();
            // A keys row's placeholder keeps no label (see _claim_entries).
            let actual: Vec<Option<&str>> =
                rows.iter().map(|(_, s)| if counted(s) { s.actual.map(|a| texts.text(a)) } else { None }).collect();
            let weight: Vec<Option<f64>> = rows.iter().map(|(_, s)| counted(s).then_some(s.weight)).collect();
            client
                .update(&sql, None, &[key_param(ids, &keys), bucket.into(), segment.into(), predicted.into(), actual.into(), weight.into()])
                .unwrap_or_else(|e| spi_error(e));
        }
    }
}

/// The key id of a row whose first column is a key: bigint for integer
/// keys, else the key's text.
fn row_key(ids: &KeyIds, row: &pgrx::spi::SpiHeapTupleData<'_>) -> Option<i64> {
    match ids {
        KeyIds::Integer => row.get::<i64>(1).ok().flatten(),
        KeyIds::Text { .. } => ids.id_of_text(&row.get::<String>(1).ok().flatten()?),
    }
}

/// A state from a row (key, bucket, segment, predicted, actual, weight).
/// `placeholder_label`: whether a placeholder's actual column is its
/// outcomes' label (the recount's) rather than nothing (a keys row's).
fn state_of_row(row: &pgrx::spi::SpiHeapTupleData<'_>, texts: &mut Texts, placeholder_label: bool) -> State {
    let text = |i: usize| row.get::<String>(i).ok().flatten();
    let actual = text(5).map(|a| texts.intern(&a));
    match row.get::<TimestampWithTimeZone>(2).ok().flatten() {
        Some(bucket) => State {
            bucket: Some(pg_sys::TimestampTz::from(bucket)),
            segment: texts.intern(&text(3).unwrap_or_default()),
            predicted: texts.intern(&text(4).unwrap_or_default()),
            actual,
            weight: row.get::<f64>(6).ok().flatten().unwrap_or(0.0),
        },
        None => State::placeholder(if placeholder_label { actual } else { None }),
    }
}
