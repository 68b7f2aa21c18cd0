//! Sinks for tests: record what they receive, fail on demand, or go slowly.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::{BatchOutcome, Sink};
use crate::error::SinkError;
use crate::event::Change;

/// Records every batch it is given.
#[derive(Default)]
pub struct MemorySink {
    pub batches: Mutex<Vec<Vec<Change>>>,
    /// Fail this many whole-batch writes (retryable) before succeeding.
    pub fail_first: AtomicU32,
    /// Records whose id is listed fail permanently (a poison record).
    pub poison: Mutex<HashSet<String>>,
    /// Report poison records as per-item failures instead of failing the whole batch.
    pub per_item: bool,
    pub delay: Option<Duration>,
    /// Say it prefers bulk writes (as the SQL sinks do).
    pub bulk: bool,
}

impl MemorySink {
    pub fn changes(&self) -> Vec<Change> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn prefers_bulk(&self) -> bool {
        self.bulk
    }

    async fn write_batch(&self, batch: &[Change]) -> Result<BatchOutcome, SinkError> {
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        if self.fail_first.load(SeqCst) > 0 {
            self.fail_first.fetch_sub(1, SeqCst);
            return Err(SinkError::retryable("destination unavailable"));
        }
        let poison = self.poison.lock().unwrap().clone();
        let bad: Vec<usize> = batch
            .iter()
            .enumerate()
            .filter(|(_, c)| poison.contains(&c.id))
            .map(|(i, _)| i)
            .collect();
        if !bad.is_empty() && !self.per_item {
            return Err(SinkError::permanent("record rejected"));
        }
        let good: Vec<Change> = batch
            .iter()
            .filter(|c| !poison.contains(&c.id))
            .cloned()
            .collect();
        self.batches.lock().unwrap().push(good);
        if bad.is_empty() {
            Ok(BatchOutcome::Delivered)
        } else {
            Ok(BatchOutcome::Partial(
                bad.into_iter()
                    .map(|i| (i, SinkError::permanent("record rejected")))
                    .collect(),
            ))
        }
    }
}
