//! The engine's side of the durable outbox: numbers every accepted change, appends it to the
//! segment log before `push` returns, tracks which changes every destination has settled
//! (the ledger), and in the background fsyncs (group commit) and compacts the log up to the
//! oldest unsettled change. On start, what was accepted and not settled is replayed.
//!
//! "Settled" is delivered, skipped on purpose, or dead-lettered (the dead letter is persisted
//! first). A change abandoned at the `stop()` deadline stays unsettled, so it is replayed on
//! the next start instead of being lost.
//!
//! With the JetStream outbox a worker's changes come from the shared stream, which already
//! holds them durably: nothing is written here, and a settled change is reported to the
//! `StreamFeed`, whose settled positions are the partitions' acknowledgements.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::exposition::OutboxHandles;
use crate::config::OutboxConfig;
use crate::jetstream::{Held, StreamFeed};
use crate::outbox::{Entry, EntryRef, LogOptions, OutboxError, SegmentLog};

pub(crate) struct Outbox {
    /// Taken on `close()`, which releases the directory's lock for a next plugin instance.
    log: Mutex<Option<Arc<SegmentLog>>>,
    durable: bool,
    /// Changes come from the JetStream stream (a delivery worker).
    stream: Option<Arc<StreamFeed>>,
    dir: Option<PathBuf>,
    /// This outbox's id: with a seq, the identity of a change (`{id}:{seq}`).
    id: String,
    ledger: Arc<Mutex<Ledger>>,
    /// The seq the next accepted change gets.
    next_seq: Arc<AtomicU64>,
    appended: Arc<AtomicU64>,
    /// Its metrics: appends that failed, fsync durations.
    metrics: OutboxHandles,
    replayed: u64,
    stop: Arc<AtomicBool>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxInfo {
    /// `disk`, `memory` or `jetstream`.
    pub mode: &'static str,
    /// This outbox's id, the first part of every change's identity (`{id}:{seq}`).
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Accepted changes not yet settled by every destination (disk mode).
    pub pending: u64,
    pub bytes: u64,
    pub segments: usize,
    /// Changes replayed from the log at start.
    pub replayed: u64,
    /// Appends that failed (disk full...): those changes were kept in memory only.
    pub append_errors: u64,
    /// JetStream mode: the partitions this process owns now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<u32>>,
}

impl Outbox {
    /// Opens the log (if on disk) and returns the changes to replay, oldest first.
    pub fn open(
        config: &OutboxConfig,
        metrics: OutboxHandles,
        stream: Option<Arc<StreamFeed>>,
    ) -> Result<(Self, Vec<Entry>), OutboxError> {
        let (log, entries, next, id) = match &config.dir {
            // The stream is the log: `dir` only keeps dead letters.
            _ if stream.is_some() => (None, Vec::new(), 1, crate::outbox::identity::random_id()),
            Some(dir) => {
                let (log, recovered) = SegmentLog::open(
                    dir,
                    LogOptions {
                        segment_bytes: config.segment_bytes,
                    },
                )?;
                if recovered.corrupt_records > 0 || recovered.dropped_bytes > 0 {
                    tracing::warn!(
                        message = "Outbox recovery dropped unreadable data.",
                        corrupt_records = recovered.corrupt_records,
                        dropped_bytes = recovered.dropped_bytes
                    );
                }
                let id = crate::outbox::identity::load_or_create(dir)?;
                (
                    Some(Arc::new(log)),
                    recovered.entries,
                    recovered.next_seq.max(1),
                    id,
                )
            }
            // Memory only: seqs restart with the process, so the id is new per process.
            None => (None, Vec::new(), 1, crate::outbox::identity::random_id()),
        };
        let mut ledger = Ledger::default();
        for e in &entries {
            ledger.insert(e.seq, e.snapshot_after);
        }
        let outbox = Self {
            durable: log.is_some() || stream.is_some(),
            stream,
            dir: config.dir.clone(),
            id,
            log: Mutex::new(log),
            ledger: Arc::new(Mutex::new(ledger)),
            next_seq: Arc::new(AtomicU64::new(next)),
            appended: Arc::new(AtomicU64::new(0)),
            metrics,
            replayed: entries.len() as u64,
            stop: Arc::new(AtomicBool::new(false)),
            worker: Mutex::new(None),
        };
        outbox.start_worker(config.fsync_interval_ms);
        Ok((outbox, entries))
    }

    /// The stable identity of the change numbered `seq`: `{outbox id}:{seq}`.
    pub fn change_id(&self, seq: u64) -> String {
        // A change read from the stream keeps the identity its publisher gave it.
        if let Some(identity) = self.stream.as_ref().and_then(|f| f.identity(seq)) {
            return identity;
        }
        format!("{}:{seq}", self.id)
    }

    pub fn stream_feed(&self) -> Option<Arc<StreamFeed>> {
        self.stream.clone()
    }

    /// Numbers a change read from the stream (nothing to store: the stream has it).
    pub fn append_from_stream(&self, held: Held) -> u64 {
        let seq = self.next_seq.fetch_add(1, SeqCst);
        if let Ok(mut ledger) = self.ledger.lock() {
            ledger.insert(seq, None);
        }
        if let Some(feed) = &self.stream {
            feed.hold(seq, held);
        }
        seq
    }

    /// Accepted changes survive the process (the log is on disk).
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    /// The seq of the last accepted change (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.load(SeqCst).saturating_sub(1)
    }

    /// Numbers and stores one change. The caller holds the intake lock, so seqs follow the
    /// order in which changes enter the router. A failed append keeps the change in memory:
    /// it is still delivered, only not crash-safe (counted in `appendErrors`).
    pub fn append(&self, mut entry: EntryRef<'_>) -> u64 {
        // Single writer (the intake lock): the seq enters the ledger before `next_seq` moves
        // past it, so the compactor's watermark can never skip a change being written.
        let seq = self.next_seq.load(SeqCst);
        entry.seq = seq;
        if self.stream.is_some() {
            // replicateBatch / a full sync in a worker: tracked, kept in memory only.
            if let Ok(mut ledger) = self.ledger.lock() {
                ledger.insert(seq, entry.snapshot_after);
            }
            self.next_seq.store(seq + 1, SeqCst);
            return seq;
        }
        if let Some(log) = self.log() {
            if let Ok(mut ledger) = self.ledger.lock() {
                ledger.insert(seq, entry.snapshot_after);
            }
            self.next_seq.store(seq + 1, SeqCst);
            match log.append(&entry) {
                Ok(()) => {
                    self.appended.fetch_add(1, Relaxed);
                }
                Err(error) => {
                    let first = self.metrics.append_errors.get() == 0;
                    self.metrics.append_errors.inc();
                    if first {
                        tracing::error!(message = "Could not write to the outbox; changes are kept in memory only.", %error);
                    }
                }
            }
        } else {
            self.next_seq.store(seq + 1, SeqCst);
        }
        seq
    }

    /// The router is about to hand `seq` to `n` lanes (before any of them can settle it).
    pub fn add_deliveries(&self, seq: u64, n: u32) {
        if n > 0 {
            self.adjust(seq, n as i64);
        }
    }

    /// A full sync begins: keep what is accepted from now on replayable until it ends.
    pub fn pin_sync(&self) {
        if let Ok(mut l) = self.ledger.lock() {
            *l.syncs.entry(self.last_seq()).or_default() += 1;
        }
    }

    /// A full sync ended (the oldest one still pinned is released).
    pub fn unpin_sync(&self) {
        if let Ok(mut l) = self.ledger.lock() {
            if let Some(mut e) = l.syncs.first_entry() {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// The router is done with `seq`: drops the hold taken at `append`.
    pub fn release(&self, seq: u64) {
        self.adjust(seq, -1);
    }

    /// Deliveries that are done for good (delivered, skipped, dead-lettered).
    pub fn settle(&self, seqs: impl IntoIterator<Item = u64>) {
        if !self.durable {
            return;
        }
        let Ok(mut ledger) = self.ledger.lock() else {
            return;
        };
        let mut done = Vec::new();
        for seq in seqs {
            if ledger.adjust(seq, -1) {
                done.push(seq);
            }
        }
        drop(ledger);
        self.settled(&done);
    }

    fn adjust(&self, seq: u64, delta: i64) {
        if !self.durable {
            return;
        }
        let done = self
            .ledger
            .lock()
            .map(|mut ledger| ledger.adjust(seq, delta))
            .unwrap_or(false);
        if done {
            self.settled(&[seq]);
        }
    }

    /// Changes every destination is done with (stream mode: their partitions move on).
    fn settled(&self, seqs: &[u64]) {
        if let (Some(feed), false) = (&self.stream, seqs.is_empty()) {
            feed.settled(seqs);
        }
    }

    fn start_worker(&self, fsync_interval_ms: Option<u64>) {
        let Some(log) = self.log() else {
            return;
        };
        let ledger = self.ledger.clone();
        let next_seq = self.next_seq.clone();
        let appended = self.appended.clone();
        let stop = self.stop.clone();
        let fsync_seconds = self.metrics.fsync_seconds.clone();
        let tick = Duration::from_millis(fsync_interval_ms.unwrap_or(50));
        let fsync = fsync_interval_ms.is_some();
        // The thread's events belong to the engine that opened the outbox.
        let span = tracing::Span::current();
        let handle = std::thread::Builder::new()
            .name("s3db-replicator-outbox".into())
            .spawn(move || {
                let _span = span.entered();
                let mut synced = 0;
                let mut compacted = 0;
                loop {
                    let stopping = stop.load(SeqCst);
                    let n = appended.load(Relaxed);
                    if fsync && n != synced {
                        synced = n;
                        let started = std::time::Instant::now();
                        if let Err(error) = log.sync() {
                            tracing::error!(message = "Outbox fsync failed.", %error);
                        }
                        fsync_seconds.observe(started.elapsed().as_secs_f64());
                    }
                    // What is settled is recorded as settled within one tick, so a process that
                    // ends right after its deliveries does not replay them at the next start.
                    let mark = watermark(&ledger, &next_seq);
                    if mark > compacted {
                        match log.compact(mark) {
                            Ok(_) => compacted = mark,
                            Err(error) => {
                                tracing::warn!(message = "Outbox compaction failed.", %error)
                            }
                        }
                    }
                    if stopping {
                        break;
                    }
                    std::thread::park_timeout(tick);
                }
            });
        match handle {
            Ok(h) => {
                if let Ok(mut w) = self.worker.lock() {
                    *w = Some(h);
                }
            }
            Err(error) => tracing::error!(message = "Could not start the outbox thread.", %error),
        }
    }

    /// Persists the watermark now, on the caller's thread (the host's exit hook: the outbox
    /// thread may not get another tick before the process ends). Returns the watermark.
    pub fn checkpoint(&self) -> u64 {
        let Some(log) = self.log() else {
            return 0;
        };
        let mark = watermark(&self.ledger, &self.next_seq);
        if let Err(error) = log.sync().and_then(|()| log.compact(mark).map(|_| ())) {
            tracing::warn!(message = "Outbox checkpoint failed.", %error);
        }
        mark
    }

    /// Final fsync and compaction; the log stays usable for appends (none come after stop).
    pub fn close(&self) {
        self.stop.store(true, SeqCst);
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = worker {
            w.thread().unpark();
            let _ = w.join();
        }
        // The last reference (the worker has ended): closes the files and releases the lock.
        if let Ok(mut log) = self.log.lock() {
            log.take();
        }
    }

    fn log(&self) -> Option<Arc<SegmentLog>> {
        self.log.lock().ok().and_then(|l| l.clone())
    }

    pub fn info(&self) -> OutboxInfo {
        let pending = self.ledger.lock().map(|l| l.owed.len() as u64).unwrap_or(0);
        OutboxInfo {
            mode: if self.stream.is_some() {
                "jetstream"
            } else if self.durable {
                "disk"
            } else {
                "memory"
            },
            id: self.id.clone(),
            dir: self.dir.clone(),
            pending,
            bytes: self.log().map_or(0, |l| l.size_bytes()),
            segments: self.log().map_or(0, |l| l.segments()),
            replayed: self.replayed,
            append_errors: self.metrics.append_errors.get(),
            partitions: self.stream.as_ref().map(|f| f.partitions()),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close();
    }
}

/// The current watermark: every change below it is settled.
fn watermark(ledger: &Mutex<Ledger>, next_seq: &AtomicU64) -> u64 {
    // Read next_seq first: a change accepted after this is above it anyway.
    let next = next_seq.load(SeqCst);
    ledger.lock().map_or(0, |l| l.watermark(next))
}

/// Which accepted changes are still owed to some destination.
#[derive(Default)]
struct Ledger {
    /// seq → deliveries still owed (plus one while the router holds it).
    owed: BTreeMap<u64, u32>,
    /// Unsettled full-sync snapshots: (read after seq, seq). While one waits, the live changes
    /// after its read point stay in the log: replayed after a crash, they let the router see
    /// that the snapshot is stale.
    snapshots: BTreeSet<(u64, u64)>,
    snapshot_of: HashMap<u64, u64>,
    /// Full syncs running, by the last seq when each began: a snapshot may be read after that
    /// point and pushed much later, so the live changes after it must stay replayable.
    syncs: BTreeMap<u64, u32>,
}

impl Ledger {
    fn insert(&mut self, seq: u64, snapshot_after: Option<u64>) {
        self.owed.insert(seq, 1);
        if let Some(after) = snapshot_after {
            self.snapshots.insert((after, seq));
            self.snapshot_of.insert(seq, after);
        }
    }

    /// Returns true when this settled `seq` for good (nothing owed any more).
    fn adjust(&mut self, seq: u64, delta: i64) -> bool {
        let n = self.owed.get(&seq).copied().unwrap_or(0) as i64 + delta;
        if n > 0 {
            self.owed.insert(seq, n as u32);
            return false;
        }
        let was_owed = self.owed.remove(&seq).is_some();
        if let Some(after) = self.snapshot_of.remove(&seq) {
            self.snapshots.remove(&(after, seq));
        }
        was_owed
    }

    /// Every change below this seq is settled and no waiting snapshot needs it.
    fn watermark(&self, next: u64) -> u64 {
        let first = self.owed.keys().next().copied().unwrap_or(next);
        let floor = self
            .snapshots
            .iter()
            .next()
            .map_or(next, |&(after, _)| after + 1);
        let sync = self.syncs.keys().next().map_or(next, |&at| at + 1);
        first.min(floor).min(sync).min(next)
    }
}

#[cfg(test)]
mod tests {
    use super::Ledger;

    #[test]
    fn the_watermark_waits_for_owed_changes_and_for_snapshots_read_points() {
        let mut l = Ledger::default();
        assert_eq!(l.watermark(10), 10);
        l.insert(12, Some(5));
        l.insert(13, None);
        assert_eq!(
            l.watermark(14),
            6,
            "live changes after the snapshot's read point stay"
        );
        l.adjust(12, -1);
        assert_eq!(l.watermark(14), 13);
        l.adjust(13, 2);
        l.adjust(13, -2);
        assert_eq!(l.watermark(14), 13, "still owed once");
        l.adjust(13, -1);
        assert_eq!(l.watermark(14), 14);
    }
}
