//! Drift: mergeable distributions (`mlmon.histogram`, `mlmon.frequencies`)
//! compared with PSI, Jensen-Shannon distance and chi-square, and two-sample
//! tests on arrays (Kolmogorov-Smirnov, Wasserstein).

use mlmon_core::drift::{self, Distribution, Frequencies, Histogram};
use mlmon_core::state::State;
use mlmon_core::Error;
use pgrx::prelude::*;
use pgrx::Internal;

use crate::pg::errors::{raise, OrRaise};
use crate::pg::aggregate_state::with_state;
use crate::aggregates::state;

crate::state_type!(Histogram, histogram);
crate::state_type!(Frequencies, frequencies);

/// `histogram(value, lower, upper, bins)`: the shape comes from the first row
/// and must stay the same; NULL values are skipped.
#[pg_extern(sql = false)]
fn histogram_trans(
    state: Internal,
    value: Option<f64>,
    lower: Option<f64>,
    upper: Option<f64>,
    bins: Option<i32>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let Some(value) = value else { return state };
    let (Some(lower), Some(upper), Some(bins)) = (lower, upper, bins) else {
        raise(Error::invalid("lower", "lower, upper and bins must not be NULL", "pass the histogram's range and bin count"))
    };
    if bins <= 0 {
        raise(Error::invalid("bins", format!("bins must be positive, got {bins}"), "pass e.g. bins => 10"));
    }
    let init = || Histogram::new(lower, upper, bins as usize).or_raise();
    with_state(state, fcinfo, init, |h| {
        if h.lower() != lower || h.upper() != upper || h.bins() != bins as usize {
            raise(Error::invalid("bins", "lower, upper and bins must be the same on every row", "pass constants for the histogram's shape"));
        }
        h.add(value).or_raise()
    })
    .0
}

#[pg_extern(sql = false)]
fn frequencies_trans(state: Internal, value: Option<&str>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let Some(value) = value else { return state };
    with_state(state, fcinfo, Frequencies::new, |f| f.add(value).or_raise()).0
}

fn compare<D: Distribution + State>(reference: &[u8], current: &[u8], test: &str) -> Vec<f64> {
    let (r, c) = (state::decode::<D>(reference), state::decode::<D>(current));
    match test {
        "psi" => vec![drift::psi(&r, &c).or_raise()],
        "js_distance" => vec![drift::js_distance(&r, &c).or_raise()],
        "chi2_test" => {
            let (statistic, p_value, dof) = drift::chi2_test(&r, &c).or_raise();
            vec![statistic, p_value, dof as f64]
        }
        other => raise(Error::invalid("test", format!("unknown comparison {other:?}"), "use psi, js_distance or chi2_test")),
    }
}

#[pg_extern(sql = false)]
fn histogram_compare(reference: &[u8], current: &[u8], test: &str) -> Vec<f64> {
    compare::<Histogram>(reference, current, test)
}

#[pg_extern(sql = false)]
fn frequencies_compare(reference: &[u8], current: &[u8], test: &str) -> Vec<f64> {
    compare::<Frequencies>(reference, current, test)
}

/// Arrays for the sample tests must not contain NULLs: dropping them silently
/// would change the test.
fn sample(values: Array<'_, f64>, argument: &'static str) -> Vec<f64> {
    // Checked before anything is copied: the test sorts copies of both sides.
    if values.len() > drift::MAX_SAMPLE {
        raise(Error::LimitExceeded {
            message: format!("{argument} has {} values, more than {}", values.len(), drift::MAX_SAMPLE),
            hint: format!("argument {argument}: compare histograms instead (mlmon.histogram and mlmon.psi / chi2_test), or sample the values"),
        });
    }
    values
        .iter()
        .map(|v| v.unwrap_or_else(|| raise(Error::invalid(argument, format!("{argument} contains NULL"), "remove NULLs first, e.g. array_remove(a, NULL)"))))
        .collect()
}

#[pg_extern(sql = false)]
fn ks_2samp_values(a: Array<'_, f64>, b: Array<'_, f64>) -> Vec<f64> {
    let (statistic, p_value) = drift::ks_2samp(&sample(a, "a"), &sample(b, "b")).or_raise();
    vec![statistic, p_value]
}

#[pg_extern(sql = false)]
fn wasserstein_distance(a: Array<'_, f64>, b: Array<'_, f64>) -> f64 {
    drift::wasserstein(&sample(a, "a"), &sample(b, "b")).or_raise()
}
