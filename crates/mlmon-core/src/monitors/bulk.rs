//! Counting a bulk load of predictions: the part of the native insert
//! trigger's bulk path that needs no database (see the extension's
//! `src/monitors/bulk/`).
//!
//! A [`Counter`] takes the statement's rows as the trigger reads them and
//! picks each key's best row (per the monitor's dedup order), its bucket, the
//! rollup cells it adds to, and the claim chunk entries, encoded and
//! compressed a run of [`CHUNK_KEYS`] at a time. Rows in ascending key order (a load in key order,
//! the usual case) are counted as they come, so that a second thread can do
//! it while the trigger is still reading; rows in any other order are sorted
//! and counted at the end.
//!
//! The strings of labels and segments are not known while counting: rows
//! carry dictionary ids, and chunk entries name [`Text`]s, turned into
//! strings when the chunks are assembled ([`EncodedRun::assemble`]).

use crate::monitors::claims::{assemble, encode_entries, Entry, CHUNK_KEYS};
use crate::fast_hash::FastMap;

/// One predictions row as the trigger reads it: `predicted` and `segment`
/// are ids in the load's dictionaries of labels and of segments. 32 bytes:
/// a load holds a million of them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PredictionRow {
    pub key: i64,
    /// Microseconds since 2000-01-01 (PostgreSQL's timestamp).
    pub at: i64,
    pub weight: f64,
    /// `NOT_COUNTED` for a row with a NULL time, label or weight.
    pub predicted: u32,
    pub segment: u32,
}

impl PredictionRow {
    pub const NOT_COUNTED: u32 = u32::MAX;

    pub fn countable(&self) -> bool {
        self.predicted != Self::NOT_COUNTED
    }
}

/// A string a chunk entry names: a label or a segment of the load's
/// dictionaries, or the actual label of a key without outcome (`false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Text {
    Label(u32),
    Segment(u32),
    Absent,
}

impl Text {
    /// A dense number for each text, as entries hold them while counting.
    fn code(self) -> u32 {
        match self {
            Text::Absent => 0,
            Text::Label(l) => 1 + 2 * l,
            Text::Segment(s) => 2 + 2 * s,
        }
    }

    fn from_code(code: u32) -> Text {
        match code {
            0 => Text::Absent,
            c if c % 2 == 1 => Text::Label((c - 1) / 2),
            c => Text::Segment((c - 2) / 2),
        }
    }
}

/// A run of entries, encoded (`claims::encode_entries`) before the strings
/// they name are known.
#[derive(Debug, PartialEq)]
pub struct EncodedRun {
    pub lo: i64,
    pub hi: i64,
    /// The run's dictionary: what each of its string indexes names.
    pub texts: Vec<Text>,
    pub entries: Vec<u8>,
}

impl EncodedRun {
    /// The chunk's bytes, given each text's string.
    pub fn assemble<'a>(&self, text: impl Fn(Text) -> &'a str) -> Vec<u8> {
        let strings: Vec<&str> = self.texts.iter().map(|&t| text(t)).collect();
        assemble(&strings, &self.entries)
    }
}

/// Rollup cells by (bucket, segment id, label id): count and weight.
pub type Cells = FastMap<(i64, u32, u32), (i64, f64)>;

/// What a load counts.
#[derive(Debug)]
pub struct Counted {
    /// The least and greatest key of the load.
    pub lo: i64,
    pub hi: i64,
    pub runs: Vec<EncodedRun>,
    pub cells: Cells,
}

/// Buckets as `date_bin(stride, at, origin)` makes them.
#[derive(Clone, Copy, Debug)]
pub struct Buckets {
    /// Microseconds; `None` when the width has months (date_bin refuses those).
    pub stride: Option<i64>,
    /// Microseconds since 2000-01-01.
    pub origin: i64,
}

impl Buckets {
    /// The bucket of a time; `None` where this arithmetic would not be
    /// date_bin's (months, times before the origin).
    pub fn of(&self, at: i64) -> Option<i64> {
        let stride = self.stride?;
        let diff = at.checked_sub(self.origin).filter(|&d| d >= 0)?;
        Some(self.origin + (diff - diff % stride))
    }
}

/// Counts a load's rows; see the module's comment.
pub struct Counter {
    /// Dedup keeps a key's first prediction (else its last).
    first: bool,
    buckets: Buckets,
    /// Whether a counted key's actual label is `false` (no actual column: an
    /// outcome row's presence is the positive class) rather than none.
    absent_is_false: bool,
    /// Every row, kept until the end in case a later one breaks the key order.
    rows: Vec<PredictionRow>,
    in_order: bool,
    /// The current key's best row so far.
    best: Option<PredictionRow>,
    run: Vec<Entry>,
    runs: Vec<EncodedRun>,
    cells: Cells,
    /// A run's index of each text code, once the run uses it.
    local: Vec<u32>,
    /// Two rows of a key tie, or a time lies outside `buckets`: the load must
    /// take the usual path.
    refused: bool,
}

const UNUSED: u32 = u32::MAX;

impl Counter {
    pub fn new(first: bool, buckets: Buckets, absent_is_false: bool, expected_rows: usize) -> Counter {
        Counter {
            first,
            buckets,
            absent_is_false,
            rows: Vec::with_capacity(expected_rows),
            in_order: true,
            best: None,
            run: Vec::with_capacity(CHUNK_KEYS),
            runs: Vec::new(),
            cells: Cells::default(),
            local: Vec::new(),
            refused: false,
        }
    }

    pub fn push(&mut self, rows: &[PredictionRow]) {
        self.rows.extend_from_slice(rows);
        if !self.in_order || self.refused {
            return;
        }
        for &row in rows {
            if self.best.is_some_and(|best| row.key < best.key) {
                self.in_order = false;
                return;
            }
            self.count(row);
        }
    }

    /// What the load counts, or `None` when it must take the usual path.
    pub fn finish(mut self) -> Option<Counted> {
        if !self.in_order {
            // Start again, over the rows in key order.
            let mut rows = std::mem::take(&mut self.rows);
            rows.sort_unstable_by_key(|r| r.key);
            (self.best, self.refused) = (None, false);
            self.run.clear();
            self.runs.clear();
            self.cells.clear();
            for row in rows {
                self.count(row);
            }
        }
        if let Some(best) = self.best.take() {
            self.add_entry(best);
        }
        self.close_run();
        if self.refused || self.runs.is_empty() {
            return None;
        }
        let (lo, hi) = (self.runs[0].lo, self.runs[self.runs.len() - 1].hi);
        Some(Counted { lo, hi, runs: self.runs, cells: self.cells })
    }

    /// Counts the next row in key order.
    fn count(&mut self, row: PredictionRow) {
        match self.best {
            Some(best) if best.key == row.key => match self.better(&row, &best) {
                Some(true) => self.best = Some(row),
                Some(false) => {}
                None => self.refused = true,
            },
            _ => {
                if let Some(done) = self.best.replace(row) {
                    self.add_entry(done);
                }
            }
        }
    }

    /// Whether `row` beats `kept` for their key, or `None` when they tie on
    /// time but differ in what they count: PostgreSQL's order breaks such
    /// ties on the labels' text, which is left to the usual path.
    fn better(&self, row: &PredictionRow, kept: &PredictionRow) -> Option<bool> {
        Some(match (row.countable(), kept.countable()) {
            (true, false) => true,
            (false, _) => false,
            (true, true) if row.at == kept.at => {
                if (row.predicted, row.segment, row.weight.to_bits()) != (kept.predicted, kept.segment, kept.weight.to_bits()) {
                    return None;
                }
                false
            }
            (true, true) => (row.at < kept.at) == self.first,
        })
    }

    /// Adds a key's best row: its entry, and its cell when it counts.
    fn add_entry(&mut self, row: PredictionRow) {
        let entry = if row.countable() {
            let Some(bucket) = self.buckets.of(row.at) else {
                self.refused = true;
                return;
            };
            let cell = self.cells.entry((bucket, row.segment, row.predicted)).or_insert((0, 0.0));
            cell.0 += 1;
            cell.1 += row.weight;
            Entry {
                key: row.key,
                bucket: Some(bucket),
                segment: Some(Text::Segment(row.segment).code()),
                predicted: Some(Text::Label(row.predicted).code()),
                actual: self.absent_is_false.then(|| Text::Absent.code()),
                weight: row.weight,
            }
        } else {
            Entry { key: row.key, bucket: None, segment: None, predicted: None, actual: None, weight: 0.0 }
        };
        self.run.push(entry);
        if self.run.len() == CHUNK_KEYS {
            self.close_run();
        }
    }

    /// Encodes the run of entries so far.
    fn close_run(&mut self) {
        if self.run.is_empty() {
            return;
        }
        let mut texts = Vec::new();
        for code in self.run.iter().flat_map(|e| [e.segment, e.predicted, e.actual]).flatten() {
            let code = code as usize;
            if code >= self.local.len() {
                self.local.resize(code + 1, UNUSED);
            }
            if self.local[code] == UNUSED {
                self.local[code] = texts.len() as u32;
                texts.push(Text::from_code(code as u32));
            }
        }
        let local = &self.local;
        let entries = encode_entries(&self.run, |code| local[code as usize]);
        for text in &texts {
            self.local[text.code() as usize] = UNUSED;
        }
        let (lo, hi) = (self.run[0].key, self.run[self.run.len() - 1].key);
        self.runs.push(EncodedRun { lo, hi, texts, entries });
        self.run.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitors::claims::Chunk;
    use std::collections::BTreeMap;

    const MINUTE: i64 = 60_000_000;
    const BUCKETS: Buckets = Buckets { stride: Some(5 * MINUTE), origin: 0 };

    fn text(t: Text) -> &'static str {
        match t {
            Text::Absent => "false",
            Text::Label(0) => "true",
            Text::Label(_) => "other",
            Text::Segment(0) => "{}",
            Text::Segment(_) => "{\"s\": 1}",
        }
    }

    /// A small deterministic generator (xorshift), to need no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Rows of `keys` keys, some predicted twice or three times, some not counted.
    fn load(keys: i64, seed: u64) -> Vec<PredictionRow> {
        let mut rng = Rng(seed);
        let mut rows = Vec::new();
        for key in 0..keys {
            for _ in 0..1 + rng.next(3) * u64::from(key % 4 == 0) {
                let countable = rng.next(10) != 0;
                rows.push(PredictionRow {
                    key: 3 * key - 100,
                    // Distinct times within a key: no ties.
                    at: 1000 * MINUTE + rng.next(600) as i64 * MINUTE + rows.len() as i64,
                    weight: if countable { [0.5, 1.0, 2.0][rng.next(3) as usize] } else { 0.0 },
                    predicted: if countable { rng.next(2) as u32 } else { PredictionRow::NOT_COUNTED },
                    segment: rng.next(2) as u32,
                });
            }
        }
        rows
    }

    fn count(rows: &[PredictionRow], first: bool, batch: usize) -> Option<Counted> {
        let mut counter = Counter::new(first, BUCKETS, true, rows.len());
        for part in rows.chunks(batch) {
            counter.push(part);
        }
        counter.finish()
    }

    /// Each key's best row, chosen the plain way: countable rows first, then
    /// by time.
    fn expected_best(rows: &[PredictionRow], first: bool) -> BTreeMap<i64, PredictionRow> {
        let mut best: BTreeMap<i64, PredictionRow> = BTreeMap::new();
        for row in rows {
            let rank = |r: &PredictionRow| (!r.countable(), if first { r.at } else { -r.at });
            best.entry(row.key).and_modify(|b| if rank(row) < rank(b) { *b = *row }).or_insert(*row);
        }
        best
    }

    #[test]
    fn counts_each_keys_best_row_into_cells_and_chunks() {
        for first in [true, false] {
            let rows = load(10_000, 7);
            let counted = count(&rows, first, 999).expect("counted");
            let best = expected_best(&rows, first);
            let mut cells: BTreeMap<(i64, u32, u32), (i64, f64)> = BTreeMap::new();
            for row in best.values().filter(|r| r.countable()) {
                let cell = cells.entry((BUCKETS.of(row.at).unwrap(), row.segment, row.predicted)).or_default();
                cell.0 += 1;
                cell.1 += row.weight;
            }
            assert_eq!(counted.cells.into_iter().collect::<BTreeMap<_, _>>(), cells);
            assert_eq!((counted.lo, counted.hi), (-100, 3 * 9_999 - 100));
            let decoded: Vec<Entry> = counted
                .runs
                .iter()
                .flat_map(|run| {
                    let chunk = Chunk::decode(&run.assemble(text)).unwrap();
                    assert_eq!((run.lo, run.hi), (chunk.entries[0].key, chunk.entries[chunk.entries.len() - 1].key));
                    chunk.entries.iter().map(|e| (e.key, e.bucket, chunk.text(e.predicted).map(str::to_owned))).collect::<Vec<_>>()
                })
                .map(|(key, bucket, predicted)| Entry { key, bucket, segment: None, predicted: predicted.map(|p| u32::from(p == "true")), actual: None, weight: 0.0 })
                .collect();
            assert_eq!(counted.runs.len(), 10_000usize.div_ceil(CHUNK_KEYS));
            assert_eq!(decoded.len(), best.len());
            for (entry, (key, row)) in decoded.iter().zip(&best) {
                assert_eq!(entry.key, *key);
                assert_eq!(entry.bucket, row.countable().then(|| BUCKETS.of(row.at).unwrap()));
                assert_eq!(entry.predicted, row.countable().then_some(u32::from(row.predicted == 0)));
            }
        }
    }

    #[test]
    fn any_row_order_counts_alike() {
        let rows = load(5_000, 11);
        let in_order = count(&rows, true, 4096).unwrap();
        let mut shuffled = rows.clone();
        let mut rng = Rng(3);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.next(i as u64 + 1) as usize);
        }
        // Out of order from the first rows, and only after many rows in order.
        let late = [rows[..3000].to_vec(), shuffled.clone()].concat();
        let late_expected = count(&[rows[..3000].to_vec(), rows.clone()].concat(), true, 4096).unwrap();
        for (load, expected) in [(&shuffled, &in_order), (&late, &late_expected)] {
            let got = count(load, true, 777).unwrap();
            assert_eq!(got.runs, expected.runs);
            assert_eq!(got.cells, expected.cells);
        }
    }

    #[test]
    fn ties_and_unbinnable_times_refuse_the_load() {
        let row = PredictionRow { key: 1, at: 10 * MINUTE, weight: 1.0, predicted: 0, segment: 0 };
        // The same event twice counts once; two labels at one time are refused.
        assert!(count(&[row, row], true, 10).is_some());
        assert!(count(&[row, PredictionRow { predicted: 1, ..row }], true, 10).is_none());
        // Before the origin, or a width in months: date_bin's business.
        assert!(count(&[PredictionRow { at: -1, ..row }], true, 10).is_none());
        let months = Counter::new(true, Buckets { stride: None, origin: 0 }, true, 1);
        let mut months = months;
        months.push(&[row]);
        assert!(months.finish().is_none());
        // A row that does not count needs no bucket.
        assert!(count(&[PredictionRow { at: -1, predicted: PredictionRow::NOT_COUNTED, ..row }], true, 10).is_some());
        assert!(count(&[], true, 10).is_none());
    }
}
