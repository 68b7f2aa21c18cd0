//! One ordered lane of one replicator: collect a micro-batch, run the route callbacks, write
//! with retries, isolate poison records, report outcomes. FIFO end to end, so changes of one
//! record (which always land in the same lane) are applied in the order they were made.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::breaker::{Transition, Verdict};
use super::dead_letters::DeadLetter;
use super::host::{CircuitEvent, HeldChange};
use super::{now_ms, CallbackCall, Delivery, Outcome, OutcomeStatus, Replicator, Shared};
use crate::error::{ErrorCode, SinkError};
use crate::event::Change;
use crate::sinks::BatchOutcome;

pub(crate) struct LaneHandle {
    tx: mpsc::UnboundedSender<Delivery>,
    enqueued: AtomicU64,
    settled: AtomicU64,
    /// Epoch ms at which the change the lane is working on was routed; 0 when idle.
    busy_since: AtomicU64,
}

impl LaneHandle {
    pub(super) fn new(tx: mpsc::UnboundedSender<Delivery>) -> Self {
        Self {
            tx,
            enqueued: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
        }
    }
    pub(super) fn busy_since_ms(&self) -> Option<u64> {
        match self.busy_since.load(Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
    /// Queues a delivery; hands it back when the lane is gone (the stop deadline passed), so
    /// the caller reports it. It then counts as settled so flush never hangs.
    pub(super) fn send(&self, d: Delivery) -> Option<Delivery> {
        self.enqueued.fetch_add(1, SeqCst);
        match self.tx.send(d) {
            Ok(()) => None,
            Err(mpsc::error::SendError(d)) => {
                self.settled.fetch_add(1, SeqCst);
                Some(d)
            }
        }
    }
    pub(super) fn enqueued(&self) -> u64 {
        self.enqueued.load(SeqCst)
    }
    pub(super) fn settled(&self) -> u64 {
        self.settled.load(SeqCst)
    }
    pub(super) fn queued(&self) -> u64 {
        self.enqueued().saturating_sub(self.settled())
    }
}

/// The result of writing one change: attempts used, and the error if it failed.
type WriteResult = (u32, Option<SinkError>);

pub(super) async fn run(
    shared: Arc<Shared>,
    rep: usize,
    lane: usize,
    mut rx: mpsc::UnboundedReceiver<Delivery>,
) {
    let r = &shared.replicators[rep];
    let max = shared.config.batch_size.min(r.sink.max_batch_size()).max(1);
    let bulk = if r.sink.prefers_bulk() {
        shared
            .config
            .bulk_batch_size
            .max(max)
            .min(r.sink.max_batch_size())
    } else {
        max
    };
    let mut cancel = shared.cancel.clone();
    let mut drain = shared.drain.clone();
    loop {
        let first = tokio::select! {
            biased;
            d = rx.recv() => match d {
                Some(d) => d,
                None => break,
            },
            _ = cancel.changed() => break,
            // Stopping: the router is done, so an empty queue stays empty.
            _ = drain.wait_for(|draining| *draining) => match rx.try_recv() {
                Ok(d) => d,
                Err(_) => break,
            },
        };
        let mut batch = vec![first];
        // A backlog (another full batch already waiting) goes out in bulk where that is
        // cheaper; live changes keep their small, prompt batches.
        let limit = if rx.len() >= max { bulk } else { max };
        while batch.len() < limit {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        // No waiting here: the router lingers between rounds, so under load changes arrive in
        // bursts and the batch fills by itself; an idle lane writes the first change at once.
        let n = batch.len() as u64;
        r.lanes[lane]
            .busy_since
            .store(batch[0].event.ts_ms.max(1), Relaxed);
        let mut outcomes = tokio::select! {
            // Once stop() cancels, never poll the write again (it may be retrying).
            biased;
            _ = cancel.changed() => stopped_outcomes(&shared, r, &batch),
            o = std::panic::AssertUnwindSafe(process(&shared, r, &batch)).catch_unwind() => match o {
                Ok(o) => o,
                Err(_) => failed_outcomes(r, &batch, "internal: the destination driver panicked", ErrorCode::Internal),
            },
        };
        finish(&shared, r, &batch, &mut outcomes);
        observe_batch(r, &outcomes);
        // Outcomes first: flush() takes a settled batch as reported to the host.
        shared
            .host
            .emit(outcomes, shared.pending().saturating_sub(n));
        // Idle before settled: whoever flush() lets go reads no lag or in-flight batch left.
        r.lanes[lane].busy_since.store(0, SeqCst);
        r.lanes[lane].settled.fetch_add(n, SeqCst);
        // Two lanes finishing together may both have reported work pending: whoever sees the
        // engine idle after settling says so, so the host can release the event loop.
        if shared.pending() == 0 {
            shared.host.emit(Vec::new(), 0);
        }
        shared.progress.notify_waiters();
        if *cancel.borrow() {
            break;
        }
    }
    // Cancelled at the stop deadline: whatever is still queued is reported, never silently lost.
    rx.close();
    let mut rest = Vec::new();
    while let Ok(d) = rx.try_recv() {
        rest.push(d);
    }
    if !rest.is_empty() {
        let n = rest.len() as u64;
        let outcomes = stopped_outcomes(&shared, r, &rest);
        shared
            .host
            .emit(outcomes, shared.pending().saturating_sub(n));
        r.lanes[lane].settled.fetch_add(n, SeqCst);
    }
    shared.progress.notify_waiters();
}

/// Each delivered change's latency, buffered and added to the shared histogram once per batch.
fn observe_batch(r: &Replicator, outcomes: &[Outcome]) {
    let latency = r.metrics.delivery_seconds.local();
    for o in outcomes {
        if o.status == OutcomeStatus::Replicated {
            latency.observe(o.duration / 1000.0);
        }
    }
    latency.flush();
}

fn failed_outcomes(
    r: &Replicator,
    batch: &[Delivery],
    message: &str,
    code: ErrorCode,
) -> Vec<Outcome> {
    let err = SinkError::retryable(message);
    batch
        .iter()
        .map(|d| outcome(r, d, OutcomeStatus::Failed, 0, Some((&err, code))))
        .collect()
}

/// Changes given up at the stop deadline. With the outbox on disk they are not lost, and the
/// message says so: the next start delivers them.
pub(super) fn stopped_outcomes(
    shared: &Shared,
    r: &Replicator,
    batch: &[Delivery],
) -> Vec<Outcome> {
    let message = if shared.outbox.is_durable() {
        "the plugin was stopped before this change could be delivered; it stays in the outbox and is delivered after the next start"
    } else {
        "the plugin was stopped before this change could be delivered"
    };
    failed_outcomes(r, batch, message, ErrorCode::Stopped)
}

fn outcome(
    r: &Replicator,
    d: &Delivery,
    status: OutcomeStatus,
    attempts: u32,
    error: Option<(&SinkError, ErrorCode)>,
) -> Outcome {
    let route = &r.routes[d.route];
    match status {
        OutcomeStatus::Replicated => r.metrics.count(d.route, Count::Delivered, 1),
        OutcomeStatus::Failed => r.metrics.count(d.route, Count::Failed, 1),
        OutcomeStatus::Skipped => r.metrics.count(d.route, Count::Skipped, 1),
    }
    if let Some((e, _)) = error {
        r.metrics.set_last_error(&e.message);
    }
    Outcome {
        replicator: r.id.clone(),
        resource_name: d.event.resource.clone(),
        destination: route.dest.clone(),
        operation: d.event.op,
        record_id: d.event.id.clone(),
        status,
        duration: d.event.accepted_at.elapsed().as_secs_f64() * 1000.0,
        attempts,
        error: error.map(|(e, _)| e.message.clone()),
        code: error.map(|(_, c)| c.as_str()),
        data: error.map(|_| d.event.data.clone()),
        ticket: d.ticket,
        dead_letter_id: d.redelivery,
        reason: None,
    }
}

use super::metrics::Count;

/// Book-keeping once a batch is settled: failures become dead letters (persisted before the
/// outbox lets go of the change), a delivery supersedes older dead letters of its record, and
/// the outbox learns which changes are done. Changes abandoned at the stop deadline stay in
/// the outbox, to be replayed on the next start.
fn finish(shared: &Shared, r: &Replicator, batch: &[Delivery], outcomes: &mut [Outcome]) {
    let stopped = Some(ErrorCode::Stopped.as_str());
    let mut done = Vec::with_capacity(batch.len());
    for (d, o) in batch.iter().zip(outcomes.iter_mut()) {
        match o.status {
            OutcomeStatus::Replicated => {
                shared
                    .dead_letters
                    .delivered(&r.id, &o.destination, &d.event.id, d.origin_seq);
                if let Some(id) = d.redelivery {
                    shared.dead_letters.remove(&[id]);
                }
            }
            OutcomeStatus::Failed if o.code == stopped => continue,
            OutcomeStatus::Failed => {
                let letter = DeadLetter {
                    id: 0,
                    replicator: r.id.clone(),
                    resource_name: d.event.resource.clone(),
                    destination: o.destination.clone(),
                    operation: d.event.op,
                    record_id: d.event.id.clone(),
                    data: d.event.data.clone(),
                    before: d.event.before.clone(),
                    error: o.error.clone().unwrap_or_default(),
                    code: o.code.unwrap_or(ErrorCode::Internal.as_str()).to_string(),
                    attempts: o.attempts,
                    failed_at: crate::time::iso8601(now_ms()),
                    seq: d.origin_seq,
                };
                o.dead_letter_id = Some(shared.dead_letters.put(letter, d.redelivery));
                if d.redelivery.is_none() {
                    r.metrics.count(d.route, Count::DeadLettered, 1);
                }
            }
            OutcomeStatus::Skipped => {
                if let (Some(id), true) = (d.redelivery, o.is_superseded()) {
                    shared.dead_letters.remove(&[id]);
                }
            }
        }
        done.push(d.event.seq);
    }
    shared.outbox.settle(done);
}

/// What happens to each delivery before the write.
enum Prepared {
    Write(Change),
    /// A `Write` whose change was handed to the sink.
    Sent,
    Skip,
    /// A re-sent dead letter whose record has a newer change: writing it would go back in time.
    Superseded,
    Fail(SinkError, ErrorCode),
}

async fn process(shared: &Shared, r: &Replicator, batch: &[Delivery]) -> Vec<Outcome> {
    r.metrics.batches.inc();
    r.metrics.batch_size.observe(batch.len() as f64);
    let mut prepared = prepare(shared, r, batch).await;
    let mut changes = Vec::new();
    let mut slots = Vec::new();
    for (i, p) in prepared.iter_mut().enumerate() {
        if matches!(p, Prepared::Write(_)) {
            // Moved, not cloned: a record's data is the largest thing a change carries.
            if let Prepared::Write(c) = std::mem::replace(p, Prepared::Sent) {
                changes.push(c);
            }
            slots.push(i);
        }
    }
    let mut written: Vec<Option<WriteResult>> = vec![None; batch.len()];
    if !changes.is_empty() {
        let results = write(shared, r, changes).await;
        for (slot, res) in slots.into_iter().zip(results) {
            written[slot] = Some(res);
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut delivered_any = false;
    for (i, (d, p)) in batch.iter().zip(&prepared).enumerate() {
        out.push(match p {
            Prepared::Skip => outcome(r, d, OutcomeStatus::Skipped, 0, None),
            Prepared::Superseded => outcome(r, d, OutcomeStatus::Skipped, 0, None).superseded(),
            Prepared::Fail(e, code) => outcome(r, d, OutcomeStatus::Failed, 0, Some((e, *code))),
            Prepared::Write(_) | Prepared::Sent => match &written[i] {
                Some((attempts, None)) => {
                    delivered_any = true;
                    outcome(r, d, OutcomeStatus::Replicated, *attempts, None)
                }
                Some((attempts, Some(e))) => {
                    tracing::error!(message = "Change failed.", replicator = %r.id, resource = %d.event.resource, record_id = %d.event.id, attempts, code = e.code().as_str(), error = %e.message);
                    outcome(r, d, OutcomeStatus::Failed, *attempts, Some((e, e.code())))
                }
                None => outcome(r, d, OutcomeStatus::Failed, 0, Some((&SinkError::retryable("internal: no write result"), ErrorCode::Internal))),
            },
        });
    }
    if delivered_any {
        r.metrics.last_success_ms.store(now_ms(), Relaxed);
    }
    out
}

/// Runs `shouldReplicate` and `transform` for the batch in one host call, and builds the changes.
async fn prepare(shared: &Shared, r: &Replicator, batch: &[Delivery]) -> Vec<Prepared> {
    let stale = superseded_resends(shared, r, batch);
    let mut calls = Vec::new();
    let mut call_of = vec![None; batch.len()];
    for (i, d) in batch.iter().enumerate() {
        if stale[i] {
            continue;
        }
        let route = &r.routes[d.route];
        if route.transform.is_some() || route.should_replicate.is_some() {
            call_of[i] = Some(calls.len());
            calls.push(CallbackCall {
                should_replicate: route.should_replicate,
                transform: route.transform,
                action: d.event.op,
                data: &d.event.data,
            });
        }
    }
    let results = if calls.is_empty() {
        Ok(Vec::new())
    } else {
        match timeout(
            Duration::from_millis(shared.config.timeout_ms),
            shared.host.run_callbacks(&calls),
        )
        .await
        {
            Ok(Ok(res)) if res.len() == calls.len() => Ok(res),
            Ok(Ok(res)) => Err(format!(
                "callbacks returned {} results for {} records",
                res.len(),
                calls.len()
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "transform/shouldReplicate did not finish within {} ms",
                shared.config.timeout_ms
            )),
        }
    };
    batch
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if stale[i] {
                return Prepared::Superseded;
            }
            let route = &r.routes[d.route];
            let data = match (call_of[i], &results) {
                (None, _) => d.event.data.clone(),
                (Some(_), Err(e)) => {
                    return Prepared::Fail(
                        SinkError::permanent(format!(
                            "Transform function failed for resource '{}': {e}",
                            d.event.resource
                        )),
                        ErrorCode::Transform,
                    )
                }
                (Some(c), Ok(res)) => {
                    let res = &res[c];
                    if let Some(e) = &res.error {
                        return Prepared::Fail(
                            SinkError::permanent(format!(
                                "Transform function failed for resource '{}': {e}",
                                d.event.resource
                            )),
                            ErrorCode::Transform,
                        );
                    }
                    if res.skip {
                        return Prepared::Skip;
                    }
                    match &res.data {
                        Some(Value::Object(map)) => {
                            let mut map = map.clone();
                            // A transform that drops `id` keeps the record's identity.
                            if !map.contains_key("id") {
                                map.insert("id".into(), Value::String(d.event.id.clone()));
                            }
                            Value::Object(map)
                        }
                        // `shouldReplicate` only: deliver the record as it was.
                        None => d.event.data.clone(),
                        Some(_) => {
                            return Prepared::Fail(
                                SinkError::permanent("transform must return an object"),
                                ErrorCode::Transform,
                            )
                        }
                    }
                }
            };
            Prepared::Write(Change {
                seq: d.event.seq,
                change_id: shared.outbox.change_id(d.origin_seq),
                op: d.event.op,
                resource: d.event.resource.clone(),
                dest: route.dest.clone(),
                id: d.event.id.clone(),
                data,
                before: d.event.before.clone(),
                ts_ms: d.event.ts_ms,
            })
        })
        .collect()
}

/// Re-sent dead letters that must not be written: the dead letter is gone (a newer change of
/// the record was delivered since) or a newer change of the record is earlier in this batch.
fn superseded_resends(shared: &Shared, r: &Replicator, batch: &[Delivery]) -> Vec<bool> {
    let mut stale = vec![false; batch.len()];
    for (i, d) in batch.iter().enumerate() {
        let Some(id) = d.redelivery else {
            continue;
        };
        let dest = &r.routes[d.route].dest;
        stale[i] = !shared.dead_letters.contains(id)
            || batch[..i].iter().any(|e| {
                e.origin_seq > d.origin_seq
                    && e.event.id == d.event.id
                    && &r.routes[e.route].dest == dest
            });
    }
    stale
}

/// Writes changes with retries. On a permanent error of a multi-change batch, splits it in
/// halves to isolate the bad record(s), so the rest of the batch is still delivered.
///
/// Retries are counted only while the destination works for other writes. It counts as down
/// while its breaker is open or nothing was written since this batch last failed; then, with
/// the circuit breaker on, the changes wait for it (probed with backoff) for up to
/// `holdTimeout` instead of being dead-lettered.
fn write<'a>(
    shared: &'a Shared,
    r: &'a Replicator,
    changes: Vec<Change>,
) -> Pin<Box<dyn Future<Output = Vec<WriteResult>> + Send + 'a>> {
    Box::pin(async move {
        let n = changes.len();
        let mut results: Vec<Option<WriteResult>> = vec![None; n];
        // Indexes (into `changes`) still to write, in order.
        let mut todo: Vec<usize> = (0..n).collect();
        // `attempt` is the retry budget used; `tries` what outcomes report.
        let mut attempt = 0u32;
        let mut tries = 0u32;
        // When this batch's previous attempt failed.
        let mut last_failure: Option<Instant> = None;
        // Changes already reported held (once each, however long the outage lasts).
        let mut reported_held = vec![false; n];
        let limit = Duration::from_millis(shared.config.timeout_ms);
        loop {
            attempt += 1;
            tries += 1;
            // The whole batch is written as it is; only a retried subset is copied.
            let subset: Vec<Change>;
            let current: &[Change] = if todo.len() == n {
                &changes
            } else {
                subset = todo.iter().map(|&i| changes[i].clone()).collect();
                &subset
            };
            let permit = r.breaker.admit().await;
            let res = match timeout(limit, r.sink.write_batch(current)).await {
                Ok(res) => res,
                Err(_) => Err(SinkError::timed_out(format!(
                    "timed out after {} ms",
                    shared.config.timeout_ms
                ))),
            };
            if let Some(t) = permit.report(verdict(&res, todo.len())) {
                let event = circuit_event(r, t, &res);
                match event.down_for_ms {
                    None => {
                        tracing::warn!(message = "Destination keeps failing; circuit opened, its changes wait.", replicator = %r.id, failures = event.failures, error = event.error.as_deref())
                    }
                    Some(down_for_ms) => {
                        tracing::info!(message = "Destination is reachable again; circuit closed.", replicator = %r.id, down_for_ms)
                    }
                }
                shared.host.circuit(event);
            }
            let now = Instant::now();
            let since = last_failure.replace(now).unwrap_or(now);
            // One clock per outage, not per batch: a long queue waits at most holdTimeout.
            let held_for = r.breaker.down_for();
            // Down: the breaker is open, or nothing at all was written since our last failure.
            // (A success of another lane just after an outage began must not count.)
            let down = !r.breaker.is_closed() || !r.breaker.succeeded_since(since);
            // Out of retries while the destination looks down: start a fresh budget and wait.
            // `held` is set when that happens (the change is then reported held, once).
            let held = std::sync::atomic::AtomicBool::new(false);
            let hold = |attempt: &mut u32, e: &SinkError| {
                let holding = e.is_retryable() && r.breaker.holds_changes() && down;
                if holding && held_for >= r.breaker.hold_timeout() {
                    // Down for longer than holdTimeout: give up now (dead letter), whatever
                    // retries are left.
                    return false;
                }
                if r.policy.should_retry(*attempt, e) {
                    return true;
                }
                if holding {
                    *attempt = 0;
                    held.store(true, Relaxed);
                    return true;
                }
                false
            };
            let mut newly_held: Vec<(usize, SinkError)> = Vec::new();
            match res {
                Ok(BatchOutcome::Delivered) => {
                    for &i in &todo {
                        results[i] = Some((tries, None));
                    }
                    break;
                }
                Ok(BatchOutcome::Partial(failed)) => {
                    let mut failed_at = vec![None; todo.len()];
                    for (k, e) in failed {
                        if k < todo.len() {
                            failed_at[k] = Some(e);
                        }
                    }
                    let mut again = Vec::new();
                    let mut wait_for: Option<SinkError> = None;
                    let budget = attempt;
                    for (k, &i) in todo.iter().enumerate() {
                        let mut a = budget;
                        match failed_at[k].take() {
                            None => results[i] = Some((tries, None)),
                            Some(e) if hold(&mut a, &e) => {
                                attempt = attempt.min(a);
                                if held.swap(false, Relaxed) {
                                    newly_held.push((i, e.clone()));
                                }
                                again.push(i);
                                wait_for.get_or_insert(e);
                            }
                            Some(e) => results[i] = Some((tries, Some(e))),
                        }
                    }
                    if again.is_empty() {
                        break;
                    }
                    report_held(shared, r, &changes, &mut reported_held, newly_held, tries);
                    count_retries(r, &changes, &again);
                    let e = wait_for.unwrap_or_else(|| SinkError::retryable("partial failure"));
                    backoff(shared, r, attempt.max(1), &e).await;
                    todo = again;
                }
                Err(e) if hold(&mut attempt, &e) => {
                    if held.load(Relaxed) {
                        newly_held.extend(todo.iter().map(|&i| (i, e.clone())));
                        report_held(shared, r, &changes, &mut reported_held, newly_held, tries);
                    }
                    r.metrics.set_last_error(&e.message);
                    tracing::warn!(message = "Retrying batch.", replicator = %r.id, attempt = tries, events = todo.len(), code = e.code().as_str(), error = %e.message);
                    count_retries(r, &changes, &todo);
                    backoff(shared, r, attempt.max(1), &e).await;
                }
                Err(e) if !e.is_retryable() && todo.len() > 1 => {
                    // A poison record: bisect so only the bad change(s) fail.
                    let mid = todo.len() / 2;
                    let left: Vec<Change> =
                        todo[..mid].iter().map(|&i| changes[i].clone()).collect();
                    let right: Vec<Change> =
                        todo[mid..].iter().map(|&i| changes[i].clone()).collect();
                    let lres = write(shared, r, left).await;
                    let rres = write(shared, r, right).await;
                    for (&i, (a, e)) in todo.iter().zip(lres.into_iter().chain(rres)) {
                        results[i] = Some((a + tries, e));
                    }
                    break;
                }
                Err(e) => {
                    for &i in &todo {
                        results[i] = Some((tries, Some(e.clone())));
                    }
                    break;
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or((
                    0,
                    Some(SinkError::retryable("internal: change was not written")),
                ))
            })
            .collect()
    })
}

/// One more attempt for each of these changes (indexes into `changes`), per source resource.
fn count_retries(r: &Replicator, changes: &[Change], retried: &[usize]) {
    for &i in retried {
        r.metrics
            .count_resource(&changes[i].resource, Count::Retried, 1);
    }
}

/// Reports the changes of `newly` that used their retry budget while the destination is down,
/// each once per write: they are held for redelivery, not failed (see [`Host::held`]).
fn report_held(
    shared: &Shared,
    r: &Replicator,
    changes: &[Change],
    reported: &mut [bool],
    newly: Vec<(usize, SinkError)>,
    attempts: u32,
) {
    let mut out = Vec::new();
    for (i, e) in newly {
        if std::mem::replace(&mut reported[i], true) {
            continue;
        }
        let c = &changes[i];
        out.push(HeldChange {
            replicator: r.id.clone(),
            resource_name: c.resource.clone(),
            destination: c.dest.clone(),
            operation: c.op,
            record_id: c.id.clone(),
            attempts,
            error: e.message,
            data: c.data.clone(),
        });
    }
    if !out.is_empty() {
        for h in &out {
            r.metrics.count_resource(&h.resource_name, Count::Held, 1);
        }
        shared.host.held(out);
    }
}

fn circuit_event(
    r: &Replicator,
    t: Transition,
    res: &Result<BatchOutcome, SinkError>,
) -> CircuitEvent {
    let replicator = r.id.clone();
    match t {
        Transition::Opened { failures } => CircuitEvent {
            replicator,
            state: "open",
            failures: Some(failures),
            down_for_ms: None,
            error: match res {
                Err(e) => Some(e.message.clone()),
                Ok(BatchOutcome::Partial(failed)) => failed.first().map(|(_, e)| e.message.clone()),
                Ok(BatchOutcome::Delivered) => None,
            },
        },
        Transition::Closed { down_for } => CircuitEvent {
            replicator,
            state: "closed",
            failures: None,
            down_for_ms: Some(down_for.as_millis() as u64),
            error: None,
        },
    }
}

/// What one write attempt says about the destination, for the circuit breaker.
fn verdict(res: &Result<BatchOutcome, SinkError>, n: usize) -> Verdict {
    match res {
        Ok(BatchOutcome::Delivered) => Verdict::Up,
        Ok(BatchOutcome::Partial(failed)) => {
            if failed.len() < n || failed.iter().any(|(_, e)| !e.is_retryable()) {
                Verdict::Up
            } else {
                Verdict::Down
            }
        }
        Err(e) if e.is_retryable() => Verdict::Down,
        // It answered: the destination is up, the data is the problem.
        Err(_) => Verdict::Up,
    }
}

async fn backoff(shared: &Shared, r: &Replicator, attempt: u32, e: &SinkError) {
    // An open breaker does the waiting (and wakes every lane once the destination is back).
    if !r.breaker.is_closed() {
        return;
    }
    let delay = r.policy.delay(attempt, e);
    let mut cancel = shared.cancel.clone();
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = cancel.changed() => {}
    }
}
