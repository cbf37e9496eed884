//! The state of a regression monitor's rollup cell: signed, additive sums
//! over its rows (predictions with their actual value once labeled), so that
//! a late label, an UPDATE or a DELETE is subtracted exactly as it was added.
//!
//! Every sum is compensated ([`crate::compensated`]): added and retracted
//! terms cancel far below f64 resolution. The actual values' squares would
//! still cancel catastrophically for values far from zero (y ≈ 1e9 with a
//! spread of 1e3: Σy² − (Σy)²/n loses 12 of 16 digits), so they are summed
//! relative to a shift, the first actual the state saw; merging re-expresses
//! the other state's sums relative to this one's shift.

use crate::compensated::{two_sum, Sum};
use crate::error::{check_finite, Error, Result};
use crate::regression::RegressionSummary;
use crate::wire::{Reader, Writer};

const TAG: u8 = b'G';

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegressionCells {
    /// Rows (signed in a delta) and their weight.
    pub n: i64,
    pub weight: Sum,
    /// Σw·predicted over every row.
    pub predicted: Sum,
    /// Labeled rows and their weight.
    pub labeled: i64,
    pub labeled_weight: Sum,
    /// Labeled rows: Σw·(y − shift) and Σw·(y − shift)².
    pub shift: Option<f64>,
    pub actual: Sum,
    pub actual_sq: Sum,
    /// Labeled rows, error e = predicted − y: Σw·e, Σw·e², Σw·|e|, and
    /// Σw·|e|/max(|y|, eps) (scikit-learn's MAPE term).
    pub error: Sum,
    pub error_sq: Sum,
    pub abs_error: Sum,
    pub abs_pct_error: Sum,
    /// The largest |term| ever added to `actual_sq` / `error_sq` (never
    /// lowered: a bound, merged by max). A sum whose rows no longer vary
    /// keeps a residue of about 2^-106 of it, which must not read as a
    /// variance; the remaining sum itself is no guide (0 when the rows left
    /// sit on the shift).
    pub actual_scale: f64,
    pub error_scale: f64,
}

impl RegressionCells {
    pub fn new() -> Self {
        Self::default()
    }

    fn sums(&self) -> [&Sum; 9] {
        [
            &self.weight,
            &self.predicted,
            &self.labeled_weight,
            &self.actual,
            &self.actual_sq,
            &self.error,
            &self.error_sq,
            &self.abs_error,
            &self.abs_pct_error,
        ]
    }

    fn sums_mut(&mut self) -> [&mut Sum; 9] {
        [
            &mut self.weight,
            &mut self.predicted,
            &mut self.labeled_weight,
            &mut self.actual,
            &mut self.actual_sq,
            &mut self.error,
            &mut self.error_sq,
            &mut self.abs_error,
            &mut self.abs_pct_error,
        ]
    }

    /// Adds `n` rows (negative: removes them) of one prediction and its actual
    /// value (None: not labeled), of total weight `weight` (signed like `n`).
    pub fn add(&mut self, predicted: f64, actual: Option<f64>, n: i64, weight: f64) -> Result<()> {
        check_finite("predicted", predicted)?;
        check_finite("weight", weight)?;
        self.n = self.n.saturating_add(n);
        self.weight.add(weight);
        self.predicted.add(weight * predicted);
        if let Some(y) = actual {
            check_finite("actual", y)?;
            let e = predicted - y;
            if !e.is_finite() {
                return Err(Error::invalid(
                    "predicted",
                    format!("predicted - actual overflows: {predicted} - {y}"),
                    "argument predicted: values whose difference is a finite double",
                ));
            }
            let shift = *self.shift.get_or_insert(y);
            // y − shift exactly, as a rounded difference and its rounding
            // error: a row retracted through a delta of another shift must
            // subtract the very value it added (a rounded d is off by up to
            // an ulp, a residue no retraction cancels).
            let (d, d_err) = two_sum(y, -shift);
            self.labeled = self.labeled.saturating_add(n);
            self.labeled_weight.add(weight);
            // Products exactly (to 2^-106): a row retracted through a delta
            // of another shift must cancel what it added.
            self.actual.add_product(weight, d);
            self.actual_sq.add_weighted_square(weight, d);
            if d_err != 0.0 {
                self.actual.add_product(weight, d_err);
                self.actual_sq.add_product(2.0 * weight * d, d_err);
                self.actual_sq.add(weight * d_err * d_err);
            }
            self.error.add_product(weight, e);
            self.error_sq.add_weighted_square(weight, e);
            self.actual_scale = self.actual_scale.max((weight * d * d).abs());
            self.error_scale = self.error_scale.max((weight * e * e).abs());
            self.abs_error.add(weight * e.abs());
            self.abs_pct_error.add(weight * (e.abs() / y.abs().max(f64::EPSILON)));
        }
        Ok(())
    }

    pub fn merge(&mut self, other: &RegressionCells) {
        let other = match (self.shift, other.shift) {
            (Some(mine), Some(theirs)) if mine != theirs => other.shifted_to(mine),
            _ => other.clone(),
        };
        if self.shift.is_none() {
            self.shift = other.shift;
        }
        self.n = self.n.saturating_add(other.n);
        self.labeled = self.labeled.saturating_add(other.labeled);
        self.actual_scale = self.actual_scale.max(other.actual_scale);
        self.error_scale = self.error_scale.max(other.error_scale);
        for (a, b) in self.sums_mut().into_iter().zip(other.sums()) {
            a.add_sum(b);
        }
    }

    /// The same rows with their actual sums relative to `shift`:
    /// Σw(y − s') = Σw(y − s) + (s − s')·W and
    /// Σw(y − s')² = Σw(y − s)² + 2(s − s')·Σw(y − s) + (s − s')²·W.
    fn shifted_to(&self, shift: f64) -> RegressionCells {
        let mut out = self.clone();
        let from = self.shift.unwrap_or(shift);
        // The step must be exact for the identities to cancel: as a rounded
        // difference and its exact rounding error (TwoSum), taken in turn.
        let (d, d_err) = two_sum(from, -shift);
        out.shift = Some(shift);
        for step in [d, d_err] {
            if step == 0.0 {
                continue;
            }
            let (w, s1) = (out.labeled_weight, out.actual);
            out.actual_scale = out.actual_scale.max((2.0 * step * s1.value()).abs()).max((step * step * w.value()).abs());
            out.actual.add_scaled(step, &w);
            out.actual_sq.add_scaled(2.0 * step, &s1);
            let sq = step * step;
            out.actual_sq.add_scaled(sq, &w);
            out.actual_sq.add_scaled(step.mul_add(step, -sq), &w);
        }
        out
    }

    pub fn is_zero(&self) -> bool {
        self.n == 0 && self.labeled == 0 && self.sums().iter().all(|s| s.is_zero())
    }

    /// The labeled rows as a regression summary (`mlmon.regression`).
    pub fn summary(&self) -> Result<RegressionSummary> {
        let w = self.labeled_weight.value();
        if self.labeled <= 0 {
            return Ok(RegressionSummary::new());
        }
        if w <= 0.0 {
            // Only zero-weight rows: counted, no metric.
            return RegressionSummary::from_sums(self.labeled as u64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        }
        let shift = self.shift.unwrap_or(0.0);
        let actual_mean = self.actual.value() / w;
        let error_mean = self.error.value() / w;
        // Sums of squared deviations Σw·d² − (Σw·d)²/W, in double-double
        // (the shift may sit far from the rows left after retractions).
        // Rows that do not vary still leave a residue of about 2^-106 of the
        // largest term ever added: one row has no variance, and more rows
        // have none within 2^-90 of that term.
        let deviations = |sq: &Sum, sum: &Sum, scale: f64| {
            let m2 = sq.deviations(sum, &self.labeled_weight);
            if self.labeled == 1 || m2 <= 2f64.powi(-90) * scale.max(sq.value().abs()) { 0.0 } else { m2 }
        };
        let actual_m2 = deviations(&self.actual_sq, &self.actual, self.actual_scale);
        let error_m2 = deviations(&self.error_sq, &self.error, self.error_scale);
        RegressionSummary::from_sums(
            self.labeled as u64,
            w,
            shift,
            actual_mean,
            actual_m2,
            error_mean,
            error_m2,
            self.abs_error.value(),
            self.abs_pct_error.value(),
        )
    }

    /// Binary form: version, tag `G`, n, labeled (i64), shift flag and value,
    /// the nine sums as (hi, lo) pairs, then the two scales.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        w.u64(self.n as u64);
        w.u64(self.labeled as u64);
        w.u8(self.shift.is_some() as u8);
        w.f64(self.shift.unwrap_or(0.0));
        for s in self.sums() {
            let (hi, lo) = s.parts();
            w.f64(hi);
            w.f64(lo);
        }
        w.f64(self.actual_scale);
        w.f64(self.error_scale);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, TAG, "regression cell state")?;
        let mut cells = RegressionCells { n: r.u64("count")? as i64, labeled: r.u64("count")? as i64, ..Default::default() };
        let has_shift = r.u8("shift flag")?;
        let shift = r.f64("shift")?;
        if has_shift > 1 || !shift.is_finite() {
            return Err(Error::BadBinary("regression cell state has a bad shift".into()));
        }
        cells.shift = (has_shift == 1).then_some(shift);
        for s in cells.sums_mut() {
            *s = Sum::from_parts(r.f64("sum")?, r.f64("sum")?);
            if !s.is_finite() {
                return Err(Error::BadBinary("regression cell state has a non-finite sum".into()));
            }
        }
        (cells.actual_scale, cells.error_scale) = (r.f64("scale")?, r.f64("scale")?);
        if !(cells.actual_scale >= 0.0 && cells.error_scale >= 0.0 && cells.actual_scale.is_finite() && cells.error_scale.is_finite()) {
            return Err(Error::BadBinary("regression cell state has a bad scale".into()));
        }
        r.finish()?;
        Ok(cells)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(seed: u64, n: usize) -> Vec<(f64, f64)> {
        // A small LCG: deterministic values near 1e9 with a spread of ~1e3.
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let v = (x >> 11) as f64 / (1u64 << 53) as f64;
                let y = 1e9 + (u - 0.5) * 2000.0;
                (y + (v - 0.5) * 10.0, y)
            })
            .collect()
    }

    #[test]
    fn mass_retraction_near_1e9_matches_the_survivors() {
        let all = rows(7, 20_000);
        let mut state = RegressionCells::new();
        // Added in two deltas with different shifts, retracted in a third.
        let (a, b) = all.split_at(10_000);
        for part in [a, b] {
            let mut d = RegressionCells::new();
            for &(p, y) in part {
                d.add(p, Some(y), 1, 1.0).unwrap();
            }
            state.merge(&d);
        }
        let mut gone = RegressionCells::new();
        for &(p, y) in all.iter().rev().skip(100) {
            gone.add(p, Some(y), -1, -1.0).unwrap();
        }
        state.merge(&gone);
        let survivors = &all[all.len() - 100..];
        let mut exact = RegressionSummary::new();
        for &(p, y) in survivors {
            exact.add(p, y, 1.0).unwrap();
        }
        let got = state.summary().unwrap();
        assert_eq!(got.count(), 100);
        for (g, e) in [(got.mae(), exact.mae()), (got.rmse(), exact.rmse()), (got.r2(), exact.r2()), (got.mape(), exact.mape())] {
            let (g, e) = (g.unwrap(), e.unwrap());
            assert!((g - e).abs() <= 1e-9 * e.abs().max(1e-12), "{g} vs {e}");
        }
        assert_eq!(RegressionCells::decode(&state.encode()).unwrap(), state);
    }

    #[test]
    fn one_row_left_has_no_variance() {
        let mut c = RegressionCells::new();
        c.add(-27.12585959770025, Some(51.63637624160141), 1, 2.0).unwrap();
        c.add(46.585489501788615, Some(73.78947774506398), 1, 0.5).unwrap();
        c.add(46.585489501788615, Some(73.78947774506398), -1, -0.5).unwrap();
        assert_eq!(c.summary().unwrap().r2(), None);
    }

    #[test]
    fn a_row_on_the_shift_left_after_retractions_has_no_variance() {
        // helper-13's reproduction: the row left sits on the state's shift.
        let mut c = RegressionCells::new();
        c.add(-10.0, Some(91.37304760043257), 1, 1.0).unwrap();
        let mut d = RegressionCells::new();
        d.add(120.14, Some(61.2276), 1, 1.0).unwrap();
        c.merge(&d);
        let mut e = RegressionCells::new();
        e.add(120.14, Some(61.2276), -1, -1.0).unwrap();
        e.add(120.14, Some(19.9748), 1, 1.0).unwrap();
        c.merge(&e);
        let mut f = RegressionCells::new();
        f.add(120.14, Some(19.9748), -1, -1.0).unwrap();
        c.merge(&f);
        let s = c.summary().unwrap();
        assert_eq!((s.count(), s.r2(), s.explained_variance()), (1, None, None));
        let mut zero = RegressionCells::new();
        zero.add(3.0, Some(4.0), 1, 0.0).unwrap();
        assert_eq!(zero.summary().unwrap().count(), 1);
    }

    #[test]
    fn a_stale_shift_far_from_the_rows_left_keeps_their_variance() {
        // Review's t10: the shift is an actual of 0, retracted; 200 rows near 1e9 stay.
        let mut c = RegressionCells::new();
        c.add(1e9, Some(0.0), 1, 1.0).unwrap();
        let mut exact = RegressionSummary::new();
        for i in 0..200 {
            let y = 1e9 + ((i * 37) % 5) as f64 - 2.0;
            let p = 1e9 + ((i * 11) % 7) as f64;
            let mut d = RegressionCells::new();
            d.add(p, Some(y), 1, 1.0).unwrap();
            c.merge(&d);
            exact.add(p, y, 1.0).unwrap();
        }
        let mut gone = RegressionCells::new();
        gone.add(1e9, Some(0.0), -1, -1.0).unwrap();
        c.merge(&gone);
        let (got, want) = (c.summary().unwrap().r2().unwrap(), exact.r2().unwrap());
        assert!((got - want).abs() <= 1e-9 * want.abs(), "{got} vs {want}");
    }

    #[test]
    fn a_zero_weight_row_beside_one_on_the_shift_has_no_variance() {
        let mut c = RegressionCells::new();
        c.add(-27.12585959770025, Some(51.63637624160141), 1, 2.0).unwrap();
        c.add(46.585489501788615, Some(73.78947774506398), 1, 0.0).unwrap();
        let mut d = RegressionCells::new();
        d.add(10.0, Some(99.0), 1, 3.0).unwrap();
        c.merge(&d);
        let mut e = RegressionCells::new();
        e.add(10.0, Some(99.0), -1, -3.0).unwrap();
        c.merge(&e);
        assert_eq!(c.summary().unwrap().r2(), None);
    }

    #[test]
    fn pending_rows_count_without_errors() {
        let mut c = RegressionCells::new();
        c.add(3.0, None, 1, 1.0).unwrap();
        assert_eq!(c.summary().unwrap().count(), 0);
        c.add(3.0, None, -1, -1.0).unwrap();
        assert!(c.is_zero());
        assert!(c.add(f64::NAN, None, 1, 1.0).is_err());
        let bytes = c.encode();
        for cut in 0..bytes.len() {
            assert!(RegressionCells::decode(&bytes[..cut]).is_err());
        }
    }
}
