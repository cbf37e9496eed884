//! Versioned binary form of [`Confusion`], used on disk, in `send`/`recv` and
//! between parallel workers.
//!
//! Layout (little endian): `version u8 = 1`, `kind u8`, `flags u8` (bit 0:
//! weighted), `label_count u32`, labels as `len u32` + UTF-8 bytes, `cell_count
//! u32`, cells as `actual u32`, `predicted u32`, `n u64` and, when weighted,
//! `w f64`. Decoding checks every length, index and value: bytes from a client
//! (binary COPY) are untrusted.

use std::collections::HashSet;

use crate::confusion::{Cell, Confusion, LabelKind, MAX_CELLS, MAX_LABELS};
use crate::error::{Error, Result};

pub const FORMAT_VERSION: u8 = 1;
const FLAG_WEIGHTED: u8 = 1;

fn kind_byte(kind: LabelKind) -> u8 {
    match kind {
        LabelKind::Binary => 0,
        LabelKind::Text => 1,
        LabelKind::Integer => 2,
    }
}

pub fn encode(cm: &Confusion) -> Vec<u8> {
    let labels = cm.labels();
    let cells = cm.sorted_cells();
    let mut out = Vec::with_capacity(16 + labels.len() * 8 + cells.len() * 24);
    out.push(FORMAT_VERSION);
    out.push(kind_byte(cm.kind()));
    out.push(if cm.is_weighted() { FLAG_WEIGHTED } else { 0 });
    out.extend_from_slice(&(labels.len() as u32).to_le_bytes());
    for label in &labels {
        out.extend_from_slice(&(label.len() as u32).to_le_bytes());
        out.extend_from_slice(label.as_bytes());
    }
    let position = |l: &str| labels.iter().position(|x| *x == l).expect("cell labels are present") as u32;
    out.extend_from_slice(&(cells.len() as u32).to_le_bytes());
    for (a, p, cell) in cells {
        out.extend_from_slice(&position(a).to_le_bytes());
        out.extend_from_slice(&position(p).to_le_bytes());
        out.extend_from_slice(&cell.n.to_le_bytes());
        if cm.is_weighted() {
            out.extend_from_slice(&cell.w.to_le_bytes());
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(Error::BadBinary(format!("truncated while reading {what} at byte {}", self.at))),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
}

pub fn decode(bytes: &[u8]) -> Result<Confusion> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8("format version")?;
    if version != FORMAT_VERSION {
        return Err(Error::BadBinary(format!("unknown format version {version} (this mlmon reads version {FORMAT_VERSION})")));
    }
    let kind = match r.u8("label kind")? {
        0 => LabelKind::Binary,
        1 => LabelKind::Text,
        2 => LabelKind::Integer,
        other => return Err(Error::BadBinary(format!("unknown label kind {other}"))),
    };
    let flags = r.u8("flags")?;
    if flags & !FLAG_WEIGHTED != 0 {
        return Err(Error::BadBinary(format!("unknown flags {flags:#x}")));
    }
    let weighted = flags & FLAG_WEIGHTED != 0;

    let label_count = r.u32("label count")? as usize;
    if label_count > MAX_LABELS {
        return Err(Error::BadBinary(format!("{label_count} labels exceeds the limit of {MAX_LABELS}")));
    }
    let mut labels = Vec::with_capacity(label_count.min(1024));
    let mut seen = HashSet::new();
    for _ in 0..label_count {
        let len = r.u32("label length")? as usize;
        let raw = r.take(len, "label")?;
        let label = std::str::from_utf8(raw).map_err(|_| Error::BadBinary("label is not valid UTF-8".into()))?;
        if !kind.accepts(label) || !seen.insert(label) {
            return Err(Error::BadBinary(format!("label {label:?} is invalid or repeated for a {} matrix", kind.name())));
        }
        labels.push(label);
    }

    let cell_count = r.u32("cell count")? as usize;
    if cell_count > MAX_CELLS {
        return Err(Error::BadBinary(format!("{cell_count} cells exceeds the limit of {MAX_CELLS}")));
    }
    let mut cm = Confusion::new(kind);
    if weighted {
        cm.mark_weighted();
    }
    let mut seen_cells = HashSet::new();
    for _ in 0..cell_count {
        let a = r.u32("cell actual")? as usize;
        let p = r.u32("cell predicted")? as usize;
        let n = r.u64("cell count")?;
        let w = if weighted { r.f64("cell weight")? } else { n as f64 };
        if a >= labels.len() || p >= labels.len() || !seen_cells.insert((a, p)) {
            return Err(Error::BadBinary("cell refers to an unknown label or repeats a cell".into()));
        }
        if n == 0 || !w.is_finite() || w < 0.0 {
            return Err(Error::BadBinary("cell has a zero count or a negative or non-finite weight".into()));
        }
        cm.add_counts(labels[a], labels[p], Cell { n, w }).map_err(|e| Error::BadBinary(e.to_string()))?;
    }
    if r.at != bytes.len() {
        return Err(Error::BadBinary(format!("{} trailing bytes", bytes.len() - r.at)));
    }
    Ok(cm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Confusion {
        let mut cm = Confusion::new(LabelKind::Text);
        cm.mark_weighted();
        cm.add("cat", "dog", 2.5).unwrap();
        cm.add("dog", "dog", 0.5).unwrap();
        cm
    }

    #[test]
    fn round_trips() {
        let cm = sample();
        assert_eq!(decode(&encode(&cm)).unwrap(), cm);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes accepted");
        }
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = encode(&sample());
        bytes[0] = 9;
        assert!(matches!(decode(&bytes), Err(Error::BadBinary(m)) if m.contains("version 9")));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = encode(&sample());
            let i = (seed as usize) % bytes.len();
            bytes[i] = (seed >> 32) as u8;
            let _ = decode(&bytes);
        }
    }
}
