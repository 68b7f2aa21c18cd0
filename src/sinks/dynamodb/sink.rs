//! The DynamoDB sink: per batch the last change of each item (each change carries the full
//! record), written with BatchWriteItem in requests of 25; unprocessed items fail their changes
//! retryably (the engine backs off and retries them), a request refused as a whole is halved
//! until the item DynamoDB refuses fails alone.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    PutRequest, ScalarAttributeType, WriteRequest,
};
use futures_util::future::join_all;
use tokio::sync::{Mutex, OnceCell};

use super::config::{key_schemas, DynamoDbConfig, KeySchema};
use super::item::{item_of, key_of, key_text};
use crate::config::Route;
use crate::error::{ConfigError, SinkError};
use crate::event::{Change, Op};
use crate::sinks::aws::classify;
use crate::sinks::{BatchOutcome, Sink};

/// DynamoDB's limit of write requests per BatchWriteItem.
const MAX_WRITES: usize = 25;

pub(crate) struct DynamoDbSink {
    config: DynamoDbConfig,
    keys: HashMap<String, KeySchema>,
    client: OnceCell<aws_sdk_dynamodb::Client>,
    /// Tables known to exist (createTable).
    ready: Mutex<HashSet<String>>,
}

/// One item write of a batch and the changes it settles (the item's changes in the batch).
struct Write {
    table: String,
    key: String,
    request: WriteRequest,
    changes: Vec<usize>,
}

impl DynamoDbSink {
    pub fn new(config: DynamoDbConfig, routes: &[Route]) -> Result<Self, ConfigError> {
        Ok(Self {
            config,
            keys: key_schemas(routes)?,
            client: OnceCell::new(),
            ready: Mutex::new(HashSet::new()),
        })
    }

    async fn client(&self) -> &aws_sdk_dynamodb::Client {
        self.client
            .get_or_init(|| async {
                aws_sdk_dynamodb::Client::new(&self.config.auth.sdk_config().await)
            })
            .await
    }

    fn keys_of(&self, table: &str) -> KeySchema {
        self.keys.get(table).cloned().unwrap_or_default()
    }

    /// `createTable`: makes sure `table` exists, creating it with its keys (typed like `sample`).
    async fn ensure_table(
        &self,
        table: &str,
        sample: &HashMap<String, AttributeValue>,
    ) -> Result<(), SinkError> {
        if self.ready.lock().await.contains(table) {
            return Ok(());
        }
        let client = self.client().await;
        let what = format!("DynamoDB table {table}");
        match client.describe_table().table_name(table).send().await {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                let keys = self.keys_of(table);
                let mut create = client
                    .create_table()
                    .table_name(table)
                    .billing_mode(BillingMode::PayPerRequest);
                for (name, kind) in std::iter::once((&keys.partition, KeyType::Hash))
                    .chain(keys.sort.as_ref().map(|s| (s, KeyType::Range)))
                {
                    let ty = match sample.get(name) {
                        Some(AttributeValue::N(_)) => ScalarAttributeType::N,
                        _ => ScalarAttributeType::S,
                    };
                    let def = AttributeDefinition::builder()
                        .attribute_name(name)
                        .attribute_type(ty)
                        .build();
                    let key = KeySchemaElement::builder()
                        .attribute_name(name)
                        .key_type(kind)
                        .build();
                    match (def, key) {
                        (Ok(d), Ok(k)) => create = create.attribute_definitions(d).key_schema(k),
                        (Err(e), _) | (_, Err(e)) => {
                            return Err(SinkError::permanent(format!("{what}: {e}")))
                        }
                    }
                }
                match create.send().await {
                    Ok(_) => tracing::info!(message = "Created destination table.", table),
                    // Created meanwhile by another writer.
                    Err(e) if e.code() == Some("ResourceInUseException") => {}
                    Err(e) => return Err(classify(&format!("creating {what}"), &e)),
                }
                client
                    .wait_until_table_exists()
                    .table_name(table)
                    .wait(std::time::Duration::from_secs(60))
                    .await
                    .map_err(|e| SinkError::retryable(format!("{what} is not active yet: {e}")))?;
            }
            Err(e) => return Err(classify(&what, &e)),
        }
        self.ready.lock().await.insert(table.to_string());
        Ok(())
    }

    /// Sends one BatchWriteItem; the changes of writes that did not happen, with why.
    async fn send(&self, writes: &[Write]) -> Vec<(usize, SinkError)> {
        let mut items: HashMap<String, Vec<WriteRequest>> = HashMap::new();
        for w in writes {
            items
                .entry(w.table.clone())
                .or_default()
                .push(w.request.clone());
        }
        let tables: Vec<&str> = items.keys().map(String::as_str).collect();
        let what = format!("DynamoDB BatchWriteItem to {}", tables.join(", "));
        let failed = |e: SinkError| -> Vec<(usize, SinkError)> {
            let mut out = Vec::new();
            for w in writes {
                out.extend(w.changes.iter().map(|&i| (i, e.clone())));
            }
            out
        };
        let result = self
            .client()
            .await
            .batch_write_item()
            .set_request_items(Some(items))
            .send()
            .await;
        match result {
            Err(e) if e.code() == Some("ResourceNotFoundException") => failed(SinkError::permanent(format!(
                "{what}: a table does not exist; create it, or set createTable: true in the replicator's config"
            ))),
            Err(e) => {
                let e = classify(&what, &e);
                if e.is_retryable() || writes.len() == 1 {
                    return failed(e);
                }
                // One item DynamoDB refuses (too large, a key of the wrong type) fails the
                // whole request and writes nothing: halve it until that item is alone, so only
                // its record fails (a request never holds two writes of one item).
                let (first, second) = writes.split_at(writes.len() / 2);
                let mut out = Box::pin(self.send(first)).await;
                out.extend(Box::pin(self.send(second)).await);
                out
            }
            Ok(out) => {
                let mut left: HashSet<String> = HashSet::new();
                for (table, requests) in out.unprocessed_items().into_iter().flatten() {
                    let keys = self.keys_of(table);
                    for r in requests {
                        let attrs = r
                            .put_request()
                            .map(|p| p.item())
                            .or_else(|| r.delete_request().map(|d| d.key()));
                        if let Some(attrs) = attrs {
                            let key: HashMap<String, AttributeValue> = attrs
                                .iter()
                                .filter(|(k, _)| **k == keys.partition || Some(*k) == keys.sort.as_ref())
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect();
                            left.insert(key_text(table, &key));
                        }
                    }
                }
                let e = SinkError::throttled("DynamoDB left the write unprocessed (throughput exceeded); it is retried", None);
                writes
                    .iter()
                    .filter(|w| left.contains(&w.key))
                    .flat_map(|w| w.changes.iter().map(|&i| (i, e.clone())))
                    .collect()
            }
        }
    }
}

#[async_trait]
impl Sink for DynamoDbSink {
    async fn healthcheck(&self) -> Result<(), SinkError> {
        self.client()
            .await
            .list_tables()
            .limit(1)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("DynamoDB", &e))
    }

    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        let mut failed: Vec<(usize, SinkError)> = Vec::new();
        let mut writes: Vec<Write> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        let mut samples: HashMap<String, HashMap<String, AttributeValue>> = HashMap::new();
        for (i, c) in batch.iter().enumerate() {
            let key = match key_of(c, &self.keys_of(&c.dest)) {
                Ok(k) => k,
                Err(message) => {
                    failed.push((i, SinkError::permanent(message)));
                    continue;
                }
            };
            let request = match c.op {
                Op::Deleted => DeleteRequest::builder()
                    .set_key(Some(key.clone()))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build()),
                Op::Inserted | Op::Updated => PutRequest::builder()
                    .set_item(Some(item_of(c, &key)))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build()),
            };
            let request = match request {
                Ok(r) => r,
                Err(e) => {
                    failed.push((
                        i,
                        SinkError::permanent(format!("DynamoDB item of record '{}': {e}", c.id)),
                    ));
                    continue;
                }
            };
            samples.entry(c.dest.clone()).or_insert_with(|| key.clone());
            let text = key_text(&c.dest, &key);
            // One write per item: the last change wins (it carries the full record), and every
            // change of the item shares its outcome.
            match at.get(&text) {
                Some(&w) => {
                    writes[w].request = request;
                    writes[w].changes.push(i);
                }
                None => {
                    at.insert(text.clone(), writes.len());
                    writes.push(Write {
                        table: c.dest.clone(),
                        key: text,
                        request,
                        changes: vec![i],
                    });
                }
            }
        }
        if self.config.create_table {
            for (table, sample) in &samples {
                if let Err(e) = self.ensure_table(table, sample).await {
                    let tabled: Vec<usize> = writes
                        .iter()
                        .filter(|w| &w.table == table)
                        .flat_map(|w| w.changes.clone())
                        .collect();
                    failed.extend(tabled.into_iter().map(|i| (i, e.clone())));
                    writes.retain(|w| &w.table != table);
                }
            }
        }
        let results = join_all(writes.chunks(MAX_WRITES).map(|chunk| self.send(chunk))).await;
        failed.extend(results.into_iter().flatten());
        BatchOutcome::from_failures(batch.len(), failed)
    }
}
