//! The router: parses each change once, strips internal fields, and fans it out to the lanes
//! of every enabled replicator whose routes want it.

use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{now_ms, Delivery, Intake, Outcome, OutcomeStatus, Shared};
use crate::error::ErrorCode;
use crate::event::{clean_record, ChangeEvent};

pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Intake>) {
    let mut seq = 0u64;
    let mut rejected = Vec::new();
    let linger = Duration::from_millis(shared.config.linger_ms);
    let mut cancel = shared.cancel.clone();
    while let Some(first) = rx.recv().await {
        // Route everything already waiting before signalling progress once.
        let mut next = Some(first);
        let mut n = 0u64;
        while let Some(intake) = next {
            seq += 1;
            if let Some(outcome) = route(&shared, seq, intake) {
                rejected.push(outcome);
            }
            n += 1;
            next = if n < 4096 { rx.try_recv().ok() } else { None };
        }
        if !rejected.is_empty() {
            shared
                .host
                .emit(std::mem::take(&mut rejected), shared.pending());
        }
        shared.routed.fetch_add(n, SeqCst);
        shared.progress.notify_waiters();
        // Stay off the channel for one linger period: pushes arriving meanwhile queue up without
        // waking this task. A wake is a cross-thread unpark paid inside push() by the JS thread,
        // so this caps that cost at one per lingerMs under load and batches the lanes' input.
        // An idle engine still routes the next change at once (the wait comes after routing).
        if linger > Duration::ZERO && !*cancel.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(linger) => {}
                _ = cancel.changed() => {}
            }
        }
    }
}

/// Routes one change; returns an error outcome if the change itself is unusable.
fn route(shared: &Shared, seq: u64, intake: Intake) -> Option<Outcome> {
    if !shared.config.enabled {
        return None;
    }
    let accepted_at = intake.at;
    let parsed = serde_json::from_str(&intake.json)
        .map_err(|e| format!("invalid JSON: {e}"))
        .and_then(clean_record);
    let (id, data, before) = match parsed {
        Ok(v) => v,
        Err(reason) => {
            tracing::warn!(message = "Rejected a change.", resource = %intake.resource, %reason);
            return Some(Outcome {
                replicator: String::new(),
                resource_name: intake.resource.clone(),
                destination: String::new(),
                operation: intake.op,
                record_id: String::new(),
                status: OutcomeStatus::Failed,
                duration: 0.0,
                attempts: 0,
                error: Some(format!(
                    "could not replicate a change of resource '{}': {reason}",
                    intake.resource
                )),
                code: Some(ErrorCode::Config.as_str()),
                data: None,
                ticket: intake.ticket,
            });
        }
    };
    let event = Arc::new(ChangeEvent {
        seq,
        op: intake.op,
        resource: intake.resource,
        id,
        data,
        before,
        ts_ms: now_ms(),
        accepted_at,
    });
    for (ri, rep) in shared.replicators.iter().enumerate() {
        if intake.only.is_some_and(|only| only != ri)
            || (intake.only.is_none() && !rep.enabled.load(SeqCst))
        {
            continue;
        }
        let Some(routes) = rep.by_source.get(&event.resource) else {
            continue;
        };
        for &r in routes {
            let route = &rep.routes[r];
            if !route.wants(event.op) {
                continue;
            }
            rep.metrics
                .received
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let lane = lane_of(&route.dest, &event.id, rep.lanes.len());
            rep.lanes[lane].send(Delivery {
                event: event.clone(),
                route: r,
                ticket: intake.ticket,
            });
        }
    }
    None
}

/// One record always maps to the same lane, which is what keeps its changes in order.
pub(super) fn lane_of(dest: &str, id: &str, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dest.hash(&mut h);
    id.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::lane_of;

    #[test]
    fn a_record_always_gets_the_same_lane_and_records_spread() {
        assert_eq!(lane_of("users", "a", 8), lane_of("users", "a", 8));
        let used: std::collections::HashSet<usize> = (0..200)
            .map(|i| lane_of("users", &i.to_string(), 8))
            .collect();
        assert_eq!(used.len(), 8);
        assert_eq!(lane_of("x", "y", 1), 0);
    }
}
