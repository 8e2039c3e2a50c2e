//! Errors that know what kind of failure they are.
//!
//! Every tool exits with one of the codes of the table below (SPEC §1).
//! Library code returns an [`Error`] whose [`Kind`] says what failed (a
//! usage error, a missing object, an I/O error with its `io::ErrorKind`, a
//! child process with its exit status, a database server error with its
//! SQLSTATE or MySQL error number); the exit code derives from the kind, and
//! only a tool's `main` turns it into a process exit. Callers decide on the
//! kind, never on the message text, which may be in any language.
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
    /// 141: the reader of stdout went away (as a tool SIGPIPE ends); nothing is printed.
    ReaderGone,
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
            ExitCode::ReaderGone => 141,
        }
    }
}

/// The code a database server gave an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCode {
    /// A PostgreSQL SQLSTATE, e.g. `42P01`.
    Sqlstate(String),
    /// A MySQL/MariaDB error number, e.g. 1049.
    Mysql(u16),
}

impl ServerCode {
    /// Whether the server said the object (database, table, role) does not exist.
    pub fn is_undefined_object(&self) -> bool {
        match self {
            // undefined_table, undefined_object, invalid_catalog_name,
            // undefined_function, undefined_schema (3F000).
            ServerCode::Sqlstate(s) => {
                matches!(s.as_str(), "42P01" | "42704" | "3D000" | "42883" | "3F000")
            }
            // ER_BAD_DB_ERROR, ER_NO_SUCH_TABLE, ER_BAD_TABLE_ERROR.
            ServerCode::Mysql(n) => matches!(n, 1049 | 1146 | 1051),
        }
    }
    /// Whether the server refused the connection or login (class 08, 28).
    pub fn is_connection(&self) -> bool {
        match self {
            ServerCode::Sqlstate(s) => s.starts_with("08") || s.starts_with("28"),
            // CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR, ER_ACCESS_DENIED_ERROR.
            ServerCode::Mysql(n) => matches!(n, 2002 | 2003 | 2005 | 2013 | 1045),
        }
    }
}

impl fmt::Display for ServerCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerCode::Sqlstate(s) => write!(f, "SQLSTATE {s}"),
            ServerCode::Mysql(n) => write!(f, "error {n}"),
        }
    }
}

/// What kind of failure an error is; the exit code derives from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The operation failed (exit 1).
    Failed,
    /// Usage or configuration error (exit 2).
    Usage,
    /// Not found (exit 3).
    NotFound,
    /// Refused for safety (exit 4).
    Refused,
    /// Interrupted by a signal (exit 130).
    Interrupted,
    /// The reader of stdout went away (exit 141, quietly).
    ReaderGone,
    /// An I/O error of this kind (exit 3 for `NotFound`, else 1).
    Io(io::ErrorKind),
    /// A child process ended with this exit status (`None`: killed by a signal).
    Child(Option<i32>),
    /// A database server error with its code (exit 1).
    Server(ServerCode),
    /// Another process holds what this one needs (a lock, an open database
    /// file): exit 4, refused rather than waited for.
    Busy,
    /// What a check needs is missing or out of reach: no key, a key that
    /// does not open the artifact, a scratch server that does not answer.
    /// The artifact could not be judged (exit 2): never a finding about it.
    Unavailable,
    /// What stands under a name already differs from what was to be written
    /// there, and is kept (a WAL file archived with other bytes): no retry
    /// changes that (exit 1).
    Conflict,
}

impl Kind {
    /// The exit code of this kind.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Kind::Failed | Kind::Child(_) | Kind::Conflict => ExitCode::Failure,
            Kind::Usage | Kind::Unavailable => ExitCode::Usage,
            Kind::NotFound | Kind::Io(io::ErrorKind::NotFound) => ExitCode::NotFound,
            // A server's "does not exist" in the middle of an operation is
            // the operation failing; "no such backup" is said explicitly.
            Kind::Io(_) | Kind::Server(_) => ExitCode::Failure,
            Kind::Refused | Kind::Busy => ExitCode::Refused,
            Kind::Interrupted => ExitCode::Interrupted,
            Kind::ReaderGone => ExitCode::ReaderGone,
        }
    }
}

impl From<ExitCode> for Kind {
    fn from(code: ExitCode) -> Kind {
        match code {
            ExitCode::Success | ExitCode::Failure => Kind::Failed,
            ExitCode::Usage => Kind::Usage,
            ExitCode::NotFound => Kind::NotFound,
            ExitCode::Refused => Kind::Refused,
            ExitCode::Interrupted => Kind::Interrupted,
            ExitCode::ReaderGone => Kind::ReaderGone,
        }
    }
}

/// An error: its kind, what failed and on what, an optional hint on what to
/// do next, and the lower-level error it came from.
#[derive(Debug)]
pub struct Error {
    /// What kind of failure this is.
    pub kind: Kind,
    /// What failed, and on what.
    pub message: String,
    /// What to do next, when there is something useful to say.
    pub hint: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// `Error::$name(message)`: an error of kind `$kind` (a kind with no data).
macro_rules! kind_constructors {
    ($($(#[$doc:meta])* $name:ident => $kind:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Self {
                Self::of(Kind::$kind, message)
            }
        )*
    };
}

/// The result type of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of an explicit kind.
    pub fn of(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            source: None,
        }
    }
    /// An error with an explicit exit code.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self::of(code.into(), message)
    }
    kind_constructors! {
        /// Exit 1: the operation failed.
        failed => Failed;
        /// Exit 2: usage or configuration error.
        usage => Usage;
        /// Exit 3: not found.
        not_found => NotFound;
        /// Exit 4: refused for safety.
        refused => Refused;
        /// Exit 4: another process holds what this one needs.
        busy => Busy;
        /// Exit 2: what a check needs is missing or out of reach.
        unavailable => Unavailable;
    }
    /// Exit 130: interrupted.
    pub fn interrupted() -> Self {
        Self::of(Kind::Interrupted, "interrupted")
    }
    /// An I/O error while doing `what`, keeping its `io::ErrorKind` and source.
    pub fn io(what: impl fmt::Display, e: io::Error) -> Self {
        Error::from(e).context(what)
    }
    /// A child process that ended with `status` (`None`: killed by a signal).
    pub fn child(status: Option<i32>, message: impl Into<String>) -> Self {
        Self::of(Kind::Child(status), message)
    }
    /// A database server error with its code.
    pub fn server(code: ServerCode, message: impl Into<String>) -> Self {
        Self::of(Kind::Server(code), message)
    }
    /// The exit code this error ends the process with.
    pub fn code(&self) -> ExitCode {
        self.kind.exit_code()
    }
    /// The server's error code, when a database server said what failed.
    pub fn server_code(&self) -> Option<&ServerCode> {
        match &self.kind {
            Kind::Server(c) => Some(c),
            _ => None,
        }
    }
    /// Whether a database server said the object does not exist.
    pub fn is_undefined_object(&self) -> bool {
        self.server_code()
            .is_some_and(ServerCode::is_undefined_object)
    }
    /// Whether this is a broken pipe: the reader of our output went away.
    pub fn is_broken_pipe(&self) -> bool {
        self.kind == Kind::Io(io::ErrorKind::BrokenPipe)
    }
    /// Adds a hint on what to do next.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// Keeps the lower-level error this one came from.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// Prefixes the message with context, keeping the kind, hint and source.
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        // An interrupted pipeline surfaces as an io::Error wrapping our own Error.
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return match e.into_inner().map(|inner| inner.downcast::<Error>()) {
                Some(Ok(inner)) => *inner,
                _ => Error::failed("i/o error"),
            };
        }
        Error {
            kind: Kind::Io(e.kind()),
            message: e.to_string(),
            hint: None,
            source: Some(Box::new(e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_derive_from_the_kind() {
        let io_missing = Error::from(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(io_missing.code(), ExitCode::NotFound);
        let pipe = Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
        assert_eq!(pipe.code(), ExitCode::Failure);
        let missing_table = Error::server(ServerCode::Sqlstate("42P01".into()), "relación");
        assert!(missing_table.is_undefined_object());
        assert_eq!(missing_table.code(), ExitCode::Failure);
        let denied = Error::server(ServerCode::Mysql(1045), "Zugriff verweigert");
        assert!(!denied.is_undefined_object());
        assert_eq!(denied.code(), ExitCode::Failure);
        assert_eq!(Error::busy("held").code(), ExitCode::Refused);
        assert_eq!(Error::child(Some(2), "pg_dump").code(), ExitCode::Failure);
    }

    #[test]
    fn io_errors_keep_their_source_through_context() {
        let e = Error::io("reading x", io::Error::other("disk on fire"));
        assert_eq!(e.message, "reading x: disk on fire");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn an_error_wrapped_in_io_comes_back_whole() {
        let inner = Error::refused("no").hint("h");
        let back = Error::from(io::Error::from(inner));
        assert_eq!(back.code(), ExitCode::Refused);
        assert_eq!(back.hint.as_deref(), Some("h"));
    }
}
