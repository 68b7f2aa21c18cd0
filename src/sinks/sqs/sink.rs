//! The SQS sink: one message per change and queue, SendMessageBatch per queue (10 entries and
//! `maxMessageBytes` at most, never two changes of one record in one request, so a retried
//! change cannot be overtaken), per-entry failures mapped to their changes, a request refused
//! as a whole for one invalid entry halved until that entry fails alone.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use futures_util::future::join_all;
use tokio::sync::OnceCell;

use super::config::{AttributeSetting, SqsConfig};
use super::request::{body, group_id, is_fifo};
use crate::config::Route;
use crate::error::SinkError;
use crate::event::Change;
use crate::sinks::aws::classify;
use crate::sinks::{BatchOutcome, Sink};

/// SQS's limit of entries per SendMessageBatch.
const MAX_ENTRIES: usize = 10;

pub(crate) struct SqsSink {
    config: SqsConfig,
    routes: Vec<Route>,
    client: OnceCell<aws_sdk_sqs::Client>,
}

/// One message to send: the change it carries and its size as SQS counts it.
struct Message {
    change: usize,
    body: String,
    bytes: usize,
}

impl SqsSink {
    pub fn new(config: SqsConfig, routes: Vec<Route>) -> Self {
        Self {
            config,
            routes,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &aws_sdk_sqs::Client {
        self.client
            .get_or_init(|| async {
                aws_sdk_sqs::Client::new(&self.config.auth.sdk_config().await)
            })
            .await
    }

    fn attributes(&self, c: &Change) -> HashMap<String, MessageAttributeValue> {
        let string = |v: &str, ty: &str| {
            MessageAttributeValue::builder()
                .data_type(ty)
                .string_value(v)
                .build()
                .ok()
        };
        let mut out = HashMap::new();
        for (name, a) in &self.config.message_attributes {
            let v = match a {
                AttributeSetting::Plain(s) => string(s, "String"),
                AttributeSetting::Typed {
                    data_type,
                    string_value,
                } => string(string_value, data_type),
            };
            if let Some(v) = v {
                out.insert(name.clone(), v);
            }
        }
        out.extend(string(&c.resource, "String").map(|v| ("resource".to_string(), v)));
        out.extend(string(c.op.verb(), "String").map(|v| ("action".to_string(), v)));
        out
    }

    /// Sends one queue's messages in order; `results[change]` gets each failure.
    async fn send_queue(
        &self,
        queue: &str,
        batch: &[Change],
        messages: Vec<Message>,
    ) -> Vec<(usize, SinkError)> {
        let mut failed = Vec::new();
        // Records whose change could not be sent: their later changes wait too (order).
        let mut blocked: HashMap<(&str, &str), SinkError> = HashMap::new();
        let mut request: Vec<Message> = Vec::new();
        let mut bytes = 0;
        for m in messages {
            let key = batch[m.change].key();
            if let Some(e) = blocked.get(&key) {
                failed.push((m.change, e.clone()));
                continue;
            }
            let in_request = request.iter().any(|r| batch[r.change].key() == key);
            if !request.is_empty()
                && (request.len() == MAX_ENTRIES
                    || bytes + m.bytes > self.config.max_message_bytes
                    || in_request)
            {
                let sent = std::mem::take(&mut request);
                bytes = 0;
                for (change, e) in self.send_request(queue, batch, &sent).await {
                    if e.is_retryable() {
                        blocked.insert(batch[change].key(), e.clone());
                    }
                    failed.push((change, e));
                }
                if let Some(e) = blocked.get(&key) {
                    failed.push((m.change, e.clone()));
                    continue;
                }
            }
            bytes += m.bytes;
            request.push(m);
        }
        if !request.is_empty() {
            failed.extend(self.send_request(queue, batch, &request).await);
        }
        failed
    }

    async fn send_request(
        &self,
        queue: &str,
        batch: &[Change],
        request: &[Message],
    ) -> Vec<(usize, SinkError)> {
        let fifo = is_fifo(queue);
        let mut entries = Vec::with_capacity(request.len());
        for (k, m) in request.iter().enumerate() {
            let c = &batch[m.change];
            let mut entry = SendMessageBatchRequestEntry::builder()
                // Generated ids: SQS allows only [A-Za-z0-9_-]{1,80}, record ids may hold anything.
                .id(format!("m{k}"))
                .message_body(m.body.clone())
                .set_message_attributes(Some(self.attributes(c)));
            if fifo {
                entry = entry.message_group_id(
                    self.config
                        .message_group_id
                        .clone()
                        .unwrap_or_else(|| group_id(&c.resource, &c.id)),
                );
                if self.config.deduplication_id {
                    // The change's identity: a redelivered change is dropped by SQS, a second
                    // update of the record is not.
                    entry = entry.message_deduplication_id(c.change_id.clone());
                }
            }
            match entry.build() {
                Ok(e) => entries.push(e),
                Err(e) => {
                    return request
                        .iter()
                        .map(|m| (m.change, SinkError::permanent(format!("SQS message: {e}"))))
                        .collect()
                }
            }
        }
        let result = self
            .client()
            .await
            .send_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Err(e) => {
                let e = classify(&format!("SQS SendMessageBatch to {queue}"), &e);
                if e.is_retryable() || request.len() == 1 {
                    return request.iter().map(|m| (m.change, e.clone())).collect();
                }
                // One invalid entry (say, over the queue's own MaximumMessageSize) makes SQS
                // refuse the whole request and send nothing: halve it until that entry is alone,
                // so only its record fails. A request never holds two changes of one record, so
                // the halves keep per-record order.
                let (first, second) = request.split_at(request.len() / 2);
                let mut failed = Box::pin(self.send_request(queue, batch, first)).await;
                failed.extend(Box::pin(self.send_request(queue, batch, second)).await);
                failed
            }
            Ok(out) => out
                .failed()
                .iter()
                .filter_map(|f| {
                    let k: usize = f.id().strip_prefix('m')?.parse().ok()?;
                    let change = request.get(k)?.change;
                    let message = format!(
                        "SQS rejected the message of record '{}': {}: {}",
                        batch[change].id,
                        f.code(),
                        f.message().unwrap_or("")
                    );
                    let e = if f.sender_fault() {
                        SinkError::permanent(message)
                    } else if f.code().contains("Throttl") {
                        SinkError::throttled(message, None)
                    } else {
                        SinkError::retryable(message)
                    };
                    Some((change, e))
                })
                .collect(),
        }
    }
}

/// What SQS counts towards a message's size: the body and the attributes' names, types, values.
fn message_bytes(body: &str, attributes: &HashMap<String, MessageAttributeValue>) -> usize {
    body.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.data_type().len() + v.string_value().map_or(0, str::len))
            .sum::<usize>()
}

#[async_trait]
impl Sink for SqsSink {
    async fn healthcheck(&self) -> Result<(), SinkError> {
        let queues: HashSet<String> = self
            .routes
            .iter()
            .flat_map(|r| self.config.queues_for(&self.routes, &r.source, &r.dest))
            .collect();
        for q in queues {
            self.client()
                .await
                .get_queue_attributes()
                .queue_url(&q)
                .send()
                .await
                .map_err(|e| classify(&format!("SQS queue {q}"), &e))?;
        }
        Ok(())
    }

    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        let mut failed: Vec<(usize, SinkError)> = Vec::new();
        let mut by_queue: Vec<(String, Vec<Message>)> = Vec::new();
        for (i, c) in batch.iter().enumerate() {
            let text = body(c);
            let bytes = message_bytes(&text, &self.attributes(c));
            if bytes > self.config.max_message_bytes {
                failed.push((
                    i,
                    SinkError::permanent(format!(
                        "record '{}' is too large for an SQS message: {bytes} bytes, the limit is {} (maxMessageBytes); shrink it with a transform",
                        c.id, self.config.max_message_bytes
                    )),
                ));
                continue;
            }
            let queues = self.config.queues_for(&self.routes, &c.resource, &c.dest);
            if queues.is_empty() {
                failed.push((
                    i,
                    SinkError::permanent(format!("resource '{}' has no queue", c.resource)),
                ));
            }
            for q in queues {
                let m = Message {
                    change: i,
                    body: text.clone(),
                    bytes,
                };
                match by_queue.iter_mut().find(|(u, _)| *u == q) {
                    Some((_, v)) => v.push(m),
                    None => by_queue.push((q, vec![m])),
                }
            }
        }
        let sends = by_queue
            .into_iter()
            .map(|(q, messages)| async move { self.send_queue(&q, batch, messages).await });
        for f in join_all(sends).await.into_iter().flatten() {
            // A change sent to several queues fails once, with its first error.
            if !failed.iter().any(|(i, _)| *i == f.0) {
                failed.push(f);
            }
        }
        BatchOutcome::from_failures(batch.len(), failed)
    }
}
