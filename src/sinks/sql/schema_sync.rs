//! The spec's Schema Sync: strategies `alter | drop-create | validate-only` and the
//! `onMismatch` behaviours, run against any [`SqlBackend`].

use serde::Deserialize;

use super::backend::SqlBackend;
use crate::error::SinkError;
use crate::schema::{self, Dialect, ResourceSchema, SchemaDiff};
use crate::sinks::SchemaEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaStrategy {
    /// Create missing tables, add missing columns; never drop data.
    Alter,
    /// Drop and recreate the table (loses its data).
    DropCreate,
    /// Check only; never modify the database.
    ValidateOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMismatch {
    /// Fail initialisation.
    Error,
    /// Emit a `schema_mismatch` event and continue.
    Warn,
    Ignore,
}

const fn yes() -> bool {
    true
}
const fn default_strategy() -> SchemaStrategy {
    SchemaStrategy::Alter
}
const fn default_on_mismatch() -> OnMismatch {
    OnMismatch::Error
}

/// `config.schemaSync` of the SQL drivers (the spec's table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SchemaSyncConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_strategy")]
    pub strategy: SchemaStrategy,
    #[serde(default = "default_on_mismatch")]
    pub on_mismatch: OnMismatch,
    #[serde(default = "yes")]
    pub auto_create_table: bool,
    #[serde(default = "yes")]
    pub auto_create_columns: bool,
    #[serde(default)]
    pub drop_missing_columns: bool,
}

impl Default for SchemaSyncConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            strategy: SchemaStrategy::Alter,
            on_mismatch: OnMismatch::Error,
            auto_create_table: true,
            auto_create_columns: true,
            drop_missing_columns: false,
        }
    }
}

impl SchemaSyncConfig {
    /// Whether the write path may create tables and add columns it meets.
    pub fn evolves(&self) -> bool {
        self.enabled && self.strategy != SchemaStrategy::ValidateOnly
    }
}

fn ddl_err(e: String) -> SinkError {
    SinkError::permanent(format!("schema sync: {e}"))
}

/// Syncs one table with a resource schema according to `cfg`.
pub async fn sync_table(
    backend: &dyn SqlBackend,
    cfg: &SchemaSyncConfig,
    table: &str,
    schema: &ResourceSchema,
) -> Result<Vec<SchemaEvent>, SinkError> {
    if !cfg.enabled {
        return Ok(Vec::new());
    }
    let d = backend.dialect();
    let names = || {
        schema
            .attributes
            .iter()
            .map(|a| a.name.clone())
            .collect::<Vec<_>>()
    };
    let live = backend.describe(table).await?;
    if cfg.strategy == SchemaStrategy::DropCreate {
        let existed = live.is_some();
        if existed {
            backend.execute_ddl(&schema::drop_table(d, table)).await?;
        }
        backend
            .execute_ddl(&schema::create_table(d, table, schema).map_err(ddl_err)?)
            .await?;
        return Ok(vec![if existed {
            SchemaEvent::TableRecreated {
                table_name: table.to_string(),
            }
        } else {
            SchemaEvent::TableCreated {
                table_name: table.to_string(),
                attributes: names(),
            }
        }]);
    }
    let Some(live) = live else {
        if cfg.strategy == SchemaStrategy::Alter && cfg.auto_create_table {
            backend
                .execute_ddl(&schema::create_table(d, table, schema).map_err(ddl_err)?)
                .await?;
            return Ok(vec![SchemaEvent::TableCreated {
                table_name: table.to_string(),
                attributes: names(),
            }]);
        }
        return mismatch(cfg, table, "the table does not exist".into());
    };
    let diff = schema::diff(d, schema, &live);
    let mut events = Vec::new();
    match cfg.strategy {
        SchemaStrategy::ValidateOnly => {
            let relevant = SchemaDiff {
                extra: Vec::new(),
                ..diff
            };
            if !relevant.is_empty() {
                events.extend(mismatch(cfg, table, relevant.describe())?);
            }
        }
        SchemaStrategy::Alter => {
            let mut added = Vec::new();
            let mut dropped = Vec::new();
            if !diff.missing.is_empty() {
                if cfg.auto_create_columns {
                    for (col, ty) in &diff.missing {
                        backend
                            .execute_ddl(&schema::add_column(d, table, col, ty).map_err(ddl_err)?)
                            .await?;
                        added.push(col.clone());
                    }
                } else {
                    let only_missing = SchemaDiff {
                        missing: diff.missing.clone(),
                        ..SchemaDiff::default()
                    };
                    events.extend(mismatch(cfg, table, only_missing.describe())?);
                }
            }
            if cfg.drop_missing_columns {
                for col in &diff.extra {
                    backend
                        .execute_ddl(&schema::drop_column(d, table, col))
                        .await?;
                    dropped.push(col.clone());
                }
            }
            if !added.is_empty() || !dropped.is_empty() {
                events.push(SchemaEvent::TableAltered {
                    table_name: table.to_string(),
                    added_columns: added,
                    dropped_columns: dropped,
                });
            }
            if !diff.mismatched.is_empty() {
                // Column types are never changed in place (that could lose data).
                let only_types = SchemaDiff {
                    mismatched: diff.mismatched.clone(),
                    ..SchemaDiff::default()
                };
                events.extend(mismatch(cfg, table, only_types.describe())?);
            }
        }
        // Handled (and returned) before the match.
        SchemaStrategy::DropCreate => {}
    }
    Ok(events)
}

fn mismatch(
    cfg: &SchemaSyncConfig,
    table: &str,
    what: String,
) -> Result<Vec<SchemaEvent>, SinkError> {
    cfg.report_mismatch("table", table, what)
}

impl SchemaSyncConfig {
    /// What `onMismatch` makes of a schema mismatch of `table` (`kind` names it in the error,
    /// e.g. "table", "BigQuery table"): an error, a `schema_mismatch` event, or nothing.
    pub fn report_mismatch(
        &self,
        kind: &str,
        table: &str,
        what: String,
    ) -> Result<Vec<SchemaEvent>, SinkError> {
        match self.on_mismatch {
            OnMismatch::Error => Err(SinkError::schema_mismatch(format!(
                "schema mismatch for {kind} '{table}': {what}. Fix the table, use schemaSync.strategy 'alter', or set schemaSync.onMismatch to 'warn'"
            ))),
            OnMismatch::Warn => Ok(vec![SchemaEvent::SchemaMismatch { table_name: table.to_string(), message: what }]),
            OnMismatch::Ignore => Ok(Vec::new()),
        }
    }
}

/// Identifier check shared by the write path.
pub(super) fn check_ident(name: &str) -> Result<(), SinkError> {
    Dialect::validate_ident(name).map_err(SinkError::permanent)
}
