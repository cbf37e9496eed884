//! Confidence-based performance estimation (CBPE, as NannyML defines it) over
//! a score monitor's binned score states: the expected confusion matrix and
//! ROC AUC of predictions whose labels are not known yet.
//!
//! Each prediction with calibrated probability q of being positive adds q to
//! the expected positives of its predicted label and 1 − q to the negatives:
//! TP = Σ_{ŷ=1} q, FP = Σ_{ŷ=1} (1 − q), FN = Σ_{ŷ=0} q, TN = Σ_{ŷ=0} (1 − q).
//! Estimated ROC AUC is the trapezoid under the curve of those expected
//! counts with predictions ranked by their raw score.
//!
//! Calibration follows NannyML 0.13: isotonic regression of the label on the
//! score, fitted on a reference period (scikit-learn's `IsotonicRegression(
//! out_of_bounds="clip")`: pool adjacent violators, then linear interpolation
//! between the fitted points and clipping beyond them), applied only if it
//! lowers the expected calibration error out of sample. NannyML decides that
//! on ten random stratified 90/10 splits of the reference rows; a rollup has
//! no rows, so here the ten folds are the reference's buckets taken in turn
//! (bucket number mod 10), each fitted on the other nine. ECE is NannyML's:
//! the held-out rows of all folds sorted by the value judged, ten bins of
//! equal count, Σ share·|mean value − positive rate|. Nor is calibration
//! used when the reference has one class or a ROC AUC above 0.999.
//!
//! Where a rollup differs from rows: the points of the isotonic fit are the
//! score bins (at their middle) rather than the distinct scores, and a bin's
//! predictions share the bin's calibrated probability. Without calibration
//! the expected cells are exact (Σw·score per cell is kept); the estimated
//! ROC AUC then ranks bins at their middle score.

use crate::error::{Error, Result};
use crate::monitors::score_cells::{bin_edge, zip_bins, ScoreCells, SCORE_BINS};
use crate::wire::{Reader, Writer};

const TAG: u8 = b'K';
/// Folds of the calibration decision, and ECE bins (NannyML's defaults).
pub const FOLDS: usize = 10;
const ECE_BINS: usize = 10;

fn bin_middle(bin: usize) -> f64 {
    (bin_edge(bin) + bin_edge(bin + 1)) / 2.0
}

/// Positive and total weight per bin of labeled cells.
fn label_weights(positive: &ScoreCells, negative: &ScoreCells) -> Vec<(usize, f64, f64)> {
    let mut per_bin = vec![(0.0f64, 0.0f64); SCORE_BINS];
    for (cells, pos) in [(positive, true), (negative, false)] {
        for (b, t) in cells.iter() {
            let w = t.weight.value().max(0.0);
            let e = &mut per_bin[b as usize];
            if pos {
                e.0 += w;
            }
            e.1 += w;
        }
    }
    per_bin.into_iter().enumerate().filter(|(_, (_, w))| *w > 0.0).map(|(b, (p, w))| (b, p, w)).collect()
}

/// A fitted calibration: no knots means the raw score is used.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// (score, calibrated probability), scores ascending: the isotonic fit,
    /// interpolated linearly between knots and clipped beyond them.
    knots: Vec<(f64, f64)>,
    /// The calibrated probability at each bin's middle, once asked for
    /// (estimates read it per bin, for thousands of steps).
    per_bin: std::sync::OnceLock<Vec<f64>>,
}

impl PartialEq for Calibration {
    fn eq(&self, other: &Self) -> bool {
        self.knots == other.knots
    }
}

impl Calibration {
    pub fn identity() -> Self {
        Self::from_knots(Vec::new())
    }

    fn from_knots(knots: Vec<(f64, f64)>) -> Self {
        Calibration { knots, per_bin: std::sync::OnceLock::new() }
    }

    /// The calibrated probability of a bin's scores: at the bin's middle.
    pub fn at_bin(&self, bin: usize) -> f64 {
        self.per_bin.get_or_init(|| (0..SCORE_BINS).map(|b| self.at(bin_middle(b))).collect())[bin]
    }

    pub fn is_identity(&self) -> bool {
        self.knots.is_empty()
    }

    /// The isotonic fit of the labels on the scores' bins (weighted PAVA).
    pub fn isotonic(positive: &ScoreCells, negative: &ScoreCells) -> Self {
        let points = label_weights(positive, negative);
        // Blocks of (positive weight, weight, first point, last point).
        let mut blocks: Vec<(f64, f64, usize, usize)> = Vec::with_capacity(points.len());
        for (i, &(_, p, w)) in points.iter().enumerate() {
            blocks.push((p, w, i, i));
            while blocks.len() > 1 {
                let (p2, w2, _, last) = blocks[blocks.len() - 1];
                let (p1, w1, first, _) = blocks[blocks.len() - 2];
                if p1 / w1 < p2 / w2 {
                    break;
                }
                blocks.truncate(blocks.len() - 2);
                blocks.push((p1 + p2, w1 + w2, first, last));
            }
        }
        let mut knots = Vec::with_capacity(2 * blocks.len());
        for (p, w, first, last) in blocks {
            let value = p / w;
            knots.push((bin_middle(points[first].0), value));
            if last != first {
                knots.push((bin_middle(points[last].0), value));
            }
        }
        Self::from_knots(knots)
    }

    /// NannyML's rule: the isotonic fit if it lowers ECE out of sample
    /// (module documentation), else the raw score. `folds` are the labeled
    /// reference cells (positive, negative) of each fold.
    pub fn choose(folds: &[(ScoreCells, ScoreCells)]) -> Result<Self> {
        if folds.len() > FOLDS {
            // Each fold is fitted on all the others: quadratic in the folds.
            return Err(Error::invalid("positive", format!("{} folds given, at most {FOLDS}", folds.len()), "pass one positive and one negative state per fold"));
        }
        let (mut pos, mut neg) = (ScoreCells::new(), ScoreCells::new());
        for (p, n) in folds {
            pos.merge(p);
            neg.merge(n);
        }
        if !(pos.weight() > 0.0 && neg.weight() > 0.0) {
            return Ok(Calibration::identity());
        }
        if ScoreCells::summary(&pos, &neg).roc_auc().is_some_and(|auc| auc > 0.999) {
            return Ok(Calibration::identity());
        }
        let all = Calibration::isotonic(&pos, &neg);
        // Held-out (raw score, calibrated, positive weight, weight) per bin.
        let mut held_out: Vec<(f64, f64, f64, f64)> = Vec::new();
        let used: Vec<&(ScoreCells, ScoreCells)> = folds.iter().filter(|(p, n)| p.weight() + n.weight() > 0.0).collect();
        if used.len() < 2 {
            // One fold: judge in sample.
            for (b, p, w) in label_weights(&pos, &neg) {
                held_out.push((bin_middle(b), all.at(bin_middle(b)), p, w));
            }
        } else {
            for (k, (p_test, n_test)) in used.iter().map(|f| (&f.0, &f.1)).enumerate() {
                let (mut p_train, mut n_train) = (ScoreCells::new(), ScoreCells::new());
                for (j, (p, n)) in used.iter().map(|f| (&f.0, &f.1)).enumerate() {
                    if j != k {
                        p_train.merge(p);
                        n_train.merge(n);
                    }
                }
                let fit = Calibration::isotonic(&p_train, &n_train);
                for (b, p, w) in label_weights(p_test, n_test) {
                    held_out.push((bin_middle(b), fit.at(bin_middle(b)), p, w));
                }
            }
        }
        let before = ece(held_out.iter().map(|&(raw, _, p, w)| (raw, p, w)).collect());
        let after = ece(held_out.iter().map(|&(_, cal, p, w)| (cal, p, w)).collect());
        Ok(if before > after { all } else { Calibration::identity() })
    }

    /// The calibrated probability of `score` (the score itself without calibration).
    pub fn at(&self, score: f64) -> f64 {
        let k = &self.knots;
        if k.is_empty() {
            return score;
        }
        if score <= k[0].0 {
            return k[0].1;
        }
        if score >= k[k.len() - 1].0 {
            return k[k.len() - 1].1;
        }
        let i = k.partition_point(|&(x, _)| x <= score);
        let ((x0, y0), (x1, y1)) = (k[i - 1], k[i]);
        if x1 == x0 {
            y1
        } else {
            y0 + (y1 - y0) * (score - x0) / (x1 - x0)
        }
    }

    /// Binary form: version, tag `K`, knot count, (score, probability) pairs.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        w.u32(self.knots.len() as u32);
        for &(x, y) in &self.knots {
            w.f64(x);
            w.f64(y);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, TAG, "calibration")?;
        let n = r.len("knots", 2 * SCORE_BINS)?;
        let mut knots = Vec::with_capacity(n);
        for _ in 0..n {
            let (x, y) = (r.f64("knot")?, r.f64("knot")?);
            if !(0.0..=1.0).contains(&x) || !(0.0..=1.0).contains(&y) || knots.last().is_some_and(|&(lx, _)| lx > x) {
                return Err(Error::BadBinary("calibration knot out of order or range".into()));
            }
            knots.push((x, y));
        }
        r.finish()?;
        Ok(Self::from_knots(knots))
    }
}

/// NannyML's expected calibration error over (value, positive weight,
/// weight) entries: sorted by value, cut into ten bins of equal weight
/// (entries split across a cut pro rata), Σ share·|mean value − positive rate|.
fn ece(mut entries: Vec<(f64, f64, f64)>) -> f64 {
    entries.retain(|e| e.2 > 0.0);
    entries.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = entries.iter().map(|e| e.2).sum();
    let width = total / ECE_BINS as f64;
    // Subnormal weights would make the bin width 0 and the loop below stand
    // still (found by review: a state of weights 5e-324 spun forever).
    if !width.is_normal() {
        return 0.0;
    }
    let (mut error, mut bin_w, mut bin_v, mut bin_p) = (0.0, 0.0, 0.0, 0.0);
    for &(v, p, w) in &entries {
        let mut left = w;
        while left > 0.0 {
            let take = left.min(width - bin_w);
            if take <= 0.0 {
                // Rounding left the bin a hair short of full: close it.
                error += (bin_v / bin_w - bin_p / bin_w).abs() * (bin_w / total);
                (bin_w, bin_v, bin_p) = (0.0, 0.0, 0.0);
                continue;
            }
            let share = take / w;
            bin_w += take;
            bin_v += v * take;
            bin_p += p * share;
            left -= take;
            if bin_w >= width * (1.0 - 1e-12) {
                error += (bin_v / bin_w - bin_p / bin_w).abs() * (bin_w / total);
                (bin_w, bin_v, bin_p) = (0.0, 0.0, 0.0);
            }
        }
    }
    if bin_w > 0.0 {
        error += (bin_v / bin_w - bin_p / bin_w).abs() * (bin_w / total);
    }
    error
}

/// The expected confusion matrix and ROC AUC of a set of predictions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
    pub tn: f64,
    pub roc_auc: Option<f64>,
}

/// Estimates over the cells of predicted label true and false (every
/// prediction, labeled or not).
pub fn estimate(calibration: &Calibration, predicted_true: &ScoreCells, predicted_false: &ScoreCells) -> Estimate {
    // Expected positive and negative weight per occupied bin (in bin order),
    // for the AUC and, with calibration, the cells.
    let mut per_bin: Vec<(f64, f64)> = Vec::new();
    let mut cells = [0.0f64; 2]; // expected positives among ŷ = 1, ŷ = 0
    let mut totals = [0.0f64; 2];
    for (b, t, f) in zip_bins(predicted_true, predicted_false) {
        let q = calibration.at_bin(b as usize);
        let (mut a, mut n) = (0.0, 0.0);
        for (i, tally) in [t, f].into_iter().enumerate() {
            if let Some(tally) = tally {
                let w = tally.weight.value().max(0.0);
                cells[i] += w * q;
                totals[i] += w;
                a += w * q;
                n += w * (1.0 - q);
            }
        }
        per_bin.push((a, n));
    }
    if calibration.is_identity() {
        // Exact: Σw·score of each side's rows.
        for (i, side) in [predicted_true, predicted_false].into_iter().enumerate() {
            cells[i] = side.sums.score.value().clamp(0.0, totals[i]);
        }
    }
    // Trapezoid over bins from the highest score down (ties within a bin).
    let (p, n): (f64, f64) = per_bin.iter().fold((0.0, 0.0), |(p, n), &(a, b)| (p + a, n + b));
    let roc_auc = (p > 0.0 && n > 0.0).then(|| {
        let (mut area, mut tp) = (0.0, 0.0);
        for &(a, b) in per_bin.iter().rev() {
            area += b * (tp + tp + a) / 2.0;
            tp += a;
        }
        area / (p * n)
    });
    Estimate { tp: cells[0], fp: totals[0] - cells[0], fn_: cells[1], tn: totals[1] - cells[1], roc_auc }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(rows: &[(f64, bool)]) -> (ScoreCells, ScoreCells) {
        let (mut p, mut n) = (ScoreCells::new(), ScoreCells::new());
        for &(s, y) in rows {
            if y { p.add(s, 1, 1.0).unwrap() } else { n.add(s, 1, 1.0).unwrap() }
        }
        (p, n)
    }

    #[test]
    fn isotonic_pools_violators_and_interpolates() {
        let (p, n) = cells(&[(0.1, false), (0.2, true), (0.3, false), (0.9, true)]);
        let c = Calibration::isotonic(&p, &n);
        // 0.2 (1) and 0.3 (0) pool to 0.5; 0.1 -> 0, 0.9 -> 1.
        assert!((c.at(0.1) - 0.0).abs() < 1e-3);
        assert!((c.at(0.25) - 0.5).abs() < 1e-9);
        assert!((c.at(0.9) - 1.0).abs() < 1e-3);
        assert_eq!(c.at(0.0), c.at(0.05));
        assert_eq!(Calibration::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn identity_estimate_is_the_expected_confusion() {
        // Four rows split by predicted label (threshold 0.5).
        let (mut pt, mut pf) = (ScoreCells::new(), ScoreCells::new());
        for s in [0.8, 0.6] {
            pt.add(s, 1, 1.0).unwrap();
        }
        for s in [0.3, 0.1] {
            pf.add(s, 1, 1.0).unwrap();
        }
        let e = estimate(&Calibration::identity(), &pt, &pf);
        assert!((e.tp - 1.4).abs() < 1e-12 && (e.fp - 0.6).abs() < 1e-12);
        assert!((e.fn_ - 0.4).abs() < 1e-12 && (e.tn - 1.6).abs() < 1e-12);
    }

    /// Rows spread evenly over [0, 1] with P(y = 1 | s) = f(s), as expected
    /// counts (weights), in ten folds.
    fn folds(f: impl Fn(f64) -> f64) -> Vec<(ScoreCells, ScoreCells)> {
        (0..FOLDS)
            .map(|k| {
                let (mut p, mut n) = (ScoreCells::new(), ScoreCells::new());
                for i in 0..400 {
                    let s = (i as f64 + 0.5 + k as f64 * 0.01) / 400.0;
                    p.add(s, 10, 10.0 * f(s)).unwrap();
                    n.add(s, 10, 10.0 * (1.0 - f(s))).unwrap();
                }
                (p, n)
            })
            .collect()
    }

    #[test]
    fn calibrates_scores_that_are_too_high_and_keeps_calibrated_ones() {
        let too_high = Calibration::choose(&folds(|s| s * s)).unwrap();
        assert!(!too_high.is_identity());
        for s in [0.2, 0.5, 0.9] {
            assert!((too_high.at(s) - s * s).abs() < 0.01, "{s}: {}", too_high.at(s));
        }
        // Calibrated scores: whichever way the rule goes, they stay put.
        let calibrated = Calibration::choose(&folds(|s| s)).unwrap();
        for s in [0.2, 0.5, 0.9] {
            assert!((calibrated.at(s) - s).abs() < 0.01, "{s}: {}", calibrated.at(s));
        }
    }

    #[test]
    fn subnormal_weights_and_too_many_folds_end() {
        let (mut p, mut n) = (ScoreCells::new(), ScoreCells::new());
        for s in [0.2, 0.6] {
            p.add(s, 1, 5e-324).unwrap();
        }
        for s in [0.4, 0.8] {
            n.add(s, 1, 5e-324).unwrap();
        }
        assert!(Calibration::choose(&[(p.clone(), n.clone())]).is_ok());
        assert!(ece(vec![(0.1, 1e-320, 5e-324), (0.9, 0.0, 5e-324)]).is_finite());
        assert!(Calibration::choose(&vec![(p, n); FOLDS + 1]).is_err());
    }

    #[test]
    fn ece_of_a_calibrated_column_is_small() {
        let entries: Vec<(f64, f64, f64)> = (1..100).map(|i| (i as f64 / 100.0, i as f64 / 100.0 * 10.0, 10.0)).collect();
        assert!(ece(entries) < 1e-9);
    }
}
