//! The retry layer around S3 requests.
//!
//! Requests are plain functions that try once ([`super::http::Client::send`]
//! and the closures built on it); this layer runs one again when its
//! failure is transient, after an exponential backoff with jitter, up to
//! the store's attempts (`DBSAFE_S3_RETRIES`), and names each retry in a
//! warning ([`crate::store::remote::retry`]). What is transient is decided
//! on the HTTP status, the error code and the kind of failure, never on
//! message text. Only requests that are safe to repeat go through it: their
//! bytes are in memory.

use super::http::{Client, Failure, Op};
use crate::error::Result;
use std::sync::atomic::AtomicBool;

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
    let what = || format!("{} {}", op.verb, client.object_url(op.key));
    crate::store::remote::retry(client.settings.attempts, cancel, &what, attempt)
        .map_err(|(f, n)| f.into_error(|f| client.error(op, f, n)))
}
