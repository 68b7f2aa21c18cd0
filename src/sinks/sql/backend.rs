use std::collections::HashMap;

use async_trait::async_trait;

use super::plan::WritePlan;
use crate::error::SinkError;
use crate::schema::{Dialect, LiveColumn};

/// Live columns of the tables a plan touches: name → database type (lowercase).
pub type TableColumns = HashMap<String, HashMap<String, String>>;

/// One SQL database: connection pool, catalog queries and the dialect's write statements.
/// Errors are classified by the backend (`retry.rs` of each driver): connection and timeout
/// errors retryable, constraint and type errors permanent.
#[async_trait]
pub trait SqlBackend: Send + Sync + 'static {
    fn dialect(&self) -> Dialect;
    /// Round trip to the server.
    async fn ping(&self) -> Result<(), SinkError>;
    /// Columns of `table`, or `None` when it does not exist.
    async fn describe(&self, table: &str) -> Result<Option<Vec<LiveColumn>>, SinkError>;
    /// Runs one DDL statement built by `schema::ddl` (identifiers already quoted).
    async fn execute_ddl(&self, sql: &str) -> Result<(), SinkError>;
    /// Applies a plan in one transaction: for each table its upserts, then its deletes, then
    /// the audit rows of `logTable`. Values are bound parameters, never interpolated.
    /// `columns` holds the live column types of every table in the plan.
    async fn apply(&self, plan: &WritePlan, columns: &TableColumns) -> Result<(), SinkError>;
    async fn close(&self) {}
}
