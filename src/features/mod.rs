//! Point-in-time features: feature views over the user's tables, read
//! online (`feature_at`, `latest_features`) and joined as of each row of a
//! spine (`build_training_set`). `README.md` beside this file walks both
//! paths end to end.
//!
//! The definitions, the checked SQL paths and the generated readers are SQL
//! (`sql/features/`); this module holds the native parts:
//! - `online_read.rs`, `readers.rs`: the online read by a cached reader;
//! - `probe.rs`: the walk of a view's (entity, event_time) index;
//! - `training_set/`: the fill of a training set from a sorted spine, with
//!   a parallel helper.

use pgrx::prelude::*;

extension_sql_file!("../../sql/features/catalog.sql", name = "features_catalog_sql", requires = ["monitors_lifecycle_sql"]);
extension_sql_file!("../../sql/features/point_in_time.sql", name = "features_point_in_time_sql", requires = ["features_catalog_sql"]);
extension_sql_file!("../../sql/features/online.sql", name = "features_online_sql", requires = ["features_point_in_time_sql"]);
extension_sql_file!("../../sql/features/training_set.sql", name = "features_training_set_sql", requires = ["features_online_sql"]);

mod online_read;
mod probe;
mod readers;
mod training_set;
