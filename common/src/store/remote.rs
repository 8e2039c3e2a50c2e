//! What every remote store (S3, Google Cloud Storage, Azure Blob) shares
//! around its HTTP requests: why an attempt failed, the retry layer that
//! announces each retry, a reader that resumes a download broken off
//! mid-body, and credentials cached until shortly before they expire.
//!
//! What is transient is decided on the HTTP status and the service's error
//! code, never on message text.

use super::retry::{Policy, Transient, FIRST_BACKOFF};
use crate::error::{Error, Kind, Result};
use chrono::{DateTime, TimeDelta, Utc};
use std::io::{self, Read};
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with an error status (or a 200 carrying an error).
    Status {
        /// HTTP status.
        status: u16,
        /// The service's error code (`NoSuchKey`, `BlobNotFound`, `notFound`, ...),
        /// empty when the answer had none.
        code: String,
        /// The service's words.
        message: String,
        /// `x-amz-bucket-region`, when an S3 bucket lives elsewhere.
        bucket_region: Option<String>,
    },
    /// No usable answer: connection refused or reset, timeout, garbage.
    Transport(String),
    /// No credentials to sign the request with: the error of their source
    /// (a metadata service, a token endpoint), kept whole with its hint.
    Credentials(Error),
}

impl Failure {
    /// The HTTP status, if the server answered.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            Failure::Transport(_) | Failure::Credentials(_) => None,
        }
    }

    /// The error code, if any.
    pub(crate) fn code(&self) -> &str {
        match self {
            Failure::Status { code, .. } => code,
            Failure::Transport(_) | Failure::Credentials(_) => "",
        }
    }

    /// The failure for a message: status, code and message, or the transport error.
    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::Status {
                status,
                code,
                message,
                ..
            } => {
                let mut s = format!("HTTP {status}");
                if !code.is_empty() {
                    s.push(' ');
                    s.push_str(code);
                }
                if !message.is_empty() {
                    s.push_str(&format!(" ({message})"));
                }
                s
            }
            Failure::Transport(m) => m.clone(),
            Failure::Credentials(e) => e.message.clone(),
        }
    }

    /// The error a request ends in: a credentials failure is its source's
    /// own error (message, kind and hint); any other is `describe`d by the store.
    pub(crate) fn into_error(self, otherwise: impl FnOnce(&Failure) -> Error) -> Error {
        match self {
            Failure::Credentials(e) => e,
            f => otherwise(&f),
        }
    }
}

/// Trying again may help after no answer at all (connection refused or
/// reset, timeout), throttling, a server error, or damaged bytes.
impl Transient for Failure {
    fn is_transient(&self) -> bool {
        match self {
            Failure::Transport(_) => true,
            // A source that answered badly may answer again; a missing one will not.
            Failure::Credentials(e) => e.kind != Kind::Usage,
            Failure::Status { status, code, .. } => {
                crate::http::transient_status(*status)
                    || matches!(
                        code.as_str(),
                        "SlowDown"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "ServerBusy"
                            | "OperationTimedOut"
                            // The bytes were damaged on the way; ours are intact.
                            | "BadDigest"
                    )
            }
        }
    }
}

/// Runs a request through the retry layer, at most `attempts` times; each
/// retry is announced as `VERB URL failed: ...; retrying`. The last failure
/// comes back with the attempts made.
pub(crate) fn retry<T>(
    attempts: u32,
    cancel: Option<&AtomicBool>,
    what: &dyn Fn() -> String,
    attempt: impl FnMut() -> std::result::Result<T, Failure>,
) -> std::result::Result<T, (Failure, u32)> {
    let policy = Policy {
        attempts,
        first_backoff: FIRST_BACKOFF,
    };
    policy.run(cancel, attempt, |f, delay, next| {
        crate::output::warn(format!(
            "{} failed: {}; retrying in {:.1}s (attempt {next} of {attempts})",
            what(),
            f.describe(),
            delay.as_secs_f64(),
        ))
    })
}

/// Asks for the rest of an object from a byte offset, pinned to a version.
pub(crate) type Reopen = Box<dyn FnMut(u64, Option<&str>) -> Result<ureq::Response> + Send>;

/// A streaming download that survives a dropped connection: when the body
/// breaks off or stalls, the rest is asked for again (from the byte
/// reached, only from the version first read) and the caller sees an
/// uninterrupted stream. Consecutive failures without progress are bounded.
pub(crate) struct ResumingReader {
    url: String,
    attempts: u32,
    body: Option<Box<dyn Read + Send + Sync>>,
    reopen: Reopen,
    pos: u64,
    len: Option<u64>,
    version: Option<String>,
    version_header: String,
    failures: u32,
}

impl ResumingReader {
    /// A download of `url` whose first answer was `resp` (its length and its
    /// version, from the `version_header`, are kept), resumed by `reopen`.
    pub fn new(
        url: String,
        attempts: u32,
        resp: ureq::Response,
        version_header: &str,
        reopen: Reopen,
    ) -> ResumingReader {
        ResumingReader {
            url,
            attempts,
            len: resp
                .header("content-length")
                .and_then(|l| l.parse::<u64>().ok()),
            version: resp.header(version_header).map(str::to_string),
            version_header: version_header.to_string(),
            body: Some(resp.into_reader()),
            reopen,
            pos: 0,
            failures: 0,
        }
    }

    fn resume(&mut self, cause: &str) -> io::Result<()> {
        self.failures += 1;
        if self.failures >= self.attempts {
            return Err(io::Error::other(Error::failed(format!(
                "download {} failed at byte {} after {} attempts: {cause}",
                self.url, self.pos, self.failures
            ))));
        }
        crate::output::warn(format!(
            "download {} broke off at byte {}: {cause}; resuming",
            self.url, self.pos
        ));
        let resp = (self.reopen)(self.pos, self.version.as_deref()).map_err(io::Error::other)?;
        // A server that ignores the range sends the object from its start:
        // appending that would corrupt the stream. From byte 0 the whole
        // object is what is wanted, and stores that send no range for it
        // (GCS, Azure) get 200.
        let whole = self.pos == 0 && resp.status() == 200;
        if resp.status() != 206 && !whole {
            return Err(io::Error::other(Error::failed(format!(
                "download {}: the server ignored the range request (HTTP {}) while resuming at byte {}",
                self.url,
                resp.status(),
                self.pos
            ))));
        }
        // The rest of the same object from where it stopped, whatever the
        // server made of the conditions: another version (the object
        // replaced meanwhile), or another range, would splice two objects.
        let version = resp.header(&self.version_header);
        let range_start = resp
            .header("content-range")
            .and_then(|r| r.strip_prefix("bytes "))
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.parse::<u64>().ok());
        let other_version = self.version.is_some() && version != self.version.as_deref();
        if other_version || (resp.status() == 206 && range_start != Some(self.pos)) {
            return Err(io::Error::other(Error::failed(format!(
                "download {}: the object changed while it was read (resuming at byte {}); read it again",
                self.url, self.pos
            ))));
        }
        self.body = Some(resp.into_reader());
        Ok(())
    }
}

impl Read for ResumingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(0);
            };
            match body.read(buf) {
                Ok(0) => {
                    if self.len.is_some_and(|l| self.pos < l) {
                        self.resume("connection closed early")?;
                        continue;
                    }
                    self.body = None;
                    return Ok(0);
                }
                Ok(n) => {
                    self.pos += n as u64;
                    self.failures = 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.body = None;
                    self.resume(&e.to_string())?;
                }
            }
        }
    }
}

/// Credentials fetched again this long before they expire.
const REFRESH_BEFORE: TimeDelta = TimeDelta::seconds(60);

/// Credentials that are fixed, or fetched and cached until a minute
/// before they expire.
pub(crate) struct Expiring<T> {
    cached: Mutex<Option<(T, Option<DateTime<Utc>>)>>,
}

impl<T: Clone> Expiring<T> {
    /// Nothing fetched yet.
    pub fn empty() -> Expiring<T> {
        Expiring {
            cached: Mutex::new(None),
        }
    }

    /// Credentials that never expire.
    pub fn fixed(value: T) -> Expiring<T> {
        Expiring {
            cached: Mutex::new(Some((value, None))),
        }
    }

    /// What is cached, whether or not still valid.
    pub fn peek(&self) -> Option<T> {
        self.cached
            .lock()
            .expect("credentials lock")
            .as_ref()
            .map(|(v, _)| v.clone())
    }

    /// The cached value while it is valid for another minute, else a fresh
    /// one from `fetch` (value and expiry), cached in its place.
    pub fn current<E>(
        &self,
        fetch: impl FnOnce() -> std::result::Result<(T, Option<DateTime<Utc>>), E>,
    ) -> std::result::Result<T, E> {
        let mut cached = self.cached.lock().expect("credentials lock");
        match &*cached {
            Some((v, None)) => return Ok(v.clone()),
            Some((v, Some(expires))) if *expires - Utc::now() > REFRESH_BEFORE => {
                return Ok(v.clone())
            }
            _ => {}
        }
        let fresh = fetch()?;
        let value = fresh.0.clone();
        *cached = Some(fresh);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A download of "helloworld" whose first answer stops after `first`
    /// of its 10 bytes, and whose resumption answers `status` with the rest
    /// (with the whole object when it resumes at byte 0).
    fn cut_at(first: &str, status: u16) -> io::Result<Vec<u8>> {
        let at = first.len();
        cut_answered(
            first,
            status,
            &format!("ETag: \"v1\"\r\nContent-Range: bytes {at}-9/10\r\n"),
        )
    }

    /// [`cut_at`], the resumption answering with `headers`.
    fn cut_answered(first: &str, status: u16, headers: &str) -> io::Result<Vec<u8>> {
        let at = first.len();
        let headers = headers.to_string();
        let head: ureq::Response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nETag: \"v1\"\r\n\r\n{first}")
                .parse()
                .expect("an answer");
        let reopen: Reopen = Box::new(move |pos, version| {
            assert_eq!(
                (pos, version),
                (at as u64, Some("\"v1\"")),
                "resumed where it broke off, pinned"
            );
            let rest = &"helloworld"[at..];
            Ok(format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{headers}\r\n{rest}",
                rest.len()
            )
            .parse()
            .expect("an answer"))
        });
        let mut r = ResumingReader::new("s3://b/k".into(), 3, head, "etag", reopen);
        let mut out = Vec::new();
        r.read_to_end(&mut out).map(|_| out)
    }

    fn cut_download(status: u16) -> io::Result<Vec<u8>> {
        cut_at("hello", status)
    }

    #[test]
    fn a_credentials_failure_ends_in_its_own_error_and_a_missing_source_is_not_retried() {
        let missing =
            Failure::Credentials(Error::usage("no S3 credentials").hint("set AWS_ACCESS_KEY_ID"));
        assert!(!missing.is_transient());
        let e = missing.into_error(|_| unreachable!("the source's own error"));
        assert_eq!(
            (e.message.as_str(), e.hint.as_deref()),
            ("no S3 credentials", Some("set AWS_ACCESS_KEY_ID"))
        );
        assert!(Failure::Credentials(Error::failed("instance metadata: HTTP 500")).is_transient());
    }

    #[test]
    fn a_cut_download_resumes_from_its_offset_and_refuses_a_server_that_ignores_the_range() {
        assert_eq!(cut_download(206).unwrap(), b"helloworld");
        // Cut before its first byte: the whole object again, 200 or 206.
        assert_eq!(cut_at("", 200).unwrap(), b"helloworld");
        assert_eq!(cut_at("", 206).unwrap(), b"helloworld");
        let e = cut_download(200).unwrap_err();
        assert!(
            e.to_string()
                .contains("ignored the range request (HTTP 200) while resuming at byte 5"),
            "{e}"
        );
        // Another version of the object, or another range, is never spliced on.
        for headers in [
            "ETag: \"v2\"\r\nContent-Range: bytes 5-9/10\r\n",
            "Content-Range: bytes 5-9/10\r\n",
            "ETag: \"v1\"\r\nContent-Range: bytes 0-4/10\r\n",
        ] {
            let e = cut_answered("hello", 206, headers).unwrap_err();
            assert!(
                e.to_string().contains("changed while it was read"),
                "{headers}: {e}"
            );
        }
    }
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

    #[test]
    fn cached_credentials_are_fetched_again_within_a_minute_of_expiry() {
        let fetches = std::cell::Cell::new(0);
        let fetch = |life: i64| {
            fetches.set(fetches.get() + 1);
            Ok::<_, ()>((fetches.get(), Some(Utc::now() + TimeDelta::seconds(life))))
        };
        let c = Expiring::empty();
        assert_eq!(c.current(|| fetch(3600)), Ok(1));
        assert_eq!(c.current(|| fetch(3600)), Ok(1), "valid: cached");
        let c = Expiring::empty();
        assert_eq!(c.current(|| fetch(59)), Ok(2));
        assert_eq!(
            c.current(|| fetch(59)),
            Ok(3),
            "about to expire: fetched again"
        );
        assert_eq!(Expiring::fixed(7).current(|| fetch(1)), Ok(7));
    }
}
