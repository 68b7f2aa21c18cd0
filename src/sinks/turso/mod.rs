//! `turso` driver: Turso, a libSQL server (`sqld`) or a local libSQL file, as a SQL backend of
//! the shared SQL sink (schema sync, one transaction per batch, per-record failures).

mod backend;
mod config;
mod retry;

use std::sync::Arc;

pub use backend::TursoBackend;
pub use config::{Target, TursoConfig};

use crate::error::ConfigError;
use crate::sinks::sql::{KeyColumns, SqlSink};
use crate::sinks::Sink;

/// Builds the sink of a validated configuration. Touches neither the network nor the file:
/// the connection opens on first use (a healthcheck, a schema sync or a write).
pub fn build(config: &TursoConfig, keys: KeyColumns) -> Result<Arc<dyn Sink>, ConfigError> {
    let backend = TursoBackend::new(config)?;
    Ok(Arc::new(
        SqlSink::new(
            backend,
            config.schema_sync.clone(),
            config.log_table.clone(),
        )
        .with_keys(keys),
    ))
}
