//! Client tools run as child processes: found on PATH or named with their
//! package, stderr collected on a thread, stopped on interruption.

use crate::cleanup::ChildGuard;
use crate::error::{Error, Result, ServerCode};
use std::io::{self, Read, Write};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

/// The error for a client tool that is not installed.
pub fn missing_tool(program: &str, package: &str) -> Error {
    Error::usage(format!("{program} is not installed (not found on PATH)"))
        .hint(format!("install {package}, or put {program} on PATH"))
}

/// The first of `programs` found on PATH.
pub fn find(programs: &[&'static str]) -> Option<&'static str> {
    programs.iter().copied().find(|p| which::which(p).is_ok())
}

/// The first of `programs` on PATH, or the error naming `package`.
pub fn require(programs: &[&'static str], package: &str) -> Result<&'static str> {
    find(programs).ok_or_else(|| missing_tool(programs[0], package))
}

/// Reads a database server's error code off a client tool's stderr.
pub type Classify = fn(&str) -> Option<ServerCode>;

/// The error of a client tool that ended with `status`: a server error when
/// `classify` finds the server's code in its stderr, else a child error
/// keeping the exit status.
pub fn failure(
    status: Option<i32>,
    message: String,
    stderr: &str,
    classify: Option<Classify>,
) -> Error {
    match classify.and_then(|f| f(stderr)) {
        Some(code) => Error::server(code, message),
        None => Error::child(status, message),
    }
}

/// The buffer asked for the pipes a child streams through.
const PIPE_SIZE: usize = 1 << 20;

/// A running client tool, stopped on interruption while it lives.
pub struct Child {
    program: &'static str,
    /// The process.
    pub child: std::process::Child,
    stderr: Option<JoinHandle<String>>,
    classify: Option<Classify>,
    _guard: ChildGuard,
}

impl Child {
    /// Starts `cmd` (stdin, stdout and stderr as the caller set them;
    /// stderr should be piped so errors can be reported).
    pub fn spawn(program: &'static str, package: &str, mut cmd: Command) -> Result<Child> {
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => missing_tool(program, package),
            _ => Error::io(format!("cannot run {program}"), e),
        })?;
        let guard = ChildGuard::new(child.id());
        // A dump or restore streams through these pipes: a larger buffer
        // than the kernel's 64 KiB lets each side run longer before the
        // other must be woken (best effort: the kernel may refuse).
        if let Some(out) = &child.stdout {
            let _ = rustix::pipe::fcntl_setpipe_size(out, PIPE_SIZE);
        }
        if let Some(input) = &child.stdin {
            let _ = rustix::pipe::fcntl_setpipe_size(input, PIPE_SIZE);
        }
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = e.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).trim().to_string()
            })
        });
        Ok(Child {
            program,
            child,
            stderr,
            classify: None,
            _guard: guard,
        })
    }

    /// Reads the server's error code off the child's stderr when it fails.
    pub fn classify(mut self, classify: Option<Classify>) -> Child {
        self.classify = classify;
        self
    }

    /// Everything the child wrote on stderr (waits for it to close stderr).
    pub fn stderr_text(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Waits; a non-zero exit is an error carrying the child's stderr and
    /// exit status (or the server's code, see [`Child::classify`]).
    pub fn finish(mut self, what: &str) -> Result<()> {
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("waiting for {}", self.program), e))?;
        let stderr = self.stderr_text();
        if status.success() {
            return Ok(());
        }
        let detail = if stderr.is_empty() {
            format!("{} ended with {status}", self.program)
        } else {
            brief(&stderr)
        };
        Err(failure(
            status.code(),
            format!("{what}: {detail}"),
            &stderr,
            self.classify,
        ))
    }

    /// Stops the child after a failure on our side, so it commits nothing.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.stderr_text();
    }
}

/// Runs `cmd` with `input` on its stdin and returns its stdout; a non-zero
/// exit is an error carrying its stderr, classified by `classify`.
pub fn run(
    program: &'static str,
    package: &str,
    mut cmd: Command,
    input: &[u8],
    what: &str,
    classify: Option<Classify>,
) -> Result<String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Child::spawn(program, package, cmd)?.classify(classify);
    let mut stdin = child.child.stdin.take().expect("piped stdin");
    let mut stdout = child.child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).map(|_| buf)
    });
    // A child that fails early closes its stdin; its stderr says why.
    let _ = stdin.write_all(input);
    drop(stdin);
    let out = reader
        .join()
        .map_err(|_| Error::failed(format!("reading {program}'s output")))?
        .map_err(|e| Error::io(format!("reading {program}'s output"), e))?;
    child.finish(what)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl Child {
    /// Feeds `input` whole into the child's stdin (piped), then closes it.
    /// A read of the input that fails kills the child before it sees an
    /// end: a restore commits nothing of an input cut short.
    pub fn fed(mut self, input: &mut dyn Read) -> Result<Child> {
        let mut stdin = self.child.stdin.take().expect("piped stdin");
        let fed = feed(input, &mut stdin);
        drop(stdin);
        match fed {
            Ok(()) => Ok(self),
            Err(e) => {
                self.kill();
                Err(e)
            }
        }
    }
}

/// Copies `input` into a child's stdin, telling our read errors (the
/// artifact) from its write errors (the child died: its stderr says why).
pub fn feed(input: &mut dyn Read, stdin: &mut dyn Write) -> Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from(e)),
        };
        if stdin.write_all(&buf[..n]).is_err() {
            // The child stopped reading; `finish` reports its error.
            return Ok(());
        }
    }
}

/// A child's stderr for a message: its first lines, each cut short. A
/// client may echo the statement that failed, and a dump's statement is its
/// data: rows must not reach messages, the audit log or hooks whole.
pub fn brief(stderr: &str) -> String {
    const LINES: usize = 12;
    const WIDTH: usize = 240;
    let lines: Vec<&str> = stderr.trim().lines().collect();
    let mut out: Vec<String> = lines
        .iter()
        .take(LINES)
        .map(|l| match l.char_indices().nth(WIDTH) {
            Some((cut, _)) => format!("{}...", &l[..cut]),
            None => l.to_string(),
        })
        .collect();
    if lines.len() > LINES {
        out.push(format!("({} more lines)", lines.len() - LINES));
    }
    out.join("\n")
}
