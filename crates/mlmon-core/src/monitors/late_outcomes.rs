//! Late outcomes for keys a bulk load stored in claim chunks: each key's
//! actual label combined with its new outcomes (`actual`), and the rollup
//! changes that follow, without a keys row per key. The extension's bulk
//! path (`src/monitors/bulk`) finds the chunks and writes the results.

use crate::fast_hash::FastMap;
use crate::monitors::actual::Actual;
use crate::monitors::claims::{Chunk, Entry};

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

    /// The text of an interned id.
    pub fn text(&self, id: u32) -> &str {
        &self.texts[id as usize]
    }
}

/// Rollup changes by cell (bucket, segment, predicted, actual as interned
/// strings): count and weight.
pub type Cells = FastMap<(i64, u32, u32, Option<u32>), (i64, f64)>;

/// `chunk` with `outcomes` applied (keys inside its range, ascending): a
/// counted key's actual label combined with its new outcomes, a key with
/// outcomes only added as an entry without prediction. The rollup changes go
/// to `cells`.
pub fn apply_outcomes(chunk: &Chunk, outcomes: &[(i64, Actual)], texts: &mut Texts, cells: &mut Cells) -> Chunk {
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
                    let text = actual.after(before.map(|g| texts.text(g)));
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
                        result.texts.push(texts.text(g).to_owned());
                        (result.texts.len() - 1) as u32
                    })
                });
            }
        }
        result.entries.push(entry);
    }
    result
}

