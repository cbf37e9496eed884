//! Merge properties of the regression, score and drift summaries: merging
//! must not depend on order or grouping, must agree with one pass over all
//! rows, and must survive the binary and text forms.

use mlmon_core::drift::{Frequencies, Histogram};
use mlmon_core::regression::RegressionSummary;
use mlmon_core::scores::ScoreSummary;
use proptest::prelude::*;

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        (a, b) => a == b,
    }
}

fn merged<T: Clone>(a: &T, b: &T, merge: impl Fn(&mut T, &T)) -> T {
    let mut out = a.clone();
    merge(&mut out, b);
    out
}

// ---- regression ---------------------------------------------------------

fn regression_rows() -> impl Strategy<Value = Vec<(i32, i32, u8)>> {
    prop::collection::vec((-1000i32..1000, -1000i32..1000, 0u8..4), 0..40)
}

/// Values far from zero, so instability in the moments would show.
fn regression(rows: &[(i32, i32, u8)]) -> RegressionSummary {
    let mut s = RegressionSummary::new();
    for &(p, a, w) in rows {
        s.add(1e9 + p as f64 * 0.37, 1e9 + a as f64 * 0.11, w as f64 * 0.5).unwrap();
    }
    s
}

fn regression_close(a: &RegressionSummary, b: &RegressionSummary) -> bool {
    a.count() == b.count()
        && close(Some(a.weight()), Some(b.weight()))
        && [
            (a.mae(), b.mae()),
            (a.mse(), b.mse()),
            (a.mape(), b.mape()),
            (a.mean_error(), b.mean_error()),
            (a.r2(), b.r2()),
            (a.explained_variance(), b.explained_variance()),
        ]
        .iter()
        .all(|&(x, y)| close(x, y))
}

fn rmerge(a: &mut RegressionSummary, b: &RegressionSummary) {
    a.merge(b)
}

// ---- scores -------------------------------------------------------------

fn score_rows() -> impl Strategy<Value = Vec<(u8, bool, u8)>> {
    prop::collection::vec((0u8..=16, any::<bool>(), 0u8..4), 0..60)
}

/// Scores k/16 and quarter weights: tallies add exactly, so exact states
/// must agree bit for bit wherever only tallies are involved.
fn scores(rows: &[(u8, bool, u8)]) -> ScoreSummary {
    let mut s = ScoreSummary::new();
    for &(k, y, w) in rows {
        s.add(k as f64 / 16.0, y, w as f64 * 0.25).unwrap();
    }
    s
}

fn scores_agree(a: &ScoreSummary, b: &ScoreSummary) -> bool {
    a.count() == b.count()
        && a.weight() == b.weight()
        && a.roc_curve() == b.roc_curve()
        && a.pr_curve() == b.pr_curve()
        && a.roc_auc() == b.roc_auc()
        && a.calibration(7).unwrap() == b.calibration(7).unwrap()
        && a.confusion_at(0.5).unwrap() == b.confusion_at(0.5).unwrap()
        && close(a.log_loss(), b.log_loss())
        && close(a.brier_score(), b.brier_score())
}

fn smerge(a: &mut ScoreSummary, b: &ScoreSummary) {
    a.merge(b)
}

/// Continuous scores from a seed, as stored (compressed beyond 4096 scores).
fn continuous(seed: u64, n: usize) -> ScoreSummary {
    let mut x = seed | 1;
    let mut s = ScoreSummary::new();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        s.add(u, (x >> 3).is_multiple_of(3) || u > 0.8, 1.0).unwrap();
    }
    ScoreSummary::decode(&s.encode()).unwrap()
}

// ---- drift --------------------------------------------------------------

fn values() -> impl Strategy<Value = Vec<i16>> {
    prop::collection::vec(-50i16..150, 0..50)
}

fn histogram(values: &[i16]) -> Histogram {
    let mut h = Histogram::new(0.0, 100.0, 7).unwrap();
    values.iter().for_each(|&v| h.add(v as f64 * 0.9).unwrap());
    h
}

fn frequencies(values: &[i16]) -> Frequencies {
    let mut f = Frequencies::new();
    values.iter().for_each(|&v| f.add(&(v % 13).to_string()).unwrap());
    f
}

fn hmerge(a: &mut Histogram, b: &Histogram) {
    a.merge(b).unwrap()
}

fn fmerge(a: &mut Frequencies, b: &Frequencies) {
    a.merge(b).unwrap()
}

proptest! {
    #[test]
    fn regression_merge_is_commutative(a in regression_rows(), b in regression_rows()) {
        let (a, b) = (regression(&a), regression(&b));
        prop_assert_eq!(merged(&a, &b, rmerge), merged(&b, &a, rmerge));
    }

    #[test]
    fn regression_merge_is_associative(a in regression_rows(), b in regression_rows(), c in regression_rows()) {
        let (a, b, c) = (regression(&a), regression(&b), regression(&c));
        let left = merged(&merged(&a, &b, rmerge), &c, rmerge);
        let right = merged(&a, &merged(&b, &c, rmerge), rmerge);
        prop_assert!(regression_close(&left, &right), "{:?} vs {:?}", left, right);
    }

    #[test]
    fn regression_parts_equal_one_pass(all in regression_rows(), split in 0usize..40) {
        let split = split.min(all.len());
        let parts = merged(&regression(&all[..split]), &regression(&all[split..]), rmerge);
        prop_assert!(regression_close(&parts, &regression(&all)));
    }

    #[test]
    fn regression_forms_round_trip(a in regression_rows()) {
        let s = regression(&a);
        prop_assert_eq!(RegressionSummary::decode(&s.encode()).unwrap(), s.clone());
        prop_assert_eq!(RegressionSummary::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn scores_merge_is_commutative(a in score_rows(), b in score_rows()) {
        let (a, b) = (scores(&a), scores(&b));
        prop_assert_eq!(merged(&a, &b, smerge), merged(&b, &a, smerge));
    }

    #[test]
    fn scores_merge_is_associative(a in score_rows(), b in score_rows(), c in score_rows()) {
        let (a, b, c) = (scores(&a), scores(&b), scores(&c));
        let left = merged(&merged(&a, &b, smerge), &c, smerge);
        let right = merged(&a, &merged(&b, &c, smerge), smerge);
        prop_assert!(scores_agree(&left, &right));
    }

    #[test]
    fn scores_parts_equal_one_pass(all in score_rows(), split in 0usize..60) {
        let split = split.min(all.len());
        let parts = merged(&scores(&all[..split]), &scores(&all[split..]), smerge);
        prop_assert!(scores_agree(&parts, &scores(&all)));
    }

    #[test]
    fn scores_forms_round_trip(a in score_rows()) {
        let s = scores(&a);
        prop_assert_eq!(ScoreSummary::decode(&s.encode()).unwrap(), s.clone());
        prop_assert_eq!(ScoreSummary::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn histogram_and_frequencies_merge_laws(a in values(), b in values(), c in values()) {
        let (ha, hb, hc) = (histogram(&a), histogram(&b), histogram(&c));
        prop_assert_eq!(merged(&ha, &hb, hmerge), merged(&hb, &ha, hmerge));
        prop_assert_eq!(merged(&merged(&ha, &hb, hmerge), &hc, hmerge), merged(&ha, &merged(&hb, &hc, hmerge), hmerge));
        let all: Vec<i16> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(merged(&ha, &hb, hmerge), histogram(&all));
        let (fa, fb, fc) = (frequencies(&a), frequencies(&b), frequencies(&c));
        prop_assert_eq!(merged(&fa, &fb, fmerge), merged(&fb, &fa, fmerge));
        prop_assert_eq!(merged(&merged(&fa, &fb, fmerge), &fc, fmerge), merged(&fa, &merged(&fb, &fc, fmerge), fmerge));
        prop_assert_eq!(merged(&fa, &fb, fmerge), frequencies(&all));
        prop_assert_eq!(Histogram::decode(&ha.encode()).unwrap(), ha.clone());
        prop_assert_eq!(Histogram::from_json(&ha.to_json()).unwrap(), ha);
        prop_assert_eq!(Frequencies::decode(&fa.encode()).unwrap(), fa.clone());
        prop_assert_eq!(Frequencies::from_json(&fa.to_json()).unwrap(), fa);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Compressed states: merge stays commutative bit for bit, and regrouping
    /// moves AUC by far less than the documented bound.
    #[test]
    fn compressed_scores_merge(sa in any::<u64>(), sb in any::<u64>(), sc in any::<u64>(), n in 2000usize..6000) {
        let (a, b, c) = (continuous(sa, n), continuous(sb, 5000), continuous(sc, 300));
        prop_assert_eq!(merged(&a, &b, smerge), merged(&b, &a, smerge));
        let left = merged(&merged(&a, &b, smerge), &c, smerge);
        let right = merged(&a, &merged(&b, &c, smerge), smerge);
        prop_assert!(!left.is_exact() && left.count() == right.count());
        prop_assert!((left.roc_auc().unwrap() - right.roc_auc().unwrap()).abs() < 1e-3);
        prop_assert!(close(left.log_loss(), right.log_loss()));
        prop_assert_eq!(ScoreSummary::decode(&left.encode()).unwrap(), left.clone());
        prop_assert_eq!(ScoreSummary::from_json(&left.to_json()).unwrap(), left);
    }
}
