//! The worker's side of the outbox role: which changes read from the stream the engine still
//! holds, and per partition the position up to which every change is settled (delivered,
//! skipped or dead-lettered by every destination). That position is the partition's
//! acknowledgement: it is committed to the offsets bucket, and a worker taking the partition
//! over starts right after it, so nothing unsettled is skipped and replays stay in order.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// One change read from the stream and handed to the engine.
#[derive(Debug, Clone)]
pub struct Held {
    /// `{publisher id}:{seq}`: the same for every delivery of this change.
    pub identity: String,
    pub partition: u32,
    pub stream_seq: u64,
}

#[derive(Default)]
pub struct StreamFeed {
    state: Mutex<FeedState>,
}

#[derive(Default)]
struct FeedState {
    /// Engine seq → the stream message it came from.
    held: HashMap<u64, Held>,
    partitions: HashMap<u32, Progress>,
}

#[derive(Default)]
struct Progress {
    /// Every message of the partition up to here was read and handed to the engine.
    last_fed: u64,
    /// Stream seqs handed over and not settled yet.
    unsettled: BTreeSet<u64>,
}

impl StreamFeed {
    /// A partition is now read from `start` (its committed offset + 1).
    pub fn open_partition(&self, partition: u32, start: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.partitions.insert(
                partition,
                Progress {
                    last_fed: start.saturating_sub(1),
                    ..Default::default()
                },
            );
        }
    }

    pub fn close_partition(&self, partition: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.partitions.remove(&partition);
        }
    }

    /// The engine took change `seq`, read from the stream.
    pub fn hold(&self, seq: u64, held: Held) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(p) = s.partitions.get_mut(&held.partition) {
                p.last_fed = p.last_fed.max(held.stream_seq);
                p.unsettled.insert(held.stream_seq);
            }
            s.held.insert(seq, held);
        }
    }

    /// Every destination is done with these changes.
    pub fn settled(&self, seqs: &[u64]) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        for seq in seqs {
            if let Some(h) = s.held.remove(seq) {
                if let Some(p) = s.partitions.get_mut(&h.partition) {
                    p.unsettled.remove(&h.stream_seq);
                }
            }
        }
    }

    /// The partitions being read or drained here, in order.
    pub fn partitions(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .state
            .lock()
            .map(|s| s.partitions.keys().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    pub fn identity(&self, seq: u64) -> Option<String> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.held.get(&seq).map(|h| h.identity.clone()))
    }

    /// The position up to which every change of the partition is settled.
    pub fn settled_floor(&self, partition: u32) -> Option<u64> {
        let s = self.state.lock().ok()?;
        let p = s.partitions.get(&partition)?;
        Some(match p.unsettled.first() {
            Some(oldest) => oldest - 1,
            None => p.last_fed,
        })
    }

    /// Changes of the partition the engine still holds.
    pub fn unsettled(&self, partition: u32) -> usize {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.partitions.get(&partition).map(|p| p.unsettled.len()))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(partition: u32, stream_seq: u64) -> Held {
        Held {
            identity: format!("p:{stream_seq}"),
            partition,
            stream_seq,
        }
    }

    #[test]
    fn the_floor_stops_below_the_oldest_unsettled_change() {
        let f = StreamFeed::default();
        f.open_partition(0, 5);
        assert_eq!(f.settled_floor(0), Some(4));
        f.hold(1, held(0, 7));
        f.hold(2, held(0, 9));
        assert_eq!(f.settled_floor(0), Some(6));
        f.settled(&[2]);
        assert_eq!(f.settled_floor(0), Some(6), "7 is still owed");
        f.settled(&[1]);
        assert_eq!(f.settled_floor(0), Some(9));
        assert_eq!(f.identity(1), None);
    }
}
