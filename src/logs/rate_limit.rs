//! Per (message, replicator) rate limit: a destination that fails every write would otherwise
//! log once per change. A few lines per window pass; the rest are counted and reported as one
//! summary line when the window ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::LogRecord;

/// Lines of one message (and replicator) that pass per window.
pub const LINES_PER_WINDOW: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The call site (one message) and the replicator it is about.
pub type Key = (usize, Option<String>);

struct Window {
    started: Instant,
    passed: u32,
    suppressed: u64,
    level: &'static str,
    message: String,
    replicator: Option<Value>,
}

impl Window {
    fn summary(&self) -> Option<LogRecord> {
        if self.suppressed == 0 {
            return None;
        }
        let mut fields = Map::new();
        if let Some(r) = &self.replicator {
            fields.insert("replicator".into(), r.clone());
        }
        fields.insert("suppressed".into(), self.suppressed.into());
        fields.insert("windowMs".into(), (WINDOW.as_millis() as u64).into());
        Some(LogRecord {
            level: self.level,
            message: format!(
                "{} ({} similar messages suppressed in {} s)",
                self.message,
                self.suppressed,
                WINDOW.as_secs()
            ),
            fields,
        })
    }
}

#[derive(Default)]
pub struct RateLimit {
    windows: HashMap<Key, Window>,
}

impl RateLimit {
    /// Whether `record` passes, plus the summary of this key's window that just ended.
    pub fn admit(
        &mut self,
        key: Key,
        record: &LogRecord,
        now: Instant,
    ) -> (bool, Option<LogRecord>) {
        let mut ended = None;
        if let Some(w) = self.windows.get(&key) {
            if now.saturating_duration_since(w.started) >= WINDOW {
                ended = self.windows.remove(&key).and_then(|w| w.summary());
            }
        }
        let w = self.windows.entry(key).or_insert_with(|| Window {
            started: now,
            passed: 0,
            suppressed: 0,
            level: record.level,
            message: record.message.clone(),
            replicator: record.fields.get("replicator").cloned(),
        });
        if w.passed < LINES_PER_WINDOW {
            w.passed += 1;
            (true, ended)
        } else {
            w.suppressed += 1;
            (false, ended)
        }
    }

    /// Ends the windows older than [`WINDOW`]: their summaries (memory stays bounded by the
    /// messages logged in the last window).
    pub fn sweep(&mut self, now: Instant) -> Vec<LogRecord> {
        let mut out = Vec::new();
        self.windows.retain(|_, w| {
            if now.saturating_duration_since(w.started) < WINDOW {
                return true;
            }
            out.extend(w.summary());
            false
        });
        out
    }

    /// Ends every window (the engine stops): what was suppressed so far.
    pub fn drain(&mut self) -> Vec<LogRecord> {
        self.windows
            .drain()
            .filter_map(|(_, w)| w.summary())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message: &str, replicator: &str) -> LogRecord {
        let mut fields = Map::new();
        fields.insert("replicator".into(), replicator.into());
        fields.insert("attempt".into(), 1.into());
        LogRecord {
            level: "warn",
            message: message.into(),
            fields,
        }
    }

    #[test]
    fn a_few_lines_pass_per_window_then_one_summary_counts_the_rest() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        let r = record("Retrying batch.", "hook");
        let passed = (0..100)
            .filter(|_| limit.admit((1, Some("hook".into())), &r, t0).0)
            .count();
        assert_eq!(passed, LINES_PER_WINDOW as usize);
        assert!(
            limit.sweep(t0 + WINDOW / 2).is_empty(),
            "the window is still open"
        );
        let summaries = limit.sweep(t0 + WINDOW);
        assert_eq!(summaries.len(), 1);
        let s = &summaries[0];
        assert_eq!(s.level, "warn");
        assert_eq!(
            s.message,
            "Retrying batch. (95 similar messages suppressed in 10 s)"
        );
        assert_eq!(s.fields["replicator"], "hook");
        assert_eq!(s.fields["suppressed"], 95);
        // A new window lets lines through again.
        assert!(limit.admit((1, Some("hook".into())), &r, t0 + WINDOW).0);
    }

    #[test]
    fn keys_are_limited_separately_and_a_late_line_reports_the_ended_window() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        let a = record("Retrying batch.", "a");
        let b = record("Retrying batch.", "b");
        for _ in 0..10 {
            limit.admit((1, Some("a".into())), &a, t0);
        }
        assert!(
            limit.admit((1, Some("b".into())), &b, t0).0,
            "another replicator"
        );
        assert!(
            limit.admit((2, Some("a".into())), &a, t0).0,
            "another message"
        );
        let (passed, ended) = limit.admit((1, Some("a".into())), &a, t0 + WINDOW);
        assert!(passed);
        assert_eq!(
            ended.map(|s| s.fields["suppressed"].clone()),
            Some(5.into())
        );
    }

    #[test]
    fn drain_reports_what_was_suppressed_and_nothing_when_all_passed() {
        let mut limit = RateLimit::default();
        let t0 = Instant::now();
        let r = record("Change failed.", "a");
        for _ in 0..LINES_PER_WINDOW {
            limit.admit((1, None), &r, t0);
        }
        assert!(limit.drain().is_empty());
        for _ in 0..LINES_PER_WINDOW + 2 {
            limit.admit((1, None), &r, t0);
        }
        assert_eq!(limit.drain()[0].fields["suppressed"], 2);
    }
}
