//! Large statements on monitored tables without a keys row or a claim per
//! key: the statement path.
//!
//! A monitor's keys table holds, for every key with raw rows, the
//! contribution the rollup counts; writing it costs a heap row and a unique
//! index entry per key, as much again as the user's own write, and the
//! PL/pgSQL path claims (locks and rewrites) it for every key a statement
//! touches. A large statement on either table (INSERT/COPY, UPDATE, DELETE;
//! `monitors::write_trigger`) instead reads its transition tables once
//! (`read.rs`; predictions are counted by `mlmon_core::monitors::bulk` on a
//! helper thread meanwhile) and, when it may, works per key in memory:
//! * a load of keys that have no state anywhere in its key range is written
//!   as new claim chunks (`mlmon_core::monitors::claims`), its deltas from
//!   the counted cells (`write_new_predictions`);
//! * any other statement restates its keys (`statement.rs`): each touched
//!   key's stored state (keys row or chunk entry) and what the transition
//!   tables say give its new state (`mlmon_core::monitors::restate`), or the
//!   key is recounted from the raw tables; deltas are -old +new; keys rows
//!   are updated or deleted, chunks rewritten, and a key with no raw rows
//!   left loses its state, so a later load sees it as new.
//!
//! Every statement the PL/pgSQL path runs first copies the entries of the
//! keys it touches into keys rows ("materializes" them, `_claim_entries`)
//! and then goes on as before, so the chunks change nothing for it.
//!
//! When the statement path may run (otherwise the statement takes the usual
//! path, which is always right):
//! * The transaction is READ COMMITTED, so its reads see every committed
//!   write (each SPI query takes a fresh snapshot).
//! * It holds the monitor's bulk lock exclusively (`pg_try_advisory_xact_lock`,
//!   never waiting). Every other trigger call holds it shared until its
//!   transaction ends, so no writer is in flight on any key: entries and keys
//!   rows seen are all there are, and the raw tables hold every change.
//! * Integer keys, the column types `read.rs` reads, at most 10,000 distinct
//!   labels and segments, valid weights, no tie between two rows of a key.

mod dictionary;
mod read;
mod statement;

pub use statement::write_statement;

use mlmon_core::monitors::bulk::Text;
use mlmon_core::monitors::claims::Chunk;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiResult};

use super::catalog::{spi_error, Monitor};
use super::locks::try_bulk_lock;
use super::rollup::{write_deltas, Delta};
use read::CountedPredictions;
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

    /// The condition on chunk `c` that its range meets `lo..=hi` (SQL
    /// expressions), as an index range on `lo` from the chunk holding `lo`.
    fn chunks_meeting(&self, lo: &str, hi: &str) -> String {
        format!(
            "c.lo <= {hi} AND c.hi >= {lo} AND c.lo >= coalesce((SELECT f.lo FROM {} f WHERE f.lo <= {lo} ORDER BY f.lo DESC LIMIT 1), {lo})",
            self.claims_table
        )
    }

    /// Whether some chunk's range meets lo..=hi.
    fn any_chunk(&self, client: &SpiClient<'_>, lo: i64, hi: i64) -> bool {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {} c WHERE {})", self.claims_table, self.chunks_meeting("$1", "$2"));
        one::<bool>(client, &sql, &[lo.into(), hi.into()]).unwrap_or(true)
    }

    /// The chunks whose range meets lo..=hi, with their row ids.
    fn chunks_in(&self, client: &SpiClient<'_>, lo: i64, hi: i64) -> Vec<(String, Chunk)> {
        let sql = format!("SELECT ctid::text, entries FROM {} c WHERE {} ORDER BY lo", self.claims_table, self.chunks_meeting("$1", "$2"));
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

    /// Deletes chunks by row id.
    fn delete_chunks(&self, client: &mut SpiClient<'_>, ctids: &[&str]) {
        if ctids.is_empty() {
            return;
        }
        let sql = format!("DELETE FROM {} WHERE ctid = ANY($1::tid[])", self.claims_table);
        client.update(&sql, None, &[ctids.to_vec().into()]).unwrap_or_else(|e| spi_error(e));
        relcache::announce(self.claims_oid);
    }
}

fn one<T: FromDatum + IntoDatum>(client: &SpiClient<'_>, sql: &str, args: &[DatumWithOid<'_>]) -> Option<T> {
    let rows: SpiResult<_> = client.select(sql, Some(1), args);
    rows.unwrap_or_else(|e| spi_error(e)).first().get::<T>(1).ok().flatten()
}

/// Writes what a load of predictions counts (`bulk::Counter`) whose keys
/// have no state in their range: every key is new and counts as its best
/// new row, with no outcome (none can exist: see the module's comment).
fn write_new_predictions(monitor: &Monitor, client: &mut SpiClient<'_>, read: CountedPredictions) {
    let CountedPredictions { counted, labels, segments } = read;
    let absent = monitor.actual_column.is_none().then_some("false");
    let text = |t: Text| match t {
        Text::Label(l) => labels[l as usize].as_str(),
        Text::Segment(s) => segments[s as usize].as_str(),
        Text::Absent => "false",
    };
    let chunks = counted.runs.iter().map(|run| (run.lo, run.hi, run.assemble(text))).collect();
    let deltas = counted
        .cells
        .into_iter()
        .map(|((bucket, segment, label), (n, weight))| Delta {
            bucket,
            segment: segments[segment as usize].clone(),
            predicted: labels[label as usize].clone(),
            actual: absent.map(str::to_owned),
            n,
            weight,
        })
        .collect();
    write_deltas(client, &monitor.rollup_table, deltas);
    monitor.write_chunks(client, chunks);
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
    let mut keys: Vec<i64> = keys.into_iter().flatten().collect();
    keys.sort_unstable();
    keys.dedup();
    let chunk = Chunk::decode_keys(entries, &keys).unwrap_or_else(|e| raise(e));
    let rows: Vec<_> = chunk
        .entries
        .iter()
        .map(|e| {
            let counted = e.bucket.is_some();
            (
                e.key,
                e.bucket.and_then(|b| TimestampWithTimeZone::try_from(b).ok()),
                chunk.text(e.segment).map(str::to_owned),
                chunk.text(e.predicted).map(str::to_owned),
                // A placeholder's entry may keep its outcomes' label; a keys
                // row's placeholder has none.
                counted.then(|| chunk.text(e.actual).map(str::to_owned)).flatten(),
                counted.then_some(e.weight),
            )
        })
        .collect();
    TableIterator::new(rows)
}
