//! What the engine needs from its host (the Node.js plugin, or a test): user callbacks,
//! delivery for destinations that live in JavaScript, and a channel for outcomes.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SinkError;
use crate::event::{Change, Op};
use crate::logs::LogRecord;

/// One record to pass through a route's `shouldReplicate` and then its `transform`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub should_replicate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transform: Option<u32>,
    pub action: Op,
    pub data: &'a Value,
}

/// What the callbacks decided for one record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallbackResult {
    /// The record to deliver (transformed, or as it was).
    #[serde(default)]
    pub data: Option<Value>,
    /// `shouldReplicate` said no, or `transform` returned null/undefined.
    #[serde(default)]
    pub skip: bool,
    /// The callback threw or returned something unusable; the message says which.
    #[serde(default)]
    pub error: Option<String>,
}

/// The fate of one routed change, reported to the host once per batch.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub replicator: String,
    pub resource_name: String,
    pub destination: String,
    pub operation: Op,
    pub record_id: String,
    pub status: OutcomeStatus,
    /// Milliseconds from acceptance to the destination's acknowledgement (or failure).
    pub duration: f64,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// The record as accepted; sent with failures only, so listeners can log or re-queue it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Caller-supplied tag (`replicateBatch`), so the host can match results to its request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<u64>,
    /// On a failure: the dead letter it was kept as. On a re-send: the dead letter re-sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_id: Option<u64>,
    /// Why a change was skipped by the engine itself: `superseded` (a newer change of the
    /// record was accepted, so this older one must not be written after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

const SUPERSEDED: &str = "superseded";

impl Outcome {
    /// Skipped by the engine because a newer change of the record was accepted: writing this
    /// older one after it would go back in time.
    pub(crate) fn superseded(mut self) -> Self {
        self.reason = Some(SUPERSEDED);
        self
    }

    pub(crate) fn is_superseded(&self) -> bool {
        self.reason == Some(SUPERSEDED)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeStatus {
    Replicated,
    Failed,
    Skipped,
}

/// A replicator's circuit breaker opened (its destination looks down: changes wait) or closed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitEvent {
    pub replicator: String,
    /// `open` or `closed`.
    pub state: &'static str,
    /// Failed writes in a row that opened it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// How long the destination was down, when it closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_for_ms: Option<u64>,
    /// The last error, when it opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Per-item result of a host delivery: `None` delivered, `Some(error)` failed.
pub type ItemResults = Vec<Option<SinkError>>;

#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// Runs `shouldReplicate` / `transform` for a batch of records, one result per call.
    /// An `Err` fails every record of the call (the host itself broke, not one callback).
    async fn run_callbacks(
        &self,
        calls: &[CallbackCall<'_>],
    ) -> Result<Vec<CallbackResult>, String>;

    /// Writes changes to a destination that only JavaScript can reach (an s3db Database).
    /// Changes of one record must be applied in order; once one fails *retryably*, later
    /// changes of the same record must not be applied (they are reported failed too).
    async fn deliver(&self, replicator: &str, changes: &[Change])
        -> Result<ItemResults, SinkError>;

    /// Reports outcomes; must not block. `pending` is the engine's undelivered count.
    fn emit(&self, outcomes: Vec<Outcome>, pending: u64);

    /// Resolves once every outcome emitted before the call has been handled by the host.
    async fn barrier(&self);

    /// A circuit breaker opened or closed; must not block.
    fn circuit(&self, _event: CircuitEvent) {}

    /// Changes that used their retry budget while their destination is down: they are held
    /// for redelivery (not failed, not dead-lettered), reported once each; must not block.
    fn held(&self, _changes: Vec<HeldChange>) {}

    /// Log lines of this engine at its `logLevel`, rate-limited (see `crate::logs`); must
    /// not block.
    fn log(&self, _records: Vec<LogRecord>) {}
}

/// A change held for redelivery while its destination is down (see [`Host::held`]).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldChange {
    pub replicator: String,
    pub resource_name: String,
    pub destination: String,
    pub operation: Op,
    pub record_id: String,
    pub attempts: u32,
    pub error: String,
    pub data: Value,
}
