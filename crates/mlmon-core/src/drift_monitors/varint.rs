//! LEB128 varints with zigzag for signed values: a drift state's counts are
//! mostly small, and a 30-day read merges thousands of them per column.

use crate::error::{Error, Result};

pub fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A cursor over a state's bytes; every read checks the length (the bytes
/// may come from a client through `bytea`).
pub struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn truncated() -> Error {
    Error::BadBinary("drift state is truncated".into())
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub fn u8(&mut self) -> Result<u8> {
        let b = *self.bytes.get(self.at).ok_or_else(truncated)?;
        self.at += 1;
        Ok(b)
    }

    pub fn u64(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                if shift == 63 && b > 1 {
                    break;
                }
                return Ok(v);
            }
        }
        Err(Error::BadBinary("drift state holds an overlong varint".into()))
    }

    pub fn i64(&mut self) -> Result<i64> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A count bounded by `limit` (lengths, indexes).
    pub fn len(&mut self, limit: usize, what: &str) -> Result<usize> {
        let v = self.u64()?;
        if v > limit as u64 {
            return Err(Error::BadBinary(format!("drift state declares {v} {what}, more than {limit}")));
        }
        Ok(v as usize)
    }

    pub fn f64(&mut self) -> Result<f64> {
        let end = self.at.checked_add(8).filter(|&e| e <= self.bytes.len()).ok_or_else(truncated)?;
        let v = f64::from_le_bytes(self.bytes[self.at..end].try_into().expect("8 bytes"));
        self.at = end;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let values = [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1 << 40, -(1 << 40)];
        let mut out = Vec::new();
        values.iter().for_each(|&v| put_i64(&mut out, v));
        put_u64(&mut out, u64::MAX);
        let mut c = Cursor::new(&out);
        for &v in &values {
            assert_eq!(c.i64().unwrap(), v);
        }
        assert_eq!(c.u64().unwrap(), u64::MAX);
        assert!(c.is_done());
        assert!(Cursor::new(&[0x80, 0x80]).u64().is_err());
        assert!(Cursor::new(&[0xff; 11]).u64().is_err());
        assert!(Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).u64().is_err());
        assert!(Cursor::new(&[1, 2, 3]).f64().is_err());
    }
}
