//! The BigQuery sink, over the REST API. Append-only and immutable tables get every change as
//! a streaming-insert row (`tabledata.insertAll`, `insertId` = the change identity, at most 500
//! rows / 9 MB per request, `skipInvalidRows` so a refused row fails its change only). Mutable
//! tables get one `MERGE` by id per batch (the last state of each record), through
//! `jobs.query`; a statement refused as a whole is split per record to find the one at fault.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use serde_json::{json, Map, Value};
use tokio::sync::{Mutex, OnceCell};

use super::config::{check_column, BigQueryConfig, Mutability};
use super::rows::{
    field_of, history_row, insert_errors, insert_value, quote, record_fields, sql_literal, Field,
};
use crate::config::Route;
use crate::error::{redact, ConfigError, SinkError};
use crate::event::{Change, Op};
use crate::schema::{self, ResourceSchema};
use crate::sinks::sql::SchemaStrategy;
use crate::sinks::{BatchOutcome, SchemaEvent, Sink};

const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// Rows per `insertAll` request (Google recommends at most 500).
const MAX_ROWS: usize = 500;
/// Bytes per `insertAll` request (the limit is 10 MB).
const MAX_REQUEST_BYTES: usize = 9 * 1024 * 1024;
/// Characters per `MERGE` statement (the limit is 1024K).
const MAX_QUERY_CHARS: usize = 900 * 1024;
/// The wait before a DML statement refused because of the streaming buffer is tried again
/// (the spec's 30 s).
const STREAMING_BUFFER_DELAY: Duration = Duration::from_secs(30);
/// The source column of a `MERGE` that marks a delete.
const DELETE_FLAG: &str = "__s3db_deleted";

pub(crate) struct BigQuerySink {
    config: BigQueryConfig,
    modes: HashMap<String, Mutability>,
    http: reqwest::Client,
    base: String,
    auth: OnceCell<Option<Arc<dyn gcp_auth::TokenProvider>>>,
    /// Known table schemas (`tables.get`), by table.
    tables: Mutex<HashMap<String, Vec<Field>>>,
    /// Schema syncs that could not reach BigQuery, run before the table's next write.
    deferred: Mutex<HashMap<String, ResourceSchema>>,
    dataset_ready: OnceCell<()>,
    /// Serialises schema changes of this sink (lanes write concurrently): a column two lanes
    /// both meet is added once.
    ddl: Mutex<()>,
}

/// An HTTP answer: status and JSON body (`Null` when empty or not JSON).
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    fn message(&self) -> String {
        let m = self
            .body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}", self.status));
        redact(&m)
    }
    fn reason(&self) -> &str {
        self.body
            .pointer("/error/errors/0/reason")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl BigQuerySink {
    pub fn new(
        config: BigQueryConfig,
        routes: &[Route],
        timeout_ms: u64,
    ) -> Result<Self, ConfigError> {
        let modes = super::config::table_modes(routes, config.mutability)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms.max(1000)))
            .user_agent("s3db-replicator")
            .build()
            .map_err(|e| {
                ConfigError::new("", format!("HTTP client: {e}"), "report this as a bug")
            })?;
        Ok(Self {
            base: config.project_url(),
            config,
            modes,
            http,
            auth: OnceCell::new(),
            tables: Mutex::new(HashMap::new()),
            deferred: Mutex::new(HashMap::new()),
            dataset_ready: OnceCell::new(),
            ddl: Mutex::new(()),
        })
    }

    fn mode_of(&self, table: &str) -> Mutability {
        self.modes
            .get(table)
            .copied()
            .unwrap_or(self.config.mutability)
    }

    fn dataset_url(&self) -> String {
        format!("{}/datasets/{}", self.base, self.config.dataset_name)
    }

    fn table_url(&self, table: &str) -> String {
        format!("{}/tables/{table}", self.dataset_url())
    }

    fn table_path(&self, table: &str) -> String {
        format!(
            "`{}.{}.{table}`",
            self.config.project_id, self.config.dataset_name
        )
    }

    /// The token source: the key in `credentials`, none for an emulator `endpoint`, else
    /// Application Default Credentials.
    async fn provider(&self) -> Result<Option<Arc<dyn gcp_auth::TokenProvider>>, SinkError> {
        self.auth
            .get_or_try_init(|| async {
                if let Some(key) = &self.config.key {
                    let sa = gcp_auth::CustomServiceAccount::from_json(key.json.expose()).map_err(
                        |e| {
                            SinkError::permanent(format!(
                                "BigQuery credentials ({}): {}; check the key object in config.credentials",
                                key.client_email,
                                redact(&e.to_string())
                            ))
                        },
                    )?;
                    return Ok(Some(Arc::new(sa) as Arc<dyn gcp_auth::TokenProvider>));
                }
                if self.config.endpoint.is_some() {
                    return Ok(None);
                }
                gcp_auth::provider().await.map(Some).map_err(|e| {
                    SinkError::retryable(format!(
                        "BigQuery: no Application Default Credentials ({}); set config.credentials to a service-account key, GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`",
                        redact(&e.to_string())
                    ))
                })
            })
            .await
            .cloned()
    }

    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, SinkError> {
        let mut req = self.http.request(method, url);
        if let Some(p) = self.provider().await? {
            let token = p.token(&[SCOPE]).await.map_err(|e| {
                SinkError::retryable(format!(
                    "{what}: getting an access token failed: {}",
                    redact(&e.to_string())
                ))
            })?;
            req = req.bearer_auth(token.as_str());
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        let resp = req.send().await.map_err(|e| {
            SinkError::retryable(format!(
                "{what}: {}{}",
                redact(&e.to_string()),
                if e.is_connect() {
                    format!(" (is BigQuery reachable at {}?)", self.base)
                } else {
                    String::new()
                }
            ))
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| {
            SinkError::retryable(format!(
                "{what}: reading the answer: {}",
                redact(&e.to_string())
            ))
        })?;
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// The error for a refused call, by status (and reason for 403 rate limits).
    fn refused(what: &str, a: &Answer) -> SinkError {
        let msg = format!("{what}: {} (HTTP {})", a.message(), a.status);
        match a.status {
            429 => SinkError::throttled(msg, None),
            403 if a.reason().contains("rateLimit") || a.reason() == "quotaExceeded" => {
                SinkError::throttled(msg, None)
            }
            401 => SinkError::retryable(format!("{msg}; the access token was refused")),
            408 | 500..=599 => SinkError::retryable(msg),
            _ => SinkError::permanent(msg),
        }
    }

    /// The table's columns; `None` when it does not exist.
    async fn fields(&self, table: &str) -> Result<Option<Vec<Field>>, SinkError> {
        if let Some(f) = self.tables.lock().await.get(table) {
            return Ok(Some(f.clone()));
        }
        self.refresh(table).await
    }

    async fn raw_fields(&self, table: &str) -> Result<Option<Vec<Value>>, SinkError> {
        let what = format!("BigQuery tables.get {table}");
        let a = self
            .call(&what, reqwest::Method::GET, &self.table_url(table), None)
            .await?;
        if a.status == 404 {
            return Ok(None);
        }
        if !a.ok() {
            return Err(Self::refused(&what, &a));
        }
        Ok(Some(
            a.body
                .pointer("/schema/fields")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        ))
    }

    async fn refresh(&self, table: &str) -> Result<Option<Vec<Field>>, SinkError> {
        let Some(raw) = self.raw_fields(table).await? else {
            self.tables.lock().await.remove(table);
            return Ok(None);
        };
        let fields: Vec<Field> = raw
            .iter()
            .map(|f| Field {
                name: f["name"].as_str().unwrap_or_default().to_string(),
                ty: schema::normalize_bigquery_type(f["type"].as_str().unwrap_or("STRING")),
                repeated: f["mode"].as_str() == Some("REPEATED"),
            })
            .collect();
        self.tables
            .lock()
            .await
            .insert(table.to_string(), fields.clone());
        Ok(Some(fields))
    }

    /// Creates the dataset when it is missing (in `location`).
    async fn ensure_dataset(&self) -> Result<(), SinkError> {
        self.dataset_ready
            .get_or_try_init(|| async {
                let what = format!("BigQuery datasets.insert {}", self.config.dataset_name);
                let body = json!({
                    "datasetReference": { "projectId": self.config.project_id, "datasetId": self.config.dataset_name },
                    "location": self.config.location(),
                });
                let url = format!("{}/datasets", self.base);
                let a = self.call(&what, reqwest::Method::POST, &url, Some(&body)).await?;
                if a.ok() || a.status == 409 {
                    Ok(())
                } else {
                    Err(Self::refused(&what, &a))
                }
            })
            .await
            .map(|_| ())
    }

    async fn create_table(
        &self,
        table: &str,
        columns: &[(String, String)],
    ) -> Result<(), SinkError> {
        self.ensure_dataset().await?;
        let what = format!("BigQuery tables.insert {table}");
        let fields: Vec<Value> = columns
            .iter()
            .map(|(n, t)| {
                json!({ "name": n, "type": t, "mode": if n == "id" { "REQUIRED" } else { "NULLABLE" } })
            })
            .collect();
        let body = json!({
            "tableReference": { "projectId": self.config.project_id, "datasetId": self.config.dataset_name, "tableId": table },
            "schema": { "fields": fields },
        });
        let url = format!("{}/tables", self.dataset_url());
        let a = self
            .call(&what, reqwest::Method::POST, &url, Some(&body))
            .await?;
        if !(a.ok() || a.status == 409) {
            return Err(Self::refused(&what, &a));
        }
        tracing::info!(message = "Created destination table.", table);
        self.refresh(table).await?;
        Ok(())
    }

    /// Adds NULLABLE columns with `tables.patch` (the whole schema, the new fields last).
    async fn add_columns(
        &self,
        table: &str,
        columns: &[(String, String)],
    ) -> Result<(), SinkError> {
        let what = format!("BigQuery tables.patch {table}");
        let _ddl = self.ddl.lock().await;
        let Some(mut fields) = self.raw_fields(table).await? else {
            return Err(SinkError::permanent(format!(
                "{what}: the table does not exist"
            )));
        };
        let has = |fields: &[Value], n: &str| {
            fields.iter().any(|f| {
                f["name"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(n))
            })
        };
        // Added meanwhile (another lane, another process): nothing to do for those.
        let new: Vec<Value> = columns
            .iter()
            .filter(|(n, _)| !has(&fields, n))
            .map(|(n, t)| json!({ "name": n, "type": t, "mode": "NULLABLE" }))
            .collect();
        if new.is_empty() {
            self.refresh(table).await?;
            return Ok(());
        }
        fields.extend(new);
        let body = json!({ "schema": { "fields": fields } });
        let a = self
            .call(
                &what,
                reqwest::Method::PATCH,
                &self.table_url(table),
                Some(&body),
            )
            .await?;
        if !a.ok() {
            return Err(Self::refused(&what, &a));
        }
        self.refresh(table).await?;
        Ok(())
    }

    /// Runs a standard-SQL statement (`jobs.query`, polling until the job completes).
    async fn query(&self, what: &str, sql: &str) -> Result<Value, SinkError> {
        let body = json!({
            "query": sql, "useLegacySql": false, "location": self.config.location(), "timeoutMs": 10000,
        });
        let url = format!("{}/queries", self.base);
        let mut a = self
            .call(what, reqwest::Method::POST, &url, Some(&body))
            .await?;
        for _ in 0..30 {
            if !a.ok() {
                return Err(Self::refused(what, &a));
            }
            if a.body.get("jobComplete").and_then(Value::as_bool) != Some(false) {
                return match job_error(&a.body) {
                    Some(e) => Err(SinkError {
                        message: format!("{what}: {}", e.message),
                        ..e
                    }),
                    None => Ok(a.body),
                };
            }
            let job = a
                .body
                .pointer("/jobReference/jobId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let poll = format!(
                "{url}/{job}?location={}&timeoutMs=10000",
                self.config.location()
            );
            a = self.call(what, reqwest::Method::GET, &poll, None).await?;
        }
        Err(SinkError::retryable(format!(
            "{what}: the job did not complete in time; it is tried again"
        )))
    }

    /// A DML statement. One refused because rows are still in the streaming buffer fails as
    /// throttled with the spec's 30 s delay: the engine tries it again after at least that long,
    /// within `maxRetries` (sinks never sleep; a 30 s wait inside the write would also exceed the
    /// write's own time limit).
    async fn dml(&self, table: &str, sql: &str) -> Result<(), SinkError> {
        let what = format!("BigQuery MERGE into {table}");
        self.query(&what, sql)
            .await
            .map(|_| ())
            .map_err(|e| streaming_buffer(e, table, STREAMING_BUFFER_DELAY))
    }

    /// The columns schema sync wants for `table`: `id`, the attributes, the mode's tracking
    /// fields.
    fn desired(&self, table: &str, s: &ResourceSchema) -> Result<Vec<(String, String)>, SinkError> {
        let mut cols = vec![("id".to_string(), "STRING".to_string())];
        for a in &s.attributes {
            check_column(&a.name)
                .map_err(|e| SinkError::permanent(format!("schema sync of '{table}': {e}")))?;
            cols.push((a.name.clone(), schema::bigquery_type(a).to_string()));
        }
        for (n, t) in self.mode_of(table).tracking_fields() {
            if !cols.iter().any(|(c, _)| c == n) {
                cols.push((n.to_string(), t.to_string()));
            }
        }
        Ok(cols)
    }

    fn mismatch(&self, table: &str, what: String) -> Result<Vec<SchemaEvent>, SinkError> {
        self.config
            .schema_sync
            .report_mismatch("BigQuery table", table, what)
    }

    async fn sync_now(
        &self,
        table: &str,
        s: &ResourceSchema,
    ) -> Result<Vec<SchemaEvent>, SinkError> {
        let cfg = &self.config.schema_sync;
        let desired = self.desired(table, s)?;
        let names = || {
            s.attributes
                .iter()
                .map(|a| a.name.clone())
                .collect::<Vec<_>>()
        };
        let live = self.refresh(table).await?;
        if cfg.strategy == SchemaStrategy::DropCreate {
            let existed = live.is_some();
            if existed {
                let what = format!("BigQuery tables.delete {table}");
                let a = self
                    .call(&what, reqwest::Method::DELETE, &self.table_url(table), None)
                    .await?;
                if !(a.ok() || a.status == 404) {
                    return Err(Self::refused(&what, &a));
                }
                self.tables.lock().await.remove(table);
            }
            self.create_table(table, &desired).await?;
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
                self.create_table(table, &desired).await?;
                return Ok(vec![SchemaEvent::TableCreated {
                    table_name: table.to_string(),
                    attributes: names(),
                }]);
            }
            return self.mismatch(table, "the table does not exist".into());
        };
        let missing: Vec<(String, String)> = desired
            .iter()
            .filter(|(n, _)| field_of(&live, n).is_none())
            .cloned()
            .collect();
        let mismatched: Vec<String> = desired
            .iter()
            .filter_map(|(n, t)| {
                let f = field_of(&live, n)?;
                (f.ty != *t && !f.repeated)
                    .then(|| format!("column '{n}' is {} (expected {t})", f.ty))
            })
            .collect();
        let extra: Vec<String> = live
            .iter()
            .filter(|f| !desired.iter().any(|(n, _)| n.eq_ignore_ascii_case(&f.name)))
            .map(|f| f.name.clone())
            .collect();
        let describe_missing = || {
            format!(
                "missing column(s) {}",
                missing
                    .iter()
                    .map(|(n, t)| format!("'{n}' ({t})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut events = Vec::new();
        match cfg.strategy {
            SchemaStrategy::ValidateOnly => {
                let mut problems = Vec::new();
                if !missing.is_empty() {
                    problems.push(describe_missing());
                }
                problems.extend(mismatched.iter().cloned());
                if !problems.is_empty() {
                    events.extend(self.mismatch(table, problems.join("; "))?);
                }
            }
            _ => {
                let mut added = Vec::new();
                let mut dropped = Vec::new();
                if !missing.is_empty() {
                    if cfg.auto_create_columns {
                        self.add_columns(table, &missing).await?;
                        added.extend(missing.iter().map(|(n, _)| n.clone()));
                    } else {
                        events.extend(self.mismatch(table, describe_missing())?);
                    }
                }
                if cfg.drop_missing_columns && !extra.is_empty() {
                    for col in &extra {
                        check_column(col).map_err(SinkError::permanent)?;
                        let sql = format!(
                            "ALTER TABLE {} DROP COLUMN IF EXISTS {}",
                            self.table_path(table),
                            quote(col)
                        );
                        self.query(&format!("BigQuery drop column {table}.{col}"), &sql)
                            .await?;
                        dropped.push(col.clone());
                    }
                    self.refresh(table).await?;
                }
                if !added.is_empty() || !dropped.is_empty() {
                    events.push(SchemaEvent::TableAltered {
                        table_name: table.to_string(),
                        added_columns: added,
                        dropped_columns: dropped,
                    });
                }
                if !mismatched.is_empty() {
                    events.extend(self.mismatch(table, mismatched.join("; "))?);
                }
            }
        }
        Ok(events)
    }

    /// The table's columns before a write: created from the rows (with schema sync), columns
    /// the rows bring added (with `autoCreateColumns`), else the rows that do not fit fail.
    async fn prepare(
        &self,
        table: &str,
        rows: &[(usize, Map<String, Value>)],
    ) -> Result<(Vec<Field>, Vec<(usize, SinkError)>), SinkError> {
        let sync = &self.config.schema_sync;
        let mut failed = Vec::new();
        let mut bad_names: Vec<usize> = Vec::new();
        for (i, row) in rows {
            if let Some(e) = row.keys().find_map(|k| check_column(k).err()) {
                failed.push((*i, SinkError::permanent(format!("table '{table}': {e}"))));
                bad_names.push(*i);
            }
        }
        let inferred = || {
            let mut cols: Vec<(String, String)> = Vec::new();
            for (i, row) in rows {
                if bad_names.contains(i) {
                    continue;
                }
                for (k, v) in row {
                    if !v.is_null() && !cols.iter().any(|(c, _)| c.eq_ignore_ascii_case(k)) {
                        let ty = match k.as_str() {
                            "_version" => "INT64".to_string(),
                            "_operation_timestamp" => "TIMESTAMP".to_string(),
                            _ => schema::bigquery_type(&schema::infer_attribute(k, v)).to_string(),
                        };
                        cols.push((k.clone(), ty));
                    }
                }
            }
            cols
        };
        let fields = match self.fields(table).await? {
            Some(f) => f,
            None if sync.evolves() && sync.auto_create_table => {
                let mut cols = vec![("id".to_string(), "STRING".to_string())];
                let mode = self.mode_of(table);
                for (n, t) in mode.tracking_fields() {
                    cols.push((n.to_string(), t.to_string()));
                }
                for c in inferred() {
                    if !cols.iter().any(|(n, _)| n == &c.0) {
                        cols.push(c);
                    }
                }
                self.create_table(table, &cols).await?;
                self.fields(table).await?.unwrap_or_default()
            }
            None => {
                let e = SinkError::permanent(format!(
                    "BigQuery table '{}.{table}' does not exist; create it, or enable schemaSync to have it created",
                    self.config.dataset_name
                ));
                return Ok((
                    Vec::new(),
                    rows.iter().map(|(i, _)| (*i, e.clone())).collect(),
                ));
            }
        };
        let unknown: Vec<(String, String)> = inferred()
            .into_iter()
            .filter(|(n, _)| field_of(&fields, n).is_none())
            .collect();
        if unknown.is_empty() {
            return Ok((fields, failed));
        }
        if sync.evolves() && sync.auto_create_columns {
            self.add_columns(table, &unknown).await?;
            let fields = self.fields(table).await?.unwrap_or_default();
            return Ok((fields, failed));
        }
        for (i, row) in rows {
            if bad_names.contains(i) {
                continue;
            }
            let missing: Vec<String> = row
                .iter()
                .filter(|(k, v)| !v.is_null() && field_of(&fields, k).is_none())
                .map(|(k, _)| format!("'{k}'"))
                .collect();
            if !missing.is_empty() {
                failed.push((
                    *i,
                    SinkError::permanent(format!(
                        "BigQuery table '{table}' has no column {}; add it, or enable schemaSync (strategy 'alter') to have it added",
                        missing.join(", ")
                    )),
                ));
            }
        }
        Ok((fields, failed))
    }

    /// Append-only and immutable tables: every change a streaming-insert row.
    async fn write_history(
        &self,
        table: &str,
        changes: &[(usize, &Change)],
    ) -> Vec<(usize, SinkError)> {
        let mode = self.mode_of(table);
        let rows: Vec<(usize, Map<String, Value>)> = changes
            .iter()
            .map(|(i, c)| (*i, history_row(c, mode)))
            .collect();
        let (fields, mut failed) = match self.prepare(table, &rows).await {
            Ok(x) => x,
            Err(e) => return changes.iter().map(|(i, _)| (*i, e.clone())).collect(),
        };
        // The request rows: `{ insertId, json }`, values checked against the column types.
        let mut ready: Vec<(usize, Value, usize)> = Vec::new();
        for ((i, row), (_, c)) in rows.iter().zip(changes) {
            if failed.iter().any(|(f, _)| f == i) {
                continue;
            }
            let mut out = Map::new();
            let mut bad = None;
            for (k, v) in row {
                let Some(f) = field_of(&fields, k) else {
                    continue;
                };
                match insert_value(f, v) {
                    Ok(v) => {
                        out.insert(f.name.clone(), v);
                    }
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            match bad {
                Some(e) => failed.push((
                    *i,
                    SinkError::permanent(format!(
                        "BigQuery table '{table}', record '{}': {e}",
                        c.id
                    )),
                )),
                None => {
                    let r = json!({ "insertId": c.change_id, "json": Value::Object(out) });
                    let size = r.to_string().len();
                    ready.push((*i, r, size));
                }
            }
        }
        let what = format!("BigQuery insertAll into {table}");
        let url = format!("{}/insertAll", self.table_url(table));
        let mut start = 0;
        let mut gave_up: Option<SinkError> = None;
        while start < ready.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < ready.len()
                && end - start < MAX_ROWS
                && (end == start || bytes + ready[end].2 <= MAX_REQUEST_BYTES)
            {
                bytes += ready[end].2;
                end += 1;
            }
            let chunk = &ready[start..end];
            start = end;
            if let Some(e) = &gave_up {
                // A transient failure earlier in the batch: later rows wait, so a record's
                // changes are not applied out of order.
                failed.extend(chunk.iter().map(|(i, _, _)| (*i, e.clone())));
                continue;
            }
            let body = json!({
                "kind": "bigquery#tableDataInsertAllRequest",
                "skipInvalidRows": true,
                "ignoreUnknownValues": false,
                "rows": chunk.iter().map(|(_, r, _)| r.clone()).collect::<Vec<_>>(),
            });
            let answer = match self
                .call(&what, reqwest::Method::POST, &url, Some(&body))
                .await
            {
                Ok(a) if a.ok() => a,
                Ok(a) => {
                    let e = Self::refused(&what, &a);
                    if a.status == 404 {
                        self.tables.lock().await.remove(table);
                    }
                    if e.is_retryable() {
                        gave_up = Some(e.clone());
                    }
                    failed.extend(chunk.iter().map(|(i, _, _)| (*i, e.clone())));
                    continue;
                }
                Err(e) => {
                    gave_up = Some(e.clone());
                    failed.extend(chunk.iter().map(|(i, _, _)| (*i, e.clone())));
                    continue;
                }
            };
            for (at, reason, message) in insert_errors(&answer.body) {
                let Some((i, _, _)) = chunk.get(at) else {
                    continue;
                };
                let msg = format!("{what}: row refused ({reason}): {}", redact(&message));
                let e = match reason.as_str() {
                    "invalid" | "invalidQuery" | "notFound" => SinkError::permanent(msg),
                    _ => SinkError::retryable(msg),
                };
                failed.push((*i, e));
            }
        }
        failed
    }

    /// Mutable tables: the last state of each record of the batch, in one `MERGE` by id.
    async fn write_mutable(
        &self,
        table: &str,
        changes: &[(usize, &Change)],
    ) -> Vec<(usize, SinkError)> {
        // Each change carries the whole record: the last change of a record settles all of its
        // changes in the batch.
        let mut order: Vec<&str> = Vec::new();
        let mut last: HashMap<&str, (usize, &Change)> = HashMap::new();
        let mut of_record: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, c) in changes {
            if !last.contains_key(c.id.as_str()) {
                order.push(&c.id);
            }
            last.insert(&c.id, (*i, c));
            of_record.entry(&c.id).or_default().push(*i);
        }
        let fail_record = |id: &str, e: &SinkError, out: &mut Vec<(usize, SinkError)>| {
            for i in of_record.get(id).into_iter().flatten() {
                out.push((*i, e.clone()));
            }
        };
        let rows: Vec<(usize, Map<String, Value>)> = order
            .iter()
            .map(|id| {
                let (i, c) = last[id];
                let row = if c.op == Op::Deleted {
                    let mut m = Map::new();
                    m.insert("id".into(), Value::String(c.id.clone()));
                    m
                } else {
                    record_fields(c)
                };
                (i, row)
            })
            .collect();
        let mut failed = Vec::new();
        let (fields, refused) = match self.prepare(table, &rows).await {
            Ok(x) => x,
            Err(e) => return changes.iter().map(|(i, _)| (*i, e.clone())).collect(),
        };
        for (i, e) in refused {
            let id = changes
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, c)| c.id.as_str())
                .unwrap_or("");
            fail_record(id, &e, &mut failed);
        }
        let Some(id_field) = field_of(&fields, "id").cloned() else {
            let e = SinkError::permanent(format!(
                "BigQuery table '{table}' has no 'id' column; mutable tables are merged by id"
            ));
            return changes.iter().map(|(i, _)| (*i, e.clone())).collect();
        };
        let columns: Vec<&Field> = fields
            .iter()
            .filter(|f| !f.name.eq_ignore_ascii_case("id"))
            .collect();
        // One `SELECT` per record: typed literals for every column (absent fields are NULL:
        // the record replaces the row).
        let mut selects: Vec<(&str, String)> = Vec::new();
        for ((_, row), id) in rows.iter().zip(&order) {
            if failed.iter().any(|(i, _)| of_record[id].contains(i)) {
                continue;
            }
            let deleted = last[id].1.op == Op::Deleted;
            let mut parts = Vec::with_capacity(columns.len() + 2);
            let mut bad = None;
            match sql_literal(&id_field, &Value::String(id.to_string())) {
                Ok(l) => parts.push(format!("{l} AS {}", quote(&id_field.name))),
                Err(e) => bad = Some(e),
            }
            for f in &columns {
                let v = if deleted {
                    &Value::Null
                } else {
                    row.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(&f.name))
                        .map(|(_, v)| v)
                        .unwrap_or(&Value::Null)
                };
                match sql_literal(f, v) {
                    Ok(l) => parts.push(format!("{l} AS {}", quote(&f.name))),
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = bad {
                let e =
                    SinkError::permanent(format!("BigQuery table '{table}', record '{id}': {e}"));
                fail_record(id, &e, &mut failed);
                continue;
            }
            parts.push(format!(
                "{} AS {DELETE_FLAG}",
                if deleted { "TRUE" } else { "FALSE" }
            ));
            selects.push((id, format!("SELECT {}", parts.join(", "))));
        }
        let mut start = 0;
        while start < selects.len() {
            let mut end = start;
            let mut len = 0;
            while end < selects.len()
                && (end == start || len + selects[end].1.len() < MAX_QUERY_CHARS)
            {
                len += selects[end].1.len() + 11;
                end += 1;
            }
            let chunk = &selects[start..end];
            start = end;
            let sql = self.merge_sql(
                table,
                &id_field,
                &columns,
                chunk.iter().map(|(_, s)| s.as_str()),
            );
            match self.dml(table, &sql).await {
                Ok(()) => {}
                Err(e) if !e.is_retryable() && chunk.len() > 1 => {
                    // Refused as a whole: find the record at fault, one statement each.
                    for (id, select) in chunk {
                        let sql = self.merge_sql(
                            table,
                            &id_field,
                            &columns,
                            std::iter::once(select.as_str()),
                        );
                        if let Err(e) = self.dml(table, &sql).await {
                            fail_record(id, &e, &mut failed);
                        }
                    }
                }
                Err(e) => {
                    for (id, _) in chunk {
                        fail_record(id, &e, &mut failed);
                    }
                    if e.is_retryable() {
                        for (id, _) in &selects[start..] {
                            fail_record(id, &e, &mut failed);
                        }
                        break;
                    }
                }
            }
        }
        failed
    }

    fn merge_sql<'a>(
        &self,
        table: &str,
        id: &Field,
        columns: &[&Field],
        selects: impl Iterator<Item = &'a str>,
    ) -> String {
        let source = selects.collect::<Vec<_>>().join(" UNION ALL ");
        let idq = quote(&id.name);
        let mut sql = format!(
            "MERGE {} T USING ({source}) S ON T.{idq} = S.{idq} WHEN MATCHED AND S.{DELETE_FLAG} THEN DELETE",
            self.table_path(table)
        );
        if !columns.is_empty() {
            let set = columns
                .iter()
                .map(|f| format!("{0} = S.{0}", quote(&f.name)))
                .collect::<Vec<_>>()
                .join(", ");
            sql.push_str(&format!(" WHEN MATCHED THEN UPDATE SET {set}"));
        }
        let names = std::iter::once(idq.clone())
            .chain(columns.iter().map(|f| quote(&f.name)))
            .collect::<Vec<_>>();
        sql.push_str(&format!(
            " WHEN NOT MATCHED AND NOT S.{DELETE_FLAG} THEN INSERT ({}) VALUES ({})",
            names.join(", "),
            names
                .iter()
                .map(|n| format!("S.{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        sql
    }

    /// Runs the schema syncs deferred for these tables.
    async fn run_deferred(&self, batch: &[Change]) -> Result<(), SinkError> {
        let pending: Vec<(String, ResourceSchema)> = {
            let d = self.deferred.lock().await;
            if d.is_empty() {
                return Ok(());
            }
            d.iter()
                .filter(|(t, _)| batch.iter().any(|c| &c.dest == *t))
                .map(|(t, s)| (t.clone(), s.clone()))
                .collect()
        };
        for (table, s) in pending {
            self.sync_now(&table, &s).await?;
            self.deferred.lock().await.remove(&table);
        }
        Ok(())
    }
}

/// The error of a completed job whose answer came with HTTP 200 (bqemulator reports a failed
/// statement that way: `errors` and no `numDmlAffectedRows`). A real BigQuery answer may list
/// warnings in `errors` for a statement that succeeded; a successful DML statement always has
/// `numDmlAffectedRows`, so that decides.
fn job_error(body: &Value) -> Option<SinkError> {
    let errors = body.get("errors").and_then(Value::as_array)?;
    let first = errors.first()?;
    if body.get("numDmlAffectedRows").is_some() {
        return None;
    }
    let reason = first.get("reason").and_then(Value::as_str).unwrap_or("");
    let message = redact(
        first
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the job failed"),
    );
    let message = format!("{message} ({reason})");
    Some(match reason {
        "backendError" | "internalError" | "rateLimitExceeded" | "jobBackendError" => {
            SinkError::retryable(message)
        }
        _ => SinkError::permanent(message),
    })
}

/// A DML error because of the streaming buffer becomes a throttled error that says what
/// happened and what to do; other errors pass unchanged.
fn streaming_buffer(e: SinkError, table: &str, delay: Duration) -> SinkError {
    if !e.message.contains("streaming buffer") {
        return e;
    }
    SinkError::throttled(
        format!(
            "{}; rows of BigQuery table '{table}' are still in the streaming buffer (up to 90 minutes after they were streamed), where UPDATE, DELETE and MERGE cannot change them. The change is tried again after {} s, within maxRetries; for tables that receive streamed rows, use mutability 'append-only' or 'immutable'",
            e.message,
            delay.as_secs()
        ),
        Some(delay),
    )
}

#[async_trait]
impl Sink for BigQuerySink {
    async fn healthcheck(&self) -> Result<(), SinkError> {
        let what = format!("BigQuery datasets.get {}", self.config.dataset_name);
        let a = self
            .call(&what, reqwest::Method::GET, &self.dataset_url(), None)
            .await?;
        if a.ok() || (a.status == 404 && self.config.schema_sync.evolves()) {
            return Ok(());
        }
        Err(Self::refused(&what, &a))
    }

    async fn sync_schema(
        &self,
        table: &str,
        s: &ResourceSchema,
    ) -> Result<Vec<SchemaEvent>, SinkError> {
        if !self.config.schema_sync.enabled {
            return Ok(Vec::new());
        }
        match self.sync_now(table, s).await {
            Ok(events) => {
                self.deferred.lock().await.remove(table);
                Ok(events)
            }
            Err(e) if !e.is_retryable() => Err(e),
            Err(e) => {
                self.deferred
                    .lock()
                    .await
                    .insert(table.to_string(), s.clone());
                Ok(vec![SchemaEvent::SchemaSyncDeferred {
                    table_name: table.to_string(),
                    error: e.message,
                }])
            }
        }
    }

    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        self.run_deferred(batch).await?;
        let mut by_table: Vec<(&str, Vec<(usize, &Change)>)> = Vec::new();
        for (i, c) in batch.iter().enumerate() {
            match by_table.iter_mut().find(|(t, _)| *t == c.dest) {
                Some((_, v)) => v.push((i, c)),
                None => by_table.push((&c.dest, vec![(i, c)])),
            }
        }
        let results = join_all(by_table.iter().map(|(table, changes)| async move {
            match self.mode_of(table) {
                Mutability::Mutable => self.write_mutable(table, changes).await,
                _ => self.write_history(table, changes).await,
            }
        }))
        .await;
        let failed: Vec<(usize, SinkError)> = results.into_iter().flatten().collect();
        BatchOutcome::from_failures(batch.len(), failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_failed_job_in_a_200_answer_is_an_error() {
        let failed = json!({ "jobComplete": true, "errors": [{ "reason": "invalidQuery", "message": "Invalid date: 'nope'" }] });
        let e = job_error(&failed).unwrap();
        assert!(
            !e.is_retryable() && e.message.contains("Invalid date"),
            "{e:?}"
        );
        let warned = json!({ "jobComplete": true, "numDmlAffectedRows": "2", "errors": [{ "reason": "warning", "message": "w" }] });
        assert!(job_error(&warned).is_none());
        assert!(job_error(&json!({ "jobComplete": true, "errors": [] })).is_none());
        let busy = json!({ "errors": [{ "reason": "backendError", "message": "try later" }] });
        assert!(job_error(&busy).unwrap().is_retryable());
    }

    #[test]
    fn the_streaming_buffer_error_waits_30_s_and_says_why() {
        let e = SinkError::permanent(
            "BigQuery MERGE into t: UPDATE or DELETE statement over table p.d.t would affect rows in the streaming buffer, which is not supported (HTTP 400)",
        );
        let e = streaming_buffer(e, "t", Duration::from_secs(30));
        assert_eq!(
            e.kind,
            ErrorKind::Throttled {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert!(e.is_retryable());
        assert!(e.message.contains("90 minutes") && e.message.contains("append-only"));
        let other = streaming_buffer(
            SinkError::permanent("Syntax error"),
            "t",
            Duration::from_secs(30),
        );
        assert!(!other.is_retryable());
    }
}
