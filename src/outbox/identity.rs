//! The outbox's own id: created once with the directory and kept in `<dir>/OUTBOX_ID`, so
//! that `{outbox id}:{seq}` names one change for good (across restarts and replays) and two
//! outbox directories never hand out the same identity.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::{sync_dir, OutboxError};

const ID_FILE: &str = "OUTBOX_ID";
const ID_TMP: &str = "OUTBOX_ID.tmp";
/// 16 lowercase hex digits (64 random bits).
const ID_LEN: usize = 16;

/// A fresh random id (also the per-process id of a memory outbox).
pub fn random_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Reads `<dir>/OUTBOX_ID`, creating it (atomically, fsynced) the first time. A damaged file
/// is replaced by a new id: identities then change, but never collide with another outbox's.
pub fn load_or_create(dir: &Path) -> Result<String, OutboxError> {
    let path = dir.join(ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) if is_valid(text.trim()) => return Ok(text.trim().to_owned()),
        Ok(_) => tracing::warn!(
            message = "Replaced a damaged outbox id; changes get new identities from now on.",
            path = %path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(OutboxError::io(&path)(e)),
    }
    fs::create_dir_all(dir).map_err(OutboxError::io(dir))?;
    let id = random_id();
    let tmp = dir.join(ID_TMP);
    let mut file = File::create(&tmp).map_err(OutboxError::io(&tmp))?;
    file.write_all(format!("{id}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(OutboxError::io(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(OutboxError::io(&path))?;
    sync_dir(dir)?;
    Ok(id)
}

fn is_valid(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::test_dir::TestDir;

    #[test]
    fn the_id_is_created_once_and_kept() {
        let dir = TestDir::new("identity");
        let first = load_or_create(dir.path()).unwrap();
        assert!(is_valid(&first));
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        let other = TestDir::new("identity-other");
        assert_ne!(load_or_create(other.path()).unwrap(), first);
    }

    #[test]
    fn a_damaged_id_is_replaced() {
        let dir = TestDir::new("identity-damaged");
        fs::write(dir.path().join(ID_FILE), "not an id").unwrap();
        let id = load_or_create(dir.path()).unwrap();
        assert!(is_valid(&id));
        assert_eq!(load_or_create(dir.path()).unwrap(), id);
    }
}
