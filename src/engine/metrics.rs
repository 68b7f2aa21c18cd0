//! One replicator's counters and histograms, behind `getReplicatorStats()` and the Prometheus
//! exposition (see `exposition.rs`). Every handle is resolved at start, one set per source
//! resource of the replicator's routes (known then, so the label set stays bounded): counting a
//! change is one relaxed atomic add, with no lookup and no lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use prometheus::{Histogram, IntCounter};
use serde::Serialize;

use super::breaker::{BreakerSnapshot, BreakerState};
use super::exposition::Exposition;
use crate::config::Route;

/// What happened to a change, counted per (replicator, source resource).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Routed to this replicator (once per destination).
    Received,
    Delivered,
    Failed,
    /// Dropped on purpose by `shouldReplicate` or a transform returning null.
    Skipped,
    /// One extra write attempt of one change.
    Retried,
    /// Failed and kept as a dead letter (a re-sent dead letter that fails again is not new).
    DeadLettered,
    /// Used its retry budget while the destination was down: waits, not lost (once per change).
    Held,
}

impl Count {
    pub const ALL: [Count; 7] = [
        Count::Received,
        Count::Delivered,
        Count::Failed,
        Count::Skipped,
        Count::Retried,
        Count::DeadLettered,
        Count::Held,
    ];
}

/// The counters of one source resource.
struct ResourceCounters {
    resource: String,
    /// Indexed by `Count as usize`.
    counters: Vec<IntCounter>,
}

pub(crate) struct Metrics {
    resources: Vec<ResourceCounters>,
    /// Route index → its source resource's position in `resources`.
    route_slot: Vec<usize>,
    pub batches: IntCounter,
    /// Changes per batch a lane takes.
    pub batch_size: Histogram,
    /// From `push` to the destination's acknowledgement, per delivered change.
    pub delivery_seconds: Histogram,
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
    /// Registers this replicator's series (every resource of its routes) in `exposition`.
    pub fn new(exposition: &Exposition, id: &str, driver: &str, routes: &[Route]) -> Self {
        let mut resources: Vec<ResourceCounters> = Vec::new();
        let mut route_slot = Vec::with_capacity(routes.len());
        for route in routes {
            let slot = match resources.iter().position(|r| r.resource == route.source) {
                Some(slot) => slot,
                None => {
                    resources.push(ResourceCounters {
                        resource: route.source.clone(),
                        counters: Count::ALL
                            .iter()
                            .map(|&c| exposition.change_counter(c, id, driver, &route.source))
                            .collect(),
                    });
                    resources.len() - 1
                }
            };
            route_slot.push(slot);
        }
        let handles = exposition.replicator_handles(id, driver);
        Self {
            resources,
            route_slot,
            batches: handles.batches,
            batch_size: handles.batch_size,
            delivery_seconds: handles.delivery_seconds,
            last_success_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Counts `n` changes of the route numbered `route`.
    pub fn count(&self, route: usize, what: Count, n: u64) {
        if let Some(r) = self
            .route_slot
            .get(route)
            .and_then(|&s| self.resources.get(s))
        {
            r.counters[what as usize].inc_by(n);
        }
    }

    /// Counts `n` changes of source resource `resource` (where only the name is at hand).
    pub fn count_resource(&self, resource: &str, what: Count, n: u64) {
        if let Some(r) = self.resources.iter().find(|r| r.resource == resource) {
            r.counters[what as usize].inc_by(n);
        }
    }

    /// All resources together.
    pub fn total(&self, what: Count) -> u64 {
        self.resources
            .iter()
            .map(|r| r.counters[what as usize].get())
            .sum()
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
            received: self.total(Count::Received),
            delivered: self.total(Count::Delivered),
            failed: self.total(Count::Failed),
            skipped: self.total(Count::Skipped),
            retried: self.total(Count::Retried),
            dead_lettered: self.total(Count::DeadLettered),
            held: self.total(Count::Held),
            batches: self.batches.get(),
            queued,
            oldest_pending_ms,
            health,
            breaker,
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or(None),
            last_sync: (last > 0).then_some(last),
        }
    }
}
