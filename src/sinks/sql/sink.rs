//! The generic SQL sink: column cache, schema evolution on write, per-record failures for rows
//! a table cannot take, then one transaction per batch through the backend.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::backend::{SqlBackend, TableColumns};
use super::plan::plan_batch;
use super::schema_sync::{check_ident, sync_table, SchemaSyncConfig};
use crate::error::SinkError;
use crate::event::{Change, Op};
use crate::schema::{self, Dialect, ResourceSchema};
use crate::sinks::{BatchOutcome, SchemaEvent, Sink};

pub struct SqlSink<B: SqlBackend> {
    backend: B,
    schema_sync: SchemaSyncConfig,
    log_table: Option<String>,
    /// table → (column → type); `None` while a table does not exist (looked up again next time).
    columns: Mutex<HashMap<String, Option<HashMap<String, String>>>>,
    log_ready: Mutex<bool>,
}

impl<B: SqlBackend> SqlSink<B> {
    pub fn new(backend: B, schema_sync: SchemaSyncConfig, log_table: Option<String>) -> Self {
        Self {
            backend,
            schema_sync,
            log_table,
            columns: Mutex::new(HashMap::new()),
            log_ready: Mutex::new(false),
        }
    }

    async fn refresh(&self, table: &str) -> Result<Option<HashMap<String, String>>, SinkError> {
        let live = self.backend.describe(table).await?;
        let cols = live.map(|cols| {
            cols.into_iter()
                .map(|c| (c.name, c.data_type.to_ascii_lowercase()))
                .collect::<HashMap<_, _>>()
        });
        self.columns
            .lock()
            .await
            .insert(table.to_string(), cols.clone());
        Ok(cols)
    }

    async fn columns_of(&self, table: &str) -> Result<Option<HashMap<String, String>>, SinkError> {
        if let Some(c) = self.columns.lock().await.get(table) {
            if c.is_some() {
                return Ok(c.clone());
            }
        }
        self.refresh(table).await
    }

    async fn ensure_log_table(&self) -> Result<(), SinkError> {
        let Some(log) = &self.log_table else {
            return Ok(());
        };
        let mut ready = self.log_ready.lock().await;
        if !*ready {
            let ddl = schema::log_table(self.backend.dialect(), log)
                .map_err(|e| SinkError::permanent(format!("logTable: {e}")))?;
            self.backend.execute_ddl(&ddl).await?;
            *ready = true;
        }
        Ok(())
    }

    /// Makes sure `table` can take the rows: creates it / adds columns when schema sync allows,
    /// otherwise returns the permanent error each offending change gets.
    async fn prepare_table(
        &self,
        table: &str,
        changes: &[(usize, &Change)],
    ) -> Result<(HashMap<String, String>, Vec<(usize, SinkError)>), SinkError> {
        let d = self.backend.dialect();
        let mut cols = match self.columns_of(table).await? {
            Some(c) => c,
            None if self.schema_sync.evolves() && self.schema_sync.auto_create_table => {
                let schema = inferred_schema(changes.iter().map(|(_, c)| *c));
                let ddl = schema::create_table(d, table, &schema).map_err(SinkError::permanent)?;
                self.backend.execute_ddl(&ddl).await?;
                tracing::info!(message = "Created destination table.", table);
                self.refresh(table).await?.unwrap_or_default()
            }
            None => {
                let e = SinkError::permanent(format!(
                    "table '{table}' does not exist; create it, or enable schemaSync to have it created"
                ));
                return Ok((
                    HashMap::new(),
                    changes.iter().map(|(i, _)| (*i, e.clone())).collect(),
                ));
            }
        };
        // Columns the rows have and the table lacks.
        let mut unknown: Vec<(String, serde_json::Value)> = Vec::new();
        for (_, c) in changes.iter().filter(|(_, c)| c.op != Op::Deleted) {
            for (k, v) in c.data.as_object().into_iter().flatten() {
                if !has_column(&cols, k) && !unknown.iter().any(|(u, _)| u == k) {
                    unknown.push((k.clone(), v.clone()));
                }
            }
        }
        let mut failed = Vec::new();
        if !unknown.is_empty() {
            if self.schema_sync.evolves() && self.schema_sync.auto_create_columns {
                for (name, sample) in &unknown {
                    let attr = schema::infer_attribute(name, sample);
                    let ddl = schema::add_column(d, table, name, &d.column_type(&attr))
                        .map_err(SinkError::permanent)?;
                    self.backend.execute_ddl(&ddl).await?;
                }
                cols = self.refresh(table).await?.unwrap_or_default();
            } else {
                for (i, c) in changes.iter().filter(|(_, c)| c.op != Op::Deleted) {
                    let missing: Vec<&str> = c
                        .data
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k.as_str())
                        .filter(|k| !has_column(&cols, k))
                        .collect();
                    if !missing.is_empty() {
                        failed.push((
                            *i,
                            SinkError::permanent(format!(
                                "table '{table}' has no column {}; add it, or enable schemaSync (strategy 'alter') to have it added",
                                missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", ")
                            )),
                        ));
                    }
                }
            }
        }
        Ok((cols, failed))
    }
}

/// Whether the table has a column for field `name` (databases match names case-insensitively).
fn has_column(cols: &HashMap<String, String>, name: &str) -> bool {
    cols.keys().any(|col| col.eq_ignore_ascii_case(name))
}

/// The attributes a table created on the write path gets, from the rows' values.
fn inferred_schema<'a>(changes: impl Iterator<Item = &'a Change>) -> ResourceSchema {
    let mut attributes: Vec<schema::Attribute> = Vec::new();
    for c in changes {
        for (k, v) in c.data.as_object().into_iter().flatten() {
            if k != "id" && !v.is_null() && !attributes.iter().any(|a| &a.name == k) {
                attributes.push(schema::infer_attribute(k, v));
            }
        }
    }
    ResourceSchema { attributes }
}

#[async_trait]
impl<B: SqlBackend> Sink for SqlSink<B> {
    async fn healthcheck(&self) -> Result<(), SinkError> {
        self.backend.ping().await
    }

    async fn sync_schema(
        &self,
        table: &str,
        schema: &ResourceSchema,
    ) -> Result<Vec<SchemaEvent>, SinkError> {
        check_ident(table)?;
        self.ensure_log_table().await?;
        let events = sync_table(&self.backend, &self.schema_sync, table, schema).await?;
        self.refresh(table).await?;
        Ok(events)
    }

    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        self.ensure_log_table().await?;
        let mut failed: Vec<(usize, SinkError)> = Vec::new();
        let mut by_table: Vec<(String, Vec<(usize, &Change)>)> = Vec::new();
        for (i, c) in batch.iter().enumerate() {
            let bad_key = c
                .data
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
                .find(|k| Dialect::validate_ident(k).is_err());
            if let Err(e) = check_ident(&c.dest) {
                failed.push((i, e));
            } else if let Some(k) = bad_key {
                failed.push((
                    i,
                    SinkError::permanent(format!("field {k:?} cannot be a column name")),
                ));
            } else {
                match by_table.iter_mut().find(|(t, _)| t == &c.dest) {
                    Some((_, v)) => v.push((i, c)),
                    None => by_table.push((c.dest.clone(), vec![(i, c)])),
                }
            }
        }
        let mut columns: TableColumns = HashMap::new();
        for (table, changes) in &by_table {
            let (cols, bad) = self.prepare_table(table, changes).await?;
            failed.extend(bad);
            columns.insert(table.clone(), cols);
        }
        let ok: Vec<&Change> = batch
            .iter()
            .enumerate()
            .filter(|(i, _)| !failed.iter().any(|(f, _)| f == i))
            .map(|(_, c)| c)
            .collect();
        if !ok.is_empty() {
            let plan = plan_batch(&ok, self.log_table.as_deref());
            if let Err(e) = self.backend.apply(&plan, &columns).await {
                // The table may have changed behind our back (a column or table dropped): look
                // it up again on the next attempt instead of failing forever from the cache.
                let mut cache = self.columns.lock().await;
                for (table, _) in &by_table {
                    cache.remove(table);
                }
                drop(cache);
                if failed.is_empty() {
                    return Err(e);
                }
                let done: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
                failed.extend(
                    (0..batch.len())
                        .filter(|i| !done.contains(i))
                        .map(|i| (i, e.clone())),
                );
            }
        }
        if failed.is_empty() {
            return Ok(BatchOutcome::Delivered);
        }
        failed.sort_by_key(|(i, _)| *i);
        Ok(BatchOutcome::Partial(failed))
    }

    async fn close(&self) {
        self.backend.close().await;
    }
}
