//! Drift monitors: per time bucket, segment and column of any table, an
//! additive state of its input columns (histograms on the reference's
//! quantile edges, category counts), kept exact by a native statement
//! trigger; and the drift reports read from them. `docs/drift-monitors.md`
//! is the user's view; the math is `mlmon_core::drift_monitors`.
//!
//! - `catalog.rs`: a drift monitor's definition and category dictionary;
//! - `write_path.rs`: the statement trigger, the rebuild and compaction;
//! - `reads.rs`: sums of states and the reports behind `mlmon.drift`,
//!   `drift_metrics` and `drift_histogram`.
//!
//! The SQL surface is `sql/drift_monitors/`: catalog.sql (catalog tables
//! and internal functions), lifecycle.sql (create, rebuild, compact, drop),
//! reads.sql (the read functions), alerts.sql (alerts on drift metrics,
//! checked by mlmon.check_alerts).

use pgrx::prelude::*;

// After monitors' alerts: the catalog's policies use mlmon._manages.
extension_sql_file!("../../sql/drift_monitors/catalog.sql", name = "drift_catalog_sql", requires = ["monitor_alerts_sql"]);
extension_sql_file!("../../sql/drift_monitors/lifecycle.sql", name = "drift_lifecycle_sql", requires = ["drift_catalog_sql"]);
extension_sql_file!("../../sql/drift_monitors/reads.sql", name = "drift_reads_sql", requires = ["drift_lifecycle_sql"]);
extension_sql_file!("../../sql/drift_monitors/alerts.sql", name = "drift_alerts_sql", requires = ["drift_reads_sql"]);

mod catalog;
mod reads;
mod write_path;
