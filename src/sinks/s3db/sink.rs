use std::sync::Arc;

use async_trait::async_trait;

use super::S3dbConfig;
use crate::engine::Host;
use crate::error::SinkError;
use crate::event::Change;
use crate::sinks::{BatchOutcome, Sink, SinkContext};

/// Hands each batch to the host, which applies it to the destination Database.
pub struct S3dbSink {
    replicator: String,
    host: Arc<dyn Host>,
}

impl S3dbSink {
    pub fn new(_config: S3dbConfig, ctx: &SinkContext) -> Self {
        Self {
            replicator: ctx.replicator_id.clone(),
            host: ctx.host.clone(),
        }
    }
}

#[async_trait]
impl Sink for S3dbSink {
    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        let results = self.host.deliver(&self.replicator, batch).await?;
        if results.len() != batch.len() {
            return Err(SinkError::retryable(format!(
                "the host reported {} results for {} changes",
                results.len(),
                batch.len()
            )));
        }
        let failed: Vec<(usize, SinkError)> = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|e| (i, e)))
            .collect();
        Ok(if failed.is_empty() {
            BatchOutcome::Delivered
        } else {
            BatchOutcome::Partial(failed)
        })
    }
}
