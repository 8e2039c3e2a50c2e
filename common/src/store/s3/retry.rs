//! The retry layer around S3 requests.
//!
//! Requests are plain functions that try once ([`super::http::Client::send`]
//! and the closures built on it); this layer runs one again when its
//! failure is transient, after an exponential backoff with jitter, up to
//! the store's attempts (`DBSAFE_S3_RETRIES`), and names each retry in a
//! warning. What is transient is decided here, on the HTTP status, the S3
//! error code and the kind of failure, never on message text. Only requests
//! that are safe to repeat go through it: their bytes are in memory.

use super::http::{Client, Failure, Op};
use crate::error::Result;
use crate::store::retry::{Policy, Transient, FIRST_BACKOFF};
use std::sync::atomic::AtomicBool;

impl Transient for Failure {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

/// Whether trying again may help: no answer at all (connection refused or
/// reset, timeout), throttling, a server error, or damaged bytes.
pub(super) fn is_transient(f: &Failure) -> bool {
    match f {
        Failure::Transport(_) => true,
        Failure::Status { status, code, .. } => {
            matches!(status, 429 | 500 | 502 | 503 | 504)
                || matches!(
                    code.as_str(),
                    "SlowDown"
                        | "RequestTimeout"
                        | "InternalError"
                        | "ServiceUnavailable"
                        // The bytes were damaged on the way; ours are intact.
                        | "BadDigest"
                )
        }
    }
}

/// Runs a request through the retry layer; its last failure becomes the error.
pub(super) fn call<T>(
    client: &Client,
    op: &Op<'_>,
    attempt: impl FnMut() -> std::result::Result<T, Failure>,
) -> Result<T> {
    call_until(client, op, None, attempt)
}

/// [`call`], giving up early once `cancel` is set.
pub(super) fn call_until<T>(
    client: &Client,
    op: &Op<'_>,
    cancel: Option<&AtomicBool>,
    attempt: impl FnMut() -> std::result::Result<T, Failure>,
) -> Result<T> {
    let policy = Policy {
        attempts: client.settings.attempts,
        first_backoff: FIRST_BACKOFF,
    };
    policy
        .run(cancel, attempt, |f, delay, next| {
            crate::output::warn(format!(
                "{} {} failed: {}; retrying in {:.1}s (attempt {next} of {})",
                op.verb,
                client.object_url(op.key),
                f.describe(),
                delay.as_secs_f64(),
                policy.attempts
            ))
        })
        .map_err(|(f, n)| client.error(op, &f, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(status: u16, code: &str) -> Failure {
        Failure::Status {
            status,
            code: code.into(),
            message: String::new(),
            bucket_region: None,
        }
    }

    fn reset() -> Failure {
        Failure::Transport("Io: Connection reset by peer (os error 104)".into())
    }

    const QUICK: Policy = Policy {
        attempts: 5,
        first_backoff: Duration::ZERO,
    };

    /// Runs a request that fails with `failures` in turn, then succeeds:
    /// (its result, attempts made, retries announced).
    fn run_failing(
        policy: Policy,
        failures: Vec<Failure>,
    ) -> (std::result::Result<(), (Failure, u32)>, u32, u32) {
        let mut failures = failures.into_iter();
        let (mut made, mut announced) = (0, 0);
        let result = policy.run(
            None,
            || {
                made += 1;
                failures.next().map_or(Ok(()), Err)
            },
            |_, _, _| announced += 1,
        );
        (result, made, announced)
    }

    #[test]
    fn server_errors_throttling_timeouts_and_resets_are_retried_until_success() {
        let failures: [fn() -> Failure; 5] = [
            || status(500, "InternalError"),
            || status(503, "SlowDown"),
            || status(503, ""),
            || status(400, "RequestTimeout"),
            reset,
        ];
        for f in failures {
            let (result, made, announced) = run_failing(QUICK, vec![f(), f()]);
            assert!(result.is_ok(), "{:?}", f());
            assert_eq!((made, announced), (3, 2), "{:?}", f());
        }
    }

    #[test]
    fn forbidden_and_not_found_are_not_retried() {
        for f in [status(403, "AccessDenied"), status(404, "NoSuchKey")] {
            let code = f.status();
            let (result, made, announced) = run_failing(QUICK, vec![f]);
            let (last, attempts) = result.expect_err("fails at once");
            assert_eq!((last.status(), attempts), (code, 1));
            assert_eq!((made, announced), (1, 0));
        }
    }

    #[test]
    fn retries_stop_when_the_attempts_are_spent_or_the_caller_cancels() {
        let (result, made, _) = run_failing(QUICK, (0..10).map(|_| reset()).collect());
        assert_eq!(result.expect_err("spent").1, 5);
        assert_eq!(made, 5);
        let cancel = AtomicBool::new(true);
        let mut made = 0;
        let result = QUICK.run(
            Some(&cancel),
            || -> std::result::Result<(), Failure> {
                made += 1;
                Err(reset())
            },
            |_, _, _| {},
        );
        assert_eq!((result.expect_err("cancelled").1, made), (1, 1));
    }
}
