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

impl State for crate::regression::RegressionSummary {
    fn encode(&self) -> Vec<u8> {
        crate::regression::RegressionSummary::encode(self)
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        crate::regression::RegressionSummary::decode(bytes)
    }
    fn to_json(&self) -> String {
        crate::regression::RegressionSummary::to_json(self)
    }
    fn from_json(text: &str) -> Result<Self> {
        crate::regression::RegressionSummary::from_json(text)
    }
    fn merge_from(&mut self, other: &Self) -> Result<()> {
        self.merge(other);
        Ok(())
    }
}
