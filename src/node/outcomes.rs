//! The outcome channel to the JavaScript thread, built so that reporting costs the
//! application almost nothing under load.
//!
//! A threadsafe-function call costs tens of microseconds on the JS thread, and parsing an
//! outcome costs more than the change's own push. So:
//! - **Coalesced in time.** At most one message per window (`lingerMs`): the first outcome
//!   after a quiet window goes out at once (no added latency at light load); outcomes arriving
//!   within the window wait for its end and go out together.
//! - **Counts instead of records when nobody looks.** A delivered or skipped change is sent
//!   in full only when the host needs it (a listener of the replicated/skipped events, a
//!   `replicator:success` listener on the database, `verbose`, or a ticket of
//!   `replicateBatch`/`syncAllData`); otherwise it is only counted (`replicated`, `skipped`),
//!   which is all the plugin's totals need. Failures always go in full.
//! - **Ordered.** Circuit and held messages, and `flush()`'s barrier, first send what is
//!   buffered, so the host sees every message in the order the engine produced it.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::Status;
use serde::Serialize;

use super::host::JsEventFn;
use crate::engine::{Outcome, OutcomeStatus};

/// Which settled changes the host wants as records rather than counts.
#[derive(Default)]
pub struct Detail {
    pub replicated: AtomicBool,
    pub skipped: AtomicBool,
}

pub struct OutcomeChannel {
    events: JsEventFn,
    window: Duration,
    detail: Detail,
    state: Mutex<Buffer>,
}

#[derive(Default)]
struct Buffer {
    outcomes: Vec<Outcome>,
    replicated: u64,
    skipped: u64,
    pending: u64,
    /// Something is buffered (an empty outcome list still carries `pending`).
    dirty: bool,
    /// A send is scheduled for the end of the current window.
    scheduled: bool,
    last_sent: Option<Instant>,
}

#[derive(Serialize)]
struct Message<'a> {
    outcomes: &'a [Outcome],
    #[serde(skip_serializing_if = "is_zero")]
    replicated: u64,
    #[serde(skip_serializing_if = "is_zero")]
    skipped: u64,
    pending: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl OutcomeChannel {
    pub fn new(events: JsEventFn, window_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            events,
            window: Duration::from_millis(window_ms),
            detail: Detail::default(),
            state: Mutex::new(Buffer::default()),
        })
    }

    /// The function itself, for a call that must wait for JavaScript (the barrier).
    pub fn events(&self) -> &JsEventFn {
        &self.events
    }

    pub fn set_detail(&self, replicated: bool, skipped: bool) {
        self.detail.replicated.store(replicated, Relaxed);
        self.detail.skipped.store(skipped, Relaxed);
    }

    /// Buffers outcomes (and the engine's `pending` count as of them) for the next message.
    pub fn emit(self: &Arc<Self>, outcomes: Vec<Outcome>, pending: u64) {
        let replicated = self.detail.replicated.load(Relaxed);
        let skipped = self.detail.skipped.load(Relaxed);
        let wait = {
            let mut b = self.buffer();
            for o in outcomes {
                let keep = o.ticket.is_some()
                    || match o.status {
                        OutcomeStatus::Failed => true,
                        OutcomeStatus::Replicated => replicated,
                        OutcomeStatus::Skipped => skipped,
                    };
                if keep {
                    b.outcomes.push(o);
                } else if o.status == OutcomeStatus::Replicated {
                    b.replicated += 1;
                } else {
                    b.skipped += 1;
                }
            }
            b.pending = pending;
            b.dirty = true;
            if b.scheduled {
                return;
            }
            let now = Instant::now();
            let due = b
                .last_sent
                .map(|at| at + self.window)
                .filter(|due| *due > now);
            match (due, tokio::runtime::Handle::try_current()) {
                (Some(due), Ok(handle)) => {
                    b.scheduled = true;
                    Some((due, handle))
                }
                // A quiet window (or no runtime to wait on): send now.
                _ => {
                    self.send_locked(&mut b);
                    None
                }
            }
        };
        if let Some((due, handle)) = wait {
            let this = self.clone();
            handle.spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                this.send_buffered();
            });
        }
    }

    /// Sends what is buffered now (before a message that must come after it).
    pub fn send_buffered(&self) {
        let mut b = self.buffer();
        b.scheduled = false;
        self.send_locked(&mut b);
    }

    /// Sends another kind of message (circuit, held) after everything buffered before it.
    pub fn send_other(&self, json: String) {
        let mut b = self.buffer();
        self.send_locked(&mut b);
        self.call(json);
    }

    fn send_locked(&self, b: &mut Buffer) {
        if !b.dirty {
            return;
        }
        let message = Message {
            outcomes: &b.outcomes,
            replicated: b.replicated,
            skipped: b.skipped,
            pending: b.pending,
        };
        if let Ok(json) = serde_json::to_string(&message) {
            self.call(json);
        }
        b.outcomes.clear();
        b.replicated = 0;
        b.skipped = 0;
        b.dirty = false;
        b.last_sent = Some(Instant::now());
    }

    /// Queues the call (under the buffer's lock, so messages keep the engine's order).
    fn call(&self, json: String) {
        let status = self
            .events
            .call(json, ThreadsafeFunctionCallMode::NonBlocking);
        if status != Status::Ok {
            tracing::debug!(
                message = "Could not report outcomes; the host is closing.",
                ?status
            );
        }
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // Nothing panics while holding this lock; if something did, the buffer is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
