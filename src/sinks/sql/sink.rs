//! The generic SQL sink: column cache, schema evolution on write, per-record failures for rows
//! a table cannot take, then one transaction per batch through the backend.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::backend::{SqlBackend, TableColumns};
use super::plan::plan_batch;
use super::schema_sync::{check_ident, sync_table, SchemaSyncConfig};
use crate::error::{ConfigError, SinkError};
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
    /// Schema syncs that could not run when asked (destination down): table → schema. Each
    /// runs before the next write to its table.
    deferred: Mutex<HashMap<String, ResourceSchema>>,
    /// Tables whose key column is not `id` (a destination's `primaryKey`).
    keys: KeyColumns,
}

/// Destination table → its key column, for the tables whose key is not `id`.
pub type KeyColumns = HashMap<String, String>;

/// The `primaryKey` of each destination (`{ users: { table: 'orders', primaryKey: 'order_id' } }`),
/// checked: a valid column name, one per table.
pub fn key_columns(routes: &[crate::config::Route]) -> Result<KeyColumns, ConfigError> {
    let mut keys = KeyColumns::new();
    for r in routes {
        let at = format!("resources.{}.primaryKey", r.source);
        let key = match r.options.get("primaryKey") {
            None | Some(serde_json::Value::Null) => "id",
            Some(serde_json::Value::String(k)) => k.as_str(),
            Some(other) => {
                return Err(ConfigError::new(
                    at,
                    format!("expected a column name, got {other}"),
                    "name the table's key column, e.g. primaryKey: 'order_id'",
                ))
            }
        };
        Dialect::validate_ident(key).map_err(|e| {
            ConfigError::new(
                &at,
                e,
                "use a plain column name, e.g. primaryKey: 'order_id'",
            )
        })?;
        let previous = keys.get(&r.dest).map_or("id", String::as_str);
        if previous != key
            && routes.iter().any(|o| {
                o.dest == r.dest
                    && !std::ptr::eq(o, r)
                    && o.options
                        .get("primaryKey")
                        .and_then(|v| v.as_str())
                        .unwrap_or("id")
                        != key
            })
        {
            return Err(ConfigError::new(
                at,
                format!(
                    "table '{}' is given two key columns ('{previous}' and '{key}')",
                    r.dest
                ),
                "give every route to one table the same primaryKey",
            ));
        }
        if key != "id" {
            keys.insert(r.dest.clone(), key.to_string());
        }
    }
    Ok(keys)
}

impl<B: SqlBackend> SqlSink<B> {
    pub fn new(backend: B, schema_sync: SchemaSyncConfig, log_table: Option<String>) -> Self {
        Self {
            backend,
            schema_sync,
            log_table,
            columns: Mutex::new(HashMap::new()),
            log_ready: Mutex::new(false),
            deferred: Mutex::new(HashMap::new()),
            keys: KeyColumns::new(),
        }
    }

    /// Tables whose key column is not `id` (validated by [`key_columns`]).
    pub fn with_keys(mut self, keys: KeyColumns) -> Self {
        self.keys = keys;
        self
    }

    fn key_of(&self, table: &str) -> &str {
        self.keys.get(table).map_or("id", String::as_str)
    }

    /// The schema with this table's key column.
    fn keyed(&self, table: &str, schema: &ResourceSchema) -> ResourceSchema {
        ResourceSchema {
            key: self.keys.get(table).cloned(),
            ..schema.clone()
        }
    }

    /// A pool that timed out waiting for a connection hides why: add the real cause.
    async fn explained(&self, mut e: SinkError) -> SinkError {
        if e.is_retryable() && e.message.contains("pool timed out") {
            if let Some(cause) = self.backend.connect_error().await {
                e.message = format!("{}; connecting failed: {cause}", e.message);
            }
        }
        e
    }

    async fn sync_now(
        &self,
        table: &str,
        schema: &ResourceSchema,
    ) -> Result<Vec<SchemaEvent>, SinkError> {
        self.ensure_log_table().await?;
        let schema = self.keyed(table, schema);
        let events = sync_table(&self.backend, &self.schema_sync, table, &schema).await?;
        self.refresh(table).await?;
        Ok(events)
    }

    /// Runs the schema syncs deferred for these tables. A mismatch fails the table's changes
    /// (returned per table); any other error fails the whole write (retried).
    async fn run_deferred(
        &self,
        tables: impl Iterator<Item = &str>,
    ) -> Result<HashMap<String, SinkError>, SinkError> {
        let mut mismatched = HashMap::new();
        let mut deferred = self.deferred.lock().await;
        if deferred.is_empty() {
            return Ok(mismatched);
        }
        for table in tables {
            let Some(schema) = deferred.get(table).cloned() else {
                continue;
            };
            match self.sync_now(table, &schema).await {
                Ok(events) => {
                    tracing::info!(message = "Ran a deferred schema sync.", table, events = ?events);
                    deferred.remove(table);
                }
                Err(e) if e.schema_mismatch => {
                    mismatched.insert(table.to_string(), e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(mismatched)
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
            let d = self.backend.dialect();
            let ddl = schema::log_table(d, log)
                .map_err(|e| SinkError::permanent(format!("logTable: {e}")))?;
            self.backend.execute_ddl(&ddl).await?;
            // A log table made by an earlier version (or by the stock plugin) gets the column
            // of the change identity.
            let cols = self.backend.describe(log).await?.unwrap_or_default();
            if !cols
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(schema::LOG_CHANGE_ID))
            {
                let ddl = schema::add_column(
                    d,
                    log,
                    schema::LOG_CHANGE_ID,
                    schema::log_change_id_type(d),
                )
                .map_err(SinkError::permanent)?;
                self.backend.execute_ddl(&ddl).await?;
            }
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
                let schema = self.keyed(table, &inferred_schema(changes.iter().map(|(_, c)| *c)));
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
        // Columns the rows have and the table lacks. With another key column, the record's
        // `id` goes there (the row has no `id` field).
        let key = self.key_of(table);
        let is_id = |k: &str| key != "id" && k == "id";
        let mut unknown: Vec<(String, serde_json::Value)> = Vec::new();
        for (_, c) in changes.iter().filter(|(_, c)| c.op != Op::Deleted) {
            for (k, v) in c.data.as_object().into_iter().flatten() {
                if !has_column(&cols, k) && !is_id(k) && !unknown.iter().any(|(u, _)| u == k) {
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
                        .filter(|k| !has_column(&cols, k) && !is_id(k))
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
    ResourceSchema {
        attributes,
        key: None,
    }
}

#[async_trait]
impl<B: SqlBackend> Sink for SqlSink<B> {
    /// One statement (bulk write) per table carries a whole batch, chunked below the
    /// server's limits: a big batch costs about one round trip.
    fn prefers_bulk(&self) -> bool {
        true
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        match self.backend.ping().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explained(e).await),
        }
    }

    /// Without `schemaSync` nothing is asked of the database (the write path looks tables up
    /// itself). A destination that cannot be reached does not fail the sync: it is deferred to
    /// the first write of the table (`schema_sync_deferred`); only a mismatch fails it.
    async fn sync_schema(
        &self,
        table: &str,
        schema: &ResourceSchema,
    ) -> Result<Vec<SchemaEvent>, SinkError> {
        check_ident(table)?;
        if !self.schema_sync.enabled {
            return Ok(Vec::new());
        }
        match self.sync_now(table, schema).await {
            Ok(events) => {
                self.deferred.lock().await.remove(table);
                Ok(events)
            }
            Err(e) if e.schema_mismatch => Err(e),
            Err(e) => {
                let e = self.explained(e).await;
                self.deferred
                    .lock()
                    .await
                    .insert(table.to_string(), schema.clone());
                Ok(vec![SchemaEvent::SchemaSyncDeferred {
                    table_name: table.to_string(),
                    error: e.message,
                }])
            }
        }
    }

    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        match self.write(batch).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => Err(self.explained(e).await),
        }
    }

    async fn close(&self) {
        self.backend.close().await;
    }
}

impl<B: SqlBackend> SqlSink<B> {
    async fn write(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        self.ensure_log_table().await?;
        let mismatched = self
            .run_deferred(batch.iter().map(|c| c.dest.as_str()))
            .await?;
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
            } else if let Some(e) = mismatched.get(&c.dest) {
                failed.push((i, e.clone()));
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
            let plan = plan_batch(&ok, self.log_table.as_deref(), |t| self.key_of(t));
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
}
