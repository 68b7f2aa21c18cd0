//! A delivery worker's share of the stream. Partitions are owned through leases in a KV bucket
//! whose entries expire after `leaseTtlMs` (JetStream 2.9 has no pinned consumers): a worker
//! creates `p<N>` to take partition N (create fails while another worker holds it), renews it
//! with a revision-checked update every third of the TTL, and a worker that dies stops
//! renewing, so its leases expire and the others take its partitions over. Live workers
//! announce themselves (`w.<id>`, same TTL) and each takes at most its fair share; one that
//! holds more hands the extra partitions back once the engine has settled what it read.
//!
//! Each owned partition is read in stream order by an ordered pull consumer filtered on
//! `<subjectPrefix>.<N>`, starting after the partition's committed offset (offsets bucket):
//! the stream seq up to which every destination has settled every change (see `feed`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::connect::{MSG_ID_HEADER, OP_HEADER, RESOURCE_HEADER};
use super::feed::{Held, StreamFeed};
use super::JetStreamConfig;
use crate::engine::Engine;
use crate::event::Op;

/// How often settled positions are committed to the offsets bucket.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

pub struct StreamWorker {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Option<Session>>>,
}

/// What a stopped worker still owns: committed and released once the engine has drained.
struct Session {
    config: JetStreamConfig,
    id: String,
    leases: kv::Store,
    offsets: kv::Store,
    feed: Arc<StreamFeed>,
    owned: HashMap<u32, Owned>,
}

struct Owned {
    revision: u64,
    reader: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    committed: u64,
    /// Handing the partition back: no longer read, released once settled.
    releasing: bool,
}

impl StreamWorker {
    pub fn start(config: JetStreamConfig, engine: Weak<Engine>, feed: Arc<StreamFeed>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(config, engine, feed, stopped));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops reading the stream (the engine then drains what it holds).
    pub async fn stop_reading(&mut self) -> Option<impl std::future::Future<Output = ()>> {
        let _ = self.stop.send(true);
        let session = self.task.take()?.await.ok().flatten()?;
        Some(session.finish())
    }
}

/// A partition's key in the leases and offsets buckets.
fn partition_key(p: u32) -> String {
    format!("p{p}")
}

/// A partition's committed offset: every change up to this stream sequence is settled by
/// every destination (0: nothing committed yet).
pub(super) async fn committed_offset(offsets: &kv::Store, p: u32) -> Result<u64, kv::EntryError> {
    Ok(offsets
        .get(partition_key(p))
        .await?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0))
}

/// Opens (creating it if needed) a KV bucket. The bucket's stream is created here rather than
/// with `create_key_value`, which reads the account info in a shape 2.9 servers do not send.
async fn open_bucket(
    context: &jetstream::Context,
    bucket: String,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, String> {
    use jetstream::stream;
    context
        .get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("could not create the KV bucket '{bucket}': {e}"))?;
    context
        .get_key_value(bucket.clone())
        .await
        .map_err(|e| format!("could not open the KV bucket '{bucket}': {e}"))
}

async fn run(
    config: JetStreamConfig,
    engine: Weak<Engine>,
    feed: Arc<StreamFeed>,
    mut stopped: watch::Receiver<bool>,
) -> Option<Session> {
    let id = crate::outbox::identity::random_id();
    // Connect, waiting for the server (a worker may start before it).
    let (context, leases, offsets) = loop {
        let attempt = async {
            let (_, context) =
                super::connect(&config, &format!("s3db-replicator worker {id}")).await?;
            let leases = open_bucket(
                &context,
                config.lease_bucket(),
                config.lease_ttl,
                config.replicas,
            )
            .await?;
            // Offsets never expire.
            let offsets = open_bucket(
                &context,
                config.offset_bucket(),
                Duration::ZERO,
                config.replicas,
            )
            .await?;
            Ok::<_, String>((context, leases, offsets))
        };
        match attempt.await {
            Ok(ready) => break ready,
            Err(error) => {
                tracing::warn!(message = "JetStream worker cannot start yet; retrying.", %error);
                tokio::select! {
                    _ = stopped.changed() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let mut session = Session {
        config,
        id,
        leases,
        offsets,
        feed,
        owned: HashMap::new(),
    };
    let renew_every = session.config.lease_ttl / 3;
    let mut last_renewed = Instant::now();
    let mut next_renew = Instant::now();
    loop {
        if *stopped.borrow() {
            break;
        }
        if Instant::now() >= next_renew {
            next_renew = Instant::now() + renew_every;
            if session.renew().await {
                last_renewed = Instant::now();
            } else if last_renewed.elapsed() >= session.config.lease_ttl {
                // Could not renew for a whole TTL: another worker may own these partitions
                // now. Stop reading them; what the engine holds is still settled and committed.
                tracing::warn!(message = "JetStream leases lapsed; giving the partitions up.");
                session.stop_readers(None).await;
                session.owned.clear();
            }
            session.balance(&context, &engine).await;
        }
        session.commit().await;
        tokio::select! {
            _ = stopped.changed() => {}
            _ = tokio::time::sleep(COMMIT_EVERY) => {}
        }
    }
    session.stop_readers(None).await;
    Some(session)
}

impl Session {
    /// Renews the worker's presence and every lease; false when the server did not answer.
    async fn renew(&mut self) -> bool {
        if self
            .leases
            .put(format!("w.{}", self.id), self.id.clone().into())
            .await
            .is_err()
        {
            return false;
        }
        let mut lost = Vec::new();
        for (&p, owned) in self.owned.iter_mut() {
            match self
                .leases
                .update(partition_key(p), self.id.clone().into(), owned.revision)
                .await
            {
                Ok(revision) => owned.revision = revision,
                Err(error) => {
                    tracing::warn!(message = "Lost a JetStream partition lease.", partition = p, %error);
                    lost.push(p);
                }
            }
        }
        for p in lost {
            self.stop_readers(Some(p)).await;
            self.owned.remove(&p);
            self.feed.close_partition(p);
        }
        true
    }

    /// Takes free partitions up to this worker's fair share, hands extra ones back.
    async fn balance(&mut self, context: &jetstream::Context, engine: &Weak<Engine>) {
        let Ok(keys) = self.leases.keys().await else {
            return;
        };
        let keys: Vec<String> = keys.filter_map(|k| async { k.ok() }).collect().await;
        let workers = keys.iter().filter(|k| k.starts_with("w.")).count().max(1) as u32;
        let partitions = self.config.partitions;
        let share = partitions.div_ceil(workers) as usize;
        let active = self.owned.values().filter(|o| !o.releasing).count();
        if active < share {
            // Start at a place of our own so that workers do not all race for partition 0.
            let offset = (crate::hash::fnv1a64(self.id.bytes()) % u64::from(partitions)) as u32;
            let mut want = share - active;
            for i in 0..partitions {
                if want == 0 {
                    break;
                }
                let p = (offset + i) % partitions;
                if self.owned.contains_key(&p) || keys.contains(&partition_key(p)) {
                    continue;
                }
                let Ok(revision) = self
                    .leases
                    .create(partition_key(p), self.id.clone().into())
                    .await
                else {
                    continue;
                };
                let committed = match committed_offset(&self.offsets, p).await {
                    Ok(offset) => offset,
                    Err(error) => {
                        tracing::warn!(message = "Could not read a partition offset.", partition = p, %error);
                        let _ = self.leases.delete(partition_key(p)).await;
                        continue;
                    }
                };
                tracing::info!(
                    message = "Took a JetStream partition.",
                    partition = p,
                    from = committed + 1
                );
                self.feed.open_partition(p, committed + 1);
                let reader = start_reader(
                    context.clone(),
                    self.config.clone(),
                    p,
                    committed + 1,
                    engine.clone(),
                );
                self.owned.insert(
                    p,
                    Owned {
                        revision,
                        reader: Some(reader),
                        committed,
                        releasing: false,
                    },
                );
                want -= 1;
            }
        } else if active > share {
            let extra: Vec<u32> = self
                .owned
                .iter()
                .filter(|(_, o)| !o.releasing)
                .map(|(&p, _)| p)
                .take(active - share)
                .collect();
            for p in extra {
                tracing::info!(
                    message = "Handing a JetStream partition back.",
                    partition = p
                );
                self.stop_readers(Some(p)).await;
                if let Some(o) = self.owned.get_mut(&p) {
                    o.releasing = true;
                }
            }
        }
        // Released partitions whose changes are all settled: commit, then free the lease.
        let done: Vec<u32> = self
            .owned
            .iter()
            .filter(|(&p, o)| o.releasing && self.feed.unsettled(p) == 0)
            .map(|(&p, _)| p)
            .collect();
        for p in done {
            self.commit_one(p).await;
            let _ = self.leases.delete(partition_key(p)).await;
            self.owned.remove(&p);
            self.feed.close_partition(p);
        }
    }

    async fn commit(&mut self) {
        let parts: Vec<u32> = self.owned.keys().copied().collect();
        for p in parts {
            self.commit_one(p).await;
        }
    }

    async fn commit_one(&mut self, p: u32) {
        let Some(floor) = self.feed.settled_floor(p) else {
            return;
        };
        let Some(owned) = self.owned.get_mut(&p) else {
            return;
        };
        if floor <= owned.committed {
            return;
        }
        match self
            .offsets
            .put(partition_key(p), floor.to_string().into())
            .await
        {
            Ok(_) => owned.committed = floor,
            Err(error) => {
                tracing::debug!(message = "Could not commit a partition offset yet.", partition = p, %error)
            }
        }
    }

    /// Stops the reader of one partition, or of all.
    async fn stop_readers(&mut self, only: Option<u32>) {
        for (&p, owned) in self.owned.iter_mut() {
            if only.is_some_and(|o| o != p) {
                continue;
            }
            if let Some((stop, task)) = owned.reader.take() {
                let _ = stop.send(true);
                let _ = task.await;
            }
        }
    }

    /// After the engine drained: commits what was settled and frees the leases, so another
    /// worker takes the partitions over at once instead of after the TTL.
    async fn finish(mut self) {
        self.commit().await;
        let parts: Vec<u32> = self.owned.keys().copied().collect();
        for p in parts {
            let _ = self.leases.delete(partition_key(p)).await;
        }
        let _ = self.leases.delete(format!("w.{}", self.id)).await;
    }
}

fn start_reader(
    context: jetstream::Context,
    config: JetStreamConfig,
    partition: u32,
    start: u64,
    engine: Weak<Engine>,
) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut next = start;
        while !*stopped.borrow() {
            let read = read_partition(
                &context,
                &config,
                partition,
                &mut next,
                &engine,
                &mut stopped,
            );
            if let Err(error) = read.await {
                tracing::warn!(message = "Reading a JetStream partition failed; retrying.", partition, %error);
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    });
    (stop, task)
}

async fn read_partition(
    context: &jetstream::Context,
    config: &JetStreamConfig,
    partition: u32,
    next: &mut u64,
    engine: &Weak<Engine>,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let stream = context
        .get_stream(&config.stream)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: config.subject(partition),
            deliver_policy: if *next <= 1 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: *next,
                }
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let item = tokio::select! {
            _ = stopped.changed() => return Ok(()),
            item = messages.next() => item,
        };
        let Some(item) = item else {
            return Err("the consumer ended".into());
        };
        let message = item.map_err(|e| e.to_string())?;
        let Ok(info) = message.info() else {
            continue;
        };
        let stream_seq = info.stream_sequence;
        if stream_seq < *next {
            continue;
        }
        *next = stream_seq + 1;
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let (Some(resource), Some(op)) = (
            header(RESOURCE_HEADER),
            header(OP_HEADER).and_then(|o| Op::parse(&o)),
        ) else {
            tracing::warn!(
                message = "Skipped a stream message that is not a change.",
                partition,
                stream_seq
            );
            continue;
        };
        let identity =
            header(MSG_ID_HEADER).unwrap_or_else(|| format!("{}:{stream_seq}", config.stream));
        let json = String::from_utf8_lossy(&message.payload).into_owned();
        let Some(engine) = engine.upgrade() else {
            return Ok(());
        };
        let held = Held {
            identity,
            partition,
            stream_seq,
        };
        match engine.accept_from_stream(resource, op, json, held) {
            // Over queueCapacity: read on once the engine has caught up (or stop, even while a
            // destination that is down keeps it full).
            Ok(true) => tokio::select! {
                _ = stopped.changed() => return Ok(()),
                _ = engine.wait_for_capacity() => {}
            },
            Ok(false) => {}
            Err(_) => return Ok(()), // stopping
        }
    }
}
