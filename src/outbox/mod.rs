//! Crash-safe local storage for accepted changes: a segmented append-only log with a
//! watermark checkpoint, and a dead-letter file. Pure storage, no engine logic.
//!
//! Modelled on Vector's `disk_v2` buffer: checksummed records, a ledger (here, the
//! watermark), and data files deleted only after they are acknowledged.
//!
//! # Directory layout
//!
//! ```text
//! <dir>/LOCK                        exclusive flock held by the open SegmentLog
//! <dir>/WATERMARK                   checkpoint: every seq below it is done
//! <dir>/00000000000000000042.seg    segment whose first record has seq 42
//! <dir>/dead-letters.jsonl          DeadLetterFile
//! <dir>/OUTBOX_ID                   this outbox's id (16 hex digits): changes are `{id}:{seq}`
//! ```
//!
//! Segment names are the zero-padded decimal seq of their first record, so they sort by
//! seq. Other files in the directory are ignored.
//!
//! # Segment files
//!
//! A segment starts with an 8-byte header, `b"S3RSEG\0"` followed by the format version
//! (`1`), then holds records back to back. Every integer is little-endian:
//!
//! ```text
//! record  = len: u32 | crc: u32 | payload (len bytes)
//! crc     = CRC-32 (IEEE, crc32fast) of the 4 len bytes followed by the payload
//! payload = seq: u64 | op: u8 | flags: u8 | resource_len: u32 | resource (UTF-8)
//!           [only_len: u32 | only (UTF-8)]   if flags & 1
//!           [snapshot_after: u64]            if flags & 2
//!           [redelivery_of: u64]             if flags & 4
//!           json (UTF-8, the rest of the payload)
//! op      = 1 inserted, 2 updated, 3 deleted
//! ```
//!
//! A payload is at most [`MAX_RECORD_BYTES`] (1 GiB). Unknown op codes or flag bits make a
//! record invalid, like a checksum mismatch.
//!
//! # Watermark file
//!
//! `WATERMARK` is 20 bytes: `b"S3RWMK\0"` + version `1`, the watermark as `u64`, and the
//! CRC-32 of those 16 bytes. It is replaced atomically (write `WATERMARK.tmp`, fsync, rename,
//! fsync the directory). A damaged watermark reads as 0: every stored change is replayed.
//!
//! # Guarantees
//!
//! - When [`SegmentLog::append`] returns `Ok`, the record was handed to the kernel in one
//!   `write(2)` and survives the process being killed. It survives power loss once a later
//!   [`SegmentLog::sync`] has returned `Ok`.
//! - Recovery never panics on bad data. An incomplete or invalid record at the end of the
//!   last segment is truncated away; damage inside an older segment loses the rest of that
//!   segment only (nothing after a bad record can be trusted, since its length is unknown),
//!   is counted in [`Recovered`] and logged with `tracing::warn!`.
//! - Appends after `open` always go to a new segment file, so new data never follows old
//!   damage.
//! - A segment is deleted only by [`SegmentLog::compact`] (or `open`), after the watermark
//!   covering all of it was persisted, and never while it is being appended to.
//! - Seqs are unique and increasing: `append` refuses a seq below the previous one + 1, or
//!   below [`Recovered::next_seq`]. A seq whose record was lost (torn by a crash, or never
//!   synced before a power loss) can be handed out again.
//! - One process at a time: `dir/LOCK` is locked with `File::try_lock` for the life of the
//!   `SegmentLog`.

mod dead_letter_file;
mod error;
pub mod identity;
mod record;
mod segment_log;

use std::fs::File;
use std::path::Path;

pub use dead_letter_file::DeadLetterFile;
pub use error::OutboxError;
pub use record::{Entry, EntryRef};
pub use segment_log::{CompactStats, LogOptions, Recovered, SegmentLog};

/// The largest payload of one record (1 GiB).
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// Makes renames, creations and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(OutboxError::io(dir))
}

#[cfg(test)]
mod test_dir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A unique directory under the system temp dir, removed on drop.
    pub(super) struct TestDir(PathBuf);

    impl TestDir {
        pub(super) fn new(tag: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path = std::env::temp_dir().join(format!(
                "s3db-outbox-{tag}-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(super) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
