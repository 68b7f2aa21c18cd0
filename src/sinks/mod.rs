//! Destinations. Every sink implements [`Sink`]; [`SinkConfig`] is the only place that
//! matches on a driver name. Sinks never retry or sleep: they classify their errors and the
//! engine (`engine::lane`) decides what to do.

mod s3db;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use s3db::S3dbConfig;
pub use webhook::WebhookConfig;

use crate::engine::{Host, RetryPolicy};
use crate::error::{ConfigError, SinkError};
use crate::event::Change;

/// The result of a batch write that did not fail as a whole.
#[derive(Debug)]
pub enum BatchOutcome {
    /// Every change was applied.
    Delivered,
    /// Some changes failed: `(index in the batch, error)`. The others were applied. After a
    /// *retryable* failure of a record's change, a sink must not apply that record's later
    /// changes in the batch (report them failed too), so the retry cannot overtake them. After
    /// a permanent failure the earlier change is given up, and later changes may be applied.
    Partial(Vec<(usize, SinkError)>),
}

#[async_trait]
pub trait Sink: Send + Sync {
    /// Largest batch this sink accepts in one `write_batch`.
    fn max_batch_size(&self) -> usize {
        usize::MAX
    }
    /// The sink's own retry settings (e.g. the webhook's `retries`), replacing the plugin's.
    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }
    /// Checks the destination is reachable. A failure warns; it does not stop the plugin.
    async fn healthcheck(&self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Applies a batch. Must be idempotent: a redelivered change does no harm.
    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError>;
    async fn close(&self) {}
}

/// What a sink may need from the engine when it is built.
pub struct SinkContext {
    pub replicator_id: String,
    pub host: Arc<dyn Host>,
    pub timeout_ms: u64,
}

/// A driver's validated configuration.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    S3db(S3dbConfig),
    Webhook(WebhookConfig),
}

impl SinkConfig {
    /// Drivers this version ships.
    pub const DRIVERS: &'static [&'static str] = &["s3db", "webhook"];

    pub fn parse(driver: &str, config: Value) -> Result<Self, ConfigError> {
        Ok(match driver {
            "s3db" => Self::S3db(parse_section::<S3dbConfig>(config)?.validated()?),
            "webhook" => Self::Webhook(parse_section::<WebhookConfig>(config)?.validated()?),
            other => {
                return Err(ConfigError::new(
                    "",
                    format!("unknown driver '{other}'"),
                    format!("use one of: {}", Self::DRIVERS.join(", ")),
                ))
            }
        })
    }

    pub fn build(&self, ctx: &SinkContext) -> Result<Arc<dyn Sink>, ConfigError> {
        Ok(match self {
            Self::S3db(c) => Arc::new(s3db::S3dbSink::new(c.clone(), ctx)),
            Self::Webhook(c) => Arc::new(webhook::WebhookSink::new(c.clone())?),
        })
    }

    /// The configuration as JSON with secrets replaced by `***` (for `listReplicators()`).
    pub fn redacted(&self) -> Value {
        match self {
            Self::S3db(c) => c.redacted(),
            Self::Webhook(c) => c.redacted(),
        }
    }
}

/// Deserialises one driver's `config` object; the error path is relative to `config`.
fn parse_section<T: DeserializeOwned>(config: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::new(
            if path == "." { String::new() } else { path },
            crate::error::redact(&e.inner().to_string()),
            "see the driver's options in the README's configuration reference",
        )
    })
}
