//! The small files that live beside the database:
//! - `<db>.lock`: an exclusive `flock` held for the writer's lifetime, so two instances never run
//!   on one database (the kernel drops it when the process dies, also on kill -9);
//! - `<db>.seq`: the sequence high-water mark, fsynced before any seq beyond it is handed out, so
//!   a database recreated after corruption (or on a cabinet whose clock has not been set) never
//!   repeats a seq the cloud has seen.
//!
//! Must not: hold any record data.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::schema::{classify_io, OpenError};
use super::StoreError;

/// A file beside the database: `<db><suffix>`.
pub fn beside(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// The exclusive instance lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock beside `db`, or says who holds it.
    pub fn acquire(db: &Path) -> Result<InstanceLock, OpenError> {
        let path = beside(db, ".lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| classify_io(&format!("opening {}", path.display()), &e))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(OpenError::OtherInstance(format!(
                    "{} is locked by {}",
                    path.display(),
                    if holder.is_empty() { "another process" } else { holder }
                )));
            }
            Err(e) => {
                return Err(classify_io(
                    &format!("locking {}", path.display()),
                    &std::io::Error::from(e),
                ))
            }
        }
        // Who holds it, for the message the next instance prints; best effort (a full disk
        // must not stop the start).
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = write!(file, "pid {}", std::process::id());
        Ok(InstanceLock { _file: file })
    }
}

/// Seqs reserved per fsync of the mark: the mark moves rarely, and a restart skips at most this
/// many numbers.
pub const SEQ_BLOCK: i64 = 1 << 16;

/// Fixed width of the mark's text, so it is always rewritten in place (no new disk blocks: the
/// mark can move on a full disk).
const MARK_WIDTH: usize = 24;

/// The sequence high-water mark: every seq handed out is at most `reserved`.
#[derive(Debug)]
pub struct SeqMark {
    file: File,
    reserved: i64,
}

impl SeqMark {
    /// Opens (creating) the mark beside `db`. An unreadable mark counts as 0 (the caller still
    /// has the database's own sequence and the wall clock).
    pub fn open(db: &Path) -> Result<SeqMark, StoreError> {
        let path = beside(db, ".seq");
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::Unavailable(classify_io(&format!("opening {}", path.display()), &e)))?;
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let reserved = match text.trim() {
            "" => 0,
            t => t.parse::<i64>().unwrap_or_else(|_| {
                tracing::warn!(path = %path.display(), "sequence mark unreadable ({t:?}); relying on the database and the clock");
                0
            }),
        };
        if created {
            sync_dir(&path);
        }
        Ok(SeqMark { file, reserved })
    }

    /// The highest seq that may have been handed out.
    pub fn reserved(&self) -> i64 {
        self.reserved
    }

    /// Makes sure `seq` is covered by the mark, moving it (write + fsync) when it is not.
    pub fn cover(&mut self, seq: i64) -> Result<(), StoreError> {
        if seq <= self.reserved {
            return Ok(());
        }
        let next = seq.saturating_add(SEQ_BLOCK);
        let text = format!("{next:>width$}\n", width = MARK_WIDTH - 1);
        self.file
            .write_all_at(text.as_bytes(), 0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| StoreError::Io(format!("moving the sequence mark: {e}")))?;
        self.reserved = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let first = InstanceLock::acquire(&db).unwrap();
        let second = InstanceLock::acquire(&db).unwrap_err();
        assert!(
            matches!(&second, OpenError::OtherInstance(m) if m.contains(&format!("pid {}", std::process::id()))),
            "{second:?}"
        );
        drop(first);
        assert!(InstanceLock::acquire(&db).is_ok());
    }

    #[test]
    fn the_mark_moves_in_blocks_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let mut mark = SeqMark::open(&db).unwrap();
        assert_eq!(mark.reserved(), 0);
        mark.cover(10).unwrap();
        assert_eq!(mark.reserved(), 10 + SEQ_BLOCK);
        mark.cover(20).unwrap();
        assert_eq!(mark.reserved(), 10 + SEQ_BLOCK, "no write while covered");
        mark.cover(10 + SEQ_BLOCK + 1).unwrap();
        let expected = 11 + 2 * SEQ_BLOCK;
        drop(mark);
        assert_eq!(SeqMark::open(&db).unwrap().reserved(), expected);
        assert_eq!(std::fs::metadata(beside(&db, ".seq")).unwrap().len(), MARK_WIDTH as u64);
    }
}
