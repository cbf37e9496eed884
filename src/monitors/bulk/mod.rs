//! Bulk loads into monitored tables without a keys row per key.
//!
//! A monitor's keys table holds, for every key with raw rows, the
//! contribution the rollup counts; writing it costs a heap row and a unique
//! index entry per key, as much again as the user's own insert. A bulk INSERT
//! (COPY of a day's predictions, a file of late labels) instead goes through
//! a native trigger (`monitors::insert_trigger`) that reads the statement's rows
//! once (`read.rs`; predictions are counted by `mlmon_core::monitors::bulk` on a helper thread
//! meanwhile), and, when it may, writes the rollup's deltas and the keys'
//! contributions as claim chunks (`mlmon_core::monitors::claims`): a few rows of packed
//! entries. Every other statement first copies the entries of the keys it
//! touches into keys rows ("materializes" them, `_claim_entries`) and then
//! runs as before, so the chunks change nothing for it.
//!
//! When the bulk path may run (otherwise the statement takes the usual path,
//! which is always right):
//! * The transaction is READ COMMITTED, so its checks see every committed
//!   write (each SPI query takes a fresh snapshot).
//! * It holds the monitor's bulk lock exclusively (`pg_try_advisory_xact_lock`,
//!   never waiting). Every other trigger call holds it shared until its
//!   transaction ends, so no writer is in flight on any key: entries and keys
//!   rows seen are all there are.
//! * Predictions: no keys row and no chunk lies in the range of the
//!   statement's keys. A key with raw rows always has one or the other, so
//!   every key of the statement is new and counts as its best new row.
//! * Outcomes: no keys row lies in the range and every key falls inside a
//!   chunk; its entry's actual label is combined with the new outcomes.

mod dictionary;
mod read;

pub use read::bulk_insert;

use mlmon_core::monitors::actual::Actual;
use mlmon_core::monitors::bulk::{Counted, Text};
use mlmon_core::monitors::claims::Chunk;
use mlmon_core::monitors::late_outcomes::{apply_outcomes, Cells, Texts};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiResult};

use super::catalog::{spi_error, Monitor};
use super::locks::try_bulk_lock;
use super::rollup::{write_deltas, Delta};
use crate::pg::errors::raise;
use crate::pg::relcache;

impl Monitor {
    /// The monitor's bulk lock, exclusively, if no other writer holds it.
    fn try_bulk_lock(&self) -> bool {
        try_bulk_lock(self.lock_id)
    }

    /// Counts a bulk load on the monitor's row: a REPEATABLE READ writer
    /// whose snapshot predates it then fails to lock the row (see _enter_sql).
    fn record_bulk_load(&self, client: &mut SpiClient<'_>) {
        client
            .update("UPDATE mlmon.monitor SET bulk_loads = bulk_loads + 1 WHERE name = $1", None, &[self.name.as_str().into()])
            .unwrap_or_else(|e| spi_error(e));
    }

    /// Whether some key in lo..=hi has a keys row.
    fn any_keys_row(&self, client: &SpiClient<'_>, lo: i64, hi: i64) -> bool {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {} WHERE key BETWEEN $1 AND $2)", self.keys_table);
        one::<bool>(client, &sql, &[lo.into(), hi.into()]).unwrap_or(true)
    }

    /// The chunks whose range meets lo..=hi, with their row ids.
    fn chunks_in(&self, client: &SpiClient<'_>, lo: i64, hi: i64) -> Vec<(String, Chunk)> {
        let sql = format!("SELECT ctid::text, entries FROM {} WHERE lo <= $2 AND hi >= $1 ORDER BY lo", self.claims_table);
        let rows = client.select(&sql, None, &[lo.into(), hi.into()]).unwrap_or_else(|e| spi_error(e));
        rows.map(|row| {
            let ctid = row.get::<String>(1).ok().flatten().unwrap_or_default();
            let bytes = row.get::<Vec<u8>>(2).ok().flatten().unwrap_or_default();
            let chunk = Chunk::decode(&bytes).unwrap_or_else(|e| raise(e));
            (ctid, chunk)
        })
        .collect()
    }

    /// Writes encoded chunks: (first key, last key, bytes) each.
    fn write_chunks(&self, client: &mut SpiClient<'_>, chunks: Vec<(i64, i64, Vec<u8>)>) {
        if chunks.is_empty() {
            return;
        }
        let (mut lo, mut hi, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
        for (first, last, encoded) in chunks {
            lo.push(first);
            hi.push(last);
            bytes.push(encoded);
        }
        let sql = format!("INSERT INTO {} (lo, hi, entries) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])",
                          self.claims_table);
        client.update(&sql, None, &[lo.into(), hi.into(), bytes.into()]).unwrap_or_else(|e| spi_error(e));
        // Single-row writers cache the chunks' ranges (`single_row.rs`).
        relcache::announce(self.claims_oid);
    }
}

fn one<T: FromDatum + IntoDatum>(client: &SpiClient<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> Option<T> {
    let rows: SpiResult<_> = client.select(sql, Some(1), args);
    rows.unwrap_or_else(|e| spi_error(e)).first().get::<T>(1).ok().flatten()
}

/// Writes what a bulk INSERT of predictions counts (`bulk::Counter`), if
/// its keys are all new (see the module's comment); returns whether it did.
/// `predicted` and `segments` are the texts of the counter's label and
/// segment ids.
pub fn insert_predictions(monitor: &Monitor, counted: Counted, predicted: &[String], segments: &[String]) -> bool {
    let Counted { lo, hi, runs, cells } = counted;
    Spi::connect_mut(|client| {
        if !monitor.try_bulk_lock() || monitor.any_keys_row(client, lo, hi) || !monitor.chunks_in(client, lo, hi).is_empty() {
            return false;
        }
        // A key's actual label with no outcome row (none can exist: the key is new).
        let absent = monitor.actual_column.is_none().then_some("false");
        let text = |t: Text| match t {
            Text::Label(l) => predicted[l as usize].as_str(),
            Text::Segment(s) => segments[s as usize].as_str(),
            Text::Absent => "false",
        };
        let chunks = runs.iter().map(|run| (run.lo, run.hi, run.assemble(text))).collect();
        let deltas = cells
            .into_iter()
            .map(|((bucket, segment, label), (n, weight))| Delta {
                bucket,
                segment: segments[segment as usize].clone(),
                predicted: predicted[label as usize].clone(),
                actual: absent.map(str::to_owned),
                n,
                weight,
            })
            .collect();
        write_deltas(client, &monitor.rollup_table, deltas);
        monitor.write_chunks(client, chunks);
        monitor.record_bulk_load(client);
        true
    })
}

/// Applies a bulk INSERT of outcomes whose keys all lie in chunks and have no
/// keys row, if it may (see the module's comment); returns whether it did.
/// `outcomes`: each key's combined new actual label, ascending by key.
pub fn insert_outcomes(monitor: &Monitor, outcomes: &[(i64, Actual)]) -> bool {
    let (Some(&(lo, _)), Some(&(hi, _))) = (outcomes.first(), outcomes.last()) else {
        return false;
    };
    Spi::connect_mut(|client| {
        if !monitor.try_bulk_lock() || monitor.any_keys_row(client, lo, hi) {
            return false;
        }
        let mut texts = Texts::default();
        let mut cells = Cells::default();
        let (mut replaced, mut fresh) = (Vec::new(), Vec::new());
        // Chunks come in key order and do not overlap: walk them beside the keys.
        let mut next = 0;
        for (ctid, chunk) in monitor.chunks_in(client, lo, hi) {
            let (first, last) = (chunk.entries[0].key, chunk.entries[chunk.entries.len() - 1].key);
            if next < outcomes.len() && outcomes[next].0 < first {
                return false; // a key in no chunk: it has no contribution stored here
            }
            let start = next;
            while next < outcomes.len() && outcomes[next].0 <= last {
                next += 1;
            }
            if start < next {
                fresh.push(apply_outcomes(&chunk, &outcomes[start..next], &mut texts, &mut cells));
                replaced.push(ctid);
            }
        }
        if next < outcomes.len() {
            return false;
        }
        let text = |i: u32| texts.text(i).to_owned();
        let deltas = cells
            .into_iter()
            .map(|((bucket, segment, predicted, actual), (n, weight))| Delta {
                bucket,
                segment: text(segment),
                predicted: text(predicted),
                actual: actual.map(text),
                n,
                weight,
            })
            .collect();
        write_deltas(client, &monitor.rollup_table, deltas);
        let sql = format!("DELETE FROM {} WHERE ctid = ANY($1::tid[])", monitor.claims_table);
        client.update(&sql, None, &[replaced.into()]).unwrap_or_else(|e| spi_error(e));
        let fresh = fresh.iter().map(|c| (c.entries[0].key, c.entries[c.entries.len() - 1].key, c.encode())).collect();
        monitor.write_chunks(client, fresh);
        monitor.record_bulk_load(client);
        true
    })
}

/// `mlmon._claim_entries(entries bytea, keys bigint[])`: the entries of `keys`
/// found in a chunk, as keys-table rows.
#[pg_extern(sql = false)]
#[allow(clippy::type_complexity)]
fn claim_entries(
    entries: &[u8],
    keys: Vec<Option<i64>>,
) -> TableIterator<
    'static,
    (
        name!(key, i64),
        name!(bucket, Option<TimestampWithTimeZone>),
        name!(segment, Option<String>),
        name!(predicted, Option<String>),
        name!(actual, Option<String>),
        name!(weight, Option<f64>),
    ),
> {
    let chunk = Chunk::decode(entries).unwrap_or_else(|e| raise(e));
    let rows: Vec<_> = keys
        .into_iter()
        .flatten()
        .filter_map(|k| chunk.find(k))
        .map(|e| {
            let counted = e.bucket.is_some();
            (
                e.key,
                e.bucket.and_then(|b| TimestampWithTimeZone::try_from(b).ok()),
                chunk.text(e.segment).map(str::to_owned),
                chunk.text(e.predicted).map(str::to_owned),
                chunk.text(e.actual).map(str::to_owned),
                counted.then_some(e.weight),
            )
        })
        .collect();
    TableIterator::new(rows)
}
