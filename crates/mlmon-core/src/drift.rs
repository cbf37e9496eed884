//! Data drift: mergeable histograms and category counts, and the statistics
//! that compare a current distribution with a reference one (PSI,
//! Jensen–Shannon distance, χ² test, two-sample Kolmogorov–Smirnov test and
//! Wasserstein distance) with scipy's definitions.
//!
//! PSI: Σ (q−p)·ln(q/p) over the cells non-empty in at least one of the two
//! distributions (cells empty in both carry no evidence; keeping them would
//! make PSI depend on unused bins). When every such cell is non-empty on
//! both sides, p and q are the raw proportions: the textbook formula,
//! exactly. A cell empty on one side makes ln(q/p) infinite, and one empty
//! bin is common; then, and only then, both sides are smoothed additively
//! (Jeffreys, add-½): p_i = (count_i + 0.5) / (total + 0.5·k), k the cells
//! kept. Evidently instead floors each empty share at 0.0001 (or at the
//! smallest non-empty share / 10⁶ when that is below 0.0001) without
//! renormalizing, so its PSI for an empty cell grows with ln(share / floor)
//! whatever the sample size; add-½ shrinks an empty cell's weight as the
//! samples grow, so the two agree only when no cell is empty. The
//! Jensen–Shannon distance needs no smoothing (it is bounded by 1 with empty
//! cells) and is computed on the raw proportions, exactly as scipy does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::error::{MAX_COUNT, Error, Result};
use crate::kolmogorov::kstwo_sf;
use crate::wire::{self, Reader, Writer};

/// Most bins a histogram may have.
pub const MAX_BINS: usize = 10_000;
/// Most distinct categories a [`Frequencies`] may hold.
pub const MAX_CATEGORIES: usize = 100_000;
/// Most bytes of category text a distribution holds (memory, not rows).
pub const MAX_CATEGORY_BYTES: usize = 64 << 20;
/// Most values a side of `ks_2samp` or `wasserstein` takes as an array: the
/// test sorts copies of both (the aggregates over histograms have no bound).
pub const MAX_SAMPLE: usize = 10_000_000;

const HISTOGRAM_TAG: u8 = b'H';
const FREQUENCIES_TAG: u8 = b'F';

/// Equal-width bins on [lower, upper] plus an underflow and an overflow bin.
/// Bins are half-open [a, b) except the last, which includes `upper`, as in
/// `numpy.histogram`.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    lower: f64,
    upper: f64,
    /// `[underflow, bin 0, ..., bin n-1, overflow]`.
    counts: Vec<u64>,
}

impl Histogram {
    pub fn new(lower: f64, upper: f64, bins: usize) -> Result<Self> {
        if !(lower.is_finite() && upper.is_finite() && lower < upper && (upper - lower).is_finite()) {
            return Err(Error::invalid("lower", format!("histogram range [{lower}, {upper}] is not a finite range with lower < upper"), "pass finite bounds with lower < upper"));
        }
        if !(1..=MAX_BINS).contains(&bins) {
            return Err(Error::invalid("bins", format!("bins must be between 1 and {MAX_BINS}, got {bins}"), "10 to 100 bins is usual for drift monitoring"));
        }
        Ok(Histogram { lower, upper, counts: vec![0; bins + 2] })
    }

    pub fn lower(&self) -> f64 {
        self.lower
    }
    pub fn upper(&self) -> f64 {
        self.upper
    }
    pub fn bins(&self) -> usize {
        self.counts.len() - 2
    }
    /// Counts of the regular bins, lowest first.
    pub fn counts(&self) -> &[u64] {
        &self.counts[1..self.counts.len() - 1]
    }
    pub fn underflow(&self) -> u64 {
        self.counts[0]
    }
    pub fn overflow(&self) -> u64 {
        self.counts[self.counts.len() - 1]
    }
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Left edge of bin `i` (or `upper` for i = bins), as `numpy.linspace`.
    fn edge(&self, i: usize) -> f64 {
        if i == self.bins() {
            self.upper
        } else {
            i as f64 * ((self.upper - self.lower) / self.bins() as f64) + self.lower
        }
    }

    /// Counts a value; −∞ and values below `lower` go to the underflow bin,
    /// +∞ and values above `upper` to the overflow bin. NaN is an error.
    pub fn add(&mut self, value: f64) -> Result<()> {
        if value.is_nan() {
            return Err(Error::invalid("value", "histogram value must not be NaN", "filter NaN out, or map it to a sentinel value first"));
        }
        let n = self.bins();
        let slot = if value < self.lower {
            0
        } else if value > self.upper {
            n + 1
        } else {
            // numpy.histogram: scale, then fix the ~1 ulp misses against the edges.
            let mut i = (((value - self.lower) * (n as f64 / (self.upper - self.lower))) as usize).min(n - 1);
            if value < self.edge(i) {
                i -= 1;
            } else if i != n - 1 && value >= self.edge(i + 1) {
                i += 1;
            }
            i + 1
        };
        self.counts[slot] += 1;
        Ok(())
    }

    pub fn merge(&mut self, other: &Histogram) -> Result<()> {
        self.same_shape(other)?;
        bounded_total([bounded_total(&self.counts)?, bounded_total(&other.counts)?].iter())?;
        self.counts.iter_mut().zip(&other.counts).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn same_shape(&self, other: &Histogram) -> Result<()> {
        if self.lower.to_bits() != other.lower.to_bits() || self.upper.to_bits() != other.upper.to_bits() || self.bins() != other.bins() {
            return Err(Error::invalid(
                "current",
                format!(
                    "histograms have different shapes: [{}, {}] in {} bins vs [{}, {}] in {} bins",
                    self.lower, self.upper, self.bins(), other.lower, other.upper, other.bins()
                ),
                "build both histograms with the same lower, upper and bins",
            ));
        }
        Ok(())
    }

    fn from_parts(lower: f64, upper: f64, underflow: u64, counts: &[u64], overflow: u64) -> Result<Self> {
        let mut h = Histogram::new(lower, upper, counts.len())?;
        h.counts = std::iter::once(underflow).chain(counts.iter().copied()).chain([overflow]).collect();
        bounded_total(&h.counts)?;
        Ok(h)
    }

    /// Binary form: version, tag `H`, `lower f64`, `upper f64`, `bins u32`,
    /// then `bins + 2` u64 counts (underflow, bins, overflow).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(HISTOGRAM_TAG);
        w.f64(self.lower);
        w.f64(self.upper);
        w.u32(self.bins() as u32);
        self.counts.iter().for_each(|&c| w.u64(c));
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, HISTOGRAM_TAG, "histogram")?;
        let (lower, upper) = (r.f64("lower")?, r.f64("upper")?);
        let bins = r.len("bin count", MAX_BINS)?;
        let mut counts = Vec::with_capacity(bins + 2);
        for _ in 0..bins + 2 {
            counts.push(r.u64("count")?);
        }
        r.finish()?;
        Histogram::from_parts(lower, upper, counts[0], &counts[1..=bins], counts[bins + 1]).map_err(wire::as_bad_binary)
    }

    pub fn to_json(&self) -> String {
        let form = HistogramText {
            version: wire::FORMAT_VERSION,
            lower: self.lower,
            upper: self.upper,
            underflow: self.underflow(),
            counts: self.counts().to_vec(),
            overflow: self.overflow(),
        };
        serde_json::to_string(&form).expect("plain data serializes")
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let t: HistogramText = wire::parse_json(text, |t: &HistogramText| t.version)?;
        Histogram::from_parts(t.lower, t.upper, t.underflow, &t.counts, t.overflow).map_err(wire::as_bad_text)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistogramText {
    version: u8,
    lower: f64,
    upper: f64,
    underflow: u64,
    counts: Vec<u64>,
    overflow: u64,
}

fn too_many_rows() -> Error {
    crate::error::count_overflow()
}

/// The sum of `counts`, or an error past [`MAX_COUNT`]: every total must fit
/// a bigint (decoded states are untrusted and may claim 2^64 rows).
fn bounded_total<'a>(counts: impl IntoIterator<Item = &'a u64>) -> Result<u64> {
    counts.into_iter().try_fold(0u64, |t, c| t.checked_add(*c).filter(|&t| t <= MAX_COUNT)).ok_or_else(too_many_rows)
}

/// Counts of categorical values. Categories compare as strings (byte order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frequencies {
    counts: BTreeMap<String, u64>,
    /// The sum of `counts`, kept at most [`MAX_COUNT`].
    total: u64,
    /// Bytes of the categories' text, at most [`MAX_CATEGORY_BYTES`].
    bytes: usize,
}

impl Frequencies {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, category: &str) -> Result<()> {
        self.add_count(category, 1)
    }

    /// Adds `n` occurrences (used by rollups and decoders); `n = 0` is a no-op.
    pub fn add_count(&mut self, category: &str, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        if !self.counts.contains_key(category) && self.counts.len() >= MAX_CATEGORIES {
            return Err(Error::LimitExceeded {
                message: format!("more than {MAX_CATEGORIES} distinct categories"),
                hint: "a column with this many values is usually an identifier; bucket it or use a histogram".into(),
            });
        }
        let new = !self.counts.contains_key(category);
        if new && self.bytes + category.len() > MAX_CATEGORY_BYTES {
            return Err(Error::LimitExceeded {
                message: format!("categories take more than {} MB", MAX_CATEGORY_BYTES >> 20),
                hint: "values this long are usually not categories; map them to short names first".into(),
            });
        }
        // Both checks before any change: a refused add leaves the state as it was.
        self.total = bounded_total([self.total, n].iter())?;
        if new {
            self.bytes += category.len();
        }
        *self.counts.entry(category.to_owned()).or_insert(0) += n;
        Ok(())
    }

    pub fn merge(&mut self, other: &Frequencies) -> Result<()> {
        // Checked up front so that a failed merge leaves `self` unchanged.
        bounded_total([self.total, other.total].iter())?;
        for (category, &n) in &other.counts {
            self.add_count(category, n)?;
        }
        Ok(())
    }

    pub fn count(&self, category: &str) -> u64 {
        self.counts.get(category).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.total
    }
    /// Number of distinct categories.
    pub fn len(&self) -> usize {
        self.counts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
    /// (category, count) in category order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts.iter().map(|(c, &n)| (c.as_str(), n))
    }

    fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> Result<Self> {
        let mut f = Frequencies::new();
        let mut previous: Option<&str> = None;
        let mut total = 0u64;
        for (category, n) in pairs {
            if previous.is_some_and(|p| p >= category) || n == 0 {
                return Err(Error::BadBinary(format!("category {category:?} is out of order, repeated or has a zero count")));
            }
            total = bounded_total([total, n].iter())?;
            f.add_count(category, n)?;
            previous = Some(category);
        }
        Ok(f)
    }

    /// Binary form: version, tag `F`, `count u32`, then per category in byte
    /// order `len u32` + UTF-8 + `n u64` (n > 0).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(FREQUENCIES_TAG);
        w.u32(self.counts.len() as u32);
        for (c, &n) in &self.counts {
            w.str(c);
            w.u64(n);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, FREQUENCIES_TAG, "frequencies")?;
        let len = r.len("category count", MAX_CATEGORIES)?;
        let mut pairs = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            pairs.push((r.str("category")?, r.u64("category count")?));
        }
        r.finish()?;
        Frequencies::from_pairs(pairs).map_err(wire::as_bad_binary)
    }

    pub fn to_json(&self) -> String {
        let form = FrequenciesText {
            version: wire::FORMAT_VERSION,
            counts: self.counts.iter().map(|(c, &n)| CategoryText { category: c.clone(), n }).collect(),
        };
        serde_json::to_string(&form).expect("plain data serializes")
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let t: FrequenciesText = wire::parse_json(text, |t: &FrequenciesText| t.version)?;
        if t.counts.len() > MAX_CATEGORIES {
            return Err(Error::BadText(format!("more than {MAX_CATEGORIES} categories")));
        }
        Frequencies::from_pairs(t.counts.iter().map(|c| (c.category.as_str(), c.n))).map_err(wire::as_bad_text)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryText {
    category: String,
    n: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrequenciesText {
    version: u8,
    counts: Vec<CategoryText>,
}

/// A binned distribution that can be lined up against another of its kind.
pub trait Distribution {
    /// (reference, current) counts per cell, in a fixed order, for every cell
    /// (including histogram under/overflow) of either distribution.
    fn paired_counts(reference: &Self, current: &Self) -> Result<Vec<(u64, u64)>>;
}

impl Distribution for Histogram {
    fn paired_counts(reference: &Self, current: &Self) -> Result<Vec<(u64, u64)>> {
        reference.same_shape(current)?;
        Ok(reference.counts.iter().copied().zip(current.counts.iter().copied()).collect())
    }
}

impl Distribution for Frequencies {
    fn paired_counts(reference: &Self, current: &Self) -> Result<Vec<(u64, u64)>> {
        let mut cells: BTreeMap<&str, (u64, u64)> = reference.iter().map(|(c, n)| (c, (n, 0))).collect();
        for (c, n) in current.iter() {
            cells.entry(c).or_default().1 = n;
        }
        Ok(cells.into_values().collect())
    }
}

/// (reference, current) counts per cell, and the two totals.
type Cells = (Vec<(f64, f64)>, f64, f64);

/// Cells non-empty on at least one side, with both totals; errors if either
/// side is empty.
fn cells<D: Distribution>(reference: &D, current: &D) -> Result<Cells> {
    let cells: Vec<(f64, f64)> =
        D::paired_counts(reference, current)?.into_iter().filter(|&(r, c)| r > 0 || c > 0).map(|(r, c)| (r as f64, c as f64)).collect();
    let (r_total, c_total) = cells.iter().fold((0.0, 0.0), |(a, b), &(r, c)| (a + r, b + c));
    for (total, argument) in [(r_total, "reference"), (c_total, "current")] {
        if total == 0.0 {
            return Err(Error::invalid(argument, format!("{argument} distribution is empty"), "compare distributions that each hold at least one value"));
        }
    }
    Ok((cells, r_total, c_total))
}

/// Population stability index Σ (q−p)·ln(q/p): on raw proportions when no
/// cell is empty on one side, else with add-½ smoothing (see the module
/// documentation). Symmetric in its arguments.
pub fn psi<D: Distribution>(reference: &D, current: &D) -> Result<f64> {
    let (cells, r_total, c_total) = cells(reference, current)?;
    Ok(psi_of_cells(&cells, r_total, c_total))
}

/// PSI of (reference, current) count pairs with the given totals, every
/// pair non-empty on at least one side (see [`psi`]).
pub fn psi_of_cells(cells: &[(f64, f64)], r_total: f64, c_total: f64) -> f64 {
    let smoothing = if cells.iter().any(|&(r, c)| r == 0.0 || c == 0.0) { 0.5 } else { 0.0 };
    let k = cells.len() as f64;
    cells
        .iter()
        .map(|&(r, c)| {
            let p = (r + smoothing) / (r_total + smoothing * k);
            let q = (c + smoothing) / (c_total + smoothing * k);
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// Jensen–Shannon distance with base-2 logarithms, in [0, 1]:
/// `scipy.spatial.distance.jensenshannon(p, q, base=2)`.
pub fn js_distance<D: Distribution>(reference: &D, current: &D) -> Result<f64> {
    let (cells, r_total, c_total) = cells(reference, current)?;
    Ok(js_of_cells(&cells, r_total, c_total) / std::f64::consts::LN_2.sqrt())
}

/// Jensen–Shannon distance with natural logarithms (scipy's default base,
/// Evidently's), in [0, √ln 2], of (reference, current) count pairs.
pub fn js_of_cells(cells: &[(f64, f64)], r_total: f64, c_total: f64) -> f64 {
    let rel_entr = |x: f64, m: f64| if x > 0.0 { x * (x / m).ln() } else { 0.0 };
    let (mut left, mut right) = (0.0, 0.0);
    for &(r, c) in cells {
        let (p, q) = (r / r_total, c / c_total);
        let m = (p + q) / 2.0;
        left += rel_entr(p, m);
        right += rel_entr(q, m);
    }
    ((left + right) / 2.0).max(0.0).sqrt()
}

/// Pearson χ² test of homogeneity on the 2×k table of counts (k = cells
/// non-empty on either side): `scipy.stats.chi2_contingency(correction=False)`.
/// Returns (statistic, p-value, degrees of freedom); with a single cell the
/// test is degenerate and, like scipy, gives (0, 1, 0).
pub fn chi2_test<D: Distribution>(reference: &D, current: &D) -> Result<(f64, f64, u64)> {
    let (cells, r_total, c_total) = cells(reference, current)?;
    Ok(chi2_of_cells(&cells, r_total, c_total))
}

/// [`chi2_test`] of (reference, current) count pairs, each non-empty on at
/// least one side.
pub fn chi2_of_cells(cells: &[(f64, f64)], r_total: f64, c_total: f64) -> (f64, f64, u64) {
    let dof = cells.len().saturating_sub(1) as u64;
    if dof == 0 {
        return (0.0, 1.0, 0);
    }
    let total = r_total + c_total;
    let mut statistic = 0.0;
    for &(r, c) in cells {
        let column = r + c;
        for (observed, row) in [(r, r_total), (c, c_total)] {
            let expected = row * column / total;
            statistic += (observed - expected) * (observed - expected) / expected;
        }
    }
    let p = ChiSquared::new(dof as f64).expect("dof >= 1").sf(statistic);
    (statistic, p, dof)
}

fn sorted_sample(values: &[f64], argument: &'static str) -> Result<Vec<f64>> {
    if values.is_empty() {
        return Err(Error::invalid(argument, format!("{argument} is empty"), "pass at least one value in each sample"));
    }
    if values.iter().any(|v| v.is_nan()) {
        return Err(Error::invalid(argument, format!("{argument} contains NaN"), "filter NaN out first"));
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// Two-sided two-sample Kolmogorov–Smirnov test:
/// `scipy.stats.ks_2samp(a, b, method='asymp')`. Returns (D, p-value).
///
/// The p-value is scipy's: `kstwo.sf(D, round(n·m/(n+m)))`, the finite-n
/// Kolmogorov distribution at the effective sample size. For n = m = 1 that
/// size rounds to 0 and scipy answers NaN; we answer the exact p-value, 1.
/// Infinite values are allowed (only ranks matter); NaN is an error.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Result<(f64, f64)> {
    let (a, b) = (sorted_sample(a, "a")?, sorted_sample(b, "b")?);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let (mut max_diff, mut min_diff) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < a.len() || j < b.len() {
        // Step past every copy of the next value in either sample.
        let v = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.min(*y),
            (Some(x), None) => *x,
            (None, y) => *y.expect("loop condition"),
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        let diff = i as f64 / na - j as f64 / nb;
        max_diff = max_diff.max(diff);
        min_diff = min_diff.min(diff);
    }
    let statistic = max_diff.max((-min_diff).clamp(0.0, 1.0));
    let en = (na * nb / (na + nb)).round_ties_even();
    let p = if en == 0.0 { 1.0 } else { kstwo_sf(en as u64, statistic) };
    Ok((statistic, p))
}

/// First Wasserstein (earth mover's) distance between the empirical
/// distributions of two samples: `scipy.stats.wasserstein_distance(a, b)`.
/// Values must be finite.
pub fn wasserstein(a: &[f64], b: &[f64]) -> Result<f64> {
    for (values, argument) in [(a, "a"), (b, "b")] {
        if values.iter().any(|v| v.is_infinite()) {
            return Err(Error::invalid(argument, format!("{argument} contains an infinite value"), "the distance to an infinite value is infinite; filter them out"));
        }
    }
    let (a, b) = (sorted_sample(a, "a")?, sorted_sample(b, "b")?);
    let mut all: Vec<f64> = a.iter().chain(&b).copied().collect();
    all.sort_by(f64::total_cmp);
    let (mut i, mut j, mut distance) = (0, 0, 0.0);
    for w in all.windows(2) {
        while i < a.len() && a[i] <= w[0] {
            i += 1;
        }
        while j < b.len() && b[j] <= w[0] {
            j += 1;
        }
        distance += (i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs() * (w[1] - w[0]);
    }
    Ok(distance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    fn histogram(counts: [u64; 7]) -> Histogram {
        Histogram::from_parts(0.0, 1.0, counts[0], &counts[1..6], counts[6]).unwrap()
    }

    fn frequencies(pairs: &[(&str, u64)]) -> Frequencies {
        let mut f = Frequencies::new();
        pairs.iter().for_each(|&(c, n)| f.add_count(c, n).unwrap());
        f
    }

    #[test]
    fn bins_like_numpy_histogram() {
        let mut h = Histogram::new(0.0, 1.0, 5).unwrap();
        for v in [-0.5, 0.0, 0.1, 0.2, 0.2, 0.35, 0.5, 0.999, 1.0, 1.5, 0.3, 0.6, 0.7, 0.7, 0.75, f64::INFINITY] {
            h.add(v).unwrap();
        }
        // numpy 2.4.6: np.histogram(values in [0, 1], bins=5, range=(0, 1))[0]
        assert_eq!(h.counts(), &[2, 4, 2, 3, 2]);
        assert_eq!((h.underflow(), h.overflow(), h.total()), (1, 2, 16));
        assert!(h.add(f64::NAN).is_err());
        // Values on rounded edges (linspace gives 0.30000000000000004) land where numpy puts them:
        // numpy 2.4.6: np.histogram([i/10 for i in range(11)], bins=10, range=(0, 1))[0]
        let mut tenths = Histogram::new(0.0, 1.0, 10).unwrap();
        (0..=10).for_each(|i| tenths.add(i as f64 / 10.0).unwrap());
        assert_eq!(tenths.counts(), &[1, 1, 2, 0, 1, 2, 1, 0, 1, 2]);
    }

    #[test]
    fn histogram_validation_and_shapes() {
        for (lo, hi, bins) in [(1.0, 1.0, 5), (0.0, f64::NAN, 5), (0.0, 1.0, 0), (0.0, 1.0, MAX_BINS + 1), (-f64::MAX, f64::MAX, 3)] {
            assert!(Histogram::new(lo, hi, bins).is_err());
        }
        let mut a = Histogram::new(0.0, 1.0, 5).unwrap();
        let b = Histogram::new(0.0, 2.0, 5).unwrap();
        assert!(matches!(a.merge(&b), Err(Error::InvalidArgument { argument: "current", message, .. }) if message.contains("different shapes")));
        assert!(psi(&a, &b).is_err());
    }

    #[test]
    fn histogram_statistics_match_scipy() {
        let (r, c) = (histogram([3, 10, 20, 30, 15, 0, 2]), histogram([0, 5, 25, 28, 10, 7, 5]));
        // numpy: p=(r+.5)/(R+.5k), q likewise over the 7 cells; sum((q-p)*log(q/p))
        assert!(close(psi(&r, &c).unwrap(), 0.40199792355911035, 1e-12));
        // scipy 1.17.1: jensenshannon([3,10,20,30,15,0,2], [0,5,25,28,10,7,5], base=2)
        assert!(close(js_distance(&r, &c).unwrap(), 0.28897760427495517, 1e-12));
        assert_eq!((psi(&r, &r).unwrap(), js_distance(&r, &r).unwrap()), (0.0, 0.0));
        assert!(close(psi(&c, &r).unwrap(), psi(&r, &c).unwrap(), 1e-12));
        // No cell empty on one side: the textbook formula on raw proportions
        // (numpy: p=r/r.sum(), q=c/c.sum(); sum((q-p)*log(q/p))).
        let (r, c) = (histogram([3, 10, 20, 30, 15, 2, 4]), histogram([1, 5, 25, 28, 10, 5, 3]));
        assert!(close(psi(&r, &c).unwrap(), 0.1412685911492881, 1e-12));
    }

    #[test]
    fn frequency_statistics_match_scipy() {
        let r = frequencies(&[("a", 10), ("b", 5), ("c", 0), ("d", 7)]);
        let c = frequencies(&[("a", 4), ("b", 9), ("e", 3), ("d", 7)]);
        // scipy 1.17.1: chi2_contingency([[10,5,7,0],[4,9,7,3]], correction=False) (columns a, b, d, e)
        let (stat, p, dof) = chi2_test(&r, &c).unwrap();
        assert!(close(stat, 6.695369847543761, 1e-12) && close(p, 0.08226797248103758, 1e-10) && dof == 3, "{stat} {p} {dof}");
        // scipy 1.17.1: jensenshannon([10,5,7,0], [4,9,7,3], base=2)
        assert!(close(js_distance(&r, &c).unwrap(), 0.3578263881881683, 1e-12));
        // numpy, add-½ smoothing over the 4 columns
        assert!(close(psi(&r, &c).unwrap(), 0.5325038341893137, 1e-12));
        // scipy 1.17.1: chi2_contingency([[10,0],[0,3]], correction=False)
        let (stat, p, _) = chi2_test(&frequencies(&[("x", 10)]), &frequencies(&[("y", 3)])).unwrap();
        assert!(close(stat, 12.999999999999996, 1e-12) && close(p, 0.0003114909767673845, 1e-10));
        // One column: scipy's degenerate (0, 1, 0).
        assert_eq!(chi2_test(&frequencies(&[("x", 2)]), &frequencies(&[("x", 5)])).unwrap(), (0.0, 1.0, 0));
    }

    #[test]
    fn empty_inputs_are_invalid() {
        let (empty, full) = (Frequencies::new(), frequencies(&[("a", 1)]));
        assert!(matches!(psi(&empty, &full), Err(Error::InvalidArgument { argument: "reference", .. })));
        assert!(matches!(chi2_test(&full, &empty), Err(Error::InvalidArgument { argument: "current", .. })));
        assert!(matches!(ks_2samp(&[], &[1.0]), Err(Error::InvalidArgument { argument: "a", .. })));
        assert!(matches!(wasserstein(&[1.0], &[]), Err(Error::InvalidArgument { argument: "b", .. })));
        assert!(ks_2samp(&[f64::NAN], &[1.0]).is_err() && wasserstein(&[f64::INFINITY], &[1.0]).is_err());
    }

    #[test]
    fn ks_and_wasserstein_match_scipy() {
        let a = [0.1, 0.4, 0.4, 2.0, 3.5, -1.0, 0.7, 0.9];
        let b = [0.4, 0.5, 1.5, 2.5, 2.5, 4.0, 0.0];
        // scipy 1.17.1: ks_2samp(a, b, method='asymp'), wasserstein_distance(a, b)
        let (d, p) = ks_2samp(&a, &b).unwrap();
        assert!(close(d, 0.32142857142857145, 1e-15) && close(p, 0.7019601207830071, 1e-10), "{d} {p}");
        assert!(close(wasserstein(&a, &b).unwrap(), 0.7571428571428573, 1e-12));
        // Generated samples A_i = (7919 i mod 1009)/100, B_j = (104729 j mod 1013)/90 + shift;
        // scipy 1.17.1 ks_2samp(A, B, method='asymp') and wasserstein_distance(A, B).
        for (na, nb, shift, want_d, want_p, want_w) in [
            (300, 250, 0.0, 0.10399999999999998, 0.09820484393069842, 0.5338288888888889),
            (2000, 1500, 0.4, 0.139, 6.602971853048487e-15, 0.970215925925926),
            (40, 3000, 0.9, 0.19333333333333336, 0.09440412792684061, 1.5421333333333338),
        ] {
            let a: Vec<f64> = (0..na).map(|i: u64| (i * 7919 % 1009) as f64 / 100.0).collect();
            let b: Vec<f64> = (0..nb).map(|j: u64| (j * 104729 % 1013) as f64 / 90.0 + shift).collect();
            let (d, p) = ks_2samp(&a, &b).unwrap();
            assert!(d == want_d && close(p, want_p, 1e-10), "n={na} m={nb}: {d} {p}");
            assert!(close(wasserstein(&a, &b).unwrap(), want_w, 1e-12));
        }
        // n = m = 1: scipy's asymp answer is NaN; the exact p-value is 1.
        assert_eq!(ks_2samp(&[1.0], &[2.0]).unwrap(), (1.0, 1.0));
    }

    #[test]
    fn category_limit() {
        let mut f = Frequencies::new();
        (0..MAX_CATEGORIES).for_each(|i| f.add(&i.to_string()).unwrap());
        assert!(matches!(f.add("one more"), Err(Error::LimitExceeded { .. })));
        f.add("0").unwrap();
        assert_eq!(f.count("0"), 2);
    }

    #[test]
    fn forms_round_trip_and_reject_garbage() {
        let h = histogram([1, 0, 5, 2, 0, 9, 3]);
        assert_eq!(Histogram::decode(&h.encode()).unwrap(), h);
        assert_eq!(Histogram::from_json(&h.to_json()).unwrap(), h);
        let f = frequencies(&[("b", 2), ("", 1), ("é", 4)]);
        assert_eq!(Frequencies::decode(&f.encode()).unwrap(), f);
        assert_eq!(Frequencies::from_json(&f.to_json()).unwrap(), f);
        for bytes in [h.encode(), f.encode()] {
            for len in 0..bytes.len() {
                assert!(Histogram::decode(&bytes[..len]).is_err() && Frequencies::decode(&bytes[..len]).is_err());
            }
        }
        assert!(Histogram::decode(&f.encode()).is_err() && Frequencies::decode(&h.encode()).is_err());
        let mut seed = 0x9E3779B97F4A7C15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for mut bytes in [h.encode(), f.encode()] {
                let i = (seed as usize) % bytes.len();
                bytes[i] = (seed >> 32) as u8;
                let _ = (Histogram::decode(&bytes), Frequencies::decode(&bytes));
            }
        }
        for bad in [
            r#"{"version":1,"lower":1,"upper":0,"underflow":0,"counts":[1],"overflow":0}"#,
            r#"{"version":1,"lower":0,"upper":1,"underflow":0,"counts":[],"overflow":0}"#,
            r#"{"version":2,"lower":0,"upper":1,"underflow":0,"counts":[1],"overflow":0}"#,
        ] {
            assert!(matches!(Histogram::from_json(bad), Err(Error::BadText(_))), "{bad}");
        }
        for bad in [
            r#"{"version":1,"counts":[{"category":"a","n":1},{"category":"a","n":2}]}"#,
            r#"{"version":1,"counts":[{"category":"b","n":1},{"category":"a","n":2}]}"#,
            r#"{"version":1,"counts":[{"category":"a","n":0}]}"#,
            r#"{"version":1,"counts":[],"x":1}"#,
        ] {
            assert!(matches!(Frequencies::from_json(bad), Err(Error::BadText(_))), "{bad}");
        }
    }
}
