//! Double-double ("compensated") sums: a running total kept as an unevaluated
//! pair `hi + lo` with about 106 bits of precision. Monitor rollups add a
//! row's terms and later subtract the very same terms when the row is
//! retracted (a late label, an UPDATE, a DELETE); in plain f64 every such
//! pair leaves a rounding residue, and millions of them drown a small
//! remainder. Here adding `x` and then `-x` restores the total exactly as
//! long as it fits in 106 bits, and any order of the same terms agrees to
//! far below f64 resolution.

/// A compensated sum; `value()` is its nearest f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sum {
    hi: f64,
    lo: f64,
}

/// Knuth's TwoSum: `s + e == a + b` exactly.
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

impl Sum {
    pub fn from_parts(hi: f64, lo: f64) -> Sum {
        Sum { hi, lo }
    }

    pub fn parts(&self) -> (f64, f64) {
        (self.hi, self.lo)
    }

    pub fn add(&mut self, x: f64) {
        let (s, e) = two_sum(self.hi, x);
        let (hi, lo) = two_sum(s, self.lo + e);
        *self = Sum { hi, lo };
    }

    /// Adds x to the high part only, as a plain f64 sum would: for the many
    /// terms of one delta, whose total is then added to others compensated.
    pub fn add_plain(&mut self, x: f64) {
        self.hi += x;
    }

    pub fn add_sum(&mut self, other: &Sum) {
        self.add(other.hi);
        if other.lo != 0.0 {
            self.add(other.lo);
        }
    }

    /// Adds the product a·b exactly (TwoProduct: the rounding error of a·b,
    /// by a fused multiply-add, goes in too).
    pub fn add_product(&mut self, a: f64, b: f64) {
        let p = a * b;
        self.add(p);
        let e = a.mul_add(b, -p);
        if e != 0.0 {
            self.add(e);
        }
    }

    /// Adds w·x² to within 2^-106 of it: x² exactly (TwoProduct), each part
    /// times w.
    pub fn add_weighted_square(&mut self, w: f64, x: f64) {
        let sq = x * x;
        let sq_err = x.mul_add(x, -sq);
        self.add_product(w, sq);
        if sq_err != 0.0 {
            self.add(w * sq_err);
        }
    }

    /// Adds a·s for a compensated `s`, to within 2^-106 of it.
    pub fn add_scaled(&mut self, a: f64, s: &Sum) {
        self.add_product(a, s.hi);
        if s.lo != 0.0 {
            self.add(a * s.lo);
        }
    }

    /// Σx² − (Σx)²/W for this sum Σx² (`self`), `sum` = Σx and the
    /// weight `w` = W, in double-double throughout: the sum of squared
    /// deviations, exact to about 2^-100 of Σx² even when the values sit far
    /// from zero (Σx² and (Σx)²/W then agree in many leading digits).
    pub fn deviations(&self, sum: &Sum, w: &Sum) -> f64 {
        if w.value() <= 0.0 {
            return 0.0;
        }
        // (Σx)² in double-double: hi² exactly, plus 2·hi·lo.
        let mut square = Sum::default();
        square.add_product(sum.hi, sum.hi);
        square.add(2.0 * sum.hi * sum.lo);
        // Divided by W: q1 = square / W, then the remainder's quotient.
        let q1 = square.value() / w.value();
        let mut rest = square;
        rest.add_scaled(-q1, w);
        let q2 = rest.value() / w.value();
        let mut m2 = *self;
        m2.add(-q1);
        m2.add(-q2);
        m2.value()
    }

    pub fn value(&self) -> f64 {
        self.hi + self.lo
    }

    pub fn is_zero(&self) -> bool {
        self.hi == 0.0 && self.lo == 0.0
    }

    pub fn is_finite(&self) -> bool {
        self.hi.is_finite() && self.lo.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retraction_restores_the_total_exactly() {
        let mut s = Sum::default();
        let xs: Vec<f64> = (0..10_000).map(|i| 1e9 + (i as f64) * 0.123_456_789).collect();
        for &x in &xs {
            s.add(x * x);
        }
        let kept = 1e9_f64 * 1e9_f64;
        let mut t = Sum::default();
        t.add(kept);
        for &x in &xs {
            t.add(x * x);
        }
        for &x in &xs {
            t.add(-(x * x));
        }
        assert_eq!(t.value(), kept);
        // Plain f64 leaves a residue on the same sequence.
        let mut plain = kept;
        for &x in &xs {
            plain += x * x;
        }
        for &x in &xs {
            plain -= x * x;
        }
        assert_ne!(plain, kept);
    }

    #[test]
    fn adding_and_subtracting_one_value_leaves_zero() {
        let mut s = Sum::default();
        s.add(0.1);
        s.add(-0.1);
        assert!(s.is_zero());
    }
}
