//! The distinct labels and segments of a bulk load, by their bytes.
//!
//! The extension's bulk path asks twice a row (label, segment) for the id of
//! a value and keeps a copy of each value's first occurrence under its id;
//! this is the part that needs no database: which bytes identify a value,
//! and the id of each identity in order of first appearance.
//!
//! A value's identity is hashed once and compared once with the identity
//! stored under that hash; the first few identities of at most 8 bytes
//! (labels and segments mostly are such) are found by comparing registers
//! instead. A map keyed by built identities (copied, then compared two to
//! four times a row) cost 2-3% of a COPY.

use std::hash::Hasher;

use crate::fast_hash::FastHasher;

/// How many short identities are kept for register compares.
const SHORT_VALUES: usize = 8;

/// The id of an identity, and whether this call gave it (the caller then
/// keeps a copy of the value under it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lookup {
    Known(u32),
    New(u32),
}

impl Lookup {
    pub fn id(self) -> u32 {
        match self {
            Lookup::Known(id) | Lookup::New(id) => id,
        }
    }
}

/// Ids of identities, in order of first appearance from 0. A dictionary
/// takes single values (`id_of_value`, `id_of_null`) or tuples
/// (`id_of_tuple`), never both.
#[derive(Default)]
pub struct Dictionary {
    /// Ids, found by the hash of their identity.
    ids: hashbrown::HashTable<u32>,
    /// The identity of each id: a single value's bytes, or a tuple's
    /// encoding (`TupleIdentity`).
    identities: Vec<Vec<u8>>,
    /// The id of a single value's NULL. It is not findable by identity: an
    /// empty value's identity is empty too, and the two are different values.
    null_id: Option<u32>,
    /// The first few single identities of at most 8 bytes as (length, bytes
    /// as a word, id), also in `ids`.
    short: Vec<(usize, u64, u32)>,
    /// The tuple identity being built, kept to spare an allocation per row.
    scratch: Vec<u8>,
}

/// Up to 8 bytes as a word.
fn word(bytes: &[u8]) -> u64 {
    let mut padded = [0u8; 8];
    padded[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(padded)
}

fn identity_hash(identity: &[u8]) -> u64 {
    let mut hasher = FastHasher::default();
    hasher.write(identity);
    hasher.finish()
}

impl Dictionary {
    /// The number of ids given.
    pub fn len(&self) -> usize {
        self.identities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// The id of a single value's NULL.
    pub fn id_of_null(&mut self) -> Lookup {
        if let Some(id) = self.null_id {
            return Lookup::Known(id);
        }
        let id = self.add(Vec::new(), None);
        self.null_id = Some(id);
        Lookup::New(id)
    }

    /// The id of a single non-NULL value whose identity is `identity` (a
    /// by-value datum's 8 bytes, a by-reference value's bytes).
    pub fn id_of_value(&mut self, identity: &[u8]) -> Lookup {
        let short = (identity.len() <= 8).then(|| (identity.len(), word(identity)));
        if let Some(short) = short {
            if let Some(&(_, _, id)) = self.short.iter().find(|&&(length, word, _)| (length, word) == short) {
                return Lookup::Known(id);
            }
        }
        let hash = identity_hash(identity);
        let identities = &self.identities;
        if let Some(&id) = self.ids.find(hash, |&id| identities[id as usize] == identity) {
            return Lookup::Known(id);
        }
        let id = self.add(identity.to_vec(), Some(hash));
        if let Some((length, word)) = short.filter(|_| self.short.len() < SHORT_VALUES) {
            self.short.push((length, word, id));
        }
        Lookup::New(id)
    }

    /// The id of a tuple of values, whose identity `build` writes (with
    /// `TupleIdentity`'s functions) into an empty buffer.
    pub fn id_of_tuple(&mut self, build: impl FnOnce(&mut TupleIdentity)) -> Lookup {
        let mut identity = TupleIdentity(std::mem::take(&mut self.scratch));
        identity.0.clear();
        build(&mut identity);
        let identity = identity.0;
        let hash = identity_hash(&identity);
        let identities = &self.identities;
        let found = self.ids.find(hash, |&id| identities[id as usize] == identity).copied();
        let lookup = match found {
            Some(id) => Lookup::Known(id),
            None => Lookup::New(self.add(identity.clone(), Some(hash))),
        };
        self.scratch = identity;
        lookup
    }

    /// A new id for `identity`, found by it in `ids` when `hash` (of the
    /// identity) is given.
    fn add(&mut self, identity: Vec<u8>, hash: Option<u64>) -> u32 {
        self.identities.push(identity);
        let id = (self.identities.len() - 1) as u32;
        if let Some(hash) = hash {
            let identities = &self.identities;
            self.ids.insert_unique(hash, id, |&id| identity_hash(&identities[id as usize]));
        }
        id
    }
}

/// The identity of a tuple: per value a NULL flag, then a by-value datum's
/// 8 bytes or a by-reference value's length and bytes, so that no two
/// different tuples share one.
pub struct TupleIdentity(Vec<u8>);

impl TupleIdentity {
    pub fn push_null(&mut self) {
        self.0.push(1);
    }

    pub fn push_by_value(&mut self, datum: u64) {
        self.0.push(0);
        self.0.extend_from_slice(&datum.to_le_bytes());
    }

    pub fn push_bytes(&mut self, bytes: &[u8]) {
        self.0.push(0);
        self.0.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.0.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::{Dictionary, Lookup};

    #[test]
    fn ids_follow_first_appearance_and_repeat_for_equal_bytes() {
        let mut d = Dictionary::default();
        assert_eq!(d.id_of_value(b"web"), Lookup::New(0));
        assert_eq!(d.id_of_value(b"app"), Lookup::New(1));
        assert_eq!(d.id_of_value(b"web"), Lookup::Known(0));
        assert_eq!(d.id_of_value(b"a much longer segment value"), Lookup::New(2));
        assert_eq!(d.id_of_value(b"a much longer segment value"), Lookup::Known(2));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn null_and_empty_are_different_values() {
        // Found on review of 769ffc7: NULL was registered under an empty
        // identity, which an empty string then matched.
        let mut d = Dictionary::default();
        assert_eq!(d.id_of_null(), Lookup::New(0));
        assert_eq!(d.id_of_value(b""), Lookup::New(1));
        assert_eq!(d.id_of_null(), Lookup::Known(0));
        assert_eq!(d.id_of_value(b""), Lookup::Known(1));
    }

    #[test]
    fn short_values_beyond_the_register_list_are_found_by_hash() {
        let mut d = Dictionary::default();
        let values: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; (i % 8 + 1) as usize]).collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(d.id_of_value(v), Lookup::New(i as u32));
        }
        for (i, v) in values.iter().enumerate().rev() {
            assert_eq!(d.id_of_value(v), Lookup::Known(i as u32));
        }
        // Same word, different length: "a" and "a\0" pad to the same word.
        assert_eq!(d.id_of_value(b"z"), Lookup::New(40));
        assert_eq!(d.id_of_value(b"z\0"), Lookup::New(41));
    }

    #[test]
    fn tuple_identities_keep_boundaries_and_nulls_apart() {
        let mut d = Dictionary::default();
        let ab_c = d.id_of_tuple(|t| {
            t.push_bytes(b"ab");
            t.push_bytes(b"c");
        });
        let a_bc = d.id_of_tuple(|t| {
            t.push_bytes(b"a");
            t.push_bytes(b"bc");
        });
        let null_empty = d.id_of_tuple(|t| {
            t.push_null();
            t.push_bytes(b"");
        });
        let empty_null = d.id_of_tuple(|t| {
            t.push_bytes(b"");
            t.push_null();
        });
        let by_value = d.id_of_tuple(|t| {
            t.push_by_value(7);
            t.push_null();
        });
        assert_eq!([ab_c, a_bc, null_empty, empty_null, by_value].map(Lookup::id), [0, 1, 2, 3, 4]);
        assert!([ab_c, a_bc, null_empty, empty_null, by_value].iter().all(|l| matches!(l, Lookup::New(_))));
        let again = d.id_of_tuple(|t| {
            t.push_bytes(b"a");
            t.push_bytes(b"bc");
        });
        assert_eq!(again, Lookup::Known(1));
    }
}
