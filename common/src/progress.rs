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

/// A reader that reports the bytes it reads to a [`Progress`].
pub struct ProgressReader<R> {
    inner: R,
    progress: Progress,
}

impl<R> ProgressReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, progress: Progress) -> ProgressReader<R> {
        ProgressReader { inner, progress }
    }
}

impl<R: std::io::Read> std::io::Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.progress.finish();
        } else {
            self.progress.add(n as u64);
        }
        Ok(n)
    }
}
