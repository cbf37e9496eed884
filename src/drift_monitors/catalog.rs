//! A drift monitor's definition as the native code needs it, read from
//! `mlmon.drift_monitor` and `mlmon.drift_column` by one query, and its
//! category dictionary.

use std::collections::HashMap;

use mlmon_core::drift_monitors::state::{CategoricalState, ColumnState, DriftState, NumericState};
use mlmon_core::fast_hash::FastMap;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde::Deserialize;

use crate::pg::errors::raise_coded;
use crate::pg::session::{as_user, is_current_transaction};

#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Numeric,
    Categorical,
}

#[derive(Debug, Deserialize)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
    /// Numeric columns: e0 < ... < ek.
    pub edges: Option<Vec<f64>>,
}

impl Column {
    pub fn edges(&self) -> &[f64] {
        self.edges.as_deref().unwrap_or(&[])
    }
}

#[derive(Debug, Deserialize)]
pub struct DriftMonitor {
    pub name: String,
    pub source: u32,
    pub owner: Option<u32>,
    pub time_column: String,
    pub time_kind: String,
    pub segment_by: Vec<String>,
    /// Bucket width and origin in microseconds (origin since 2000-01-01 UTC).
    pub bucket_stride: i64,
    pub bucket_origin: i64,
    pub max_categories: i64,
    pub states_table: String,
    pub categories_table: String,
    pub lock_id: i64,
    pub columns: Vec<Column>,
}

const LOAD: &str = "
    SELECT pg_catalog.row_to_json(r)::text FROM (
        SELECT m.name, m.source::oid::bigint AS source,
               (SELECT o.oid::bigint FROM pg_catalog.pg_roles o WHERE o.rolname = m.owner) AS owner,
               m.time_column::text AS time_column, m.time_kind, m.segment_by::text[] AS segment_by,
               (EXTRACT(epoch FROM m.bucket) * 1000000)::bigint AS bucket_stride,
               (EXTRACT(epoch FROM mlmon._bucket_origin() - '2000-01-01 00:00:00+00'::timestamptz) * 1000000)::bigint
                   AS bucket_origin,
               m.max_categories::bigint AS max_categories,
               mlmon._drift_states_table(m) AS states_table, mlmon._drift_categories_table(m) AS categories_table,
               pg_catalog.hashtextextended('mlmon drift monitor ' || m.name, 0) AS lock_id,
               (SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object('name', c.column_name::text, 'kind', c.kind,
                                                                                  'edges', c.edges) ORDER BY c.position), '[]')
                FROM mlmon.drift_column c WHERE c.monitor = m.name) AS columns
        FROM mlmon.drift_monitor m WHERE m.name = $1) r";

pub fn spi_error(e: pgrx::spi::SpiError) -> ! {
    pgrx::error!("mlmon drift monitor: {e}")
}

impl DriftMonitor {
    /// The drift monitor named `name`; raises 42704 if there is none.
    pub fn load(client: &SpiClient<'_>, name: &str) -> DriftMonitor {
        let rows = client.select(LOAD, Some(1), &[name.into()]).unwrap_or_else(|e| spi_error(e));
        let Some(json) = rows.first().get::<String>(1).ok().flatten() else {
            raise_coded(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("drift monitor \"{name}\" does not exist"),
                "argument monitor: see SELECT name FROM mlmon.drift_monitors",
            );
        };
        let monitor: DriftMonitor =
            serde_json::from_str(&json).unwrap_or_else(|e| pgrx::error!("mlmon: unreadable drift monitor row: {e}"));
        if monitor.columns.is_empty() {
            // Its columns' rows (bin edges: quantiles of the table) are
            // visible to the owner's members and mlmon_reader only.
            raise_coded(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for drift monitor \"{name}\""),
                "argument monitor: its reads are for members of its owner role and of mlmon_reader",
            );
        }
        monitor
    }

    /// The monitor named `name`, read as its owner (whose rows the owner may
    /// see whoever calls) with a pinned search path.
    pub fn load_as_owner(client: &SpiClient<'_>, name: &str) -> DriftMonitor {
        const OWNER: &str = "SELECT o.oid::bigint FROM mlmon.drift_monitor m JOIN pg_catalog.pg_roles o ON o.rolname = m.owner
                             WHERE m.name = $1";
        let owner = as_user(pg_sys::Oid::INVALID, || {
            client.select(OWNER, Some(1), &[name.into()]).unwrap_or_else(|e| spi_error(e)).first().get::<i64>(1).ok().flatten()
        });
        match owner {
            Some(owner) => as_user(pg_sys::Oid::from(owner as u32), || DriftMonitor::load(client, name)),
            // No such monitor (or its owner is gone): load's own error.
            None => as_user(pg_sys::Oid::INVALID, || DriftMonitor::load(client, name)),
        }
    }

    pub fn owner(&self) -> pg_sys::Oid {
        match self.owner {
            Some(o) => pg_sys::Oid::from(o),
            None => pgrx::error!("the owner of drift monitor \"{}\" no longer exists", self.name),
        }
    }

    /// A state of the monitor's shape with nothing counted: the write
    /// path's new groups, and the reads' periods without rows.
    pub fn empty_state(&self) -> DriftState {
        DriftState {
            columns: self
                .columns
                .iter()
                .map(|c| match c.kind {
                    Kind::Numeric => ColumnState::Numeric(NumericState::new(c.edges().len())),
                    Kind::Categorical => ColumnState::Categorical(CategoricalState::default()),
                })
                .collect(),
        }
    }

    /// The position of a column by name; raises 42703 if the monitor does not watch it.
    pub fn column_position(&self, column: &str) -> usize {
        self.columns.iter().position(|c| c.name == column).unwrap_or_else(|| {
            raise_coded(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("drift monitor \"{}\" does not watch a column \"{column}\"", self.name),
                "argument column_name: one of the monitor's columns (mlmon.drift_monitors.columns)",
            )
        })
    }
}

/// Category ids by column position and category, and names by id.
#[derive(Default)]
pub struct Dictionary {
    /// Looked up once per categorical value written: FxHash, the maps are
    /// bounded by max_categories.
    ids: Vec<FastMap<String, u32>>,
    names: HashMap<u32, String>,
}

impl Dictionary {
    /// Every category of the monitor's dictionary; with `committed_only`,
    /// those inserted by the current transaction (which may yet roll back)
    /// are left out.
    pub fn load(client: &SpiClient<'_>, monitor: &DriftMonitor, committed_only: bool) -> Dictionary {
        let sql = format!("SELECT position, category, id, xmin::text::bigint FROM {}", monitor.categories_table);
        let rows = client.select(&sql, None, &[]).unwrap_or_else(|e| spi_error(e));
        let mut dictionary = Dictionary::default();
        for row in rows {
            let (Ok(Some(position)), Ok(Some(category)), Ok(Some(id)), Ok(Some(xmin))) =
                (row.get::<i32>(1), row.get::<String>(2), row.get::<i32>(3), row.get::<i64>(4))
            else {
                continue;
            };
            if committed_only && is_current_transaction(xmin) {
                continue;
            }
            dictionary.insert(position as usize, category, id as u32);
        }
        dictionary
    }

    pub fn insert(&mut self, position: usize, category: String, id: u32) {
        if self.ids.len() <= position {
            self.ids.resize_with(position + 1, FastMap::default);
        }
        self.names.insert(id, category.clone());
        self.ids[position].insert(category, id);
    }

    pub fn id(&self, position: usize, category: &str) -> Option<u32> {
        self.ids.get(position).and_then(|m| m.get(category)).copied()
    }

    pub fn name(&self, id: u32) -> String {
        self.names.get(&id).cloned().unwrap_or_else(|| format!("#{id}"))
    }
}
