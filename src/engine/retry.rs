//! Backoff arithmetic. Sinks classify errors; this decides how long to wait and when to stop.

use std::time::Duration;

use crate::error::{ErrorKind, SinkError};

/// A destination's `Retry-After` is honoured beyond `max`, up to this (a lane waiting an hour
/// because a server said so would look like an outage).
const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `base`, `2×base`, `4×base`, ... up to `max`, with jitter.
    Exponential,
    /// Always `base`.
    Fixed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub strategy: Strategy,
    /// Spread retries of many lanes so they do not hit a recovering destination together.
    pub jitter: bool,
}

impl RetryPolicy {
    /// Whether a failure on `attempt` (1-based) should be tried again.
    pub fn should_retry(&self, attempt: u32, error: &SinkError) -> bool {
        error.is_retryable() && attempt < self.max_attempts
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32, error: &SinkError) -> Duration {
        let nominal = match self.strategy {
            Strategy::Fixed => self.base,
            Strategy::Exponential => {
                let factor = 1u32
                    .checked_shl(attempt.saturating_sub(1).min(30))
                    .unwrap_or(u32::MAX);
                self.base.saturating_mul(factor).min(self.max)
            }
        };
        // "Equal jitter": half fixed, half random. Keeps the growth visible while spreading load.
        let jittered = if self.jitter && !nominal.is_zero() {
            let half = nominal / 2;
            half + Duration::from_nanos(fastrand::u64(
                0..=half.as_nanos().min(u64::MAX as u128) as u64,
            ))
        } else {
            nominal
        };
        match error.kind {
            ErrorKind::Throttled {
                retry_after: Some(after),
            } => jittered.max(after.min(self.max.max(RETRY_AFTER_CAP))),
            _ => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(strategy: Strategy, jitter: bool) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
            strategy,
            jitter,
        }
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let p = policy(Strategy::Exponential, false);
        let e = SinkError::retryable("x");
        let d: Vec<u128> = (1..=4).map(|a| p.delay(a, &e).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 350, 350]);
    }

    #[test]
    fn fixed_stays_constant() {
        let p = policy(Strategy::Fixed, false);
        let e = SinkError::retryable("x");
        assert!((1..=4).all(|a| p.delay(a, &e) == Duration::from_millis(100)));
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let p = policy(Strategy::Exponential, true);
        let e = SinkError::retryable("x");
        for _ in 0..200 {
            let d = p.delay(2, &e).as_millis();
            assert!((100..=200).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_is_honoured() {
        let p = policy(Strategy::Fixed, false);
        let e = SinkError::throttled("429", Some(Duration::from_millis(300)));
        assert_eq!(p.delay(1, &e), Duration::from_millis(300));
    }

    #[test]
    fn retry_after_is_capped() {
        let p = policy(Strategy::Fixed, false);
        let e = SinkError::throttled("429", Some(Duration::from_secs(3600)));
        assert_eq!(p.delay(1, &e), RETRY_AFTER_CAP);
    }

    #[test]
    fn stops_on_permanent_errors_and_exhaustion() {
        let p = policy(Strategy::Fixed, false);
        assert!(p.should_retry(1, &SinkError::retryable("x")));
        assert!(!p.should_retry(4, &SinkError::retryable("x")));
        assert!(!p.should_retry(1, &SinkError::permanent("x")));
    }
}
