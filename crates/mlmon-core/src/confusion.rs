//! The mergeable confusion matrix behind every classification metric.
//!
//! Cells are keyed by (actual, predicted) label ids and hold both the row count
//! and the summed sample weight. Unweighted inputs add weight 1.0, so metrics can
//! always be read from the weights (scikit-learn's `sample_weight` semantics)
//! while the counts stay exact integers for intervals and `tp()`/`fp()`.

use std::collections::HashMap;

use crate::error::{check_weight, count_overflow, Error, Result, MAX_COUNT};

/// Most distinct labels a matrix accepts. Beyond this a "class" column is almost
/// surely an identifier, and the state would no longer be small.
pub const MAX_LABELS: usize = 10_000;
/// Most non-empty cells a matrix accepts (bounds memory and state size).
pub const MAX_CELLS: usize = 1_000_000;
/// Most bytes of label text a matrix holds: 10,000 labels of a megabyte
/// each would take a backend's memory (each label is kept twice).
pub const MAX_LABEL_BYTES: usize = 64 << 20;

/// What the labels are; decides ordering, defaults and which merges make sense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LabelKind {
    /// `boolean` inputs or thresholded scores; positive class is `true`.
    Binary,
    /// `text` labels, ordered by code point like Python's `sorted`.
    Text,
    /// `bigint` labels, ordered numerically.
    Integer,
}

impl LabelKind {
    pub fn name(self) -> &'static str {
        match self {
            LabelKind::Binary => "binary",
            LabelKind::Text => "text",
            LabelKind::Integer => "integer",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "binary" => Some(LabelKind::Binary),
            "text" => Some(LabelKind::Text),
            "integer" => Some(LabelKind::Integer),
            _ => None,
        }
    }

    /// Whether `label` is a well-formed label of this kind.
    pub fn accepts(self, label: &str) -> bool {
        match self {
            LabelKind::Binary => label == "false" || label == "true",
            LabelKind::Text => true,
            // Canonical text only: "007", "+7" and "-0" would be classes apart
            // from "7" and "0" here but the same bigint elsewhere.
            LabelKind::Integer => label.parse::<i64>().is_ok_and(|v| v.to_string() == label),
        }
    }
}

/// Number of rows and their summed weight.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cell {
    pub n: u64,
    pub w: f64,
}

impl Cell {
    /// Adds `other`; callers have checked that the matrix total stays within
    /// [`MAX_COUNT`], which bounds every cell too.
    fn absorb(&mut self, other: Cell) {
        self.n += other.n;
        self.w += other.w;
    }
}

#[derive(Clone, Debug)]
pub struct Confusion {
    kind: LabelKind,
    weighted: bool,
    labels: Vec<String>,
    index: HashMap<String, u32>,
    cells: HashMap<(u32, u32), Cell>,
    /// Sum of every cell's `n`, kept at most [`MAX_COUNT`] so that no cell or
    /// total can overflow and every count fits a bigint. Decoded states are
    /// untrusted: two of them may each claim 2^63 rows.
    rows: u64,
    /// Bytes of `labels`, at most [`MAX_LABEL_BYTES`].
    label_bytes: usize,
}

impl PartialEq for Confusion {
    /// Equal when they describe the same matrix, whatever the interning order.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.weighted == other.weighted && self.sorted_cells() == other.sorted_cells()
    }
}

impl Confusion {
    pub fn new(kind: LabelKind) -> Self {
        let mut cm = Confusion { kind, weighted: false, labels: Vec::new(), index: HashMap::new(), cells: HashMap::new(), rows: 0, label_bytes: 0 };
        if kind == LabelKind::Binary {
            // Fixed ids so the boolean fast path never hashes a string.
            cm.intern("false").expect("two labels fit");
            cm.intern("true").expect("two labels fit");
        }
        cm
    }

    pub fn kind(&self) -> LabelKind {
        self.kind
    }

    pub fn is_weighted(&self) -> bool {
        self.weighted
    }

    pub fn mark_weighted(&mut self) {
        self.weighted = true;
    }

    fn intern(&mut self, label: &str) -> Result<u32> {
        if let Some(&id) = self.index.get(label) {
            return Ok(id);
        }
        if self.label_bytes + label.len() > MAX_LABEL_BYTES {
            return Err(Error::LimitExceeded {
                message: format!("confusion matrix labels take more than {} MB", MAX_LABEL_BYTES >> 20),
                hint: "labels this long are usually not classes; map them to short names first".into(),
            });
        }
        if self.labels.len() >= MAX_LABELS {
            return Err(Error::LimitExceeded {
                message: format!("confusion matrix has more than {MAX_LABELS} distinct labels"),
                hint: "a label column with this many values is usually an identifier; bucket the classes first".into(),
            });
        }
        let id = self.labels.len() as u32;
        self.label_bytes += label.len();
        self.labels.push(label.to_owned());
        self.index.insert(label.to_owned(), id);
        Ok(id)
    }

    fn add_cell(&mut self, actual: u32, predicted: u32, cell: Cell) -> Result<()> {
        if !self.cells.contains_key(&(actual, predicted)) && self.cells.len() >= MAX_CELLS {
            return Err(Error::LimitExceeded {
                message: format!("confusion matrix has more than {MAX_CELLS} non-empty cells"),
                hint: "reduce the number of distinct labels".into(),
            });
        }
        self.count_rows(cell.n)?;
        self.cells.entry((actual, predicted)).or_default().absorb(cell);
        Ok(())
    }

    fn count_rows(&mut self, n: u64) -> Result<()> {
        self.rows = self.rows.checked_add(n).filter(|&t| t <= MAX_COUNT).ok_or_else(count_overflow)?;
        Ok(())
    }

    /// Adds one observation by label text. `weight` must already be validated.
    pub fn add(&mut self, actual: &str, predicted: &str, weight: f64) -> Result<()> {
        for label in [actual, predicted] {
            if !self.kind.accepts(label) {
                return Err(Error::BadText(format!("label {label:?} is not a valid {} label", self.kind.name())));
            }
        }
        let a = self.intern(actual)?;
        let p = self.intern(predicted)?;
        self.add_cell(a, p, Cell { n: 1, w: weight })
    }

    /// Adds a whole cell (used by decoders and by monitors building from rollups).
    pub fn add_counts(&mut self, actual: &str, predicted: &str, cell: Cell) -> Result<()> {
        for label in [actual, predicted] {
            if !self.kind.accepts(label) {
                return Err(Error::invalid("label", format!("label {label:?} is not a valid {} label", self.kind.name()), "binary labels are 'true' and 'false'; integer labels must parse as bigint"));
            }
        }
        check_weight("weight", cell.w)?;
        if cell.n == 0 {
            return Ok(());
        }
        let a = self.intern(actual)?;
        let p = self.intern(predicted)?;
        self.add_cell(a, p, cell)
    }

    /// Adds a binary observation; ids 0 and 1 are `false` and `true`.
    pub fn add_binary(&mut self, actual: bool, predicted: bool, cell: Cell) -> Result<()> {
        debug_assert_eq!(self.kind, LabelKind::Binary);
        self.count_rows(cell.n)?;
        self.cells.entry((actual as u32, predicted as u32)).or_default().absorb(cell);
        Ok(())
    }

    /// Adds every cell of `other` into `self`.
    pub fn merge(&mut self, other: &Confusion) -> Result<()> {
        if self.kind != other.kind {
            return Err(Error::invalid(
                "state",
                format!("cannot merge a {} confusion matrix with a {} one", self.kind.name(), other.kind.name()),
                "merge only matrices built from the same kind of labels (boolean, text or bigint)",
            ));
        }
        // Checked up front so that a failed merge leaves `self` unchanged.
        self.rows.checked_add(other.rows).filter(|&t| t <= MAX_COUNT).ok_or_else(count_overflow)?;
        self.weighted |= other.weighted;
        for (&(a, p), &cell) in &other.cells {
            let a = self.intern(&other.labels[a as usize])?;
            let p = self.intern(&other.labels[p as usize])?;
            self.add_cell(a, p, cell)?;
        }
        Ok(())
    }

    /// Labels that occur as actual or predicted, in scikit-learn's sorted order.
    pub fn labels(&self) -> Vec<&str> {
        let mut present = vec![false; self.labels.len()];
        for (&(a, p), cell) in &self.cells {
            if cell.n > 0 {
                present[a as usize] = true;
                present[p as usize] = true;
            }
        }
        let mut out: Vec<&str> =
            self.labels.iter().zip(present).filter(|(_, keep)| *keep).map(|(l, _)| l.as_str()).collect();
        self.sort_labels(&mut out);
        out
    }

    /// Sorts labels as scikit-learn would sort the original values.
    pub fn sort_labels(&self, labels: &mut [&str]) {
        match self.kind {
            LabelKind::Integer => labels.sort_by_key(|l| l.parse::<i64>().unwrap_or(i64::MIN)),
            LabelKind::Binary | LabelKind::Text => labels.sort_unstable(),
        }
    }

    /// Whether `label` occurs in the matrix (binary matrices know both labels).
    pub fn knows_label(&self, label: &str) -> bool {
        self.index.contains_key(label) && (self.kind == LabelKind::Binary || self.labels().contains(&label))
    }

    /// Non-empty cells as (actual, predicted, cell), in label order.
    pub fn sorted_cells(&self) -> Vec<(&str, &str, Cell)> {
        let order = self.labels();
        let rank: HashMap<&str, usize> = order.iter().enumerate().map(|(i, l)| (*l, i)).collect();
        let mut out: Vec<(&str, &str, Cell)> = self
            .cells
            .iter()
            .filter(|(_, c)| c.n > 0)
            .map(|(&(a, p), &c)| (self.labels[a as usize].as_str(), self.labels[p as usize].as_str(), c))
            .collect();
        out.sort_by_key(|(a, p, _)| (rank[a], rank[p]));
        out
    }

    /// The cell for (actual, predicted), empty when absent.
    pub fn cell(&self, actual: &str, predicted: &str) -> Cell {
        match (self.index.get(actual), self.index.get(predicted)) {
            (Some(&a), Some(&p)) => self.cells.get(&(a, p)).copied().unwrap_or_default(),
            _ => Cell::default(),
        }
    }

    pub fn total(&self) -> Cell {
        Cell { n: self.rows, w: self.cells.values().map(|c| c.w).sum() }
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_like_python() {
        let mut cm = Confusion::new(LabelKind::Integer);
        for (a, p) in [("10", "2"), ("-3", "10")] {
            cm.add(a, p, 1.0).unwrap();
        }
        assert_eq!(cm.labels(), vec!["-3", "2", "10"]);
    }

    #[test]
    fn counts_beyond_bigint_are_refused_not_wrapped() {
        let big = Cell { n: MAX_COUNT / 2 + 1, w: 1.0 };
        let mut a = Confusion::new(LabelKind::Binary);
        a.add_counts("true", "true", big).unwrap();
        let mut b = Confusion::new(LabelKind::Binary);
        b.add_counts("false", "true", big).unwrap();
        // Either state alone is fine; together they pass bigint.
        assert!(matches!(a.merge(&b), Err(Error::LimitExceeded { .. })));
        assert_eq!(a.total().n, MAX_COUNT / 2 + 1, "a failed merge leaves the matrix unchanged");
        assert!(a.add_counts("false", "false", big).is_err());
        let mut c = Confusion::new(LabelKind::Text);
        assert!(c.add_counts("x", "y", Cell { n: MAX_COUNT + 1, w: 1.0 }).is_err());
        assert!(c.add_counts("x", "y", Cell { n: u64::MAX, w: 1.0 }).is_err());
        assert!(c.is_empty());
    }

    #[test]
    fn merge_rejects_other_kind() {
        let mut a = Confusion::new(LabelKind::Binary);
        let b = Confusion::new(LabelKind::Text);
        assert!(matches!(a.merge(&b), Err(Error::InvalidArgument { .. })));
    }

    #[test]
    fn label_limit_is_an_error_not_an_allocation() {
        let mut cm = Confusion::new(LabelKind::Text);
        for i in 0..MAX_LABELS {
            cm.add(&i.to_string(), &i.to_string(), 1.0).unwrap();
        }
        assert!(matches!(cm.add("one more", "x", 1.0), Err(Error::LimitExceeded { .. })));
    }

    #[test]
    fn integer_kind_refuses_non_integers() {
        let mut cm = Confusion::new(LabelKind::Integer);
        assert!(cm.add("1.5", "1", 1.0).is_err());
    }
}
