//! Transition-time state of the confusion-matrix aggregates.
//!
//! The aggregate calls `add_*` once per row, so each input kind gets the
//! cheapest structure that can hold it: four fixed cells for booleans, a map of
//! integer pairs for `bigint` labels, and the interned [`Confusion`] for text.
//! Nothing is allocated per row on the boolean path.

use std::collections::HashMap;

use crate::confusion::{Cell, Confusion, LabelKind, MAX_CELLS};
use crate::error::{count_overflow, Error, Result};

#[derive(Clone, Debug)]
pub enum Accumulator {
    /// Cells indexed by `actual * 2 + predicted`.
    Binary { cells: [Cell; 4], weighted: bool },
    Integer { cells: HashMap<(i64, i64), Cell>, weighted: bool },
    Text(Confusion),
}

fn too_many_cells() -> Error {
    Error::LimitExceeded {
        message: format!("confusion matrix has more than {MAX_CELLS} non-empty cells"),
        hint: "a label column with this many values is usually an identifier; bucket the classes first".into(),
    }
}

impl Accumulator {
    pub fn new(kind: LabelKind, weighted: bool) -> Self {
        match kind {
            LabelKind::Binary => Accumulator::Binary { cells: [Cell::default(); 4], weighted },
            LabelKind::Integer => Accumulator::Integer { cells: HashMap::new(), weighted },
            LabelKind::Text => {
                let mut cm = Confusion::new(LabelKind::Text);
                if weighted {
                    cm.mark_weighted();
                }
                Accumulator::Text(cm)
            }
        }
    }

    #[inline]
    pub fn add_binary(&mut self, actual: bool, predicted: bool, weight: f64) {
        if let Accumulator::Binary { cells, .. } = self {
            let cell = &mut cells[(actual as usize) * 2 + predicted as usize];
            cell.n += 1;
            cell.w += weight;
        } else {
            unreachable!("boolean input reached a non-binary accumulator");
        }
    }

    pub fn add_integer(&mut self, actual: i64, predicted: i64, weight: f64) -> Result<()> {
        let Accumulator::Integer { cells, .. } = self else { unreachable!("bigint input reached a non-integer accumulator") };
        if cells.len() >= MAX_CELLS && !cells.contains_key(&(actual, predicted)) {
            return Err(too_many_cells());
        }
        let cell = cells.entry((actual, predicted)).or_default();
        cell.n += 1;
        cell.w += weight;
        Ok(())
    }

    pub fn add_text(&mut self, actual: &str, predicted: &str, weight: f64) -> Result<()> {
        let Accumulator::Text(cm) = self else { unreachable!("text input reached a non-text accumulator") };
        cm.add(actual, predicted, weight)
    }

    /// The state as a [`Confusion`], for serialization and accessors.
    pub fn to_confusion(&self) -> Result<Confusion> {
        match self {
            Accumulator::Binary { cells, weighted } => {
                let mut cm = Confusion::new(LabelKind::Binary);
                if *weighted {
                    cm.mark_weighted();
                }
                for (i, cell) in cells.iter().enumerate() {
                    if cell.n > 0 {
                        cm.add_binary(i >= 2, i % 2 == 1, *cell)?;
                    }
                }
                Ok(cm)
            }
            Accumulator::Integer { cells, weighted } => {
                let mut cm = Confusion::new(LabelKind::Integer);
                if *weighted {
                    cm.mark_weighted();
                }
                for (&(a, p), &cell) in cells {
                    cm.add_counts(&a.to_string(), &p.to_string(), cell)?;
                }
                Ok(cm)
            }
            Accumulator::Text(cm) => Ok(cm.clone()),
        }
    }

    /// Rebuilds an accumulator from a decoded state (parallel deserialization).
    pub fn from_confusion(cm: Confusion) -> Result<Self> {
        let mut acc = Accumulator::new(cm.kind(), cm.is_weighted());
        match &mut acc {
            Accumulator::Text(_) => return Ok(Accumulator::Text(cm)),
            Accumulator::Binary { cells, .. } => {
                for (a, p, cell) in cm.sorted_cells() {
                    cells[((a == "true") as usize) * 2 + (p == "true") as usize] = cell;
                }
            }
            Accumulator::Integer { cells, .. } => {
                for (a, p, cell) in cm.sorted_cells() {
                    let parse = |l: &str| l.parse::<i64>().map_err(|_| Error::BadBinary(format!("bad integer label {l:?}")));
                    cells.insert((parse(a)?, parse(p)?), cell);
                }
            }
        }
        Ok(acc)
    }

    pub fn merge(&mut self, other: &Accumulator) -> Result<()> {
        match (self, other) {
            (Accumulator::Binary { cells, weighted }, Accumulator::Binary { cells: more, weighted: w2 }) => {
                *weighted |= *w2;
                for (c, m) in cells.iter_mut().zip(more) {
                    c.n = c.n.checked_add(m.n).ok_or_else(count_overflow)?;
                    c.w += m.w;
                }
            }
            (Accumulator::Integer { cells, weighted }, Accumulator::Integer { cells: more, weighted: w2 }) => {
                *weighted |= *w2;
                for (&key, m) in more {
                    if cells.len() >= MAX_CELLS && !cells.contains_key(&key) {
                        return Err(too_many_cells());
                    }
                    let c = cells.entry(key).or_default();
                    // Decoded states are untrusted; to_confusion bounds the total.
                    c.n = c.n.checked_add(m.n).ok_or_else(count_overflow)?;
                    c.w += m.w;
                }
            }
            (Accumulator::Text(cm), Accumulator::Text(more)) => cm.merge(more)?,
            (this, other) => {
                let mut cm = this.to_confusion()?;
                cm.merge(&other.to_confusion()?)?;
                *this = Accumulator::from_confusion(cm)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_round_trips_through_confusion() {
        let mut acc = Accumulator::new(LabelKind::Binary, true);
        acc.add_binary(true, false, 2.0);
        acc.add_binary(false, false, 0.5);
        let cm = acc.to_confusion().unwrap();
        assert_eq!(cm.cell("true", "false").w, 2.0);
        let back = Accumulator::from_confusion(cm.clone()).unwrap();
        assert_eq!(back.to_confusion().unwrap(), cm);
    }

    #[test]
    fn merged_counts_beyond_bigint_are_refused() {
        let mut forged = Confusion::new(LabelKind::Binary);
        forged.add_counts("true", "true", Cell { n: crate::error::MAX_COUNT, w: 1.0 }).unwrap();
        let mut a = Accumulator::from_confusion(forged.clone()).unwrap();
        let b = Accumulator::from_confusion(forged).unwrap();
        // The cell itself still fits u64 after the merge; the matrix total does not fit bigint.
        a.merge(&b).unwrap();
        assert!(matches!(a.to_confusion(), Err(Error::LimitExceeded { .. })));
        a.merge(&b).unwrap_err();
    }

    #[test]
    fn merging_kinds_is_refused() {
        let mut a = Accumulator::new(LabelKind::Binary, false);
        a.add_binary(true, true, 1.0);
        let mut b = Accumulator::new(LabelKind::Integer, false);
        b.add_integer(1, 2, 1.0).unwrap();
        assert!(a.merge(&b).is_err());
    }
}
