//! Merging is what makes rollups, parallel plans and distributed engines agree
//! with one pass over all rows: it must be commutative and associative, and
//! survive the binary and text forms.

use mlmon_core::{codec, text, Confusion, LabelKind};
use proptest::prelude::*;

fn rows() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
    prop::collection::vec((0u8..5, 0u8..5, 0u8..4), 0..40)
}

fn build(rows: &[(u8, u8, u8)]) -> Confusion {
    let mut cm = Confusion::new(LabelKind::Integer);
    cm.mark_weighted();
    for &(a, p, w) in rows {
        // Quarter weights add exactly in binary floating point, so equality is exact.
        cm.add(&a.to_string(), &p.to_string(), w as f64 * 0.25).unwrap();
    }
    cm
}

fn merged(a: &Confusion, b: &Confusion) -> Confusion {
    let mut out = a.clone();
    out.merge(b).unwrap();
    out
}

proptest! {
    #[test]
    fn merge_is_commutative(a in rows(), b in rows()) {
        let (a, b) = (build(&a), build(&b));
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in rows(), b in rows(), c in rows()) {
        let (a, b, c) = (build(&a), build(&b), build(&c));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn merging_parts_equals_one_pass(all in rows(), split in 0usize..40) {
        let split = split.min(all.len());
        prop_assert_eq!(merged(&build(&all[..split]), &build(&all[split..])), build(&all));
    }

    #[test]
    fn binary_and_text_forms_round_trip(a in rows()) {
        let cm = build(&a);
        prop_assert_eq!(codec::decode(&codec::encode(&cm)).unwrap(), cm.clone());
        prop_assert_eq!(text::from_json(&text::to_json(&cm)).unwrap(), cm);
    }
}
