//! The one error type of the outbox storage layer.

use std::path::{Path, PathBuf};

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Another process, or another `SegmentLog` in this process, holds `dir/LOCK`.
    #[error("outbox directory {dir} is in use by another process or plugin instance")]
    Locked { dir: PathBuf },
    /// A file system call failed.
    #[error("outbox I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One change is larger than a record may be (the framing stores a `u32` length and the
    /// outbox caps it at [`MAX_RECORD_BYTES`](super::MAX_RECORD_BYTES)).
    #[error(
        "change {seq} of resource {resource:?} is too large for the outbox: {bytes} bytes, the limit is {max} bytes"
    )]
    RecordTooLarge {
        seq: u64,
        resource: String,
        bytes: u64,
        max: u64,
    },
    /// `append` was given a seq that is not greater than every seq appended before
    /// (or than `Recovered::next_seq` - 1 after a reopen).
    #[error("outbox seq {seq} is out of order: the next seq must be at least {min}")]
    SeqOutOfOrder { seq: u64, min: u64 },
    /// A dead-letter record could not be serialised.
    #[error("cannot serialise a dead letter for {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl OutboxError {
    /// `map_err` helper: wraps an `io::Error` with the path it concerns.
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
