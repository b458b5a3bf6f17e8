//! A small tmpfs the test mounts (the full-disk and low-disk tests), skipped with a message only
//! where the machine forbids mounts.

use std::path::PathBuf;
use std::process::Command;

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
pub struct SmallDisk {
    pub dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (after saying why) where the machine forbids mounts.
    #[allow(clippy::print_stdout, reason = "a skipped test says why in the test output")]
    pub fn mount(size: &str) -> Option<SmallDisk> {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("disk");
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk { dir, _parent: parent }),
            Ok(o) => {
                println!(
                    "SKIPPED: this machine does not allow mounting a {size} tmpfs ({}); the full-disk test needs one",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount ({e}); the full-disk test needs a small tmpfs");
                None
            }
        }
    }

    pub fn free(&self) -> u64 {
        let s = rustix::fs::statvfs(&self.dir).unwrap();
        s.f_bavail * s.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
