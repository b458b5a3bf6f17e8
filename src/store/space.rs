//! Disk space around the database: the byte budget split between the main file, the WAL and the
//! shared-memory file (so `storage.max_bytes` bounds the files, not an estimate), the free space
//! of the store's file system, and the reserve: a file of real blocks beside the database that is
//! deleted the moment the disk fills, so the writer can still delete delivered rows, evict by
//! priority and commit critical records, and that is written again once space has returned.
//!
//! Must not: decide what to evict (the writer does) or raise alarms itself.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::files::beside;

/// Settings of the disk-space policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceOptions {
    /// Bytes the reserve file holds back for a full disk.
    pub reserve_bytes: u64,
    /// Free space of the file system below which `disk_low` is raised.
    pub disk_low_bytes: u64,
}

impl SpaceOptions {
    /// The defaults for a budget: a reserve twice the WAL's share plus 1 MiB (at most an eighth
    /// of the budget, at least 256 KiB), `disk_low` at four reserves.
    pub fn for_budget(max_bytes: u64) -> SpaceOptions {
        let reserve_bytes = (2 * Budget::new(max_bytes, 4096).wal_bytes + (1 << 20))
            .min(max_bytes / 8)
            .max(256 << 10);
        SpaceOptions {
            reserve_bytes,
            disk_low_bytes: 4 * reserve_bytes,
        }
    }
}

/// How `storage.max_bytes` is shared between the database files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_bytes: u64,
    pub page_size: u64,
    /// The WAL's share: checkpoints keep it well under this (see the writer).
    pub wal_bytes: u64,
    /// The shared-memory index's share (32 KiB per 4096 WAL frames, plus one region).
    pub shm_bytes: u64,
    /// What is left for the main file.
    pub main_bytes: u64,
}

impl Budget {
    pub fn new(max_bytes: u64, page_size: u64) -> Budget {
        let wal_bytes = (max_bytes / 16).clamp(256 << 10, 32 << 20);
        let frames = wal_bytes / (page_size + 24) + 1;
        let shm_bytes = (32 << 10) * (frames.div_ceil(4096) + 1);
        Budget {
            max_bytes,
            page_size,
            wal_bytes,
            shm_bytes,
            main_bytes: max_bytes.saturating_sub(wal_bytes + shm_bytes),
        }
    }

    /// Pages the main file may hold.
    pub fn main_pages(&self) -> i64 {
        (self.main_bytes / self.page_size) as i64
    }

    /// WAL frames past which the writer checkpoints after a commit.
    pub fn checkpoint_frames(&self) -> i64 {
        (self.wal_bytes / 4 / (self.page_size + 24)).max(8) as i64
    }

    /// Free pages one transaction may give back to the file system. Moving pages writes them
    /// (and their pointer-map and freelist pages) to the WAL, so a step is kept to a quarter of
    /// the WAL's share: one unbounded `incremental_vacuum` after a large delivery would push the
    /// WAL (and the files) past `max_bytes` and, on a nearly full disk, fill it again.
    pub fn vacuum_pages(&self) -> i64 {
        (self.wal_bytes / 4 / (self.page_size + 24)).clamp(8, 2048) as i64
    }

    /// Rows one transaction may append or delete before the writer commits early. Rows of
    /// different devices sit on different pages of the table and its two indexes, so a row can
    /// dirty three pages of its own (acknowledgements of a round-robin drain are scattered like
    /// that): a transaction's frames then stay within a quarter of the WAL's share.
    pub fn transaction_rows(&self) -> u64 {
        (self.wal_bytes / 4 / (self.page_size + 24) / 3).max(4)
    }

    /// Bytes of records one transaction may append before the writer commits early, so a burst
    /// cannot push the WAL past its share.
    pub fn transaction_bytes(&self) -> u64 {
        (self.wal_bytes / 8).max(16 << 10)
    }
}

/// Sizes of the database files as they are on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileSizes {
    pub main: u64,
    pub wal: u64,
    pub shm: u64,
}

impl FileSizes {
    pub fn of(db: &Path) -> FileSizes {
        let len = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        FileSizes {
            main: len(db.to_path_buf()),
            wal: len(beside(db, "-wal")),
            shm: len(beside(db, "-shm")),
        }
    }

    pub fn total(&self) -> u64 {
        self.main + self.wal + self.shm
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The reserve file beside the database.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    pub fn new(db: &Path, bytes: u64) -> Reserve {
        Reserve {
            path: beside(db, ".reserve"),
            bytes,
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the reserve is in place (a file of the full size).
    pub fn held(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes)
    }

    /// Gives the reserved space back to the file system. Returns whether there was any.
    pub fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }

    /// Writes the reserve with real blocks (zeros written, not a sparse length) and syncs it.
    /// On failure (no space) nothing is left behind.
    pub fn restore(&self) -> std::io::Result<()> {
        if self.held() {
            return Ok(());
        }
        let attempt = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&self.path)?;
            let chunk = vec![0u8; 64 << 10];
            let mut left = self.bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        };
        attempt().inspect_err(|_| {
            let _ = std::fs::remove_file(&self.path);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_the_main_file_what_the_wal_and_shm_do_not_take() {
        let b = Budget::new(2 << 30, 4096);
        assert_eq!(b.wal_bytes, 32 << 20);
        assert!(b.main_bytes + b.wal_bytes + b.shm_bytes <= b.max_bytes);
        assert!(b.main_bytes > (19 << 30) / 10);
        let small = Budget::new(1 << 20, 4096);
        assert_eq!(small.wal_bytes, 256 << 10);
        assert_eq!(small.shm_bytes, 64 << 10);
        assert_eq!(small.main_bytes, (1 << 20) - (320 << 10));
        assert!(small.checkpoint_frames() >= 8);
        // A vacuum step's frames stay within a quarter of the WAL's share.
        assert!(small.vacuum_pages() as u64 * (4096 + 24) <= small.wal_bytes / 4);
        assert_eq!(b.vacuum_pages(), 2036);
        assert_eq!((small.transaction_rows(), b.transaction_rows()), (5, 678));
    }

    #[test]
    fn the_reserve_is_real_space_released_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reserve::new(&dir.path().join("x.db"), 300 << 10);
        assert!(!r.held());
        r.restore().unwrap();
        assert!(r.held());
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(dir.path().join("x.db.reserve")).unwrap().blocks();
        assert!(blocks * 512 >= 300 << 10, "sparse reserve: {blocks} blocks");
        assert!(r.release());
        assert!(!r.held() && !r.release());
        assert!(free_bytes(&dir.path().join("x.db")).unwrap() > 0);
    }

    #[test]
    fn defaults_scale_with_the_budget() {
        let o = SpaceOptions::for_budget(2 << 30);
        assert_eq!(o.reserve_bytes, 65 << 20);
        assert_eq!(o.disk_low_bytes, 4 * o.reserve_bytes);
        assert_eq!(SpaceOptions::for_budget(1 << 20).reserve_bytes, 256 << 10);
    }
}
