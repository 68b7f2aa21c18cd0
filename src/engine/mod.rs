//! The replication engine: accepts changes from the host, routes them to replicators, and
//! runs one set of ordered lanes per replicator that batch, transform, write and retry.
//!
//! Flow: `push` (sync, cheap) → intake channel → router task (parse, clean, route) →
//! per-replicator lane chosen by hash(destination, id) → batch → callbacks → sink → outcomes.
//! A lane is FIFO, so one record's changes are applied in order; lanes run in parallel.

mod breaker;
mod dead_letters;
mod exposition;
mod host;
mod lane;
mod metrics;
mod outbox;
mod retry;
mod router;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use breaker::{BreakerSnapshot, BreakerState};
pub use dead_letters::DeadLetter;
pub use host::{
    CallbackCall, CallbackResult, CircuitEvent, HeldChange, Host, ItemResults, Outcome,
    OutcomeStatus,
};
pub use metrics::ReplicatorStats;
pub use outbox::OutboxInfo;
pub use retry::{RetryPolicy, Strategy};

use crate::config::{EngineConfig, Route};
use crate::error::SinkError;
use crate::error::{ConfigError, EngineError};
use crate::event::{Op, SharedEvent};
use crate::logs::{EngineLog, LogRecord, LogSink};
use crate::outbox::EntryRef;
use crate::sinks::{SchemaEvent, Sink, SinkContext};
use breaker::Breaker;
use dead_letters::DeadLetters;
use exposition::Exposition;
use lane::LaneHandle;
use metrics::Metrics;
use outbox::Outbox;

/// A change handed over by the host (or replayed from the outbox), not yet parsed.
pub(crate) struct Intake {
    /// Its position in the outbox: the order changes were accepted in.
    seq: u64,
    resource: String,
    op: Op,
    json: String,
    /// Only this replicator (full sync, `replicateBatch` to one target). `usize::MAX`: a
    /// replayed change for a replicator that no longer exists.
    only: Option<usize>,
    ticket: Option<u64>,
    /// A full-sync snapshot read after this seq: dropped if the record changed since.
    snapshot_after: Option<u64>,
    /// Re-sends this dead letter.
    redelivery_of: Option<u64>,
    /// When `push` accepted it: outcome durations start here.
    at: Instant,
}

/// One routed change waiting in a lane.
pub(crate) struct Delivery {
    event: SharedEvent,
    route: usize,
    ticket: Option<u64>,
    /// The dead letter this re-sends.
    redelivery: Option<u64>,
    /// Which version of the record this is: the original change's seq for a re-send.
    origin_seq: u64,
}

/// How a change enters the engine besides its resource, operation and record.
#[derive(Debug, Default, Clone)]
pub struct PushOptions<'a> {
    /// Only to this replicator (by id).
    pub only: Option<&'a str>,
    /// Echoed in the outcomes.
    pub ticket: Option<u64>,
    /// A full-sync snapshot read after this seq (see `begin_sync`).
    pub snapshot_after: Option<u64>,
}

pub(crate) struct Replicator {
    id: String,
    driver: String,
    enabled: AtomicBool,
    routes: Vec<Route>,
    by_source: HashMap<String, Vec<usize>>,
    sink: Arc<dyn Sink>,
    policy: RetryPolicy,
    breaker: Breaker,
    lanes: Vec<LaneHandle>,
    metrics: Metrics,
}

impl Replicator {
    fn queued(&self) -> u64 {
        self.lanes.iter().map(LaneHandle::queued).sum()
    }

    /// Age of the oldest change a lane is working on, in milliseconds.
    fn oldest_pending_ms(&self) -> u64 {
        let now = now_ms();
        self.lanes
            .iter()
            .filter_map(LaneHandle::busy_since_ms)
            .map(|t| now.saturating_sub(t))
            .max()
            .unwrap_or(0)
    }

    /// Lanes writing (or retrying) a batch now.
    fn in_flight_batches(&self) -> u64 {
        self.lanes
            .iter()
            .filter(|l| l.busy_since_ms().is_some())
            .count() as u64
    }
}

pub(crate) struct Shared {
    config: EngineConfig,
    host: Arc<dyn Host>,
    replicators: Vec<Replicator>,
    /// Changes pushed, and changes the router has finished with (routed or rejected).
    accepted: AtomicU64,
    routed: AtomicU64,
    /// Signalled whenever the router or a lane makes progress (flush, capacity waits).
    progress: Notify,
    cancel: watch::Receiver<bool>,
    /// Set once the router has finished on `stop()`: lanes exit when their queue is empty.
    drain: watch::Receiver<bool>,
    outbox: Outbox,
    dead_letters: DeadLetters,
    /// Full syncs running: while any is, the router remembers which records changed.
    syncs: AtomicU32,
    /// Replayed snapshots up to this seq need the same memory.
    replayed_snapshots_until: u64,
    /// The last seq accepted when a sync ended: its snapshots may still be queued until then.
    sync_tail: AtomicU64,
    /// The Prometheus registry behind `metrics()`.
    exposition: Exposition,
}

impl Shared {
    /// Pushed and not yet routed.
    fn intake(&self) -> u64 {
        self.accepted
            .load(SeqCst)
            .saturating_sub(self.routed.load(SeqCst))
    }

    fn pending(&self) -> u64 {
        self.intake() + self.replicators.iter().map(Replicator::queued).sum::<u64>()
    }

    fn saturated(&self) -> bool {
        let cap = self.config.queue_capacity as u64;
        self.intake() > cap || self.replicators.iter().any(|r| r.queued() > cap)
    }
}

/// How `stop()` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Every accepted change was settled before the deadline.
    pub drained: bool,
    /// Changes given up at the deadline (reported failed with `ERR_STOPPED`).
    pub abandoned: u64,
}

pub struct Engine {
    shared: Arc<Shared>,
    intake: Mutex<Option<mpsc::UnboundedSender<Intake>>>,
    router: Mutex<Option<JoinHandle<()>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    cancel: watch::Sender<bool>,
    drain: watch::Sender<bool>,
    stopped: AtomicBool,
    /// stop() has finished: every task has ended.
    finished: AtomicBool,
    /// This engine's registration with the log layer; its span attributes the events of every
    /// task and thread of the engine to it.
    log: EngineLog,
    /// Reads the JetStream partitions this process owns (mode deliver / both).
    stream_worker: tokio::sync::Mutex<Option<crate::jetstream::StreamWorker>>,
}

/// The engine's log lines go to its host.
struct HostLog(Arc<dyn Host>);

impl LogSink for HostLog {
    fn log(&self, records: Vec<LogRecord>) {
        self.0.log(records)
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Engine {
    /// Builds every sink and starts the router and lanes on the current tokio runtime.
    pub fn start(config: EngineConfig, host: Arc<dyn Host>) -> Result<Self, EngineError> {
        Self::start_with_sinks(config, host, Vec::new())
    }

    /// `start`, with ready-made sinks replacing the configured ones by position (tests).
    pub fn start_with_sinks(
        config: EngineConfig,
        host: Arc<dyn Host>,
        sinks: Vec<Arc<dyn Sink>>,
    ) -> Result<Self, EngineError> {
        let log = EngineLog::register(config.log_level, Arc::new(HostLog(host.clone())));
        // Start-up (outbox recovery, replay) and the outbox thread run in the engine's span.
        let entered = log.span().clone().entered();
        let exposition = Exposition::new();
        let feed = (config.outbox.jetstream.is_some() && config.mode.delivers_from_stream())
            .then(|| Arc::new(crate::jetstream::StreamFeed::default()));
        let (outbox, replay) = Outbox::open(&config.outbox, exposition.outbox_handles(), feed)
            .map_err(outbox_error)?;
        exposition.replayed(replay.len() as u64);
        let dead_letters = DeadLetters::open(config.outbox.dir.as_deref()).map_err(outbox_error)?;
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut replicators = Vec::with_capacity(config.replicators.len());
        let mut receivers = Vec::new();
        for (index, rc) in config.replicators.iter().enumerate() {
            let ctx = SinkContext {
                replicator_id: rc.id.clone(),
                host: host.clone(),
                timeout_ms: config.timeout_ms,
                routes: rc.routes.clone(),
            };
            let prebuilt = if index < sinks.len() {
                Some(sinks[index].clone())
            } else {
                None
            };
            let sink = match prebuilt {
                Some(s) => s,
                None => rc.sink.build(&ctx).map_err(|mut e: ConfigError| {
                    e.path = format!(
                        "replicators[{index}].config{}",
                        if e.path.is_empty() {
                            String::new()
                        } else {
                            format!(".{}", e.path)
                        }
                    );
                    e
                })?,
            };
            let policy = sink.retry_policy().unwrap_or(RetryPolicy {
                max_attempts: config.max_retries.max(1),
                base: Duration::from_millis(config.retry_delay_ms),
                max: Duration::from_millis(config.max_retry_delay_ms.max(config.retry_delay_ms)),
                strategy: Strategy::Exponential,
                jitter: true,
            });
            let mut lanes = Vec::with_capacity(config.concurrency);
            for lane in 0..config.concurrency {
                let (tx, rx) = mpsc::unbounded_channel();
                lanes.push(LaneHandle::new(tx));
                receivers.push((index, lane, rx));
            }
            let by_source = crate::config::index_routes(&rc.routes);
            replicators.push(Replicator {
                id: rc.id.clone(),
                driver: rc.driver.clone(),
                enabled: AtomicBool::new(rc.enabled),
                routes: rc.routes.clone(),
                by_source,
                sink,
                policy,
                breaker: Breaker::new(config.breaker),
                lanes,
                metrics: Metrics::new(&exposition, &rc.id, &rc.driver, &rc.routes),
            });
        }
        let replayed_snapshots_until = replay
            .iter()
            .filter(|e| e.snapshot_after.is_some())
            .map(|e| e.seq)
            .max()
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            config,
            host,
            replicators,
            accepted: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            progress: Notify::new(),
            cancel: cancel_rx,
            drain: drain_rx,
            outbox,
            dead_letters,
            syncs: AtomicU32::new(0),
            replayed_snapshots_until,
            sync_tail: AtomicU64::new(0),
            exposition,
        });
        let (intake_tx, intake_rx) = mpsc::unbounded_channel();
        // What was accepted before a crash (or a stop deadline) goes first, in its order.
        if !replay.is_empty() {
            tracing::info!(
                message = "Replaying undelivered changes from the outbox.",
                changes = replay.len()
            );
        }
        for e in replay {
            let only = e.only.as_deref().map(|id| {
                shared
                    .replicators
                    .iter()
                    .position(|r| r.id == id)
                    .unwrap_or(usize::MAX)
            });
            shared.accepted.fetch_add(1, SeqCst);
            let _ = intake_tx.send(Intake {
                seq: e.seq,
                resource: e.resource,
                op: e.op,
                json: e.json,
                only,
                ticket: None,
                snapshot_after: e.snapshot_after,
                redelivery_of: e.redelivery_of,
                at: Instant::now(),
            });
        }
        let mut tasks = Vec::new();
        for (rep, lane, rx) in receivers {
            let span = tracing::error_span!(parent: log.span(), "lane", replicator = %shared.replicators[rep].id);
            tasks.push(tokio::spawn(
                lane::run(shared.clone(), rep, lane, rx).instrument(span),
            ));
        }
        let router =
            tokio::spawn(router::run(shared.clone(), intake_rx).instrument(log.span().clone()));
        tokio::spawn(log.sweeper());
        drop(entered);
        Ok(Self {
            shared,
            intake: Mutex::new(Some(intake_tx)),
            router: Mutex::new(Some(router)),
            tasks: Mutex::new(tasks),
            cancel: cancel_tx,
            drain: drain_tx,
            stopped: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            log,
            stream_worker: tokio::sync::Mutex::new(None),
        })
    }

    /// Starts reading JetStream partitions into this engine (mode `deliver` or `both`); no-op
    /// otherwise. Call once, on the tokio runtime.
    pub fn start_stream_worker(self: &Arc<Self>) {
        let (Some(config), Some(feed)) = (
            self.shared.config.outbox.jetstream.clone(),
            self.shared.outbox.stream_feed(),
        ) else {
            return;
        };
        let worker = crate::jetstream::StreamWorker::start(config, Arc::downgrade(self), feed);
        if let Ok(mut slot) = self.stream_worker.try_lock() {
            *slot = Some(worker);
        }
    }

    /// Accepts one change read from the JetStream stream; settled, it moves its partition on.
    pub fn accept_from_stream(
        &self,
        resource: String,
        op: Op,
        json: String,
        held: crate::jetstream::Held,
    ) -> Result<bool, EngineError> {
        let guard = self.intake.lock().map_err(|_| EngineError::Stopped)?;
        let tx = guard.as_ref().ok_or(EngineError::Stopped)?;
        let seq = self.shared.outbox.append_from_stream(held);
        self.enqueue(
            tx,
            Intake {
                seq,
                resource,
                op,
                json,
                only: None,
                ticket: None,
                snapshot_after: None,
                redelivery_of: None,
                at: Instant::now(),
            },
        )
    }

    /// Hands an accepted change to the router; `true` when writers should wait for capacity.
    fn enqueue(
        &self,
        tx: &mpsc::UnboundedSender<Intake>,
        intake: Intake,
    ) -> Result<bool, EngineError> {
        self.shared.accepted.fetch_add(1, SeqCst);
        if tx.send(intake).is_err() {
            self.shared.accepted.fetch_sub(1, SeqCst);
            return Err(EngineError::Stopped);
        }
        Ok(self.shared.saturated())
    }

    /// Accepts one change. Never blocks; returns `true` when the engine holds more than
    /// `queueCapacity` undelivered changes and the caller should `wait_for_capacity()`.
    pub fn push(&self, resource: String, op: Op, json: String) -> Result<bool, EngineError> {
        self.push_with(resource, op, json, PushOptions::default())
    }

    /// `push` restricted to one replicator, with a ticket echoed in the outcomes.
    pub fn push_tagged(
        &self,
        resource: String,
        op: Op,
        json: String,
        only: Option<&str>,
        ticket: Option<u64>,
    ) -> Result<bool, EngineError> {
        self.push_with(
            resource,
            op,
            json,
            PushOptions {
                only,
                ticket,
                snapshot_after: None,
            },
        )
    }

    /// Accepts one change: stored in the outbox (when it is on disk) before this returns.
    pub fn push_with(
        &self,
        resource: String,
        op: Op,
        json: String,
        opts: PushOptions<'_>,
    ) -> Result<bool, EngineError> {
        let only = match opts.only {
            Some(id) => Some(self.replicator_index(id)?),
            None => None,
        };
        self.accept(
            resource,
            op,
            json,
            only.map(|i| (i, opts.only.unwrap_or_default())),
            opts.ticket,
            opts.snapshot_after,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn accept(
        &self,
        resource: String,
        op: Op,
        json: String,
        only: Option<(usize, &str)>,
        ticket: Option<u64>,
        snapshot_after: Option<u64>,
        redelivery_of: Option<u64>,
    ) -> Result<bool, EngineError> {
        let guard = self.intake.lock().map_err(|_| EngineError::Stopped)?;
        let tx = guard.as_ref().ok_or(EngineError::Stopped)?;
        let seq = self.shared.outbox.append(EntryRef {
            seq: 0,
            op,
            resource: &resource,
            json: &json,
            only: only.map(|(_, id)| id),
            snapshot_after,
            redelivery_of,
        });
        self.enqueue(
            tx,
            Intake {
                seq,
                resource,
                op,
                json,
                only: only.map(|(i, _)| i),
                ticket,
                snapshot_after,
                redelivery_of,
                at: Instant::now(),
            },
        )
    }

    /// The seq of the last accepted change: a full sync takes it before reading a record.
    pub fn last_seq(&self) -> u64 {
        self.shared.outbox.last_seq()
    }

    /// Brackets a full sync: while one runs, snapshots older than a live change are dropped.
    pub fn begin_sync(&self) {
        self.shared.outbox.pin_sync();
        self.shared.syncs.fetch_add(1, SeqCst);
    }

    pub fn end_sync(&self) {
        self.shared.outbox.unpin_sync();
        self.shared
            .sync_tail
            .fetch_max(self.shared.outbox.last_seq(), SeqCst);
        let _ = self
            .shared
            .syncs
            .fetch_update(SeqCst, SeqCst, |n| Some(n.saturating_sub(1)));
    }

    /// Dead letters, oldest first, optionally of one replicator: (total, page).
    pub fn dead_letters(
        &self,
        replicator: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> (usize, Vec<DeadLetter>) {
        self.shared.dead_letters.list(replicator, limit, offset)
    }

    /// Re-sends dead letters (these, or all; optionally of one replicator) to the replicator
    /// and destination that failed them, oldest change first. Returns how many were queued.
    pub fn retry_dead_letters(
        &self,
        ids: Option<&[u64]>,
        replicator: Option<&str>,
        ticket: Option<u64>,
    ) -> Result<usize, EngineError> {
        if let Some(id) = replicator {
            self.replicator_index(id)?;
        }
        let letters = self.shared.dead_letters.select(ids, replicator);
        let mut queued = 0;
        for dl in &letters {
            let Ok(index) = self.replicator_index(&dl.replicator) else {
                continue;
            };
            queued += 1;
            let mut record = dl.data.clone();
            if let (Some(before), Some(map)) = (&dl.before, record.as_object_mut()) {
                map.insert("$before".into(), before.clone());
            }
            self.accept(
                dl.resource_name.clone(),
                dl.operation,
                record.to_string(),
                Some((index, &dl.replicator)),
                ticket,
                None,
                Some(dl.id),
            )?;
        }
        Ok(queued)
    }

    /// Drops dead letters for good; returns how many existed.
    pub fn discard_dead_letters(&self, ids: &[u64]) -> usize {
        self.shared.dead_letters.remove(ids)
    }

    pub fn outbox(&self) -> OutboxInfo {
        self.shared.outbox.info()
    }

    pub fn dead_letter_count(&self) -> usize {
        self.shared.dead_letters.len()
    }

    pub fn saturated(&self) -> bool {
        self.shared.saturated()
    }

    /// Resolves once the engine is back under `queueCapacity`.
    pub async fn wait_for_capacity(&self) {
        self.wait_until(|s| !s.saturated() || self.stopped.load(SeqCst))
            .await
    }

    /// Resolves once every change accepted before the call is delivered, failed or skipped,
    /// and the host has handled their outcomes.
    pub async fn flush(&self) {
        let target = self.shared.accepted.load(SeqCst);
        self.wait_until(|s| s.routed.load(SeqCst) >= target).await;
        let marks: Vec<Vec<u64>> = self
            .shared
            .replicators
            .iter()
            .map(|r| r.lanes.iter().map(LaneHandle::enqueued).collect())
            .collect();
        self.wait_until(|s| {
            s.replicators
                .iter()
                .zip(&marks)
                .all(|(r, m)| r.lanes.iter().zip(m).all(|(l, &mark)| l.settled() >= mark))
        })
        .await;
        self.shared.host.barrier().await;
    }

    async fn wait_until(&self, done: impl Fn(&Shared) -> bool) {
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.shared) || self.tasks_finished() {
                return;
            }
            notified.await;
        }
    }

    fn tasks_finished(&self) -> bool {
        // stop() empties `tasks` while it drains: an empty list is not "finished".
        self.finished.load(SeqCst)
            || self
                .tasks
                .lock()
                .map(|t| !t.is_empty() && t.iter().all(JoinHandle::is_finished))
                .unwrap_or(true)
    }

    /// Stops accepting changes and drains what is queued, for at most `deadline`. Whatever is
    /// still undelivered then is reported failed with `ERR_STOPPED`.
    pub async fn stop(&self, deadline: Duration) -> StopReport {
        self.stop_inner(deadline)
            .instrument(self.log.span().clone())
            .await
    }

    async fn stop_inner(&self, deadline: Duration) -> StopReport {
        if self.stopped.swap(true, SeqCst) {
            return StopReport {
                drained: true,
                abandoned: 0,
            };
        }
        // No more reading from the stream; its leases are freed once the engine has drained.
        let stream_finish = match self.stream_worker.lock().await.as_mut() {
            Some(w) => w.stop_reading().await,
            None => None,
        };
        if let Ok(mut intake) = self.intake.lock() {
            intake.take();
        }
        let router = self.router.lock().ok().and_then(|mut r| r.take());
        let lanes: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        let pending_before = self.shared.pending();
        let all = async {
            // The router finishes what was pushed before the intake closed; then the lanes
            // drain their queues and exit.
            if let Some(router) = router {
                join_tasks(vec![router]).await;
            }
            let _ = self.drain.send(true);
            join_tasks(lanes).await;
        };
        tokio::pin!(all);
        let drained = tokio::time::timeout(deadline, all.as_mut()).await.is_ok();
        let mut abandoned = 0;
        if !drained {
            abandoned = self.shared.pending().min(pending_before);
            let _ = self.cancel.send(true);
            // Lanes notice the cancel between steps; give them a moment to report.
            let _ = tokio::time::timeout(Duration::from_secs(5), all.as_mut()).await;
        }
        if let Some(finish) = stream_finish {
            finish.await;
        }
        for r in &self.shared.replicators {
            r.sink.close().await;
        }
        self.shared.outbox.close();
        // What the rate limit held back is reported before the host's last barrier.
        self.log.close();
        self.shared.host.barrier().await;
        self.finished.store(true, SeqCst);
        self.shared.progress.notify_waiters();
        StopReport { drained, abandoned }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(SeqCst)
    }

    fn replicator_index(&self, id: &str) -> Result<usize, EngineError> {
        self.shared
            .replicators
            .iter()
            .position(|r| r.id == id)
            .ok_or_else(|| EngineError::UnknownReplicator(id.to_string()))
    }

    /// Enables or disables a replicator. Changes made while it is disabled are not queued for it.
    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), EngineError> {
        let i = self.replicator_index(id)?;
        self.shared.replicators[i].enabled.store(enabled, SeqCst);
        Ok(())
    }

    pub fn stats(&self) -> Vec<ReplicatorStats> {
        self.shared
            .replicators
            .iter()
            .map(|r| {
                r.metrics.snapshot(
                    &r.id,
                    &r.driver,
                    r.enabled.load(SeqCst),
                    r.queued(),
                    r.oldest_pending_ms(),
                    r.breaker.snapshot(),
                )
            })
            .collect()
    }

    /// Every metric in the Prometheus text exposition format, version 0.0.4.
    pub fn metrics_text(&self) -> String {
        self.shared.exposition.text(&self.shared)
    }

    /// The same metrics as JSON: `{ name: { type, help, samples } }` (see `Exposition::json`).
    pub fn metrics_json(&self) -> serde_json::Value {
        self.shared.exposition.json(&self.shared)
    }

    /// Undelivered changes, all replicators together (plus those not yet routed).
    pub fn pending(&self) -> u64 {
        self.shared.pending()
    }

    /// When every undelivered change waits for a destination that is down (its circuit is not
    /// closed), the replicators they wait for and how many each holds; `None` while anything
    /// else is in progress. The host then need not stay up for them when the outbox is on disk:
    /// they are delivered when the destination is back, or after the next start.
    pub fn waiting_on_outage(&self) -> Option<Vec<(String, u64)>> {
        if self.shared.intake() > 0 {
            return None;
        }
        let mut waiting = Vec::new();
        for r in &self.shared.replicators {
            let queued = r.queued();
            if queued == 0 {
                continue;
            }
            if r.breaker.is_closed() {
                return None;
            }
            waiting.push((r.id.clone(), queued));
        }
        (!waiting.is_empty()).then_some(waiting)
    }

    /// Records in the outbox, now, which changes are settled (the host calls it as the process
    /// exits, so delivered changes are not replayed at the next start).
    pub fn checkpoint(&self) -> u64 {
        self.shared.outbox.checkpoint()
    }

    /// Checks every destination; `(replicator id, error)` for each that failed.
    pub async fn healthcheck(&self) -> Vec<(String, String)> {
        let mut bad = Vec::new();
        for r in &self.shared.replicators {
            if let Err(e) = r.sink.healthcheck().await {
                bad.push((r.id.clone(), e.message));
            }
        }
        bad
    }

    /// Runs schema sync for every destination table a source resource is routed to, given
    /// the resource's s3db.js attributes. Returns what was done, per replicator; the first
    /// failure (e.g. a mismatch with `onMismatch: 'error'`) as `Err((replicator, error))`.
    pub async fn sync_schema(
        &self,
        resource: &str,
        attributes: &serde_json::Value,
    ) -> Result<Vec<(String, SchemaEvent)>, (String, SinkError)> {
        let schema = crate::schema::parse_attributes(attributes);
        let mut events = Vec::new();
        for r in &self.shared.replicators {
            let Some(routes) = r.by_source.get(resource) else {
                continue;
            };
            let mut done: Vec<&str> = Vec::new();
            for &i in routes {
                let route = &r.routes[i];
                if done.contains(&route.dest.as_str()) {
                    continue;
                }
                done.push(&route.dest);
                let span = tracing::error_span!(parent: self.log.span(), "schema_sync", replicator = %r.id, table = %route.dest);
                let table_events = r
                    .sink
                    .sync_schema(&route.dest, &schema)
                    .instrument(span.clone())
                    .await
                    .map_err(|e| {
                        span.in_scope(|| {
                            tracing::warn!(message = "Schema sync failed.", code = e.code().as_str(), error = %e.message)
                        });
                        (r.id.clone(), e)
                    })?;
                events.extend(table_events.into_iter().map(|e| (r.id.clone(), e)));
            }
        }
        Ok(events)
    }
}

fn outbox_error(e: crate::outbox::OutboxError) -> EngineError {
    EngineError::Config(ConfigError::new(
        "outbox.dir",
        e.to_string(),
        "give each plugin instance its own directory (outbox: { dir }), make it writable, or choose outbox: false for memory only",
    ))
}

/// Awaits every task; a panicked task is logged, never propagated to the host.
async fn join_tasks(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        if let Err(error) = t.await {
            if error.is_panic() {
                tracing::error!(message = "Engine task panicked.", %error);
            }
        }
    }
}
