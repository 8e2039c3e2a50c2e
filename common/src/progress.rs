//! Progress on stderr for long work, only when stderr is a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress display: bytes, rate and elapsed time (and total when known).
#[derive(Clone)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A display on stderr when it is a terminal and `quiet` is off; silent otherwise.
    pub fn new(tool: &str, total: Option<u64>, quiet: bool) -> Progress {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template(&format!(
                    "{tool}: {{bytes}}/{{total_bytes}} {{wide_bar}} {{binary_bytes_per_sec}} {{elapsed}}"
                ))
                .expect("valid template"),
            ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template(&format!(
                    "{tool}: {{spinner}} {{bytes}} {{binary_bytes_per_sec}} {{elapsed}}"
                ))
                .expect("valid template"),
            ),
        };
        Progress(Some(bar))
    }

    /// A display that never shows.
    pub fn hidden() -> Progress {
        Progress(None)
    }

    /// Adds bytes done.
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Clears the display.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
