//! Bulk loads into monitored tables without a keys row per key.
//!
//! A monitor's keys table holds, for every key with raw rows, the
//! contribution the rollup counts; writing it costs a heap row and a unique
//! index entry per key, as much again as the user's own insert. A bulk INSERT
//! (COPY of a day's predictions, a file of late labels) instead goes through
//! a native trigger (`ffi::insert_trigger`) that reads the statement's rows
//! once (predictions are counted by `mlmon_core::bulk` on a helper thread
//! meanwhile), and, when it may, writes the rollup's deltas and the keys'
//! contributions as claim chunks (`mlmon_core::claims`): a few rows of packed
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

use mlmon_core::bulk::{Buckets, Counted, Text};
use mlmon_core::claims::{Chunk, Entry};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiResult};

pub use mlmon_core::fast_hash::{FastHasher, FastMap};

/// Strings interned once, so that cells are keyed by small integers.
#[derive(Default)]
struct Texts {
    index: FastMap<String, u32>,
    texts: Vec<String>,
}

impl Texts {
    fn intern(&mut self, text: &str) -> u32 {
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        self.texts.push(text.to_owned());
        self.index.insert(text.to_owned(), (self.texts.len() - 1) as u32);
        (self.texts.len() - 1) as u32
    }
}

/// A monitor as the native insert trigger needs it.
pub struct Monitor {
    name: String,
    pub predictions: pg_sys::Oid,
    pub outcomes: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    pub key_column: String,
    pub outcome_key_column: String,
    pub predicted_at_column: String,
    pub predicted_column: String,
    pub segment_by: Vec<String>,
    pub weight_column: Option<String>,
    pub actual_column: Option<String>,
    pub label_kind: String,
    pub first: bool,
    pub buckets: Buckets,
    pub integer_key: bool,
    keys_table: String,
    rollup_table: String,
    claims_table: String,
    claims_oid: pg_sys::Oid,
    pub lock_id: i64,
}

/// The combined actual label of a key's new outcome rows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Actual {
    /// No actual column: an outcome row means positive.
    Present,
    Bool(Option<bool>),
    Integer(Option<i64>),
}

impl Actual {
    /// The rule of `_actual_sql`: any true makes a boolean true, otherwise the
    /// greatest value; NULL values are ignored.
    pub fn combine(self, other: Actual) -> Actual {
        match (self, other) {
            (Actual::Bool(a), Actual::Bool(b)) => Actual::Bool(a.max(b)),
            (Actual::Integer(a), Actual::Integer(b)) => Actual::Integer(a.max(b)),
            (a, _) => a,
        }
    }

    /// Combines with a counted actual label (its text, NULL for none).
    fn after(self, counted: Option<&str>) -> Option<String> {
        let counted = match (self, counted) {
            (Actual::Present, _) => return Some("true".into()),
            (a, None) => a,
            (Actual::Bool(_), Some(t)) => Actual::Bool(Some(t == "true")),
            (Actual::Integer(_), Some(t)) => Actual::Integer(t.parse().ok()),
        };
        match self.combine(counted) {
            Actual::Bool(v) => v.map(|b| b.to_string()),
            Actual::Integer(v) => v.map(|i| i.to_string()),
            Actual::Present => unreachable!(),
        }
    }
}

/// One rollup delta row.
struct Delta {
    bucket: i64,
    segment: String,
    predicted: String,
    actual: Option<String>,
    n: i64,
    weight: f64,
}

pub(crate) fn spi_error(e: pgrx::spi::SpiError) -> ! {
    pgrx::error!("mlmon insert trigger: {e}")
}

impl Monitor {
    pub fn load(client: &SpiClient<'_>, name: &str) -> Option<Monitor> {
        let sql = "SELECT m.predictions::oid, m.outcomes::oid, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = m.owner),
                          m.key_column::text, m.outcome_key_column::text, m.predicted_at_column::text, m.predicted_column::text,
                          m.segment_by::text[], m.weight_column::text, m.actual_column::text, m.label_kind, m.dedup = 'first',
                          CASE WHEN pg_catalog.date_part('month', m.bucket) = 0 AND pg_catalog.date_part('year', m.bucket) = 0
                               THEN (EXTRACT(epoch FROM m.bucket) * 1000000)::bigint END,
                          (EXTRACT(epoch FROM mlmon._bucket_origin() - '2000-01-01 00:00:00+00'::timestamptz) * 1000000)::bigint,
                          mlmon._bulk_capable(m),
                          mlmon._keys_table(m), mlmon._rollup_table(m), mlmon._claims_table(m), mlmon._bulk_lock_id(m),
                          mlmon._claims_table(m)::regclass::oid
                   FROM mlmon.monitor m WHERE m.name = $1";
        let rows = client.select(sql, Some(1), &[name.into()]).unwrap_or_else(|e| spi_error(e));
        let row = rows.first();
        if row.is_empty() {
            return None;
        }
        let get = |i: usize| row.get::<String>(i).ok().flatten();
        Some(Monitor {
            name: name.to_owned(),
            predictions: row.get::<pg_sys::Oid>(1).ok().flatten()?,
            outcomes: row.get::<pg_sys::Oid>(2).ok().flatten()?,
            owner: row.get::<pg_sys::Oid>(3).ok().flatten()?,
            key_column: get(4)?,
            outcome_key_column: get(5)?,
            predicted_at_column: get(6)?,
            predicted_column: get(7)?,
            segment_by: row.get::<Vec<String>>(8).ok().flatten()?,
            weight_column: get(9),
            actual_column: get(10),
            label_kind: get(11)?,
            first: row.get::<bool>(12).ok().flatten()?,
            buckets: Buckets {
                stride: row.get::<i64>(13).ok().flatten().filter(|&u| u > 0),
                origin: row.get::<i64>(14).ok().flatten()?,
            },
            integer_key: row.get::<bool>(15).ok().flatten()?,
            keys_table: get(16)?,
            rollup_table: get(17)?,
            claims_table: get(18)?,
            claims_oid: row.get::<pg_sys::Oid>(20).ok().flatten()?,
            lock_id: row.get::<i64>(19).ok().flatten()?,
        })
    }

    /// The monitor's bulk lock, exclusively, if no other writer holds it.
    pub fn try_bulk_lock(&self) -> bool {
        crate::ffi::try_bulk_lock(self.lock_id)
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
            let chunk = Chunk::decode(&bytes).unwrap_or_else(|e| crate::errors::raise(e));
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
        // Single-row writers cache the chunks' ranges (ffi::one_row).
        crate::ffi::announce_chunks(self.claims_oid);
    }

    fn write_deltas(&self, client: &mut SpiClient<'_>, deltas: Vec<Delta>) {
        let deltas: Vec<Delta> = deltas.into_iter().filter(|d| d.n != 0).collect();
        if deltas.is_empty() {
            return;
        }
        let bucket: Vec<Option<TimestampWithTimeZone>> = deltas.iter().map(|d| TimestampWithTimeZone::try_from(d.bucket).ok()).collect();
        let segment: Vec<&str> = deltas.iter().map(|d| d.segment.as_str()).collect();
        let predicted: Vec<&str> = deltas.iter().map(|d| d.predicted.as_str()).collect();
        let actual: Vec<Option<&str>> = deltas.iter().map(|d| d.actual.as_deref()).collect();
        let n: Vec<i64> = deltas.iter().map(|d| d.n).collect();
        let weight: Vec<f64> = deltas.iter().map(|d| d.weight).collect();
        let sql = format!(
            "INSERT INTO {} (bucket, segment, predicted, actual, n, weight)
             SELECT b, s::jsonb, p, a, n, w
             FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::float8[]) u(b, s, p, a, n, w)",
            self.rollup_table
        );
        client
            .update(&sql, None, &[bucket.into(), segment.into(), predicted.into(), actual.into(), n.into(), weight.into()])
            .unwrap_or_else(|e| spi_error(e));
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
        monitor.write_deltas(client, deltas);
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
        let text = |i: u32| texts.texts[i as usize].clone();
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
        monitor.write_deltas(client, deltas);
        let sql = format!("DELETE FROM {} WHERE ctid = ANY($1::tid[])", monitor.claims_table);
        client.update(&sql, None, &[replaced.into()]).unwrap_or_else(|e| spi_error(e));
        let fresh = fresh.iter().map(|c| (c.entries[0].key, c.entries[c.entries.len() - 1].key, c.encode())).collect();
        monitor.write_chunks(client, fresh);
        monitor.record_bulk_load(client);
        true
    })
}

/// Rollup changes by cell (bucket, segment, predicted, actual as interned
/// strings): count and weight.
type Cells = FastMap<(i64, u32, u32, Option<u32>), (i64, f64)>;

/// `chunk` with `outcomes` applied (keys inside its range, ascending): a
/// counted key's actual label combined with its new outcomes, a key with
/// outcomes only added as an entry without prediction. The rollup changes go
/// to `cells`.
fn apply_outcomes(chunk: &Chunk, outcomes: &[(i64, Actual)], texts: &mut Texts, cells: &mut Cells) -> Chunk {
    let global: Vec<u32> = chunk.texts.iter().map(|t| texts.intern(t)).collect();
    let mut local: FastMap<u32, u32> = global.iter().enumerate().map(|(l, &g)| (g, l as u32)).collect();
    let mut result = Chunk { texts: chunk.texts.clone(), entries: Vec::with_capacity(chunk.entries.len()) };
    // Few distinct (label before, new outcome) pairs: combine each once.
    let mut combined: FastMap<(Option<u32>, Actual), Option<u32>> = FastMap::default();
    let empty_segment = texts.intern("{}");
    let mut pending = outcomes.iter().peekable();
    for entry in &chunk.entries {
        while let Some(&&(key, _)) = pending.peek() {
            if key >= entry.key {
                break;
            }
            result.entries.push(Entry { key, bucket: None, segment: None, predicted: None, actual: None, weight: 0.0 });
            pending.next();
        }
        let mut entry = entry.clone();
        let outcome = pending.next_if(|&&(key, _)| key == entry.key).map(|&(_, actual)| actual);
        if let (Some(actual), Some(bucket)) = (outcome, entry.bucket) {
            let before = entry.actual.map(|l| global[l as usize]);
            let after = match combined.get(&(before, actual)) {
                Some(&after) => after,
                None => {
                    let text = actual.after(before.map(|g| texts.texts[g as usize].as_str()));
                    let after = text.map(|t| texts.intern(&t));
                    combined.insert((before, actual), after);
                    after
                }
            };
            if after != before {
                let segment = entry.segment.map_or(empty_segment, |l| global[l as usize]);
                let predicted = entry.predicted.map_or(empty_segment, |l| global[l as usize]);
                for (actual, sign) in [(before, -1), (after, 1)] {
                    let cell = cells.entry((bucket, segment, predicted, actual)).or_insert((0, 0.0));
                    cell.0 += sign;
                    cell.1 += sign as f64 * entry.weight;
                }
                entry.actual = after.map(|g| {
                    *local.entry(g).or_insert_with(|| {
                        result.texts.push(texts.texts[g as usize].clone());
                        (result.texts.len() - 1) as u32
                    })
                });
            }
        }
        result.entries.push(entry);
    }
    result
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
    let chunk = Chunk::decode(entries).unwrap_or_else(|e| crate::errors::raise(e));
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

#[cfg(test)]
mod tests {
    use super::Actual;

    #[test]
    fn actual_labels_combine_as_the_sql_rule() {
        assert_eq!(Actual::Present.after(Some("false")), Some("true".into()));
        assert_eq!(Actual::Bool(Some(false)).after(None), Some("false".into()));
        assert_eq!(Actual::Bool(Some(false)).after(Some("true")), Some("true".into()));
        assert_eq!(Actual::Bool(None).after(Some("false")), Some("false".into()));
        assert_eq!(Actual::Bool(None).after(None), None);
        assert_eq!(Actual::Integer(Some(3)).after(Some("7")), Some("7".into()));
        assert_eq!(Actual::Integer(Some(9)).after(Some("7")), Some("9".into()));
        assert_eq!(Actual::Bool(Some(true)).combine(Actual::Bool(Some(false))), Actual::Bool(Some(true)));
    }
}
