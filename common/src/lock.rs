//! Locks that a dead holder cannot wedge, and where a store's locks live.
//!
//! A lock is an `flock` on a file: the kernel releases it when the holder
//! dies, however it dies, so a lock left behind by a crashed run is taken
//! over rather than obeyed forever. The file holds the holder's pid and
//! host, for the message a waiting writer prints.
//!
//! Locks are a layer around a store, not part of it (SPEC §4): a local
//! store keeps them in `STORE/locks/NAME.lock`; a remote store has no file
//! to lock, so its locks are local files that serialise the writers of
//! this host, in `$XDG_RUNTIME_DIR/dbsafe-locks` or `/tmp/dbsafe-locks-UID`,
//! keyed by a hash of the store's location.

use crate::error::{Error, Result};
use crate::store::Store;
use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released on drop.
pub struct Lock {
    file: File,
}

impl Lock {
    /// Takes the lock `name` of `store` (one per series or environment),
    /// waiting up to `timeout` (zero: fail at once with exit 4).
    pub fn on_store(store: &dyn Store, name: &str, timeout: Duration) -> Result<Lock> {
        Lock::acquire(
            &store_lock_path(&store.describe(), name, runtime_dir())?,
            name,
            timeout,
        )
    }

    /// Marks series `series` of `store` as read (one of its backups is
    /// being verified or restored) while the returned lock lives: readers
    /// share it, and dbprune deletes nothing of the series meanwhile
    /// ([`Lock::for_deleting`]). Waits up to a minute for a deletion. A
    /// reader that may not write the store's `locks/` reads unmarked
    /// (`None`): reading never needs more than read access.
    pub fn reading(store: &dyn Store, series: &str) -> Result<Option<Lock>> {
        let path = Lock::readers_path(store, series)?;
        match Lock::take(&path, series, Duration::from_secs(60), true) {
            Ok(l) => Ok(Some(l)),
            Err(e) if matches!(e.kind, crate::error::Kind::Io(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes series `series` of `store` for deleting its backups, unless a
    /// reader holds it ([`Lock::reading`]): then `None`.
    pub fn for_deleting(store: &dyn Store, series: &str) -> Result<Option<Lock>> {
        let path = Lock::readers_path(store, series)?;
        match Lock::take(&path, series, Duration::ZERO, false) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind == crate::error::Kind::Busy => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn readers_path(store: &dyn Store, series: &str) -> Result<PathBuf> {
        store_lock_path(
            &store.describe(),
            &format!("{series}.readers"),
            runtime_dir(),
        )
    }

    /// Takes the lock `name` of the directory `dir` among this user's
    /// processes on this host, in their private lock directory: for a
    /// directory of the user's own (a --safety-dir), which keeps no lock file.
    pub fn on_host_for(dir: &Path, name: &str, timeout: Duration) -> Result<Lock> {
        let place = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let path = host_lock_path(&place.display().to_string(), name, runtime_dir())?;
        Lock::acquire(&path, name, timeout)
    }

    /// Takes the lock at `path`, waiting up to `timeout` (zero: fail at once with exit 4).
    pub fn acquire(path: &Path, what: &str, timeout: Duration) -> Result<Lock> {
        Lock::take(path, what, timeout, false)
    }

    /// Takes the lock at `path`, exclusive or `shared` with other holders
    /// that share it, waiting up to `timeout`.
    fn take(path: &Path, what: &str, timeout: Duration, shared: bool) -> Result<Lock> {
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir(dir)?;
        }
        let mut file = crate::fsutil::open_regular(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600),
            path,
            "lock file",
        )?;
        let start = Instant::now();
        loop {
            let how = if shared {
                FlockOperation::NonBlockingLockShared
            } else {
                FlockOperation::NonBlockingLockExclusive
            };
            match flock(&file, how) {
                // Readers are many: none of them names itself in the file.
                Ok(()) if shared => return Ok(Lock { file }),
                Ok(()) => {
                    let _ = file.set_len(0);
                    let _ = file.rewind();
                    // Only a waiter's message reads this, while the lock
                    // is held: it needs no fsync (a crash frees the lock).
                    let _ = writeln!(
                        file,
                        "{} {}",
                        std::process::id(),
                        crate::fsutil::host_name()
                    );
                    return Ok(Lock { file });
                }
                Err(Errno::WOULDBLOCK | Errno::INTR) => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("cannot lock {}", path.display()),
                        e.into(),
                    ))
                }
            }
            if start.elapsed() >= timeout {
                // The holder writes its pid just after taking the lock: a
                // refusal in that instant waits a moment to name it.
                let mut holder = String::new();
                let read_since = Instant::now();
                while holder.trim().is_empty() && read_since.elapsed() < Duration::from_secs(2) {
                    holder.clear();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut holder);
                    if holder.trim().is_empty() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                let pid = holder.split_whitespace().next().unwrap_or("unknown");
                return Err(Error::busy(format!(
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
        // Closing the file releases the lock too; unlocking first lets a
        // waiter in before the rest of this process's teardown.
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

impl Lock {
    /// Takes the lock `name` of `store` among this user's processes on this
    /// host only, in a private directory of theirs: for work that runs as
    /// another user than the store's other writers (PostgreSQL's
    /// archive_command), which may not write in the store's `locks/`.
    pub fn on_host(store: &dyn Store, name: &str, timeout: Duration) -> Result<Lock> {
        let path = host_lock_path(&store.describe(), name, runtime_dir())?;
        Lock::acquire(&path, name, timeout)
    }
}

/// `$XDG_RUNTIME_DIR`, where this user's host locks go when it is set.
fn runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
}

/// The lock file of lock `name` of the store at `location`.
fn store_lock_path(location: &str, name: &str, runtime_dir: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = crate::store::directory_of(location) {
        let locks = dir.join("locks");
        crate::fsutil::refuse_link(&locks)?;
        return Ok(locks.join(format!("{name}.lock")));
    }
    host_lock_path(location, name, runtime_dir)
}

/// A lock file of the store at `location` in this user's private lock directory.
fn host_lock_path(location: &str, name: &str, runtime_dir: Option<PathBuf>) -> Result<PathBuf> {
    let dir = host_lock_dir(runtime_dir)?;
    // The store's location, not its endpoint: the same bucket reached
    // through two endpoints must still be one lock.
    let id = Sha256::digest(location);
    let safe: String = name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "-_.".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect();
    Ok(dir.join(format!("{}-{safe}.lock", &hex::encode(id)[..16])))
}

/// This host's directory for the locks of remote stores, which must be ours and private.
fn host_lock_dir(runtime_dir: Option<PathBuf>) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::getuid().as_raw();
    let dir = match runtime_dir {
        Some(d) if d.is_absolute() && d.is_dir() => d.join("dbsafe-locks"),
        _ => PathBuf::from(format!("/tmp/dbsafe-locks-{uid}")),
    };
    crate::fsutil::create_private_dir(&dir)?;
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| Error::io(format!("cannot use lock directory {}", dir.display()), e))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(Error::refused(format!(
            "lock directory {} is not a private directory of this user",
            dir.display()
        ))
        .hint("remove it, or set XDG_RUNTIME_DIR"));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitCode;

    #[test]
    fn a_held_lock_refuses_a_second_taker_with_the_holder_pid_until_released() {
        let (_dir, path) = crate::testing::temp_path("locks/s.lock");
        let held = Lock::acquire(&path, "series s", Duration::ZERO).unwrap();
        let e = Lock::acquire(&path, "series s", Duration::ZERO)
            .err()
            .expect("a second taker is refused");
        assert_eq!(e.code(), ExitCode::Refused);
        assert!(
            e.message.contains(&format!("pid {}", std::process::id())),
            "{}",
            e.message
        );
        drop(held);
        Lock::acquire(&path, "series s", Duration::ZERO).expect("free once released");
    }

    #[test]
    fn local_stores_keep_their_locks_inside_remote_ones_on_this_host() {
        assert_eq!(
            store_lock_path("/srv/backups", "app", None).unwrap(),
            PathBuf::from("/srv/backups/locks/app.lock")
        );
        let runtime = tempfile::tempdir().unwrap();
        let a = store_lock_path("s3://b/p", "promote-prod", Some(runtime.path().into())).unwrap();
        assert_eq!(
            a.parent(),
            Some(runtime.path().join("dbsafe-locks").as_path())
        );
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with("-promote-prod.lock"), "{name}");
        let other = store_lock_path("s3://b/q", "promote-prod", Some(runtime.path().into()));
        assert_ne!(a, other.unwrap(), "two stores, two locks");
        let odd = store_lock_path("s3://b/p", "a/b c", Some(runtime.path().into())).unwrap();
        assert!(odd.to_string_lossy().ends_with("-a_b_c.lock"), "{odd:?}");
    }
}
