//! SQL functions over the states score and regression monitors keep in their
//! rollup's `state` column (`mlmon_core::monitors::{score_cells,
//! regression_cells}`): the delta aggregates the write path groups rows
//! with, the sum and merge of deltas (compaction, reads), and the reads'
//! conversions to `mlmon.scores` and `mlmon.regression` and CBPE estimates.
//! Declared in `sql/monitors/cell_states.sql`.

use std::cell::RefCell;
use std::rc::Rc;

use mlmon_core::monitors::cbpe::{estimate, Calibration};
use mlmon_core::monitors::regression_cells::RegressionCells;
use mlmon_core::monitors::score_cells::{Pile, ScoreCells};
use mlmon_core::Error;
use pgrx::prelude::*;
use pgrx::{Internal, PgSqlErrorCode};

use crate::pg::aggregate_state::{state_ref, with_state};
use crate::pg::errors::{raise, raise_coded, OrRaise};

/// One rollup cell's state, told apart by its tag byte.
#[derive(Clone)]
enum CellState {
    Score(ScoreCells),
    Regression(RegressionCells),
}

impl CellState {
    fn decode(bytes: &[u8]) -> CellState {
        match bytes.get(1) {
            Some(b'G') => CellState::Regression(RegressionCells::decode(bytes).or_raise()),
            _ => CellState::Score(ScoreCells::decode(bytes).or_raise()),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            CellState::Score(s) => s.encode(),
            CellState::Regression(r) => r.encode(),
        }
    }

    fn merge(&mut self, other: &CellState) {
        match (self, other) {
            (CellState::Score(a), CellState::Score(b)) => a.merge(b),
            (CellState::Regression(a), CellState::Regression(b)) => a.merge(b),
            _ => raise(Error::BadBinary("score and regression cell states do not merge".into())),
        }
    }

    fn is_zero(&self) -> bool {
        match self {
            CellState::Score(s) => s.is_zero(),
            CellState::Regression(r) => r.is_zero(),
        }
    }
}

fn score_cells(bytes: Option<&[u8]>) -> ScoreCells {
    match bytes.map(CellState::decode) {
        None => ScoreCells::new(),
        Some(CellState::Score(s)) => s,
        Some(CellState::Regression(_)) => {
            raise(Error::BadBinary("a regression cell state where a score state was expected".into()))
        }
    }
}

/// `mlmon._score_delta(score, n, weight)`'s transition: rows with a NULL
/// score count nowhere (the write path passes only counted rows).
#[pg_extern(sql = false)]
fn cells_score_trans(
    state: Internal,
    score: Option<f64>,
    n: Option<i64>,
    weight: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let (Some(s), Some(n), Some(w)) = (score, n, weight) else { return state };
    if !(0.0..=1.0).contains(&s) {
        // The value of a user's table, not an argument: a value out of range.
        raise_coded(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!("score {s} is not a probability between 0 and 1"),
            "argument score: the monitor's score column must hold the probability of the positive class, in [0, 1]",
        );
    }
    with_state(state, fcinfo, || CellState::Score(ScoreCells::new()), |c| match c {
        CellState::Score(cells) => cells.add(s, n, w).or_raise(),
        CellState::Regression(_) => unreachable!("a score delta's state"),
    })
    .0
}

/// `mlmon._regression_delta(predicted, actual, n, weight)`'s transition;
/// a NULL actual is a pending prediction.
#[pg_extern(sql = false)]
fn cells_regression_trans(
    state: Internal,
    predicted: Option<f64>,
    actual: Option<f64>,
    n: Option<i64>,
    weight: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let (Some(p), Some(n), Some(w)) = (predicted, n, weight) else { return state };
    for (argument, value) in [("predicted", Some(p)), ("actual", actual)] {
        if value.is_some_and(|v| !v.is_finite()) {
            raise_coded(
                PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                format!("{argument} value {} is not finite", value.unwrap_or_default()),
                &format!("argument {argument}: a regression monitor counts finite values only"),
            );
        }
    }
    with_state(state, fcinfo, || CellState::Regression(RegressionCells::new()), |c| match c {
        CellState::Regression(cells) => cells.add(p, actual, n, w).or_raise(),
        CellState::Score(_) => unreachable!("a regression delta's state"),
    })
    .0
}

/// `mlmon._cells_sum(state)`'s transition: merges states; NULLs are empty.
#[pg_extern(sql = false)]
fn cells_sum_trans(state: Internal, bytes: Option<&[u8]>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let Some(bytes) = bytes else { return state };
    let other = CellState::decode(bytes);
    if state_ref::<CellState>(&state).is_none() {
        return with_state(state, fcinfo, || other, |_| ()).0;
    }
    with_state(state, fcinfo, || unreachable!("state is initialized"), |c: &mut CellState| c.merge(&other)).0
}

/// The final value of every cell-state aggregate: NULL without rows.
#[pg_extern(sql = false)]
fn cells_final(state: Internal) -> Option<Vec<u8>> {
    state_ref::<CellState>(&state).map(CellState::encode)
}

/// `mlmon._cells_merge(a, b)`: compaction adds a delta to its cell's row.
#[pg_extern(sql = false)]
fn cells_merge(a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Vec<u8>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.to_vec()),
        (Some(a), Some(b)) => {
            let mut merged = CellState::decode(a);
            merged.merge(&CellState::decode(b));
            Some(merged.encode())
        }
    }
}

/// Whether a delta changes anything (NULL does not).
#[pg_extern(sql = false)]
fn cells_nonzero(bytes: Option<&[u8]>) -> bool {
    bytes.is_some_and(|b| !CellState::decode(b).is_zero())
}

/// `mlmon.scores` of labeled cells: `positive` (actual true) and `negative`.
#[pg_extern(sql = false)]
fn cells_scores(positive: Option<&[u8]>, negative: Option<&[u8]>) -> Option<Vec<u8>> {
    let (p, n) = (score_cells(positive), score_cells(negative));
    (p.count() > 0 || n.count() > 0).then(|| ScoreCells::summary(&p, &n).encode())
}

/// `mlmon.regression` of a regression monitor's labeled cells.
#[pg_extern(sql = false)]
fn cells_regression(bytes: Option<&[u8]>) -> Option<Vec<u8>> {
    match bytes.map(CellState::decode)? {
        CellState::Regression(r) => Some(r.summary().or_raise().encode()),
        CellState::Score(_) => raise(Error::BadBinary("a score cell state where a regression state was expected".into())),
    }
}

/// The calibration of a reference (NannyML's rule): per fold, its labeled
/// cells' positive and negative states (arrays of equal length; NULL = none).
#[pg_extern(sql = false)]
fn cells_calibration(positive: Array<&[u8]>, negative: Array<&[u8]>) -> Vec<u8> {
    if positive.len() != negative.len() {
        raise(Error::invalid("negative", "one positive and one negative state per fold", "pass arrays of equal length"));
    }
    let folds: Vec<(ScoreCells, ScoreCells)> =
        positive.iter().zip(negative.iter()).map(|(p, n)| (score_cells(p), score_cells(n))).collect();
    Calibration::choose(&folds).or_raise().encode()
}

/// CBPE estimate of the predictions in cells of predicted label true and
/// false: {tp, fp, fn, tn, roc_auc} (roc_auc NULL without both classes).
#[pg_extern(sql = false)]
fn cells_estimate(calibration: Option<&[u8]>, predicted_true: Option<&[u8]>, predicted_false: Option<&[u8]>) -> Vec<Option<f64>> {
    // NULL: no calibration, the raw scores.
    let calibration = calibration.map_or_else(|| Rc::new(Calibration::identity()), decoded_calibration);
    let e = estimate(&calibration, &score_cells(predicted_true), &score_cells(predicted_false));
    vec![Some(e.tp), Some(e.fp), Some(e.fn_), Some(e.tn), e.roc_auc]
}

/// The per-step state of `mlmon._score_step`: a score monitor's cells of one
/// step of `metrics()`, gathered by role, and the calibration to estimate with.
struct Step {
    calibration: Rc<Calibration>,
    /// Matured cells with a label: actual true, actual false.
    positive: Pile,
    negative: Pile,
    /// Every cell, by predicted label: true, false.
    predicted_true: Pile,
    predicted_false: Pile,
}

thread_local! {
    /// The calibration last decoded, by its bytes: every step of a
    /// `metrics()` call passes the same one (8,640 decodes of it took a
    /// third of the score columns' time).
    static LAST_CALIBRATION: RefCell<Option<(Vec<u8>, Rc<Calibration>)>> = const { RefCell::new(None) };
}

fn decoded_calibration(bytes: &[u8]) -> Rc<Calibration> {
    LAST_CALIBRATION.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((b, c)) = last.as_ref() {
            if b.as_slice() == bytes {
                return c.clone();
            }
        }
        let c = Rc::new(Calibration::decode(bytes).or_raise());
        *last = Some((bytes.to_vec(), c.clone()));
        c
    })
}

/// `mlmon._score_step(state, predicted, actual, mature, calibration)`'s
/// transition. One aggregate per step computes every score column of
/// `metrics()`: per step, separate sums, conversions and accessors cost a
/// function call and a state's encoding each (8,640 five-minute steps took
/// 1.8 s against 0.26 s for the label columns).
#[pg_extern(sql = false)]
fn cells_step_trans(
    state: Internal,
    bytes: Option<&[u8]>,
    predicted: Option<&str>,
    actual: Option<&str>,
    mature: Option<bool>,
    calibration: Option<&[u8]>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    let Some(bytes) = bytes else { return state };
    let cells = score_cells(Some(bytes));
    let init = || Step {
        calibration: calibration.map_or_else(|| Rc::new(Calibration::identity()), decoded_calibration),
        positive: Pile::default(),
        negative: Pile::default(),
        predicted_true: Pile::default(),
        predicted_false: Pile::default(),
    };
    with_state(state, fcinfo, init, |step: &mut Step| {
        if mature == Some(true) {
            match actual {
                Some("true") => step.positive.push(&cells),
                Some(_) => step.negative.push(&cells),
                None => {}
            }
        }
        if predicted == Some("true") {
            step.predicted_true.push(&cells);
        } else {
            step.predicted_false.push(&cells);
        }
    })
    .0
}

/// {roc_auc, log_loss, brier} of the matured labeled cells, then the CBPE
/// estimate {tp, fp, fn, tn, roc_auc} of every cell.
#[pg_extern(sql = false)]
fn cells_step_final(state: Internal) -> Option<Vec<Option<f64>>> {
    let step = state_ref::<Step>(&state)?;
    let realized = ScoreCells::summary(&step.positive.cells(), &step.negative.cells());
    let e = estimate(&step.calibration, &step.predicted_true.cells(), &step.predicted_false.cells());
    Some(vec![
        realized.roc_auc(),
        realized.log_loss(),
        realized.brier_score(),
        Some(e.tp),
        Some(e.fp),
        Some(e.fn_),
        Some(e.tn),
        e.roc_auc,
    ])
}
