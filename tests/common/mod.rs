//! Helpers for the engine's integration tests: a host with callbacks written in Rust, a few
//! scripted sinks, and small utilities (lane prediction, waiting with a deadline).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use s3db_replicator::config::{EngineConfig, Route};
use s3db_replicator::engine::{
    CallbackCall, CallbackResult, Engine, HeldChange, Host, ItemResults, Outcome, OutcomeStatus,
};
use s3db_replicator::error::SinkError;
use s3db_replicator::event::{Change, Op};
use s3db_replicator::logs::LogRecord;
use s3db_replicator::sinks::{BatchOutcome, Sink, SinkConfig, SinkContext};

// ---------------------------------------------------------------------------------------------
// Callback ids understood by `TestHost::run_callbacks`.

/// transform: uppercases `name`.
pub const FN_UPPER: u32 = 1;
/// transform: throws.
pub const FN_THROW: u32 = 2;
/// transform: returns null/undefined (skip).
pub const FN_SKIP: u32 = 3;
/// shouldReplicate: false for deletes.
pub const FN_NO_DELETES: u32 = 4;
/// transform: returns the record without `id`, with `transformed: true`.
pub const FN_DROP_ID: u32 = 5;
/// transform: never returns.
pub const FN_HANG: u32 = 6;
/// transform: throws when `name == "bad"`, passes the record through otherwise.
pub const FN_THROW_IF_BAD: u32 = 7;
/// transform: returns a string (not an object).
pub const FN_NOT_OBJECT: u32 = 8;
/// shouldReplicate: always false.
pub const FN_NEVER: u32 = 9;

/// A host that implements callbacks in Rust and records every outcome it is given.
#[derive(Default)]
pub struct TestHost {
    pub outcomes: Mutex<Vec<Outcome>>,
    pub callback_batches: AtomicU64,
    /// Makes `emit` take this long (std sleep) when a batch holds an outcome for this id:
    /// widens the window between a lane settling a batch and its outcomes reaching the host.
    pub slow_emit: Mutex<Option<(String, Duration)>>,
    pub barriers: AtomicU64,
    /// Changes reported held for redelivery (destination down, retry budget used).
    pub held: Mutex<Vec<HeldChange>>,
    /// Log lines the engine sent (with the log layer installed: `logs::install()`).
    pub logs: Mutex<Vec<LogRecord>>,
}

impl TestHost {
    pub fn logs(&self) -> Vec<LogRecord> {
        self.logs.lock().unwrap().clone()
    }

    pub fn held(&self) -> Vec<HeldChange> {
        self.held.lock().unwrap().clone()
    }

    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    pub fn with_status(&self, status: OutcomeStatus) -> Vec<Outcome> {
        self.outcomes()
            .into_iter()
            .filter(|o| o.status == status)
            .collect()
    }

    pub fn count(&self, status: OutcomeStatus) -> usize {
        self.with_status(status).len()
    }

    pub fn for_id(&self, id: &str) -> Vec<Outcome> {
        self.outcomes()
            .into_iter()
            .filter(|o| o.record_id == id)
            .collect()
    }

    pub fn one_for(&self, id: &str) -> Outcome {
        let all = self.for_id(id);
        assert_eq!(
            all.len(),
            1,
            "expected exactly one outcome for {id}: {all:?}"
        );
        all.into_iter().next().unwrap()
    }
}

fn apply_transform(id: u32, action: Op, data: &Value) -> Option<CallbackResult> {
    let ok = |v: Value| CallbackResult {
        data: Some(v),
        skip: false,
        error: None,
    };
    Some(match id {
        FN_UPPER => {
            let mut v = data.clone();
            if let Some(Value::String(s)) = v.get("name").cloned() {
                v["name"] = Value::String(s.to_uppercase());
            }
            ok(v)
        }
        FN_THROW => CallbackResult {
            data: None,
            skip: false,
            error: Some("boom".into()),
        },
        FN_SKIP => CallbackResult {
            data: None,
            skip: true,
            error: None,
        },
        FN_DROP_ID => {
            let mut v = data.clone();
            v.as_object_mut().unwrap().remove("id");
            v["transformed"] = json!(true);
            ok(v)
        }
        FN_THROW_IF_BAD => {
            if data.get("name") == Some(&json!("bad")) {
                CallbackResult {
                    data: None,
                    skip: false,
                    error: Some("bad name".into()),
                }
            } else {
                ok(data.clone())
            }
        }
        FN_NOT_OBJECT => ok(json!("not an object")),
        FN_HANG => return None,
        other => panic!("unknown transform id {other} (action {action:?})"),
    })
}

fn should_replicate(id: u32, action: Op) -> bool {
    match id {
        FN_NO_DELETES => action != Op::Deleted,
        FN_NEVER => false,
        other => panic!("unknown shouldReplicate id {other}"),
    }
}

#[async_trait]
impl Host for TestHost {
    async fn run_callbacks(
        &self,
        calls: &[CallbackCall<'_>],
    ) -> Result<Vec<CallbackResult>, String> {
        self.callback_batches.fetch_add(1, SeqCst);
        let mut out = Vec::with_capacity(calls.len());
        let mut hang = false;
        for c in calls {
            if let Some(s) = c.should_replicate {
                if !should_replicate(s, c.action) {
                    out.push(CallbackResult {
                        data: None,
                        skip: true,
                        error: None,
                    });
                    continue;
                }
            }
            match c.transform {
                None => out.push(CallbackResult {
                    data: None,
                    skip: false,
                    error: None,
                }),
                Some(t) => match apply_transform(t, c.action, c.data) {
                    Some(r) => out.push(r),
                    None => hang = true,
                },
            }
        }
        if hang {
            std::future::pending::<()>().await;
        }
        Ok(out)
    }

    async fn deliver(
        &self,
        _replicator: &str,
        _changes: &[Change],
    ) -> Result<ItemResults, SinkError> {
        Err(SinkError::permanent(
            "tests pass their own sinks; the host delivers nothing",
        ))
    }

    fn emit(&self, outcomes: Vec<Outcome>, _pending: u64) {
        let slow = self.slow_emit.lock().unwrap().clone();
        if let Some((id, d)) = slow {
            if outcomes.iter().any(|o| o.record_id == id) {
                std::thread::sleep(d);
            }
        }
        self.outcomes.lock().unwrap().extend(outcomes);
    }

    async fn barrier(&self) {
        self.barriers.fetch_add(1, SeqCst);
    }

    fn held(&self, changes: Vec<HeldChange>) {
        self.held.lock().unwrap().extend(changes);
    }

    fn log(&self, records: Vec<LogRecord>) {
        self.logs.lock().unwrap().extend(records);
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration and engine start.

/// An engine configuration from plugin options; every replicator uses the s3db driver with a
/// memory destination unless the JSON says otherwise (tests replace the sinks anyway).
pub fn config(options: Value) -> EngineConfig {
    EngineConfig::from_json(&options.to_string()).expect("valid test configuration")
}

/// Options with one s3db replicator `r` over `resources`, merged with `extra` top-level options.
pub fn one_replicator(resources: Value, extra: Value) -> Value {
    let mut o = json!({
        "replicators": [{ "id": "r", "driver": "s3db", "resources": resources, "config": { "connectionString": "memory://x" } }]
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            o[k] = v;
        }
    }
    o
}

pub fn start(options: Value, host: Arc<TestHost>, sinks: Vec<Arc<dyn Sink>>) -> Engine {
    Engine::start_with_sinks(config(options), host, sinks).expect("engine starts")
}

pub fn rec(id: &str, extra: Value) -> String {
    let mut v = json!({ "id": id });
    if let Value::Object(extra) = extra {
        for (k, x) in extra {
            v[k] = x;
        }
    }
    v.to_string()
}

pub fn push(engine: &Engine, resource: &str, op: Op, json: String) -> bool {
    engine
        .push(resource.to_string(), op, json)
        .expect("push accepted")
}

/// The lane the engine picks for `(dest, id)` (mirrors `engine::router::lane_of`).
pub fn lane_of(dest: &str, id: &str, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dest.hash(&mut h);
    id.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

/// Polls `cond` every millisecond until it holds; panics after `limit` (tokio time).
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs `fut` under a (tokio time) limit, panicking with `what` when it does not finish.
pub async fn within<T>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("did not finish in {limit:?}: {what}"))
}

// ---------------------------------------------------------------------------------------------
// Sinks.

/// One successful write as a sink saw it.
#[derive(Debug, Clone)]
pub struct Written {
    pub at: Instant,
    pub changes: Vec<Change>,
}

/// Records every successful batch with the (tokio) time it was written; can be told to fail
/// a fraction of writes retryably (before applying anything), to delay writes, to cap the
/// batch size, or to hold writes that contain given ids until released.
pub struct RecordingSink {
    pub written: Mutex<Vec<Written>>,
    /// Every `write_batch` call, with its time and the ids it carried.
    pub calls: Mutex<Vec<(Instant, Vec<String>)>>,
    /// Probability (0..=1) that a write fails retryably.
    pub flaky: f64,
    /// Fail every write retryably.
    pub always_fail: bool,
    /// Never finish a write.
    pub hang: bool,
    /// Sleep this long in every write (tokio time).
    pub delay: Option<Duration>,
    /// Random delay up to this many microseconds in every write (shuffles timing).
    pub jitter_us: u64,
    pub max_batch: usize,
    /// Writes carrying one of these ids wait until `release()`.
    pub hold: HashSet<String>,
    pub gate: watch::Sender<bool>,
    pub in_flight: AtomicU32,
    pub max_in_flight: AtomicU32,
}

impl Default for RecordingSink {
    fn default() -> Self {
        Self {
            written: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            flaky: 0.0,
            always_fail: false,
            hang: false,
            delay: None,
            jitter_us: 0,
            max_batch: usize::MAX,
            hold: HashSet::new(),
            gate: watch::channel(false).0,
            in_flight: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
        }
    }
}

impl RecordingSink {
    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    pub fn changes(&self) -> Vec<Change> {
        self.written
            .lock()
            .unwrap()
            .iter()
            .flat_map(|w| w.changes.clone())
            .collect()
    }

    pub fn ids(&self) -> Vec<String> {
        self.changes().into_iter().map(|c| c.id).collect()
    }

    pub fn batch_sizes(&self) -> Vec<usize> {
        self.written
            .lock()
            .unwrap()
            .iter()
            .map(|w| w.changes.len())
            .collect()
    }

    pub fn call_times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|c| c.0).collect()
    }

    /// Changes per id, in the order they were applied.
    pub fn by_id(&self) -> HashMap<String, Vec<Change>> {
        let mut m: HashMap<String, Vec<Change>> = HashMap::new();
        for c in self.changes() {
            m.entry(c.id.clone()).or_default().push(c);
        }
        m
    }
}

struct InFlight<'a>(&'a AtomicU32);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[async_trait]
impl Sink for RecordingSink {
    fn max_batch_size(&self) -> usize {
        self.max_batch
    }

    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(now, SeqCst);
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), batch.iter().map(|c| c.id.clone()).collect()));
        if self.hang {
            std::future::pending::<()>().await;
        }
        if batch.iter().any(|c| self.hold.contains(&c.id)) {
            let mut rx = self.gate.subscribe();
            let _ = rx.wait_for(|open| *open).await;
        }
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        if self.jitter_us > 0 {
            tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=self.jitter_us))).await;
        }
        if self.always_fail || (self.flaky > 0.0 && fastrand::f64() < self.flaky) {
            return Err(SinkError::retryable("destination unavailable"));
        }
        self.written.lock().unwrap().push(Written {
            at: Instant::now(),
            changes: batch.to_vec(),
        });
        Ok(BatchOutcome::Delivered)
    }
}

/// Fails whole batches permanently when any change has `data.bad == true` (a poison record
/// identified by content, so one record can have a bad change and a good one).
#[derive(Default)]
pub struct ContentPoisonSink {
    pub written: Mutex<Vec<Change>>,
}

#[async_trait]
impl Sink for ContentPoisonSink {
    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        if batch
            .iter()
            .any(|c| c.data.get("bad") == Some(&json!(true)))
        {
            return Err(SinkError::permanent("record rejected"));
        }
        self.written.lock().unwrap().extend(batch.iter().cloned());
        Ok(BatchOutcome::Delivered)
    }
}

/// Reports the changes of listed ids as retryable per-item failures the first `times` times
/// it sees each of them; applies everything else.
#[derive(Default)]
pub struct PartialFlakySink {
    pub written: Mutex<Vec<Change>>,
    pub flaky_ids: HashSet<String>,
    pub times: u32,
    pub seen: Mutex<HashMap<String, u32>>,
    pub batches: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl Sink for PartialFlakySink {
    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        self.batches
            .lock()
            .unwrap()
            .push(batch.iter().map(|c| c.id.clone()).collect());
        let mut failed = Vec::new();
        let mut seen = self.seen.lock().unwrap();
        for (i, c) in batch.iter().enumerate() {
            if self.flaky_ids.contains(&c.id) {
                let n = seen.entry(c.id.clone()).or_default();
                if *n < self.times {
                    *n += 1;
                    failed.push((i, SinkError::retryable("try again")));
                    continue;
                }
            }
            self.written.lock().unwrap().push(c.clone());
        }
        Ok(if failed.is_empty() {
            BatchOutcome::Delivered
        } else {
            BatchOutcome::Partial(failed)
        })
    }
}

/// Answers the first write with "429, retry after `retry_after`", then applies everything.
/// Records the time of every call.
pub struct ThrottlingSink {
    pub retry_after: Duration,
    pub calls: Mutex<Vec<Instant>>,
}

#[async_trait]
impl Sink for ThrottlingSink {
    async fn write_batch(&self, _batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(Instant::now());
        if calls.len() == 1 {
            return Err(SinkError::throttled(
                "429 Too Many Requests",
                Some(self.retry_after),
            ));
        }
        Ok(BatchOutcome::Delivered)
    }
}

/// Panics when a batch holds the id `boom` (a bug in a sink); applies everything else.
#[derive(Default)]
pub struct PanickingSink {
    pub written: Mutex<Vec<Change>>,
}

#[async_trait]
impl Sink for PanickingSink {
    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        if batch.iter().any(|c| c.id == "boom") {
            panic!("sink bug");
        }
        self.written.lock().unwrap().extend(batch.iter().cloned());
        Ok(BatchOutcome::Delivered)
    }
}

// ---------------------------------------------------------------------------------------------
// Durability helpers (outbox directories, a destination whose faults switch on and off).

/// A unique directory under the system temp dir (not created: the outbox creates it), removed
/// with everything in it on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "s3db-replicator-test-{tag}-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        )))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The path as a string, for the `outbox.dir` option.
    pub fn dir(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The data field that makes `SwitchSink` reject a change for good while `rejecting` is on.
pub const REJECT: &str = "reject";

/// A destination whose faults a test switches while the engine runs:
/// - `down`: every write fails retryably and applies nothing (an outage);
/// - `rejecting`: changes whose data has `"reject": true` are rejected for good (the whole
///   batch fails, or with `per_item` only those items), the others are applied;
/// - `stuck`: a write carrying one of these ids never finishes.
///
/// Records every applied change in the order it was applied, and every write call.
#[derive(Default)]
pub struct SwitchSink {
    pub down: std::sync::atomic::AtomicBool,
    pub rejecting: std::sync::atomic::AtomicBool,
    pub per_item: bool,
    pub stuck: Mutex<HashSet<String>>,
    pub applied: Mutex<Vec<Change>>,
    pub calls: Mutex<Vec<(Instant, Vec<String>)>>,
}

impl SwitchSink {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, SeqCst);
    }

    pub fn set_rejecting(&self, rejecting: bool) {
        self.rejecting.store(rejecting, SeqCst);
    }

    pub fn stick(&self, id: &str) {
        self.stuck.lock().unwrap().insert(id.to_string());
    }

    pub fn applied(&self) -> Vec<Change> {
        self.applied.lock().unwrap().clone()
    }

    /// The changes of one record, in the order they were applied.
    pub fn applied_for(&self, id: &str) -> Vec<Change> {
        self.applied().into_iter().filter(|c| c.id == id).collect()
    }

    /// `data.v` of every applied change of one record, in order.
    pub fn versions(&self, id: &str) -> Vec<u64> {
        self.applied_for(id)
            .iter()
            .map(|c| c.data["v"].as_u64().expect("a numeric v"))
            .collect()
    }

    /// The record's data as the destination holds it now (its last applied change).
    pub fn current(&self, id: &str) -> Option<Value> {
        self.applied_for(id).last().map(|c| c.data.clone())
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    pub fn call_times(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|c| c.0).collect()
    }
}

#[async_trait]
impl Sink for SwitchSink {
    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        let ids: Vec<String> = batch.iter().map(|c| c.id.clone()).collect();
        let stuck = {
            let stuck = self.stuck.lock().unwrap();
            ids.iter().any(|id| stuck.contains(id))
        };
        self.calls.lock().unwrap().push((Instant::now(), ids));
        if stuck {
            std::future::pending::<()>().await;
        }
        if self.down.load(SeqCst) {
            return Err(SinkError::retryable("destination is down"));
        }
        let rejecting = self.rejecting.load(SeqCst);
        let bad: Vec<usize> = batch
            .iter()
            .enumerate()
            .filter(|(_, c)| rejecting && c.data.get(REJECT) == Some(&json!(true)))
            .map(|(i, _)| i)
            .collect();
        if !bad.is_empty() && !self.per_item {
            return Err(SinkError::permanent("record rejected: marked bad"));
        }
        let mut applied = self.applied.lock().unwrap();
        for (i, c) in batch.iter().enumerate() {
            if !bad.contains(&i) {
                applied.push(c.clone());
            }
        }
        Ok(if bad.is_empty() {
            BatchOutcome::Delivered
        } else {
            BatchOutcome::Partial(
                bad.into_iter()
                    .map(|i| (i, SinkError::permanent("record rejected: marked bad")))
                    .collect(),
            )
        })
    }
}

/// A copy of an outbox directory as a crash would leave it (the process killed, nothing
/// closed): every file but the lock, the watermark last so it never covers a segment the
/// copy missed.
pub fn crash_copy(from: &std::path::Path, to: &TempDir) {
    std::fs::create_dir_all(to.path()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "LOCK" && n != "WATERMARK" && n != "WATERMARK.tmp")
        .collect();
    names.sort();
    names.push("WATERMARK".into());
    for name in names {
        let src = from.join(&name);
        if src.exists() {
            std::fs::copy(&src, to.path().join(&name)).unwrap();
        }
    }
}

/// The watermark persisted in an outbox directory (0 when there is none yet).
pub fn persisted_watermark(dir: &std::path::Path) -> u64 {
    match std::fs::read(dir.join("WATERMARK")) {
        Ok(b) if b.len() >= 16 => u64::from_le_bytes(b[8..16].try_into().unwrap()),
        _ => 0,
    }
}

/// A configured destination driver on its own (no engine), as the engine builds it: its
/// routes checked first, replicator id `r`, a 5 s timeout.
pub fn build_sink(config: SinkConfig, routes: Vec<Route>) -> Arc<dyn Sink> {
    config.check_routes(&routes).unwrap();
    config
        .build(&SinkContext {
            replicator_id: "r".into(),
            host: TestHost::new(),
            timeout_ms: 5000,
            routes,
        })
        .unwrap()
}

/// A change as a driver test hands it to a sink: `resource` is also the destination, the
/// identity is `00000000000000{tag}:{seq}` (one tag per test file), one second apart per seq.
pub fn sink_change(tag: &str, seq: u64, op: Op, resource: &str, id: &str, data: Value) -> Change {
    Change {
        seq,
        change_id: format!("00000000000000{tag}:{seq}"),
        op,
        resource: resource.into(),
        dest: resource.into(),
        id: id.into(),
        data,
        before: None,
        ts_ms: 1_760_783_400_000 + seq * 1000,
    }
}

/// The failed changes of a batch outcome: (index, message, retryable).
pub fn failures_of(outcome: BatchOutcome) -> Vec<(usize, String, bool)> {
    match outcome {
        BatchOutcome::Delivered => Vec::new(),
        BatchOutcome::Partial(f) => f
            .into_iter()
            .map(|(i, e)| (i, e.message.clone(), e.is_retryable()))
            .collect(),
    }
}

/// A name no other test (or run) uses: `prefix`, the process id and a random number, joined
/// by `sep` (the test servers' naming rules differ: queues take `-`, datasets `_`).
pub fn unique_name(prefix: &str, sep: char) -> String {
    format!(
        "{prefix}{sep}{}{sep}{}",
        std::process::id(),
        fastrand::u64(..) % 1_000_000_000
    )
}
