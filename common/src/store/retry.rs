//! Retries with exponential backoff and jitter, the layer every remote
//! store puts around its requests.
//!
//! A request is a function that tries once; [`Policy::run`] runs it again
//! when its failure is [`Transient`], after a backoff that doubles each
//! time (half fixed, half random, so concurrent writers spread out), up to
//! the store's attempts. What is transient is the store's to say, on
//! statuses and error codes, never on message text.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A failure that may go away when the request is tried again.
pub(crate) trait Transient {
    /// Whether trying again may help.
    fn is_transient(&self) -> bool;
}

/// The first backoff's ceiling; each retry doubles it.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// No backoff is longer.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// The ceiling of the first backoff (zero in tests).
    pub first_backoff: Duration,
}

impl Policy {
    /// Runs `attempt` until it succeeds, fails for good, the attempts are
    /// spent or `cancel` is set; `retrying(failure, delay, next attempt)` is
    /// told of each retry before its backoff. A failure comes back with the
    /// number of attempts made.
    pub fn run<T, F: Transient>(
        &self,
        cancel: Option<&AtomicBool>,
        mut attempt: impl FnMut() -> std::result::Result<T, F>,
        mut retrying: impl FnMut(&F, Duration, u32),
    ) -> std::result::Result<T, (F, u32)> {
        let mut n = 0;
        loop {
            n += 1;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(f)
                    if f.is_transient()
                        && n < self.attempts
                        && !cancel.is_some_and(|c| c.load(Ordering::Relaxed)) =>
                {
                    let delay = self.backoff(n);
                    retrying(&f, delay, n + 1);
                    std::thread::sleep(delay);
                }
                Err(f) => return Err((f, n)),
            }
        }
    }

    /// Exponential backoff with equal jitter: half fixed, half random, so
    /// concurrent writers spread out while every retry still waits longer.
    fn backoff(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let first = self.first_backoff.as_millis() as u64;
        let ceiling_ms = (first << (attempt - 1).min(10)).min(MAX_BACKOFF.as_millis() as u64);
        let half = ceiling_ms / 2;
        Duration::from_millis(half + rand::thread_rng().gen_range(0..=half))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let p = Policy {
            attempts: 20,
            first_backoff: FIRST_BACKOFF,
        };
        for n in 1..=12 {
            let d = p.backoff(n).as_millis() as u64;
            let ceiling = (250u64 << (n - 1).min(10)).min(20_000);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {n}: {d}ms");
        }
    }
}
