//! The Node-API binding: one class, `ReplicationEngine`, used by `plugin.js`.

mod error;
mod host;
mod jetstream;
mod outcomes;

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::within_runtime_if_available;
use napi_derive::napi;
use serde_json::{json, Value};

use crate::config::EngineConfig;
use crate::engine::{Engine, PushOptions};
use crate::error::ErrorCode;
use crate::event::Op;
use error::{coded, Code};
use host::{JsAsyncFn, JsEventFn, JsHost};
use outcomes::OutcomeChannel;

/// A configuration problem, for the plugin's `ReplicatorError`.
#[napi(object)]
pub struct ConfigProblem {
    /// The option at fault, e.g. `replicators[0].config.url`.
    pub path: String,
    pub reason: String,
    pub hint: String,
}

/// `"did you mean 'batchSize'? "` when `given` looks like a misspelling of one of `known`,
/// else `""` (the plugin's check of its own option names uses it too).
#[napi(catch_unwind)]
pub fn did_you_mean(given: String, known: Vec<String>) -> String {
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    crate::error::did_you_mean(&given, &known)
}

/// Validates plugin options (JSON with functions replaced by `{ "$fn": id }`); `null` when valid.
#[napi(catch_unwind)]
pub fn check_config(options_json: String) -> Option<ConfigProblem> {
    EngineConfig::from_json(&options_json)
        .err()
        .map(|e| ConfigProblem {
            path: e.path,
            reason: e.reason,
            hint: e.hint,
        })
}

#[napi(object)]
pub struct StopResult {
    pub drained: bool,
    pub abandoned: f64,
}

#[napi]
pub struct ReplicationEngine {
    engine: Arc<Engine>,
    config: EngineConfig,
    outcomes: Arc<OutcomeChannel>,
}

#[napi]
impl ReplicationEngine {
    /// Starts the engine. `callbacks(json)` runs transform/shouldReplicate, `deliver(json)`
    /// writes to s3db destinations, `events(json)` receives outcomes.
    #[napi(constructor, catch_unwind)]
    pub fn new(
        options_json: String,
        #[napi(ts_arg_type = "(json: string) => Promise<string | null>")] callbacks: JsAsyncFn,
        #[napi(ts_arg_type = "(json: string) => Promise<string | null>")] deliver: JsAsyncFn,
        #[napi(ts_arg_type = "(json: string) => void")] events: JsEventFn,
    ) -> napi::Result<Self, Code> {
        let config = EngineConfig::from_json(&options_json).map_err(|e| {
            coded(
                ErrorCode::Config,
                format!("{}: {} ({})", e.path, e.reason, e.hint),
            )
        })?;
        // Engine logs reach the plugin's logger (the layer is installed once per process).
        crate::logs::install();
        // At most one outcome message per intake linger (capped: a long linger must not delay events).
        let outcomes = OutcomeChannel::new(events, config.linger_ms.min(20));
        let host = Arc::new(JsHost {
            callbacks,
            deliver,
            outcomes: outcomes.clone(),
        });
        let engine = within_runtime_if_available(|| {
            Engine::start(config.clone(), host).map(|engine| {
                let engine = Arc::new(engine);
                // Mode deliver / both: read the owned JetStream partitions into the engine.
                engine.start_stream_worker();
                engine
            })
        })?;
        Ok(Self {
            engine,
            config,
            outcomes,
        })
    }

    /// Accepts one change (`op`: inserted | updated | deleted), the record as JSON. Returns
    /// true when the engine is over `queueCapacity` and writers should `waitForCapacity()`.
    #[napi(catch_unwind)]
    pub fn push(&self, resource: String, op: String, json: String) -> napi::Result<bool, Code> {
        let op = parse_op(&op)?;
        Ok(self.engine.push(resource, op, json)?)
    }

    /// `push` for one replicator only, with a ticket echoed in the outcomes.
    #[napi(catch_unwind)]
    pub fn push_to(
        &self,
        resource: String,
        op: String,
        json: String,
        replicator: Option<String>,
        ticket: Option<f64>,
    ) -> napi::Result<bool, Code> {
        let op = parse_op(&op)?;
        Ok(self.engine.push_tagged(
            resource,
            op,
            json,
            replicator.as_deref(),
            ticket.map(|t| t as u64),
        )?)
    }

    /// A full-sync snapshot of one record for one replicator, read from the source after
    /// change `readAfter` (`lastSeq()` taken before the read). Dropped, as `superseded`, if a
    /// live change of the record was accepted after that. Use between `beginSync`/`endSync`.
    #[napi(catch_unwind)]
    pub fn push_snapshot(
        &self,
        resource: String,
        json: String,
        replicator: String,
        ticket: Option<f64>,
        read_after: f64,
    ) -> napi::Result<bool, Code> {
        Ok(self.engine.push_with(
            resource,
            Op::Inserted,
            json,
            PushOptions {
                only: Some(&replicator),
                ticket: ticket.map(|t| t as u64),
                snapshot_after: Some(read_after.max(0.0) as u64),
            },
        )?)
    }

    /// Whether delivered (`replicated`) and skipped changes are reported one by one (someone
    /// listens for them) or only counted. Failures and ticketed changes are always reported.
    #[napi]
    pub fn set_outcome_detail(&self, replicated: bool, skipped: bool) {
        self.outcomes.set_detail(replicated, skipped);
    }

    /// The seq of the last accepted change (0 before the first).
    #[napi]
    pub fn last_seq(&self) -> f64 {
        self.engine.last_seq() as f64
    }

    #[napi]
    pub fn begin_sync(&self) {
        self.engine.begin_sync()
    }

    #[napi]
    pub fn end_sync(&self) {
        self.engine.end_sync()
    }

    /// Dead letters, oldest first: JSON `{ total, items }`.
    #[napi(catch_unwind)]
    pub fn dead_letters(&self, replicator: Option<String>, limit: u32, offset: u32) -> String {
        let (total, items) =
            self.engine
                .dead_letters(replicator.as_deref(), limit as usize, offset as usize);
        json!({ "total": total, "items": items }).to_string()
    }

    /// Re-sends dead letters (these ids, or all; optionally of one replicator) to the
    /// replicator that failed them. Returns how many were queued.
    #[napi(catch_unwind)]
    pub fn retry_dead_letters(
        &self,
        ids: Option<Vec<f64>>,
        replicator: Option<String>,
        ticket: Option<f64>,
    ) -> napi::Result<u32, Code> {
        let ids: Option<Vec<u64>> = ids.map(|v| v.into_iter().map(|i| i as u64).collect());
        let n = self.engine.retry_dead_letters(
            ids.as_deref(),
            replicator.as_deref(),
            ticket.map(|t| t as u64),
        )?;
        Ok(n as u32)
    }

    /// Drops dead letters for good; returns how many existed.
    #[napi(catch_unwind)]
    pub fn discard_dead_letters(&self, ids: Vec<f64>) -> u32 {
        let ids: Vec<u64> = ids.into_iter().map(|i| i as u64).collect();
        self.engine.discard_dead_letters(&ids) as u32
    }

    /// Where accepted changes are kept, and how much is in there.
    #[napi(
        ts_return_type = "{ mode: 'disk' | 'memory' | 'jetstream', dir?: string, pending: number, bytes: number, segments: number, replayed: number, appendErrors: number, deadLetters: number, partitions?: number[] }"
    )]
    pub fn outbox(&self) -> Value {
        let mut v = serde_json::to_value(self.engine.outbox()).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("deadLetters".into(), json!(self.engine.dead_letter_count()));
        }
        v
    }

    /// `[{ replicator, queued }]` when every undelivered change waits for a destination that
    /// is down; `null` while anything else is in progress.
    #[napi(
        catch_unwind,
        ts_return_type = "Array<{ replicator: string, queued: number }> | null"
    )]
    pub fn waiting_on_outage(&self) -> Value {
        match self.engine.waiting_on_outage() {
            None => Value::Null,
            Some(list) => Value::Array(
                list.into_iter()
                    .map(|(replicator, queued)| json!({ "replicator": replicator, "queued": queued }))
                    .collect(),
            ),
        }
    }

    /// Persists the outbox watermark synchronously (for the host's `process.on('exit')`).
    #[napi(catch_unwind)]
    pub fn checkpoint(&self) -> f64 {
        self.engine.checkpoint() as f64
    }

    #[napi]
    pub fn saturated(&self) -> bool {
        self.engine.saturated()
    }

    #[napi]
    pub async fn wait_for_capacity(&self) {
        self.engine.wait_for_capacity().await
    }

    /// Resolves once every change accepted so far is delivered or failed.
    #[napi]
    pub async fn flush(&self) {
        self.engine.flush().await
    }

    /// Stops accepting changes and drains for at most `deadlineMs` (default: the timeout option).
    #[napi]
    pub async fn stop(&self, deadline_ms: Option<u32>) -> StopResult {
        let deadline =
            Duration::from_millis(deadline_ms.map(u64::from).unwrap_or(self.config.timeout_ms));
        let report = self.engine.stop(deadline).await;
        StopResult {
            drained: report.drained,
            abandoned: report.abandoned as f64,
        }
    }

    #[napi]
    pub fn set_enabled(&self, replicator: String, enabled: bool) -> napi::Result<(), Code> {
        Ok(self.engine.set_enabled(&replicator, enabled)?)
    }

    /// Per-replicator counters.
    #[napi(ts_return_type = "import('./plugin').NativeReplicatorStats[]")]
    pub fn stats(&self) -> Value {
        serde_json::to_value(self.engine.stats()).unwrap_or(Value::Null)
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    #[napi(catch_unwind)]
    pub fn metrics_text(&self) -> String {
        self.engine.metrics_text()
    }

    /// The same metrics as an object: `{ name: { type, help, samples } }`.
    #[napi(catch_unwind, ts_return_type = "import('./plugin').MetricsJSON")]
    pub fn metrics_json(&self) -> Value {
        self.engine.metrics_json()
    }

    /// Undelivered changes in total.
    #[napi]
    pub fn pending(&self) -> f64 {
        self.engine.pending() as f64
    }

    /// Replicators with their routes and redacted configuration.
    #[napi(ts_return_type = "import('./plugin').ReplicatorInfo[]")]
    pub fn replicators(&self) -> Value {
        let stats = self.engine.stats();
        Value::Array(
            self.config
                .replicators
                .iter()
                .zip(stats)
                .map(|(r, s)| {
                    json!({
                        "id": r.id,
                        "driver": r.driver,
                        "enabled": s.enabled,
                        "resources": r.routes.iter().map(|route| json!({
                            "source": route.source,
                            "destination": route.dest,
                            "actions": route.actions.as_ref().map(|a| { let mut v: Vec<&str> = a.iter().map(|o| o.as_str()).collect(); v.sort(); v }),
                            "transform": route.transform.is_some(),
                            "shouldReplicate": route.should_replicate.is_some(),
                        })).collect::<Vec<_>>(),
                        "config": r.sink.redacted(),
                    })
                })
                .collect(),
        )
    }

    /// Schema sync of the destination tables of one source resource (`attributesJson`: the
    /// resource's s3db.js attributes). Resolves with the spec's events, or with `error` (code
    /// `ERR_SCHEMA` when a mismatch must stop initialisation); never rejects.
    #[napi(
        ts_return_type = "Promise<{ events: Array<{ replicator: string, event: 'table_created' | 'table_altered' | 'table_recreated' | 'schema_mismatch', tableName: string, attributes?: string[], addedColumns?: string[], droppedColumns?: string[], message?: string }>, error?: { code: string, message: string, replicator: string } }>"
    )]
    pub async fn sync_schema(&self, resource: String, attributes_json: String) -> Value {
        let attributes: Value = match serde_json::from_str(&attributes_json) {
            Ok(v) => v,
            Err(e) => {
                return json!({ "events": [], "error": { "code": ErrorCode::Config.as_str(), "message": format!("attributes are not JSON: {e}"), "replicator": "" } })
            }
        };
        match self.engine.sync_schema(&resource, &attributes).await {
            Ok(events) => {
                let events: Vec<Value> = events
                    .into_iter()
                    .map(|(replicator, event)| {
                        let mut v = serde_json::to_value(event).unwrap_or(Value::Null);
                        if let Value::Object(m) = &mut v {
                            m.insert("replicator".into(), Value::String(replicator));
                        }
                        v
                    })
                    .collect();
                json!({ "events": events })
            }
            Err((replicator, e)) => {
                let code = e.code();
                json!({ "events": [], "error": { "code": code.as_str(), "message": format!("replicator '{replicator}': {}", e.message), "replicator": replicator } })
            }
        }
    }

    /// Checks every destination; the replicators that failed, with their errors.
    #[napi(ts_return_type = "Promise<Array<{ replicator: string, error: string }>>")]
    pub async fn healthcheck(&self) -> Value {
        let bad = self.engine.healthcheck().await;
        Value::Array(
            bad.into_iter()
                .map(|(r, e)| json!({ "replicator": r, "error": e }))
                .collect(),
        )
    }
}

fn parse_op(op: &str) -> napi::Result<Op, Code> {
    Op::parse(op).ok_or_else(|| {
        coded(
            ErrorCode::Config,
            format!("unknown operation '{op}'; use inserted, updated or deleted"),
        )
    })
}
