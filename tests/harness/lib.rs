//! The integration-test harness: runs the real binaries against real
//! databases, each test in its own temporary directory.
//!
//! `Cmd::tool("dbsnap").arg(...).succeeds()` runs a built binary and, when
//! it does not end as expected, panics with the command, its exit status,
//! stdout and stderr. Tools the tests need from the system are looked up
//! with [`require`], which fails (never skips) naming what to install.

pub mod duckdb;
pub mod faultproxy;
pub mod mariadb;
pub mod pg;
pub mod s3;
pub mod sqlite;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The directory holding the built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/test-hash -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// The path of a built dbsafe binary; fails with a hint when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` (make test does) before the tests",
        p.display()
    );
    p
}

/// Fails the test unless `tool` is on PATH, naming the package that provides it.
pub fn require(tool: &str, package: &str) -> PathBuf {
    which(tool).unwrap_or_else(|| {
        panic!("`{tool}` is required by this test and is not installed: install {package} (scripts/test-deps.sh does)")
    })
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

    /// Runs and asserts the exit code.
    pub fn fails_with_code(self, code: i32) -> Run {
        let r = self.run();
        if r.out.status.code() != Some(code) {
            r.fail(&format!("to exit with {code}"));
        }
        r
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
            dir: tempfile::Builder::new()
                .prefix("dbsafe-test-")
                .tempdir()
                .expect("tempdir"),
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
    v.retain(|p| {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        !n.starts_with('.')
            && !n.ends_with(".sha256")
            && !n.ends_with(".json")
            && !n.contains("_latest.")
    });
    v.sort();
    v
}

/// Every file under a directory whose name marks it as a temporary.
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(temporaries(&p));
        } else if e.file_name().to_string_lossy().contains(".tmp.") {
            out.push(p);
        }
    }
    out
}
