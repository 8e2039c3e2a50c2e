//! Terminals: refusing binary output to one, and typed confirmations.

use crate::error::{Error, Result};
use std::io::{BufRead, IsTerminal, Write};

/// Whether stdout is a terminal.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Whether both stdin and stderr are terminals, so a person can answer a prompt.
pub fn can_prompt() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Refuses to write binary data to a terminal (exit 2).
pub fn refuse_binary_to_terminal(what: &str) -> Result<()> {
    if stdout_is_terminal() {
        return Err(
            Error::usage(format!("refusing to write {what} to a terminal"))
                .hint("use -o FILE, --to STORE or redirect stdout"),
        );
    }
    Ok(())
}

/// The refusal to `action` (a phrase: "replace the contents of X") without
/// a confirmation there is no terminal to ask for (exit 4).
pub fn no_terminal(action: &str) -> Error {
    Error::refused(format!(
        "refusing to {action} without confirmation: there is no terminal to ask on"
    ))
    .hint("pass --yes to confirm non-interactively")
}

/// Asks the person at the terminal to type `expected` to go on.
///
/// `yes` skips the question; without a terminal and without `yes` the answer
/// is a refusal (exit 4), so cron never restores over anything by accident.
pub fn confirm_typed(tool: &str, action: &str, expected: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !can_prompt() {
        return Err(no_terminal(action));
    }
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "{tool}: about to {action}\n{tool}: type {expected:?} to continue: "
    );
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() == expected {
        Ok(())
    } else {
        Err(Error::refused(format!(
            "confirmation did not match {expected:?}; nothing was changed"
        )))
    }
}
