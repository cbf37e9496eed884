//! What every mergeable mlmon state offers the SQL layer: a versioned binary
//! form, a JSON text form and a merge. The extension's type I/O, `merge`,
//! `rollup` and parallel combine functions are written once against this trait.

use crate::error::Result;

pub trait State: Sized + Clone {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self>;
    fn to_json(&self) -> String;
    fn from_json(text: &str) -> Result<Self>;
    fn merge_from(&mut self, other: &Self) -> Result<()>;
}

impl State for crate::Confusion {
    fn encode(&self) -> Vec<u8> {
        crate::codec::encode(self)
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        crate::codec::decode(bytes)
    }
    fn to_json(&self) -> String {
        crate::text::to_json(self)
    }
    fn from_json(text: &str) -> Result<Self> {
        crate::text::from_json(text)
    }
    fn merge_from(&mut self, other: &Self) -> Result<()> {
        self.merge(other)
    }
}

/// Implements [`State`] for a type whose inherent methods already have the
/// right names; `$merge` adapts its merge to return a `Result`.
macro_rules! state_from_inherent {
    ($ty:ty, $merge:expr) => {
        impl State for $ty {
            fn encode(&self) -> Vec<u8> {
                <$ty>::encode(self)
            }
            fn decode(bytes: &[u8]) -> Result<Self> {
                <$ty>::decode(bytes)
            }
            fn to_json(&self) -> String {
                <$ty>::to_json(self)
            }
            fn from_json(text: &str) -> Result<Self> {
                <$ty>::from_json(text)
            }
            fn merge_from(&mut self, other: &Self) -> Result<()> {
                $merge(self, other)
            }
        }
    };
}

state_from_inherent!(crate::regression::RegressionSummary, |a: &mut Self, b: &Self| {
    a.merge(b);
    Ok(())
});
state_from_inherent!(crate::scores::ScoreSummary, |a: &mut Self, b: &Self| {
    a.merge(b);
    Ok(())
});
state_from_inherent!(crate::drift::Histogram, |a: &mut Self, b: &Self| a.merge(b));
state_from_inherent!(crate::drift::Frequencies, |a: &mut Self, b: &Self| a.merge(b));
