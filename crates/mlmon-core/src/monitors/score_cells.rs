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

use std::collections::BTreeMap;

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

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreCells {
    /// Some row had a weight other than 1 (else each bin's weight is its count).
    pub weighted: bool,
    pub bins: BTreeMap<u16, BinTally>,
    pub sums: ScoreSums,
}

impl ScoreCells {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` rows (negative: removes them) of one score, of total weight
    /// `weight` (signed like `n`).
    pub fn add(&mut self, score: f64, n: i64, weight: f64) -> Result<()> {
        check_score(score)?;
        if !weight.is_finite() {
            return Err(Error::invalid("weight", format!("weight {weight} is not finite"), "argument weight: pass finite weights"));
        }
        self.weighted |= weight != n as f64;
        let bin = score_bin(score) as u16;
        let tally = self.bins.entry(bin).or_default();
        tally.n += n;
        tally.weight.add(weight);
        if tally.n == 0 && tally.weight.is_zero() {
            self.bins.remove(&bin);
        }
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
        for (&bin, t) in &other.bins {
            let tally = self.bins.entry(bin).or_default();
            tally.n += t.n;
            tally.weight.add_sum(&t.weight);
            if tally.n == 0 && tally.weight.is_zero() {
                self.bins.remove(&bin);
            }
        }
        for (a, b) in self.sums.all_mut().into_iter().zip(other.sums.all()) {
            a.add_sum(b);
        }
    }

    /// No rows and no residue: a delta that changes nothing.
    pub fn is_zero(&self) -> bool {
        self.bins.is_empty() && self.sums.all().iter().all(|s| s.is_zero())
    }

    pub fn count(&self) -> i64 {
        self.bins.values().map(|t| t.n).sum()
    }

    pub fn weight(&self) -> f64 {
        let mut w = Sum::default();
        self.bins.values().for_each(|t| w.add_sum(&t.weight));
        w.value()
    }

    /// The score summary (`mlmon.scores`) of rows whose label is known:
    /// `positive` the cells of actual = true, `negative` of actual = false.
    /// Bins stand at their middle score.
    pub fn summary(positive: &ScoreCells, negative: &ScoreCells) -> ScoreSummary {
        let mut bins: BTreeMap<u16, BinnedScores> = BTreeMap::new();
        let mut put = |cells: &ScoreCells, pos: bool| {
            for (&bin, t) in &cells.bins {
                let (lo, hi) = (bin_edge(bin as usize), bin_edge(bin as usize + 1));
                let b = bins.entry(bin).or_insert(BinnedScores {
                    lo,
                    hi,
                    mean: (lo + hi) / 2.0,
                    w_pos: 0.0,
                    w_neg: 0.0,
                    n_pos: 0,
                    n_neg: 0,
                });
                // A complete cell never has fewer than no rows; a rounding
                // residue of retracted weight is clamped.
                let (n, w) = (t.n.max(0) as u64, t.weight.value().max(0.0));
                if pos {
                    (b.n_pos, b.w_pos) = (n, w);
                } else {
                    (b.n_neg, b.w_neg) = (n, w);
                }
            }
        };
        put(positive, true);
        put(negative, false);
        let log_loss = positive.sums.loss_pos.value() + negative.sums.loss_neg.value();
        let brier = positive.sums.miss_sq.value() + negative.sums.score_sq.value();
        ScoreSummary::from_bins(positive.weighted || negative.weighted, log_loss.max(0.0), brier.max(0.0), bins.into_values())
    }

    /// Binary form: version, tag `C`, flags, the five sums (hi, lo pairs),
    /// the bin count, then per bin its index (u16, ascending), signed count
    /// and, if weighted, its weight (hi, lo).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        w.reserve(1 + 80 + 4 + self.bins.len() * if self.weighted { 26 } else { 10 });
        w.u8(if self.weighted { FLAG_WEIGHTED } else { 0 });
        for s in self.sums.all() {
            let (hi, lo) = s.parts();
            w.f64(hi);
            w.f64(lo);
        }
        w.u32(self.bins.len() as u32);
        for (&bin, t) in &self.bins {
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
            cells.bins.insert(bin, BinTally { n, weight });
        }
        r.finish()?;
        Ok(cells)
    }
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
        assert_eq!(c.bins, kept.bins);
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
