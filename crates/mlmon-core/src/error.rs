//! One error type for the core; the extension maps each variant to a SQLSTATE.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A function argument has a value outside its domain (SQLSTATE 22023).
    InvalidArgument { argument: &'static str, message: String, hint: String },
    /// The text form of a state could not be parsed (SQLSTATE 22P02).
    BadText(String),
    /// The binary form of a state is malformed or of an unknown version (SQLSTATE 22P03).
    BadBinary(String),
    /// A state would grow beyond the limits we accept (SQLSTATE 54000).
    LimitExceeded { message: String, hint: String },
}

impl Error {
    pub fn invalid(argument: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::InvalidArgument { argument, message: message.into(), hint: hint.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument { message, .. } => write!(f, "{message}"),
            Error::BadText(m) => write!(f, "invalid input syntax for an mlmon state: {m}"),
            Error::BadBinary(m) => write!(f, "malformed mlmon state: {m}"),
            Error::LimitExceeded { message, .. } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Most rows a state may count: every count must fit SQL's `bigint`.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// A merge or a decoded state that would count more than [`MAX_COUNT`] rows;
/// only a forged state gets here (2^63 real rows never happen).
pub fn count_overflow() -> Error {
    Error::LimitExceeded {
        message: format!("state counts more than {MAX_COUNT} rows"),
        hint: "the state was not built by mlmon's aggregates; rebuild it from the raw rows".into(),
    }
}

/// Rejects NaN, infinities and negative values for a weight or cost-like argument.
pub fn check_weight(argument: &'static str, value: f64) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::invalid(argument, format!("{argument} must be finite, got {value}"), format!("pass a finite, non-negative {argument}")));
    }
    if value < 0.0 {
        return Err(Error::invalid(argument, format!("{argument} must not be negative, got {value}"), format!("pass a non-negative {argument} (scikit-learn sample_weight semantics)")));
    }
    Ok(())
}

/// Rejects NaN and infinities.
pub fn check_finite(argument: &'static str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(argument, format!("{argument} must be finite, got {value}"), format!("pass a finite {argument}")))
    }
}
