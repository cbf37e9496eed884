//! Restating a statement's keys without a claim per key: the pure half of
//! the extension's statement path (`src/monitors/bulk/statement.rs`), which
//! runs any large statement on a monitored table (INSERT/COPY, UPDATE,
//! DELETE, on predictions or outcomes) while it holds the monitor's bulk
//! lock exclusively, so no other writer is in flight on any key.
//!
//! For each key the statement touched, [`resolve`] takes the key's stored
//! state (its keys row or chunk entry) and what the transition tables say
//! about the key's rows after the statement, and gives the new state, or
//! asks for the key to be recounted from the raw tables when the statement
//! alone cannot tell (several rows per key without a unique index, or an
//! outcome whose combination is not stored). A key with no raw rows left
//! gets no state, so a later load sees it as new.
//!
//! States name strings by ids of one [`Texts`] per statement.

use crate::fast_hash::FastMap;
use crate::monitors::actual::Actual;
use crate::monitors::claims::{Chunk, Entry, CHUNK_KEYS};

/// Strings interned once, so that cells are keyed by small integers.
#[derive(Default)]
pub struct Texts {
    index: FastMap<String, u32>,
    texts: Vec<String>,
}

impl Texts {
    pub fn intern(&mut self, text: &str) -> u32 {
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        self.texts.push(text.to_owned());
        self.index.insert(text.to_owned(), (self.texts.len() - 1) as u32);
        (self.texts.len() - 1) as u32
    }

    /// The id of a text interned earlier.
    pub fn id(&self, text: &str) -> Option<u32> {
        self.index.get(text).copied()
    }

    /// The text of an interned id.
    pub fn text(&self, id: u32) -> &str {
        &self.texts[id as usize]
    }
}

/// Rollup changes by cell (bucket, segment, predicted, actual as interned
/// strings): count and weight.
pub type Cells = FastMap<(i64, u32, u32, Option<u32>), (i64, f64)>;


/// A key's stored state. `bucket` `None`: the key has raw rows but counts
/// nowhere (a placeholder); `segment` and `predicted` then mean nothing.
/// `actual`: for a counted key, its actual label (`None`: NULL); for a
/// placeholder, its outcome rows' combined label when known (`None`:
/// unknown, as keys rows and older chunks store placeholders).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct State {
    pub bucket: Option<i64>,
    pub segment: u32,
    pub predicted: u32,
    pub actual: Option<u32>,
    pub weight: f64,
}

impl State {
    pub fn placeholder(actual: Option<u32>) -> State {
        State { bucket: None, segment: 0, predicted: 0, actual, weight: 0.0 }
    }

    pub fn counted(&self) -> bool {
        self.bucket.is_some()
    }
}

/// A key's predictions after the statement, as its transition tables tell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Predictions {
    /// The statement was on the outcomes table.
    Unchanged,
    /// The tables must be read (several prediction rows per key may exist).
    Unknown,
    /// No prediction rows are left.
    Gone,
    /// Rows are left and none counts.
    Uncounted,
    /// The counted prediction.
    Counted { bucket: i64, segment: u32, predicted: u32, weight: f64 },
}

/// A key's outcomes after the statement, as its transition tables tell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcomes {
    /// The statement was on the predictions table.
    Unchanged,
    /// The tables must be read.
    Unknown,
    /// Rows were added to those there (an INSERT): these, combined.
    Added(Actual),
    /// The key's outcome rows are exactly the statement's new rows, combined
    /// (a unique outcome key); `None` when none is left.
    Exactly(Option<Actual>),
}

/// What becomes of a key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resolution {
    /// Its new state; `None`: no raw rows are left, so no state.
    Set(Option<State>),
    /// Read the raw tables for it.
    Recount,
}

/// What is known of a key's outcome rows from its stored state.
enum Known {
    None,
    /// Rows combining to this label (`None`: NULL).
    Rows(Option<u32>),
    Unknown,
}

/// `absent`: the actual label of a key without outcome rows when it differs
/// from NULL (`false` for a monitor without an actual column).
fn known_outcomes(old: Option<&State>, absent: Option<u32>) -> Known {
    match old {
        // Every key with raw rows has a state: no state, no rows.
        None => Known::None,
        Some(s) => match s.actual {
            a if absent.is_some() && a == absent => Known::None,
            Some(a) => Known::Rows(Some(a)),
            None => Known::Unknown,
        },
    }
}

/// The new state of a key whose old state is `old`, given its predictions
/// and outcomes after the statement (one of them `Unchanged`).
pub fn resolve(old: Option<&State>, predictions: Predictions, outcomes: Outcomes, absent: Option<u32>, texts: &mut Texts) -> Resolution {
    use Resolution::{Recount, Set};
    let label = |known: Known| match known {
        Known::None => Some(absent),
        Known::Rows(a) => Some(a),
        Known::Unknown => None,
    };
    match (predictions, outcomes) {
        (Predictions::Unchanged, Outcomes::Unchanged) => Set(old.copied()),
        (Predictions::Unknown, _) | (_, Outcomes::Unknown) => Recount,
        (Predictions::Counted { bucket, segment, predicted, weight }, Outcomes::Unchanged) => {
            match label(known_outcomes(old, absent)) {
                Some(actual) => Set(Some(State { bucket: Some(bucket), segment, predicted, actual, weight })),
                None => Recount,
            }
        }
        (Predictions::Uncounted, Outcomes::Unchanged) => {
            let actual = match known_outcomes(old, absent) {
                Known::None => absent,
                Known::Rows(a) => a,
                Known::Unknown => None,
            };
            Set(Some(State::placeholder(actual)))
        }
        (Predictions::Gone, Outcomes::Unchanged) => match known_outcomes(old, absent) {
            Known::None => Set(None),
            Known::Rows(a) => Set(Some(State::placeholder(a))),
            Known::Unknown => Recount,
        },
        (Predictions::Unchanged, outcomes) => {
            // The key's outcome rows after the statement.
            let after = match outcomes {
                Outcomes::Exactly(None) => Known::None,
                Outcomes::Exactly(Some(x)) => Known::Rows(intern(texts, x.after(None))),
                Outcomes::Added(x) => match old {
                    None => Known::Rows(intern(texts, x.after(None))),
                    Some(s) if s.counted() || s.actual.is_some() => {
                        let before = s.actual.map(|a| texts.text(a).to_owned());
                        Known::Rows(intern(texts, x.after(before.as_deref())))
                    }
                    Some(_) => Known::Unknown,
                },
                _ => unreachable!("handled above"),
            };
            match (old, after) {
                (Some(s), after) if s.counted() => {
                    let actual = match after {
                        Known::None => absent,
                        Known::Rows(a) => a,
                        Known::Unknown => unreachable!("a counted key's label is known"),
                    };
                    Set(Some(State { actual, ..*s }))
                }
                (_, Known::Rows(a)) => Set(Some(State::placeholder(a))),
                (_, Known::Unknown) => Set(Some(State::placeholder(None))),
                (None, Known::None) => Set(None),
                // A placeholder whose outcomes are gone: it may still have
                // prediction rows that do not count.
                (Some(_), Known::None) => Recount,
            }
        }
        // Both tables changed in one statement (one table serving both): read them.
        _ => Recount,
    }
}

fn intern(texts: &mut Texts, text: Option<String>) -> Option<u32> {
    text.map(|t| texts.intern(&t))
}

/// Adds a state change to the rollup changes by cell: minus what `old`
/// counted, plus what `new` counts.
pub fn add_change(cells: &mut Cells, old: Option<&State>, new: Option<&State>) {
    if old == new {
        return;
    }
    for (state, sign) in [(old, -1), (new, 1)] {
        if let Some(State { bucket: Some(bucket), segment, predicted, actual, weight }) = state {
            let cell = cells.entry((*bucket, *segment, *predicted, *actual)).or_insert((0, 0.0));
            cell.0 += sign;
            cell.1 += sign as f64 * weight;
        }
    }
}

/// A chunk as stored: its range, and its entries as states (`chunk_states`).
pub struct StoredChunk {
    pub lo: i64,
    pub hi: i64,
    pub states: Vec<(i64, State)>,
}

impl StoredChunk {
    /// A decoded chunk, its strings interned in `texts`.
    pub fn new(chunk: &Chunk, texts: &mut Texts) -> StoredChunk {
        let states = chunk_states(chunk, texts);
        StoredChunk { lo: states[0].0, hi: states[states.len() - 1].0, states }
    }
}

/// Chunk `chunk`'s entries as states by key, strings as ids of `texts`.
pub fn chunk_states(chunk: &Chunk, texts: &mut Texts) -> Vec<(i64, State)> {
    let global: Vec<u32> = chunk.texts.iter().map(|t| texts.intern(t)).collect();
    let id = |i: Option<u32>| i.map(|i| global[i as usize]);
    chunk
        .entries
        .iter()
        .map(|e| {
            let state = State {
                bucket: e.bucket,
                segment: id(e.segment).unwrap_or(0),
                predicted: id(e.predicted).unwrap_or(0),
                actual: id(e.actual),
                weight: e.weight,
            };
            (e.key, state)
        })
        .collect()
}

/// Rewrites chunks after a statement. `chunks`: every chunk whose range meets
/// the statement's keys, ascending and not overlapping; `changes`: ascending
/// keys with their new entry state (`None`: no entry). A changed key inside a
/// chunk's range goes into that chunk; others form new chunks that span no
/// existing chunk's range, so chunks never overlap. Returns the indexes of
/// `chunks` replaced, and the chunks that replace them and hold the new keys,
/// none over [`CHUNK_KEYS`] entries.
pub fn rewrite_chunks(chunks: &[StoredChunk], changes: &[(i64, Option<State>)], texts: &Texts) -> (Vec<usize>, Vec<Chunk>) {
    let mut replaced = Vec::new();
    let mut written = Vec::new();
    let mut next = 0;
    let mut homeless: Vec<(i64, State)> = Vec::new();
    let flush = |homeless: &mut Vec<(i64, State)>, written: &mut Vec<Chunk>| {
        for run in homeless.chunks(CHUNK_KEYS) {
            written.push(to_chunk(run.iter().copied(), texts));
        }
        homeless.clear();
    };
    for (index, stored) in chunks.iter().enumerate() {
        // Keys before this chunk's range: new chunks, closed at its start.
        while next < changes.len() && changes[next].0 < stored.lo {
            if let (key, Some(state)) = changes[next] {
                homeless.push((key, state));
            }
            next += 1;
        }
        flush(&mut homeless, &mut written);
        let start = next;
        while next < changes.len() && changes[next].0 <= stored.hi {
            next += 1;
        }
        if start == next {
            continue;
        }
        let mut merged: Vec<(i64, State)> = Vec::with_capacity(stored.states.len() + next - start);
        let mut pending = changes[start..next].iter().peekable();
        for &(key, state) in &stored.states {
            while let Some(&(k, change)) = pending.next_if(|&&(k, _)| k < key) {
                merged.extend(change.map(|s| (k, s)));
            }
            match pending.next_if(|&&(k, _)| k == key) {
                Some(&(_, change)) => merged.extend(change.map(|s| (key, s))),
                None => merged.push((key, state)),
            }
        }
        for &(k, change) in pending {
            merged.extend(change.map(|s| (k, s)));
        }
        replaced.push(index);
        for run in merged.chunks(CHUNK_KEYS) {
            written.push(to_chunk(run.iter().copied(), texts));
        }
    }
    for &(key, change) in &changes[next..] {
        if let Some(state) = change {
            homeless.push((key, state));
        }
    }
    flush(&mut homeless, &mut written);
    (replaced, written)
}

/// A chunk of these states (ascending keys).
fn to_chunk(states: impl Iterator<Item = (i64, State)>, texts: &Texts) -> Chunk {
    let mut chunk = Chunk::default();
    for (key, s) in states {
        let counted = s.counted();
        let entry = Entry {
            key,
            bucket: s.bucket,
            segment: counted.then(|| chunk.intern(texts.text(s.segment))),
            predicted: counted.then(|| chunk.intern(texts.text(s.predicted))),
            actual: s.actual.map(|a| chunk.intern(texts.text(a))),
            weight: if counted { s.weight } else { 0.0 },
        };
        chunk.entries.push(entry);
    }
    chunk
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Texts, Option<u32>, u32, u32, u32) {
        let mut texts = Texts::default();
        let f = texts.intern("false");
        let t = texts.intern("true");
        let seg = texts.intern("{}");
        let label = texts.intern("true");
        (texts, Some(f), t, seg, label)
    }

    fn counted(bucket: i64, seg: u32, label: u32, actual: Option<u32>) -> State {
        State { bucket: Some(bucket), segment: seg, predicted: label, actual, weight: 1.0 }
    }

    /// A presence monitor: outcome rows are known from the stored label.
    #[test]
    fn deleted_predictions_leave_a_placeholder_only_when_outcomes_remain() {
        let (mut texts, absent, t, seg, label) = setup();
        let labeled = counted(0, seg, label, Some(t));
        let unlabeled = counted(0, seg, label, absent);
        let r = |old: &State, texts: &mut Texts| resolve(Some(old), Predictions::Gone, Outcomes::Unchanged, absent, texts);
        assert_eq!(r(&labeled, &mut texts), Resolution::Set(Some(State::placeholder(Some(t)))));
        assert_eq!(r(&unlabeled, &mut texts), Resolution::Set(None));
        // With an actual column, a NULL label does not say whether rows exist.
        let null = counted(0, seg, label, None);
        assert_eq!(resolve(Some(&null), Predictions::Gone, Outcomes::Unchanged, None, &mut texts), Resolution::Recount);
    }

    #[test]
    fn a_reloaded_key_takes_its_placeholders_label() {
        let (mut texts, absent, t, seg, label) = setup();
        let new = Predictions::Counted { bucket: 7, segment: seg, predicted: label, weight: 2.0 };
        let placeholder = State::placeholder(Some(t));
        assert_eq!(
            resolve(Some(&placeholder), new, Outcomes::Unchanged, absent, &mut texts),
            Resolution::Set(Some(State { weight: 2.0, ..counted(7, seg, label, Some(t)) }))
        );
        assert_eq!(resolve(None, new, Outcomes::Unchanged, absent, &mut texts), Resolution::Set(Some(State { weight: 2.0, ..counted(7, seg, label, absent) })));
        assert_eq!(resolve(Some(&State::placeholder(None)), new, Outcomes::Unchanged, absent, &mut texts), Resolution::Recount);
    }

    #[test]
    fn outcomes_change_only_the_label() {
        let (mut texts, absent, t, seg, label) = setup();
        let unlabeled = counted(0, seg, label, absent);
        let labeled = counted(0, seg, label, Some(t));
        let out = |old: Option<&State>, o: Outcomes, texts: &mut Texts| resolve(old, Predictions::Unchanged, o, absent, texts);
        assert_eq!(out(Some(&unlabeled), Outcomes::Added(Actual::Present), &mut texts), Resolution::Set(Some(labeled)));
        assert_eq!(out(Some(&labeled), Outcomes::Exactly(None), &mut texts), Resolution::Set(Some(unlabeled)));
        assert_eq!(out(None, Outcomes::Added(Actual::Present), &mut texts), Resolution::Set(Some(State::placeholder(Some(t)))));
        assert_eq!(out(Some(&State::placeholder(Some(t))), Outcomes::Exactly(None), &mut texts), Resolution::Recount);
        // Integer labels combine with the stored one (the greatest wins).
        let seven = texts.intern("7");
        let old = counted(0, seg, label, Some(seven));
        let nine = texts.id("9");
        assert_eq!(nine, None);
        match resolve(Some(&old), Predictions::Unchanged, Outcomes::Added(Actual::Integer(Some(9))), None, &mut texts) {
            Resolution::Set(Some(s)) => assert_eq!(texts.text(s.actual.unwrap()), "9"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn changes_count_minus_old_plus_new() {
        let (_, absent, t, seg, label) = setup();
        let mut cells = Cells::default();
        let a = counted(0, seg, label, absent);
        let b = counted(0, seg, label, Some(t));
        add_change(&mut cells, Some(&a), Some(&b));
        add_change(&mut cells, Some(&a), None);
        add_change(&mut cells, None, Some(&State::placeholder(Some(t))));
        assert_eq!(cells[&(0, seg, label, absent)], (-2, -2.0));
        assert_eq!(cells[&(0, seg, label, Some(t))], (1, 1.0));
        assert_eq!(cells.len(), 2);
    }

    fn stored(keys: impl Iterator<Item = i64>, texts: &mut Texts) -> StoredChunk {
        let mut chunk = Chunk::default();
        let seg = chunk.intern("{}");
        let label = chunk.intern("true");
        chunk.entries = keys
            .map(|key| Entry { key, bucket: Some(key * 10), segment: Some(seg), predicted: Some(label), actual: None, weight: 1.0 })
            .collect();
        StoredChunk::new(&chunk, texts)
    }

    /// Removed entries go, new keys join the chunk whose range holds them or
    /// new chunks that span no existing range; full chunks split.
    #[test]
    fn chunks_are_rewritten_without_overlap() {
        let (mut texts, _, t, seg, label) = setup();
        let chunks = vec![stored((100..200).step_by(2), &mut texts), stored((300..300 + 2 * CHUNK_KEYS as i64).step_by(2), &mut texts)];
        let state = |k: i64| Some(counted(k, seg, label, Some(t)));
        let mut changes: Vec<(i64, Option<State>)> = vec![(5, state(5)), (101, state(101)), (102, None), (150, state(150)), (250, state(250)), (301, state(301))];
        changes.push((300 + 2 * CHUNK_KEYS as i64 + 5, state(1)));
        let (replaced, written) = rewrite_chunks(&chunks, &changes, &texts);
        assert_eq!(replaced, vec![0, 1]);
        let ranges: Vec<(i64, i64, usize)> =
            written.iter().map(|c| (c.entries[0].key, c.entries[c.entries.len() - 1].key, c.entries.len())).collect();
        assert_eq!(ranges[0], (5, 5, 1));
        assert_eq!(ranges[1], (100, 198, 50)); // 50 even keys, one gone, 101 added
        assert_eq!(ranges[2], (250, 250, 1));
        assert_eq!((ranges[3].2, ranges[4].2), (CHUNK_KEYS, 1)); // 4096 keys and 301, split
        let beyond = 300 + 2 * CHUNK_KEYS as i64 + 5;
        assert_eq!(ranges[5], (beyond, beyond, 1));
        let first = &written[1];
        assert!(first.find(102).is_none());
        assert_eq!(first.find(150).unwrap().actual.map(|a| first.texts[a as usize].as_str()), Some("true"));
        assert_eq!(first.find(104).unwrap().bucket, Some(1040));
        for c in &written {
            assert!(c.entries.len() <= CHUNK_KEYS);
            assert_eq!(Chunk::decode(&c.encode()).unwrap(), *c);
        }
        // A chunk none of whose keys changed is left alone.
        let (replaced, written) = rewrite_chunks(&chunks, &[(250, state(250))], &texts);
        assert!(replaced.is_empty());
        assert_eq!(written.len(), 1);
    }
}
