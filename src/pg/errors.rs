//! Turns core errors into PostgreSQL errors with a specific SQLSTATE and hint.

use mlmon_core::Error;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raises `error` as a PostgreSQL ERROR; never returns.
pub fn raise(error: Error) -> ! {
    let message = error.to_string();
    let (code, hint) = match error {
        Error::InvalidArgument { argument, hint, .. } => {
            (PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("argument {argument}: {hint}"))
        }
        Error::BadText(_) => (
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            "the text form is the JSON the type prints, e.g. {\"version\":1,\"kind\":\"binary\",\"weighted\":false,\"cells\":[{\"actual\":\"true\",\"predicted\":\"true\",\"n\":1}]} for mlmon.confusion".into(),
        ),
        Error::BadBinary(_) => (
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            "the state was not produced by this version of mlmon or is corrupted".into(),
        ),
        Error::LimitExceeded { hint, .. } => (PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, hint),
    };
    raise_coded(code, message, &hint)
}

/// Raises an ERROR with `code`, `message` and `hint`; never returns.
pub fn raise_coded(code: PgSqlErrorCode, message: String, hint: &str) -> ! {
    ErrorReport::new(code, message, "mlmon").set_hint(hint).report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// Unwraps a core result or raises its error.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, Error> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}

/// A row count as SQL's `bigint`. Only a forged state counts more rows; it
/// gets an error rather than a negative count.
pub fn bigint_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or_else(|_| raise(mlmon_core::error::count_overflow()))
}
