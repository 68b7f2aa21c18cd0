//! Dead letters as JSON lines: `{"add":id,"record":{...}}` and `{"remove":id}`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::error::OutboxError;
use super::sync_dir;

const FILE_NAME: &str = "dead-letters.jsonl";
const TMP_NAME: &str = "dead-letters.jsonl.tmp";
/// The line buffer is released after a write that grew it past this.
const RETAINED_BUFFER_BYTES: usize = 1024 * 1024;

/// One line of the file. `record` is `Some` whenever the key is present, even as `null`.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct Line<T> {
    add: Option<u64>,
    remove: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    record: Option<T>,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Debug)]
struct Inner {
    file: File,
    /// Length of the file as written through `file`.
    len: u64,
    /// A failed write may have left a partial line: start the next one on a new line.
    needs_newline: bool,
    buf: Vec<u8>,
}

/// Dead letters persisted in `dir/dead-letters.jsonl`, generic over the record type.
///
/// Appends are single `write(2)` calls (they survive the process being killed; call
/// [`sync`](Self::sync) for power loss). The file takes no lock of its own: keep it in the
/// directory of an open [`SegmentLog`](super::SegmentLog), which holds `dir/LOCK`.
#[derive(Debug)]
pub struct DeadLetterFile {
    dir: PathBuf,
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl DeadLetterFile {
    /// Opens (creating if needed) `dir/dead-letters.jsonl` and returns the live records in the
    /// order they were added. A torn last line is cut off, unreadable lines are skipped with a
    /// warning, and the file is rewritten compactly when it holds more dead lines (removed
    /// records, removals, unreadable lines) than live records.
    pub fn open<T: DeserializeOwned>(
        dir: &Path,
    ) -> Result<(DeadLetterFile, Vec<(u64, T)>), OutboxError> {
        fs::create_dir_all(dir).map_err(OutboxError::io(dir))?;
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(TMP_NAME);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(OutboxError::io(&tmp)(e)),
        }
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(OutboxError::io(&path)(e)),
        };
        let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < data.len() {
            tracing::warn!(
                message = "Dropped a torn last line of the dead-letter file.",
                path = %path.display(),
                dropped_bytes = data.len() - complete,
            );
        }

        // Slots in order of addition; a removed record leaves `None`.
        let mut slots: Vec<Option<(u64, T, Range<usize>)>> = Vec::new();
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut lines = 0usize;
        let mut start = 0;
        let mut line_no = 0usize;
        while start < complete {
            let end = data[start..complete]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(complete, |i| start + i);
            let range = start..end;
            start = end + 1;
            line_no += 1;
            let line = &data[range.clone()];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            lines += 1;
            match serde_json::from_slice::<Line<T>>(line) {
                Ok(Line {
                    add: Some(id),
                    remove: None,
                    record: Some(record),
                }) => {
                    if let Some(old) = index.insert(id, slots.len()) {
                        slots[old] = None;
                    }
                    slots.push(Some((id, record, range)));
                }
                Ok(Line {
                    add: None,
                    remove: Some(id),
                    record: None,
                }) => {
                    if let Some(old) = index.remove(&id) {
                        slots[old] = None;
                    }
                }
                Ok(_) => tracing::warn!(
                    message = "Skipped a dead-letter line that is neither an add nor a remove.",
                    path = %path.display(),
                    line = line_no,
                ),
                Err(error) => tracing::warn!(
                    message = "Skipped an unreadable dead-letter line.",
                    path = %path.display(),
                    line = line_no,
                    %error,
                ),
            }
        }

        let mut live = Vec::with_capacity(index.len());
        let mut live_lines = Vec::with_capacity(index.len());
        for (id, record, range) in slots.into_iter().flatten() {
            live.push((id, record));
            live_lines.push(range);
        }

        let mut len = complete as u64;
        if lines - live.len() > live.len() {
            let mut content = Vec::with_capacity(live_lines.iter().map(|r| r.len() + 1).sum());
            for range in live_lines {
                content.extend_from_slice(&data[range]);
                content.push(b'\n');
            }
            replace_file(dir, &tmp, &path, &content)?;
            len = content.len() as u64;
            tracing::debug!(
                message = "Compacted the dead-letter file.",
                path = %path.display(),
                live = live.len(),
                dropped_lines = lines - live.len(),
            );
        }
        drop(data);

        let file = open_append(&path)?;
        let on_disk = file.metadata().map_err(OutboxError::io(&path))?.len();
        if on_disk != len {
            // Cut the torn last line off so the next line does not get glued to it.
            file.set_len(len).map_err(OutboxError::io(&path))?;
            file.sync_data().map_err(OutboxError::io(&path))?;
        }
        let dlf = DeadLetterFile {
            dir: dir.to_path_buf(),
            path,
            inner: Mutex::new(Inner {
                file,
                len,
                needs_newline: false,
                buf: Vec::new(),
            }),
        };
        Ok((dlf, live))
    }

    /// Appends an `add` line. Adding an id that is live replaces its record (and moves it
    /// to the end of the order) on the next open.
    pub fn add<T: Serialize>(&self, id: u64, record: &T) -> Result<(), OutboxError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.buf.clear();
        if inner.needs_newline {
            inner.buf.push(b'\n');
        }
        inner.buf.extend_from_slice(b"{\"add\":");
        inner.buf.extend_from_slice(id.to_string().as_bytes());
        inner.buf.extend_from_slice(b",\"record\":");
        serde_json::to_writer(&mut inner.buf, record).map_err(|source| OutboxError::Json {
            path: self.path.clone(),
            source,
        })?;
        inner.buf.extend_from_slice(b"}\n");
        self.write_buf(inner)
    }

    /// Appends a `remove` line.
    pub fn remove(&self, id: u64) -> Result<(), OutboxError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.buf.clear();
        if inner.needs_newline {
            inner.buf.push(b'\n');
        }
        inner.buf.extend_from_slice(b"{\"remove\":");
        inner.buf.extend_from_slice(id.to_string().as_bytes());
        inner.buf.extend_from_slice(b"}\n");
        self.write_buf(inner)
    }

    /// Replaces the file with only these live records (tmp file, fsync, rename, directory
    /// fsync). Appends wait while it runs.
    pub fn rewrite<T: Serialize>(&self, live: &[(u64, &T)]) -> Result<(), OutboxError> {
        let mut content = Vec::new();
        for (id, record) in live {
            content.extend_from_slice(b"{\"add\":");
            content.extend_from_slice(id.to_string().as_bytes());
            content.extend_from_slice(b",\"record\":");
            serde_json::to_writer(&mut content, record).map_err(|source| OutboxError::Json {
                path: self.path.clone(),
                source,
            })?;
            content.extend_from_slice(b"}\n");
        }
        let mut inner = self.lock();
        let tmp = self.dir.join(TMP_NAME);
        replace_file(&self.dir, &tmp, &self.path, &content)?;
        inner.file = open_append(&self.path)?;
        inner.len = content.len() as u64;
        inner.needs_newline = false;
        Ok(())
    }

    /// `fdatasync` of everything written so far.
    pub fn sync(&self) -> Result<(), OutboxError> {
        let file = self
            .lock()
            .file
            .try_clone()
            .map_err(OutboxError::io(&self.path))?;
        file.sync_data().map_err(OutboxError::io(&self.path))
    }

    /// Path of the JSON-lines file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something did, the state is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_buf(&self, inner: &mut Inner) -> Result<(), OutboxError> {
        let result = (&inner.file).write_all(&inner.buf);
        match result {
            Ok(()) => {
                inner.len += inner.buf.len() as u64;
                inner.needs_newline = false;
            }
            Err(_) => {
                // Cut a partial line off; if that fails, make sure the next line starts fresh.
                if inner.file.set_len(inner.len).is_err() {
                    inner.needs_newline = true;
                }
            }
        }
        if inner.buf.capacity() > RETAINED_BUFFER_BYTES {
            inner.buf = Vec::new();
        }
        result.map_err(OutboxError::io(&self.path))
    }
}

fn open_append(path: &Path) -> Result<File, OutboxError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(OutboxError::io(path))
}

/// Atomically replaces `path` with `content`.
fn replace_file(dir: &Path, tmp: &Path, path: &Path, content: &[u8]) -> Result<(), OutboxError> {
    let write = || -> io::Result<()> {
        let mut file = File::create(tmp)?;
        file.write_all(content)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(tmp);
        return Err(OutboxError::io(tmp)(e));
    }
    fs::rename(tmp, path).map_err(OutboxError::io(path))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::super::test_dir::TestDir;
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Letter {
        sink: String,
        error: String,
        attempts: u32,
    }

    fn letter(n: u32) -> Letter {
        Letter {
            sink: format!("pg-{n}"),
            error: format!("timeout ☃ \"{n}\"\nline two"),
            attempts: n,
        }
    }

    fn open(dir: &Path) -> (DeadLetterFile, Vec<(u64, Letter)>) {
        DeadLetterFile::open(dir).unwrap()
    }

    fn ids(live: &[(u64, Letter)]) -> Vec<u64> {
        live.iter().map(|(id, _)| *id).collect()
    }

    fn line_count(dlf: &DeadLetterFile) -> usize {
        fs::read_to_string(dlf.path()).unwrap().lines().count()
    }

    #[test]
    fn add_remove_and_reopen() {
        let tmp = TestDir::new("dl-basic");
        {
            let (dlf, live) = open(tmp.path());
            assert!(live.is_empty());
            for id in [3, 1, 2] {
                dlf.add(id, &letter(id as u32)).unwrap();
            }
            dlf.remove(1).unwrap();
            dlf.remove(99).unwrap(); // unknown ids are ignored
            dlf.sync().unwrap();
        }
        let (dlf, live) = open(tmp.path());
        assert_eq!(live, vec![(3, letter(3)), (2, letter(2))]);
        // 5 lines, 2 live, 3 dead: compacted.
        assert_eq!(line_count(&dlf), 2);
    }

    #[test]
    fn compacts_on_open_only_when_dead_lines_outnumber_live_records() {
        let tmp = TestDir::new("dl-compact");
        {
            let (dlf, _) = open(tmp.path());
            for id in 1..=4 {
                dlf.add(id, &letter(id as u32)).unwrap();
            }
            dlf.remove(2).unwrap();
        }
        {
            // 5 lines: 3 live, 2 dead: left alone.
            let (dlf, live) = open(tmp.path());
            assert_eq!(ids(&live), [1, 3, 4]);
            assert_eq!(line_count(&dlf), 5);
            dlf.remove(1).unwrap();
            dlf.remove(3).unwrap();
        }
        {
            // 7 lines: 1 live, 6 dead: rewritten with the live record's line only.
            let (dlf, live) = open(tmp.path());
            assert_eq!(live, vec![(4, letter(4))]);
            assert_eq!(line_count(&dlf), 1);
            // Appends after the rewrite land in the new file.
            dlf.add(5, &letter(5)).unwrap();
        }
        let (dlf, live) = open(tmp.path());
        assert_eq!(ids(&live), [4, 5]);
        assert_eq!(line_count(&dlf), 2);
        assert!(!tmp.path().join(TMP_NAME).exists());
    }

    #[test]
    fn a_torn_last_line_is_cut_off_so_later_adds_survive() {
        let tmp = TestDir::new("dl-torn");
        {
            let (dlf, _) = open(tmp.path());
            dlf.add(1, &letter(1)).unwrap();
            dlf.add(2, &letter(2)).unwrap();
        }
        let path = tmp.path().join(FILE_NAME);
        let clean = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"add":3,"record":{"sink":"p"#)
            .unwrap();
        {
            let (dlf, live) = open(tmp.path());
            assert_eq!(live, vec![(1, letter(1)), (2, letter(2))]);
            assert_eq!(fs::metadata(&path).unwrap().len(), clean);
            dlf.add(3, &letter(3)).unwrap();
        }
        let (_dlf, live) = open(tmp.path());
        assert_eq!(ids(&live), [1, 2, 3]);
        assert_eq!(live[2].1, letter(3));
    }

    #[test]
    fn unreadable_lines_are_skipped() {
        let tmp = TestDir::new("dl-garbage");
        let good = |id: u64| {
            format!(
                "{{\"add\":{id},\"record\":{}}}\n",
                serde_json::to_string(&letter(id as u32)).unwrap()
            )
        };
        let content = [
            good(1),
            "not json at all\n".into(),
            "\n".into(),
            "{\"add\":7,\"record\":{\"sink\":1}}\n".into(), // wrong record type
            "{\"add\":8}\n".into(),                         // add without a record
            "{\"add\":9,\"remove\":9}\n".into(),            // both
            good(2),
            "{\"remove\":\"x\"}\n".into(),
        ]
        .concat();
        fs::write(tmp.path().join(FILE_NAME), content).unwrap();
        let (dlf, live) = open(tmp.path());
        assert_eq!(live, vec![(1, letter(1)), (2, letter(2))]);
        // 7 non-blank lines, 2 live: compacted to the live ones.
        assert_eq!(line_count(&dlf), 2);
        drop(dlf);
        let (_dlf, live) = open(tmp.path());
        assert_eq!(ids(&live), [1, 2]);
    }

    #[test]
    fn re_adding_an_id_replaces_its_record() {
        let tmp = TestDir::new("dl-readd");
        {
            let (dlf, _) = open(tmp.path());
            dlf.add(1, &letter(1)).unwrap();
            dlf.add(2, &letter(2)).unwrap();
            dlf.add(1, &letter(10)).unwrap();
        }
        let (_dlf, live) = open(tmp.path());
        assert_eq!(live, vec![(2, letter(2)), (1, letter(10))]);
    }

    #[test]
    fn rewrite_keeps_only_the_given_records() {
        let tmp = TestDir::new("dl-rewrite");
        {
            let (dlf, _) = open(tmp.path());
            for id in 1..=3 {
                dlf.add(id, &letter(id as u32)).unwrap();
            }
            let keep = letter(3);
            dlf.rewrite(&[(3, &keep)]).unwrap();
            assert_eq!(line_count(&dlf), 1);
            dlf.add(4, &letter(4)).unwrap();
            dlf.remove(3).unwrap();
            assert_eq!(line_count(&dlf), 3);
        }
        let (_dlf, live) = open(tmp.path());
        assert_eq!(live, vec![(4, letter(4))]);
    }

    #[test]
    fn records_may_be_any_json_value() {
        let tmp = TestDir::new("dl-value");
        {
            let (dlf, _) = DeadLetterFile::open::<serde_json::Value>(tmp.path()).unwrap();
            dlf.add(1, &serde_json::Value::Null).unwrap();
            dlf.add(2, &serde_json::json!({"a": [1, "ü"]})).unwrap();
        }
        let (_dlf, live) = DeadLetterFile::open::<serde_json::Value>(tmp.path()).unwrap();
        assert_eq!(
            live,
            vec![
                (1, serde_json::Value::Null),
                (2, serde_json::json!({"a": [1, "ü"]}))
            ]
        );
    }
}
