//! How a drift monitor bins: a numeric column's edges, chosen once from the
//! reference's quantiles, and a row's time bucket.

use crate::error::{Error, Result};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// The edges e0 < ... < ek from the reference quantiles
/// `percentile_disc(i / bins)`, i = 0..bins (sorted, possibly repeated when
/// values tie): their distinct values. At least two distinct finite values
/// are needed (fewer would make every value underflow or overflow).
pub fn edges_from_quantiles(quantiles: &[f64]) -> Result<Vec<f64>> {
    let mut edges: Vec<f64> = Vec::with_capacity(quantiles.len());
    for &q in quantiles {
        if !q.is_finite() {
            return Err(Error::invalid(
                "reference_from",
                "a reference quantile is infinite or NaN",
                "keep infinite values out of the reference period, or give another reference_from/reference_to",
            ));
        }
        if edges.last().is_some_and(|&last| q < last) {
            return Err(Error::invalid("reference_from", "reference quantiles are not sorted", "this is a bug in mlmon"));
        }
        if edges.last() != Some(&q) {
            edges.push(q);
        }
    }
    if edges.len() < 2 {
        return Err(Error::invalid(
            "reference_from",
            "the reference holds fewer than two distinct values of a numeric column",
            "give a reference period with varied values",
        ));
    }
    Ok(edges)
}

/// `date_bin(width, t, origin)`: the start of t's bucket, all in
/// microseconds since PostgreSQL's epoch, rounding down before the origin
/// too; None on overflow.
pub fn bucket_of(t: i64, width: i64, origin: i64) -> Option<i64> {
    let offset = t.checked_sub(origin)?;
    let start = offset.div_euclid(width).checked_mul(width)?;
    origin.checked_add(start)
}

/// Seconds since the Unix epoch as PostgreSQL microseconds (`to_timestamp`
/// rounds to the microsecond too); None when not finite or out of range.
pub fn unix_seconds_to_micros(seconds: f64) -> Option<i64> {
    let micros = (seconds * 1e6).round() - POSTGRES_EPOCH_UNIX_MICROS as f64;
    // Within PostgreSQL's timestamp range (4714 BC .. 294276 AD), well inside i64.
    (micros.is_finite() && micros.abs() < 9.2e18).then_some(micros as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_distinct_quantiles() {
        assert_eq!(edges_from_quantiles(&[1.0, 1.0, 2.0, 2.0, 5.0]).unwrap(), vec![1.0, 2.0, 5.0]);
        assert!(edges_from_quantiles(&[3.0, 3.0]).is_err());
        assert!(edges_from_quantiles(&[1.0, f64::INFINITY]).is_err());
        assert!(edges_from_quantiles(&[2.0, 1.0]).is_err());
    }

    #[test]
    fn buckets_round_down_like_date_bin() {
        let hour = 3_600_000_000;
        assert_eq!(bucket_of(5 * hour + 7, hour, 0), Some(5 * hour));
        assert_eq!(bucket_of(-1, hour, 0), Some(-hour));
        assert_eq!(bucket_of(-hour, hour, 0), Some(-hour));
        assert_eq!(bucket_of(i64::MAX, hour, i64::MIN), None);
        assert_eq!(unix_seconds_to_micros(946_684_800.5), Some(500_000));
        assert_eq!(unix_seconds_to_micros(f64::NAN), None);
    }
}
