//! `mysql`, `mariadb` and `planetscale` drivers: one [`SqlBackend`](crate::sinks::sql::SqlBackend)
//! over a sqlx MySQL pool, driven by the shared [`SqlSink`]. PlanetScale speaks the MySQL
//! protocol over TLS (verified by default).

mod backend;
mod config;
mod retry;
mod values;

use std::sync::Arc;

pub use backend::MySqlBackend;
pub use config::{MySqlConfig, PlanetScaleConfig};
pub use retry::classify;

use crate::error::ConfigError;
use crate::sinks::postgres::pool_options;
use crate::sinks::sql::{KeyColumns, SqlSink};
use crate::sinks::Sink;

fn sink(
    options: sqlx::mysql::MySqlConnectOptions,
    limit: u32,
    timeout_ms: u64,
    config: (&crate::sinks::sql::SchemaSyncConfig, &Option<String>),
    keys: KeyColumns,
) -> Arc<dyn Sink> {
    let pool = pool_options::<sqlx::MySql>(limit, timeout_ms).connect_lazy_with(options);
    Arc::new(
        SqlSink::new(MySqlBackend::new(pool), config.0.clone(), config.1.clone()).with_keys(keys),
    )
}

/// Builds a `mysql` / `mariadb` sink. The pool connects lazily: an unreachable server fails
/// writes (retryably) and the healthcheck, never the build.
pub fn build(config: &MySqlConfig, keys: KeyColumns) -> Result<Arc<dyn Sink>, ConfigError> {
    Ok(sink(
        config.connect_options()?,
        config.connection_limit,
        config.connect_timeout,
        (&config.schema_sync, &config.log_table),
        keys,
    ))
}

/// Builds a `planetscale` sink (lazily connected, like [`build`]).
pub fn build_planetscale(
    config: &PlanetScaleConfig,
    keys: KeyColumns,
) -> Result<Arc<dyn Sink>, ConfigError> {
    Ok(sink(
        config.connect_options()?,
        config.connection_limit,
        config.connect_timeout,
        (&config.schema_sync, &config.log_table),
        keys,
    ))
}
