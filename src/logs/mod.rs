//! Engine logs for the host's logger: the `tracing` events of every engine in the process
//! (retries, circuit transitions, schema sync, outbox replay and compaction, sink warnings)
//! become [`LogRecord`]s handed to the engine's [`LogSink`] (the plugin's pino-style logger).
//!
//! - `layer`: the one `tracing` layer, installed once per process by the binding (`install`),
//!   which turns events into records and finds the engine an event belongs to.
//! - `routes`: the engines registered in this process, each with its level and sink; an event
//!   is attributed to an engine by the `engine` span its task runs in ([`EngineLog::span`]).
//! - `rate_limit`: a failing destination would log once per change; per message and
//!   replicator a few lines pass per window, then one "N similar messages suppressed" line.
//!
//! Levels are applied here, before anything reaches the host: a level that no engine wants
//! costs one comparison at the call site (the global max level follows the engines' levels).

mod layer;
mod level;
mod rate_limit;
mod routes;

use serde::Serialize;
use serde_json::{Map, Value};

pub use layer::HostLogLayer;
pub use level::LogLevel;
pub use rate_limit::{RateLimit, LINES_PER_WINDOW, WINDOW};
pub use routes::EngineLog;

/// One log line for the host: `logger[level](fields, message)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRecord {
    /// `error`, `warn`, `info`, `debug` or `trace` (pino's method names).
    pub level: &'static str,
    pub message: String,
    /// The event's fields and those of the spans it ran in, keys in camelCase
    /// (`replicator`, `resource`, `recordId`, `attempt`, `code`, `error`, ...).
    pub fields: Map<String, Value>,
}

/// Where an engine's log lines go.
pub trait LogSink: Send + Sync + 'static {
    fn log(&self, records: Vec<LogRecord>);
}

/// Installs [`HostLogLayer`] as the process's global `tracing` subscriber, once. Returns
/// `false` when another subscriber was installed first (engine logs then go there instead).
pub fn install() -> bool {
    use std::sync::OnceLock;
    use tracing_subscriber::layer::SubscriberExt;
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(HostLogLayer);
        tracing::subscriber::set_global_default(subscriber).is_ok()
    })
}
