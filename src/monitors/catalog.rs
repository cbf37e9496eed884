//! A monitor's definition as the native write paths need it, read from
//! `mlmon.monitor` by one query into named fields.

use mlmon_core::monitors::bulk::Buckets;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde::Deserialize;

/// A monitor as the native insert trigger needs it.
pub struct Monitor {
    pub name: String,
    pub predictions: pg_sys::Oid,
    pub outcomes: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    pub key_column: String,
    pub outcome_key_column: String,
    pub predicted_at_column: String,
    pub predicted_column: String,
    pub segment_by: Vec<String>,
    pub weight_column: Option<String>,
    pub actual_column: Option<String>,
    pub label_kind: String,
    pub first: bool,
    pub buckets: Buckets,
    pub integer_key: bool,
    /// uuid or text keys the statement path takes (`mlmon._statement_capable`),
    /// handled by their text.
    pub text_key: bool,
    /// The key type, as SQL (for casts of text arrays).
    pub key_type: String,
    pub keys_table: String,
    pub rollup_table: String,
    pub claims_table: String,
    pub claims_oid: pg_sys::Oid,
    pub lock_id: i64,
    /// Whether the key alone is unique in the predictions / outcomes table
    /// (`mlmon._unique_key`).
    pub unique_key: bool,
    pub unique_outcome_key: bool,
}

/// The row `LOAD` returns, by column name (OIDs as bigint: JSON has them as
/// strings otherwise).
#[derive(Deserialize)]
struct Row {
    predictions: u32,
    outcomes: u32,
    owner: Option<u32>,
    key_column: String,
    outcome_key_column: String,
    predicted_at_column: String,
    predicted_column: String,
    segment_by: Vec<String>,
    weight_column: Option<String>,
    actual_column: Option<String>,
    label_kind: String,
    first: bool,
    /// The bucket width in microseconds, None for widths of months or years.
    bucket_stride: Option<i64>,
    bucket_origin: i64,
    integer_key: bool,
    text_key: bool,
    key_type: String,
    keys_table: String,
    rollup_table: String,
    claims_table: String,
    claims_oid: u32,
    lock_id: i64,
    unique_key: bool,
    unique_outcome_key: bool,
}

const LOAD: &str = "
    SELECT pg_catalog.row_to_json(r)::text FROM (
        SELECT m.predictions::oid::bigint AS predictions, m.outcomes::oid::bigint AS outcomes,
               (SELECT o.oid::bigint FROM pg_catalog.pg_roles o WHERE o.rolname = m.owner) AS owner,
               m.key_column::text AS key_column, m.outcome_key_column::text AS outcome_key_column,
               m.predicted_at_column::text AS predicted_at_column, m.predicted_column::text AS predicted_column,
               m.segment_by::text[] AS segment_by, m.weight_column::text AS weight_column,
               m.actual_column::text AS actual_column, m.label_kind AS label_kind, m.dedup = 'first' AS first,
               CASE WHEN pg_catalog.date_part('month', m.bucket) = 0 AND pg_catalog.date_part('year', m.bucket) = 0
                    THEN (EXTRACT(epoch FROM m.bucket) * 1000000)::bigint END AS bucket_stride,
               (EXTRACT(epoch FROM mlmon._bucket_origin() - '2000-01-01 00:00:00+00'::timestamptz) * 1000000)::bigint
                   AS bucket_origin,
               mlmon._bulk_capable(m) AS integer_key,
               mlmon._statement_capable(m) AND NOT mlmon._bulk_capable(m) AS text_key,
               m.key_type::regtype::text AS key_type,
               mlmon._keys_table(m) AS keys_table, mlmon._rollup_table(m) AS rollup_table,
               mlmon._claims_table(m) AS claims_table, mlmon._claims_table(m)::regclass::oid::bigint AS claims_oid,
               mlmon._bulk_lock_id(m) AS lock_id,
               mlmon._unique_key(m.predictions, m.key_column) AS unique_key,
               mlmon._unique_key(m.outcomes, m.outcome_key_column) AS unique_outcome_key
        FROM mlmon.monitor m WHERE m.name = $1) r";

/// Raises an SPI failure of the native write path.
pub fn spi_error(e: pgrx::spi::SpiError) -> ! {
    pgrx::error!("mlmon insert trigger: {e}")
}

impl Monitor {
    /// The monitor named `name`, if there is one (and its owner still exists).
    pub fn load(client: &SpiClient<'_>, name: &str) -> Option<Monitor> {
        let rows = client.select(LOAD, Some(1), &[name.into()]).unwrap_or_else(|e| spi_error(e));
        let json = rows.first().get::<String>(1).ok().flatten()?;
        let row: Row = serde_json::from_str(&json).unwrap_or_else(|e| pgrx::error!("mlmon: unreadable monitor row: {e}"));
        Some(Monitor {
            name: name.to_owned(),
            predictions: pg_sys::Oid::from(row.predictions),
            outcomes: pg_sys::Oid::from(row.outcomes),
            owner: pg_sys::Oid::from(row.owner?),
            key_column: row.key_column,
            outcome_key_column: row.outcome_key_column,
            predicted_at_column: row.predicted_at_column,
            predicted_column: row.predicted_column,
            segment_by: row.segment_by,
            weight_column: row.weight_column,
            actual_column: row.actual_column,
            label_kind: row.label_kind,
            first: row.first,
            buckets: Buckets { stride: row.bucket_stride.filter(|&u| u > 0), origin: row.bucket_origin },
            integer_key: row.integer_key,
            text_key: row.text_key,
            key_type: row.key_type,
            keys_table: row.keys_table,
            rollup_table: row.rollup_table,
            claims_table: row.claims_table,
            claims_oid: pg_sys::Oid::from(row.claims_oid),
            lock_id: row.lock_id,
            unique_key: row.unique_key,
            unique_outcome_key: row.unique_outcome_key,
        })
    }
}
