//! The router: parses each change once, strips internal fields, and fans it out to the lanes
//! of every enabled replicator whose routes want it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::metrics::Count;
use super::{now_ms, Delivery, Intake, Outcome, OutcomeStatus, Shared};
use crate::error::ErrorCode;
use crate::event::{clean_record, parse_change, ChangeEvent};

/// Which records changed while a full sync runs: (resource, id) → seq of the latest live change.
type Recent = HashMap<(String, String), u64>;

pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Intake>) {
    let mut recent = Recent::new();
    let mut rejected = Vec::new();
    let linger = Duration::from_millis(shared.config.linger_ms);
    let mut cancel = shared.cancel.clone();
    while let Some(first) = rx.recv().await {
        // Route everything already waiting before signalling progress once.
        let mut next = Some(first);
        let mut n = 0u64;
        let mut last = 0u64;
        while let Some(intake) = next {
            let seq = intake.seq;
            last = seq;
            route(&shared, &mut recent, intake, &mut rejected);
            shared.outbox.release(seq);
            n += 1;
            next = if n < 4096 { rx.try_recv().ok() } else { None };
        }
        if !rejected.is_empty() {
            // The `n` changes of this round are not counted as routed yet: leave them out.
            shared.host.emit(
                std::mem::take(&mut rejected),
                shared.pending().saturating_sub(n),
            );
        }
        shared.routed.fetch_add(n, SeqCst);
        // Changes that went nowhere (filtered by `actions`, replayed for a removed replicator)
        // produce no outcome: say the engine is idle so the host can release the event loop.
        if shared.pending() == 0 {
            shared.host.emit(Vec::new(), 0);
        }
        shared.progress.notify_waiters();
        // Forget once no sync runs and every snapshot it queued has been routed.
        let tail = shared
            .sync_tail
            .load(SeqCst)
            .max(shared.replayed_snapshots_until);
        if shared.syncs.load(SeqCst) == 0 && last >= tail && !recent.is_empty() {
            recent = HashMap::new();
        }
        // Under load (this round found more than one change waiting), stay off the channel for
        // one linger period: pushes arriving meanwhile queue up without waking this task. A
        // wake is a cross-thread unpark paid inside push() by the JS thread, so this caps that
        // cost at one per lingerMs under load and batches the lanes' input. A change that came
        // alone (light, steady load) is followed at once: no linger adds to its successor's lag.
        if n > 1 && linger > Duration::ZERO && !*cancel.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(linger) => {}
                _ = cancel.changed() => {}
            }
        }
    }
}

/// Routes one change. Adds an outcome to `out` when the change itself is unusable, is dropped
/// on purpose (a stale snapshot or re-send), or arrives after its lanes were stopped.
fn route(shared: &Shared, recent: &mut Recent, intake: Intake, out: &mut Vec<Outcome>) {
    if !shared.config.enabled {
        return;
    }
    let accepted_at = intake.at;
    let parsed = parse_change(&intake.json).and_then(clean_record);
    let (id, data, before) = match parsed {
        Ok(v) => v,
        Err(reason) => {
            tracing::warn!(message = "Rejected a change.", resource = %intake.resource, %reason);
            let error = format!(
                "could not replicate a change of resource '{}': {reason}",
                intake.resource
            );
            out.push(dropped(
                &intake,
                String::new(),
                OutcomeStatus::Failed,
                Some(error),
            ));
            return;
        }
    };
    let watching = shared.syncs.load(SeqCst) > 0
        || intake.seq <= shared.replayed_snapshots_until
        || intake.seq <= shared.sync_tail.load(SeqCst);
    match intake.snapshot_after {
        // A snapshot read before the record's latest live change would overwrite it.
        Some(after) => {
            let key = (intake.resource.clone(), id.clone());
            if recent.get(&key).is_some_and(|&live| live > after) {
                out.push(superseded(shared, &intake, id));
                return;
            }
        }
        None if watching && intake.redelivery_of.is_none() => {
            recent.insert((intake.resource.clone(), id.clone()), intake.seq);
        }
        None => {}
    }
    let redelivery = match intake.redelivery_of {
        Some(dl_id) => match shared.dead_letters.get(dl_id) {
            Some(dl) => Some(dl),
            // Retried or superseded since it was queued.
            None => {
                out.push(superseded(shared, &intake, id));
                return;
            }
        },
        None => None,
    };
    let event = Arc::new(ChangeEvent {
        seq: intake.seq,
        op: intake.op,
        resource: intake.resource,
        id,
        data,
        before,
        ts_ms: now_ms(),
        accepted_at,
    });
    let mut targets = Vec::new();
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
            let wanted = match &redelivery {
                // A re-send goes to the one destination that failed it.
                Some(dl) => route.dest == dl.destination,
                None => route.wants(event.op),
            };
            if wanted {
                targets.push((ri, r));
            }
        }
    }
    // Count the deliveries in the ledger before any lane can settle one.
    shared
        .outbox
        .add_deliveries(event.seq, targets.len() as u32);
    for &(ri, r) in &targets {
        let rep = &shared.replicators[ri];
        rep.metrics.count(r, Count::Received, 1);
        let lane = lane_of(&rep.routes[r].dest, &event.id, rep.lanes.len());
        let gone = rep.lanes[lane].send(Delivery {
            event: event.clone(),
            route: r,
            ticket: intake.ticket,
            redelivery: redelivery.as_ref().map(|dl| dl.id),
            origin_seq: redelivery.as_ref().map_or(event.seq, |dl| dl.seq),
        });
        // Stopped past the deadline: reported, and left unsettled in the outbox for replay.
        if let Some(d) = gone {
            out.extend(super::lane::stopped_outcomes(shared, rep, &[d]));
        }
    }
}

/// A snapshot or re-send dropped because the record has a newer change; it was meant for
/// one replicator (`only`), which the outcome names.
fn superseded(shared: &Shared, intake: &Intake, id: String) -> Outcome {
    let mut o = dropped(intake, id, OutcomeStatus::Skipped, None).superseded();
    o.dead_letter_id = intake.redelivery_of;
    if let Some(rep) = intake.only.and_then(|i| shared.replicators.get(i)) {
        o.replicator = rep.id.clone();
        if let Some(route) = rep.by_source.get(&intake.resource).and_then(|r| r.first()) {
            o.destination = rep.routes[*route].dest.clone();
        }
    }
    o
}

/// The outcome of a change the router does not route.
fn dropped(intake: &Intake, id: String, status: OutcomeStatus, error: Option<String>) -> Outcome {
    Outcome {
        replicator: String::new(),
        resource_name: intake.resource.clone(),
        destination: String::new(),
        operation: intake.op,
        record_id: id,
        status,
        duration: 0.0,
        attempts: 0,
        code: error.as_ref().map(|_| ErrorCode::Config.as_str()),
        error,
        data: None,
        ticket: intake.ticket,
        dead_letter_id: None,
        reason: None,
    }
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
