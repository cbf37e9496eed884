//! Little-endian byte helpers shared by the binary forms of the summaries in
//! [`crate::regression`], [`crate::scores`] and [`crate::drift`].
//!
//! Every such form starts with the format version byte and a one-byte tag
//! naming the type, so bytes of one state are never decoded as another. The
//! reader checks every length: the bytes may come from an untrusted client.

use crate::error::{Error, Result};

/// Version of the binary and text forms written by this build.
pub const FORMAT_VERSION: u8 = 1;

pub struct Writer(Vec<u8>);

impl Writer {
    pub fn new(tag: u8) -> Self {
        Writer(vec![FORMAT_VERSION, tag])
    }
    /// A writer without the version and tag: a part of a form.
    pub fn bare(capacity: usize) -> Self {
        Writer(Vec::with_capacity(capacity))
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    /// Room for `additional` more bytes, for a writer that knows its size.
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Checks the version and type tag; `what` names the type in messages.
    pub fn new(bytes: &'a [u8], tag: u8, what: &str) -> Result<Self> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8("format version")?;
        if version != FORMAT_VERSION {
            return Err(Error::BadBinary(format!("unknown format version {version} (this mlmon reads version {FORMAT_VERSION})")));
        }
        let found = r.u8("type tag")?;
        if found != tag {
            return Err(Error::BadBinary(format!("bytes are not a {what} state (type tag {found:#x})")));
        }
        Ok(r)
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.at.checked_add(n).filter(|&e| e <= self.bytes.len()) {
            Some(end) => {
                let s = &self.bytes[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(Error::BadBinary(format!("truncated while reading {what} at byte {}", self.at))),
        }
    }
    /// A reader of a part of a form, without version and tag.
    pub fn bare(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }
    /// Every byte not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    pub fn f64(&mut self, what: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    pub fn str(&mut self, what: &str) -> Result<&'a str> {
        let len = self.u32(what)? as usize;
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw).map_err(|_| Error::BadBinary(format!("{what} is not valid UTF-8")))
    }
    /// A count of items that must not exceed `limit` (checked before allocating).
    pub fn len(&mut self, what: &str, limit: usize) -> Result<usize> {
        let n = self.u32(what)? as usize;
        if n > limit {
            return Err(Error::BadBinary(format!("{what} {n} exceeds the limit of {limit}")));
        }
        Ok(n)
    }
    pub fn finish(self) -> Result<()> {
        if self.at != self.bytes.len() {
            return Err(Error::BadBinary(format!("{} trailing bytes", self.bytes.len() - self.at)));
        }
        Ok(())
    }
}

/// Parses the JSON text form and checks its version.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str, version: impl Fn(&T) -> u8) -> Result<T> {
    let form: T = serde_json::from_str(text).map_err(|e| Error::BadText(e.to_string()))?;
    let v = version(&form);
    if v != FORMAT_VERSION {
        return Err(Error::BadText(format!("unknown version {v} (expected {FORMAT_VERSION})")));
    }
    Ok(form)
}

/// Turns a validation error of decoded data into the error of its input form.
pub fn as_bad_binary(e: Error) -> Error {
    match e {
        Error::InvalidArgument { message, .. } | Error::LimitExceeded { message, .. } => Error::BadBinary(message),
        other => other,
    }
}

pub fn as_bad_text(e: Error) -> Error {
    match e {
        Error::InvalidArgument { message, .. } | Error::LimitExceeded { message, .. } | Error::BadBinary(message) => Error::BadText(message),
        other => other,
    }
}
