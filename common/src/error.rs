//! Errors that carry their exit code.
//!
//! Every tool exits with one of the codes of the table below (SPEC §1). Library
//! code returns an [`Error`] whose [`ExitCode`] says which; only a tool's
//! `main` turns it into a process exit.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the operation failed, or a check found a problem |
//! | 2 | usage or configuration error |
//! | 3 | not found |
//! | 4 | refused for safety |
//! | 130 | interrupted (SIGINT/SIGTERM); temporary files removed |

use std::fmt;
use std::io;

/// The exit codes shared by all the tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 0: success.
    Success,
    /// 1: the operation failed, or a check found a problem.
    Failure,
    /// 2: usage or configuration error.
    Usage,
    /// 3: not found (no such backup, no such WAL segment).
    NotFound,
    /// 4: refused for safety.
    Refused,
    /// 130: interrupted by SIGINT or SIGTERM.
    Interrupted,
}

impl ExitCode {
    /// The numeric process exit status.
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Failure => 1,
            ExitCode::Usage => 2,
            ExitCode::NotFound => 3,
            ExitCode::Refused => 4,
            ExitCode::Interrupted => 130,
        }
    }
}

/// An error with the exit code it maps to and an optional hint on what to do next.
#[derive(Debug)]
pub struct Error {
    /// The exit code this error ends the process with.
    pub code: ExitCode,
    /// What failed, and on what.
    pub message: String,
    /// What to do next, when there is something useful to say.
    pub hint: Option<String>,
}

/// The result type of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with an explicit exit code.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            hint: None,
        }
    }
    /// Exit 1: the operation failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Failure, message)
    }
    /// Exit 2: usage or configuration error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Usage, message)
    }
    /// Exit 3: not found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ExitCode::NotFound, message)
    }
    /// Exit 4: refused for safety.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Refused, message)
    }
    /// Exit 130: interrupted.
    pub fn interrupted() -> Self {
        Self::new(ExitCode::Interrupted, "interrupted")
    }
    /// Adds a hint on what to do next.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// Prefixes the message with context, keeping the code and hint.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        // An interrupted pipeline surfaces as an io::Error wrapping our own Error.
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            if let Ok(inner) = e.into_inner().expect("checked").downcast::<Error>() {
                return *inner;
            }
            return Error::failed("i/o error");
        }
        match e.kind() {
            io::ErrorKind::NotFound => Error::not_found(e.to_string()),
            _ => Error::failed(e.to_string()),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        io::Error::other(e)
    }
}

/// Adds context to any error convertible into [`Error`].
pub trait Context<T> {
    /// Prefixes the error message with `what`.
    fn context(self, what: impl fmt::Display) -> Result<T>;
    /// Like [`Context::context`], computed only on error.
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// Whether an io error is a broken pipe: the reader went away, which for a
/// tool writing to stdout ends the work without an error message (exit 1,
/// since the product did not reach its reader whole).
pub fn is_broken_pipe(e: &Error) -> bool {
    e.message.contains("Broken pipe")
}
