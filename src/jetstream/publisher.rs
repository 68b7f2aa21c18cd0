//! Publishes accepted changes to the stream. Many publishes are in flight at once on one
//! connection (async-nats pipelines them, so they travel in batches); each caller awaits the
//! server's ack of its own change, and the window of unacknowledged publishes is bounded.
//!
//! While the server is unreachable a publish is retried (same `Nats-Msg-Id`, so the server
//! keeps one copy) until `publishTimeoutMs`, then fails: the application's write fails with it
//! instead of being accepted without a durable copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio::sync::Semaphore;

use super::connect::{MSG_ID_HEADER, OP_HEADER, RESOURCE_HEADER};
use super::JetStreamConfig;

pub struct Publisher {
    config: JetStreamConfig,
    context: jetstream::Context,
    client: async_nats::Client,
    window: Arc<Semaphore>,
    /// This process's publisher id: with a seq, the change's identity.
    id: String,
    next_seq: AtomicU64,
    published: AtomicU64,
    /// Per partition, the highest stream sequence this process has stored.
    highest: Mutex<HashMap<u32, u64>>,
}

/// Where one change went.
#[derive(Debug, Clone)]
pub struct Published {
    pub identity: String,
    pub partition: u32,
    pub stream_seq: u64,
}

impl Publisher {
    pub async fn connect(config: JetStreamConfig) -> Result<Self, String> {
        let id = crate::outbox::identity::random_id();
        let (client, context) =
            super::connect(&config, &format!("s3db-replicator publisher {id}")).await?;
        Ok(Self {
            window: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            context,
            client,
            id,
            next_seq: AtomicU64::new(1),
            published: AtomicU64::new(0),
            highest: Mutex::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn published(&self) -> u64 {
        self.published.load(SeqCst)
    }

    /// Publishes one change and resolves once the server has stored it.
    pub async fn publish(
        &self,
        resource: &str,
        op: &str,
        record_id: &str,
        json: String,
    ) -> Result<Published, String> {
        let started = Instant::now();
        let seq = self.next_seq.fetch_add(1, SeqCst);
        let identity = format!("{}:{seq}", self.id);
        let partition = self.config.partition_of(resource, record_id);
        let subject = self.config.subject(partition);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(MSG_ID_HEADER, identity.as_str());
        headers.insert(RESOURCE_HEADER, resource);
        headers.insert(OP_HEADER, op);
        let payload = bytes::Bytes::from(json);
        let deadline = self.config.publish_timeout;
        // Waits (bounded by the deadline) when maxInFlight publishes await their ack.
        let _permit = tokio::time::timeout(deadline, self.window.acquire())
            .await
            .map_err(|_| self.timeout_error(started, "too many publishes awaiting an ack"))?
            .map_err(|_| "the publisher is closed".to_string())?;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = async {
                let ack = self
                    .context
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                ack.await.map_err(|e| e.to_string())
            };
            let left = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, result).await {
                Ok(Ok(ack)) => {
                    self.published.fetch_add(1, SeqCst);
                    if let Ok(mut highest) = self.highest.lock() {
                        let top = highest.entry(partition).or_insert(0);
                        *top = (*top).max(ack.sequence);
                    }
                    return Ok(Published {
                        identity,
                        partition,
                        stream_seq: ack.sequence,
                    });
                }
                Ok(Err(error)) => {
                    if started.elapsed() + Duration::from_millis(100) >= deadline {
                        return Err(self.timeout_error(started, &error));
                    }
                    if attempt == 1 {
                        tracing::warn!(message = "JetStream publish failed; retrying.", %error);
                    }
                    tokio::time::sleep(Duration::from_millis((50 * attempt as u64).min(500))).await;
                }
                Err(_) => return Err(self.timeout_error(started, "no ack from the server")),
            }
        }
    }

    fn timeout_error(&self, started: Instant, last: &str) -> String {
        format!(
            "the change was not stored in JetStream (stream '{}' at {}) within {} ms: {last}; the write is not replicated (raise outbox.jetstream.publishTimeoutMs to wait longer for the server)",
            self.config.stream,
            self.config.url,
            started.elapsed().as_millis()
        )
    }

    /// Resolves once every change this process has stored so far is settled by the workers
    /// (delivered, skipped or dead-lettered by every destination): each partition's committed
    /// offset in the offsets bucket has reached it. Waits for as long as that takes (no worker
    /// running: until one is); returns false at once when the publisher is closed meanwhile.
    pub async fn settled(&self) -> bool {
        let mut pending: Vec<(u32, u64)> = self
            .highest
            .lock()
            .map(|h| h.iter().map(|(&p, &seq)| (p, seq)).collect())
            .unwrap_or_default();
        let mut offsets = None;
        while !pending.is_empty() {
            if self.window.is_closed() {
                return false;
            }
            if offsets.is_none() {
                // Created by the first worker: until then nothing is settled.
                offsets = self
                    .context
                    .get_key_value(self.config.offset_bucket())
                    .await
                    .ok();
            }
            if let Some(kv) = &offsets {
                let mut left = Vec::with_capacity(pending.len());
                for (p, seq) in pending {
                    // Unreadable now: asked again at the next poll.
                    let committed = super::worker::committed_offset(kv, p).await.unwrap_or(0);
                    if committed < seq {
                        left.push((p, seq));
                    }
                }
                pending = left;
            }
            if !pending.is_empty() {
                // Workers commit every 200 ms: a poll of 25 ms adds little to that.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        true
    }

    /// Sends what is buffered and closes the connection.
    pub async fn close(&self) {
        self.window.close();
        let _ = self.client.flush().await;
    }
}
