//! The score state of a score monitor's rollup cell: what a cell (bucket,
//! segment, predicted label, actual label) knows about its rows' scores, kept
//! additive and retractable like the cell's count.
//!
//! Scores fall into [`SCORE_BINS`] fixed bins, (i/4000, (i+1)/4000] (0 in the
//! first), so that the edges of 10, 20, 100 or 1000 equal calibration bins
//! are bin edges too. Per bin the state keeps a signed row count and weight.
//! Ranking metrics read bins as tied scores: ROC AUC then moves by at most
//! ½·Σ_b p_b·n_b (the shares of positive and negative weight sharing a bin),
//! about 1/(3·4000) for scores spread over [0, 1]. Log loss, the Brier score
//! and the mean score are exact: the state keeps their sums per row, in
//! compensated sums ([`crate::compensated`]) so that retracted rows leave no
//! residue. A delta (one statement's change to a cell) has negative counts
//! where rows left; the sum of a cell's deltas never does.

use crate::compensated::Sum;
use crate::error::{Error, Result};
use crate::scores::{BinnedScores, ScoreSummary};
use crate::wire::{Reader, Writer};

pub const SCORE_BINS: usize = 4000;
const TAG: u8 = b'C';
const FLAG_WEIGHTED: u8 = 1;

/// The upper edge of bin `i - 1` (the lower edge of bin `i`).
pub fn bin_edge(i: usize) -> f64 {
    if i >= SCORE_BINS {
        1.0
    } else {
        i as f64 / SCORE_BINS as f64
    }
}

/// The bin of a score in [0, 1]: the `i` with edge(i) < score <= edge(i+1)
/// (numpy's searchsorted over the inner edges, side 'left', as scikit-learn's
/// calibration_curve bins a score on an edge).
pub fn score_bin(score: f64) -> usize {
    let mut i = ((score * SCORE_BINS as f64).ceil() as usize).saturating_sub(1).min(SCORE_BINS - 1);
    while i > 0 && bin_edge(i) >= score {
        i -= 1;
    }
    while i + 1 < SCORE_BINS && bin_edge(i + 1) < score {
        i += 1;
    }
    i
}

pub fn check_score(score: f64) -> Result<()> {
    if (0.0..=1.0).contains(&score) {
        Ok(())
    } else {
        Err(Error::invalid(
            "score",
            format!("score {score} is not a probability between 0 and 1"),
            "argument score: the monitor's score column must hold the probability of the positive class, in [0, 1]",
        ))
    }
}

/// Signed rows and weight of one bin.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BinTally {
    pub n: i64,
    pub weight: Sum,
}

/// The per-row sums of one cell (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScoreSums {
    /// Σw·score.
    pub score: Sum,
    /// Σw·score² (the Brier term of a negative row).
    pub score_sq: Sum,
    /// Σw·(1 − score)² (the Brier term of a positive row).
    pub miss_sq: Sum,
    /// Σw·−ln(score), clipped as scikit-learn's log_loss (a positive row's loss).
    pub loss_pos: Sum,
    /// Σw·−ln(1 − score), clipped likewise (a negative row's loss).
    pub loss_neg: Sum,
}

impl ScoreSums {
    fn all(&self) -> [&Sum; 5] {
        [&self.score, &self.score_sq, &self.miss_sq, &self.loss_pos, &self.loss_neg]
    }
    fn all_mut(&mut self) -> [&mut Sum; 5] {
        [&mut self.score, &mut self.score_sq, &mut self.miss_sq, &mut self.loss_pos, &mut self.loss_neg]
    }
}

/// A state's bins: sparse (sorted by bin) while few, as a cell's delta or
/// a bucket's cell is; dense once a sum gathers many (a reference period, a
/// day of buckets), where merging into a sorted vector would cost its
/// length per merge.
#[derive(Clone, Debug)]
enum Bins {
    Sparse(Vec<(u16, BinTally)>),
    Dense(Vec<BinTally>),
}

/// Occupied bins beyond which a sum turns dense.
const DENSE_AT: usize = 256;

impl Default for Bins {
    fn default() -> Self {
        Bins::Sparse(Vec::new())
    }
}

fn is_empty_tally(t: &BinTally) -> bool {
    t.n == 0 && t.weight.is_zero()
}

#[derive(Clone, Debug, Default)]
pub struct ScoreCells {
    /// Some row had a weight other than 1 (else each bin's weight is its count).
    pub weighted: bool,
    bins: Bins,
    pub sums: ScoreSums,
}

impl PartialEq for ScoreCells {
    fn eq(&self, other: &Self) -> bool {
        self.weighted == other.weighted && self.sums == other.sums && self.iter().eq(other.iter())
    }
}

impl ScoreCells {
    pub fn new() -> Self {
        Self::default()
    }

    /// The occupied bins in order: (bin, rows and weight).
    pub fn iter(&self) -> Box<dyn Iterator<Item = (u16, &BinTally)> + '_> {
        match &self.bins {
            Bins::Sparse(v) => Box::new(v.iter().map(|(b, t)| (*b, t))),
            Bins::Dense(v) => Box::new(v.iter().enumerate().filter(|(_, t)| !is_empty_tally(t)).map(|(b, t)| (b as u16, t))),
        }
    }

    fn occupied(&self) -> usize {
        match &self.bins {
            Bins::Sparse(v) => v.len(),
            Bins::Dense(v) => v.iter().filter(|t| !is_empty_tally(t)).count(),
        }
    }

    fn densify(&mut self) {
        if let Bins::Sparse(v) = &self.bins {
            let mut dense = vec![BinTally::default(); SCORE_BINS];
            for (b, t) in v {
                dense[*b as usize] = *t;
            }
            self.bins = Bins::Dense(dense);
        }
    }

    /// Adds `n` rows and `weight` to bin `bin`, dropping a bin left empty.
    /// In an unweighted state a bin's weight is its count: no sum to keep.
    fn add_to_bin(&mut self, bin: u16, n: i64, weight: &Sum) {
        let weighted = self.weighted;
        let add = |t: &mut BinTally| {
            // Saturating: decoded states are untrusted; 2^63 rows never happen.
            t.n = t.n.saturating_add(n);
            if weighted {
                t.weight.add_sum(weight);
            } else {
                t.weight = Sum::from_parts(t.n as f64, 0.0);
            }
        };
        match &mut self.bins {
            Bins::Dense(v) => add(&mut v[bin as usize]),
            Bins::Sparse(v) => match v.binary_search_by_key(&bin, |(b, _)| *b) {
                Ok(i) => {
                    let t = &mut v[i].1;
                    add(t);
                    if is_empty_tally(t) {
                        v.remove(i);
                    }
                }
                Err(i) => {
                    let t = BinTally { n, weight: *weight };
                    if !is_empty_tally(&t) {
                        v.insert(i, (bin, t));
                    }
                }
            },
        }
    }

    /// Adds `n` rows (negative: removes them) of one score, of total weight
    /// `weight` (signed like `n`).
    pub fn add(&mut self, score: f64, n: i64, weight: f64) -> Result<()> {
        check_score(score)?;
        if !weight.is_finite() {
            return Err(Error::invalid("weight", format!("weight {weight} is not finite"), "argument weight: pass finite weights"));
        }
        self.weighted |= weight != n as f64;
        self.add_to_bin(score_bin(score) as u16, n, &Sum::from_parts(weight, 0.0));
        // scikit-learn clips probabilities to [eps, 1 − eps] for log loss.
        let eps = f64::EPSILON;
        let s = &mut self.sums;
        s.score.add(weight * score);
        s.score_sq.add(weight * (score * score));
        s.miss_sq.add(weight * ((1.0 - score) * (1.0 - score)));
        s.loss_pos.add(weight * -score.clamp(eps, 1.0 - eps).ln());
        s.loss_neg.add(weight * -(1.0 - score).clamp(eps, 1.0 - eps).ln());
        Ok(())
    }

    pub fn merge(&mut self, other: &ScoreCells) {
        self.weighted |= other.weighted;
        if let (Bins::Sparse(a), Bins::Sparse(b)) = (&self.bins, &other.bins) {
            if a.len() + b.len() > DENSE_AT {
                self.densify();
            } else {
                // Both small and sorted: one pass.
                let mut merged = Vec::with_capacity(a.len() + b.len());
                let (mut i, mut j) = (0, 0);
                while i < a.len() || j < b.len() {
                    if j == b.len() || (i < a.len() && a[i].0 < b[j].0) {
                        merged.push(a[i]);
                        i += 1;
                    } else if i == a.len() || b[j].0 < a[i].0 {
                        merged.push(b[j]);
                        j += 1;
                    } else {
                        let mut t = a[i].1;
                        t.n = t.n.saturating_add(b[j].1.n);
                        if self.weighted {
                            t.weight.add_sum(&b[j].1.weight);
                        } else {
                            t.weight = Sum::from_parts(t.n as f64, 0.0);
                        }
                        if !is_empty_tally(&t) {
                            merged.push((a[i].0, t));
                        }
                        i += 1;
                        j += 1;
                    }
                }
                self.bins = Bins::Sparse(merged);
                for (x, y) in self.sums.all_mut().into_iter().zip(other.sums.all()) {
                    x.add_sum(y);
                }
                return;
            }
        }
        if let Bins::Sparse(v) = &self.bins {
            if v.len() + other.occupied() > DENSE_AT {
                self.densify();
            }
        }
        for (bin, t) in other.iter() {
            let (n, w) = (t.n, t.weight);
            self.add_to_bin(bin, n, &w);
        }
        for (a, b) in self.sums.all_mut().into_iter().zip(other.sums.all()) {
            a.add_sum(b);
        }
    }

    /// No rows and no residue: a delta that changes nothing.
    pub fn is_zero(&self) -> bool {
        self.iter().next().is_none() && self.sums.all().iter().all(|s| s.is_zero())
    }

    pub fn count(&self) -> i64 {
        self.iter().fold(0i64, |n, (_, t)| n.saturating_add(t.n))
    }

    pub fn weight(&self) -> f64 {
        let mut w = Sum::default();
        self.iter().for_each(|(_, t)| w.add_sum(&t.weight));
        w.value()
    }

    /// The score summary (`mlmon.scores`) of rows whose label is known:
    /// `positive` the cells of actual = true, `negative` of actual = false.
    /// Bins stand at their middle score.
    pub fn summary(positive: &ScoreCells, negative: &ScoreCells) -> ScoreSummary {
        // A complete cell never has fewer than no rows; a rounding residue
        // of retracted weight is clamped.
        let tally = |t: Option<&BinTally>| t.map_or((0, 0.0), |t| (t.n.max(0) as u64, t.weight.value().max(0.0)));
        let bins = zip_bins(positive, negative).into_iter().map(|(bin, p, n)| {
            let (lo, hi) = (bin_edge(bin as usize), bin_edge(bin as usize + 1));
            let ((n_pos, w_pos), (n_neg, w_neg)) = (tally(p), tally(n));
            BinnedScores { lo, hi, mean: (lo + hi) / 2.0, w_pos, w_neg, n_pos, n_neg }
        });
        let log_loss = positive.sums.loss_pos.value() + negative.sums.loss_neg.value();
        let brier = positive.sums.miss_sq.value() + negative.sums.score_sq.value();
        ScoreSummary::from_bins(positive.weighted || negative.weighted, log_loss.max(0.0), brier.max(0.0), bins.collect::<Vec<_>>())
    }

    /// Binary form: version, tag `C`, flags, the five sums (hi, lo pairs),
    /// the bin count, then per bin its index (u16, ascending), signed count
    /// and, if weighted, its weight (hi, lo).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        let occupied = self.occupied();
        w.reserve(1 + 80 + 4 + occupied * if self.weighted { 26 } else { 10 });
        w.u8(if self.weighted { FLAG_WEIGHTED } else { 0 });
        for s in self.sums.all() {
            let (hi, lo) = s.parts();
            w.f64(hi);
            w.f64(lo);
        }
        w.u32(occupied as u32);
        for (bin, t) in self.iter() {
            w.u16(bin);
            w.u64(t.n as u64);
            if self.weighted {
                let (hi, lo) = t.weight.parts();
                w.f64(hi);
                w.f64(lo);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, TAG, "score cell state")?;
        let flags = r.u8("flags")?;
        if flags & !FLAG_WEIGHTED != 0 {
            return Err(Error::BadBinary(format!("score cell state has unknown flags {flags:#x}")));
        }
        let weighted = flags & FLAG_WEIGHTED != 0;
        let mut cells = ScoreCells { weighted, ..Default::default() };
        for s in cells.sums.all_mut() {
            *s = Sum::from_parts(r.f64("sum")?, r.f64("sum")?);
            if !s.is_finite() {
                return Err(Error::BadBinary("score cell state has a non-finite sum".into()));
            }
        }
        let count = r.len("bins", SCORE_BINS)?;
        let mut bins = Vec::with_capacity(count);
        let mut last: Option<u16> = None;
        for _ in 0..count {
            let bin = u16::from_le_bytes([r.u8("bin")?, r.u8("bin")?]);
            if bin as usize >= SCORE_BINS || last.is_some_and(|l| l >= bin) {
                return Err(Error::BadBinary(format!("score cell state has bin {bin} out of order or range")));
            }
            last = Some(bin);
            let n = r.u64("count")? as i64;
            let weight = if weighted { Sum::from_parts(r.f64("weight")?, r.f64("weight")?) } else { Sum::from_parts(n as f64, 0.0) };
            if !weight.is_finite() || (n == 0 && weight.is_zero()) {
                return Err(Error::BadBinary("score cell state has an empty or non-finite bin".into()));
            }
            bins.push((bin, BinTally { n, weight }));
        }
        r.finish()?;
        cells.bins = Bins::Sparse(bins);
        Ok(cells)
    }
}

/// States gathered for one sum read once (a step of `metrics()`): their
/// bins are appended as they come and combined when read, where merging
/// each into a sorted vector copied the growing vector every time.
#[derive(Clone, Debug, Default)]
pub struct Pile {
    weighted: bool,
    bins: Vec<(u16, BinTally)>,
    sums: ScoreSums,
}

impl Pile {
    pub fn push(&mut self, cells: &ScoreCells) {
        self.weighted |= cells.weighted;
        match &cells.bins {
            Bins::Sparse(v) => self.bins.extend_from_slice(v),
            Bins::Dense(_) => self.bins.extend(cells.iter().map(|(b, t)| (b, *t))),
        }
        for (a, b) in self.sums.all_mut().into_iter().zip(cells.sums.all()) {
            a.add_sum(b);
        }
    }

    /// The sum of every state pushed.
    pub fn cells(&self) -> ScoreCells {
        // Sorting (bin, position) keys moves 8 bytes an entry, not 32.
        let mut order: Vec<u64> = self.bins.iter().enumerate().map(|(i, (b, _))| ((*b as u64) << 32) | i as u64).collect();
        order.sort_unstable();
        let mut combined: Vec<(u16, BinTally)> = Vec::with_capacity(order.len());
        for (b, t) in order.into_iter().map(|k| self.bins[(k & 0xffff_ffff) as usize]) {
            match combined.last_mut() {
                Some((last, acc)) if *last == b => {
                    acc.n = acc.n.saturating_add(t.n);
                    acc.weight.add_sum(&t.weight);
                }
                _ => combined.push((b, t)),
            }
        }
        combined.retain(|(_, t)| !is_empty_tally(t));
        ScoreCells { weighted: self.weighted, bins: Bins::Sparse(combined), sums: self.sums }
    }
}

/// The occupied bins of two states side by side, in bin order.
pub fn zip_bins<'a>(a: &'a ScoreCells, b: &'a ScoreCells) -> Vec<(u16, Option<&'a BinTally>, Option<&'a BinTally>)> {
    let (mut x, mut y) = (a.iter().peekable(), b.iter().peekable());
    let mut out = Vec::new();
    loop {
        let next = match (x.peek(), y.peek()) {
            (None, None) => break,
            (Some(&(i, _)), Some(&(j, _))) if i == j => {
                let ((bin, s), (_, t)) = (x.next().unwrap(), y.next().unwrap());
                (bin, Some(s), Some(t))
            }
            (Some(&(i, _)), Some(&(j, _))) if i < j => {
                let (bin, s) = x.next().unwrap();
                (bin, Some(s), None)
            }
            (Some(_), None) => {
                let (bin, s) = x.next().unwrap();
                (bin, Some(s), None)
            }
            _ => {
                let (bin, t) = y.next().unwrap();
                (bin, None, Some(t))
            }
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_follow_calibration_edges() {
        assert_eq!(score_bin(0.0), 0);
        assert_eq!(score_bin(1.0), SCORE_BINS - 1);
        // 0.1 sits on an edge: it belongs to the bin below, as in
        // scikit-learn's calibration_curve.
        assert_eq!(score_bin(0.1), 399);
        assert_eq!(score_bin(0.100_000_1), 400);
        for i in 0..SCORE_BINS {
            let mid = (bin_edge(i) + bin_edge(i + 1)) / 2.0;
            assert_eq!(score_bin(mid), i);
            assert_eq!(score_bin(bin_edge(i + 1)), i);
        }
    }

    #[test]
    fn retracted_rows_leave_nothing_and_round_trip() {
        let mut c = ScoreCells::new();
        c.add(0.3, 1, 1.0).unwrap();
        c.add(0.7, 2, 2.0).unwrap();
        let kept = c.clone();
        let mut delta = ScoreCells::new();
        for i in 0..1000 {
            delta.add(i as f64 / 1000.0, 1, 1.0).unwrap();
        }
        c.merge(&delta);
        let mut back = ScoreCells::new();
        for i in 0..1000 {
            back.add(i as f64 / 1000.0, -1, -1.0).unwrap();
        }
        assert!(!back.is_zero());
        c.merge(&back);
        assert!(c.iter().eq(kept.iter()));
        for (a, b) in c.sums.all().iter().zip(kept.sums.all()) {
            assert_eq!(a.value(), b.value());
        }
        assert_eq!(ScoreCells::decode(&c.encode()).unwrap().encode(), c.encode());
        let mut w = ScoreCells::new();
        w.add(0.25, 1, 0.5).unwrap();
        assert!(w.weighted);
        assert_eq!(ScoreCells::decode(&w.encode()).unwrap(), w);
    }

    #[test]
    fn sparse_and_dense_sums_agree() {
        let mut parts = Vec::new();
        for k in 0..50 {
            let mut c = ScoreCells::new();
            for i in 0..40 {
                c.add(((k * 37 + i * 101) % 1000) as f64 / 1000.0, 1, 1.0).unwrap();
            }
            parts.push(c);
        }
        let mut dense = ScoreCells::new();
        for p in &parts {
            dense.merge(p);
        }
        assert!(matches!(dense.bins, Bins::Dense(_)));
        let mut sparse = ScoreCells::new();
        for p in &parts {
            for (bin, t) in p.iter() {
                sparse.add_to_bin(bin, t.n, &t.weight);
            }
        }
        assert!(matches!(sparse.bins, Bins::Sparse(_)));
        assert!(dense.iter().eq(sparse.iter()));
        assert_eq!(dense.count(), 2000);
        assert_eq!(ScoreCells::decode(&dense.encode()).unwrap().encode(), dense.encode());
        // Retracting every part leaves an empty dense state.
        for p in &parts {
            let mut back = ScoreCells::new();
            for (bin, t) in p.iter() {
                back.add_to_bin(bin, -t.n, &Sum::from_parts(-t.weight.value(), 0.0));
            }
            dense.merge(&back);
        }
        assert_eq!(dense.iter().count(), 0);
    }

    #[test]
    fn a_pile_sums_like_merges() {
        let mut merged = ScoreCells::new();
        let mut pile = Pile::default();
        for k in 0..30 {
            let mut c = ScoreCells::new();
            for i in 0..20 {
                c.add(((k * 13 + i * 7) % 100) as f64 / 100.0, if i % 5 == 0 { -1 } else { 1 }, if i % 5 == 0 { -0.5 } else { 0.5 }).unwrap();
            }
            merged.merge(&c);
            pile.push(&c);
        }
        assert_eq!(pile.cells(), merged);
    }

    #[test]
    fn rejects_bad_scores_and_bytes() {
        let mut c = ScoreCells::new();
        assert!(c.add(1.5, 1, 1.0).is_err());
        assert!(c.add(f64::NAN, 1, 1.0).is_err());
        assert!(c.add(-0.0, 1, 1.0).is_ok());
        let bytes = c.encode();
        for cut in 0..bytes.len() {
            assert!(ScoreCells::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn summary_matches_exact_losses() {
        let (mut pos, mut neg) = (ScoreCells::new(), ScoreCells::new());
        let rows = [(0.9, true), (0.8, false), (0.6, true), (0.2, false), (0.1, false), (0.95, true)];
        let mut exact = ScoreSummary::new();
        for &(s, y) in &rows {
            if y { pos.add(s, 1, 1.0).unwrap() } else { neg.add(s, 1, 1.0).unwrap() }
            exact.add(s, y, 1.0).unwrap();
        }
        let binned = ScoreCells::summary(&pos, &neg);
        assert!((binned.log_loss().unwrap() - exact.log_loss().unwrap()).abs() < 1e-12);
        assert!((binned.brier_score().unwrap() - exact.brier_score().unwrap()).abs() < 1e-12);
        assert!((binned.roc_auc().unwrap() - exact.roc_auc().unwrap()).abs() < 1e-12);
        assert_eq!(binned.count(), 6);
    }
}
