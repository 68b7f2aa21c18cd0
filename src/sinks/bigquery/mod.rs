//! `bigquery`: streaming inserts (`insertId` = the change identity) for append-only and
//! immutable tables, with the spec's tracking fields (`_version` from the change's outbox
//! position, so it keeps increasing across restarts); one `MERGE` by id per batch for mutable
//! tables; schema sync with BigQuery's types. REST API over reqwest, Google auth by `gcp_auth`.

mod config;
mod rows;
mod sink;

pub(crate) use config::table_modes;
pub use config::BigQueryConfig;
pub(crate) use sink::BigQuerySink;
