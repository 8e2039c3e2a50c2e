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
/// Set inside the signal handler itself, so a thread that sees its child
/// die of our SIGTERM already sees the flag.
static INTERRUPTED: std::sync::LazyLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::LazyLock::new(Default::default);

/// Whether SIGINT or SIGTERM arrived: the work that failed meanwhile failed
/// because its children were stopped, and the exit status is 130.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
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

/// Runs an undo action when the tool is interrupted, while the guard lives:
/// for temporaries that are not local paths, such as an S3 multipart upload
/// to abort.
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
