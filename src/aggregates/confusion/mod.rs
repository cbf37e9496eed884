//! The `mlmon.confusion` type: I/O functions and merging.
//!
//! On disk the type is a varlena holding `mlmon_core::codec` bytes, so every
//! function here takes and returns `&[u8]`/`Vec<u8>`; `sql/aggregates/confusion.sql` gives
//! them their SQL types.

mod accessors;
mod aggregates;
mod fast_path;

use std::ffi::{CStr, CString};

use mlmon_core::state::State;
use mlmon_core::Confusion;
use pgrx::prelude::*;
use pgrx::Internal;

use crate::pg::errors::{raise, OrRaise};
use crate::aggregates::state;

/// Decodes a stored state, raising 22P03 on malformed bytes.
pub(crate) fn decode(bytes: &[u8]) -> Confusion {
    state::decode::<Confusion>(bytes)
}

pub(crate) fn encode(cm: &Confusion) -> Vec<u8> {
    cm.encode()
}

#[pg_extern(sql = false)]
fn confusion_in(input: &CStr) -> Vec<u8> {
    state::text_in::<Confusion>(input)
}

#[pg_extern(sql = false)]
fn confusion_out(bytes: &[u8]) -> CString {
    state::text_out::<Confusion>(bytes)
}

#[pg_extern(sql = false)]
fn confusion_recv(buffer: Internal) -> Vec<u8> {
    state::binary_recv::<Confusion>(buffer)
}

#[pg_extern(sql = false)]
fn confusion_send(bytes: &[u8]) -> Vec<u8> {
    state::binary_send::<Confusion>(bytes)
}

/// `mlmon.merge(a, b)`: NULL acts as the empty matrix.
#[pg_extern(sql = false)]
fn confusion_merge(a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Vec<u8>> {
    state::merge::<Confusion>(a, b)
}

/// Builds a matrix from summed cells (monitors read their rollups this way).
/// `kind` is 'binary', 'text' or 'integer'; cells with a zero count are skipped.
#[pg_extern(sql = false)]
fn confusion_from_cells(
    kind: &str,
    weighted: bool,
    predicted: Vec<Option<String>>,
    actual: Vec<Option<String>>,
    n: Vec<Option<i64>>,
    weight: Vec<Option<f64>>,
) -> Vec<u8> {
    use mlmon_core::{Cell, Error, LabelKind};
    let kind = LabelKind::from_name(kind)
        .unwrap_or_else(|| raise(Error::invalid("kind", format!("unknown kind {kind:?}"), "kind must be 'binary', 'text' or 'integer'")));
    if predicted.len() != actual.len() || actual.len() != n.len() || n.len() != weight.len() {
        raise(Error::invalid("predicted", "cell arrays must have the same length", "pass one element per cell in each array"));
    }
    let mut cm = Confusion::new(kind);
    if weighted {
        cm.mark_weighted();
    }
    for i in 0..n.len() {
        let (Some(p), Some(a), Some(count), Some(w)) = (&predicted[i], &actual[i], n[i], weight[i]) else { continue };
        if count < 0 {
            raise(Error::invalid("n", format!("cell count must not be negative, got {count}"), "counts are numbers of predictions"));
        }
        // Summed +w/-w deltas can leave tiny negative residue; a cell's true weight is never negative.
        let w = if weighted { w.max(0.0) } else { count as f64 };
        cm.add_counts(a, p, Cell { n: count as u64, w }).or_raise();
    }
    encode(&cm)
}
