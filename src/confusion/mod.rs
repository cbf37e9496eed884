//! The `mlmon.confusion` type: I/O functions and merging.
//!
//! On disk the type is a varlena holding `mlmon_core::codec` bytes, so every
//! function here takes and returns `&[u8]`/`Vec<u8>`; `sql/confusion.sql` gives
//! them their SQL types.

mod accessors;
mod aggregates;

use std::ffi::{CStr, CString};

use mlmon_core::{codec, text, Confusion};
use pgrx::prelude::*;
use pgrx::Internal;

use crate::errors::{raise, OrRaise};
use crate::memory::take_receive_buffer;

/// Decodes a stored state, raising 22P03 on malformed bytes.
pub(crate) fn decode(bytes: &[u8]) -> Confusion {
    codec::decode(bytes).or_raise()
}

pub(crate) fn encode(cm: &Confusion) -> Vec<u8> {
    codec::encode(cm)
}

#[pg_extern(sql = false)]
fn confusion_in(input: &CStr) -> Vec<u8> {
    let text = input.to_str().unwrap_or_else(|_| raise(mlmon_core::Error::BadText("not valid UTF-8".into())));
    encode(&text::from_json(text).or_raise())
}

#[pg_extern(sql = false)]
fn confusion_out(state: &[u8]) -> CString {
    CString::new(text::to_json(&decode(state))).expect("JSON has no NUL bytes")
}

#[pg_extern(sql = false)]
fn confusion_recv(buffer: Internal) -> Vec<u8> {
    // Re-encode so that what is stored is canonical and fully validated.
    encode(&decode(&take_receive_buffer(buffer)))
}

#[pg_extern(sql = false)]
fn confusion_send(state: &[u8]) -> Vec<u8> {
    encode(&decode(state))
}

/// `mlmon.merge(a, b)`: NULL acts as the empty matrix.
#[pg_extern(sql = false)]
fn confusion_merge(a: Option<&[u8]>, b: Option<&[u8]>) -> Option<Vec<u8>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.to_vec()),
        (Some(a), Some(b)) => {
            let mut merged = decode(a);
            merged.merge(&decode(b)).or_raise();
            Some(encode(&merged))
        }
    }
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
