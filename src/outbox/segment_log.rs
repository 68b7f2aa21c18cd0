//! The append-only segment log: append, group-commit sync, watermark and compaction, recovery.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::OutboxError;
use super::record::{self, Entry, EntryRef, FRAME_HEADER_LEN, MIN_PAYLOAD_LEN};
use super::{sync_dir, MAX_RECORD_BYTES};

/// First bytes of every segment file: magic `S3RSEG`, a zero byte, format version 1.
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"S3RSEG\x00\x01";
const SEGMENT_HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;
const SEGMENT_SUFFIX: &str = ".seg";
/// Zero-padded decimal first seq + suffix: `00000000000000000042.seg` (u64::MAX has 20 digits).
const SEGMENT_NAME_LEN: usize = 20 + SEGMENT_SUFFIX.len();

/// Watermark checkpoint: magic `S3RWMK`, a zero byte, version 1, `u64` LE, CRC-32 of the 16 bytes before.
const WATERMARK_MAGIC: [u8; 8] = *b"S3RWMK\x00\x01";
const WATERMARK_LEN: usize = 20;
pub(super) const WATERMARK_FILE: &str = "WATERMARK";
const WATERMARK_TMP: &str = "WATERMARK.tmp";
pub(super) const LOCK_FILE: &str = "LOCK";

/// Read buffer for recovery scans.
const SCAN_BUFFER_BYTES: usize = 256 * 1024;

/// How the segment log lays out its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Rotate to a new segment file once the current one is at least this big.
    pub segment_bytes: u64,
}

impl LogOptions {
    pub const fn default_segment_bytes() -> u64 {
        16 * 1024 * 1024
    }
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_bytes: Self::default_segment_bytes(),
        }
    }
}

/// What [`SegmentLog::open`] found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every readable entry with `seq >= watermark`, ascending by seq.
    pub entries: Vec<Entry>,
    /// Strictly greater than every seq ever appended to this directory (as far as the files
    /// on disk and the watermark tell) and `>= watermark`; 1 for a new directory.
    /// `append` refuses smaller seqs.
    pub next_seq: u64,
    /// The persisted watermark: every entry with a smaller seq is done. 0 when none was persisted.
    pub watermark: u64,
    /// Bytes discarded: torn tails and everything after a corrupt record.
    pub dropped_bytes: u64,
    /// Records (or segment headers) that were complete but failed validation.
    pub corrupt_records: u64,
}

/// Outcome of one [`SegmentLog::compact`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactStats {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// An open segment file and its path (for error messages).
#[derive(Debug)]
struct SegmentFile {
    file: File,
    path: PathBuf,
}

/// One segment file on disk.
#[derive(Debug)]
struct SegmentMeta {
    path: PathBuf,
    /// Bytes on disk.
    bytes: u64,
    /// Exclusive upper bound of the seqs the segment may hold: deletable once `upper <= watermark`.
    upper: u64,
}

/// The segment being appended to; always the last one in `State::segments`.
#[derive(Debug)]
struct Active {
    seg: Arc<SegmentFile>,
    bytes: u64,
}

#[derive(Debug)]
struct State {
    segments: VecDeque<SegmentMeta>,
    active: Option<Active>,
    /// The active segment has writes that were not fdatasync'ed yet.
    active_dirty: bool,
    /// Sealed segments with writes that were not fdatasync'ed yet.
    unsynced: Vec<Arc<SegmentFile>>,
    /// A segment file was created since the last directory fsync.
    dir_dirty: bool,
    /// The smallest seq `append` accepts.
    min_seq: u64,
    /// Reused frame buffer (header + payload up to the JSON text).
    prefix: Vec<u8>,
}

/// Crash-safe append-only log of [`Entry`] records, split into segment files.
///
/// `append` is cheap and may run concurrently with `sync` and `compact` from other threads.
pub struct SegmentLog {
    dir: PathBuf,
    opts: LogOptions,
    state: Mutex<State>,
    /// The persisted watermark; also serialises `compact` calls.
    watermark: Mutex<u64>,
    size_bytes: AtomicU64,
    segment_count: AtomicUsize,
    /// Holds the exclusive lock on `dir/LOCK` until dropped.
    _lock: File,
}

impl std::fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments())
            .field("size_bytes", &self.size_bytes())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the state is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if name.len() != SEGMENT_NAME_LEN || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes `prefix` then `json` with as few `write(2)` calls as the kernel allows (one, on a
/// regular file), without copying the JSON into the frame buffer.
fn write_frame(mut file: &File, prefix: &[u8], json: &[u8]) -> io::Result<()> {
    let mut slices = [IoSlice::new(prefix), IoSlice::new(json)];
    let mut bufs = &mut slices[..];
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match file.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_watermark(dir: &Path) -> Result<u64, OutboxError> {
    let path = dir.join(WATERMARK_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(OutboxError::io(&path)(e)),
    };
    let valid = bytes.len() == WATERMARK_LEN
        && bytes[..8] == WATERMARK_MAGIC
        && crc32fast::hash(&bytes[..16]).to_le_bytes() == bytes[16..20];
    if !valid {
        tracing::warn!(
            message = "Ignored a damaged outbox watermark; every stored change will be replayed.",
            path = %path.display(),
            bytes = bytes.len(),
        );
        return Ok(0);
    }
    let mut v = [0; 8];
    v.copy_from_slice(&bytes[8..16]);
    Ok(u64::from_le_bytes(v))
}

/// Replaces the watermark file atomically: tmp file, fsync, rename, directory fsync.
fn write_watermark(dir: &Path, watermark: u64) -> Result<(), OutboxError> {
    let mut bytes = [0u8; WATERMARK_LEN];
    bytes[..8].copy_from_slice(&WATERMARK_MAGIC);
    bytes[8..16].copy_from_slice(&watermark.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..16]);
    bytes[16..].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(WATERMARK_TMP);
    let mut file = File::create(&tmp).map_err(OutboxError::io(&tmp))?;
    file.write_all(&bytes).map_err(OutboxError::io(&tmp))?;
    file.sync_all().map_err(OutboxError::io(&tmp))?;
    drop(file);
    let path = dir.join(WATERMARK_FILE);
    fs::rename(&tmp, &path).map_err(OutboxError::io(&path))?;
    sync_dir(dir)
}

/// Why a segment scan stopped before the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The file ends inside a record (or inside the header): an interrupted write.
    Torn,
    /// Complete bytes that fail validation.
    Corrupt(&'static str),
}

#[derive(Debug)]
struct Scan {
    file_len: u64,
    /// End of the last valid record (0 when the header itself is bad).
    valid_end: u64,
    max_seq: Option<u64>,
    records: u64,
    stop: Option<Stop>,
}

/// Reads one segment, pushing entries with `seq >= watermark` onto `out`.
fn scan_segment(path: &Path, watermark: u64, out: &mut Vec<Entry>) -> Result<Scan, OutboxError> {
    let io_err = OutboxError::io(path);
    let file = File::open(path).map_err(OutboxError::io(path))?;
    let file_len = file.metadata().map_err(OutboxError::io(path))?.len();
    let mut scan = Scan {
        file_len,
        valid_end: 0,
        max_seq: None,
        records: 0,
        stop: None,
    };
    let mut r = BufReader::with_capacity(SCAN_BUFFER_BYTES, file);
    if file_len < SEGMENT_HEADER_LEN {
        scan.stop = Some(Stop::Torn);
        return Ok(scan);
    }
    let mut magic = [0; SEGMENT_MAGIC.len()];
    match r.read_exact(&mut magic) {
        Ok(()) if magic == SEGMENT_MAGIC => {}
        Ok(()) => {
            scan.stop = Some(Stop::Corrupt("bad segment header"));
            return Ok(scan);
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            scan.stop = Some(Stop::Torn);
            return Ok(scan);
        }
        Err(e) => return Err(io_err(e)),
    }
    let mut pos = SEGMENT_HEADER_LEN;
    scan.valid_end = pos;
    let mut header = [0u8; FRAME_HEADER_LEN];
    while pos < file_len {
        let remaining = file_len - pos;
        if remaining < FRAME_HEADER_LEN as u64 {
            scan.stop = Some(Stop::Torn);
            break;
        }
        if let Err(e) = r.read_exact(&mut header) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                scan.stop = Some(Stop::Torn);
                break;
            }
            return Err(OutboxError::io(path)(e));
        }
        let mut len_field = [0; 4];
        len_field.copy_from_slice(&header[..4]);
        let mut crc = [0; 4];
        crc.copy_from_slice(&header[4..]);
        let len = u64::from(u32::from_le_bytes(len_field));
        if len < MIN_PAYLOAD_LEN as u64 || len > MAX_RECORD_BYTES {
            scan.stop = Some(Stop::Corrupt("invalid record length"));
            break;
        }
        if len > remaining - FRAME_HEADER_LEN as u64 {
            scan.stop = Some(Stop::Torn);
            break;
        }
        // Bounded by the file length checked above.
        let mut payload = vec![0; len as usize];
        if let Err(e) = r.read_exact(&mut payload) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                scan.stop = Some(Stop::Torn);
                break;
            }
            return Err(OutboxError::io(path)(e));
        }
        if record::checksum(len_field, &[&payload]).to_le_bytes() != crc {
            scan.stop = Some(Stop::Corrupt("checksum mismatch"));
            break;
        }
        let entry = match record::decode_payload(payload) {
            Ok(entry) => entry,
            Err(reason) => {
                scan.stop = Some(Stop::Corrupt(reason));
                break;
            }
        };
        pos += FRAME_HEADER_LEN as u64 + len;
        scan.valid_end = pos;
        scan.records += 1;
        scan.max_seq = Some(scan.max_seq.map_or(entry.seq, |m| m.max(entry.seq)));
        if entry.seq >= watermark {
            out.push(entry);
        }
    }
    Ok(scan)
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir`, takes the directory lock and recovers.
    ///
    /// A torn or corrupt tail of the last segment is truncated away (a last segment without
    /// any valid record is deleted); corruption inside an older segment skips the rest of
    /// that segment. Segments holding only entries below the watermark are deleted. Appends
    /// go to a new segment file, created by the first `append`.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<(SegmentLog, Recovered), OutboxError> {
        fs::create_dir_all(dir).map_err(OutboxError::io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(OutboxError::io(&lock_path))?;
        let locked = lock_file.try_lock();
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(OutboxError::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(OutboxError::io(&lock_path)(e)),
        }

        let watermark = read_watermark(dir)?;
        let tmp = dir.join(WATERMARK_TMP);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(OutboxError::io(&tmp)(e)),
        }

        let mut found = Vec::new();
        for item in fs::read_dir(dir).map_err(OutboxError::io(dir))? {
            let item = item.map_err(OutboxError::io(dir))?;
            let Some(first_seq) = item.file_name().to_str().and_then(parse_segment_name) else {
                continue;
            };
            if item.file_type().map_err(OutboxError::io(dir))?.is_file() {
                found.push((first_seq, item.path()));
            }
        }
        found.sort_unstable_by_key(|(first_seq, _)| *first_seq);

        let mut recovered = Recovered {
            watermark,
            next_seq: watermark.max(1),
            ..Recovered::default()
        };
        let mut segments = VecDeque::with_capacity(found.len());
        let mut dir_changed = false;
        for (i, (first_seq, path)) in found.iter().enumerate() {
            let next_first = found.get(i + 1).map(|(s, _)| *s);
            let is_last = next_first.is_none();
            let scan = scan_segment(path, watermark, &mut recovered.entries)?;
            let complete_upper = scan
                .max_seq
                .map_or(0, |m| m.saturating_add(1))
                .max(first_seq.saturating_add(1));
            let upper = match (scan.stop, next_first) {
                (Some(_), Some(next_first)) => next_first.max(complete_upper),
                _ => complete_upper,
            };
            recovered.next_seq = recovered.next_seq.max(upper);
            let mut bytes = scan.file_len;
            if let Some(stop) = scan.stop {
                let dropped = scan.file_len - scan.valid_end;
                recovered.dropped_bytes += dropped;
                let reason = match stop {
                    Stop::Torn => "torn write",
                    Stop::Corrupt(reason) => {
                        recovered.corrupt_records += 1;
                        reason
                    }
                };
                tracing::warn!(
                    message = "Discarded unreadable bytes in an outbox segment.",
                    path = %path.display(),
                    offset = scan.valid_end,
                    dropped_bytes = dropped,
                    reason,
                    last_segment = is_last,
                );
                if is_last && scan.records > 0 {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(OutboxError::io(path))?;
                    file.set_len(scan.valid_end)
                        .map_err(OutboxError::io(path))?;
                    file.sync_all().map_err(OutboxError::io(path))?;
                    bytes = scan.valid_end;
                }
            }
            if is_last && scan.records == 0 {
                // Never got a complete record (e.g. killed between creating it and the first
                // write): nothing to keep. Its name still counted towards `next_seq` above.
                fs::remove_file(path).map_err(OutboxError::io(path))?;
                dir_changed = true;
                continue;
            }
            segments.push_back(SegmentMeta {
                path: path.clone(),
                bytes,
                upper,
            });
        }
        if dir_changed {
            sync_dir(dir)?;
        }
        if !recovered.entries.is_sorted_by_key(|e| e.seq) {
            // Only possible if files were renamed by hand; keep the documented order anyway.
            recovered.entries.sort_by_key(|e| e.seq);
        }

        let log = SegmentLog {
            dir: dir.to_path_buf(),
            opts,
            size_bytes: AtomicU64::new(segments.iter().map(|s| s.bytes).sum()),
            segment_count: AtomicUsize::new(segments.len()),
            state: Mutex::new(State {
                segments,
                active: None,
                active_dirty: false,
                unsynced: Vec::new(),
                dir_dirty: false,
                min_seq: recovered.next_seq,
                prefix: Vec::new(),
            }),
            watermark: Mutex::new(watermark),
            _lock: lock_file,
        };
        log.compact(watermark)?;
        Ok((log, recovered))
    }

    /// Appends one record with a single `write(2)`. When this returns `Ok`, the record
    /// survives the process being killed (not a power loss: that needs [`sync`](Self::sync)).
    ///
    /// Seqs must increase: a seq below `Recovered::next_seq` or not above the previous
    /// append is refused with [`OutboxError::SeqOutOfOrder`]. After an error the seq may be
    /// retried.
    pub fn append(&self, e: &EntryRef<'_>) -> Result<(), OutboxError> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        if e.seq < st.min_seq {
            return Err(OutboxError::SeqOutOfOrder {
                seq: e.seq,
                min: st.min_seq,
            });
        }
        record::encode_prefix(e, &mut st.prefix, MAX_RECORD_BYTES).map_err(|bytes| {
            OutboxError::RecordTooLarge {
                seq: e.seq,
                resource: e.resource.to_owned(),
                bytes,
                max: MAX_RECORD_BYTES,
            }
        })?;
        if st
            .active
            .as_ref()
            .is_some_and(|a| a.bytes >= self.opts.segment_bytes)
        {
            Self::seal_active(st);
        }
        let active = match &mut st.active {
            Some(active) => active,
            slot @ None => {
                let seg = self.create_segment(e.seq)?;
                st.segments.push_back(SegmentMeta {
                    path: seg.path.clone(),
                    bytes: SEGMENT_HEADER_LEN,
                    upper: e.seq,
                });
                st.dir_dirty = true;
                slot.insert(Active {
                    seg: Arc::new(seg),
                    bytes: SEGMENT_HEADER_LEN,
                })
            }
        };
        let frame_len = (st.prefix.len() + e.json.len()) as u64;
        if let Err(err) = write_frame(&active.seg.file, &st.prefix, e.json.as_bytes()) {
            let path = active.seg.path.clone();
            // Cut a partial frame off so later records do not follow garbage. If even that
            // fails, seal the segment: the next append starts a new file.
            if let Err(trunc) = active.seg.file.set_len(active.bytes) {
                tracing::warn!(
                    message = "Could not cut a failed append off an outbox segment; sealing it.",
                    path = %path.display(),
                    error = %trunc,
                );
                Self::seal_active(st);
            }
            return Err(OutboxError::io(&path)(err));
        }
        active.bytes += frame_len;
        let bytes = active.bytes;
        st.active_dirty = true;
        st.min_seq = e.seq.saturating_add(1);
        if let Some(meta) = st.segments.back_mut() {
            meta.bytes = bytes;
            meta.upper = st.min_seq;
        }
        self.size_bytes.fetch_add(frame_len, Ordering::Relaxed);
        Ok(())
    }

    /// Stops appending to the active segment; it stays on disk until compacted.
    fn seal_active(st: &mut State) {
        if let Some(active) = st.active.take() {
            if std::mem::take(&mut st.active_dirty) {
                st.unsynced.push(active.seg);
            }
        }
    }

    /// Creates a new segment file holding just the header.
    fn create_segment(&self, first_seq: u64) -> Result<SegmentFile, OutboxError> {
        let path = self.dir.join(segment_name(first_seq));
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(OutboxError::io(&path))?;
        if let Err(e) = file.write_all(&SEGMENT_MAGIC) {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(OutboxError::io(&path)(e));
        }
        self.size_bytes
            .fetch_add(SEGMENT_HEADER_LEN, Ordering::Relaxed);
        self.segment_count.fetch_add(1, Ordering::Relaxed);
        Ok(SegmentFile { file, path })
    }

    /// Makes everything appended so far durable (`fdatasync` of the segments written since
    /// the last sync, plus a directory fsync if a segment was created). Does not block
    /// `append` while syncing. After an error, durability of the unsynced appends is unknown.
    pub fn sync(&self) -> Result<(), OutboxError> {
        let (files, dir_dirty) = {
            let mut st = lock(&self.state);
            let mut files = std::mem::take(&mut st.unsynced);
            if std::mem::take(&mut st.active_dirty) {
                if let Some(active) = &st.active {
                    files.push(active.seg.clone());
                }
            }
            (files, std::mem::take(&mut st.dir_dirty))
        };
        for (i, seg) in files.iter().enumerate() {
            if let Err(e) = seg.file.sync_data() {
                let mut st = lock(&self.state);
                st.unsynced.extend(files[i..].iter().cloned());
                st.dir_dirty |= dir_dirty;
                return Err(OutboxError::io(&seg.path)(e));
            }
        }
        if dir_dirty {
            if let Err(e) = sync_dir(&self.dir) {
                lock(&self.state).dir_dirty = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Records that every entry with `seq < watermark` is done: persists the watermark
    /// atomically (a smaller value than the persisted one is ignored) and deletes the sealed
    /// segments that hold only such entries. The segment being appended to is never deleted.
    pub fn compact(&self, watermark: u64) -> Result<CompactStats, OutboxError> {
        let mut persisted = lock(&self.watermark);
        if watermark > *persisted {
            write_watermark(&self.dir, watermark)?;
            *persisted = watermark;
        }
        let watermark = *persisted;
        let doomed: Vec<(PathBuf, u64)> = {
            let st = lock(&self.state);
            let sealed = st.segments.len() - usize::from(st.active.is_some());
            st.segments
                .iter()
                .take(sealed)
                .take_while(|s| s.upper <= watermark)
                .map(|s| (s.path.clone(), s.bytes))
                .collect()
        };
        let mut stats = CompactStats::default();
        let mut result = Ok(());
        for (path, bytes) in &doomed {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    result = Err(OutboxError::io(path)(e));
                    break;
                }
            }
            stats.segments_deleted += 1;
            stats.bytes_deleted += bytes;
        }
        if stats.segments_deleted > 0 {
            // Only `compact` removes segments and it is serialised by `self.watermark`, so
            // the deleted ones are still the front of the list.
            lock(&self.state).segments.drain(..stats.segments_deleted);
            self.size_bytes
                .fetch_sub(stats.bytes_deleted, Ordering::Relaxed);
            self.segment_count
                .fetch_sub(stats.segments_deleted, Ordering::Relaxed);
            tracing::debug!(
                message = "Deleted acknowledged outbox segments.",
                dir = %self.dir.display(),
                segments = stats.segments_deleted,
                bytes = stats.bytes_deleted,
                watermark,
            );
            result = result.and(sync_dir(&self.dir));
        }
        result.map(|()| stats)
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of segment files currently on disk.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// Number of segment files currently on disk.
    pub fn segments(&self) -> usize {
        self.segment_count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::super::test_dir::TestDir;
    use super::*;
    use crate::event::Op;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            op: [Op::Inserted, Op::Updated, Op::Deleted][(seq % 3) as usize],
            resource: format!("res{}", seq % 5),
            json: format!(
                r#"{{"id":"{seq}","pad":"{}"}}"#,
                "x".repeat((seq % 7) as usize)
            ),
            only: seq.is_multiple_of(2).then(|| format!("rep{seq}")),
            snapshot_after: seq.is_multiple_of(3).then_some(seq / 2),
            redelivery_of: seq.is_multiple_of(4).then_some(seq * 10),
        }
    }

    fn open(dir: &Path, segment_bytes: u64) -> (SegmentLog, Recovered) {
        SegmentLog::open(dir, LogOptions { segment_bytes }).unwrap()
    }

    fn append_range(log: &SegmentLog, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            log.append(&entry(seq).entry_ref()).unwrap();
        }
    }

    fn seqs(r: &Recovered) -> Vec<u64> {
        r.entries.iter().map(|e| e.seq).collect()
    }

    /// Segment files on disk, by first seq.
    fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter_map(|e| Some((parse_segment_name(e.file_name().to_str()?)?, e.path())))
            .collect();
        v.sort();
        v
    }

    fn disk_bytes(dir: &Path) -> u64 {
        segment_files(dir)
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .sum()
    }

    #[test]
    fn segment_names_sort_by_first_seq_and_parse_back() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("99999999999999999999.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000042.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004a.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000042.seg.tmp"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn new_directory_starts_empty_at_seq_one() {
        let tmp = TestDir::new("new");
        let dir = tmp.path().join("a/b/outbox");
        let (log, rec) = open(&dir, 1024);
        assert!(rec.entries.is_empty());
        assert_eq!((rec.next_seq, rec.watermark), (1, 0));
        assert_eq!((rec.dropped_bytes, rec.corrupt_records), (0, 0));
        assert_eq!((log.segments(), log.size_bytes()), (0, 0));
        assert_eq!(log.dir(), dir);
        log.sync().unwrap();
        assert!(dir.join(LOCK_FILE).exists());
    }

    #[test]
    fn every_field_round_trips_through_disk() {
        let tmp = TestDir::new("roundtrip");
        let big = format!(r#"{{"blob":"{}"}}"#, "é".repeat(5 * 1024 * 1024 / 2));
        assert!(big.len() > 5 * 1024 * 1024);
        let written = vec![
            Entry {
                seq: 1,
                op: Op::Inserted,
                resource: "usuários📦".into(),
                json: r#"{"name":"Zoë ☃ 日本","emoji":"👍🏽"}"#.into(),
                only: Some("réplica-1".into()),
                snapshot_after: Some(0),
                redelivery_of: Some(u64::MAX),
            },
            Entry {
                seq: 2,
                op: Op::Deleted,
                resource: String::new(),
                json: String::new(),
                only: None,
                snapshot_after: None,
                redelivery_of: None,
            },
            Entry {
                seq: 5,
                op: Op::Updated,
                resource: "blobs".into(),
                json: big,
                only: None,
                snapshot_after: Some(4),
                redelivery_of: None,
            },
            entry(6),
        ];
        {
            let (log, _) = open(tmp.path(), 1024);
            for e in &written {
                log.append(&e.entry_ref()).unwrap();
            }
            log.sync().unwrap();
            assert_eq!(log.size_bytes(), disk_bytes(tmp.path()));
        }
        let (_log, rec) = open(tmp.path(), 1024);
        assert_eq!(rec.entries, written);
        assert_eq!(rec.next_seq, 7);
        assert_eq!((rec.dropped_bytes, rec.corrupt_records), (0, 0));
    }

    #[test]
    fn reopen_returns_entries_from_the_watermark_and_continues_the_seq() {
        let tmp = TestDir::new("reopen");
        {
            let (log, _) = open(tmp.path(), 1 << 20);
            append_range(&log, 1..=10);
            log.compact(6).unwrap();
        }
        {
            let (log, rec) = open(tmp.path(), 1 << 20);
            assert_eq!(rec.watermark, 6);
            assert_eq!(seqs(&rec), (6..=10).collect::<Vec<_>>());
            assert_eq!(rec.entries[0], entry(6));
            assert_eq!(rec.next_seq, 11);
            assert!(matches!(
                log.append(&entry(10).entry_ref()),
                Err(OutboxError::SeqOutOfOrder { seq: 10, min: 11 })
            ));
            append_range(&log, 11..=12);
        }
        let (_log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(seqs(&rec), (6..=12).collect::<Vec<_>>());
        assert_eq!(rec.next_seq, 13);
    }

    #[test]
    fn seqs_must_increase() {
        let tmp = TestDir::new("order");
        let (log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(rec.next_seq, 1);
        assert!(matches!(
            log.append(&entry(0).entry_ref()),
            Err(OutboxError::SeqOutOfOrder { seq: 0, min: 1 })
        ));
        log.append(&entry(5).entry_ref()).unwrap();
        for bad in [4, 5] {
            assert!(matches!(
                log.append(&entry(bad).entry_ref()),
                Err(OutboxError::SeqOutOfOrder { min: 6, .. })
            ));
        }
        log.append(&entry(9).entry_ref()).unwrap();
        drop(log);
        let (_log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(seqs(&rec), [5, 9]);
        assert_eq!(rec.next_seq, 10);
    }

    #[test]
    fn next_seq_survives_compacting_everything_away() {
        let tmp = TestDir::new("allgone");
        {
            let (log, _) = open(tmp.path(), 100);
            append_range(&log, 1..=20);
            log.compact(21).unwrap();
            // The live segment stays while it is appended to.
            assert_eq!(log.segments(), 1);
        }
        let (log, rec) = open(tmp.path(), 100);
        assert!(rec.entries.is_empty());
        assert_eq!((rec.watermark, rec.next_seq), (21, 21));
        // Reopened: the former live segment is sealed and fully done, so it is gone.
        assert_eq!(log.segments(), 0);
        assert!(segment_files(tmp.path()).is_empty());
        assert_eq!(log.size_bytes(), 0);
    }

    #[test]
    fn torn_tail_is_truncated_and_later_appends_are_readable() {
        let tmp = TestDir::new("torn");
        {
            let (log, _) = open(tmp.path(), 1 << 20);
            append_range(&log, 1..=5);
        }
        let (_, path) = segment_files(tmp.path()).pop().unwrap();
        let full = fs::metadata(&path).unwrap().len();
        let last_frame = (FRAME_HEADER_LEN as u64) + entry(5).entry_ref().payload_len();
        let cut = 3;
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - cut)
            .unwrap();
        {
            let (log, rec) = open(tmp.path(), 1 << 20);
            assert_eq!(seqs(&rec), [1, 2, 3, 4]);
            assert_eq!(rec.dropped_bytes, last_frame - cut);
            assert_eq!(rec.corrupt_records, 0);
            assert_eq!(fs::metadata(&path).unwrap().len(), full - last_frame);
            // Nothing readable says seq 5 was ever appended, so it is handed out again.
            assert_eq!(rec.next_seq, 5);
            assert_eq!(log.size_bytes(), disk_bytes(tmp.path()));
            append_range(&log, 5..=6);
        }
        let (_log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(seqs(&rec), [1, 2, 3, 4, 5, 6]);
        assert_eq!((rec.dropped_bytes, rec.corrupt_records), (0, 0));
    }

    #[test]
    fn garbage_after_the_last_record_is_dropped() {
        let tmp = TestDir::new("garbage");
        {
            let (log, _) = open(tmp.path(), 1 << 20);
            append_range(&log, 1..=3);
        }
        let (_, path) = segment_files(tmp.path()).pop().unwrap();
        let clean = fs::metadata(&path).unwrap().len();
        let garbage = b"\x07\x00\x00\x00garbage!!";
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(garbage)
            .unwrap();
        {
            let (log, rec) = open(tmp.path(), 1 << 20);
            assert_eq!(seqs(&rec), [1, 2, 3]);
            assert_eq!(rec.dropped_bytes, garbage.len() as u64);
            // A length of 7 is below the minimum payload: complete but invalid bytes.
            assert_eq!(rec.corrupt_records, 1);
            assert_eq!(fs::metadata(&path).unwrap().len(), clean);
            append_range(&log, 4..=4);
        }
        let (_log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(seqs(&rec), [1, 2, 3, 4]);
        assert_eq!((rec.dropped_bytes, rec.corrupt_records), (0, 0));
    }

    #[test]
    fn torn_first_write_of_a_segment_is_removed() {
        let tmp = TestDir::new("tornheader");
        {
            let (log, _) = open(tmp.path(), 1 << 20);
            append_range(&log, 1..=2);
        }
        // Killed right after creating the next segment.
        fs::write(tmp.path().join(segment_name(3)), &SEGMENT_MAGIC[..3]).unwrap();
        let (log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(seqs(&rec), [1, 2]);
        assert_eq!(rec.dropped_bytes, 3);
        assert_eq!(rec.next_seq, 4);
        assert_eq!(log.segments(), 1);
        assert_eq!(segment_files(tmp.path()).len(), 1);
    }

    #[test]
    fn unrelated_files_are_ignored() {
        let tmp = TestDir::new("unrelated");
        fs::write(tmp.path().join("notes.txt"), "hello").unwrap();
        fs::write(tmp.path().join("00000000000000000001.seg.bak"), "x").unwrap();
        fs::create_dir(tmp.path().join(segment_name(7))).unwrap();
        let (log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!((rec.next_seq, log.segments()), (1, 0));
        append_range(&log, 1..=1);
        drop(log);
        let (_log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(seqs(&rec), [1]);
    }

    /// Writes 1..=30 with tiny segments; returns the segment files.
    fn small_segments(dir: &Path) -> Vec<(u64, PathBuf)> {
        let (log, _) = open(dir, 200);
        append_range(&log, 1..=30);
        drop(log);
        let files = segment_files(dir);
        assert!(files.len() >= 4, "{files:?}");
        files
    }

    #[test]
    fn a_flipped_byte_in_an_older_segment_skips_the_rest_of_that_segment() {
        let tmp = TestDir::new("flip-last-record");
        let files = small_segments(tmp.path());
        let (_, first_path) = &files[0];
        let next_first = files[1].0;
        // The last byte of the first segment belongs to its last record (seq next_first - 1).
        let mut bytes = fs::read(first_path).unwrap();
        let len = bytes.len();
        bytes[len - 1] ^= 0x20;
        fs::write(first_path, &bytes).unwrap();

        let (_log, rec) = open(tmp.path(), 200);
        let expected: Vec<u64> = (1..=30).filter(|&s| s != next_first - 1).collect();
        assert_eq!(seqs(&rec), expected);
        assert_eq!(rec.corrupt_records, 1);
        let frame = FRAME_HEADER_LEN as u64 + entry(next_first - 1).entry_ref().payload_len();
        assert_eq!(rec.dropped_bytes, frame);
        assert_eq!(rec.next_seq, 31);
        // Older segments are left as they are.
        assert_eq!(fs::read(first_path).unwrap(), bytes);
    }

    #[test]
    fn corruption_early_in_an_older_segment_loses_only_that_segment_tail() {
        let tmp = TestDir::new("flip-first-record");
        let files = small_segments(tmp.path());
        let (second_first, second_path) = &files[1];
        let third_first = files[2].0;
        let mut bytes = fs::read(second_path).unwrap();
        // Inside the payload of the segment's first record.
        bytes[SEGMENT_HEADER_LEN as usize + FRAME_HEADER_LEN + 2] ^= 0xff;
        fs::write(second_path, &bytes).unwrap();

        let (log, rec) = open(tmp.path(), 200);
        let expected: Vec<u64> = (1..=30)
            .filter(|s| !(*second_first..third_first).contains(s))
            .collect();
        assert_eq!(seqs(&rec), expected);
        assert_eq!(rec.corrupt_records, 1);
        assert_eq!(rec.dropped_bytes, bytes.len() as u64 - SEGMENT_HEADER_LEN);
        // Compaction still works out what the damaged segment may hold.
        let stats = log.compact(third_first).unwrap();
        assert_eq!(stats.segments_deleted, 2);
        assert!(!second_path.exists());
    }

    #[test]
    fn a_bad_segment_header_is_counted_and_skipped() {
        let tmp = TestDir::new("badheader");
        let files = small_segments(tmp.path());
        let (_, path) = &files[1];
        let mut bytes = fs::read(path).unwrap();
        bytes[0] = b'X';
        fs::write(path, &bytes).unwrap();
        let (_log, rec) = open(tmp.path(), 200);
        assert_eq!(rec.corrupt_records, 1);
        assert_eq!(rec.dropped_bytes, bytes.len() as u64);
        assert_eq!(rec.entries.len(), 30 - (files[2].0 - files[1].0) as usize);
    }

    #[test]
    fn corruption_in_the_last_segment_is_truncated_away() {
        let tmp = TestDir::new("flip-last-segment");
        {
            let (log, _) = open(tmp.path(), 1 << 20);
            append_range(&log, 1..=6);
        }
        let (_, path) = segment_files(tmp.path()).pop().unwrap();
        let frame = |s| FRAME_HEADER_LEN as u64 + entry(s).entry_ref().payload_len();
        let third_at = SEGMENT_HEADER_LEN + frame(1) + frame(2);
        let mut bytes = fs::read(&path).unwrap();
        bytes[third_at as usize + FRAME_HEADER_LEN + 1] ^= 1;
        fs::write(&path, &bytes).unwrap();
        {
            let (log, rec) = open(tmp.path(), 1 << 20);
            assert_eq!(seqs(&rec), [1, 2]);
            assert_eq!(rec.corrupt_records, 1);
            assert_eq!(rec.dropped_bytes, bytes.len() as u64 - third_at);
            assert_eq!(fs::metadata(&path).unwrap().len(), third_at);
            // 3..=6 are unreadable, so their seqs are handed out again.
            assert_eq!(rec.next_seq, 3);
            append_range(&log, 3..=3);
        }
        let (_log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(seqs(&rec), [1, 2, 3]);
        assert_eq!(rec.corrupt_records, 0);
    }

    #[test]
    fn rotation_and_compaction_delete_only_done_sealed_segments() {
        let tmp = TestDir::new("rotate");
        let (log, _) = open(tmp.path(), 300);
        append_range(&log, 1..=100);
        let files = segment_files(tmp.path());
        assert!(files.len() > 5, "{files:?}");
        assert_eq!(log.segments(), files.len());
        assert_eq!(log.size_bytes(), disk_bytes(tmp.path()));
        assert_eq!(files[0].0, 1);
        for (_, p) in &files[..files.len() - 1] {
            assert!(fs::metadata(p).unwrap().len() >= 300);
        }

        // Nothing is done yet.
        assert_eq!(log.compact(1).unwrap(), CompactStats::default());
        // The third segment starts at w: only the first two hold nothing but entries < w.
        let w = files[2].0;
        let doomed_bytes: u64 = files[..2]
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .sum();
        let stats = log.compact(w).unwrap();
        assert_eq!(
            stats,
            CompactStats {
                segments_deleted: 2,
                bytes_deleted: doomed_bytes
            }
        );
        assert_eq!(segment_files(tmp.path()), files[2..]);
        // One short of the end of the third segment: it stays.
        assert_eq!(log.compact(files[3].0 - 1).unwrap().segments_deleted, 0);

        // Everything is done, but the live segment is kept.
        let stats = log.compact(101).unwrap();
        assert_eq!(stats.segments_deleted, files.len() - 3);
        let left = segment_files(tmp.path());
        assert_eq!(left, files[files.len() - 1..]);
        assert_eq!(log.segments(), 1);
        assert_eq!(log.size_bytes(), disk_bytes(tmp.path()));

        // Appending continues in the live segment, then rotates.
        append_range(&log, 101..=110);
        log.sync().unwrap();
        assert!(log.segments() > 1);
        assert_eq!(log.size_bytes(), disk_bytes(tmp.path()));
        drop(log);
        let (_log, rec) = open(tmp.path(), 300);
        assert_eq!(seqs(&rec), (101..=110).collect::<Vec<_>>());
    }

    #[test]
    fn watermark_never_goes_backwards() {
        let tmp = TestDir::new("watermark");
        {
            let (log, _) = open(tmp.path(), 1 << 20);
            append_range(&log, 1..=60);
            log.compact(50).unwrap();
            log.compact(10).unwrap();
            log.compact(0).unwrap();
        }
        let (log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(rec.watermark, 50);
        assert_eq!(seqs(&rec), (50..=60).collect::<Vec<_>>());
        log.compact(20).unwrap();
        drop(log);
        let (_log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(rec.watermark, 50);
        assert!(!tmp.path().join(WATERMARK_TMP).exists());
    }

    #[test]
    fn a_damaged_watermark_replays_everything() {
        let tmp = TestDir::new("badwatermark");
        {
            let (log, _) = open(tmp.path(), 1 << 20);
            append_range(&log, 1..=5);
            log.compact(4).unwrap();
        }
        assert_eq!(read_watermark(tmp.path()).unwrap(), 4);
        let path = tmp.path().join(WATERMARK_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[9] ^= 1;
        fs::write(&path, &bytes).unwrap();
        fs::write(tmp.path().join(WATERMARK_TMP), b"half-written").unwrap();
        let (_log, rec) = open(tmp.path(), 1 << 20);
        assert_eq!(rec.watermark, 0);
        assert_eq!(seqs(&rec), [1, 2, 3, 4, 5]);
        assert!(!tmp.path().join(WATERMARK_TMP).exists());
    }

    #[test]
    fn a_second_open_is_locked_until_the_first_is_dropped() {
        let tmp = TestDir::new("lock");
        let (first, _) = open(tmp.path(), 1 << 20);
        append_range(&first, 1..=1);
        match SegmentLog::open(tmp.path(), LogOptions::default()) {
            Err(OutboxError::Locked { dir }) => assert_eq!(dir, tmp.path()),
            other => panic!("expected Locked, got {other:?}"),
        }
        let err = SegmentLog::open(tmp.path(), LogOptions::default()).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        let (second, rec) = SegmentLog::open(tmp.path(), LogOptions::default()).unwrap();
        assert_eq!(seqs(&rec), [1]);
        drop(second);
    }

    #[test]
    fn a_record_over_the_limit_names_its_resource() {
        let err = OutboxError::RecordTooLarge {
            seq: 3,
            resource: "blobs".into(),
            bytes: MAX_RECORD_BYTES + 1,
            max: MAX_RECORD_BYTES,
        };
        let text = err.to_string();
        assert!(
            text.contains("\"blobs\"") && text.contains("1073741824"),
            "{text}"
        );
    }

    #[test]
    fn log_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SegmentLog>();
    }

    #[test]
    fn concurrent_append_sync_and_compact_lose_nothing() {
        const N: u64 = 50_000;
        let tmp = TestDir::new("concurrent");
        let (log, _) = open(tmp.path(), 64 * 1024);
        let log = Arc::new(log);
        let appended = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let background = {
            let (log, appended, done) = (log.clone(), appended.clone(), done.clone());
            std::thread::spawn(move || {
                let mut deleted = 0;
                loop {
                    // One more round after the appender finished, however the threads ran.
                    let finished = done.load(Ordering::Acquire);
                    log.sync().unwrap();
                    // Pretend the first half of what was appended has been delivered.
                    let watermark = appended.load(Ordering::Acquire) / 2;
                    deleted += log.compact(watermark).unwrap().segments_deleted;
                    if finished {
                        return (watermark, deleted);
                    }
                    std::thread::yield_now();
                }
            })
        };
        for seq in 1..=N {
            log.append(&entry(seq).entry_ref()).unwrap();
            appended.store(seq, Ordering::Release);
        }
        done.store(true, Ordering::Release);
        let (watermark, deleted) = background.join().unwrap();
        assert!(deleted > 0, "compaction never deleted anything");
        assert_eq!(log.size_bytes(), disk_bytes(tmp.path()));
        assert_eq!(log.segments(), segment_files(tmp.path()).len());
        drop(log);

        let (_log, rec) = open(tmp.path(), 64 * 1024);
        assert_eq!(rec.watermark, watermark);
        assert_eq!((rec.dropped_bytes, rec.corrupt_records), (0, 0));
        assert_eq!(rec.next_seq, N + 1);
        let from = watermark.max(1);
        assert_eq!(rec.entries.len() as u64, N - from + 1);
        for (e, seq) in rec.entries.iter().zip(from..) {
            assert_eq!(*e, entry(seq));
        }
    }
}
