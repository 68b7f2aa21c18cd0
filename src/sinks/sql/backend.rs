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
    /// Why a fresh connection to the server fails, if it does: a pool that timed out waiting
    /// for a connection does not say (connection refused? bad password?), this does.
    async fn connect_error(&self) -> Option<String> {
        None
    }
}

/// Opens (and closes) one connection outside the pool, with a short deadline, and returns why
/// it failed, credentials redacted; `None` when it succeeds.
pub(crate) async fn connect_error<O>(options: &O) -> Option<String>
where
    O: sqlx::ConnectOptions,
    O::Connection: Sized,
{
    use sqlx::Connection;
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
    match tokio::time::timeout(DEADLINE, options.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            None
        }
        Ok(Err(e)) => Some(crate::error::redact(&e.to_string())),
        Err(_) => Some(format!(
            "connecting took longer than {} s",
            DEADLINE.as_secs()
        )),
    }
}
