//! Counters behind `getReplicatorStats()`. Atomics only: read from the JS thread, written by lanes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

use super::breaker::{BreakerSnapshot, BreakerState};

#[derive(Default)]
pub struct Metrics {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub skipped: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub held: AtomicU64,
    pub batches: AtomicU64,
    pub last_success_ms: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// A snapshot of one replicator's counters.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatorStats {
    pub id: String,
    pub driver: String,
    pub enabled: bool,
    /// Changes routed to this replicator.
    pub received: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Dropped on purpose by `shouldReplicate` or a transform returning null.
    pub skipped: u64,
    /// Extra attempts after a failed write.
    pub retried: u64,
    /// Failures kept as dead letters (retry with `retryDeadLetters()`).
    pub dead_lettered: u64,
    /// Changes that used their retry budget while the destination was down, each counted
    /// once: held for redelivery (they wait, they are not lost).
    pub held: u64,
    pub batches: u64,
    /// Queue depth: accepted and not yet settled (delivered, failed or skipped).
    pub queued: u64,
    /// Age of the oldest undelivered change (replication lag), in milliseconds.
    pub oldest_pending_ms: u64,
    /// `healthy`, `degraded` (recent failures, retrying), `open` / `half-open` (destination
    /// down: waiting, probing) or `disabled`.
    pub health: &'static str,
    pub breaker: BreakerSnapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Epoch milliseconds of the last successful write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<u64>,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn set_last_error(&self, message: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message.to_string());
        }
    }

    pub fn snapshot(
        &self,
        id: &str,
        driver: &str,
        enabled: bool,
        queued: u64,
        oldest_pending_ms: u64,
        breaker: BreakerSnapshot,
    ) -> ReplicatorStats {
        let last = self.last_success_ms.load(Relaxed);
        let health = match breaker.state {
            _ if !enabled => "disabled",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Closed if breaker.consecutive_failures > 0 => "degraded",
            BreakerState::Closed => "healthy",
        };
        ReplicatorStats {
            id: id.to_string(),
            driver: driver.to_string(),
            enabled,
            received: self.received.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            failed: self.failed.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            retried: self.retried.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            held: self.held.load(Relaxed),
            batches: self.batches.load(Relaxed),
            queued,
            oldest_pending_ms,
            health,
            breaker,
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or(None),
            last_sync: (last > 0).then_some(last),
        }
    }
}
