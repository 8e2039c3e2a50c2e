//! What to undo when a tool is interrupted: temporary files, child processes
//! and other undo actions (an S3 upload to abort).
//!
//! SIGINT and SIGTERM are handled on a dedicated thread: it stops the
//! registered child processes, removes the registered temporaries and ends
//! the process with exit 130. A SIGKILL cannot be handled, which is why
//! every artifact is written under a hidden temporary name first: a killed
//! writer leaves only a temporary that no reader takes for an artifact and
//! that `dbprune` removes once it is stale.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static TEMPS: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
static CHILDREN: Mutex<BTreeMap<u64, u32>> = Mutex::new(BTreeMap::new());
static ACTIONS: Mutex<BTreeMap<u64, Box<dyn FnOnce() + Send>>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);
/// Records being finished (see [`Finishing`]).
static FINISHING: AtomicU64 = AtomicU64::new(0);
/// How long an interrupted tool waits for its records to be finished.
const FINISHING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Set inside the signal handler itself, so a thread that sees its child
/// die of our SIGTERM already sees the flag.
static INTERRUPTED: std::sync::LazyLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::LazyLock::new(Default::default);

/// Whether SIGINT or SIGTERM arrived: the work that failed meanwhile failed
/// because its children were stopped, and the exit status is 130.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// This process as temporaries name their owner: `PID-START`, the start
/// time (clock ticks since boot) telling a live owner from a reused pid.
pub fn owner_tag() -> String {
    let pid = std::process::id();
    format!("{pid}-{}", start_time(pid).unwrap_or(0))
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the owner a tag names is still running. A tag without a start
/// time (an older name) says nothing: only its age can tell.
pub fn owner_alive(tag: &str) -> bool {
    let Some((pid, start)) = tag.split_once('-') else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    start_time(pid) == Some(start)
}

/// The owner tag in one of our temporary names (`.NAME.tmp.TAG.RANDOM`).
pub fn owner_of(file: &str) -> Option<&str> {
    let (_, rest) = file.rsplit_once(".tmp.")?;
    rest.split('.').next()
}

/// Removes the temporaries in `dir` whose owner is dead (a killed run's
/// plaintext copies, spools, half-written files); returns what went.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let mut gone = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return gone;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dead = name.starts_with('.')
            && owner_of(&name).is_some_and(|o| o.contains('-') && !owner_alive(o));
        if dead {
            remove_path(&e.path());
            gone.push(e.path());
        }
    }
    gone
}

/// Removes a temporary path when dropped, and when the process is interrupted.
pub struct TempGuard {
    id: u64,
    path: PathBuf,
    keep: bool,
}

impl TempGuard {
    /// Registers `path` for removal.
    pub fn new(path: &Path) -> TempGuard {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        TEMPS
            .lock()
            .expect("cleanup lock")
            .insert(id, path.to_path_buf());
        TempGuard {
            id,
            path: path.to_path_buf(),
            keep: false,
        }
    }
    /// The guarded path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The path was renamed into place or handed on: do not remove it.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        TEMPS.lock().expect("cleanup lock").remove(&self.id);
        if !self.keep {
            remove_path(&self.path);
        }
    }
}

fn remove_path(p: &Path) {
    if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// Stops a child process when the tool is interrupted, while the guard lives.
pub struct ChildGuard(u64);

impl ChildGuard {
    /// Registers a child's pid.
    pub fn new(pid: u32) -> ChildGuard {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        CHILDREN.lock().expect("cleanup lock").insert(id, pid);
        ChildGuard(id)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        CHILDREN.lock().expect("cleanup lock").remove(&self.0);
    }
}

/// Sends SIGTERM to the process group `pgid` (a child started in a group
/// of its own, and whatever it started).
pub fn stop_group(pgid: u32) {
    if let Some(g) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(g, rustix::process::Signal::TERM);
    }
}

/// Starts `cmd` (a shell command a run hands its work to: a hook, a
/// migration) in a process group of its own, stopped whole with the tool
/// when it is interrupted, while the returned guard lives. An interrupted
/// tool starts nothing more (`ErrorKind::Interrupted`): it is recording how
/// it ended.
pub fn spawn_in_group(
    cmd: &mut std::process::Command,
) -> std::io::Result<(std::process::Child, ActionGuard)> {
    use std::os::unix::process::CommandExt;
    if interrupted() {
        return Err(std::io::ErrorKind::Interrupted.into());
    }
    let child = cmd.process_group(0).spawn()?;
    let pgid = child.id();
    Ok((child, ActionGuard::new(move || stop_group(pgid))))
}

/// Runs an undo action when the tool is interrupted, while the guard lives:
/// for temporaries that are not local paths, such as an S3 multipart upload
/// to abort.
#[derive(Debug)]
pub struct ActionGuard(u64);

impl ActionGuard {
    /// Registers `action`; it runs at most once, on SIGINT/SIGTERM.
    pub fn new(action: impl FnOnce() + Send + 'static) -> ActionGuard {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        ACTIONS
            .lock()
            .expect("cleanup lock")
            .insert(id, Box::new(action));
        ActionGuard(id)
    }
}

impl Drop for ActionGuard {
    fn drop(&mut self) {
        if let Ok(mut actions) = ACTIONS.lock() {
            actions.remove(&self.0);
        }
    }
}

/// A record the run must finish even when interrupted (a promotion's
/// manifest and audit entry), while the guard lives: an interrupted tool
/// stops its children, then waits (up to 30 s) for the guard to go before
/// it ends, so the run records how it ended.
#[derive(Debug)]
pub struct Finishing(());

impl Finishing {
    /// Registers a record to finish.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Finishing {
        FINISHING.fetch_add(1, Ordering::SeqCst);
        Finishing(())
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        FINISHING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Installs the SIGINT/SIGTERM policy for a tool. Call once from `main`.
///
/// This is the one place outside `main` that ends the process: an
/// interrupted tool must not wait for a blocking read to return.
pub fn install_signal_handlers(tool: &'static str) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        let _ = signal_hook::flag::register(sig, std::sync::Arc::clone(&INTERRUPTED));
    }
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            for pid in CHILDREN
                .lock()
                .map(|c| c.values().copied().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                // SAFETY: kill has no memory preconditions; a stale pid at worst gets a signal it ignores.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            let temps: Vec<PathBuf> = TEMPS
                .lock()
                .map(|t| t.values().cloned().collect())
                .unwrap_or_default();
            for t in temps {
                remove_path(&t);
            }
            let actions = ACTIONS.lock().map(|mut a| std::mem::take(&mut *a));
            for action in actions.unwrap_or_default().into_values() {
                action();
            }
            let since = std::time::Instant::now();
            while FINISHING.load(Ordering::SeqCst) > 0 && since.elapsed() < FINISHING_WAIT {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            crate::output::init(crate::output::Log {
                tool,
                quiet: false,
                verbose: false,
            })
            .always(format!("interrupted by {name}; temporary files removed"));
            std::process::exit(130);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_owners_temporaries_are_swept_and_a_live_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mine = crate::fsutil::temp_name_for(&dir.path().join("copy.sqlite"));
        std::fs::write(&mine, b"mine").unwrap();
        assert_eq!(
            owner_of(&mine.file_name().unwrap().to_string_lossy()),
            Some(owner_tag().as_str())
        );
        // A child that has exited: its pid and start time name a dead owner.
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id();
        let tag = format!("{pid}-{}", start_time(pid).unwrap_or(1));
        child.wait().unwrap();
        let dead = dir.path().join(format!(".copy.sqlite.tmp.{tag}.0000abcd"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("data"), b"plaintext").unwrap();
        let gone = sweep(dir.path());
        assert_eq!(gone, vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(mine.exists(), "a live owner's temporary stays");
        assert!(owner_alive(&owner_tag()));
        assert!(
            !owner_alive(&format!("{}-1", std::process::id())),
            "a reused pid is not the owner"
        );
    }
}
