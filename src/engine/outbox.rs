//! The engine's side of the durable outbox: numbers every accepted change, appends it to the
//! segment log before `push` returns, tracks which changes every destination has settled
//! (the ledger), and in the background fsyncs (group commit) and compacts the log up to the
//! oldest unsettled change. On start, what was accepted and not settled is replayed.
//!
//! "Settled" is delivered, skipped on purpose, or dead-lettered (the dead letter is persisted
//! first). A change abandoned at the `stop()` deadline stays unsettled, so it is replayed on
//! the next start instead of being lost.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::OutboxConfig;
use crate::outbox::{Entry, EntryRef, LogOptions, OutboxError, SegmentLog};

/// How often the watermark is persisted and done segments deleted, at most.
const COMPACT_EVERY: Duration = Duration::from_millis(200);

pub(crate) struct Outbox {
    /// Taken on `close()`, which releases the directory's lock for a next plugin instance.
    log: Mutex<Option<Arc<SegmentLog>>>,
    durable: bool,
    dir: Option<PathBuf>,
    /// Unsettled changes: seq → deliveries still owed (plus one while the router holds it).
    ledger: Arc<Mutex<BTreeMap<u64, u32>>>,
    /// The seq the next accepted change gets.
    next_seq: Arc<AtomicU64>,
    appended: Arc<AtomicU64>,
    append_errors: AtomicU64,
    replayed: u64,
    stop: Arc<AtomicBool>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxInfo {
    /// `disk` or `memory`.
    pub mode: &'static str,
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
}

impl Outbox {
    /// Opens the log (if on disk) and returns the changes to replay, oldest first.
    pub fn open(config: &OutboxConfig) -> Result<(Self, Vec<Entry>), OutboxError> {
        let (log, entries, next) = match &config.dir {
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
                (
                    Some(Arc::new(log)),
                    recovered.entries,
                    recovered.next_seq.max(1),
                )
            }
            None => (None, Vec::new(), 1),
        };
        let ledger: BTreeMap<u64, u32> = entries.iter().map(|e| (e.seq, 1)).collect();
        let outbox = Self {
            durable: log.is_some(),
            dir: config.dir.clone(),
            log: Mutex::new(log),
            ledger: Arc::new(Mutex::new(ledger)),
            next_seq: Arc::new(AtomicU64::new(next)),
            appended: Arc::new(AtomicU64::new(0)),
            append_errors: AtomicU64::new(0),
            replayed: entries.len() as u64,
            stop: Arc::new(AtomicBool::new(false)),
            worker: Mutex::new(None),
        };
        outbox.start_worker(config.fsync_interval_ms);
        Ok((outbox, entries))
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
        if let Some(log) = self.log() {
            if let Ok(mut ledger) = self.ledger.lock() {
                ledger.insert(seq, 1);
            }
            self.next_seq.store(seq + 1, SeqCst);
            match log.append(&entry) {
                Ok(()) => {
                    self.appended.fetch_add(1, Relaxed);
                }
                Err(error) => {
                    if self.append_errors.fetch_add(1, Relaxed) == 0 {
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
        for seq in seqs {
            if let Some(n) = ledger.get_mut(&seq) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    ledger.remove(&seq);
                }
            }
        }
    }

    fn adjust(&self, seq: u64, delta: i64) {
        if !self.durable {
            return;
        }
        let Ok(mut ledger) = self.ledger.lock() else {
            return;
        };
        let n = ledger.get(&seq).copied().unwrap_or(0) as i64 + delta;
        if n <= 0 {
            ledger.remove(&seq);
        } else {
            ledger.insert(seq, n as u32);
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
        let tick = Duration::from_millis(fsync_interval_ms.unwrap_or(50));
        let fsync = fsync_interval_ms.is_some();
        let handle = std::thread::Builder::new()
            .name("s3db-replicator-outbox".into())
            .spawn(move || {
                let mut synced = 0;
                let mut compacted = 0;
                let mut last_compact = Instant::now();
                loop {
                    let stopping = stop.load(SeqCst);
                    let n = appended.load(Relaxed);
                    if fsync && n != synced {
                        synced = n;
                        if let Err(error) = log.sync() {
                            tracing::error!(message = "Outbox fsync failed.", %error);
                        }
                    }
                    if stopping || last_compact.elapsed() >= COMPACT_EVERY {
                        let mark = watermark(&ledger, &next_seq);
                        if mark > compacted {
                            match log.compact(mark) {
                                Ok(_) => compacted = mark,
                                Err(error) => {
                                    tracing::warn!(message = "Outbox compaction failed.", %error)
                                }
                            }
                        }
                        last_compact = Instant::now();
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
        let pending = self.ledger.lock().map(|l| l.len() as u64).unwrap_or(0);
        OutboxInfo {
            mode: if self.durable { "disk" } else { "memory" },
            dir: self.dir.clone(),
            pending,
            bytes: self.log().map_or(0, |l| l.size_bytes()),
            segments: self.log().map_or(0, |l| l.segments()),
            replayed: self.replayed,
            append_errors: self.append_errors.load(Relaxed),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close();
    }
}

/// Every change below this seq is settled.
fn watermark(ledger: &Mutex<BTreeMap<u64, u32>>, next_seq: &AtomicU64) -> u64 {
    // Read next_seq first: a change accepted after this read is above it anyway.
    let next = next_seq.load(SeqCst);
    ledger
        .lock()
        .ok()
        .and_then(|l| l.keys().next().copied())
        .map_or(next, |first| first.min(next))
}
