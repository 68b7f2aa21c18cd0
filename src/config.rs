//! The engine's configuration: parsed from the JSON the JS plugin sends, then validated.
//!
//! The plugin replaces every user function with a placeholder `{ "$fn": <id> }` before the
//! options cross the FFI; the functions themselves stay in JavaScript and are called by id.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigError;
use crate::event::Op;
use crate::logs::LogLevel;
use crate::sinks::SinkConfig;

const fn default_true() -> bool {
    true
}
const fn default_batch_size() -> usize {
    100
}
const fn default_max_retries() -> u32 {
    3
}
const fn default_timeout_ms() -> u64 {
    30_000
}
const fn default_queue_capacity() -> usize {
    10_000
}
const fn default_bulk_batch_size() -> usize {
    2_000
}
const fn default_linger_ms() -> u64 {
    2
}
const fn default_concurrency() -> usize {
    4
}
const fn default_retry_delay_ms() -> u64 {
    1_000
}
const fn default_max_retry_delay_ms() -> u64 {
    30_000
}

/// Plugin options that the engine uses. Names are the spec's (`batchSize`, `maxRetries`,
/// `timeout`), plus the engine's own tuning knobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EngineOptions {
    /// Replicate at all. When false, changes are accepted and ignored.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Largest micro-batch handed to a destination in one write.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Largest write under a backlog, for destinations where one large statement costs far
    /// less than many small ones (SQL, MongoDB): when more than `batchSize` changes wait in a
    /// lane (a full sync, `replicateBatch`, catching up after an outage), one write takes up
    /// to this many. Set it to `batchSize` to keep every write at `batchSize`.
    #[serde(default = "default_bulk_batch_size")]
    pub bulk_batch_size: usize,
    /// Attempts for a failed write before the change is reported as failed (at least 1).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Bound of one write attempt, and of the drain on `stop()`, in milliseconds.
    #[serde(default = "default_timeout_ms", rename = "timeout")]
    pub timeout_ms: u64,
    /// Changes a replicator may hold undelivered before the plugin slows the writers down.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Under load (more than one change waiting), the engine waits this long after routing
    /// the changes at hand before taking the next ones, so that they arrive at the lanes in
    /// batches and pushes stay cheap; a change that comes alone is routed at once. Milliseconds.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Parallel ordered lanes per replicator: one record's changes always share a lane.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// First backoff delay after a failed attempt, in milliseconds (doubles each attempt).
    #[serde(default = "default_retry_delay_ms", rename = "retryDelay")]
    pub retry_delay_ms: u64,
    /// Cap of the backoff delay, in milliseconds.
    #[serde(default = "default_max_retry_delay_ms", rename = "maxRetryDelay")]
    pub max_retry_delay_ms: u64,
    /// The durable outbox: `false` (or absent) keeps accepted changes in memory only.
    #[serde(default)]
    pub outbox: Option<OutboxSetting>,
    /// Per-replicator circuit breaker; `false` turns it off.
    #[serde(default)]
    pub circuit_breaker: Option<BreakerSetting>,
    /// How much of the engine's logging reaches the host's logger (pino's level names; the
    /// plugin sends `logLevel`, or `debug` with `verbose`, else `warn`).
    #[serde(default)]
    pub log_level: LogLevel,
    /// The built-in HTTP listener for Prometheus (`{ port, host }`); off when absent or `false`.
    /// Served by the plugin in JavaScript; checked here with the other options.
    #[serde(default)]
    pub metrics: Option<MetricsSetting>,
    /// With `outbox.jetstream`: `publish`, `deliver` or `both` (default).
    #[serde(default)]
    pub mode: Option<String>,
    pub replicators: Vec<ReplicatorEntry>,
}

/// What this process does with changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Its own outbox (disk or memory) and its own delivery: the default without JetStream.
    Local,
    /// Publishes accepted changes to JetStream; delivers nothing.
    Publish,
    /// Delivers from JetStream (a worker); accepts no changes of its own.
    Deliver,
    /// Publishes and delivers in-process.
    Both,
}

impl Mode {
    pub fn delivers_from_stream(self) -> bool {
        matches!(self, Self::Deliver | Self::Both)
    }
}

/// `metrics: false` or `metrics: { port, host }`.
#[derive(Debug, Clone)]
pub enum MetricsSetting {
    Flag(bool),
    Options(MetricsOptions),
}

impl<'de> Deserialize<'de> for MetricsSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        flag_or_options(
            d,
            "false or an object such as { port: 9464, host: '127.0.0.1' }",
        )
        .map(|f| f.map_or_else(Self::Flag, Self::Options))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsOptions {
    /// TCP port of `GET /metrics`; 0 picks a free one (`plugin.metricsAddress()` tells which).
    /// Checked in `parse_metrics` (inside `flag_or_options` serde would lose the field's path).
    #[serde(default)]
    pub port: Option<Value>,
    /// Interface to listen on. Default `127.0.0.1` (this machine only).
    #[serde(default)]
    pub host: Option<Value>,
}

/// Where the built-in metrics listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsListener {
    pub port: u16,
    pub host: String,
}

/// `outbox: false` or `outbox: { dir, ... }`.
#[derive(Debug, Clone)]
pub enum OutboxSetting {
    Flag(bool),
    Options(OutboxOptions),
}

impl<'de> Deserialize<'de> for OutboxSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        flag_or_options(
            d,
            "false or an object such as { dir: './.s3db-replicator' }",
        )
        .map(|f| f.map_or_else(Self::Flag, Self::Options))
    }
}

/// `true`/`false`, or the options object, whose own errors (an unknown or misspelled key, a
/// wrong type) are kept instead of serde's "did not match any variant".
fn flag_or_options<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
    takes: &str,
) -> Result<Result<T, bool>, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(Err(b)),
        v @ Value::Object(_) => serde_json::from_value(v).map(Ok).map_err(D::Error::custom),
        _ => Err(D::Error::custom(format!("expected {takes}"))),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboxOptions {
    /// Directory of the log; the plugin fills in its default. Without it the outbox is in memory.
    #[serde(default)]
    pub dir: Option<String>,
    /// `interval` (default): group commit, fsync every `fsyncIntervalMs`; `off`: leave flushing
    /// to the OS (a killed process still loses nothing; a power cut may).
    #[serde(default)]
    pub fsync: Option<String>,
    #[serde(default)]
    pub fsync_interval_ms: Option<u64>,
    #[serde(default)]
    pub segment_bytes: Option<u64>,
    /// The shared JetStream log instead of the local one (see `crate::jetstream`).
    #[serde(default)]
    pub jetstream: Option<Box<crate::jetstream::JetStreamOptions>>,
}

/// `circuitBreaker: false` or `circuitBreaker: { failureThreshold, resetTimeout, maxResetTimeout }`.
#[derive(Debug, Clone)]
pub enum BreakerSetting {
    Flag(bool),
    Options(BreakerOptions),
}

impl<'de> Deserialize<'de> for BreakerSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        flag_or_options(
            d,
            "false or an object such as { failureThreshold: 5, resetTimeout: 1000 }",
        )
        .map(|f| f.map_or_else(Self::Flag, Self::Options))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BreakerOptions {
    #[serde(default)]
    pub failure_threshold: Option<u32>,
    #[serde(default)]
    pub reset_timeout: Option<u64>,
    #[serde(default)]
    pub max_reset_timeout: Option<u64>,
    #[serde(default)]
    pub hold_timeout: Option<u64>,
}

/// Where accepted changes are kept until every destination has them.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// `None`: in memory (lost with the process).
    pub dir: Option<std::path::PathBuf>,
    /// `None`: never fsync explicitly.
    pub fsync_interval_ms: Option<u64>,
    pub segment_bytes: u64,
    /// `Some`: changes go through JetStream; `dir` then only keeps dead letters.
    pub jetstream: Option<crate::jetstream::JetStreamConfig>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            dir: None,
            fsync_interval_ms: Some(20),
            segment_bytes: 16 << 20,
            jetstream: None,
        }
    }
}

/// After `failure_threshold` failed writes in a row a replicator stops writing and probes
/// the destination after `reset_timeout_ms`, doubling up to `max_reset_timeout_ms`. Changes
/// wait for a destination that is down for up to `hold_timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub reset_timeout_ms: u64,
    pub max_reset_timeout_ms: u64,
    /// How long a change may wait for a destination that is down before it is dead-lettered
    /// anyway (so an outage cannot hide forever; the dead letter can be retried).
    pub hold_timeout_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            reset_timeout_ms: 1_000,
            max_reset_timeout_ms: 30_000,
            hold_timeout_ms: 600_000,
        }
    }
}

/// One replicator as the user wrote it (functions already replaced by placeholders).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicatorEntry {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub resources: Option<Value>,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// Where one source resource goes inside one replicator.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub source: String,
    pub dest: String,
    /// `None` means every action.
    pub actions: Option<HashSet<Op>>,
    pub transform: Option<u32>,
    pub should_replicate: Option<u32>,
    /// The driver's own settings for this destination (`primaryKey`, `queueUrl`, ...): keys of
    /// a destination object beyond the common ones, limited to what the driver declares in
    /// [`SinkConfig::route_options`]. The sink reads them at build time (`SinkContext::routes`).
    pub options: serde_json::Map<String, Value>,
}

impl Route {
    pub fn wants(&self, op: Op) -> bool {
        self.actions.as_ref().is_none_or(|a| a.contains(&op))
    }
}

/// A validated replicator.
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    pub id: String,
    pub driver: String,
    pub enabled: bool,
    pub routes: Vec<Route>,
    pub sink: SinkConfig,
}

/// The validated engine configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub enabled: bool,
    pub batch_size: usize,
    pub bulk_batch_size: usize,
    pub max_retries: u32,
    pub timeout_ms: u64,
    pub queue_capacity: usize,
    pub linger_ms: u64,
    pub concurrency: usize,
    pub retry_delay_ms: u64,
    pub max_retry_delay_ms: u64,
    pub outbox: OutboxConfig,
    pub mode: Mode,
    /// `None`: no circuit breaker.
    pub breaker: Option<BreakerConfig>,
    pub log_level: LogLevel,
    /// `None`: no built-in metrics listener.
    pub metrics: Option<MetricsListener>,
    pub replicators: Vec<ReplicatorConfig>,
}

/// Drivers that the spec names and this version does not ship yet: a clear error beats
/// "unknown driver" for a name the user copied from the documentation.
const PLANNED_DRIVERS: &[&str] = &["csv", "jsonl", "parquet", "excel"];

impl EngineConfig {
    /// Parses and validates the JSON produced by the plugin.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            ConfigError::new(
                "options",
                e.to_string(),
                "pass the plugin options as an object",
            )
        })?;
        let opts: EngineOptions = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            let (reason, hint) =
                crate::error::describe_serde(&e.inner().to_string(), value_at(&value, &path));
            ConfigError::new(
                if path == "." {
                    "options".to_string()
                } else {
                    path
                },
                reason,
                if hint.is_empty() {
                    "see the configuration reference in the README".to_string()
                } else {
                    hint
                },
            )
        })?;
        Self::from_options(opts)
    }

    pub fn from_options(opts: EngineOptions) -> Result<Self, ConfigError> {
        range("batchSize", opts.batch_size as u64, 1, 10_000)?;
        range("bulkBatchSize", opts.bulk_batch_size as u64, 1, 100_000)?;
        range("maxRetries", opts.max_retries as u64, 0, 100)?;
        range("timeout", opts.timeout_ms, 1, 3_600_000)?;
        range("queueCapacity", opts.queue_capacity as u64, 1, 10_000_000)?;
        range("lingerMs", opts.linger_ms, 0, 60_000)?;
        range("concurrency", opts.concurrency as u64, 1, 256)?;
        range("retryDelay", opts.retry_delay_ms, 0, 3_600_000)?;
        range("maxRetryDelay", opts.max_retry_delay_ms, 0, 3_600_000)?;
        let outbox = parse_outbox(opts.outbox)?;
        let mode = parse_mode(opts.mode.as_deref(), outbox.jetstream.is_some())?;
        let breaker = parse_breaker(opts.circuit_breaker)?;
        let metrics = parse_metrics(opts.metrics)?;
        if opts.replicators.is_empty() {
            return Err(ConfigError::new(
                "replicators",
                "no replicators are configured",
                "pass at least one: new ReplicatorPlugin({ replicators: [{ driver: 's3db', resources: ['users'], config: { connectionString: 'memory://backup' } }] })",
            ));
        }
        let drivers: Vec<String> = opts
            .replicators
            .iter()
            .map(|r| r.driver.clone().unwrap_or_default())
            .collect();
        let mut ids = HashSet::new();
        let mut replicators = Vec::with_capacity(opts.replicators.len());
        for (i, entry) in opts.replicators.into_iter().enumerate() {
            let rep = parse_replicator(i, entry, &drivers)?;
            if !ids.insert(rep.id.clone()) {
                return Err(ConfigError::new(
                    format!("replicators[{i}].id"),
                    format!("the id '{}' is used by another replicator", rep.id),
                    "give every replicator a unique id",
                ));
            }
            replicators.push(rep);
        }
        Ok(Self {
            enabled: opts.enabled,
            batch_size: opts.batch_size,
            bulk_batch_size: opts.bulk_batch_size,
            max_retries: opts.max_retries,
            timeout_ms: opts.timeout_ms,
            queue_capacity: opts.queue_capacity,
            linger_ms: opts.linger_ms,
            concurrency: opts.concurrency,
            retry_delay_ms: opts.retry_delay_ms,
            max_retry_delay_ms: opts.max_retry_delay_ms,
            outbox,
            mode,
            breaker,
            log_level: opts.log_level,
            metrics,
            replicators,
        })
    }
}

/// The value at a serde path such as `replicators[0].config.url` (for error messages).
pub(crate) fn value_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = root;
    for part in path.split('.').filter(|p| !p.is_empty() && *p != ".") {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, i)| (k, i));
        if !key.is_empty() {
            v = v.get(key)?;
        }
        for i in indexes.split('[').filter(|i| !i.is_empty()) {
            v = v.get(i.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

fn parse_outbox(setting: Option<OutboxSetting>) -> Result<OutboxConfig, ConfigError> {
    let mut out = OutboxConfig::default();
    let opts = match setting {
        None | Some(OutboxSetting::Flag(false)) => return Ok(out),
        Some(OutboxSetting::Flag(true)) => {
            return Err(ConfigError::new(
                "outbox",
                "`true` does not say where the outbox lives",
                "give a directory: outbox: { dir: './.s3db-replicator' }, or leave the option out for the default",
            ))
        }
        Some(OutboxSetting::Options(o)) => o,
    };
    match opts.dir.as_deref().map(str::trim) {
        Some("") => {
            return Err(ConfigError::new(
                "outbox.dir",
                "the directory is empty",
                "give a path, e.g. outbox: { dir: './.s3db-replicator' }",
            ))
        }
        Some(dir) => out.dir = Some(dir.into()),
        None => {}
    }
    if let Some(ms) = opts.fsync_interval_ms {
        range("outbox.fsyncIntervalMs", ms, 1, 60_000)?;
        out.fsync_interval_ms = Some(ms);
    }
    match opts.fsync.as_deref() {
        None | Some("interval") => {}
        Some("off") => out.fsync_interval_ms = None,
        Some(other) => {
            return Err(ConfigError::new(
                "outbox.fsync",
                format!("unknown fsync mode '{other}'"),
                "use 'interval' (group commit every fsyncIntervalMs) or 'off'",
            ))
        }
    }
    if let Some(bytes) = opts.segment_bytes {
        range("outbox.segmentBytes", bytes, 4096, 1 << 32)?;
        out.segment_bytes = bytes;
    }
    if let Some(js) = opts.jetstream {
        out.jetstream = Some(crate::jetstream::parse(*js)?);
    }
    Ok(out)
}

fn parse_mode(mode: Option<&str>, jetstream: bool) -> Result<Mode, ConfigError> {
    let parsed = match mode {
        None if jetstream => Mode::Both,
        None | Some("local") => Mode::Local,
        Some("publish") => Mode::Publish,
        Some("deliver") => Mode::Deliver,
        Some("both") => Mode::Both,
        Some(other) => {
            return Err(ConfigError::new(
                "mode",
                format!("unknown mode '{other}'"),
                "use 'publish' (application instances), 'deliver' (a worker) or 'both', with outbox: { jetstream: { url } }",
            ))
        }
    };
    if jetstream == (parsed == Mode::Local) {
        return Err(ConfigError::new(
            "mode",
            if jetstream {
                "mode 'local' does not use outbox.jetstream".to_string()
            } else {
                format!("mode '{}' needs the JetStream outbox", mode.unwrap_or_default())
            },
            "add outbox: { jetstream: { url: 'nats://127.0.0.1:4222' } }, or leave mode out for the local outbox",
        ));
    }
    Ok(parsed)
}

fn parse_breaker(setting: Option<BreakerSetting>) -> Result<Option<BreakerConfig>, ConfigError> {
    let opts = match setting {
        Some(BreakerSetting::Flag(false)) => return Ok(None),
        None | Some(BreakerSetting::Flag(true)) => BreakerOptions::default(),
        Some(BreakerSetting::Options(o)) => o,
    };
    let mut out = BreakerConfig::default();
    if let Some(n) = opts.failure_threshold {
        range("circuitBreaker.failureThreshold", n as u64, 1, 1_000_000)?;
        out.failure_threshold = n;
    }
    if let Some(ms) = opts.reset_timeout {
        range("circuitBreaker.resetTimeout", ms, 1, 3_600_000)?;
        out.reset_timeout_ms = ms;
    }
    if let Some(ms) = opts.max_reset_timeout {
        range("circuitBreaker.maxResetTimeout", ms, 1, 3_600_000)?;
        out.max_reset_timeout_ms = ms;
    }
    if let Some(ms) = opts.hold_timeout {
        range("circuitBreaker.holdTimeout", ms, 0, 7 * 24 * 3_600_000)?;
        out.hold_timeout_ms = ms;
    }
    out.max_reset_timeout_ms = out.max_reset_timeout_ms.max(out.reset_timeout_ms);
    Ok(Some(out))
}

fn parse_metrics(setting: Option<MetricsSetting>) -> Result<Option<MetricsListener>, ConfigError> {
    let opts = match setting {
        None | Some(MetricsSetting::Flag(false)) => return Ok(None),
        Some(MetricsSetting::Flag(true)) => {
            return Err(ConfigError::new(
                "metrics",
                "`true` does not say which port to listen on",
                "give a port: metrics: { port: 9464 } (0 picks a free one), or mount plugin.metrics() on your own HTTP server",
            ))
        }
        Some(MetricsSetting::Options(o)) => o,
    };
    let port = match &opts.port {
        None | Some(Value::Null) => {
            return Err(ConfigError::new(
                "metrics.port",
                "no port is given",
                "give one: metrics: { port: 9464 } (0 picks a free one)",
            ))
        }
        Some(v) => v.as_u64().ok_or_else(|| {
            ConfigError::new(
                "metrics.port",
                format!(
                    "expected a whole number from 0 to 65535, got {}",
                    describe_value(v)
                ),
                "give a number, e.g. metrics: { port: 9464 } (0 picks a free one)",
            )
        })?,
    };
    range("metrics.port", port, 0, 65_535)?;
    let host = match &opts.host {
        None | Some(Value::Null) => None,
        Some(Value::String(h)) => Some(h.trim()),
        Some(v) => {
            return Err(ConfigError::new(
                "metrics.host",
                format!("expected a string, got {}", describe_value(v)),
                "use an address such as '127.0.0.1' (the default) or '0.0.0.0'",
            ))
        }
    };
    let host = match host {
        None => "127.0.0.1".to_string(),
        Some(h) if h.is_empty() || h.contains(char::is_whitespace) => {
            return Err(ConfigError::new(
                "metrics.host",
                format!("'{h}' is not a host name or address"),
                "use an address such as '127.0.0.1' (this machine only, the default) or '0.0.0.0' (every interface)",
            ))
        }
        Some(h) => h.to_string(),
    };
    Ok(Some(MetricsListener {
        port: port as u16,
        host,
    }))
}

/// `string "9464"`, `number -1`, ...: what a wrong value was, for an error message.
fn describe_value(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let mut text = v.to_string();
    if text.len() > 40 {
        text = format!("{}…", text.chars().take(40).collect::<String>());
    }
    format!("{kind} {text}")
}

fn range(name: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(
            name,
            format!("{value} is out of range"),
            format!("use a whole number from {min} to {max}"),
        ));
    }
    Ok(())
}

fn parse_replicator(
    i: usize,
    entry: ReplicatorEntry,
    drivers: &[String],
) -> Result<ReplicatorConfig, ConfigError> {
    let at = format!("replicators[{i}]");
    let driver = match entry.driver {
        Some(d) if !d.trim().is_empty() => d,
        _ => {
            return Err(ConfigError::new(
                format!("{at}.driver"),
                "the replicator has no driver",
                format!(
                    "name one, e.g. {{ driver: 's3db', ... }}; available: {}",
                    SinkConfig::DRIVERS.join(", ")
                ),
            ))
        }
    };
    if PLANNED_DRIVERS.contains(&driver.as_str()) {
        return Err(ConfigError::new(
            format!("{at}.driver"),
            format!(
                "the '{driver}' driver is not available in this version of s3db-replicator yet"
            ),
            format!("available drivers: {}", SinkConfig::DRIVERS.join(", ")),
        ));
    }
    if !SinkConfig::DRIVERS.contains(&driver.as_str()) {
        return Err(ConfigError::new(
            format!("{at}.driver"),
            format!("unknown driver '{driver}'"),
            format!("use one of: {}", SinkConfig::DRIVERS.join(", ")),
        ));
    }
    let id = match entry.id {
        Some(id) if !id.trim().is_empty() => id,
        Some(_) => {
            return Err(ConfigError::new(
                format!("{at}.id"),
                "the id is empty",
                "omit it or give a non-empty string",
            ))
        }
        None => default_id(&driver, i, drivers),
    };
    let resources = entry.resources.unwrap_or(Value::Null);
    let routes = parse_resources(
        &format!("{at}.resources"),
        &resources,
        SinkConfig::route_options(&driver),
    )?;
    let config = entry
        .config
        .unwrap_or_else(|| Value::Object(Default::default()));
    let sink = SinkConfig::parse(&driver, config).map_err(|mut e| {
        e.path = format!(
            "{at}.config{}",
            if e.path.is_empty() || e.path == "." {
                String::new()
            } else {
                format!(".{}", e.path)
            }
        );
        e
    })?;
    sink.check_routes(&routes).map_err(|e| ConfigError {
        path: format!("{at}.{}", e.path),
        ..e
    })?;
    Ok(ReplicatorConfig {
        id,
        driver,
        enabled: entry.enabled,
        routes,
        sink,
    })
}

/// `s3db` for the only s3db replicator; `s3db-2` for the second of two.
fn default_id(driver: &str, index: usize, drivers: &[String]) -> String {
    let same: Vec<usize> = drivers
        .iter()
        .enumerate()
        .filter(|(_, d)| d.as_str() == driver)
        .map(|(i, _)| i)
        .collect();
    if same.len() <= 1 {
        driver.to_string()
    } else {
        let nth = same.iter().position(|&i| i == index).unwrap_or(0) + 1;
        format!("{driver}-{nth}")
    }
}

fn fn_ref(value: &Value) -> Option<u32> {
    let obj = value.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.get("$fn")?.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Keys every driver's destination object takes (`resource`, `table` and `collection` name the
/// destination; which word fits depends on the driver).
const ROUTE_KEYS: &[&str] = &[
    "resource",
    "table",
    "collection",
    "transform",
    "actions",
    "shouldReplicate",
];

/// Parses the spec's five resource-mapping syntaxes into routes; `driver_keys` are the extra
/// keys the replicator's driver accepts in a destination object.
pub fn parse_resources(
    at: &str,
    value: &Value,
    driver_keys: &[&str],
) -> Result<Vec<Route>, ConfigError> {
    let hint_shapes = "use ['users'], { users: 'people' }, { users: { resource, transform, actions } }, { users: (data) => data } or { users: ['people', { resource, transform }] }";
    let mut routes = Vec::new();
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(name) => {
                        routes.push(simple_route(&format!("{at}[{i}]"), name, name)?)
                    }
                    _ => {
                        return Err(ConfigError::new(
                            format!("{at}[{i}]"),
                            "expected a resource name",
                            "list resource names as strings, e.g. ['users', 'orders']",
                        ))
                    }
                }
            }
        }
        Value::Object(map) => {
            for (source, target) in map {
                let here = format!("{at}.{source}");
                check_name(&here, source)?;
                match target {
                    Value::Array(targets) => {
                        if targets.is_empty() {
                            return Err(ConfigError::new(
                                here,
                                "the destination list is empty",
                                "list at least one destination, or remove the resource",
                            ));
                        }
                        for (j, t) in targets.iter().enumerate() {
                            routes.push(parse_target(
                                &format!("{here}[{j}]"),
                                source,
                                t,
                                driver_keys,
                            )?);
                        }
                    }
                    Value::Bool(false) => {}
                    other => routes.push(parse_target(&here, source, other, driver_keys)?),
                }
            }
        }
        Value::Null => {
            return Err(ConfigError::new(
                at,
                "the replicator has no resources",
                hint_shapes,
            ))
        }
        _ => {
            return Err(ConfigError::new(
                at,
                "resources must be an array or an object",
                hint_shapes,
            ))
        }
    }
    if routes.is_empty() {
        return Err(ConfigError::new(
            at,
            "no resources are configured",
            hint_shapes,
        ));
    }
    Ok(routes)
}

fn simple_route(at: &str, source: &str, dest: &str) -> Result<Route, ConfigError> {
    check_name(at, source)?;
    check_name(at, dest)?;
    Ok(Route {
        source: source.to_string(),
        dest: dest.to_string(),
        actions: None,
        transform: None,
        should_replicate: None,
        options: serde_json::Map::new(),
    })
}

fn check_name(at: &str, name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() {
        return Err(ConfigError::new(
            at,
            "a resource name is empty",
            "use the resource's name as created in s3db.js",
        ));
    }
    Ok(())
}

fn parse_target(
    at: &str,
    source: &str,
    target: &Value,
    driver_keys: &[&str],
) -> Result<Route, ConfigError> {
    if let Some(id) = fn_ref(target) {
        let mut r = simple_route(at, source, source)?;
        r.transform = Some(id);
        return Ok(r);
    }
    match target {
        Value::String(dest) => simple_route(at, source, dest),
        Value::Bool(true) => simple_route(at, source, source),
        Value::Object(obj) => {
            let known = |k: &str| ROUTE_KEYS.contains(&k) || driver_keys.contains(&k);
            if let Some(bad) = obj.keys().find(|k| !known(k)) {
                let takes: Vec<&str> = ROUTE_KEYS.iter().chain(driver_keys).copied().collect();
                return Err(ConfigError::new(
                    format!("{at}.{bad}"),
                    format!("unknown option '{bad}'"),
                    format!(
                        "{}a destination object of this driver takes: {}",
                        crate::error::did_you_mean(bad, &takes),
                        takes.join(", ")
                    ),
                ));
            }
            let name = obj
                .get("resource")
                .or_else(|| obj.get("table"))
                .or_else(|| obj.get("collection"));
            let dest = match name {
                None | Some(Value::Null) => source.to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(ConfigError::new(
                        format!("{at}.resource"),
                        "expected a string",
                        "name the destination resource, e.g. resource: 'people'",
                    ))
                }
            };
            let mut route = simple_route(at, source, &dest)?;
            route.options = obj
                .iter()
                .filter(|(k, _)| driver_keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            route.transform = callback(&format!("{at}.transform"), obj.get("transform"))?;
            route.should_replicate =
                callback(&format!("{at}.shouldReplicate"), obj.get("shouldReplicate"))?;
            route.actions = match obj.get("actions") {
                None | Some(Value::Null) => None,
                Some(Value::Array(list)) => {
                    let mut set = HashSet::new();
                    for (k, a) in list.iter().enumerate() {
                        let op = a.as_str().and_then(Op::parse).ok_or_else(|| {
                            ConfigError::new(
                                format!("{at}.actions[{k}]"),
                                format!("unknown action {a}"),
                                "use 'inserted', 'updated' or 'deleted' (or 'insert', 'update', 'delete')",
                            )
                        })?;
                        set.insert(op);
                    }
                    if set.is_empty() {
                        return Err(ConfigError::new(
                            format!("{at}.actions"),
                            "the action list is empty",
                            "list the actions to replicate, or omit actions for all of them",
                        ));
                    }
                    Some(set)
                }
                Some(_) => {
                    return Err(ConfigError::new(
                        format!("{at}.actions"),
                        "expected an array",
                        "e.g. actions: ['inserted', 'updated']",
                    ))
                }
            };
            Ok(route)
        }
        _ => Err(ConfigError::new(
            at,
            "expected a destination name, true, a function, or an object",
            "e.g. users: 'people' or users: { resource: 'people', transform: (data) => data }",
        )),
    }
}

fn callback(at: &str, value: Option<&Value>) -> Result<Option<u32>, ConfigError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => fn_ref(v).map(Some).ok_or_else(|| {
            ConfigError::new(
                at,
                "expected a function",
                "pass a function, e.g. (data) => ({ ...data })",
            )
        }),
    }
}

/// Routes of one replicator indexed by source resource name.
pub fn index_routes(routes: &[Route]) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        map.entry(r.source.clone()).or_default().push(i);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<EngineConfig, ConfigError> {
        EngineConfig::from_json(&v.to_string())
    }

    fn s3db(resources: Value) -> Value {
        json!({ "replicators": [{ "driver": "s3db", "resources": resources, "config": { "connectionString": "memory://b" } }] })
    }

    #[test]
    fn minimal_config_parses_with_sane_defaults() {
        let c = parse(s3db(json!(["users"]))).unwrap();
        assert!(c.enabled);
        assert_eq!(
            (c.batch_size, c.max_retries, c.timeout_ms),
            (100, 3, 30_000)
        );
        assert!(c.queue_capacity >= 1_000 && c.concurrency >= 1);
        assert_eq!(c.replicators[0].id, "s3db");
        assert_eq!(c.replicators[0].routes[0].dest, "users");
    }

    #[test]
    fn outbox_is_memory_unless_a_directory_is_given() {
        assert_eq!(parse(s3db(json!(["u"]))).unwrap().outbox.dir, None);
        let mut o = s3db(json!(["u"]));
        o["outbox"] = json!({ "dir": "/tmp/ob", "fsync": "off", "segmentBytes": 65536 });
        let c = parse(o.clone()).unwrap().outbox;
        assert_eq!(c.dir.as_deref(), Some(std::path::Path::new("/tmp/ob")));
        assert_eq!((c.fsync_interval_ms, c.segment_bytes), (None, 65536));
        o["outbox"] = json!({ "dir": "/tmp/ob", "fsyncIntervalMs": 5 });
        assert_eq!(parse(o.clone()).unwrap().outbox.fsync_interval_ms, Some(5));
        o["outbox"] = json!(false);
        assert_eq!(parse(o).unwrap().outbox.dir, None);
    }

    #[test]
    fn mode_goes_with_the_jetstream_outbox() {
        let mut o = s3db(json!(["u"]));
        assert_eq!(parse(o.clone()).unwrap().mode, Mode::Local);
        o["mode"] = json!("publish");
        assert_eq!(
            parse(o.clone()).unwrap_err().path,
            "mode",
            "publish needs JetStream"
        );
        o["outbox"] = json!({ "jetstream": { "url": "nats://127.0.0.1:4222", "partitions": 4 } });
        let c = parse(o.clone()).unwrap();
        assert_eq!(c.mode, Mode::Publish);
        assert_eq!(c.outbox.jetstream.unwrap().partitions, 4);
        o["mode"] = json!("deliverr");
        assert!(parse(o.clone()).unwrap_err().hint.contains("'deliver'"));
        o.as_object_mut().unwrap().remove("mode");
        assert_eq!(
            parse(o.clone()).unwrap().mode,
            Mode::Both,
            "JetStream without a mode: both"
        );
        o["outbox"] = json!({ "jetstream": { "partitons": 4 } });
        let e = parse(o).unwrap_err();
        assert!(e.path.starts_with("outbox"), "{e:?}");
        assert!(
            format!("{e:?}").contains("partitions"),
            "did you mean: {e:?}"
        );
    }

    #[test]
    fn bad_outbox_options_name_the_option() {
        for (outbox, path) in [
            (json!(true), "outbox"),
            (json!({ "dir": "  " }), "outbox.dir"),
            (json!({ "dir": "/x", "fsync": "always" }), "outbox.fsync"),
            (
                json!({ "dir": "/x", "fsyncIntervalMs": 0 }),
                "outbox.fsyncIntervalMs",
            ),
            (
                json!({ "dir": "/x", "segmentBytes": 10 }),
                "outbox.segmentBytes",
            ),
        ] {
            let mut o = s3db(json!(["u"]));
            o["outbox"] = outbox;
            assert_eq!(parse(o).unwrap_err().path, path);
        }
    }

    #[test]
    fn circuit_breaker_defaults_overrides_and_off() {
        let b = parse(s3db(json!(["u"]))).unwrap().breaker.unwrap();
        assert_eq!(b, BreakerConfig::default());
        let mut o = s3db(json!(["u"]));
        o["circuitBreaker"] = json!({ "failureThreshold": 2, "resetTimeout": 50, "maxResetTimeout": 10, "holdTimeout": 0 });
        let b = parse(o.clone()).unwrap().breaker.unwrap();
        assert_eq!(
            (b.failure_threshold, b.reset_timeout_ms, b.hold_timeout_ms),
            (2, 50, 0)
        );
        assert_eq!(
            b.max_reset_timeout_ms, 50,
            "the cap is never below the first delay"
        );
        o["circuitBreaker"] = json!(false);
        assert!(parse(o.clone()).unwrap().breaker.is_none());
        o["circuitBreaker"] = json!({ "failureThreshold": 0 });
        assert_eq!(
            parse(o).unwrap_err().path,
            "circuitBreaker.failureThreshold"
        );
    }

    #[test]
    fn metrics_listener_is_off_by_default_and_checked() {
        assert_eq!(parse(s3db(json!(["u"]))).unwrap().metrics, None);
        let mut o = s3db(json!(["u"]));
        o["metrics"] = json!({ "port": 0 });
        assert_eq!(
            parse(o.clone()).unwrap().metrics,
            Some(MetricsListener {
                port: 0,
                host: "127.0.0.1".into()
            })
        );
        o["metrics"] = json!({ "port": 9464, "host": "0.0.0.0" });
        assert_eq!(parse(o.clone()).unwrap().metrics.unwrap().host, "0.0.0.0");
        o["metrics"] = json!(false);
        assert_eq!(parse(o.clone()).unwrap().metrics, None);
        for (metrics, path, says) in [
            (json!(true), "metrics", "port"),
            (json!({}), "metrics.port", "no port"),
            (json!({ "port": 70000 }), "metrics.port", "out of range"),
            (json!({ "port": "9464" }), "metrics.port", "string \"9464\""),
            (json!({ "port": -1 }), "metrics.port", "number -1"),
            (json!({ "port": 1, "host": 7 }), "metrics.host", "number 7"),
            (
                json!({ "port": 1, "host": " " }),
                "metrics.host",
                "not a host",
            ),
            (json!({ "prot": 1 }), "metrics", "port"),
            (json!(9464), "metrics", "false or an object"),
        ] {
            o["metrics"] = metrics.clone();
            let e = parse(o.clone()).unwrap_err();
            assert_eq!(e.path, path, "{metrics}: {e}");
            assert!(
                format!("{} {}", e.reason, e.hint).contains(says),
                "{metrics}: {e}"
            );
        }
    }

    #[test]
    fn unknown_option_is_rejected_with_its_path() {
        let e = parse(json!({ "replicators": [], "batchSiz": 3 })).unwrap_err();
        assert!(e.reason.contains("batchSiz"), "{e}");
    }

    #[test]
    fn every_mapping_syntax_parses() {
        let c = parse(s3db(json!({
            "a": "people",
            "b": true,
            "c": { "$fn": 1 },
            "d": { "resource": "dd", "transform": { "$fn": 2 }, "actions": ["inserted", "update"], "shouldReplicate": { "$fn": 3 } },
            "e": ["e1", { "resource": "e2", "transform": { "$fn": 4 } }, { "$fn": 5 }]
        })))
        .unwrap();
        let r = &c.replicators[0].routes;
        assert_eq!(r.len(), 7);
        assert_eq!((r[0].source.as_str(), r[0].dest.as_str()), ("a", "people"));
        assert_eq!(r[1].dest, "b");
        assert_eq!((r[2].dest.as_str(), r[2].transform), ("c", Some(1)));
        assert_eq!(r[3].should_replicate, Some(3));
        assert!(r[3].wants(Op::Inserted) && r[3].wants(Op::Updated) && !r[3].wants(Op::Deleted));
        assert_eq!(r[5].dest, "e2");
        assert_eq!((r[6].dest.as_str(), r[6].transform), ("e", Some(5)));
    }

    #[test]
    fn bad_configurations_name_the_option() {
        let cases = [
            (json!({ "replicators": [] }), "replicators"),
            (
                json!({ "replicators": [{ "resources": ["u"] }] }),
                "replicators[0].driver",
            ),
            (
                json!({ "replicators": [{ "driver": "nope", "resources": ["u"] }] }),
                "replicators[0].driver",
            ),
            (
                json!({ "replicators": [{ "driver": "csv", "resources": ["u"] }] }),
                "replicators[0].driver",
            ),
            (s3db(json!([])), "replicators[0].resources"),
            (s3db(json!({})), "replicators[0].resources"),
            (s3db(json!("users")), "replicators[0].resources"),
            (
                s3db(json!({ "u": { "actions": ["upserted"] } })),
                "replicators[0].resources.u.actions[0]",
            ),
            (
                s3db(json!({ "u": { "resorce": "x" } })),
                "replicators[0].resources.u.resorce",
            ),
            (
                s3db(json!({ "u": { "transform": "x" } })),
                "replicators[0].resources.u.transform",
            ),
            (
                json!({ "replicators": [{ "driver": "s3db", "resources": ["u"] }] }),
                "replicators[0].config",
            ),
            (json!({ "batchSize": 0, "replicators": [] }), "batchSize"),
        ];
        for (cfg, path) in cases {
            let e = parse(cfg.clone()).expect_err(&cfg.to_string());
            assert!(e.path.starts_with(path), "{cfg}: got path {} ({e})", e.path);
            assert!(!e.hint.is_empty());
        }
    }

    #[test]
    fn duplicate_ids_are_rejected_and_defaults_are_unique() {
        let two = json!({ "replicators": [
            { "driver": "s3db", "resources": ["u"], "config": { "connectionString": "memory://a" } },
            { "driver": "s3db", "resources": ["u"], "config": { "connectionString": "memory://b" } }
        ]});
        let c = parse(two).unwrap();
        assert_eq!(c.replicators[0].id, "s3db-1");
        assert_eq!(c.replicators[1].id, "s3db-2");
        let dup = json!({ "replicators": [
            { "id": "x", "driver": "s3db", "resources": ["u"], "config": { "connectionString": "memory://a" } },
            { "id": "x", "driver": "s3db", "resources": ["u"], "config": { "connectionString": "memory://b" } }
        ]});
        assert_eq!(parse(dup).unwrap_err().path, "replicators[1].id");
    }
}
