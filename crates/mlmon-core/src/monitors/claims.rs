//! Claim chunks: what a monitor counts for the keys of a bulk load, stored
//! compactly instead of one keys-table row per key.
//!
//! A bulk INSERT whose keys are all new to a monitor (no keys row, no earlier
//! chunk overlapping their range) writes its keys' contributions as chunks of
//! at most [`CHUNK_KEYS`] entries, sorted by key. A later statement touching
//! such a key first copies its entry into a keys row ("materializes" it) and
//! then goes the usual way; a key's keys row, when it has one, supersedes its
//! entry. Strings (segments as jsonb text, predicted and actual labels) are
//! kept once per chunk in a dictionary that entries index.

use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

/// Entries per chunk: small enough that materializing one key decodes ~150 kB.
pub const CHUNK_KEYS: usize = 4096;

/// A chunk whose entries are stored as they are (written by earlier builds).
const TAG: u8 = 0x43;
/// A chunk whose entries are lz4-compressed: stored inline, in a few hundred
/// bytes, without PostgreSQL compressing 37 kB per chunk in the writer's
/// thread (a bulk load's helper thread compresses them).
const TAG_PACKED: u8 = 0x63;
/// The most bytes a chunk's entries may take once decompressed: 4096
/// entries of a first key, nine-byte gaps, four indexes and a weight, 4096
/// buckets, with room to spare. Checked before allocating.
const MAX_ENTRIES_BYTES: usize = 1 << 20;

/// One key's counted contribution. `bucket` is `None` for a key with raw rows
/// but no counted prediction (then every other field is `None` too).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: i64,
    /// Bucket start, microseconds since 2000-01-01 (PostgreSQL's timestamp).
    pub bucket: Option<i64>,
    pub segment: Option<u32>,
    pub predicted: Option<u32>,
    pub actual: Option<u32>,
    pub weight: f64,
}

/// A chunk: entries sorted by key, strictly ascending, and the strings they index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chunk {
    pub texts: Vec<String>,
    pub entries: Vec<Entry>,
}

impl Chunk {
    /// Index of `text` in the dictionary, adding it if new.
    pub fn intern(&mut self, text: &str) -> u32 {
        match self.texts.iter().position(|t| t == text) {
            Some(i) => i as u32,
            None => {
                self.texts.push(text.to_owned());
                (self.texts.len() - 1) as u32
            }
        }
    }

    pub fn text(&self, index: Option<u32>) -> Option<&str> {
        index.map(|i| self.texts[i as usize].as_str())
    }

    pub fn find(&self, key: i64) -> Option<&Entry> {
        self.entries.binary_search_by_key(&key, |e| e.key).ok().map(|i| &self.entries[i])
    }

    /// The binary form: the dictionary, then the entries column by column
    /// (see `plain_entries`), lz4-compressed. The 37 bytes a key of a keys
    /// row become about 9, then a few hundred bytes for 4096 keys of a
    /// typical load.
    pub fn encode(&self) -> Vec<u8> {
        assemble(&self.texts, &encode_entries(&self.entries, |i| i))
    }

    /// Decodes and checks a chunk: indexes in range, keys ascending.
    pub fn decode(bytes: &[u8]) -> Result<Chunk> {
        Self::decode_some(bytes, None)
    }

    /// The chunk with only the entries of `keys` (ascending) that it holds:
    /// what materializing a few keys needs. Its keys and their records are
    /// checked; the other records are skipped, not decoded (a single-row
    /// late outcome spent a fifth of its time decoding 4096 entries for one).
    pub fn decode_keys(bytes: &[u8], keys: &[i64]) -> Result<Chunk> {
        Self::decode_some(bytes, Some(keys))
    }

    fn decode_some(bytes: &[u8], wanted: Option<&[i64]>) -> Result<Chunk> {
        let packed = bytes.get(1) == Some(&TAG_PACKED);
        let mut r = Reader::new(bytes, if packed { TAG_PACKED } else { TAG }, "claim chunk")?;
        let texts = r.len("dictionary size", bytes.len())?;
        let texts = (0..texts).map(|_| r.str("dictionary entry").map(str::to_owned)).collect::<Result<Vec<_>>>()?;
        let entries = if packed {
            let size = r.len("entries size", MAX_ENTRIES_BYTES)?;
            let mut plain = vec![0u8; size];
            match lz4_flex::block::decompress_into(r.rest(), &mut plain) {
                Ok(n) if n == size => {}
                Ok(n) => return Err(Error::BadBinary(format!("claim chunk: entries are {n} bytes, not {size}"))),
                Err(e) => return Err(Error::BadBinary(format!("claim chunk: entries do not decompress: {e}"))),
            }
            Records::read(&mut Reader::bare(&plain), texts.len(), plain.len())?.entries(wanted)?
        } else {
            Records::read(&mut r, texts.len(), bytes.len())?.entries(wanted)?
        };
        Ok(Chunk { texts, entries })
    }
}

/// A chunk's entries section (what `plain_entries` writes) read up to its
/// fixed-size records: the keys and the bucket table decoded, then per entry
/// four 16-bit indexes (bucket, segment, predicted, actual) and, when the
/// flag after them is set, a weight each, found by position.
struct Records<'a> {
    keys: Vec<i64>,
    buckets: Vec<i64>,
    texts: usize,
    indexes: &'a [u8],
    weights: Option<&'a [u8]>,
}

impl<'a> Records<'a> {
    /// `texts` strings in the chunk's dictionary; `limit` bounds every count.
    /// Reads the whole section: its size must be exactly what its counts say.
    fn read(r: &mut Reader<'a>, texts: usize, limit: usize) -> Result<Records<'a>> {
        let count = r.len("entry count", limit)?;
        // mlmon never writes an empty chunk, and its readers take the first
        // and last entry as the chunk's range.
        if count == 0 {
            return Err(Error::BadBinary("claim chunk without entries".into()));
        }
        let mut keys = Vec::with_capacity(count);
        for i in 0..count {
            let key = if i == 0 {
                r.u64("key")? as i64
            } else {
                let next = i128::from(keys[i - 1]) + i128::from(read_leb128(r)?);
                match i64::try_from(next) {
                    Ok(key) if key > keys[i - 1] => key,
                    _ => return Err(Error::BadBinary("claim chunk: keys not ascending".into())),
                }
            };
            keys.push(key);
        }
        let buckets = r.len("bucket count", limit)?;
        let buckets = (0..buckets).map(|_| r.u64("bucket").map(|b| b as i64)).collect::<Result<Vec<_>>>()?;
        let rest = r.rest();
        let records = 8 * count;
        let (indexes, weights) = match rest.get(records) {
            Some(0) if rest.len() == records + 1 => (&rest[..records], None),
            Some(1) if rest.len() == 2 * records + 1 => (&rest[..records], Some(&rest[records + 1..])),
            _ => return Err(Error::BadBinary(format!("claim chunk: {} bytes of records for {count} entries", rest.len()))),
        };
        Ok(Records { keys, buckets, texts, indexes, weights })
    }

    /// Every entry, or those of `wanted` (ascending) the chunk holds.
    fn entries(&self, wanted: Option<&[i64]>) -> Result<Vec<Entry>> {
        match wanted {
            None => (0..self.keys.len()).map(|i| self.entry(i)).collect(),
            Some(wanted) => wanted.iter().filter_map(|k| self.keys.binary_search(k).ok()).map(|i| self.entry(i)).collect(),
        }
    }

    fn entry(&self, i: usize) -> Result<Entry> {
        let index = |field: usize, limit: usize| -> Result<Option<u32>> {
            let at = 8 * i + 2 * field;
            match u16::from_le_bytes([self.indexes[at], self.indexes[at + 1]]) {
                NONE16 => Ok(None),
                v if (v as usize) < limit => Ok(Some(u32::from(v))),
                v => Err(Error::BadBinary(format!("claim chunk: index {v} out of range"))),
            }
        };
        let bucket = index(0, self.buckets.len())?.map(|b| self.buckets[b as usize]);
        let weight = match self.weights {
            Some(w) => f64::from_le_bytes(w[8 * i..8 * i + 8].try_into().expect("8 bytes")),
            None if bucket.is_some() => 1.0,
            None => 0.0,
        };
        Ok(Entry {
            key: self.keys[i],
            bucket,
            segment: index(1, self.texts)?,
            predicted: index(2, self.texts)?,
            actual: index(3, self.texts)?,
            weight,
        })
    }
}

const NONE16: u16 = u16::MAX;

fn leb128(w: &mut Writer, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            w.u8(byte);
            return;
        }
        w.u8(byte | 0x80);
    }
}

fn read_leb128(r: &mut Reader) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = r.u8("key gap")?;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Error::BadBinary("claim chunk: key gap too long".into()))
}

/// The part of a chunk's binary form after its dictionary: the entries,
/// whose string indexes `text_index` maps into the dictionary, encoded and
/// compressed (their size, then an lz4 block). A bulk load encodes its
/// entries before it knows the strings (`bulk::Counter`).
pub fn encode_entries(entries: &[Entry], text_index: impl Fn(u32) -> u32) -> Vec<u8> {
    let plain = plain_entries(entries, text_index);
    let mut w = Writer::bare(8 + plain.len() / 8);
    w.u32(plain.len() as u32);
    w.bytes(&lz4_flex::block::compress(&plain));
    w.finish()
}

/// The entries column by column: keys as a first key and LEB128 gaps,
/// buckets and strings as 16-bit indexes into dictionaries, weights only
/// when some counted weight is not 1 (about 9 bytes a key, before lz4).
fn plain_entries(entries: &[Entry], text_index: impl Fn(u32) -> u32) -> Vec<u8> {
    // Key gaps (mostly one byte), four indexes, a weight: written in place.
    let mut w = Writer::bare(16 + entries.len() * (8 + 2 * 4 + 8));
    w.u32(entries.len() as u32);
    let mut previous = None;
    for e in entries {
        match previous {
            None => w.u64(e.key as u64),
            Some(p) => leb128(&mut w, (e.key as u64).wrapping_sub(p as u64)),
        }
        previous = Some(e.key);
    }
    let mut buckets: Vec<i64> = entries.iter().filter_map(|e| e.bucket).collect();
    buckets.sort_unstable();
    buckets.dedup();
    w.u32(buckets.len() as u32);
    for &b in &buckets {
        w.u64(b as u64);
    }
    let small = |w: &mut Writer, i: Option<u32>| w.u16(i.map_or(NONE16, |i| i as u16));
    for e in entries {
        small(&mut w, e.bucket.map(|b| buckets.binary_search(&b).expect("bucket listed") as u32));
        small(&mut w, e.segment.map(&text_index));
        small(&mut w, e.predicted.map(&text_index));
        small(&mut w, e.actual.map(&text_index));
    }
    let implied = |e: &Entry| if e.bucket.is_some() { 1.0_f64 } else { 0.0 };
    let explicit = entries.iter().any(|e| e.weight.to_bits() != implied(e).to_bits());
    w.u8(u8::from(explicit));
    if explicit {
        for e in entries {
            w.f64(e.weight);
        }
    }
    w.finish()
}

/// A chunk's binary form from its dictionary and its encoded entries
/// (`encode_entries`).
pub fn assemble<S: AsRef<str>>(texts: &[S], entries: &[u8]) -> Vec<u8> {
    assemble_tagged(TAG_PACKED, texts, entries)
}

fn assemble_tagged<S: AsRef<str>>(tag: u8, texts: &[S], entries: &[u8]) -> Vec<u8> {
    let text_bytes: usize = texts.iter().map(|t| 4 + t.as_ref().len()).sum();
    let mut w = Writer::new(tag);
    w.reserve(4 + text_bytes + entries.len());
    w.u32(texts.len() as u32);
    for t in texts {
        w.str(t.as_ref());
    }
    w.bytes(entries);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: i64, bucket: Option<i64>) -> Entry {
        Entry { key, bucket, segment: bucket.map(|_| 0), predicted: bucket.map(|_| 1), actual: None, weight: 1.5 }
    }

    /// Entries encoded before their strings are known, then assembled with
    /// them, are the chunk's own encoding.
    #[test]
    fn assembled_entries_equal_the_chunk_encoding() {
        let texts: Vec<String> = ["{}", "a", "true"].iter().map(|t| t.to_string()).collect();
        let entries: Vec<Entry> = (0..100)
            .map(|k| Entry {
                key: 5 * k - 40,
                bucket: (k % 7 != 0).then_some(600_000_000 * (k / 9)),
                segment: (k % 7 != 0).then_some((k % 2) as u32),
                predicted: (k % 7 != 0).then_some(2),
                actual: (k % 5 == 0).then_some(2),
                weight: if k % 7 == 0 { 0.0 } else if k % 11 == 0 { 2.5 } else { 1.0 },
            })
            .collect();
        let chunk = Chunk { texts: texts.clone(), entries: entries.clone() };
        // Global string numbers 10, 11, 12 standing for the chunk's 0, 1, 2.
        let global: Vec<Entry> = entries
            .iter()
            .map(|e| Entry { segment: e.segment.map(|i| i + 10), predicted: e.predicted.map(|i| i + 10), actual: e.actual.map(|i| i + 10), ..e.clone() })
            .collect();
        let bytes = assemble(&texts, &encode_entries(&global, |i| i - 10));
        assert_eq!(bytes, chunk.encode());
        assert_eq!(Chunk::decode(&bytes).unwrap(), chunk);
    }

    /// Decoding some keys gives exactly their entries of the full decode,
    /// weighted or not, and leaves out keys the chunk does not hold.
    #[test]
    fn decoding_some_keys_equals_filtering_the_full_decode() {
        let texts = ["{}".to_string(), "true".to_string()];
        for weighted in [false, true] {
            let entries: Vec<Entry> = (0..CHUNK_KEYS as i64)
                .map(|k| Entry { weight: if weighted { 0.5 * k as f64 } else if k % 5 != 0 { 1.0 } else { 0.0 }, ..entry(k * 3 - 7, (k % 5 != 0).then_some(k * 1000)) })
                .collect();
            let chunk = Chunk { texts: texts.to_vec(), entries };
            let bytes = chunk.encode();
            let wanted = [-7, -6, 2, 8, 3 * 4095 - 7, 3 * 4095 - 6];
            let some = Chunk::decode_keys(&bytes, &wanted).unwrap();
            let expected: Vec<Entry> = chunk.entries.iter().filter(|e| wanted.contains(&e.key)).cloned().collect();
            assert_eq!(expected.len(), 4);
            assert_eq!(some, Chunk { texts: texts.to_vec(), entries: expected });
            assert!(Chunk::decode_keys(&bytes[..bytes.len() - 1], &wanted).is_err());
        }
    }

    #[test]
    fn chunks_round_trip() {
        let texts = ["{}".to_string(), "true".to_string()];
        let entries: Vec<Entry> = (0..(CHUNK_KEYS as i64 + 10)).map(|k| entry(k * 3 - 7, (k % 5 != 0).then_some(k * 1000))).collect();
        let chunks: Vec<Chunk> =
            entries.chunks(CHUNK_KEYS).map(|run| Chunk { texts: texts.to_vec(), entries: run.to_vec() }).collect();
        for c in &chunks {
            assert_eq!(Chunk::decode(&c.encode()).unwrap(), *c);
        }
        let unweighted = Chunk { texts: texts.to_vec(), entries: vec![Entry { weight: 1.0, ..entry(5, Some(60)) }, Entry { weight: 0.0, ..entry(9, None) }] };
        let bytes = unweighted.encode();
        assert_eq!(Chunk::decode(&bytes).unwrap(), unweighted);
        assert_eq!(bytes.last(), Some(&0), "weights implied, not written");
        let extremes = Chunk { texts: vec![], entries: vec![entry(i64::MIN, None), entry(-1, None), entry(i64::MAX, None)] };
        assert_eq!(Chunk::decode(&extremes.encode()).unwrap(), extremes);
        let found = chunks[0].find(3 * 7 - 7).unwrap();
        assert_eq!(chunks[0].text(found.predicted), Some("true"));
        assert!(chunks[0].find(1).is_none());
    }

    /// Chunks written by earlier builds (entries not compressed) still read.
    #[test]
    fn uncompressed_chunks_still_decode() {
        let chunk = Chunk { texts: vec!["{}".into(), "true".into()], entries: (0..50).map(|k| entry(k * 2, Some(k / 10))).collect() };
        let plain = assemble_tagged(TAG, &chunk.texts, &plain_entries(&chunk.entries, |i| i));
        assert_eq!(plain[1], TAG);
        assert_eq!(Chunk::decode(&plain).unwrap(), chunk);
        let packed = chunk.encode();
        assert_eq!(packed[1], TAG_PACKED);
        assert!(packed.len() < plain.len());
        assert_eq!(Chunk::decode(&packed).unwrap(), chunk);
    }

    /// Compressed entries that lie about their size, or do not decompress,
    /// are refused before any large allocation.
    #[test]
    fn malformed_compressed_entries_are_rejected() {
        let chunk = Chunk { texts: vec!["x".into()], entries: (0..300).map(|k| entry(k, Some(0))).collect() };
        let good = chunk.encode();
        let size_at = 2 + 4 + 4 + 1; // version, tag, text count, "x" with its length
        let with_size = |size: u32| {
            let mut bytes = good.clone();
            bytes[size_at..size_at + 4].copy_from_slice(&size.to_le_bytes());
            bytes
        };
        let real = u32::from_le_bytes(good[size_at..size_at + 4].try_into().unwrap());
        for size in [u32::MAX, MAX_ENTRIES_BYTES as u32 + 1, real + 1, real - 1, 0] {
            assert!(Chunk::decode(&with_size(size)).is_err(), "declared size {size} accepted");
        }
        for cut in 0..good.len() {
            assert!(Chunk::decode(&good[..cut]).is_err(), "prefix of {cut} bytes accepted");
        }
    }

    #[test]
    fn malformed_chunks_are_rejected() {
        let mut chunk = Chunk { texts: vec!["x".into()], entries: vec![entry(1, Some(0)), entry(2, Some(0))] };
        let good = chunk.encode();
        for cut in 0..good.len() {
            assert!(Chunk::decode(&good[..cut]).is_err(), "prefix of {cut} bytes accepted");
        }
        chunk.entries.swap(0, 1);
        assert!(Chunk::decode(&chunk.encode()).is_err());
        chunk.entries = vec![Entry { predicted: Some(5), ..entry(1, Some(0)) }];
        assert!(Chunk::decode(&chunk.encode()).is_err());
        assert!(Chunk::decode(&[9, TAG]).is_err());
    }
}
