//! `postgresql` (alias `postgres`) driver: a [`SqlBackend`](crate::sinks::sql::SqlBackend) over
//! a sqlx connection pool, driven by the shared [`SqlSink`] (schema sync, column cache,
//! per-record failures). Each batch is one transaction of set-based statements.

mod backend;
mod config;
mod retry;

use std::sync::Arc;

pub use backend::PgBackend;
pub use config::{Pem, PostgresConfig, Ssl, TlsOptions};
pub use retry::classify;

pub(crate) use backend::{group_rows, log_resource_column, pool_options, split_table, ColumnIndex};
pub(crate) use config::{
    check_connect_timeout, check_connection_limit, check_log_table, check_port,
    default_connect_timeout, default_connection_limit, schema_sync_json,
};
pub(crate) use retry::classify_client;

use crate::error::ConfigError;
use crate::sinks::sql::{KeyColumns, SqlSink};
use crate::sinks::Sink;

/// Builds the sink. The pool connects lazily: an unreachable server fails writes (retryably)
/// and the healthcheck, never the build.
pub fn build(config: &PostgresConfig, keys: KeyColumns) -> Result<Arc<dyn Sink>, ConfigError> {
    let options = config.connect_options()?;
    let pool =
        pool_options::<sqlx::Postgres>(config.connection_limit, config.connection_timeout_millis)
            .connect_lazy_with(options);
    Ok(Arc::new(
        SqlSink::new(
            PgBackend::new(pool),
            config.schema_sync.clone(),
            config.log_table.clone(),
        )
        .with_keys(keys),
    ))
}
