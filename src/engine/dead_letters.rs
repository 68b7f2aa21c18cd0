//! Dead letters: changes a destination rejected for good, or whose retries ran out while the
//! destination accepted other writes. Kept (on disk next to the outbox, or in memory) with the
//! error, attempts and time, until retried successfully, superseded or discarded.
//!
//! Ordering rule: a retry must never overwrite a newer change of the same record. Once a newer
//! change of a record reaches the destination, older dead letters of that record are dropped
//! as superseded; a retry is checked again in its lane, right before it is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Op;
use crate::outbox::{DeadLetterFile, OutboxError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    #[serde(default)]
    pub id: u64,
    pub replicator: String,
    pub resource_name: String,
    pub destination: String,
    pub operation: Op,
    pub record_id: String,
    /// The record as accepted (before any transform), so a retry runs the transform again.
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    pub error: String,
    pub code: String,
    pub attempts: u32,
    /// ISO 8601, UTC.
    pub failed_at: String,
    /// The change's position in the outbox: orders dead letters of one record.
    pub seq: u64,
}

/// (replicator, destination, record id).
type Key = (String, String, String);

#[derive(Default)]
struct Inner {
    next_id: u64,
    items: BTreeMap<u64, DeadLetter>,
    by_key: HashMap<Key, BTreeSet<(u64, u64)>>,
    removed: u64,
}

impl Inner {
    fn key(dl: &DeadLetter) -> Key {
        (
            dl.replicator.clone(),
            dl.destination.clone(),
            dl.record_id.clone(),
        )
    }

    fn insert(&mut self, dl: DeadLetter) {
        self.by_key
            .entry(Self::key(&dl))
            .or_default()
            .insert((dl.seq, dl.id));
        self.next_id = self.next_id.max(dl.id + 1);
        self.items.insert(dl.id, dl);
    }

    fn take(&mut self, id: u64) -> Option<DeadLetter> {
        let dl = self.items.remove(&id)?;
        let key = Self::key(&dl);
        if let Some(set) = self.by_key.get_mut(&key) {
            set.remove(&(dl.seq, dl.id));
            if set.is_empty() {
                self.by_key.remove(&key);
            }
        }
        self.removed += 1;
        Some(dl)
    }
}

pub(crate) struct DeadLetters {
    file: Option<DeadLetterFile>,
    inner: Mutex<Inner>,
    /// Fast path for the lanes: nothing to check while there are no dead letters.
    any: AtomicBool,
}

impl DeadLetters {
    pub fn open(dir: Option<&Path>) -> Result<Self, OutboxError> {
        // In memory, ids start from the clock so that an id from an earlier run (kept in the
        // replication log, say) never names a different letter of this one.
        let first = if dir.is_some() {
            1
        } else {
            crate::engine::now_ms().saturating_mul(1_000) % (1 << 52) + 1
        };
        let mut inner = Inner {
            next_id: first,
            ..Inner::default()
        };
        let file = match dir {
            Some(dir) => {
                let (file, live) = DeadLetterFile::open::<DeadLetter>(dir)?;
                for (id, mut dl) in live {
                    dl.id = id;
                    inner.insert(dl);
                }
                Some(file)
            }
            None => None,
        };
        let any = AtomicBool::new(!inner.items.is_empty());
        Ok(Self {
            file,
            inner: Mutex::new(inner),
            any,
        })
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.items.len()).unwrap_or(0)
    }

    /// Stores a dead letter (or, with `id`, updates the one being retried); returns its id.
    pub fn put(&self, mut dl: DeadLetter, id: Option<u64>) -> u64 {
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        if let Some(id) = id {
            // A retry that failed again: same letter, attempts add up.
            if let Some(old) = inner.take(id) {
                inner.removed -= 1;
                dl.attempts += old.attempts;
            }
            dl.id = id;
        } else {
            // The same change failing again (replayed after a restart): one letter, not two.
            let key = Inner::key(&dl);
            let existing = inner.by_key.get(&key).and_then(|set| {
                set.iter()
                    .find(|(seq, _)| *seq == dl.seq)
                    .map(|&(_, id)| id)
            });
            match existing.and_then(|id| inner.take(id)) {
                Some(old) => {
                    inner.removed -= 1;
                    dl.attempts += old.attempts;
                    dl.id = old.id;
                }
                None => dl.id = inner.next_id,
            }
        }
        if let Some(file) = &self.file {
            if let Err(error) = file.add(dl.id, &dl) {
                tracing::error!(message = "Could not persist a dead letter; it is kept in memory.", %error);
            }
        }
        let id = dl.id;
        inner.insert(dl);
        self.any.store(true, Relaxed);
        id
    }

    pub fn get(&self, id: u64) -> Option<DeadLetter> {
        self.inner.lock().ok()?.items.get(&id).cloned()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.inner
            .lock()
            .map(|i| i.items.contains_key(&id))
            .unwrap_or(false)
    }

    /// Removes dead letters (retried successfully, superseded or discarded); returns how many existed.
    pub fn remove(&self, ids: &[u64]) -> usize {
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        let mut n = 0;
        for &id in ids {
            if inner.take(id).is_some() {
                n += 1;
                if let Some(file) = &self.file {
                    if let Err(error) = file.remove(id) {
                        tracing::error!(message = "Could not persist a dead letter removal.", %error);
                    }
                }
            }
        }
        self.any.store(!inner.items.is_empty(), Relaxed);
        self.maybe_rewrite(&mut inner);
        n
    }

    fn maybe_rewrite(&self, inner: &mut Inner) {
        let Some(file) = &self.file else {
            return;
        };
        if inner.removed < 1_000 || inner.removed < inner.items.len() as u64 {
            return;
        }
        let live: Vec<(u64, &DeadLetter)> = inner.items.iter().map(|(id, dl)| (*id, dl)).collect();
        match file.rewrite(&live) {
            Ok(()) => inner.removed = 0,
            Err(error) => {
                tracing::warn!(message = "Could not compact the dead-letter file.", %error)
            }
        }
    }

    /// A change with outbox position `seq` reached the destination: older dead letters of the
    /// same record are superseded. Returns the ids dropped.
    pub fn delivered(
        &self,
        replicator: &str,
        destination: &str,
        record_id: &str,
        seq: u64,
    ) -> Vec<u64> {
        if !self.any.load(Relaxed) {
            return Vec::new();
        }
        let stale: Vec<u64> = {
            let Ok(inner) = self.inner.lock() else {
                return Vec::new();
            };
            let key = (
                replicator.to_string(),
                destination.to_string(),
                record_id.to_string(),
            );
            match inner.by_key.get(&key) {
                Some(set) => set
                    .iter()
                    .take_while(|(s, _)| *s < seq)
                    .map(|&(_, id)| id)
                    .collect(),
                None => return Vec::new(),
            }
        };
        if !stale.is_empty() {
            self.remove(&stale);
        }
        stale
    }

    /// Oldest first, optionally of one replicator: (total matching, page).
    pub fn list(
        &self,
        replicator: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> (usize, Vec<DeadLetter>) {
        let Ok(inner) = self.inner.lock() else {
            return (0, Vec::new());
        };
        let matching = inner
            .items
            .values()
            .filter(|dl| replicator.is_none_or(|r| dl.replicator == r));
        let total = matching.clone().count();
        (total, matching.skip(offset).take(limit).cloned().collect())
    }

    /// Ids to retry: these (or all), optionally of one replicator, oldest change first.
    pub fn select(&self, ids: Option<&[u64]>, replicator: Option<&str>) -> Vec<DeadLetter> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut out: Vec<DeadLetter> = inner
            .items
            .values()
            .filter(|dl| ids.is_none_or(|ids| ids.contains(&dl.id)))
            .filter(|dl| replicator.is_none_or(|r| dl.replicator == r))
            .cloned()
            .collect();
        out.sort_by_key(|dl| dl.seq);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn letter(record: &str, seq: u64) -> DeadLetter {
        DeadLetter {
            id: 0,
            replicator: "r".into(),
            resource_name: "users".into(),
            destination: "users".into(),
            operation: Op::Updated,
            record_id: record.into(),
            data: json!({ "id": record }),
            before: None,
            error: "rejected".into(),
            code: "ERR_SINK_REJECTED".into(),
            attempts: 1,
            failed_at: "2026-01-01T00:00:00.000Z".into(),
            seq,
        }
    }

    #[test]
    fn a_newer_delivery_supersedes_only_older_letters_of_that_record() {
        let d = DeadLetters::open(None).unwrap();
        let a5 = d.put(letter("a", 5), None);
        let a9 = d.put(letter("a", 9), None);
        let b6 = d.put(letter("b", 6), None);
        assert_eq!(d.delivered("r", "users", "a", 7), vec![a5]);
        assert!(d.contains(a9) && d.contains(b6));
        assert!(d.delivered("other", "users", "b", 100).is_empty());
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn updating_a_retried_letter_keeps_its_id_and_persists() {
        let dir = std::env::temp_dir().join(format!(
            "dl-engine-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        {
            let d = DeadLetters::open(Some(&dir)).unwrap();
            let id = d.put(letter("a", 5), None);
            let mut again = letter("a", 5);
            again.attempts = 4;
            assert_eq!(d.put(again, Some(id)), id);
            d.put(letter("b", 6), None);
            assert_eq!(d.remove(&[99, id]), 1);
        }
        let d = DeadLetters::open(Some(&dir)).unwrap();
        let (total, items) = d.list(None, 10, 0);
        assert_eq!(total, 1);
        assert_eq!(items[0].record_id, "b");
        assert!(
            d.put(letter("c", 7), None) > items[0].id,
            "ids are never reused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn select_and_list_filter_and_order() {
        let d = DeadLetters::open(None).unwrap();
        d.put(letter("z", 9), None);
        let mut other = letter("y", 2);
        other.replicator = "q".into();
        d.put(other, None);
        d.put(letter("x", 3), None);
        let seqs: Vec<u64> = d.select(None, Some("r")).iter().map(|l| l.seq).collect();
        assert_eq!(seqs, vec![3, 9]);
        let (total, page) = d.list(None, 1, 1);
        assert_eq!((total, page.len()), (3, 1));
    }
}
