//! The engines of this process that want log lines: each with its level, sink and rate limit.
//! An event goes to the engine whose `engine` span it ran in, or to the first engine when it
//! ran outside of every engine (a dependency's thread, the host's thread).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use super::rate_limit::{Key, RateLimit};
use super::{LogLevel, LogRecord, LogSink};

struct Route {
    id: u64,
    level: LogLevel,
    /// Cleared when the engine stopped: events from outside every engine go to another one.
    open: AtomicBool,
    sink: Arc<dyn LogSink>,
    limit: Mutex<RateLimit>,
}

impl Route {
    fn send(&self, records: Vec<LogRecord>) {
        if !records.is_empty() {
            self.sink.log(records);
        }
    }
}

static ROUTES: RwLock<Vec<Arc<Route>>> = RwLock::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The most verbose level any registered engine wants (a `LogLevel` as u8).
static MAX_LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Silent as u8);

/// The name of the span that attributes events to an engine.
pub(super) const ENGINE_SPAN: &str = "engine";
/// Its field holding the engine's log id.
pub(super) const ENGINE_FIELD: &str = "log_id";

/// One engine's registration; dropping it unregisters the engine (after sending what its
/// rate limit suppressed).
pub struct EngineLog {
    route: Arc<Route>,
    span: tracing::Span,
}

impl EngineLog {
    pub fn register(level: LogLevel, sink: Arc<dyn LogSink>) -> Self {
        let id = NEXT_ID.fetch_add(1, SeqCst);
        let route = Arc::new(Route {
            id,
            level,
            open: AtomicBool::new(true),
            sink,
            limit: Mutex::new(RateLimit::default()),
        });
        if let Ok(mut routes) = ROUTES.write() {
            routes.push(route.clone());
        }
        update_max_level();
        // At error level so that it exists whenever logging is on at all (see `HostLogLayer`).
        let span =
            tracing::error_span!(target: "s3db_replicator::engine", ENGINE_SPAN, log_id = id);
        Self { route, span }
    }

    /// Run the engine's tasks and threads in this span: their events reach this engine's sink.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    pub fn level(&self) -> LogLevel {
        self.route.level
    }

    /// Sends the summaries of rate-limit windows that ended, about once a second, until the
    /// engine is dropped (so a storm that stops is still summed up).
    pub fn sweeper(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let route: Weak<Route> = Arc::downgrade(&self.route);
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(route) = route.upgrade() else {
                    return;
                };
                let summaries = match route.limit.lock() {
                    Ok(mut l) => l.sweep(Instant::now()),
                    Err(_) => return,
                };
                route.send(summaries);
            }
        }
    }

    /// The engine stopped: sends what the rate limit held back, and stops taking the events
    /// that belong to no engine (its own late events still reach it).
    pub fn close(&self) {
        self.route.open.store(false, SeqCst);
        self.flush();
    }

    /// Sends every pending summary now.
    pub fn flush(&self) {
        let summaries = match self.route.limit.lock() {
            Ok(mut l) => l.drain(),
            Err(_) => return,
        };
        self.route.send(summaries);
    }
}

impl Drop for EngineLog {
    fn drop(&mut self) {
        self.flush();
        if let Ok(mut routes) = ROUTES.write() {
            routes.retain(|r| r.id != self.route.id);
        }
        update_max_level();
    }
}

fn update_max_level() {
    let max = ROUTES
        .read()
        .map(|routes| routes.iter().map(|r| r.level).max())
        .ok()
        .flatten()
        .unwrap_or(LogLevel::Silent);
    if MAX_LEVEL.swap(max as u8, SeqCst) != max as u8 {
        // Call sites cache whether they are enabled; the global max level changed.
        tracing::callsite::rebuild_interest_cache();
    }
}

pub(super) fn max_level() -> LogLevel {
    match MAX_LEVEL.load(SeqCst) {
        0 => LogLevel::Silent,
        1 => LogLevel::Fatal,
        2 => LogLevel::Error,
        3 => LogLevel::Warn,
        4 => LogLevel::Info,
        5 => LogLevel::Debug,
        _ => LogLevel::Trace,
    }
}

/// Hands a record to its engine's sink if the engine's level and rate limit let it pass.
/// `build` runs only then, so a filtered event costs no formatting.
pub(super) fn dispatch(
    engine: Option<u64>,
    level: &tracing::Level,
    callsite: usize,
    build: impl FnOnce() -> LogRecord,
) {
    let route = {
        let Ok(routes) = ROUTES.read() else {
            return;
        };
        let found = match engine {
            Some(id) => routes.iter().find(|r| r.id == id),
            None => routes.iter().find(|r| r.open.load(SeqCst)),
        };
        match found {
            Some(r) if r.level.allows(level) => r.clone(),
            _ => return,
        }
    };
    let record = build();
    let key: Key = (
        callsite,
        record
            .fields
            .get("replicator")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    );
    let (passed, ended) = match route.limit.lock() {
        Ok(mut l) => l.admit(key, &record, Instant::now()),
        Err(_) => return,
    };
    let mut out: Vec<LogRecord> = ended.into_iter().collect();
    if passed {
        out.push(record);
    }
    route.send(out);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Map;

    use super::*;

    #[derive(Default)]
    struct Capture(Mutex<Vec<LogRecord>>);

    impl LogSink for Capture {
        fn log(&self, records: Vec<LogRecord>) {
            self.0.lock().unwrap().extend(records);
        }
    }

    fn record(message: &str) -> LogRecord {
        LogRecord {
            level: "warn",
            message: message.into(),
            fields: Map::new(),
        }
    }

    // The only test of this binary that registers engines: the registry is process-wide.
    #[test]
    fn events_go_to_their_engine_or_the_first_open_one_at_its_level() {
        let (a, b) = (Arc::new(Capture::default()), Arc::new(Capture::default()));
        let log_a = EngineLog::register(LogLevel::Warn, a.clone());
        let log_b = EngineLog::register(LogLevel::Error, b.clone());
        let id_b = log_b.route.id;
        dispatch(Some(id_b), &tracing::Level::ERROR, 1, || record("to b"));
        dispatch(Some(id_b), &tracing::Level::WARN, 2, || {
            record("below b's level")
        });
        dispatch(None, &tracing::Level::WARN, 3, || record("to the first"));
        assert_eq!(
            max_level(),
            LogLevel::Warn,
            "the most verbose engine's level"
        );
        log_a.close();
        dispatch(None, &tracing::Level::ERROR, 4, || record("a is closed"));
        let messages = |c: &Capture| -> Vec<String> {
            c.0.lock()
                .unwrap()
                .iter()
                .map(|r| r.message.clone())
                .collect()
        };
        assert_eq!(messages(&a), ["to the first"]);
        assert_eq!(messages(&b), ["to b", "a is closed"]);
        drop(log_a);
        drop(log_b);
        assert_eq!(
            max_level(),
            LogLevel::Silent,
            "nothing registered: nothing to log"
        );
    }
}
