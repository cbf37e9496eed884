//! Reads of drift monitors: the sum of state rows (`mlmon._drift_sum`,
//! `_drift_merge`), and the reports built from a reference and a current
//! state: per column (`_drift_report`, behind `mlmon.drift`), per step of a
//! series (`_drift_series`, behind `mlmon.drift_metrics`) and per cell
//! (`_drift_cells`, behind `mlmon.drift_histogram`). The SQL wrappers in
//! `sql/drift_monitors/reads.sql` pick the rows; these do the math
//! (`mlmon_core::drift_monitors::compare`).

use mlmon_core::drift_monitors::compare::{compare, ColumnDrift};
use mlmon_core::drift_monitors::state::{ColumnState, DriftState};
use mlmon_core::Error;
use pgrx::prelude::*;
use pgrx::Internal;

use super::catalog::{spi_error, Dictionary, DriftMonitor, Kind};
use crate::pg::errors::raise_coded;
use crate::pg::aggregate_state::{state_ref, with_state};
use crate::pg::errors::{raise, OrRaise};

/// `mlmon._drift_sum(state)`'s transition: adds a state row; NULLs are empty.
#[pg_extern(sql = false)]
fn drift_sum_trans(state: Internal, bytes: Option<&[u8]>, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let Some(bytes) = bytes else { return state };
    with_state(state, fcinfo, DriftState::default, |s| s.add_encoded(bytes).or_raise()).0
}

/// The sum's final value: NULL without rows.
#[pg_extern(sql = false)]
fn drift_sum_final(state: Internal) -> Option<Vec<u8>> {
    state_ref::<DriftState>(&state).map(DriftState::encode)
}

/// `mlmon._drift_merge(a, b)`: compaction adds deltas to a compacted row.
#[pg_extern(sql = false)]
fn drift_merge(a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Vec<u8>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.to_vec()),
        (Some(a), Some(b)) => {
            let mut merged = DriftState::decode(a).or_raise();
            merged.add_encoded(b).or_raise();
            Some(merged.encode())
        }
    }
}

/// The columns of a state, or empty ones of the monitor's shape for NULL
/// (a period without rows); 22P03 when the state is not of the monitor's
/// shape (a hand-made bytea).
fn columns_of(monitor: &DriftMonitor, bytes: Option<&[u8]>) -> Vec<ColumnState> {
    let state = bytes.map(|b| DriftState::decode(b).or_raise()).unwrap_or_default();
    if state.columns.is_empty() {
        return monitor.empty_state().columns;
    }
    let fits = state.columns.len() == monitor.columns.len()
        && state.columns.iter().zip(&monitor.columns).all(|(s, c)| match (s, c.kind) {
            (ColumnState::Numeric(n), Kind::Numeric) => n.cells.len() == c.edges().len() + 1,
            (ColumnState::Categorical(_), Kind::Categorical) => true,
            _ => false,
        });
    if !fits {
        raise(Error::BadBinary(format!("a drift state that is not of drift monitor \"{}\"'s columns and bins", monitor.name)));
    }
    state.columns
}

fn compare_column(monitor: &DriftMonitor, dictionary: &Dictionary, i: usize, reference: &ColumnState, current: &ColumnState) -> ColumnDrift {
    compare(monitor.columns[i].edges(), reference, current, &|id| dictionary.name(id)).or_raise()
}


/// `mlmon._drift_report(monitor, reference, current)`: one row per column.
#[pg_extern(sql = false)]
fn drift_report(monitor: &str, reference: Option<&[u8]>, current: Option<&[u8]>) -> TableIterator<'static, (
    name!(column_name, String),
    name!(kind, String),
    name!(method, Option<String>),
    name!(statistic, Option<f64>),
    name!(p_value, Option<f64>),
    name!(threshold, Option<f64>),
    name!(drifted, Option<bool>),
    name!(psi, Option<f64>),
    name!(js_distance, Option<f64>),
    name!(wasserstein, Option<f64>),
    name!(null_share, Option<f64>),
    name!(reference_null_share, Option<f64>),
    name!(out_of_range_share, Option<f64>),
    name!(unseen_categories, Option<Vec<String>>),
    name!(n, i64),
    name!(reference_n, i64),
)> {
    let (monitor, dictionary) = Spi::connect(|client| {
        let m = DriftMonitor::load(client, monitor);
        let d = Dictionary::load(client, &m, false);
        (m, d)
    });
    let (reference, current) = (columns_of(&monitor, reference), columns_of(&monitor, current));
    let rows: Vec<_> = (0..monitor.columns.len())
        .map(|i| {
            let d = compare_column(&monitor, &dictionary, i, &reference[i], &current[i]);
            let unseen = (d.kind == "categorical").then(|| {
                let mut names: Vec<String> = d.unseen_categories.iter().map(|&id| dictionary.name(id)).collect();
                names.sort();
                names
            });
            (
                monitor.columns[i].name.clone(),
                d.kind.to_owned(),
                d.method.map(str::to_owned),
                d.statistic,
                d.p_value,
                d.threshold,
                d.drifted,
                d.psi,
                d.js_distance,
                d.wasserstein,
                d.null_share,
                d.reference_null_share,
                d.out_of_range_share,
                unseen,
                d.n,
                d.reference_n,
            )
        })
        .collect();
    TableIterator::new(rows)
}


/// Most steps one series may have.
const MAX_STEPS: i64 = 1_000_000;

/// `mlmon._drift_series(monitor, column_name, from, to, step, reference,
/// segment)`: one row per step of [from, to), empty steps included (n = 0,
/// statistics NULL), each step's state compared with `reference`.
#[pg_extern(sql = false)]
fn drift_series(
    monitor: &str,
    column_name: &str,
    from: TimestampWithTimeZone,
    to: TimestampWithTimeZone,
    step_micros: i64,
    reference: Option<&[u8]>,
    segment: Option<pgrx::JsonB>,
) -> TableIterator<'static, (
    name!(time, TimestampWithTimeZone),
    name!(n, i64),
    name!(method, Option<String>),
    name!(statistic, Option<f64>),
    name!(p_value, Option<f64>),
    name!(threshold, Option<f64>),
    name!(drifted, Option<bool>),
    name!(psi, Option<f64>),
    name!(js_distance, Option<f64>),
    name!(wasserstein, Option<f64>),
    name!(null_share, Option<f64>),
    name!(out_of_range_share, Option<f64>),
)> {
    let (from_us, to_us): (i64, i64) = (from.into(), to.into());
    if step_micros <= 0 || to_us <= from_us {
        raise_coded(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "a series needs a positive step and from earlier than to".into(),
            "argument step: a positive interval; from before to",
        );
    }
    // In i128: an infinite or very long period must not overflow.
    let steps = ((to_us as i128 - from_us as i128 + step_micros as i128 - 1) / step_micros as i128).min(i64::MAX as i128) as i64;
    if steps > MAX_STEPS {
        raise_coded(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("{steps} steps are more than {MAX_STEPS}"),
            "argument step: a wider step, or a shorter period",
        );
    }
    let (monitor, dictionary, per_step) = Spi::connect(|client| {
        let m = DriftMonitor::load(client, monitor);
        let d = Dictionary::load(client, &m, false);
        let sql = format!(
            "SELECT bucket, state FROM {} WHERE bucket >= $1 AND bucket < $2 AND ($3::jsonb IS NULL OR segment = $3::jsonb)",
            m.states_table
        );
        let mut per_step: Vec<DriftState> = vec![DriftState::default(); steps.max(0) as usize];
        let rows = client.select(&sql, None, &[from.into(), to.into(), segment.into()]).unwrap_or_else(|e| spi_error(e));
        for row in rows {
            let (Ok(Some(bucket)), Ok(Some(state))) = (row.get::<TimestampWithTimeZone>(1), row.get::<&[u8]>(2)) else { continue };
            let at: i64 = bucket.into();
            let k = ((at - from_us) / step_micros) as usize;
            per_step[k].add_encoded(state).or_raise();
        }
        (m, d, per_step)
    });
    let i = monitor.column_position(column_name);
    let reference = columns_of(&monitor, reference);
    let empty = monitor.empty_state();
    let rows: Vec<_> = per_step
        .iter()
        .enumerate()
        .map(|(k, state)| {
            // A step without rows compares an empty state (built once), not a copy.
            let current = if state.columns.is_empty() { &empty.columns[i] } else { &state.columns[i] };
            let d = compare_column(&monitor, &dictionary, i, &reference[i], current);
            let time = TimestampWithTimeZone::try_from(from_us + k as i64 * step_micros).unwrap_or_else(|_| pgrx::error!("step time out of range"));
            (time, d.n, d.method.map(str::to_owned), d.statistic, d.p_value, d.threshold, d.drifted, d.psi, d.js_distance, d.wasserstein, d.null_share, d.out_of_range_share)
        })
        .collect();
    TableIterator::new(rows)
}


/// `mlmon._drift_cells(monitor, column_name, state)`: a column's cells.
#[pg_extern(sql = false)]
fn drift_cells(monitor: &str, column_name: &str, state: Option<&[u8]>) -> TableIterator<'static, (
    name!(kind, String),
    name!(bin, Option<i32>),
    name!(lower, Option<f64>),
    name!(upper, Option<f64>),
    name!(category, Option<String>),
    name!(n, i64),
)> {
    let (monitor, dictionary) = Spi::connect(|client| {
        let m = DriftMonitor::load(client, monitor);
        let d = Dictionary::load(client, &m, false);
        (m, d)
    });
    let i = monitor.column_position(column_name);
    let columns = columns_of(&monitor, state);
    let mut rows: Vec<_> = Vec::new();
    match &columns[i] {
        ColumnState::Numeric(s) => {
            let edges = monitor.columns[i].edges();
            let last = s.cells.len() - 1;
            for (j, &n) in s.cells.iter().enumerate() {
                let (kind, lower, upper) = match j {
                    0 => ("underflow", None, Some(edges[0])),
                    j if j == last => ("overflow", Some(edges[edges.len() - 1]), None),
                    j => ("bin", Some(edges[j - 1]), Some(edges[j])),
                };
                rows.push((kind.to_owned(), Some(j as i32), lower, upper, None, n));
            }
        }
        ColumnState::Categorical(s) => {
            let mut named: Vec<(String, i64)> = s.counts.iter().filter(|(_, n)| **n != 0).map(|(&id, &n)| (dictionary.name(id), n)).collect();
            named.sort();
            rows.extend(named.into_iter().map(|(c, n)| ("category".to_owned(), None, None, None, Some(c), n)));
            rows.push(("other".to_owned(), None, None, None, None, s.other));
        }
    }
    rows.push(("null".to_owned(), None, None, None, None, columns[i].nulls()));
    TableIterator::new(rows)
}
