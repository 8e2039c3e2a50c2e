//! The integration-test harness: runs the real binaries against real
//! databases, each test in its own temporary directory.
//!
//! `Cmd::tool("dbsnap").arg(...).succeeds()` runs a built binary and, when
//! it does not end as expected, panics with the command, its exit status,
//! stdout and stderr. Tools the tests need from the system are looked up
//! with [`require`], which fails (never skips) naming what to install.

pub mod cloud;
pub mod dir;
pub mod duckdb;
pub mod faultproxy;
pub mod mariadb;
pub mod pg;
pub mod race;
pub mod receiver;
pub mod s3;
pub mod scenarios;
pub mod sqlite;
pub mod testdb;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The directory holding the built binaries, fresh.
///
/// `DBSAFE_BIN_DIR`, when set, names binaries built elsewhere (a release
/// build, an installed copy): they are used as they are. Otherwise the
/// binaries are those next to the test executable (`target/debug`), and the
/// first call in a test process runs `cargo build --workspace --bins` into
/// that directory, so `cargo test -p dbsafe-tests` alone never runs binaries
/// older than the sources. A failed build fails the test, with cargo's output.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os("DBSAFE_BIN_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => build_workspace_bins(),
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Builds every binary of the workspace into the profile directory the test
/// executable was built in (`<target>/<profile>/deps/<test>`); returns that directory.
fn build_workspace_bins() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("test executable path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test executable is not in <target>/<profile>/deps")?;
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => "dev".to_string(),
        Some(p) => p.to_string(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--workspace",
        "--bins",
        "--quiet",
        "--profile",
        &profile,
    ])
    .arg("--manifest-path")
    .arg(&manifest)
    .arg("--target-dir")
    .arg(target_dir)
    .stdin(Stdio::null());
    // What cargo sets for the test process describes the test package, not
    // this build; a build script that reads it (ring reads
    // CARGO_MANIFEST_DIR) would be rerun, and everything above it rebuilt,
    // each time the binaries are built from a test and then from outside.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
                "OUT_DIR",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown} to build the binaries under test: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the binaries under test failed ({}): {shown}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(profile_dir.to_path_buf())
}

/// The path of a built dbsafe binary; fails naming what is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} does not exist (DBSAFE_BIN_DIR names a directory without it?)",
        p.display()
    );
    p
}

/// Polls `cond` until it holds; fails naming `what` after `timeout`.
///
/// The one way tests wait for something another process does: never a
/// fixed sleep, which is either too short on a busy machine or wasted time.
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Polls `cond` until it holds (true) or `timeout` passes (false), for
/// callers that say more than [`wait_until`] when it does not.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Waits until the wall clock enters its next second.
///
/// Artifact names, metadata times and recovery targets are stamped to the
/// second: this is what makes two of them differ, at less cost than a
/// fixed sleep of a second.
pub fn next_second() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
    };
    let start = now();
    wait_until("the next second", Duration::from_secs(5), || now() > start);
}

/// Fails the test unless `tool` is on PATH, naming the package that provides it.
pub fn require(tool: &str, package: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| {
        panic!("`{tool}` is required by this test and is not installed: install {package} (scripts/test-deps.sh does)")
    })
}

/// Whether the tests run as root (servers then run as their own users).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Finds `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A command under construction.
pub struct Cmd {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    stdin_set: bool,
    stdout_set: bool,
    display: String,
}

impl Cmd {
    /// A dbsafe tool, built in this workspace.
    pub fn tool(name: &str) -> Cmd {
        let mut c = Cmd::new(bin(name));
        // Tests never read the developer's or the machine's config.
        c.cmd.env("DBSAFE_CONFIG", "/dev/null");
        for v in [
            "DBSAFE_STORE",
            "DBSAFE_ENV",
            "DBSAFE_RECIPIENTS",
            "DBSAFE_RECIPIENTS_FILE",
            "DBSAFE_IDENTITY_FILE",
            "DBSAFE_PASSPHRASE_FILE",
            "DBSAFE_COMPRESS",
            "DBSAFE_AUDIT_LOG",
            "DBSAFE_METRICS_FILE",
            "DBSAFE_PUSHGATEWAY",
        ] {
            c.cmd.env_remove(v);
        }
        c.display = name.to_string();
        c
    }

    /// Any program.
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let display = program.as_ref().to_string_lossy().into_owned();
        Cmd {
            cmd: Command::new(program),
            stdin: None,
            stdin_set: false,
            stdout_set: false,
            display,
        }
    }

    /// A shell pipeline (`bash -o pipefail -c`).
    pub fn sh(script: &str) -> Cmd {
        let mut c = Cmd::new("bash");
        c.cmd.args(["-o", "pipefail", "-c", script]);
        c.display = format!("bash -c {script:?}");
        c
    }

    /// Adds an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Cmd {
        self.display.push(' ');
        self.display.push_str(&a.as_ref().to_string_lossy());
        self.cmd.arg(a);
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Cmd {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(k, v);
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env_remove(k);
        self
    }

    /// Runs in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cmd.current_dir(dir);
        self
    }

    /// Feeds bytes on stdin.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }

    /// Feeds a file on stdin.
    pub fn stdin_file(mut self, path: impl AsRef<Path>) -> Cmd {
        self.cmd
            .stdin(std::fs::File::open(path).expect("stdin file"));
        self.stdin_set = true;
        self
    }

    /// Sends stdout to a file.
    pub fn stdout_file(mut self, path: impl AsRef<Path>) -> Cmd {
        self.cmd
            .stdout(std::fs::File::create(path).expect("stdout file"));
        self.stdout_set = true;
        self
    }

    /// Sends stderr to a file (for [`Cmd::spawn`]; [`Cmd::run`] captures it).
    pub fn stderr_file(mut self, path: impl AsRef<Path>) -> Cmd {
        self.cmd
            .stderr(std::fs::File::create(path).expect("stderr file"));
        self
    }

    /// Starts the command without waiting.
    pub fn spawn(mut self) -> std::process::Child {
        if self.stdin.is_none() && !self.stdin_set {
            self.cmd.stdin(Stdio::null());
        }
        self.cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.display))
    }

    /// Runs to completion.
    pub fn run(mut self) -> Run {
        let mut child = {
            if !self.stdout_set {
                self.cmd.stdout(Stdio::piped());
            }
            self.cmd.stderr(Stdio::piped());
            if self.stdin.is_some() {
                self.cmd.stdin(Stdio::piped());
            } else if !self.stdin_set {
                self.cmd.stdin(Stdio::null());
            }
            self.cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.display))
        };
        if let Some(data) = self.stdin.take() {
            let mut sin = child.stdin.take().expect("stdin");
            std::thread::spawn(move || {
                let _ = sin.write_all(&data);
            });
        }
        let out = child.wait_with_output().expect("wait");
        Run {
            out,
            display: self.display,
        }
    }

    /// Runs and asserts exit 0.
    pub fn succeeds(self) -> Run {
        let r = self.run();
        if !r.out.status.success() {
            r.fail("to succeed");
        }
        r
    }

    /// Runs and asserts it failed, whatever the exit code.
    pub fn fails(self) -> Run {
        let r = self.run();
        if r.out.status.success() {
            r.fail("to fail");
        }
        r
    }

    /// Runs and asserts the exit code.
    pub fn fails_with_code(self, code: i32) -> Run {
        let r = self.run();
        if r.out.status.code() != Some(code) {
            r.fail(&format!("to exit with {code}"));
        }
        r
    }

    /// Runs and asserts the exit code and that stderr contains `message`.
    pub fn fails_with(self, code: i32, message: &str) -> Run {
        self.fails_with_code(code).stderr_has(message)
    }
}

/// A finished command.
pub struct Run {
    /// What it printed and how it ended.
    pub out: Output,
    display: String,
}

impl Run {
    fn fail(&self, expected: &str) -> ! {
        panic!(
            "expected `{}` {expected}, it ended with {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.display,
            self.out.status,
            String::from_utf8_lossy(&self.out.stdout),
            String::from_utf8_lossy(&self.out.stderr)
        )
    }
    /// stdout as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    /// stderr as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of `{}` is not JSON ({e}):\n{}",
                self.display,
                self.stdout()
            )
        })
    }
    /// Asserts stderr contains `s`.
    pub fn stderr_has(self, s: &str) -> Run {
        assert!(
            self.stderr().contains(s),
            "stderr of `{}` lacks {s:?}:\n{}",
            self.display,
            self.stderr()
        );
        self
    }
}

/// A new temporary directory `dbsafe-WHAT-…`, removed on drop.
pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dbsafe-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

/// A test's own temporary directory and age key.
pub struct Scene {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Default for Scene {
    fn default() -> Self {
        Self::new()
    }
}

impl Scene {
    /// A fresh directory.
    pub fn new() -> Scene {
        Scene {
            dir: temp_dir("test"),
        }
    }
    /// A path inside the directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// Generates an age identity with the real `age-keygen`; returns (identity file, public key).
    pub fn age_key(&self, name: &str) -> (PathBuf, String) {
        require("age-keygen", "the Debian package age");
        let path = self.path(name);
        let r = Cmd::new("age-keygen").arg("-o").arg(&path).succeeds();
        let public = r
            .stderr()
            .lines()
            .find_map(|l| l.strip_prefix("Public key: ").map(str::to_string))
            .expect("age-keygen prints the public key");
        (path, public)
    }
    /// Writes a text file.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, text).expect("write");
        p
    }
    /// Creates a directory.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }
    /// Writes an executable script.
    pub fn script(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        executable(&p, text);
        p
    }
}

/// The lines of a client's output (a row each), owned.
pub fn lines_of(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

/// What the symbolic link `link` points to, as text.
pub fn link_target(link: &Path) -> String {
    std::fs::read_link(link)
        .unwrap_or_else(|e| panic!("{} is not a link: {e}", link.display()))
        .to_string_lossy()
        .into_owned()
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Final artifacts (not sidecars, not temporaries, not links) in a store's backups.
pub fn artifacts(store: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(store.join("backups"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| is_artifact(&p.file_name().unwrap().to_string_lossy()));
    v.sort();
    v
}

/// Whether a name (or key) under `backups/` is an artifact: not a
/// temporary, a sidecar (`.sha256`, `.json`) or a series' `_latest` pointer.
pub fn is_artifact(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    !base.starts_with('.')
        && !base.ends_with(".sha256")
        && !base.ends_with(".json")
        && !base.contains("_latest.")
}

/// The file name of the one artifact in a store; fails unless there is
/// exactly one.
pub fn only_artifact(store: &Path) -> String {
    let found = artifacts(store);
    assert_eq!(found.len(), 1, "expected one artifact: {found:?}");
    found[0]
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// Every file under `dir`, at any depth, as paths relative to it, sorted
/// (none when `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every file under a directory whose name marks it as a temporary.
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| f.rsplit('/').next().unwrap_or(f).contains(".tmp."))
        .map(|f| dir.join(f))
        .collect()
}

/// A tmpfs mounted (as root) at a test's directory with mount `options`
/// (`size=1m,nr_inodes=64,ro`, ...): a small disk, a read-only one.
/// Unmounted on drop.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts it at `dir` (created); fails the test when mounting is not allowed.
    pub fn mount(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        Cmd::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .succeeds();
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A seeded sequence of kill delays; the seed is printed so a failure can be replayed
/// (`DBSAFE_TEST_SEED=N`).
pub struct Delays(pub u64);

impl Delays {
    /// Seeded from `DBSAFE_TEST_SEED`, else the clock.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Delays {
        let seed = std::env::var("DBSAFE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("kill delays seeded with DBSAFE_TEST_SEED={seed}");
        Delays(seed)
    }

    /// The next delay, up to `max_ms`.
    pub fn next(&mut self, max_ms: u64) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_millis((self.0 >> 33) % max_ms)
    }
}

/// SIGKILLs `child` after `d`, and reaps it.
pub fn kill_after(mut child: std::process::Child, d: Duration) {
    std::thread::sleep(d);
    kill_and_reap(&mut child);
}

/// How `child` ended, within `timeout`; one still running then is killed
/// and fails the test, saying `what` it was.
pub fn ends_within(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    if !poll_until(timeout, || child.try_wait().unwrap().is_some()) {
        kill_and_reap(child);
        panic!("{what} did not end within {timeout:?}");
    }
    child.wait().unwrap()
}

/// SIGKILLs `child` and reaps it; one that has ended already is only reaped.
pub fn kill_and_reap(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// An artifact's `.meta.json` sidecar, parsed.
pub fn meta_of(artifact: &Path) -> serde_json::Value {
    let path = format!("{}.meta.json", artifact.display());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).expect("metadata is JSON")
}

/// Rewrites an artifact's `.meta.json` sidecar with `change` applied.
pub fn edit_meta(artifact: &Path, change: impl FnOnce(&mut serde_json::Value)) {
    let mut meta = meta_of(artifact);
    change(&mut meta);
    let path = format!("{}.meta.json", artifact.display());
    std::fs::write(&path, serde_json::to_vec(&meta).expect("metadata"))
        .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
}

/// Asserts that the JSON object `record` has each `(field, value)` of
/// `expected`, naming the field and showing the record when one differs.
pub fn assert_fields(record: &serde_json::Value, expected: &[(&str, &str)]) {
    for (field, value) in expected {
        assert_eq!(record[*field], *value, "{field} in {record}");
    }
}

/// The tables and row counts a metadata record lists, in its order.
pub fn meta_counts(meta: &serde_json::Value) -> Vec<(String, u64)> {
    meta["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name").to_string(),
                t["rows"].as_u64().expect("rows"),
            )
        })
        .collect()
}

/// The row count a metadata record gives `table`.
pub fn rows_of(meta: &serde_json::Value, table: &str) -> u64 {
    meta_counts(meta)
        .into_iter()
        .find(|(t, _)| t == table)
        .unwrap_or_else(|| panic!("{table} is not in the metadata"))
        .1
}

/// The one artifact in a store whose name starts with `prefix`.
pub fn store_artifact(store: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = artifacts(store)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {prefix}* artifact in {}: {found:?}",
        store.display()
    );
    found.into_iter().next().expect("one")
}

/// The ids of the backups a `dbprune --json` plan deletes (does not keep), in its order.
pub fn pruned_ids(plan: &serde_json::Value) -> Vec<String> {
    plan["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter(|b| b["keep"] == false)
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect()
}

/// The entries of a store's audit log (none when there is no log).
pub fn audit_entries(store: &Path) -> Vec<serde_json::Value> {
    audit_log_entries(&store.join("audit.log"))
}

/// The entries of the audit log file at `log` (none when there is none).
pub fn audit_log_entries(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

/// The last entry of the audit log file at `log`: (action, result), and the entry.
pub fn last_audit_entry(log: &Path) -> (String, String, serde_json::Value) {
    let e = audit_log_entries(log)
        .pop()
        .unwrap_or_else(|| panic!("no entry in {}", log.display()));
    let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
    (field("action"), field("result"), e)
}

/// Every running process's argv (NULs shown as spaces) that contains
/// `needle`, but the one whose raw argv is `except` (or a beginning of it:
/// the kernel can show a process's argv cut short while it starts).
pub fn argv_containing(needle: &str, except: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let argv = String::from_utf8_lossy(&raw).replace('\0', " ");
            if !except.starts_with(&raw) && argv.contains(needle) {
                found.push(argv);
            }
        }
    }
    found
}

/// Whether process `pid` has `path` open.
pub fn has_open(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p == path))
        })
        .unwrap_or(false)
}

/// Writes an executable script.
pub fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A process holding an `flock` on `lock` the way a dbsafe tool does: the
/// lock file names the holder's pid. Killed (and so released) on drop.
pub struct LockHolder {
    child: std::process::Child,
}

impl LockHolder {
    /// Takes the lock and returns once it is held.
    pub fn take(lock: &Path) -> LockHolder {
        require("flock", "the Debian package util-linux");
        std::fs::create_dir_all(lock.parent().expect("lock dir")).expect("lock dir");
        // The shell's pid stays the holder's through `exec sleep`.
        let child = Cmd::new("sh")
            .arg("-c")
            .arg("exec 9>>\"$1\" && flock 9 && echo \"$$ testhost\" > \"$1\" && exec sleep 600")
            .arg("holder")
            .arg(lock)
            .spawn();
        let pid = child.id().to_string();
        wait_until(
            "the lock holder to take the lock",
            Duration::from_secs(30),
            || {
                std::fs::read_to_string(lock)
                    .is_ok_and(|t| t.split_whitespace().next() == Some(&pid))
            },
        );
        LockHolder { child }
    }

    /// The holder's pid, as the lock file records it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the holder with SIGKILL, which releases the lock.
    pub fn kill(mut self) {
        kill_and_reap(&mut self.child);
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// `dbsnap SOURCE -o OUT --no-encrypt`: a plain snapshot of `source` into a
/// file (an encrypted one is `Cmd::tool("dbsnap")` with its key).
pub fn snap_to_file(source: impl AsRef<OsStr>, out: impl AsRef<OsStr>) -> Cmd {
    Cmd::tool("dbsnap")
        .arg(source)
        .arg("-o")
        .arg(out)
        .arg("--no-encrypt")
}

/// `dbrestore --store STORE --latest --env ENV --yes -i KEY --target TARGET`:
/// the newest backup of an environment restored over a target.
pub fn restore_latest(
    store: impl AsRef<OsStr>,
    env: &str,
    key: impl AsRef<OsStr>,
    target: impl AsRef<OsStr>,
) -> Cmd {
    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(store)
        .args(["--latest", "--env", env, "--yes", "-i"])
        .arg(key)
        .arg("--target")
        .arg(target)
}

/// `dbrestore --store STORE --target TARGET`: a restore of the backup of a
/// store that the caller's flags select (`--latest`, `--env`, ...).
pub fn restore_from_store(store: impl AsRef<OsStr>, target: impl AsRef<OsStr>) -> Cmd {
    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(store)
        .arg("--target")
        .arg(target)
}

/// `dbrestore ARTIFACT --target TARGET`: a restore of an artifact file (or `-`).
pub fn restore_file(artifact: impl AsRef<OsStr>, target: impl AsRef<OsStr>) -> Cmd {
    Cmd::tool("dbrestore")
        .arg(artifact)
        .arg("--target")
        .arg(target)
}

/// `dbrestore ARTIFACT --target TARGET --table TABLE --yes --no-safety-backup`:
/// a restore of one table over an existing target.
pub fn restore_table_over(
    artifact: impl AsRef<OsStr>,
    target: impl AsRef<OsStr>,
    table: &str,
) -> Cmd {
    restore_file(artifact, target).args(["--table", table, "--yes", "--no-safety-backup"])
}

/// Runs `dbsnap SOURCE -o OUT` (`out` in the scene's directory), which must
/// fail with exit 1 and `message`, leaving neither `out` nor a temporary.
pub fn snap_fails_leaving_nothing(
    s: &Scene,
    source: impl AsRef<OsStr>,
    out: &str,
    message: &str,
) -> Run {
    let out = s.path(out);
    let r = snap_to_file(source, &out).fails_with(1, message);
    assert!(!out.exists(), "a failed snapshot left {}", out.display());
    assert_eq!(temporaries(s.dir.path()), Vec::<PathBuf>::new());
    r
}

/// `dbrestore ARTIFACT -i KEY --target TARGET`: a restore of an encrypted artifact file (or `-`).
pub fn restore_with(
    artifact: impl AsRef<OsStr>,
    key: impl AsRef<OsStr>,
    target: impl AsRef<OsStr>,
) -> Cmd {
    Cmd::tool("dbrestore")
        .arg(artifact)
        .arg("-i")
        .arg(key)
        .arg("--target")
        .arg(target)
}

/// `dbverify --level full --json ARTIFACT`: full verification of an
/// unencrypted artifact, reported as JSON.
pub fn verify_full_json(artifact: impl AsRef<OsStr>) -> Cmd {
    Cmd::tool("dbverify")
        .args(["--level", "full", "--json"])
        .arg(artifact)
}

/// `dbverify ARTIFACT -i KEY`: verification of an encrypted artifact file (or `-`).
pub fn verify_with(artifact: impl AsRef<OsStr>, key: impl AsRef<OsStr>) -> Cmd {
    Cmd::tool("dbverify").arg(artifact).arg("-i").arg(key)
}

/// A number that differs from run to run and process to process, for
/// names and credentials that must not collide.
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// `dbsnap SOURCE -o OUT --no-encrypt --compress none`: the database's
/// own format (a SQLite or DuckDB file, a dump, a tar) in a file, as it is.
pub fn snap_raw(source: impl AsRef<OsStr>, out: impl AsRef<OsStr>) -> Cmd {
    snap_to_file(source, out).args(["--compress", "none"])
}

/// `dbsnap SOURCE --to STORE --no-encrypt`: a plain snapshot of `source`
/// into a store (an encrypted one is `Cmd::tool("dbsnap")` with its key).
pub fn snap_to_store(source: impl AsRef<OsStr>, store: impl AsRef<OsStr>) -> Cmd {
    Cmd::tool("dbsnap")
        .arg(source)
        .arg("--to")
        .arg(store)
        .arg("--no-encrypt")
}

/// `dbsnap SOURCE --to STORE -r RECIPIENT`: a snapshot into a store,
/// encrypted to an age recipient.
pub fn snap_to_store_for(
    source: impl AsRef<OsStr>,
    store: impl AsRef<OsStr>,
    recipient: &str,
) -> Cmd {
    Cmd::tool("dbsnap")
        .arg(source)
        .arg("--to")
        .arg(store)
        .args(["-r", recipient])
}

/// `dbsnap SOURCE -o OUT -r RECIPIENT`: a snapshot into a file, encrypted
/// to an age recipient.
pub fn snap_to_file_for(source: impl AsRef<OsStr>, out: impl AsRef<OsStr>, recipient: &str) -> Cmd {
    Cmd::tool("dbsnap")
        .arg(source)
        .arg("-o")
        .arg(out)
        .args(["-r", recipient])
}

/// `dbprune --store STORE`, to be told what to keep.
pub fn prune_store(store: impl AsRef<OsStr>) -> Cmd {
    Cmd::tool("dbprune").arg("--store").arg(store)
}

/// `walship push PATH FILE --to STORE --no-encrypt`: a plain push.
pub fn push_wal(path: impl AsRef<OsStr>, file: &str, store: impl AsRef<OsStr>) -> Cmd {
    push_wal_keyed(path, file, store, None)
}

/// `walship push PATH FILE --to STORE`, encrypted to `public` (`-r`), or
/// plain (`--no-encrypt`) without it.
pub fn push_wal_keyed(
    path: impl AsRef<OsStr>,
    file: &str,
    store: impl AsRef<OsStr>,
    public: Option<&str>,
) -> Cmd {
    let push = Cmd::tool("walship")
        .arg("push")
        .arg(path)
        .arg(file)
        .arg("--to")
        .arg(store);
    match public {
        Some(p) => push.args(["-r", p]),
        None => push.arg("--no-encrypt"),
    }
}

/// `walship status --from STORE`: the state of a WAL archive.
pub fn wal_status(store: impl AsRef<OsStr>) -> Cmd {
    Cmd::tool("walship").args(["status", "--from"]).arg(store)
}

/// `walship fetch FILE PATH --from STORE`.
pub fn fetch_wal(file: &str, path: impl AsRef<OsStr>, store: impl AsRef<OsStr>) -> Cmd {
    Cmd::tool("walship")
        .arg("fetch")
        .arg(file)
        .arg(path)
        .arg("--from")
        .arg(store)
}

/// Fetches WAL file `name` from `store` with `walship` (a walship command
/// configured for the store) into `back`, and checks it holds `expected`'s bytes.
pub fn assert_wal_fetches_as(walship: Cmd, name: &str, store: &str, back: &Path, expected: &Path) {
    walship
        .args(["fetch", name])
        .arg(back)
        .args(["--from", store])
        .succeeds();
    assert_eq!(
        std::fs::read(back).expect("fetched"),
        std::fs::read(expected).expect("pushed"),
        "{name} fetched from {store}"
    );
}

/// `systemd-analyze verify` of `units` (names or paths, from `dir`): passes
/// only when it says nothing at all.
pub fn systemd_verify(units: &[String], dir: &Path) {
    let analyze = require("systemd-analyze", "the Debian package systemd");
    let r = Cmd::new(analyze)
        .args(["verify", "--man=no"])
        .args(units)
        .current_dir(dir)
        .succeeds();
    assert!(
        r.stdout().trim().is_empty() && r.stderr().trim().is_empty(),
        "systemd-analyze complained:\n{}{}",
        r.stdout(),
        r.stderr()
    );
}
