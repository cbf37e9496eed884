//! Mergeable summary of a binary classifier's scores: ranking metrics (ROC
//! AUC, average precision, curves), probabilistic losses (log loss, Brier),
//! calibration, and confusion matrices or costs at any threshold, with
//! scikit-learn's definitions and `sample_weight` semantics.
//!
//! Log loss and Brier score are running sums, exact at any size. Everything
//! else needs the scores themselves, so the state keeps, per distinct score,
//! the positive and negative weights and counts. That is exact while there are
//! at most [`MAX_EXACT_SCORES`] distinct scores (rounded or discrete scores).
//! Beyond that the state is compressed: adjacent scores are grouped into at
//! most [`MAX_BINS`] bins, each keeping its weights, counts, score range and
//! weighted mean score, which then stands for the bin's scores. Grouping is
//! greedy in score order under a mass cap, where a bin's mass is its share of
//! the positive weight plus its share of the negative weight (so the rarer
//! class is resolved as finely as the common one).
//!
//! Compression bound: a compression produces groups of mass at most
//! c = 4/(MAX_BINS − 2) (single scores heavier than that stay alone and are
//! exact). Ties inside a group shift ROC AUC by at most ½·Σ p_b·n_b ≤ c/4 ≈
//! 2.4e-4, where p_b, n_b are the group's shares of positive and negative
//! weight. Scores added after a compression, or merged from another state,
//! enter as their own entries ordered by mean; later compressions regroup
//! everything, so bins from different states may overlap in range and rank
//! against each other by mean only. That adds error only where overlapping
//! bins mix classes; tests keep AUC within 1e-3 of exact for 1M continuous
//! scores, built in one pass, by merging parts, and with a shifting score
//! distribution. Curves, thresholds, `confusion_at` and calibration read bins
//! at their mean score and are likewise approximate once compressed.
//! [`ScoreSummary::is_exact`] tells which case applies.
//!
//! While aggregating, a summary holds up to [`MAX_IN_MEMORY`] entries before
//! compressing, so a scan over data with that many distinct scores stays exact
//! until the state is stored; `encode` (and the text form) compress a copy to
//! the stored bounds above.

use std::cmp::Ordering;
use std::collections::HashMap;

use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use crate::confusion::{Cell, Confusion, LabelKind};
use crate::error::{check_finite, check_weight, Error, Result};
use crate::wire::{self, Reader, Writer};

/// Distinct scores kept exactly before the state is compressed.
pub const MAX_EXACT_SCORES: usize = 4096;
/// Most bins a compression produces.
pub const MAX_BINS: usize = 4096;
/// Entries (bins plus scores added since) a compressed state holds before it
/// compresses again; buffering makes compression O(log K) per row amortized.
const MAX_ENTRIES: usize = 2 * MAX_BINS;
/// Entries a summary holds in memory before compressing. Larger than the
/// stored bounds above so that aggregating data with up to this many distinct
/// scores (scores rounded to 1e-4, say) never compresses mid-scan; `encode`
/// compresses a copy down to the stored bounds. Caps memory at about 1 MB per
/// aggregate state.
pub const MAX_IN_MEMORY: usize = 16_384;
/// Most distinct scores the exact aggregates keep (about 145 bytes each in a
/// backend: some 700 MB); beyond, the bounded `score_summary` is the way.
pub const MAX_EXACT_POINTS: usize = 5_000_000;
/// Most calibration bins accepted by `ece` and `calibration`.
pub const MAX_CALIBRATION_BINS: usize = 10_000;

/// One calibration bin: (lower edge, upper edge, mean score, fraction of
/// positives, rows), the means weighted by sample weight.
pub type CalibrationBin = (f64, f64, f64, f64, u64);
/// Σw·score, Σw·y, Σw and rows of one calibration bin.
type CalibrationSums = (f64, f64, f64, u64);

const TAG: u8 = b'S';
const FLAG_WEIGHTED: u8 = 1;

/// Weights and counts of positive and negative rows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Tally {
    w_pos: f64,
    w_neg: f64,
    n_pos: u64,
    n_neg: u64,
}

impl Tally {
    fn absorb(&mut self, o: &Tally) {
        self.w_pos += o.w_pos;
        self.w_neg += o.w_neg;
        // Saturating: decoded states are untrusted, and 2^64 rows never happen.
        self.n_pos = self.n_pos.saturating_add(o.n_pos);
        self.n_neg = self.n_neg.saturating_add(o.n_neg);
    }
    fn weight(&self) -> f64 {
        self.w_pos + self.w_neg
    }
    fn n(&self) -> u64 {
        self.n_pos.saturating_add(self.n_neg)
    }
}

/// Scores grouped by compression; `mean` is their weighted mean score
/// (count-weighted if all their weights are zero).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bin {
    mean: f64,
    lo: f64,
    hi: f64,
    tally: Tally,
}

/// A total order on bins, so compression does not depend on merge order.
fn bin_order(a: &Bin, b: &Bin) -> Ordering {
    let (x, y) = (&a.tally, &b.tally);
    a.mean
        .total_cmp(&b.mean)
        .then(a.lo.total_cmp(&b.lo))
        .then(a.hi.total_cmp(&b.hi))
        .then(x.w_pos.total_cmp(&y.w_pos))
        .then(x.w_neg.total_cmp(&y.w_neg))
        .then(x.n_pos.cmp(&y.n_pos))
        .then(x.n_neg.cmp(&y.n_neg))
}

/// Greedy grouping of sorted entries into at most `max` bins (see module docs).
fn group(entries: &[Bin], max: usize) -> Vec<Bin> {
    let (p, n) = entries.iter().fold((0.0, 0.0), |(p, n), b| (p + b.tally.w_pos, n + b.tally.w_neg));
    let rows = entries.iter().fold(0u64, |n, b| n.saturating_add(b.tally.n()));
    let mass = |t: &Tally| {
        if p + n > 0.0 {
            (if p > 0.0 { t.w_pos / p } else { 0.0 }) + (if n > 0.0 { t.w_neg / n } else { 0.0 })
        } else {
            t.n() as f64 / rows as f64
        }
    };
    let total: f64 = entries.iter().map(|b| mass(&b.tally)).sum();
    // Two consecutive groups always exceed the cap together, so there are
    // fewer than 2·total/cap + 2 = max groups; the loop only guards rounding.
    let mut cap = 2.0 * total / (max - 2) as f64;
    loop {
        let mut out: Vec<Bin> = Vec::new();
        let mut current: Vec<&Bin> = Vec::new();
        let mut current_mass = 0.0;
        for entry in entries {
            let m = mass(&entry.tally);
            if !current.is_empty() && current_mass + m > cap {
                out.push(combine(&current));
                current.clear();
                current_mass = 0.0;
            }
            current.push(entry);
            current_mass += m;
        }
        if !current.is_empty() {
            out.push(combine(&current));
        }
        if out.len() <= max {
            return out;
        }
        cap *= 2.0;
    }
}

fn combine(group: &[&Bin]) -> Bin {
    if let [single] = group {
        return **single;
    }
    let mut tally = Tally::default();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut weighted_sum, mut count_sum) = (0.0, 0.0);
    for b in group {
        tally.absorb(&b.tally);
        lo = lo.min(b.lo);
        hi = hi.max(b.hi);
        weighted_sum += b.tally.weight() * b.mean;
        count_sum += b.tally.n() as f64 * b.mean;
    }
    let mean = if tally.weight() > 0.0 { weighted_sum / tally.weight() } else { count_sum / tally.n() as f64 };
    Bin { mean: mean.clamp(lo, hi), lo, hi, tally }
}

/// One bin of [`ScoreSummary::from_bins`]: its score range and mean, and the
/// weights and counts of its positive and negative rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinnedScores {
    pub lo: f64,
    pub hi: f64,
    pub mean: f64,
    pub w_pos: f64,
    pub w_neg: f64,
    pub n_pos: u64,
    pub n_neg: u64,
}

/// The score-level state of a binary classifier. Rows carry a scikit-learn
/// `sample_weight`; zero-weight rows are counted (`count`, `confusion_at`)
/// but, as in scikit-learn, never affect a metric or create a threshold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScoreSummary {
    weighted: bool,
    /// Σ w · (−log-likelihood), with scikit-learn's clipping, of the rows
    /// already folded into `bins`; the exact `points` add theirs when read.
    log_loss: f64,
    /// Σ w · (score − y)², likewise.
    brier: f64,
    /// Exact distinct scores, keyed by their bits (non-negative f64s order
    /// like their bit patterns); once compressed, scores added since. A hash
    /// map because adding a row is the hot path; readers sort (`sorted_points`).
    /// foldhash, seeded fixed: FxHash clustered these bit patterns (33 ns per
    /// row on scores rounded to 1e-4, against 12 ns).
    points: HashMap<u64, Tally, FixedState>,
    /// Empty while exact; sorted by [`bin_order`].
    bins: Vec<Bin>,
    /// Never compress: the exact one-step aggregates (`mlmon.roc_auc(score,
    /// actual)`) trade memory proportional to the distinct scores for exact
    /// results. Not part of the stored form; set again after decoding.
    unbounded: bool,
}

impl ScoreSummary {
    pub fn new() -> Self {
        Self::default()
    }

    /// A summary that stays exact however many distinct scores it sees.
    pub fn unbounded() -> Self {
        ScoreSummary { unbounded: true, ..Self::default() }
    }

    /// Adds a row. `score` is the predicted probability of the positive class.
    pub fn add(&mut self, score: f64, actual: bool, weight: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&score) {
            return Err(Error::invalid("score", format!("score must be between 0 and 1, got {score}"), "pass the predicted probability of the positive class"));
        }
        check_weight("weight", weight)?;
        if self.unbounded && self.points.len() >= MAX_EXACT_POINTS && !self.points.contains_key(&(score + 0.0).to_bits()) {
            return Err(Error::LimitExceeded {
                message: format!("more than {MAX_EXACT_POINTS} distinct scores for an exact score metric"),
                hint: "use mlmon.score_summary(score, actual) and its accessors: bounded, ROC AUC within 0.001 of exact".into(),
            });
        }
        self.weighted |= weight != 1.0;
        self.record(score, actual, weight);
        self.compress_if_full();
        Ok(())
    }

    /// `add(score, actual, 1.0)` for the per-row fast path of the extension:
    /// returns false, changing nothing, when the row needs [`Self::add`]
    /// (an invalid score, or a state that must compress first).
    #[inline]
    pub fn try_add_unweighted(&mut self, score: f64, actual: bool) -> bool {
        if !(0.0..=1.0).contains(&score) || self.is_full() {
            return false;
        }
        self.record(score, actual, 1.0);
        true
    }

    /// Log loss and Brier are summed per distinct score, not per row (see
    /// `point_losses`): one logarithm per score instead of one per row.
    #[inline]
    fn record(&mut self, score: f64, actual: bool, weight: f64) {
        let tally = self.points.entry((score + 0.0).to_bits()).or_default(); // + 0.0 turns −0 into 0
        if actual {
            tally.w_pos += weight;
            tally.n_pos = tally.n_pos.saturating_add(1);
        } else {
            tally.w_neg += weight;
            tally.n_neg = tally.n_neg.saturating_add(1);
        }
    }

    /// Whether one more distinct score would exceed the in-memory bound.
    #[inline]
    fn is_full(&self) -> bool {
        // (An exact state near its bound goes through `add`, which refuses more.)
        if self.unbounded {
            return self.points.len() >= MAX_EXACT_POINTS;
        }
        self.points.len() + self.bins.len() >= MAX_IN_MEMORY
    }

    fn compress_if_full(&mut self) {
        if !self.unbounded && self.points.len() + self.bins.len() > MAX_IN_MEMORY {
            self.compress();
        }
    }

    /// Whether the state is within the bounds of the stored form.
    fn fits_stored_form(&self) -> bool {
        if self.bins.is_empty() {
            self.points.len() <= MAX_EXACT_SCORES
        } else {
            self.bins.len() <= MAX_BINS && self.bins.len() + self.points.len() <= MAX_ENTRIES
        }
    }

    /// The exact points in score order.
    fn sorted_points(&self) -> Vec<(f64, Tally)> {
        let mut points: Vec<(u64, Tally)> = self.points.iter().map(|(&k, t)| (k, *t)).collect();
        points.sort_unstable_by_key(|p| p.0); // keys are distinct
        points.into_iter().map(|(k, t)| (f64::from_bits(k), t)).collect()
    }

    fn compress(&mut self) {
        // Bins keep no per-score detail, so fold the exact points' losses first.
        let (log_loss, brier) = self.point_losses();
        self.log_loss += log_loss;
        self.brier += brier;
        let mut entries: Vec<Bin> = self
            .sorted_points()
            .into_iter()
            .map(|(s, tally)| Bin { mean: s, lo: s, hi: s, tally })
            .chain(self.bins.drain(..))
            .collect();
        self.points.clear();
        entries.sort_by(bin_order);
        self.bins = group(&entries, MAX_BINS);
    }

    /// Adds every row of `other`. Commutative bit for bit. While both states
    /// are exact (and stay so) it is also associative up to the rounding of
    /// weight sums; once compression is involved, regrouping changes the bins
    /// within the bound given in the module documentation.
    pub fn merge(&mut self, other: &ScoreSummary) {
        self.weighted |= other.weighted;
        self.unbounded |= other.unbounded;
        self.log_loss += other.log_loss;
        self.brier += other.brier;
        for (&k, t) in &other.points {
            self.points.entry(k).or_default().absorb(t);
        }
        if self.bins.is_empty() && other.bins.is_empty() {
            self.compress_if_full();
        } else {
            // Always regroup everything, so the result does not depend on
            // which side held which buffered scores.
            self.bins.extend_from_slice(&other.bins);
            self.compress();
        }
    }

    /// A summary of scores already grouped into bins elsewhere (a monitor's
    /// rollup keeps fixed score bins): each bin stands at its `mean` score,
    /// as a compressed state's bins do, so ties inside a bin count ½ in ROC
    /// AUC. `log_loss` and `brier` are the rows' exact sums of Σw·(−log
    /// likelihood) and Σw·(score − y)². Empty bins are left out.
    pub fn from_bins(weighted: bool, log_loss: f64, brier: f64, bins: impl IntoIterator<Item = BinnedScores>) -> Self {
        let mut bins: Vec<Bin> = bins
            .into_iter()
            .filter(|b| b.n_pos > 0 || b.n_neg > 0)
            .map(|b| Bin {
                mean: b.mean,
                lo: b.lo,
                hi: b.hi,
                tally: Tally { w_pos: b.w_pos, w_neg: b.w_neg, n_pos: b.n_pos, n_neg: b.n_neg },
            })
            .collect();
        bins.sort_by(bin_order);
        ScoreSummary { weighted, log_loss, brier, points: HashMap::default(), bins, unbounded: false }
    }

    /// Whether every metric is exact (no compression has happened).
    pub fn is_exact(&self) -> bool {
        self.bins.is_empty()
    }

    /// Rows added, including zero-weight rows.
    pub fn count(&self) -> u64 {
        self.atoms().iter().fold(0u64, |n, (_, t)| n.saturating_add(t.n()))
    }

    /// Sum of the weights.
    pub fn weight(&self) -> f64 {
        self.totals().weight()
    }

    /// Distinct scores (bin means once compressed), ascending, equal ones combined.
    fn atoms(&self) -> Vec<(f64, Tally)> {
        let mut all: Vec<(f64, Tally)> = self.sorted_points();
        all.extend(self.bins.iter().map(|b| (b.mean, b.tally)));
        if !self.bins.is_empty() {
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let mut out: Vec<(f64, Tally)> = Vec::with_capacity(all.len());
        for (s, t) in all {
            match out.last_mut() {
                Some((last, tally)) if *last == s => tally.absorb(&t),
                _ => out.push((s, t)),
            }
        }
        out
    }

    fn totals(&self) -> Tally {
        let mut total = Tally::default();
        self.atoms().iter().for_each(|(_, t)| total.absorb(t));
        total
    }

    /// Cumulative (threshold, true-positive weight, false-positive weight) at
    /// each distinct positively weighted score, highest threshold first. As in
    /// scikit-learn, the last entry's sums are the class totals used to
    /// normalize rates, so curves end exactly at 1.
    fn sweep(&self) -> Vec<(f64, f64, f64)> {
        let (mut tp, mut fp) = (0.0, 0.0);
        let mut out = Vec::new();
        for (s, t) in self.atoms().iter().rev().filter(|(_, t)| t.weight() > 0.0) {
            tp += t.w_pos;
            fp += t.w_neg;
            out.push((*s, tp, fp));
        }
        out
    }

    /// The sweep with its (positive, negative) totals.
    fn sweep_with_totals(&self) -> (Vec<(f64, f64, f64)>, f64, f64) {
        let sweep = self.sweep();
        let (p, n) = sweep.last().map_or((0.0, 0.0), |&(_, tp, fp)| (tp, fp));
        (sweep, p, n)
    }

    /// scikit-learn's `roc_auc_score` (trapezoidal, so tied scores count ½);
    /// `None` unless both classes have positive weight.
    pub fn roc_auc(&self) -> Option<f64> {
        let (sweep, p, n) = self.sweep_with_totals();
        if p <= 0.0 || n <= 0.0 {
            return None;
        }
        let (mut area, mut tp, mut fp) = (0.0, 0.0, 0.0);
        for (_, tp1, fp1) in sweep {
            area += (fp1 - fp) * (tp1 + tp) / 2.0;
            (tp, fp) = (tp1, fp1);
        }
        Some(area / (p * n))
    }

    /// scikit-learn's `average_precision_score`: Σ (R_n − R_{n−1}) P_n over
    /// thresholds in decreasing order; `None` without positive weight.
    pub fn average_precision(&self) -> Option<f64> {
        let (sweep, positives, _) = self.sweep_with_totals();
        if positives <= 0.0 {
            return None;
        }
        let (mut ap, mut recall) = (0.0, 0.0);
        for (_, tp, fp) in sweep {
            let r = tp / positives;
            ap += (r - recall) * (tp / (tp + fp));
            recall = r;
        }
        Some(ap.max(0.0))
    }

    /// scikit-learn's `log_loss` (natural log, probabilities clipped to
    /// [eps, 1 − eps] with eps = f64::EPSILON); `None` without weight.
    pub fn log_loss(&self) -> Option<f64> {
        let w = self.weight();
        (w > 0.0).then(|| (self.log_loss + self.point_losses().0) / w)
    }

    /// Σ w·(−log-likelihood) and Σ w·(score − y)² over the exact points not yet
    /// folded into `log_loss`/`brier` (those hold the rows already binned).
    fn point_losses(&self) -> (f64, f64) {
        // scikit-learn clips both columns [1 − p, p] to [eps, 1 − eps].
        let eps = f64::EPSILON;
        // In score order, so the sum does not depend on the map's layout.
        self.sorted_points().iter().fold((0.0, 0.0), |(ll, br), &(s, t)| {
            let ll = ll + t.w_pos * -s.clamp(eps, 1.0 - eps).ln() + t.w_neg * -(1.0 - s).clamp(eps, 1.0 - eps).ln();
            let br = br + t.w_pos * (s - 1.0) * (s - 1.0) + t.w_neg * s * s;
            (ll, br)
        })
    }

    /// scikit-learn's `brier_score_loss`: weighted mean of (score − y)².
    pub fn brier_score(&self) -> Option<f64> {
        let w = self.weight();
        (w > 0.0).then(|| (self.brier + self.point_losses().1) / w)
    }

    /// Per non-empty uniform bin: (lower, upper, Σw·score, Σw·y, Σw, rows).
    fn calibration_sums(&self, bins: usize) -> Result<Vec<(f64, f64, CalibrationSums)>> {
        if !(1..=MAX_CALIBRATION_BINS).contains(&bins) {
            return Err(Error::invalid("bins", format!("bins must be between 1 and {MAX_CALIBRATION_BINS}, got {bins}"), "10 bins is usual"));
        }
        // numpy.linspace(0, 1, bins + 1)
        let edge = |i: usize| if i == bins { 1.0 } else { i as f64 * (1.0 / bins as f64) };
        let mut acc = vec![(0.0, 0.0, 0.0, 0u64); bins];
        for (s, t) in self.atoms() {
            // numpy.searchsorted(edges[1:-1], s, side='left'), as scikit-learn.
            let mut i = ((s * bins as f64) as usize).min(bins - 1);
            while i > 0 && edge(i) >= s {
                i -= 1;
            }
            while i + 1 < bins && edge(i + 1) < s {
                i += 1;
            }
            let a = &mut acc[i];
            a.0 += t.weight() * s;
            a.1 += t.w_pos;
            a.2 += t.weight();
            a.3 = a.3.saturating_add(t.n());
        }
        Ok(acc.into_iter().enumerate().filter(|(_, a)| a.2 > 0.0).map(|(i, sums)| (edge(i), edge(i + 1), sums)).collect())
    }

    /// Per uniform calibration bin: (lower, upper, mean score, positive
    /// fraction, rows), for bins with positive weight only, as scikit-learn's
    /// `calibration_curve(strategy='uniform')` (a score on an inner edge goes
    /// to the lower bin), generalized to weights.
    pub fn calibration(&self, bins: usize) -> Result<Vec<CalibrationBin>> {
        Ok(self.calibration_sums(bins)?.into_iter().map(|(lo, hi, (ws, wy, w, n))| (lo, hi, ws / w, wy / w, n)).collect())
    }

    /// Expected calibration error over `bins` uniform bins (same binning as
    /// [`Self::calibration`]): Σ_b (w_b / w) · |mean score_b − positive
    /// fraction_b|; `None` without weight.
    pub fn ece(&self, bins: usize) -> Result<Option<f64>> {
        let sums = self.calibration_sums(bins)?;
        let total: f64 = sums.iter().map(|b| b.2 .2).sum();
        if total <= 0.0 {
            return Ok(None);
        }
        Ok(Some(sums.iter().map(|&(_, _, (ws, wy, w, _))| w / total * (ws / w - wy / w).abs()).sum()))
    }

    /// scikit-learn's `roc_curve(drop_intermediate=False)` as (threshold, FPR,
    /// TPR), starting at (+∞, 0, 0); empty unless both classes have weight.
    pub fn roc_curve(&self) -> Vec<(f64, f64, f64)> {
        let (sweep, p, n) = self.sweep_with_totals();
        if p <= 0.0 || n <= 0.0 {
            return Vec::new();
        }
        std::iter::once((f64::INFINITY, 0.0, 0.0)).chain(sweep.into_iter().map(|(s, tp, fp)| (s, fp / n, tp / p))).collect()
    }

    /// scikit-learn's `precision_recall_curve` as (threshold, precision,
    /// recall), thresholds ascending, ending with scikit-learn's extra point
    /// (precision 1, recall 0), given threshold +∞; empty without positives.
    pub fn pr_curve(&self) -> Vec<(f64, f64, f64)> {
        let (sweep, positives, _) = self.sweep_with_totals();
        if positives <= 0.0 {
            return Vec::new();
        }
        let mut out: Vec<(f64, f64, f64)> = sweep.into_iter().map(|(s, tp, fp)| (s, tp / (tp + fp), tp / positives)).collect();
        out.reverse();
        out.push((f64::INFINITY, 1.0, 0.0));
        out
    }

    /// The binary confusion matrix of `predicted = score >= threshold`; it is
    /// marked weighted when any row had a weight other than 1.
    pub fn confusion_at(&self, threshold: f64) -> Result<Confusion> {
        if threshold.is_nan() {
            return Err(Error::invalid("threshold", "threshold must not be NaN", "pass a number; scores at or above it are predicted positive"));
        }
        let mut cells = [Cell::default(); 4]; // actual * 2 + predicted
        for (s, t) in self.atoms() {
            let predicted = (s >= threshold) as usize;
            for (actual, n, w) in [(0, t.n_neg, t.w_neg), (1, t.n_pos, t.w_pos)] {
                let c = &mut cells[actual * 2 + predicted];
                c.n = c.n.saturating_add(n);
                c.w += w;
            }
        }
        let mut cm = Confusion::new(LabelKind::Binary);
        if self.weighted {
            cm.mark_weighted();
        }
        for (i, cell) in cells.into_iter().enumerate() {
            cm.add_counts(if i >= 2 { "true" } else { "false" }, if i % 2 == 1 { "true" } else { "false" }, cell)?;
        }
        Ok(cm)
    }

    /// The threshold minimizing fp_cost·FP weight + fn_cost·FN weight over
    /// every distinct score (predict positive when score >= threshold) and +∞
    /// (predict nothing positive), with that total cost; among equal costs the
    /// highest threshold wins. `None` for an empty state.
    pub fn best_threshold(&self, fp_cost: f64, fn_cost: f64) -> Result<Option<(f64, f64)>> {
        check_finite("fp_cost", fp_cost)?;
        check_finite("fn_cost", fn_cost)?;
        if self.points.is_empty() && self.bins.is_empty() {
            return Ok(None);
        }
        let (sweep, positives, _) = self.sweep_with_totals();
        let mut best = (f64::INFINITY, fn_cost * positives);
        for (s, tp, fp) in sweep {
            let cost = fp_cost * fp + fn_cost * (positives - tp);
            if cost < best.1 {
                best = (s, cost);
            }
        }
        Ok(Some(best))
    }

    fn check(self) -> Result<Self> {
        let bad = |m: &str| Err(Error::BadBinary(format!("score summary {m}")));
        if !(self.log_loss.is_finite() && self.log_loss >= 0.0 && self.brier.is_finite() && self.brier >= 0.0) {
            return bad("has a negative or non-finite loss sum");
        }
        if !(self.unbounded || self.fits_stored_form()) {
            return bad("has more scores or bins than this mlmon keeps");
        }
        let tally_ok = |t: &Tally| {
            [t.w_pos, t.w_neg].iter().all(|w| w.is_finite() && *w >= 0.0)
                && t.n_pos.checked_add(t.n_neg).is_some_and(|n| n > 0)
                && (t.n_pos > 0 || t.w_pos == 0.0)
                && (t.n_neg > 0 || t.w_neg == 0.0)
        };
        let mut rows = 0u64;
        for (&k, t) in &self.points {
            let s = f64::from_bits(k);
            if !((0.0..=1.0).contains(&s) && k >> 63 == 0 && tally_ok(t)) {
                return bad("has an invalid score or tally");
            }
            rows = rows.checked_add(t.n()).ok_or(Error::BadBinary("score summary row count overflows".into()))?;
        }
        for (i, b) in self.bins.iter().enumerate() {
            if !(0.0 <= b.lo && b.lo <= b.mean && b.mean <= b.hi && b.hi <= 1.0 && tally_ok(&b.tally)) {
                return bad("has an invalid bin");
            }
            if i > 0 && bin_order(&self.bins[i - 1], b) == Ordering::Greater {
                return bad("has bins out of order");
            }
            rows = rows.checked_add(b.tally.n()).ok_or(Error::BadBinary("score summary row count overflows".into()))?;
        }
        if rows == 0 && (self.log_loss != 0.0 || self.brier != 0.0) {
            return bad("has losses but no rows");
        }
        Ok(self)
    }

    /// Binary form: version, tag `S`, `flags u8` (bit 0: weighted), `log_loss
    /// f64`, `brier f64`, `score_count u32` then per score `score f64, w_pos
    /// f64, w_neg f64, n_pos u64, n_neg u64`, `bin_count u32` then per bin
    /// `mean, lo, hi` (f64) and the same four tally fields.
    pub fn encode(&self) -> Vec<u8> {
        if let Some(stored) = self.compressed_for_storage() {
            return stored.encode();
        }
        let mut w = Writer::new(TAG);
        w.u8(if self.weighted { FLAG_WEIGHTED } else { 0 });
        w.f64(self.log_loss);
        w.f64(self.brier);
        let tally = |w: &mut Writer, t: &Tally| {
            w.f64(t.w_pos);
            w.f64(t.w_neg);
            w.u64(t.n_pos);
            w.u64(t.n_neg);
        };
        w.u32(self.points.len() as u32);
        for (s, t) in self.sorted_points() {
            w.f64(s);
            tally(&mut w, &t);
        }
        w.u32(self.bins.len() as u32);
        for b in &self.bins {
            for x in [b.mean, b.lo, b.hi] {
                w.f64(x);
            }
            tally(&mut w, &b.tally);
        }
        w.finish()
    }

    /// A copy compressed to the stored bounds, if this state exceeds them.
    fn compressed_for_storage(&self) -> Option<ScoreSummary> {
        (!self.unbounded && !self.fits_stored_form()).then(|| {
            let mut stored = self.clone();
            stored.compress();
            stored
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_with_limit(bytes, false)
    }

    /// Decodes the partial state of an exact one-step aggregate
    /// (`mlmon.roc_auc(score, actual)` in a parallel plan), which may hold any
    /// number of distinct scores; the result is unbounded.
    pub fn decode_unbounded(bytes: &[u8]) -> Result<Self> {
        Self::decode_with_limit(bytes, true)
    }

    fn decode_with_limit(bytes: &[u8], unbounded: bool) -> Result<Self> {
        let mut r = Reader::new(bytes, TAG, "score summary")?;
        // Each score takes 40 bytes, so the input's length bounds an unbounded count.
        let max_scores = if unbounded { bytes.len() / 40 } else { MAX_ENTRIES };
        let flags = r.u8("flags")?;
        if flags & !FLAG_WEIGHTED != 0 {
            return Err(Error::BadBinary(format!("unknown flags {flags:#x}")));
        }
        let mut s = ScoreSummary { weighted: flags & FLAG_WEIGHTED != 0, log_loss: r.f64("log loss")?, brier: r.f64("brier")?, unbounded, ..Default::default() };
        fn tally(r: &mut Reader) -> Result<Tally> {
            Ok(Tally { w_pos: r.f64("weight")?, w_neg: r.f64("weight")?, n_pos: r.u64("count")?, n_neg: r.u64("count")? })
        }
        let mut previous: Option<f64> = None;
        for _ in 0..r.len("score count", max_scores)? {
            let score = r.f64("score")?;
            if previous.is_some_and(|p| p >= score) {
                return Err(Error::BadBinary("scores are out of order or repeated".into()));
            }
            previous = Some(score);
            s.points.insert(score.to_bits(), tally(&mut r)?);
        }
        for _ in 0..r.len("bin count", MAX_BINS)? {
            let (mean, lo, hi) = (r.f64("bin mean")?, r.f64("bin low")?, r.f64("bin high")?);
            s.bins.push(Bin { mean, lo, hi, tally: tally(&mut r)? });
        }
        r.finish()?;
        s.check()
    }

    pub fn to_json(&self) -> String {
        if let Some(stored) = self.compressed_for_storage() {
            return stored.to_json();
        }
        let form = TextForm {
            version: wire::FORMAT_VERSION,
            weighted: self.weighted,
            log_loss: self.log_loss,
            brier: self.brier,
            scores: self.sorted_points().iter().map(|(s, t)| TextEntry::new(*s, None, t)).collect(),
            bins: self.bins.iter().map(|b| TextEntry::new(b.mean, Some((b.lo, b.hi)), &b.tally)).collect(),
        };
        serde_json::to_string(&form).expect("plain data serializes")
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let t: TextForm = wire::parse_json(text, |t: &TextForm| t.version)?;
        let mut s = ScoreSummary { weighted: t.weighted, log_loss: t.log_loss, brier: t.brier, ..Default::default() };
        let tally = |e: &TextEntry| Tally { w_pos: e.w_pos, w_neg: e.w_neg, n_pos: e.n_pos, n_neg: e.n_neg };
        for e in &t.scores {
            if e.lo.is_some() || e.hi.is_some() {
                return Err(Error::BadText("a score entry has a range; ranges belong to bins".into()));
            }
            if s.points.insert(e.score.to_bits(), tally(e)).is_some() {
                return Err(Error::BadText(format!("score {} appears twice", e.score)));
            }
        }
        for e in &t.bins {
            let (Some(lo), Some(hi)) = (e.lo, e.hi) else { return Err(Error::BadText("a bin lacks \"lo\" or \"hi\"".into())) };
            s.bins.push(Bin { mean: e.score, lo, hi, tally: tally(e) });
        }
        s.check().map_err(wire::as_bad_text)
    }
}

/// One score (or bin, with its range; `score` is then the mean) in JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextEntry {
    score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lo: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hi: Option<f64>,
    w_pos: f64,
    w_neg: f64,
    n_pos: u64,
    n_neg: u64,
}

impl TextEntry {
    fn new(score: f64, range: Option<(f64, f64)>, t: &Tally) -> Self {
        TextEntry { score, lo: range.map(|r| r.0), hi: range.map(|r| r.1), w_pos: t.w_pos, w_neg: t.w_neg, n_pos: t.n_pos, n_neg: t.n_neg }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextForm {
    version: u8,
    weighted: bool,
    log_loss: f64,
    brier: f64,
    scores: Vec<TextEntry>,
    bins: Vec<TextEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    fn build(rows: &[(f64, bool, f64)]) -> ScoreSummary {
        let mut s = ScoreSummary::new();
        rows.iter().for_each(|&(score, y, w)| s.add(score, y, w).unwrap());
        s
    }

    fn weighted_sample() -> ScoreSummary {
        let s = [0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.0, 1.0, 0.65, 0.35, 0.2, 0.7];
        let y = [0, 0, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1];
        let w = [1.0, 2.0, 0.5, 1.0, 1.5, 1.0, 0.0, 2.0, 1.0, 1.0, 3.0, 0.25];
        build(&(0..12).map(|i| (s[i], y[i] == 1, w[i])).collect::<Vec<_>>())
    }

    fn assert_curve(got: &[(f64, f64, f64)], want: &[(f64, f64, f64)]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.0 == w.0 && close(g.1, w.1) && close(g.2, w.2), "{g:?} vs {w:?}");
        }
    }

    #[test]
    fn matches_scikit_learn_weighted() {
        // s=[.1,.4,.35,.8,.4,.9,0,1,.65,.35,.2,.7], y=[0,0,1,1,1,1,0,1,0,0,1,1],
        // w=[1,2,.5,1,1.5,1,0,2,1,1,3,.25]; scikit-learn 1.9.1 with sample_weight=w:
        let s = weighted_sample();
        assert!(close(s.roc_auc().unwrap(), 0.6378378378378378)); // roc_auc_score
        assert!(close(s.average_precision().unwrap(), 0.8253980494201387)); // average_precision_score
        assert!(close(s.log_loss().unwrap(), 0.684417579235125)); // log_loss
        assert!(close(s.brier_score().unwrap(), 0.25394736842105264)); // brier_score_loss
        // roc_curve(drop_intermediate=False) as (threshold, fpr, tpr)
        assert_curve(&s.roc_curve(), &[
            (f64::INFINITY, 0.0, 0.0), (1.0, 0.0, 0.21621621621621623), (0.9, 0.0, 0.32432432432432434),
            (0.8, 0.0, 0.43243243243243246), (0.7, 0.0, 0.4594594594594595), (0.65, 0.2, 0.4594594594594595),
            (0.4, 0.6, 0.6216216216216216), (0.35, 0.8, 0.6756756756756757), (0.2, 0.8, 1.0), (0.1, 1.0, 1.0),
        ]);
        // precision_recall_curve as (threshold, precision, recall), the last point given threshold inf
        assert_curve(&s.pr_curve(), &[
            (0.1, 0.6491228070175439, 1.0), (0.2, 0.6981132075471698, 1.0), (0.35, 0.6097560975609756, 0.6756756756756757),
            (0.4, 0.6571428571428571, 0.6216216216216216), (0.65, 0.8095238095238095, 0.4594594594594595),
            (0.7, 1.0, 0.4594594594594595), (0.8, 1.0, 0.43243243243243246), (0.9, 1.0, 0.32432432432432434),
            (1.0, 1.0, 0.21621621621621623), (f64::INFINITY, 1.0, 0.0),
        ]);
        // confusion_matrix(y, s >= 0.4, sample_weight=w) = [[2, 3], [3.5, 5.75]]; counts by hand.
        let cm = s.confusion_at(0.4).unwrap();
        assert!(cm.is_weighted());
        assert_eq!(cm.cell("false", "false"), Cell { n: 3, w: 2.0 });
        assert_eq!(cm.cell("false", "true"), Cell { n: 2, w: 3.0 });
        assert_eq!(cm.cell("true", "false"), Cell { n: 2, w: 3.5 });
        assert_eq!(cm.cell("true", "true"), Cell { n: 5, w: 5.75 });
        // Brute force over numpy thresholds [inf] + distinct scores: fp_cost 1, fn_cost 5 -> (0.2, 4.0).
        assert_eq!(s.best_threshold(1.0, 5.0).unwrap(), Some((0.2, 4.0)));
        assert_eq!(s.best_threshold(1.0, 0.0).unwrap(), Some((f64::INFINITY, 0.0)));
        assert_eq!((s.count(), s.weight()), (12, 14.25));
    }

    #[test]
    fn matches_scikit_learn_unweighted_and_calibration() {
        let s2 = [0.0, 0.1, 0.1, 0.2, 0.3, 0.3, 0.5, 0.55, 0.6, 0.8, 0.95, 1.0, 0.25, 0.75];
        let y2 = [1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0];
        let s = build(&(0..14).map(|i| (s2[i], y2[i] == 1, 1.0)).collect::<Vec<_>>());
        // scikit-learn 1.9.1 on (y2, s2): roc_auc_score, average_precision_score,
        // log_loss (clips the score 0 of a positive to eps), brier_score_loss.
        assert!(close(s.roc_auc().unwrap(), 0.6458333333333334));
        assert!(close(s.average_precision().unwrap(), 0.7863553113553114));
        assert!(close(s.log_loss().unwrap(), 3.156163148368931));
        assert!(close(s.brier_score().unwrap(), 0.27285714285714285));
        assert!(!s.confusion_at(0.5).unwrap().is_weighted());
        // calibration_curve(y2, s2, n_bins=5): prob_true, prob_pred; bin counts from
        // np.bincount(np.searchsorted(np.linspace(0,1,6)[1:-1], s2)).
        let cal = s.calibration(5).unwrap();
        let want_true = [0.5, 0.3333333333333333, 0.6666666666666666, 0.5, 1.0];
        let want_pred = [0.1, 0.2833333333333333, 0.5499999999999999, 0.775, 0.975];
        let want_n = [4, 3, 3, 2, 2];
        for (i, &(lo, hi, pred, frac, n)) in cal.iter().enumerate() {
            assert!(close(lo, i as f64 * 0.2) && close(hi, (i + 1) as f64 * 0.2));
            assert!(close(pred, want_pred[i]) && close(frac, want_true[i]) && n == want_n[i], "{:?}", cal[i]);
        }
        // numpy: sum(n_b/14 * |prob_pred - prob_true|)
        assert!(close(s.ece(5).unwrap().unwrap(), 0.19285714285714287));
        assert!(s.calibration(0).is_err() && s.ece(MAX_CALIBRATION_BINS + 1).is_err());
    }

    #[test]
    fn undefined_metrics() {
        let empty = ScoreSummary::new();
        assert_eq!((empty.roc_auc(), empty.average_precision(), empty.log_loss(), empty.brier_score()), (None, None, None, None));
        assert_eq!((empty.ece(10).unwrap(), empty.best_threshold(1.0, 1.0).unwrap()), (None, None));
        let negatives = build(&[(0.2, false, 1.0), (0.7, false, 1.0), (0.9, true, 0.0)]);
        assert_eq!((negatives.roc_auc(), negatives.average_precision()), (None, None));
        assert!(negatives.roc_curve().is_empty() && negatives.pr_curve().is_empty());
        assert_eq!(negatives.count(), 3);
        let positives = build(&[(0.2, true, 1.0)]);
        assert_eq!((positives.roc_auc(), positives.average_precision()), (None, Some(1.0)));
    }

    #[test]
    fn rejects_bad_inputs() {
        let mut s = ScoreSummary::new();
        for score in [-0.1, 1.0000001, f64::NAN, f64::INFINITY] {
            assert!(matches!(s.add(score, true, 1.0), Err(Error::InvalidArgument { argument: "score", .. })));
        }
        assert!(matches!(s.add(0.5, true, -1.0), Err(Error::InvalidArgument { argument: "weight", .. })));
        assert!(matches!(s.confusion_at(f64::NAN), Err(Error::InvalidArgument { argument: "threshold", .. })));
        assert!(matches!(s.best_threshold(f64::NAN, 1.0), Err(Error::InvalidArgument { argument: "fp_cost", .. })));
        s.add(-0.0, false, 1.0).unwrap();
        assert_eq!(s, build(&[(0.0, false, 1.0)]));
    }

    /// xorshift64* uniform in (0, 1).
    fn uniform(seed: &mut u64) -> f64 {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        ((seed.wrapping_mul(0x2545F4914F6CDD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Continuous scores: a logistic of a normal whose mean depends on the class
    /// (and on `drift`, which moves the whole distribution over time).
    fn continuous_rows(n: usize, seed: u64, drift: bool) -> Vec<(f64, bool, f64)> {
        let mut seed = seed;
        (0..n)
            .map(|i| {
                let y = uniform(&mut seed) < 0.3;
                let normal = (-2.0 * uniform(&mut seed).ln()).sqrt() * (std::f64::consts::TAU * uniform(&mut seed)).cos();
                let shift = if drift { 4.0 * i as f64 / n as f64 - 2.0 } else { 0.0 };
                let z = normal + if y { 1.0 } else { 0.0 } + shift;
                (1.0 / (1.0 + (-z).exp()), y, 1.0)
            })
            .collect()
    }

    /// Mann–Whitney AUC with ties counted ½, by sorting all rows.
    fn exact_auc(rows: &[(f64, bool, f64)]) -> f64 {
        let mut sorted = rows.to_vec();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut neg_below, mut wins, mut i) = (0.0, 0.0, 0);
        while i < sorted.len() {
            let j = (i..sorted.len()).find(|&j| sorted[j].0 != sorted[i].0).unwrap_or(sorted.len());
            let pos = sorted[i..j].iter().filter(|r| r.1).count() as f64;
            let neg = (j - i) as f64 - pos;
            wins += pos * (neg_below + neg / 2.0);
            neg_below += neg;
            i = j;
        }
        let p = rows.iter().filter(|r| r.1).count() as f64;
        wins / (p * (rows.len() as f64 - p))
    }

    #[test]
    fn compressed_auc_stays_within_1e3_of_exact() {
        for (drift, parts) in [(false, 1), (false, 10), (true, 1), (true, 7)] {
            let rows = continuous_rows(1_000_000, 0x1234_5678 + drift as u64, drift);
            let mut summary = ScoreSummary::new();
            for chunk in rows.chunks(rows.len().div_ceil(parts)) {
                summary.merge(&build(chunk));
            }
            assert!(!summary.is_exact() && summary.bins.len() + summary.points.len() <= MAX_IN_MEMORY);
            let (got, want) = (summary.roc_auc().unwrap(), exact_auc(&rows));
            assert!((got - want).abs() < 1e-3, "drift {drift}, {parts} parts: {got} vs exact {want}");
            assert_eq!(summary.count(), 1_000_000);
            let encoded = summary.encode();
            assert!(encoded.len() < 600_000);
            let decoded = ScoreSummary::decode(&encoded).unwrap();
            assert!(decoded.fits_stored_form() && (decoded.roc_auc().unwrap() - want).abs() < 1e-3);
            assert_eq!(decoded.count(), 1_000_000);
        }
    }

    #[test]
    fn merge_is_symmetric_exact_and_compressed() {
        let a = build(&continuous_rows(3000, 1, false));
        let b = build(&continuous_rows(MAX_IN_MEMORY, 2, true));
        let c = weighted_sample();
        for (x, y) in [(&a, &c), (&a, &b), (&b, &c)] {
            let (mut xy, mut yx) = (x.clone(), y.clone());
            xy.merge(y);
            yx.merge(x);
            assert_eq!(xy, yx);
        }
        let mut ab = a.clone();
        ab.merge(&b);
        assert!(!ab.is_exact() && a.is_exact());
        assert!(ab.bins.len() <= MAX_BINS);
    }

    #[test]
    fn forms_round_trip_and_reject_garbage() {
        let exact = weighted_sample();
        // A summary of more distinct scores than the stored form keeps is
        // compressed when encoded; round-trip that stored state.
        let in_memory = build(&continuous_rows(5000, 3, false));
        assert!(in_memory.is_exact());
        let mut compressed = ScoreSummary::decode(&in_memory.encode()).unwrap();
        assert!(!compressed.is_exact() && compressed.count() == 5000);
        compressed.add(0.5, true, 2.0).unwrap();
        for s in [&exact, &compressed, &ScoreSummary::new()] {
            assert_eq!(&ScoreSummary::decode(&s.encode()).unwrap(), s);
            assert_eq!(&ScoreSummary::from_json(&s.to_json()).unwrap(), s);
        }
        let bytes = exact.encode();
        for len in 0..bytes.len() {
            assert!(ScoreSummary::decode(&bytes[..len]).is_err());
        }
        let mut version = bytes.clone();
        version[0] = 7;
        assert!(matches!(ScoreSummary::decode(&version), Err(Error::BadBinary(m)) if m.contains("version 7")));
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = bytes.clone();
            let i = (seed as usize) % b.len();
            b[i] = (seed >> 32) as u8;
            if let Ok(s) = ScoreSummary::decode(&b) {
                let _ = (s.roc_auc(), s.calibration(10), s.best_threshold(1.0, 1.0));
            }
        }
        let entry = r#"{"score":0.5,"w_pos":1,"w_neg":0,"n_pos":1,"n_neg":0}"#;
        for bad in [
            r#"{"version":1,"weighted":false,"log_loss":1,"brier":0,"scores":[],"bins":[]}"#.to_string(),
            format!(r#"{{"version":1,"weighted":false,"log_loss":0,"brier":0,"scores":[{entry},{entry}],"bins":[]}}"#),
            format!(r#"{{"version":1,"weighted":false,"log_loss":0,"brier":0,"scores":[],"bins":[{entry}]}}"#),
            r#"{"version":1,"weighted":false,"log_loss":0,"brier":0,"scores":[{"score":1.5,"w_pos":1,"w_neg":0,"n_pos":1,"n_neg":0}],"bins":[]}"#.into(),
            r#"{"version":1,"weighted":false,"log_loss":0,"brier":0,"scores":[{"score":0.5,"w_pos":1,"w_neg":0,"n_pos":0,"n_neg":1}],"bins":[]}"#.into(),
            r#"{"version":1,"weighted":false,"log_loss":0,"brier":0,"scores":[],"bins":[{"score":0.5,"lo":0.6,"hi":0.7,"w_pos":1,"w_neg":0,"n_pos":1,"n_neg":0}]}"#.into(),
            r#"{"version":2,"weighted":false,"log_loss":0,"brier":0,"scores":[],"bins":[]}"#.into(),
        ] {
            assert!(matches!(ScoreSummary::from_json(&bad), Err(Error::BadText(_))), "{bad}");
        }
    }
}
