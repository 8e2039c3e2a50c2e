//! `walship push --async`: a local spool between PostgreSQL and the stores.
//!
//! A push copies its WAL file into the spool's queue (a temporary, fsync,
//! rename, fsync of the directory) and is acknowledged once that is done:
//! the archiver goes on while the file is shipped. Shipping is the work of
//! one process at a time, the holder of the spool's lock, which ships the
//! queue in parallel and removes each file once every store has it; a
//! push that finds no shipper running starts one. A shipper that dies
//! leaves its files queued for the next one, and a store that fails keeps
//! them queued. The queue is bounded: a push that would grow it past its
//! limit fails (PostgreSQL keeps the WAL and retries), it never drops one.
//!
//! A store that is down keeps files queued until it answers again. A file
//! no retry can ship (the store holds other bytes under its name) is
//! recorded in `conflicts/`, and every push fails while it is queued: the
//! archiver's failures show it, as a synchronous push's would, and the WAL
//! stays with PostgreSQL instead of piling up behind it.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The default limit of the queue.
pub const DEFAULT_MAX: u64 = 1 << 30;

/// A spool directory: `queue/` holds acknowledged files not yet in every store.
pub struct Spool {
    dir: PathBuf,
    max: u64,
    /// How long a shipper waits for another one to finish (see [`Spool::waiting`]).
    wait: Duration,
}

impl Spool {
    /// The spool at `dir` (created private), holding at most `max` bytes.
    pub fn open(dir: &Path, max: u64) -> Result<Spool> {
        crate::fsutil::create_private_dir(&dir.join("queue"))?;
        // Half-copied files of pushes that were killed.
        crate::cleanup::sweep(&dir.join("queue"));
        Ok(Spool {
            dir: dir.to_path_buf(),
            max,
            wait: Duration::ZERO,
        })
    }

    /// A shipper that finds another at work waits up to `wait` for it
    /// before leaving the queue to it: one that is ending after a failed
    /// round (a store that was down, a conflict resolved meanwhile) does not
    /// look at the queue again, and a file queued meanwhile would wait for
    /// the next push.
    pub fn waiting(mut self, wait: Duration) -> Spool {
        self.wait = wait;
        self
    }

    fn queue(&self) -> PathBuf {
        self.dir.join("queue")
    }

    fn conflict_record(&self, file: &str) -> PathBuf {
        self.dir.join("conflicts").join(file)
    }

    /// What no retry can ship: each queued file the shipper found in
    /// conflict with a store, and what it was told. A record whose file is
    /// no longer queued (its conflict was resolved by hand) is removed.
    pub fn conflicts(&self) -> Result<Vec<(String, String)>> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("conflicts")) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if crate::walarchive::validate(&name).is_err() {
                continue;
            }
            if !self.queue().join(&name).exists() {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let said = std::fs::read_to_string(e.path()).unwrap_or_default();
            found.push((name, said.trim().to_string()));
        }
        found.sort();
        Ok(found)
    }

    /// Records, or clears, the conflict of a queued file after a push of it.
    fn record(&self, file: &str, pushed: &Result<()>) {
        let record = self.conflict_record(file);
        match pushed {
            Err(e) if e.kind == crate::error::Kind::Conflict => {
                let _ = crate::fsutil::create_private_dir(&self.dir.join("conflicts"));
                let _ = crate::fsutil::write_private(&record, e.to_string().as_bytes());
            }
            Err(_) => {}
            Ok(()) => {
                let _ = std::fs::remove_file(record);
            }
        }
    }

    /// Durably queues the WAL file at `path` as `file`. A file queued
    /// already with the same bytes is success; other bytes are an error.
    pub fn enqueue(&self, path: &Path, file: &str) -> Result<()> {
        crate::walarchive::validate(file)?;
        if let Some((queued, said)) = self.conflicts()?.into_iter().next() {
            return Err(Error::of(
                crate::error::Kind::Conflict,
                format!("the spool {} cannot ship {queued}: {said}", self.dir.display()),
            )
            .hint("resolve it (walship status lists it); until then PostgreSQL keeps its WAL and retries"));
        }
        let target = self.queue().join(file);
        let open = |p: &Path| {
            std::fs::File::open(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
        };
        let source = open(path)?;
        let size = source
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        if target.exists() {
            // A retried push: the same bytes are queued already, other bytes never replace them.
            if same_contents(open(path)?, open(&target)?)? {
                return Ok(());
            }
            return Err(Error::failed(format!(
                "{file} is queued in {} with different contents; the queued copy is kept",
                self.dir.display()
            )));
        }
        let used: u64 = self.queued()?.iter().map(|(_, _, size)| size).sum();
        if used + size > self.max {
            return Err(Error::failed(format!(
                "the spool {} is full: {} queued, {} more would pass --spool-max {}",
                self.dir.display(),
                crate::units::human_bytes(used),
                crate::units::human_bytes(size),
                crate::units::human_bytes(self.max)
            ))
            .hint("the stores are not taking the queue: check them (walship status); PostgreSQL keeps the WAL and retries"));
        }
        crate::fsutil::write_private_from(&target, &mut std::io::BufReader::new(source))
    }

    /// The queued files: name, path and size, oldest name first.
    pub fn queued(&self) -> Result<Vec<(String, PathBuf, u64)>> {
        let rd = std::fs::read_dir(self.queue())
            .map_err(|e| Error::io(format!("reading {}", self.queue().display()), e))?;
        let mut v: Vec<(String, PathBuf, u64)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let meta = e.metadata().ok()?;
                (crate::walarchive::validate(&name).is_ok() && meta.is_file())
                    .then(|| (name, e.path(), meta.len()))
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// Ships the queue with `push` (`parallel` files at once) while it holds
    /// the spool's lock, removing each file once pushed; a file whose push
    /// fails stays queued and ends this round. Each round is told to `ended`
    /// once (for the metrics: one record a round, not one a file). Returns
    /// (`Ok(false)`) when another process is shipping still after the wait
    /// ([`Spool::waiting`]), having shipped nothing. What `push`
    /// needs (the stores) is `open`ed only once the lock is held and
    /// something is queued.
    pub fn ship<S: Sync>(
        &self,
        parallel: usize,
        open: impl FnOnce() -> Result<S>,
        push: &(dyn Fn(&S, &Path, &str) -> Result<()> + Sync),
        ended: &dyn Fn(Round),
    ) -> Result<bool> {
        let (mut open, mut opened) = (Some(open), None);
        loop {
            let lock = match crate::lock::Lock::acquire(
                &self.dir.join("ship.lock"),
                "the WAL spool",
                self.wait,
            ) {
                Ok(l) => l,
                Err(e) if e.kind == crate::error::Kind::Busy => return Ok(false),
                Err(e) => return Err(e),
            };
            loop {
                let mut batch = self.queued()?;
                batch.truncate(ROUND_FILES);
                if batch.is_empty() {
                    break;
                }
                if let Some(open) = open.take() {
                    opened = Some(open()?);
                }
                let target = opened.as_ref().expect("opened with the first batch");
                let failed = std::sync::Mutex::new(None);
                let next = AtomicUsize::new(0);
                let (shipped, failures) = (AtomicUsize::new(0), AtomicUsize::new(0));
                std::thread::scope(|scope| {
                    for _ in 0..parallel.max(1) {
                        scope.spawn(|| loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((name, path, _)) = batch.get(i) else {
                                return;
                            };
                            if failed.lock().expect("lock").is_some() {
                                return;
                            }
                            // A file pushed but not removed would be pushed
                            // again and again: that stops the shipper too.
                            let pushed = push(target, path, name);
                            self.record(name, &pushed);
                            let count = if pushed.is_ok() { &shipped } else { &failures };
                            count.fetch_add(1, Ordering::Relaxed);
                            let done = pushed.and_then(|()| {
                                std::fs::remove_file(path).map_err(|e| {
                                    Error::io(
                                        format!("removing {} from the spool", path.display()),
                                        e,
                                    )
                                })
                            });
                            if let Err(e) = done {
                                failed.lock().expect("lock").get_or_insert(e);
                            }
                        });
                    }
                });
                let _ = crate::fsutil::fsync_dir(&self.queue());
                ended(Round {
                    shipped: shipped.into_inner(),
                    failed: failures.into_inner(),
                });
                if let Some(e) = failed.into_inner().expect("lock") {
                    return Err(e);
                }
            }
            drop(lock);
            // A push that queued a file after the last listing and found the
            // lock held: its file is shipped by this loop, not stranded.
            if self.queued()?.is_empty() {
                return Ok(true);
            }
        }
    }
}

/// The most files a round ships: each round is told (the metrics record it)
/// while a long queue is still shipping, not only once it is all done.
const ROUND_FILES: usize = 16;

/// What one round of shipping did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Files every store now has.
    pub shipped: usize,
    /// Pushes that failed (their files stay queued).
    pub failed: usize,
}

/// Whether two files hold the same bytes, read side by side.
fn same_contents(a: std::fs::File, b: std::fs::File) -> Result<bool> {
    use std::io::Read;
    let (mut a, mut b) = (std::io::BufReader::new(a), std::io::BufReader::new(b));
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut x).map_err(Error::from)?;
        if n == 0 {
            return Ok(b.read(&mut y[..1]).map_err(Error::from)? == 0);
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: &str = "000000010000000000000003";

    #[test]
    fn a_queue_past_its_limit_refuses_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), 100).unwrap();
        let src = dir.path().join("seg");
        std::fs::write(&src, vec![1u8; 60]).unwrap();
        spool.enqueue(&src, SEG).unwrap();
        spool.enqueue(&src, SEG).unwrap();
        let e = spool.enqueue(&src, "000000010000000000000004").unwrap_err();
        assert!(e.message.contains("is full"), "{e}");
        // Other bytes of the same length, more bytes, fewer bytes: never the same file.
        for other in [vec![2u8; 60], vec![1u8; 61], vec![1u8; 59]] {
            std::fs::write(&src, other).unwrap();
            let e = spool.enqueue(&src, SEG).unwrap_err();
            assert!(e.message.contains("different contents"), "{e}");
        }
        assert_eq!(spool.queued().unwrap().len(), 1);
    }

    /// A spool holding the segments numbered `numbers`, and their source file.
    fn spool_of(
        numbers: std::ops::RangeInclusive<u8>,
    ) -> (tempfile::TempDir, Spool, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool"), DEFAULT_MAX).unwrap();
        let src = dir.path().join("seg");
        std::fs::write(&src, b"wal").unwrap();
        for n in numbers {
            spool
                .enqueue(&src, &format!("0000000100000000000000{n:02X}"))
                .unwrap();
        }
        (dir, spool, src)
    }

    #[test]
    fn shipping_removes_what_was_pushed_and_keeps_what_failed() {
        let (_dir, spool, src) = spool_of(3..=8);
        let shipped = std::sync::Mutex::new(Vec::new());
        let rounds = std::sync::Mutex::new(Vec::new());
        let ended = |r: Round| rounds.lock().unwrap().push(r);
        let err = spool
            .ship(
                2,
                || Ok(()),
                &|_, _, name| {
                    if name.ends_with('6') {
                        return Err(Error::failed("store down"));
                    }
                    shipped.lock().unwrap().push(name.to_string());
                    Ok(())
                },
                &ended,
            )
            .unwrap_err();
        assert_eq!(err.message, "store down");
        // One round, told once: what was shipped before the failure, and it.
        let first = Round {
            shipped: shipped.lock().unwrap().len(),
            failed: 1,
        };
        assert_eq!(*rounds.lock().unwrap(), [first]);
        let left: Vec<String> = spool.queued().unwrap().into_iter().map(|q| q.0).collect();
        assert!(
            left.contains(&"000000010000000000000006".to_string()),
            "{left:?}"
        );
        let rest = spool.queued().unwrap().len();
        assert!(spool.ship(3, || Ok(()), &|_, _, _| Ok(()), &ended).unwrap());
        assert!(spool.queued().unwrap().is_empty());
        let again = Round {
            shipped: rest,
            failed: 0,
        };
        assert_eq!(*rounds.lock().unwrap(), [first, again]);
        // Nothing queued: the stores are not even opened, no round is told.
        let never = || Err::<(), _>(Error::failed("opened"));
        assert!(spool.ship(3, never, &|_, _, _| Ok(()), &ended).unwrap());
        assert_eq!(rounds.lock().unwrap().len(), 2);
        // Another shipper at work: this one leaves to it, opening nothing.
        spool.enqueue(&src, "000000010000000000000009").unwrap();
        let other = crate::lock::Lock::acquire(
            &spool.dir.join("ship.lock"),
            "the WAL spool",
            Duration::ZERO,
        )
        .unwrap();
        let left = spool.ship(3, never, &|_, _, _| Ok(()), &ended);
        assert!(!left.unwrap(), "the other shipper ships");
        assert_eq!(spool.queued().unwrap().len(), 1, "the queue is untouched");
        drop(other);
    }

    #[test]
    fn a_long_queue_ships_in_rounds_each_told_as_it_ends() {
        let (_dir, spool, _) = spool_of(1..=20);
        let rounds = std::sync::Mutex::new(Vec::new());
        let ended = |r: Round| rounds.lock().unwrap().push(r.shipped);
        assert!(spool.ship(3, || Ok(()), &|_, _, _| Ok(()), &ended).unwrap());
        assert_eq!(*rounds.lock().unwrap(), [ROUND_FILES, 20 - ROUND_FILES]);
        assert!(spool.queued().unwrap().is_empty());
    }
}
