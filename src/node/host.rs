//! `Host` implemented over three JavaScript functions the plugin hands to the constructor.
//! Every call crosses as one JSON string per batch: V8 parses JSON faster than napi can
//! build the same objects property by property.

use std::sync::Arc;

use async_trait::async_trait;
use napi::bindgen_prelude::Promise;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use serde::{Deserialize, Serialize};

use super::outcomes::OutcomeChannel;

use crate::engine::{
    CallbackCall, CallbackResult, CircuitEvent, HeldChange, Host, ItemResults, Outcome,
};
use crate::error::SinkError;
use crate::event::Change;
use crate::logs::LogRecord;

/// `(json: string) => Promise<string | null>`; weak, so it never keeps the process alive,
/// and called with `call_async_catch`, so a JavaScript throw is an `Err`, never a crash.
pub type JsAsyncFn =
    ThreadsafeFunction<String, Promise<Option<String>>, String, Status, false, true>;
/// `(json: string) => void`.
pub type JsEventFn = ThreadsafeFunction<String, (), String, Status, false, true>;

pub struct JsHost {
    pub callbacks: JsAsyncFn,
    pub deliver: JsAsyncFn,
    /// Outcomes, circuit and held messages, coalesced (see [`OutcomeChannel`]).
    pub outcomes: Arc<OutcomeChannel>,
}

async fn call(f: &JsAsyncFn, arg: String, what: &str) -> Result<Option<String>, String> {
    let promise = f
        .call_async_catch(arg)
        .await
        .map_err(|e| format!("{what} could not be called: {}", e.reason))?;
    promise
        .await
        .map_err(|e| format!("{what} failed: {}", e.reason))
}

#[derive(Serialize)]
struct DeliverRequest<'a> {
    replicator: &'a str,
    changes: &'a [Change],
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemError {
    error: String,
    #[serde(default)]
    retryable: bool,
}

#[async_trait]
impl Host for JsHost {
    async fn run_callbacks(
        &self,
        calls: &[CallbackCall<'_>],
    ) -> Result<Vec<CallbackResult>, String> {
        let arg = serde_json::to_string(calls).map_err(|e| e.to_string())?;
        let out = call(&self.callbacks, arg, "the transform/shouldReplicate bridge").await?;
        let text = out.ok_or("the transform/shouldReplicate bridge returned nothing")?;
        serde_json::from_str(&text).map_err(|e| format!("unreadable callback results: {e}"))
    }

    async fn deliver(
        &self,
        replicator: &str,
        changes: &[Change],
    ) -> Result<ItemResults, SinkError> {
        let arg = serde_json::to_string(&DeliverRequest {
            replicator,
            changes,
        })
        .map_err(|e| SinkError::permanent(e.to_string()))?;
        let out = call(&self.deliver, arg, "the s3db destination")
            .await
            .map_err(SinkError::retryable)?;
        let Some(text) = out else {
            return Ok(vec![None; changes.len()]);
        };
        let items: Vec<Option<ItemError>> = serde_json::from_str(&text)
            .map_err(|e| SinkError::retryable(format!("unreadable delivery results: {e}")))?;
        Ok(items
            .into_iter()
            .map(|i| {
                i.map(|e| {
                    if e.retryable {
                        SinkError::retryable(e.error)
                    } else {
                        SinkError::permanent(e.error)
                    }
                })
            })
            .collect())
    }

    fn emit(&self, outcomes: Vec<Outcome>, pending: u64) {
        self.outcomes.emit(outcomes, pending);
    }

    fn circuit(&self, event: CircuitEvent) {
        if let Ok(json) = serde_json::to_string(&serde_json::json!({ "circuit": event })) {
            self.outcomes.send_other(json);
        }
    }

    fn held(&self, changes: Vec<HeldChange>) {
        if let Ok(json) = serde_json::to_string(&serde_json::json!({ "held": changes })) {
            self.outcomes.send_other(json);
        }
    }

    fn log(&self, records: Vec<LogRecord>) {
        // Straight to the function, not through the outcome buffer: a log line can be emitted
        // while that buffer's lock is held (it logs when the host is closing).
        if let Ok(json) = serde_json::to_string(&serde_json::json!({ "logs": records })) {
            let _ = self
                .outcomes
                .events()
                .call(json, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }

    async fn barrier(&self) {
        // Calls on one threadsafe function run in order: once this one ran, so did every
        // outcome emitted before it.
        self.outcomes.send_buffered();
        let _ = self
            .outcomes
            .events()
            .call_async_catch("{\"barrier\":true}".into())
            .await;
    }
}
