//! A column's drift: a current period's merged state against a reference
//! period's, with Evidently's choice of method and a drift decision that
//! knows the sample sizes.
//!
//! Method (Evidently 0.7's default, `_get_default_stattest`), by the
//! reference's non-null count n_ref and the column's kind:
//! - numeric, n_ref ≤ 1000: `ks` (two-sample Kolmogorov–Smirnov, drift when
//!   p ≤ 0.05); above: `wasserstein` (W₁ / the reference's population
//!   standard deviation, drift when ≥ 0.1);
//! - categorical, n_ref ≤ 1000: `z` (two proportions) with at most two
//!   categories, else `chisquare` (goodness of fit of the current counts to
//!   the reference shares), drift when p < 0.05; above: `jensenshannon`
//!   (natural log), Evidently's threshold 0.1.
//!
//! The p-value methods are sample-size aware by construction: their false
//! alarm rate is their level whatever n. The distance methods are not: a
//! fixed threshold fires on most noise of small batches (W₁ of 100 draws
//! from the reference itself is about 0.1 sd) and misses real shifts whose
//! distance stays under it however large the batch. mlmon therefore decides
//! them with an effect-size threshold *and* a significance test on the same
//! cells, at level [`DISTANCE_ALPHA`]: the binned KS test for `wasserstein`,
//! the χ² test of homogeneity (which PSI·n·m/(n+m) follows asymptotically)
//! for `jensenshannon`. Its `jensenshannon` threshold is 0.03, not 0.1: a
//! five-point change of a 50/50 category is a distance of 0.035, and 0.1
//! needs a fourteen-point change.
//!
//! Binned statistics: KS D is taken at cell boundaries (never above the
//! raw-value D; below it by at most the largest cell share on either side).
//! W₁ integrates |F_ref − F_cur| with values spread uniformly inside each
//! bin, and with each side's underflow (overflow) values at their mean,
//! which is exact when only one side has values there.

use std::collections::BTreeSet;

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

use super::state::{CategoricalState, ColumnState, NumericState};
use crate::drift::{chi2_of_cells, js_of_cells, psi_of_cells};
use crate::error::{Error, Result};
use crate::kolmogorov::ks_2samp_pvalue;

/// Evidently's reference size at which distances replace tests.
pub const SMALL_REFERENCE: i64 = 1000;
/// Evidently's level for `ks`, `chisquare` and `z`.
pub const P_VALUE_THRESHOLD: f64 = 0.05;
/// Evidently's threshold for the normed Wasserstein distance.
pub const WASSERSTEIN_THRESHOLD: f64 = 0.1;
/// mlmon's threshold for the Jensen–Shannon distance (see the module notes).
pub const JS_THRESHOLD: f64 = 0.03;
/// The significance a distance method also needs.
pub const DISTANCE_ALPHA: f64 = 0.01;
/// PSI and the Jensen–Shannon distance of a numeric column use the
/// reference's deciles (groups of the fine quantile bins).
pub const PSI_GROUPS: usize = 10;

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnDrift {
    pub kind: &'static str,
    pub method: Option<&'static str>,
    pub statistic: Option<f64>,
    pub p_value: Option<f64>,
    pub threshold: Option<f64>,
    pub drifted: Option<bool>,
    pub psi: Option<f64>,
    pub js_distance: Option<f64>,
    pub wasserstein: Option<f64>,
    pub null_share: Option<f64>,
    pub reference_null_share: Option<f64>,
    pub out_of_range_share: Option<f64>,
    /// Dictionary ids of categories in the current period absent from the
    /// reference (numeric: empty).
    pub unseen_categories: Vec<u32>,
    pub n: i64,
    pub reference_n: i64,
}

fn negative() -> Error {
    Error::BadBinary("a merged drift state holds a negative count (the rollup does not match its table; rebuild the drift monitor)".into())
}

fn share(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Compares one column. `name_of` gives a category id's name (to order the
/// categories for the z test as Evidently does).
pub fn compare(
    edges: &[f64],
    reference: &ColumnState,
    current: &ColumnState,
    name_of: &dyn Fn(u32) -> String,
) -> Result<ColumnDrift> {
    for s in [reference, current] {
        if s.nulls() < 0 || s.n() < 0 {
            return Err(negative());
        }
    }
    let (n, reference_n) = (current.n(), reference.n());
    let mut drift = ColumnDrift {
        kind: "numeric",
        method: None,
        statistic: None,
        p_value: None,
        threshold: None,
        drifted: None,
        psi: None,
        js_distance: None,
        wasserstein: None,
        null_share: share(current.nulls(), n.saturating_add(current.nulls())),
        reference_null_share: share(reference.nulls(), reference_n.saturating_add(reference.nulls())),
        out_of_range_share: None,
        unseen_categories: Vec::new(),
        n,
        reference_n,
    };
    match (reference, current) {
        (ColumnState::Numeric(r), ColumnState::Numeric(c)) => numeric(edges, r, c, &mut drift)?,
        (ColumnState::Categorical(r), ColumnState::Categorical(c)) => categorical(r, c, name_of, &mut drift)?,
        _ => return Err(Error::BadBinary("reference and current drift states of different kinds".into())),
    }
    Ok(drift)
}

fn numeric(edges: &[f64], r: &NumericState, c: &NumericState, drift: &mut ColumnDrift) -> Result<()> {
    if r.cells.len() != edges.len() + 1 || c.cells.len() != r.cells.len() {
        return Err(Error::BadBinary("a numeric drift state does not match its column's edges".into()));
    }
    if r.cells.iter().chain(&c.cells).any(|&x| x < 0) {
        return Err(negative());
    }
    let (nr, nc) = (drift.reference_n, drift.n);
    if nc > 0 {
        drift.out_of_range_share = share(c.cells[0].saturating_add(c.cells[c.cells.len() - 1]), nc);
    }
    if nr == 0 || nc == 0 {
        return Ok(());
    }
    let (nrf, ncf) = (nr as f64, nc as f64);
    let (d, p) = binned_ks(&r.cells, &c.cells, nrf, ncf);
    let w = wasserstein_normed(edges, r, c, nrf, ncf);
    drift.wasserstein = w;
    let grouped = |cells: &[i64]| -> Vec<f64> {
        let bins = cells.len() - 2;
        let mut g = vec![0.0; PSI_GROUPS + 2];
        g[0] = cells[0] as f64;
        g[PSI_GROUPS + 1] = cells[cells.len() - 1] as f64;
        for (i, &x) in cells[1..=bins].iter().enumerate() {
            g[1 + i * PSI_GROUPS / bins] += x as f64;
        }
        g
    };
    let pairs = nonempty_pairs(&grouped(&r.cells), &grouped(&c.cells));
    drift.psi = Some(psi_of_cells(&pairs, nrf, ncf));
    drift.js_distance = Some(js_of_cells(&pairs, nrf, ncf));
    if nr <= SMALL_REFERENCE {
        drift.method = Some("ks");
        drift.statistic = Some(d);
        drift.p_value = Some(p);
        drift.threshold = Some(P_VALUE_THRESHOLD);
        drift.drifted = Some(p <= P_VALUE_THRESHOLD);
    } else {
        drift.method = Some("wasserstein");
        drift.statistic = w;
        drift.p_value = Some(p);
        drift.threshold = Some(WASSERSTEIN_THRESHOLD);
        drift.drifted = w.map(|w| w >= WASSERSTEIN_THRESHOLD && p < DISTANCE_ALPHA);
    }
    Ok(())
}

fn nonempty_pairs(r: &[f64], c: &[f64]) -> Vec<(f64, f64)> {
    r.iter().zip(c).filter(|(a, b)| **a + **b > 0.0).map(|(&a, &b)| (a, b)).collect()
}

/// KS D at cell boundaries and its p-value as scipy's `ks_2samp` (Evidently's
/// call) gives it: exact for samples of up to 10,000 values, else asymptotic.
fn binned_ks(r: &[i64], c: &[i64], nr: f64, nc: f64) -> (f64, f64) {
    let (mut cr, mut cc, mut d) = (0.0, 0.0, 0.0f64);
    for (&a, &b) in r.iter().zip(c) {
        cr += a as f64;
        cc += b as f64;
        d = d.max((cr / nr - cc / nc).abs());
    }
    let d = d.min(1.0);
    (d, ks_2samp_pvalue(nr as u64, nc as u64, d))
}

/// W₁ / max(population sd of the reference, 0.001) (Evidently's norm), or
/// None when either side holds infinite values.
fn wasserstein_normed(edges: &[f64], r: &NumericState, c: &NumericState, nr: f64, nc: f64) -> Option<f64> {
    if r.infinite != 0 || c.infinite != 0 {
        return None;
    }
    let last = r.cells.len() - 1;
    // Underflow: ∫ below e0, each side's values at their mean.
    let tail = |ur: f64, mr: f64, uc: f64, mc: f64, boundary: f64, below: bool| -> f64 {
        let (mr, mc) = (if ur > 0.0 { mr } else { boundary }, if uc > 0.0 { mc } else { boundary });
        if below {
            let (a, b) = (mr.min(mc), mr.max(mc));
            let alone = if mr <= mc { ur } else { uc };
            alone * (b - a) + (ur - uc).abs() * (boundary - b)
        } else {
            let (a, b) = (mr.min(mc), mr.max(mc));
            let alone = if mr >= mc { ur } else { uc };
            (ur - uc).abs() * (a - boundary) + alone * (b - a)
        }
    };
    let mean_of = |sum: f64, count: i64| if count > 0 { sum / count as f64 } else { 0.0 };
    let mut w = tail(
        r.cells[0] as f64 / nr,
        mean_of(r.underflow_sum.value(), r.cells[0]),
        c.cells[0] as f64 / nc,
        mean_of(c.underflow_sum.value(), c.cells[0]),
        edges[0],
        true,
    );
    w += tail(
        r.cells[last] as f64 / nr,
        mean_of(r.overflow_sum.value(), r.cells[last]),
        c.cells[last] as f64 / nc,
        mean_of(c.overflow_sum.value(), c.cells[last]),
        edges[edges.len() - 1],
        false,
    );
    // Inside: |F_ref − F_cur| is linear across each bin.
    let (mut cr, mut cc) = (r.cells[0] as f64 / nr, c.cells[0] as f64 / nc);
    for i in 0..edges.len() - 1 {
        let left = cr - cc;
        cr += r.cells[i + 1] as f64 / nr;
        cc += c.cells[i + 1] as f64 / nc;
        let right = cr - cc;
        let width = edges[i + 1] - edges[i];
        w += width
            * if left * right >= 0.0 {
                (left.abs() + right.abs()) / 2.0
            } else {
                (left * left + right * right) / (2.0 * (left.abs() + right.abs()))
            };
    }
    let variance = r.sum_squares.deviations(&r.sum, &crate::compensated::Sum::from_parts(nr, 0.0)) / nr;
    let sd = variance.max(0.0).sqrt();
    Some(w / sd.max(0.001))
}

fn categorical(r: &CategoricalState, c: &CategoricalState, name_of: &dyn Fn(u32) -> String, drift: &mut ColumnDrift) -> Result<()> {
    drift.kind = "categorical";
    if r.other < 0 || c.other < 0 || r.counts.values().chain(c.counts.values()).any(|&x| x < 0) {
        return Err(negative());
    }
    let (nr, nc) = (drift.reference_n, drift.n);
    // Cells: every category counted on either side, then *other* (None).
    let ids: BTreeSet<u32> = r.counts.iter().chain(&c.counts).filter(|(_, n)| **n > 0).map(|(&id, _)| id).collect();
    let mut cells: Vec<(Option<u32>, f64, f64)> = ids
        .iter()
        .map(|id| (Some(*id), *r.counts.get(id).unwrap_or(&0) as f64, *c.counts.get(id).unwrap_or(&0) as f64))
        .collect();
    if r.other > 0 || c.other > 0 {
        cells.push((None, r.other as f64, c.other as f64));
    }
    let unseen: f64 = cells.iter().filter(|(_, a, _)| *a == 0.0).fold(0.0, |total, (_, _, b)| total + b);
    drift.unseen_categories = cells.iter().filter(|(id, a, b)| *a == 0.0 && *b > 0.0 && id.is_some()).map(|(id, _, _)| id.unwrap()).collect();
    if nc > 0 {
        drift.out_of_range_share = Some(unseen / nc as f64);
    }
    if nr == 0 || nc == 0 {
        return Ok(());
    }
    let (nrf, ncf) = (nr as f64, nc as f64);
    let pairs: Vec<(f64, f64)> = cells.iter().map(|&(_, a, b)| (a, b)).collect();
    drift.psi = Some(psi_of_cells(&pairs, nrf, ncf));
    let js = js_of_cells(&pairs, nrf, ncf);
    drift.js_distance = Some(js);
    if nr <= SMALL_REFERENCE {
        let (statistic, p) = if cells.len() <= 2 { z_test(&cells, nrf, ncf, name_of) } else { goodness_of_fit(&pairs, nrf, ncf) };
        drift.method = Some(if cells.len() <= 2 { "z" } else { "chisquare" });
        drift.statistic = Some(statistic);
        drift.p_value = Some(p);
        drift.threshold = Some(P_VALUE_THRESHOLD);
        drift.drifted = Some(p < P_VALUE_THRESHOLD);
    } else {
        let (_, p, _) = chi2_of_cells(&pairs, nrf, ncf);
        drift.method = Some("jensenshannon");
        drift.statistic = Some(js);
        drift.p_value = Some(p);
        drift.threshold = Some(JS_THRESHOLD);
        drift.drifted = Some(js >= JS_THRESHOLD && p < DISTANCE_ALPHA);
    }
    Ok(())
}

/// Evidently's `chisquare`: scipy.stats.chisquare(current counts, reference
/// counts · n_cur / n_ref). A category absent from the reference makes the
/// statistic infinite (p = 0).
fn goodness_of_fit(pairs: &[(f64, f64)], nr: f64, nc: f64) -> (f64, f64) {
    let scale = nc / nr;
    let mut statistic = 0.0;
    for &(r, c) in pairs {
        let expected = r * scale;
        statistic += if expected == 0.0 { f64::INFINITY } else { (c - expected) * (c - expected) / expected };
    }
    let dof = pairs.len().saturating_sub(1);
    if dof == 0 {
        return (0.0, 1.0);
    }
    (statistic, ChiSquared::new(dof as f64).expect("dof >= 1").sf(statistic))
}

/// Evidently's `z`: two proportions of "not the first category" (the
/// categories sorted by name, *other* last), two-sided.
fn z_test(cells: &[(Option<u32>, f64, f64)], nr: f64, nc: f64, name_of: &dyn Fn(u32) -> String) -> (f64, f64) {
    if cells.len() < 2 {
        return (0.0, 1.0);
    }
    let first = cells
        .iter()
        .min_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => name_of(x).cmp(&name_of(y)),
            (None, _) => std::cmp::Ordering::Greater,
            (_, None) => std::cmp::Ordering::Less,
        })
        .expect("two cells");
    let (p1, p2) = ((nr - first.1) / nr, (nc - first.2) / nc);
    let pooled = (p1 * nr + p2 * nc) / (nr + nc);
    let spread = (pooled * (1.0 - pooled) * (1.0 / nr + 1.0 / nc)).sqrt();
    if spread == 0.0 {
        return (0.0, 1.0);
    }
    let z = (p1 - p2) / spread;
    let p = 2.0 * (1.0 - Normal::new(0.0, 1.0).expect("standard normal").cdf(z.abs()));
    (z, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift_monitors::state::NumericState;

    fn numeric_state(edges: &[f64], values: &[f64]) -> ColumnState {
        let mut s = NumericState::new(edges.len());
        values.iter().for_each(|&v| s.add(edges, Some(v), 1));
        ColumnState::Numeric(s)
    }

    #[test]
    fn one_sided_tails_are_exact_and_identical_samples_do_not_drift() {
        let edges: Vec<f64> = (0..=10).map(|i| i as f64).collect();
        let reference: Vec<f64> = (0..2000).map(|i| (i % 1000) as f64 / 100.0).collect();
        let r = numeric_state(&edges, &reference);
        let same = compare(&edges, &r, &r, &|_| String::new()).unwrap();
        assert_eq!(same.method, Some("wasserstein"));
        assert_eq!(same.statistic, Some(0.0));
        assert_eq!(same.drifted, Some(false));
        assert_eq!(same.psi, Some(0.0));
        // Every current value 5 above the range: W₁ = E[c] − E[r] exactly
        // (all of the current mass sits beyond the reference's).
        let current: Vec<f64> = vec![15.0; 50];
        let c = numeric_state(&edges, &current);
        let d = compare(&edges, &r, &c, &|_| String::new()).unwrap();
        let mean_r = reference.iter().sum::<f64>() / reference.len() as f64;
        let sd_r = (reference.iter().map(|x| (x - mean_r).powi(2)).sum::<f64>() / reference.len() as f64).sqrt();
        let expected = (15.0 - mean_r) / sd_r;
        assert!((d.wasserstein.unwrap() - expected).abs() < 1e-3 * expected, "{:?} vs {expected}", d.wasserstein);
        assert_eq!(d.out_of_range_share, Some(1.0));
        assert_eq!(d.drifted, Some(true));
    }

    #[test]
    fn categorical_methods_follow_the_reference_size() {
        let mut r = CategoricalState::default();
        let mut c = CategoricalState::default();
        r.add(Some(1), 600);
        r.add(Some(2), 400);
        c.add(Some(1), 50);
        c.add(Some(2), 40);
        c.add(Some(3), 10);
        let names = |id: u32| format!("c{id}");
        let small = compare(&[], &ColumnState::Categorical(r.clone()), &ColumnState::Categorical(c.clone()), &names).unwrap();
        assert_eq!(small.method, Some("chisquare"));
        assert_eq!(small.p_value, Some(0.0));
        assert_eq!(small.unseen_categories, vec![3]);
        assert_eq!(small.out_of_range_share, Some(0.1));
        r.add(Some(1), 600);
        let large = compare(&[], &ColumnState::Categorical(r), &ColumnState::Categorical(c), &names).unwrap();
        assert_eq!(large.method, Some("jensenshannon"));
    }
}
