//! The one place library and tools print diagnostics.
//!
//! A tool sets its name and `-q`/`-v` once ([`init`], done by
//! [`crate::cli::CommonArgs::log`]); library code that has something to say
//! that is not an error (a warning, a note on a fallback) calls [`warn`] or
//! [`info`] here rather than printing, so every line carries the tool's
//! prefix and `-q` silences what it should.

use std::io::Write;
use std::sync::OnceLock;

/// Prints diagnostics with the tool's prefix.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    /// Tool name.
    pub tool: &'static str,
    /// `-q`.
    pub quiet: bool,
    /// `-v`.
    pub verbose: bool,
}

impl Log {
    /// A line of progress or summary (hidden by `-q`).
    pub fn info(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            crate::errln!("{}: {msg}", self.tool);
        }
    }
    /// A detail shown with `-v`.
    pub fn debug(&self, msg: impl std::fmt::Display) {
        if self.verbose && !self.quiet {
            crate::errln!("{}: {msg}", self.tool);
        }
    }
    /// A warning (always shown).
    pub fn warn(&self, msg: impl std::fmt::Display) {
        crate::errln!("{}: warning: {msg}", self.tool);
    }
    /// An error line and its hint, as `main` reports a failed run.
    pub fn error(&self, e: &crate::Error) {
        crate::errln!("{}: error: {}", self.tool, e.message);
        if let Some(h) = &e.hint {
            crate::errln!("{}: hint: {h}", self.tool);
        }
    }
    /// A line printed whatever `-q` says (the interruption notice).
    pub fn always(&self, msg: impl std::fmt::Display) {
        crate::errln!("{}: {msg}", self.tool);
    }
}

static LOG: OnceLock<Log> = OnceLock::new();

/// Sets the tool's logger; the first call wins (a tool has one name).
pub fn init(log: Log) -> Log {
    *LOG.get_or_init(|| log)
}

/// The tool's logger (`dbsafe`, not quiet, when no tool set one: unit tests).
pub fn log() -> Log {
    LOG.get().copied().unwrap_or(Log {
        tool: "dbsafe",
        quiet: false,
        verbose: false,
    })
}

/// A warning through the tool's logger.
pub fn warn(msg: impl std::fmt::Display) {
    log().warn(msg)
}

/// A line of progress through the tool's logger (hidden by `-q`).
pub fn info(msg: impl std::fmt::Display) {
    log().info(msg)
}

/// Writes a JSON report to stdout. A reader that went away ends the tool
/// quietly with 141 ([`Stdout`]), never a panic as `println!` makes it.
pub fn print_json<T: serde::Serialize>(v: &T) -> crate::Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| crate::Error::failed(e.to_string()))?;
    let mut out = stdout();
    writeln!(out, "{s}").and_then(|()| out.flush())?;
    Ok(())
}

/// A tool's stdout, for its reports and the artifacts it streams: a reader
/// that went away (`| head`) is the error [`crate::error::Kind::ReaderGone`],
/// which ends the tool quietly with exit 141, as SIGPIPE ends a shell tool.
/// Other broken pipes (a child process that died) stay errors to report.
pub struct Stdout(std::io::Stdout);

/// The tool's [`Stdout`].
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout())
}

fn reader_gone(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            crate::Error::new(
                crate::ExitCode::ReaderGone,
                "the reader of stdout went away",
            ),
        )
    } else {
        e
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(reader_gone)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(reader_gone)
    }
}

/// Reports a command-line parsing error from clap with the tool's prefix
/// (`dbsnap: error: unexpected argument ...`), or prints help and version
/// as clap would; returns the exit status (2 for errors, 0 for help).
pub fn clap_error(tool: &'static str, e: &clap::Error) -> crate::ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return crate::ExitCode::Success;
    }
    let text = e.render().to_string();
    for line in text.trim_end().lines() {
        if line.starts_with("error:") {
            crate::errln!("{tool}: {line}");
        } else {
            crate::errln!("{line}");
        }
    }
    crate::ExitCode::Usage
}

/// `println!` for a tool's report: a reader that went away comes back as
/// an error for the tool to return (exit 141, quietly), never a panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!($crate::output::stdout(), $($arg)*).map_err($crate::Error::from)
    }};
}

/// `eprintln!` for diagnostics: a stderr that went away (`2>&1 | head`)
/// loses the line, it never panics the tool (exit 101) in the middle of its
/// work; and every URL in the line goes through [`redact_urls`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = $crate::output::redact_urls(&format!($($arg)*));
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }};
}

/// `text` with the password of every `scheme://user:password@host` in it
/// taken out, and every `password=` value. Every diagnostic passes through
/// here: a URL given where something else was expected (an environment
/// name, a flag's value clap reports) never prints its secret.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The URL ends where the text around it resumes; a password may
        // hold '/' or '@' unencoded, so the userinfo ends at the last '@'.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ')' | '>'))
            .unwrap_or(tail.len());
        out.push_str(&userinfo_without_password(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_password_params(&out)
}

/// `user:password@rest` as `user@rest` (the userinfo ends at the last `@`);
/// text without userinfo as it is. The one place a URL's password is cut.
pub fn userinfo_without_password(authority: &str) -> String {
    match authority.rsplit_once('@') {
        Some((userinfo, rest)) => {
            format!("{}@{rest}", userinfo.split(':').next().unwrap_or(""))
        }
        None => authority.to_string(),
    }
}

/// `password=VALUE` (a query parameter or a connection string's) with the value taken out.
fn redact_password_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("password=") {
        let (head, tail) = rest.split_at(i + "password=".len());
        out.push_str(head);
        out.push_str("***");
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | '\'' | ';'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_urls;

    #[test]
    fn passwords_in_urls_anywhere_in_a_line_are_taken_out() {
        for (text, shown) in [
            (
                "invalid environment name \"postgres://app:s3cret@db/x\": use letters",
                "invalid environment name \"postgres://app@db/x\": use letters",
            ),
            ("to mysql://u:p/w@d@h:3306/db.", "to mysql://u@h:3306/db."),
            (
                "s3://bucket/prefix and sqlite:///a@b.db",
                "s3://bucket/prefix and sqlite:///a@b.db",
            ),
            (
                "host=db password=hunter2 user=x",
                "host=db password=*** user=x",
            ),
            (
                "postgres://h/db?sslmode=require&password=pw",
                "postgres://h/db?sslmode=require&password=***",
            ),
            ("no url at all", "no url at all"),
        ] {
            assert_eq!(redact_urls(text), shown, "{text}");
        }
    }
}
