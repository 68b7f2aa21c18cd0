//! The MongoDB sink: per batch, one ordered bulk write per collection, every change of the
//! batch in order (replace with upsert by `_id` for inserts and updates, delete by `_id`).
//! Servers from 8.0 on get the client-level `bulkWrite` command; older ones (or a server that
//! refuses it) get ordered `update`/`delete` commands per collection. A document the server
//! rejects fails its change only: the writes after it are sent again.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::{CommandError, Error as MongoError, ErrorKind as MongoErrorKind};
use mongodb::options::{DeleteOneModel, IndexOptions, ReplaceOneModel, WriteModel};
use mongodb::{Client, IndexModel, Namespace};
use tokio::sync::OnceCell;

use super::config::MongoDbConfig;
use super::document::{bson_size, document_of, to_bson};
use crate::error::{redact, SinkError};
use crate::event::{Change, Op};
use crate::sinks::{BatchOutcome, Sink};

/// The wire version of MongoDB 8.0, the first with the client-level `bulkWrite` command.
const WIRE_VERSION_8_0: i32 = 25;
/// Per-collection commands: at most this many statements, and about this many bytes, each.
const MAX_STATEMENTS: usize = 1000;
const MAX_COMMAND_BYTES: usize = 12 * 1024 * 1024;

const MODE_UNKNOWN: u8 = 0;
const MODE_CLIENT_BULK: u8 = 1;
const MODE_PER_COLLECTION: u8 = 2;

pub(crate) struct MongoDbSink {
    config: MongoDbConfig,
    client: OnceCell<Client>,
    mode: AtomicU8,
    /// The log collection's indexes were created (or tried: a failure only warns).
    log_ready: OnceCell<()>,
}

/// One write of a batch: the change at `idx`, on `_id` = `id`.
struct Write {
    idx: usize,
    id: String,
    doc: Option<Document>,
}

/// How one round trip of writes ended.
enum Sent {
    /// Every write was applied.
    All,
    /// The writes before `at` were applied; the one at `at` was refused (the rest not sent).
    Refused { at: usize, error: SinkError },
    /// None can be counted as applied.
    Failed(SinkError),
}

impl MongoDbSink {
    pub fn new(config: MongoDbConfig) -> Self {
        let mode = if config.per_collection_writes {
            MODE_PER_COLLECTION
        } else {
            MODE_UNKNOWN
        };
        Self {
            config,
            client: OnceCell::new(),
            mode: AtomicU8::new(mode),
            log_ready: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Client, SinkError> {
        self.client
            .get_or_try_init(|| async {
                let opts = self
                    .config
                    .client_options()
                    .await
                    .map_err(SinkError::retryable)?;
                Client::with_options(opts).map_err(|e| classify("MongoDB client", &e, &self.config))
            })
            .await
    }

    /// A round trip, bounded by `socketTimeoutMS` when set.
    async fn bounded<T>(
        &self,
        what: &str,
        fut: impl IntoFuture<Output = Result<T, MongoError>>,
    ) -> Result<T, SinkError> {
        let result = match self.config.round_trip_timeout() {
            Some(limit) => match tokio::time::timeout(limit, fut.into_future()).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(SinkError::timed_out(format!(
                        "{what}: no answer within socketTimeoutMS ({} ms)",
                        limit.as_millis()
                    )))
                }
            },
            None => fut.await,
        };
        result.map_err(|e| classify(what, &e, &self.config))
    }

    /// The write path for this server: client-level `bulkWrite` from MongoDB 8.0 on.
    async fn mode(&self, client: &Client) -> Result<u8, SinkError> {
        let known = self.mode.load(Ordering::Relaxed);
        if known != MODE_UNKNOWN {
            return Ok(known);
        }
        let hello = self
            .bounded(
                "MongoDB hello",
                client.database("admin").run_command(doc! { "hello": 1 }),
            )
            .await?;
        let wire = match hello.get("maxWireVersion").cloned() {
            Some(Bson::Int32(v)) => v,
            Some(Bson::Int64(v)) => i32::try_from(v).unwrap_or(i32::MAX),
            _ => 0,
        };
        let mode = if wire >= WIRE_VERSION_8_0 {
            MODE_CLIENT_BULK
        } else {
            MODE_PER_COLLECTION
        };
        self.mode.store(mode, Ordering::Relaxed);
        Ok(mode)
    }

    /// Writes `writes` (one collection's, in batch order) from the first on; returns the
    /// changes applied and the changes failed.
    async fn write_collection(
        &self,
        client: &Client,
        collection: &str,
        writes: &[Write],
    ) -> (Vec<usize>, Vec<(usize, SinkError)>) {
        let mut applied = Vec::new();
        let mut failed = Vec::new();
        let mut start = 0;
        while start < writes.len() {
            let rest = &writes[start..];
            let sent = match self.mode(client).await {
                Err(e) => Sent::Failed(e),
                Ok(MODE_CLIENT_BULK) => match self.send_bulk(client, collection, rest).await {
                    Some(sent) => sent,
                    None => {
                        tracing::warn!(
                            message = "The MongoDB server refuses the bulkWrite command; writing per collection.",
                            collection
                        );
                        self.mode.store(MODE_PER_COLLECTION, Ordering::Relaxed);
                        continue;
                    }
                },
                Ok(_) => self.send_commands(client, collection, rest).await,
            };
            match sent {
                Sent::All => {
                    applied.extend(rest.iter().map(|w| w.idx));
                    break;
                }
                Sent::Refused { at, error } if !error.is_retryable() => {
                    applied.extend(rest[..at].iter().map(|w| w.idx));
                    failed.push((rest[at].idx, error));
                    start += at + 1;
                }
                Sent::Refused { at, error } => {
                    // A transient refusal: this change and the later ones are retried, in order.
                    applied.extend(rest[..at].iter().map(|w| w.idx));
                    failed.extend(rest[at..].iter().map(|w| (w.idx, error.clone())));
                    break;
                }
                Sent::Failed(error) => {
                    failed.extend(rest.iter().map(|w| (w.idx, error.clone())));
                    break;
                }
            }
        }
        (applied, failed)
    }

    /// One client-level ordered `bulkWrite`; `None` when the server does not have the command.
    async fn send_bulk(&self, client: &Client, collection: &str, writes: &[Write]) -> Option<Sent> {
        let ns = Namespace::new(self.config.db.clone(), collection.to_string());
        let models: Vec<WriteModel> = writes
            .iter()
            .map(|w| match &w.doc {
                Some(d) => ReplaceOneModel::builder()
                    .namespace(ns.clone())
                    .filter(doc! { "_id": &w.id })
                    .replacement(d.clone())
                    .upsert(true)
                    .build()
                    .into(),
                None => DeleteOneModel::builder()
                    .namespace(ns.clone())
                    .filter(doc! { "_id": &w.id })
                    .build()
                    .into(),
            })
            .collect();
        let what = format!("MongoDB bulkWrite to {}.{collection}", self.config.db);
        let fut = client.bulk_write(models).ordered(true);
        let result = match self.config.round_trip_timeout() {
            Some(limit) => match tokio::time::timeout(limit, fut.into_future()).await {
                Ok(r) => r,
                Err(_) => {
                    return Some(Sent::Failed(SinkError::timed_out(format!(
                        "{what}: no answer within socketTimeoutMS ({} ms)",
                        limit.as_millis()
                    ))))
                }
            },
            None => fut.await,
        };
        let e = match result {
            Ok(_) => return Some(Sent::All),
            Err(e) => e,
        };
        match &*e.kind {
            MongoErrorKind::IncompatibleServer { .. } => None,
            MongoErrorKind::Command(c) if c.code == 59 || c.code == 115 => None,
            MongoErrorKind::BulkWrite(bw) if !bw.write_concern_errors.is_empty() => {
                let wce = &bw.write_concern_errors[0];
                Some(Sent::Failed(SinkError::retryable(format!(
                    "{what}: write concern not satisfied (code {}): {}; the writes are sent again",
                    wce.code,
                    redact(&wce.message)
                ))))
            }
            MongoErrorKind::BulkWrite(bw) => {
                match bw.write_errors.iter().min_by_key(|(i, _)| **i) {
                    Some((&at, we)) if at < writes.len() => Some(Sent::Refused {
                        at,
                        error: refused(&what, &writes[at], we.code, &we.message),
                    }),
                    _ => Some(Sent::Failed(classify(&what, &e, &self.config))),
                }
            }
            _ => Some(Sent::Failed(classify(&what, &e, &self.config))),
        }
    }

    /// Ordered `update` (replace, upsert) and `delete` commands, one per run of writes of one
    /// kind (and within the server's command size); stops at the first refused write.
    async fn send_commands(&self, client: &Client, collection: &str, writes: &[Write]) -> Sent {
        let db = client.database(&self.config.db);
        let write_concern = match self.config.write_concern() {
            Ok(Some(wc)) => mongodb::bson::serialize_to_document(&wc).ok(),
            _ => None,
        };
        let mut start = 0;
        while start < writes.len() {
            let deleting = writes[start].doc.is_none();
            let mut end = start;
            let mut bytes = 0;
            let mut statements = Vec::new();
            while end < writes.len()
                && writes[end].doc.is_none() == deleting
                && statements.len() < MAX_STATEMENTS
            {
                let w = &writes[end];
                let statement = match &w.doc {
                    Some(d) => doc! { "q": { "_id": &w.id }, "u": d.clone(), "upsert": true },
                    None => doc! { "q": { "_id": &w.id }, "limit": 1 },
                };
                let size = bson_size(&statement);
                if !statements.is_empty() && bytes + size > MAX_COMMAND_BYTES {
                    break;
                }
                bytes += size;
                statements.push(statement);
                end += 1;
            }
            let mut command = if deleting {
                doc! { "delete": collection, "deletes": statements, "ordered": true }
            } else {
                doc! { "update": collection, "updates": statements, "ordered": true }
            };
            if let Some(wc) = &write_concern {
                command.insert("writeConcern", wc.clone());
            }
            let what = format!(
                "MongoDB {} on {}.{collection}",
                if deleting { "delete" } else { "update" },
                self.config.db
            );
            let reply = match self.bounded(&what, db.run_command(command)).await {
                Ok(r) => r,
                Err(e) => return Sent::Failed(e),
            };
            if let Ok(wce) = reply.get_document("writeConcernError") {
                return Sent::Failed(SinkError::retryable(format!(
                    "{what}: write concern not satisfied: {}; the writes are sent again",
                    redact(wce.get_str("errmsg").unwrap_or("no message"))
                )));
            }
            if let Ok(errors) = reply.get_array("writeErrors") {
                let first = errors
                    .iter()
                    .filter_map(Bson::as_document)
                    .filter_map(|e| {
                        let index = match e.get("index").cloned() {
                            Some(Bson::Int32(i)) => usize::try_from(i).ok(),
                            Some(Bson::Int64(i)) => usize::try_from(i).ok(),
                            _ => None,
                        }?;
                        Some((index, e))
                    })
                    .min_by_key(|(i, _)| *i);
                if let Some((i, e)) = first {
                    let at = start + i;
                    if at < writes.len() {
                        let code = match e.get("code").cloned() {
                            Some(Bson::Int32(c)) => c,
                            Some(Bson::Int64(c)) => i32::try_from(c).unwrap_or(0),
                            _ => 0,
                        };
                        return Sent::Refused {
                            at,
                            error: refused(
                                &what,
                                &writes[at],
                                code,
                                e.get_str("errmsg").unwrap_or(""),
                            ),
                        };
                    }
                }
            }
            start = end;
        }
        Sent::All
    }

    /// Creates the log collection's indexes once (time, resource); a failure only warns.
    async fn ensure_log(&self, client: &Client, log: &str) {
        self.log_ready
            .get_or_init(|| async {
                let coll = client.database(&self.config.db).collection::<Document>(log);
                let indexes = [("timestamp", "timestamp_1"), ("resource_name", "resource_name_1")]
                    .into_iter()
                    .map(|(field, name)| {
                        IndexModel::builder()
                            .keys(doc! { field: 1 })
                            .options(IndexOptions::builder().name(name.to_string()).build())
                            .build()
                    });
                if let Err(e) = self
                    .bounded("MongoDB createIndexes", coll.create_indexes(indexes))
                    .await
                {
                    tracing::warn!(message = "Could not index the MongoDB log collection.", collection = log, %e);
                }
            })
            .await;
    }

    /// One log document per applied change and collection; `_id` is the change's identity and
    /// the collection, so a redelivered change logs once. Returns the changes it failed.
    async fn write_log(
        &self,
        client: &Client,
        log: &str,
        batch: &[Change],
        applied: &[usize],
    ) -> Vec<(usize, SinkError)> {
        if applied.is_empty() {
            return Vec::new();
        }
        self.ensure_log(client, log).await;
        let now = DateTime::now();
        let docs: Vec<Document> = applied
            .iter()
            .map(|&i| {
                let c = &batch[i];
                doc! {
                    "_id": format!("{}/{}", c.change_id, c.dest),
                    "resource_name": &c.resource,
                    "collection": &c.dest,
                    "operation": c.op.verb(),
                    "record_id": &c.id,
                    "data": to_bson(&c.data),
                    "timestamp": now,
                }
            })
            .collect();
        let coll = client.database(&self.config.db).collection::<Document>(log);
        let what = format!("MongoDB log collection {}.{log}", self.config.db);
        let fut = coll.insert_many(docs).ordered(false).into_future();
        let result = match self.config.round_trip_timeout() {
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => {
                    let e = SinkError::timed_out(format!(
                        "{what}: no answer within socketTimeoutMS ({} ms)",
                        limit.as_millis()
                    ));
                    return applied.iter().map(|&i| (i, e.clone())).collect();
                }
            },
            None => fut.await,
        };
        let e = match result {
            Ok(_) => return Vec::new(),
            Err(e) => e,
        };
        if let MongoErrorKind::InsertMany(im) = &*e.kind {
            if im.write_concern_error.is_none() {
                // A duplicate `_id` (11000) is a change logged before (a redelivery): done.
                return im
                    .write_errors
                    .iter()
                    .flatten()
                    .filter(|we| we.code != 11000)
                    .filter_map(|we| {
                        let i = *applied.get(we.index)?;
                        let message = format!(
                            "{what}: the log document of record '{}' was refused (code {}): {}",
                            batch[i].id,
                            we.code,
                            redact(&we.message)
                        );
                        Some((
                            i,
                            if transient_code(we.code) {
                                SinkError::retryable(message)
                            } else {
                                SinkError::permanent(message)
                            },
                        ))
                    })
                    .collect();
            }
        }
        // The records were written; the log was not: retry them (both writes are idempotent).
        let e = classify(&what, &e, &self.config);
        let e = if e.is_retryable() {
            e
        } else {
            SinkError::retryable(e.message)
        };
        applied.iter().map(|&i| (i, e.clone())).collect()
    }
}

/// A write the server refused, named by record and collection.
fn refused(what: &str, w: &Write, code: i32, message: &str) -> SinkError {
    let message = format!(
        "{what}: record '{}' was refused (code {code}): {}",
        w.id,
        redact(message)
    );
    if transient_code(code) {
        SinkError::retryable(message)
    } else {
        SinkError::permanent(message)
    }
}

/// Server error codes that go away by themselves (elections, shutdowns, timeouts, network).
fn transient_code(code: i32) -> bool {
    matches!(
        code,
        6 | 7 | 46 | 50 | 89 | 91 | 134 | 189 | 262 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436
    )
}

/// Connection and transient server failures are retryable; the rest fail the records.
/// Messages never carry credentials.
fn classify(what: &str, e: &MongoError, config: &MongoDbConfig) -> SinkError {
    let mut text = redact(&e.to_string());
    for secret in [config.password.as_ref(), config.connection_string.as_ref()]
        .into_iter()
        .flatten()
    {
        if !secret.is_empty() {
            text = text.replace(secret.expose(), "***");
        }
    }
    let message = format!("{what}: {text}");
    match &*e.kind {
        MongoErrorKind::Io(_)
        | MongoErrorKind::ServerSelection { .. }
        | MongoErrorKind::ConnectionPoolCleared { .. }
        | MongoErrorKind::DnsResolve { .. }
        | MongoErrorKind::Shutdown => SinkError::retryable(message),
        MongoErrorKind::Authentication { .. } | MongoErrorKind::Command(CommandError { code: 18, .. }) => SinkError::retryable(format!(
            "{message}; check the username and password (or the connection string's credentials and authSource)"
        )),
        MongoErrorKind::Command(c) if transient_code(c.code) => SinkError::retryable(message),
        MongoErrorKind::Command(c) if c.code == 13 => SinkError::permanent(format!(
            "{message}; grant the user readWrite on database '{}'",
            config.db
        )),
        _ if e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR) => {
            SinkError::retryable(message)
        }
        _ => SinkError::permanent(message),
    }
}

#[async_trait]
impl Sink for MongoDbSink {
    /// One statement (bulk write) per table carries a whole batch, chunked below the
    /// server's limits: a big batch costs about one round trip.
    fn prefers_bulk(&self) -> bool {
        true
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        let client = self.client().await?;
        self.bounded(
            "MongoDB ping",
            client.database("admin").run_command(doc! { "ping": 1 }),
        )
        .await
        .map(|_| ())
    }

    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        let client = self.client().await?;
        let mut failed: Vec<(usize, SinkError)> = Vec::new();
        let mut order: Vec<String> = Vec::new();
        let mut groups: HashMap<String, Vec<Write>> = HashMap::new();
        for (idx, c) in batch.iter().enumerate() {
            let doc = match c.op {
                Op::Deleted => None,
                Op::Inserted | Op::Updated => match document_of(c) {
                    Ok(d) => Some(d),
                    Err(message) => {
                        failed.push((idx, SinkError::permanent(message)));
                        continue;
                    }
                },
            };
            if !groups.contains_key(&c.dest) {
                order.push(c.dest.clone());
            }
            groups.entry(c.dest.clone()).or_default().push(Write {
                idx,
                id: c.id.clone(),
                doc,
            });
        }
        let results = join_all(
            order
                .iter()
                .map(|coll| self.write_collection(client, coll, &groups[coll])),
        )
        .await;
        let mut applied = Vec::new();
        for (ok, bad) in results {
            applied.extend(ok);
            failed.extend(bad);
        }
        if let Some(log) = &self.config.log_collection {
            applied.sort_unstable();
            failed.extend(self.write_log(client, log, batch, &applied).await);
        }
        BatchOutcome::from_failures(batch.len(), failed)
    }

    async fn close(&self) {
        if let Some(client) = self.client.get() {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                client.clone().shutdown().immediate(true).into_future(),
            )
            .await;
        }
    }
}
