//! Locks that a dead holder cannot wedge.
//!
//! A lock is an `flock` on a file: the kernel releases it when the holder
//! dies, however it dies, so a lock left behind by a crashed run is taken
//! over rather than obeyed forever. The file holds the holder's pid and
//! host, for the message a waiting writer prints.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A held lock; released on drop.
pub struct Lock {
    file: File,
}

impl Lock {
    /// Takes the lock at `path`, waiting up to `timeout` (zero: fail at once with exit 4).
    pub fn acquire(path: &Path, what: &str, timeout: Duration) -> Result<Lock> {
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::failed(format!("cannot open lock file {}: {e}", path.display())))?;
        let start = Instant::now();
        loop {
            // SAFETY: the descriptor is valid for the lifetime of `file`.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                let _ = file.set_len(0);
                let _ = file.rewind();
                let _ = writeln!(
                    file,
                    "{} {}",
                    std::process::id(),
                    crate::fsutil::host_name()
                );
                let _ = file.sync_all();
                return Ok(Lock { file });
            }
            if start.elapsed() >= timeout {
                let mut holder = String::new();
                let _ = file.rewind();
                let _ = file.read_to_string(&mut holder);
                let pid = holder.split_whitespace().next().unwrap_or("unknown");
                return Err(Error::refused(format!(
                    "{what} is locked by another process (pid {pid}; lock {})",
                    path.display()
                ))
                .hint("wait for it to finish, or pass --lock-timeout to wait"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: the descriptor is valid; unlocking an flock has no other effect.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}
