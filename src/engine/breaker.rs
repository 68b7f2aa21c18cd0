//! A per-replicator circuit breaker. After `failure_threshold` failed writes in a row the
//! replicator stops writing; after `reset_timeout` one lane sends its next batch as a probe
//! (half-open). Success closes the breaker and wakes every lane; failure reopens it with the
//! delay doubled up to `max_reset_timeout`. Permanent rejections count as the destination being
//! up: it answered.
//!
//! The breaker is also how the engine tells an outage from a poison record: a change whose
//! retries run out while nothing else could be written either is kept (the destination is down,
//! see `succeeded_since`), not dead-lettered.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
// tokio's clock, so tests can run in virtual time.
use tokio::time::Instant;

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_probe_in_ms: Option<u64>,
}

struct State {
    mode: BreakerState,
    consecutive: u32,
    delay: Duration,
    next_probe: Instant,
    probing: bool,
    last_success: Option<Instant>,
    /// First failure since the last success: when the current outage began.
    down_since: Option<Instant>,
}

pub(crate) struct Breaker {
    config: Option<BreakerConfig>,
    /// The first probe delay (`resetTimeout`).
    reset: Duration,
    state: Mutex<State>,
    changed: Notify,
}

/// Leave to write one batch. Report how it went; a permit dropped unreported (the write was
/// cancelled) hands the probe to the next lane.
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

/// The breaker opened (the destination looks down) or closed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened { failures: u32 },
    Closed { down_for: Duration },
}

/// What a write attempt said about the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It accepted (some of) the writes, or answered with a permanent rejection.
    Up,
    /// It could not be reached, timed out or failed retryably for everything.
    Down,
}

impl Breaker {
    pub fn new(config: Option<BreakerConfig>) -> Self {
        let reset = Duration::from_millis(config.map_or(1_000, |c| c.reset_timeout_ms));
        Self {
            config,
            reset,
            state: Mutex::new(State {
                mode: BreakerState::Closed,
                consecutive: 0,
                delay: reset,
                next_probe: Instant::now(),
                probing: false,
                last_success: None,
                down_since: None,
            }),
            changed: Notify::new(),
        }
    }

    /// Waits until this lane may write (at once while closed).
    pub async fn admit(&self) -> Permit<'_> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let Ok(mut s) = self.state.lock() else {
                    return self.permit(false);
                };
                match s.mode {
                    BreakerState::Closed => return self.permit(false),
                    BreakerState::Open if !s.probing => {
                        let now = Instant::now();
                        if now >= s.next_probe {
                            s.mode = BreakerState::HalfOpen;
                            s.probing = true;
                            return self.permit(true);
                        }
                        Some(s.next_probe - now)
                    }
                    // A probe is out: wait for its verdict.
                    _ => None,
                }
            };
            match wait {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn permit(&self, probe: bool) -> Permit<'_> {
        Permit {
            breaker: self,
            probe,
            reported: false,
        }
    }

    fn record(&self, verdict: Verdict, probe: bool) -> Option<Transition> {
        let Ok(mut s) = self.state.lock() else {
            return None;
        };
        let now = Instant::now();
        let reset = self.reset;
        match verdict {
            Verdict::Up => {
                let was = s.mode;
                let down_for = s
                    .down_since
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                s.consecutive = 0;
                s.mode = BreakerState::Closed;
                s.probing = false;
                s.delay = reset;
                s.last_success = Some(now);
                s.down_since = None;
                if was != BreakerState::Closed {
                    self.changed.notify_waiters();
                    return Some(Transition::Closed { down_for });
                }
                None
            }
            Verdict::Down => {
                s.consecutive = s.consecutive.saturating_add(1);
                s.down_since.get_or_insert(now);
                let c = self.config?;
                if probe || s.mode == BreakerState::HalfOpen {
                    let max = Duration::from_millis(c.max_reset_timeout_ms);
                    s.delay = (s.delay * 2).min(max);
                    s.mode = BreakerState::Open;
                    s.probing = false;
                    s.next_probe = now + s.delay;
                    self.changed.notify_waiters();
                    None
                } else if s.mode == BreakerState::Closed && s.consecutive >= c.failure_threshold {
                    s.mode = BreakerState::Open;
                    s.delay = reset;
                    s.next_probe = now + reset;
                    Some(Transition::Opened {
                        failures: s.consecutive,
                    })
                } else {
                    None
                }
            }
        }
    }

    /// Whether anything was written successfully since `t`. `false` means the destination
    /// has looked down the whole time.
    pub fn succeeded_since(&self, t: Instant) -> bool {
        self.state
            .lock()
            .map(|s| s.last_success.is_some_and(|at| at >= t))
            .unwrap_or(true)
    }

    pub fn is_closed(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.mode == BreakerState::Closed)
            .unwrap_or(true)
    }

    /// Retries of a change that ran out while the destination looked down do not count: the
    /// change waits for the destination instead of being dead-lettered. Needs the breaker.
    pub fn holds_changes(&self) -> bool {
        self.config.is_some()
    }

    /// How long the destination has failed every write (zero once something succeeds).
    pub fn down_for(&self) -> Duration {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.down_since)
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// How long a change may wait for a destination that is down.
    pub fn hold_timeout(&self) -> Duration {
        Duration::from_millis(self.config.map_or(0, |c| c.hold_timeout_ms))
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let Ok(s) = self.state.lock() else {
            return BreakerSnapshot {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                next_probe_in_ms: None,
            };
        };
        let next_probe_in_ms = (s.mode == BreakerState::Open).then(|| {
            s.next_probe
                .saturating_duration_since(Instant::now())
                .as_millis() as u64
        });
        BreakerSnapshot {
            state: s.mode,
            consecutive_failures: s.consecutive,
            next_probe_in_ms,
        }
    }
}

impl Permit<'_> {
    /// Records how the write went; says whether that opened or closed the breaker.
    pub fn report(mut self, verdict: Verdict) -> Option<Transition> {
        self.reported = true;
        self.breaker.record(verdict, self.probe)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.reported || !self.probe {
            return;
        }
        if let Ok(mut s) = self.breaker.state.lock() {
            s.mode = BreakerState::Open;
            s.probing = false;
            s.next_probe = Instant::now();
        }
        self.breaker.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(Some(BreakerConfig {
            failure_threshold: threshold,
            reset_timeout_ms: 1_000,
            max_reset_timeout_ms: 4_000,
            hold_timeout_ms: 60_000,
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_probes_with_doubling_delays() {
        let b = breaker(2);
        b.admit().await.report(Verdict::Down);
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        b.admit().await.report(Verdict::Down);
        assert_eq!(b.snapshot().state, BreakerState::Open);
        let t0 = Instant::now();
        let probe = b.admit().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
        assert_eq!(b.snapshot().state, BreakerState::HalfOpen);
        probe.report(Verdict::Down);
        let t1 = Instant::now();
        b.admit().await.report(Verdict::Down);
        assert_eq!(t1.elapsed(), Duration::from_secs(2));
        let t2 = Instant::now();
        b.admit().await.report(Verdict::Down);
        assert_eq!(
            t2.elapsed(),
            Duration::from_secs(4),
            "capped at maxResetTimeout"
        );
        let t3 = Instant::now();
        b.admit().await.report(Verdict::Up);
        assert_eq!(t3.elapsed(), Duration::from_secs(4));
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn other_lanes_wait_for_the_probe_and_resume_when_it_succeeds() {
        let b = std::sync::Arc::new(breaker(1));
        b.admit().await.report(Verdict::Down);
        let probe = b.admit().await;
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                b.admit().await.report(Verdict::Up);
            })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            !waiter.is_finished(),
            "a second lane must not write while the probe is out"
        );
        probe.report(Verdict::Up);
        waiter.await.unwrap();
        assert_eq!(b.snapshot().state, BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_are_reported_once_per_outage() {
        let b = breaker(2);
        assert_eq!(b.admit().await.report(Verdict::Down), None);
        assert_eq!(
            b.admit().await.report(Verdict::Down),
            Some(Transition::Opened { failures: 2 })
        );
        assert_eq!(
            b.admit().await.report(Verdict::Down),
            None,
            "a failed probe is no news"
        );
        assert_eq!(
            b.admit().await.report(Verdict::Up),
            Some(Transition::Closed {
                down_for: Duration::from_secs(3)
            })
        );
        assert_eq!(b.admit().await.report(Verdict::Up), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_hands_over_and_success_is_remembered() {
        let b = breaker(1);
        let t = Instant::now();
        assert!(!b.succeeded_since(t));
        b.admit().await.report(Verdict::Down);
        drop(b.admit().await);
        assert_eq!(b.snapshot().state, BreakerState::Open);
        b.admit().await.report(Verdict::Up);
        assert!(b.succeeded_since(t));
    }

    #[tokio::test]
    async fn without_config_it_never_blocks() {
        let b = Breaker::new(None);
        for _ in 0..100 {
            b.admit().await.report(Verdict::Down);
        }
        assert_eq!(b.snapshot().state, BreakerState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 100);
        assert!(!b.holds_changes());
    }
}
