//! Confidence intervals for proportions.

use statrs::distribution::{ContinuousCDF, Normal};

use crate::error::{Error, Result};

/// Checks a confidence level and returns the two-sided normal quantile z.
fn z_for(confidence: f64) -> Result<f64> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(Error::invalid(
            "confidence",
            format!("confidence must be strictly between 0 and 1, got {confidence}"),
            "pass e.g. confidence => 0.95 for a 95% interval",
        ));
    }
    let standard = Normal::new(0.0, 1.0).expect("standard normal");
    Ok(standard.inverse_cdf(1.0 - (1.0 - confidence) / 2.0))
}

/// Wilson score interval for `successes` out of `trials`; `None` when there
/// are no trials. Unlike the normal (Wald) interval it stays inside [0, 1] and
/// behaves at proportions near 0 or 1 and at small n.
pub fn wilson(successes: f64, trials: f64, confidence: f64) -> Result<Option<(f64, f64)>> {
    let z = z_for(confidence)?;
    if trials <= 0.0 {
        return Ok(None);
    }
    let p = successes / trials;
    let z2 = z * z;
    let denominator = 1.0 + z2 / trials;
    let center = (p + z2 / (2.0 * trials)) / denominator;
    let half = z * (p * (1.0 - p) / trials + z2 / (4.0 * trials * trials)).sqrt() / denominator;
    Ok(Some(((center - half).max(0.0), (center + half).min(1.0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_value() {
        // 8 of 10 at 95%: (0.4901624, 0.9433178) — Wilson (1927), also R's prop.test(correct=FALSE).
        let (lo, hi) = wilson(8.0, 10.0, 0.95).unwrap().unwrap();
        assert!((lo - 0.4901624).abs() < 1e-6 && (hi - 0.9433178).abs() < 1e-6, "{lo} {hi}");
    }

    #[test]
    fn rejects_bad_confidence_and_handles_zero_trials() {
        for c in [0.0, 1.0, -0.5, f64::NAN] {
            assert!(wilson(1.0, 2.0, c).is_err());
        }
        assert_eq!(wilson(0.0, 0.0, 0.9).unwrap(), None);
    }
}
