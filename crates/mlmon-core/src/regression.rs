//! Mergeable summary of a regression model's predictions, with scikit-learn's
//! metric definitions (MAE, MSE, RMSE, MAPE, R², explained variance).
//!
//! Sums of squares are never accumulated naively: targets such as timestamps or
//! money amounts sit far from zero (1e12 is common), and Σy² − (Σy)²/n then
//! cancels to noise. Instead each state keeps weighted means and co-moments
//! (sums of squared deviations from the mean), updated row by row with West's
//! weighted form of Welford's algorithm and combined with Chan et al.'s pairwise
//! formula, which is stable under any merge tree.

use serde::{Deserialize, Serialize};

use crate::error::{check_finite, check_weight, Error, Result};
use crate::wire::{self, Reader, Writer};

const TAG: u8 = b'R';

/// Weighted mean and sum of squared deviations of `x`, kept relative to a
/// shift (the first value seen). Welford's running mean of values near 1e12
/// would round at every step (an ulp there is 1.2e-4) and drift; the shifted
/// values are small, so their mean keeps full precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Moments {
    shift: f64,
    /// Weighted mean of `x - shift`.
    mean: f64,
    m2: f64,
}

impl Moments {
    /// West (1979): add `x` with weight `w > 0`; `total` already includes `w`.
    fn add(&mut self, x: f64, w: f64, total: f64) {
        if total == w {
            *self = Moments { shift: x, mean: 0.0, m2: 0.0 };
            return;
        }
        let x = x - self.shift;
        let delta = x - self.mean;
        self.mean += delta * (w / total);
        // delta and (x - new mean) share a sign, so the term is never negative.
        self.m2 += w * delta * (x - self.mean);
    }

    /// Chan, Golub & LeVeque (1979): moments of the union of two weighted sets,
    /// expressed relative to `a`'s shift.
    fn merge(a: Moments, wa: f64, b: Moments, wb: f64) -> Moments {
        if wb == 0.0 {
            return a;
        }
        if wa == 0.0 {
            return b;
        }
        let total = wa + wb;
        let delta = (b.shift - a.shift) + b.mean - a.mean;
        Moments { shift: a.shift, mean: a.mean + delta * (wb / total), m2: a.m2 + b.m2 + delta * delta * (wa * (wb / total)) }
    }

    fn value(&self) -> f64 {
        self.shift + self.mean
    }
}

/// Predicted-vs-actual summary. Rows carry a scikit-learn `sample_weight`;
/// a zero weight counts the row but leaves every metric unchanged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegressionSummary {
    n: u64,
    weight: f64,
    actual: Moments,
    /// Moments of the error `predicted - actual`.
    error: Moments,
    abs_error: f64,
    abs_pct_error: f64,
}

impl RegressionSummary {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, predicted: f64, actual: f64, weight: f64) -> Result<()> {
        check_finite("predicted", predicted)?;
        check_finite("actual", actual)?;
        check_weight("weight", weight)?;
        let e = predicted - actual;
        if !e.is_finite() {
            return Err(Error::invalid("predicted", format!("predicted - actual overflows: {predicted} - {actual}"), "pass values whose difference is a finite double"));
        }
        self.record(actual, e, weight);
        Ok(())
    }

    /// `add(predicted, actual, 1.0)` for the per-row fast path of the
    /// extension: returns false, changing nothing, when the row needs
    /// [`Self::add`] to report an error.
    #[inline]
    pub fn try_add_unweighted(&mut self, predicted: f64, actual: f64) -> bool {
        let e = predicted - actual;
        // A finite difference implies finite operands.
        if !e.is_finite() {
            return false;
        }
        self.record(actual, e, 1.0);
        true
    }

    #[inline]
    fn record(&mut self, actual: f64, e: f64, weight: f64) {
        self.n += 1;
        if weight == 0.0 {
            return;
        }
        let total = self.weight + weight;
        self.actual.add(actual, weight, total);
        self.error.add(e, weight, total);
        self.weight = total;
        self.abs_error += weight * e.abs();
        self.abs_pct_error += weight * (e.abs() / actual.abs().max(f64::EPSILON));
    }

    /// Adds every row of `other`. The result is the same whichever side is
    /// `self` (bit for bit); regrouping three states agrees to rounding.
    pub fn merge(&mut self, other: &RegressionSummary) {
        // Chan's formula is not symmetric in floating point; fixing the operand
        // order makes merge(a, b) and merge(b, a) identical.
        let (a, b) = if self.sorts_first(other) { (self.clone(), other.clone()) } else { (other.clone(), self.clone()) };
        *self = RegressionSummary {
            n: a.n.saturating_add(b.n), // decoded states are untrusted
            weight: a.weight + b.weight,
            actual: Moments::merge(a.actual, a.weight, b.actual, b.weight),
            error: Moments::merge(a.error, a.weight, b.error, b.weight),
            abs_error: a.abs_error + b.abs_error,
            abs_pct_error: a.abs_pct_error + b.abs_pct_error,
        };
    }

    /// Whether `self` sorts before `other` in an arbitrary total order of states.
    fn sorts_first(&self, other: &RegressionSummary) -> bool {
        let key = |s: &RegressionSummary| {
            let (a, e) = (s.actual, s.error);
            [s.weight, s.abs_error, s.abs_pct_error, a.shift, a.mean, a.m2, e.shift, e.mean, e.m2]
        }
        .map(|x| {
            // f64::total_cmp as an integer key.
            let bits = x.to_bits() as i64;
            bits ^ (((bits >> 63) as u64) >> 1) as i64
        });
        (key(self), self.n) <= (key(other), other.n)
    }

    /// Number of rows added, including zero-weight rows.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Sum of the weights.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// A summary from sums kept elsewhere (a regression monitor's rollup):
    /// `actual_mean`/`actual_m2` relative to `actual_shift`, the error's
    /// mean and sum of squared deviations, Σw·|e| and Σw·|e|/max(|y|, eps).
    /// Rounding residues (a negative m2 or absolute sum) are clamped to 0.
    #[allow(clippy::too_many_arguments)]
    pub fn from_sums(
        n: u64,
        weight: f64,
        actual_shift: f64,
        actual_mean: f64,
        actual_m2: f64,
        error_mean: f64,
        error_m2: f64,
        abs_error: f64,
        abs_pct_error: f64,
    ) -> Result<Self> {
        if n == 0 || weight <= 0.0 {
            // Zero-weight rows are counted, and change no metric.
            return Ok(RegressionSummary { n, ..RegressionSummary::default() });
        }
        RegressionSummary {
            n,
            weight,
            actual: Moments { shift: actual_shift, mean: actual_mean, m2: actual_m2.max(0.0) },
            error: Moments { shift: 0.0, mean: error_mean, m2: error_m2.max(0.0) },
            abs_error: abs_error.max(0.0),
            abs_pct_error: abs_pct_error.max(0.0),
        }
        .check()
    }

    fn per_weight(&self, sum: f64) -> Option<f64> {
        (self.weight > 0.0).then(|| sum / self.weight)
    }

    /// Σw(ŷ−y)², from the error moments rather than a raw sum of squares.
    fn sum_squared_error(&self) -> f64 {
        let mean = self.error.value();
        self.error.m2 + self.weight * mean * mean
    }

    pub fn mae(&self) -> Option<f64> {
        self.per_weight(self.abs_error)
    }

    pub fn mse(&self) -> Option<f64> {
        self.per_weight(self.sum_squared_error())
    }

    pub fn rmse(&self) -> Option<f64> {
        self.mse().map(f64::sqrt)
    }

    /// scikit-learn's `mean_absolute_percentage_error`: a fraction, not a
    /// percentage, with |y| floored at machine epsilon (so y = 0 gives a huge,
    /// finite term).
    pub fn mape(&self) -> Option<f64> {
        self.per_weight(self.abs_pct_error)
    }

    /// Weighted mean of `predicted - actual` (positive: over-prediction).
    pub fn mean_error(&self) -> Option<f64> {
        (self.weight > 0.0).then_some(self.error.value())
    }

    /// scikit-learn's `r2_score`; `None` when the actuals do not vary (where
    /// scikit-learn's `force_finite` would answer an arbitrary 1.0 or 0.0).
    pub fn r2(&self) -> Option<f64> {
        (self.weight > 0.0 && self.actual.m2 > 0.0).then(|| 1.0 - self.sum_squared_error() / self.actual.m2)
    }

    /// scikit-learn's `explained_variance_score`: like R² but ignores a
    /// constant bias. `None` when the actuals do not vary.
    pub fn explained_variance(&self) -> Option<f64> {
        (self.weight > 0.0 && self.actual.m2 > 0.0).then(|| 1.0 - self.error.m2 / self.actual.m2)
    }

    fn check(self) -> Result<Self> {
        let m = [self.actual, self.error];
        let all = [self.weight, self.abs_error, self.abs_pct_error, m[0].shift, m[0].mean, m[0].m2, m[1].shift, m[1].mean, m[1].m2];
        if all.iter().any(|x| !x.is_finite()) {
            return Err(Error::BadBinary("regression summary has a non-finite field".into()));
        }
        if [self.weight, self.abs_error, self.abs_pct_error, m[0].m2, m[1].m2].iter().any(|&x| x < 0.0) {
            return Err(Error::BadBinary("regression summary has a negative weight, sum of squares or absolute error".into()));
        }
        if (self.n == 0 && self.weight != 0.0) || (self.weight == 0.0 && all[1..].iter().any(|&x| x != 0.0)) {
            return Err(Error::BadBinary("regression summary has moments without weight".into()));
        }
        Ok(self)
    }

    /// Binary form: version, tag `R`, `n u64`, `weight`, `abs_error`,
    /// `abs_pct_error`, then shift, mean and m2 of actual and of error (f64s).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(TAG);
        w.u64(self.n);
        for x in [self.weight, self.abs_error, self.abs_pct_error] {
            w.f64(x);
        }
        for m in [self.actual, self.error] {
            for x in [m.shift, m.mean, m.m2] {
                w.f64(x);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, TAG, "regression summary")?;
        let n = r.u64("row count")?;
        let mut f = [0.0; 9];
        for x in &mut f {
            *x = r.f64("moment")?;
        }
        r.finish()?;
        RegressionSummary {
            n,
            weight: f[0],
            abs_error: f[1],
            abs_pct_error: f[2],
            actual: Moments { shift: f[3], mean: f[4], m2: f[5] },
            error: Moments { shift: f[6], mean: f[7], m2: f[8] },
        }
        .check()
    }

    pub fn to_json(&self) -> String {
        let form = TextForm {
            version: wire::FORMAT_VERSION,
            n: self.n,
            weight: self.weight,
            abs_error: self.abs_error,
            abs_pct_error: self.abs_pct_error,
            actual: self.actual,
            error: self.error,
        };
        serde_json::to_string(&form).expect("plain data serializes")
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let t: TextForm = wire::parse_json(text, |t: &TextForm| t.version)?;
        RegressionSummary { n: t.n, weight: t.weight, actual: t.actual, error: t.error, abs_error: t.abs_error, abs_pct_error: t.abs_pct_error }
            .check()
            .map_err(wire::as_bad_text)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextForm {
    version: u8,
    n: u64,
    weight: f64,
    abs_error: f64,
    abs_pct_error: f64,
    actual: Moments,
    error: Moments,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64, tol: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= tol * b.abs().max(1.0))
    }

    fn sample() -> RegressionSummary {
        let mut s = RegressionSummary::new();
        for (p, a, w) in [(2.5, 3.0, 1.0), (0.0, -0.5, 2.0), (2.0, 2.0, 0.5), (8.0, 7.0, 1.5), (1.0, 0.0, 1.0)] {
            s.add(p, a, w).unwrap();
        }
        s
    }

    #[test]
    fn matches_scikit_learn_weighted() {
        // y_true=[3,-0.5,2,7,0], y_pred=[2.5,0,2,8,1], w=[1,2,0.5,1.5,1]; scikit-learn 1.9.1:
        // mean_absolute_error, mean_squared_error, root_mean_squared_error,
        // mean_absolute_percentage_error, r2_score, explained_variance_score.
        let s = sample();
        assert!(close(s.mae(), 0.6666666666666666, 1e-12));
        assert!(close(s.mse(), 0.5416666666666666, 1e-12));
        assert!(close(s.rmse(), 0.7359800721939872, 1e-12));
        assert!(close(s.mape(), 750599937895083.0, 1e-12));
        assert!(close(s.r2(), 0.9405034324942791, 1e-12));
        assert!(close(s.explained_variance(), 0.9679633867276888, 1e-12));
        // numpy.average(y_pred - y_true, weights=w)
        assert!(close(s.mean_error(), 0.5, 1e-12));
    }

    #[test]
    fn stable_far_from_zero() {
        // Naive Σy² at 1e12 has an ulp near 1e12 and would lose every digit here.
        let offset = 1e12;
        let (mut far, mut near) = (RegressionSummary::new(), RegressionSummary::new());
        for i in 0..10_000 {
            let y = (i % 97) as f64 * 0.25;
            let p = y + ((i * 7919) % 13) as f64 * 0.125 - 0.75;
            far.add(p + offset, y + offset, 1.0 + (i % 3) as f64).unwrap();
            near.add(p, y, 1.0 + (i % 3) as f64).unwrap();
        }
        for (a, b) in [(far.r2(), near.r2()), (far.explained_variance(), near.explained_variance()), (far.mse(), near.mse())] {
            assert!(close(a, b.unwrap(), 1e-12), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn merge_equals_one_pass_and_is_symmetric() {
        let rows: Vec<(f64, f64, f64)> = (0..200).map(|i| (i as f64 * 1.5 + 1e12, (i * i % 17) as f64 + 1e12, (i % 4) as f64)).collect();
        let mut all = RegressionSummary::new();
        let (mut a, mut b) = (RegressionSummary::new(), RegressionSummary::new());
        for (i, &(p, y, w)) in rows.iter().enumerate() {
            all.add(p, y, w).unwrap();
            if i < 77 { a.add(p, y, w).unwrap() } else { b.add(p, y, w).unwrap() }
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.count(), all.count());
        assert!(close(ab.r2(), all.r2().unwrap(), 1e-12) && close(ab.mae(), all.mae().unwrap(), 1e-12));
    }

    #[test]
    fn undefined_metrics_are_none() {
        let mut s = RegressionSummary::new();
        assert_eq!((s.mae(), s.r2(), s.mean_error()), (None, None, None));
        s.add(1.0, 2.0, 0.0).unwrap();
        assert_eq!((s.count(), s.mse()), (1, None));
        s.add(1.0, 2.0, 1.0).unwrap();
        s.add(3.0, 2.0, 1.0).unwrap();
        assert_eq!((s.r2(), s.explained_variance(), s.mse()), (None, None, Some(1.0)));
    }

    #[test]
    fn rejects_bad_inputs_by_name() {
        let mut s = RegressionSummary::new();
        for (p, a, w, name) in [(f64::NAN, 1.0, 1.0, "predicted"), (1.0, f64::INFINITY, 1.0, "actual"), (1.0, 1.0, -1.0, "weight"), (1.0, 1.0, f64::NAN, "weight")] {
            assert!(matches!(s.add(p, a, w), Err(Error::InvalidArgument { argument, .. }) if argument == name));
        }
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn forms_round_trip_and_reject_garbage() {
        let s = sample();
        assert_eq!(RegressionSummary::decode(&s.encode()).unwrap(), s);
        assert_eq!(RegressionSummary::from_json(&s.to_json()).unwrap(), s);
        let bytes = s.encode();
        for len in 0..bytes.len() {
            assert!(RegressionSummary::decode(&bytes[..len]).is_err());
        }
        let mut bad = bytes.clone();
        bad[0] = 2;
        assert!(matches!(RegressionSummary::decode(&bad), Err(Error::BadBinary(m)) if m.contains("version 2")));
        let mut negative = bytes;
        negative[2 + 8 + 8 * 5 + 7] |= 0x80; // sign bit of the actual m2
        assert!(RegressionSummary::decode(&negative).is_err());
        for bad in ["{}", r#"{"version":2,"n":0,"weight":0,"abs_error":0,"abs_pct_error":0,"actual":{"shift":0,"mean":0,"m2":0},"error":{"shift":0,"mean":0,"m2":0}}"#,
                    r#"{"version":1,"n":0,"weight":1,"abs_error":0,"abs_pct_error":0,"actual":{"shift":0,"mean":0,"m2":0},"error":{"shift":0,"mean":0,"m2":0}}"#,
                    r#"{"version":1,"n":1,"weight":1,"abs_error":0,"abs_pct_error":0,"actual":{"shift":0,"mean":0,"m2":-1},"error":{"shift":0,"mean":0,"m2":0}}"#] {
            assert!(matches!(RegressionSummary::from_json(bad), Err(Error::BadText(_))), "{bad}");
        }
    }
}
