//! What every SQL destination shares: the `schemaSync` options and their strategies, the
//! write plan (one upsert and one delete per table and batch), the column cache, and the
//! generic [`SqlSink`] that drives a dialect-specific [`SqlBackend`].

mod backend;
mod plan;
mod schema_sync;
mod sink;

pub(crate) use backend::connect_error;
pub use backend::{SqlBackend, TableColumns};
pub use plan::{plan_batch, LogRow, TableWrite, WritePlan};
pub use schema_sync::{OnMismatch, SchemaStrategy, SchemaSyncConfig};
pub use sink::{key_columns, KeyColumns, SqlSink};
