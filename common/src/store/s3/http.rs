//! Signed requests to one bucket, with bounded retries and messages that
//! name the bucket, the key and the last status, never a secret.
//!
//! Requests are presigned (SigV4 query parameters, by `rusty-s3`) and sent
//! with `ureq`'s blocking client. A presigned URL carries the signature and
//! a session token, so URLs never reach a message: transport errors are
//! described by their kind and cause only.

use super::config::{Location, Settings};
use crate::error::{Error, Result};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use url::Url;

/// How long a presigned request stays valid: long enough for a part to
/// crawl through a slow link, short enough not to matter if it leaked.
const PRESIGN_VALIDITY: Duration = Duration::from_secs(3600);

/// Why one attempt failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The server answered with an error status (or a 200 carrying an error).
    Status {
        /// HTTP status.
        status: u16,
        /// S3 error code (`NoSuchKey`, `SlowDown`, ...), empty when the body had none.
        code: String,
        /// S3's message.
        message: String,
        /// `x-amz-bucket-region`, when the bucket lives elsewhere.
        bucket_region: Option<String>,
    },
    /// No usable answer: connection refused or reset, timeout, garbage.
    Transport(String),
}

impl Failure {
    /// Whether trying again may help.
    pub(super) fn is_transient(&self) -> bool {
        match self {
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

    /// The HTTP status, if the server answered.
    pub(super) fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            Failure::Transport(_) => None,
        }
    }

    /// The S3 error code, if any.
    pub(super) fn code(&self) -> &str {
        match self {
            Failure::Status { code, .. } => code,
            Failure::Transport(_) => "",
        }
    }

    fn describe(&self) -> String {
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
        }
    }
}

/// What a request is about, for messages: `upload part 3 of`, `s3://b/k`.
pub(super) struct Op<'a> {
    /// The action, as a verb phrase.
    pub verb: &'a str,
    /// The full object key (or key prefix), if the request has one.
    pub key: Option<&'a str>,
}

/// The bucket, who we are to it, and how hard to try.
pub(super) struct Client {
    agent: ureq::Agent,
    /// The bucket, for rusty-s3's actions.
    pub bucket: rusty_s3::Bucket,
    /// The signing credentials.
    pub credentials: rusty_s3::Credentials,
    /// Where the store is.
    pub location: Location,
    /// The settings it was made from.
    pub settings: Settings,
}

impl Client {
    /// A client for `location`.
    pub fn new(location: Location, settings: Settings) -> Result<Client> {
        let endpoint: Url = settings.endpoint.parse().map_err(|e| {
            Error::usage(format!(
                "AWS_ENDPOINT_URL {:?} is not a URL: {e}",
                settings.endpoint
            ))
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(Error::usage(format!(
                "AWS_ENDPOINT_URL {:?}: use http:// or https://",
                settings.endpoint
            )));
        }
        let style = if settings.path_style {
            rusty_s3::UrlStyle::Path
        } else {
            rusty_s3::UrlStyle::VirtualHost
        };
        let bucket = rusty_s3::Bucket::new(
            endpoint,
            style,
            location.bucket.clone(),
            settings.region.clone(),
        )
        .map_err(|e| {
            Error::usage(format!(
                "cannot address bucket {} at {}: {e}",
                location.bucket, settings.endpoint
            ))
        })?;
        let c = &settings.credentials;
        let credentials = match &c.token {
            Some(t) => rusty_s3::Credentials::new_with_token(&c.key_id, &c.secret, t),
            None => rusty_s3::Credentials::new(&c.key_id, &c.secret),
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(settings.timeout.min(Duration::from_secs(30)))
            .timeout_read(settings.timeout)
            .timeout_write(settings.timeout)
            .redirects(0)
            .max_idle_connections_per_host(settings.parts_in_flight + 2)
            .user_agent(concat!("dbsafe/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent,
            bucket,
            credentials,
            location,
            settings,
        })
    }

    /// Signs an action (after its signed headers were added).
    pub fn sign<'a>(&self, action: &impl rusty_s3::S3Action<'a>) -> Url {
        action.sign(PRESIGN_VALIDITY)
    }

    /// Signs a request rusty-s3 has no action for (bucket-level `GET` with `query`).
    pub fn sign_bucket_get(&self, query: &[(&str, &str)]) -> Url {
        // The signer merges this with its own parameters, both sorted.
        let mut query = query.to_vec();
        query.sort_unstable();
        rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            rusty_s3::Method::Get,
            self.bucket.base_url().clone(),
            self.credentials.key(),
            self.credentials.secret(),
            self.credentials.token(),
            self.bucket.region(),
            PRESIGN_VALIDITY.as_secs(),
            query.iter().copied(),
            std::iter::empty(),
        )
    }

    /// Sends one request: `Ok` for 2xx, the failure otherwise.
    pub fn send(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::result::Result<ureq::Response, Failure> {
        let mut req = self.agent.request_url(method, url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => Err(status_failure(status, resp)),
            Err(ureq::Error::Transport(t)) => Err(Failure::Transport(transport_message(&t))),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts are
    /// spent; transient failures are retried after an exponential backoff
    /// with jitter. Only call it with attempts that are safe to repeat.
    pub fn call<T>(
        &self,
        op: &Op<'_>,
        attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        self.call_until(op, None, attempt)
    }

    /// [`Client::call`], giving up early once `cancel` is set.
    pub fn call_until<T>(
        &self,
        op: &Op<'_>,
        cancel: Option<&AtomicBool>,
        mut attempt: impl FnMut() -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let mut n = 0;
        loop {
            n += 1;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(f)
                    if f.is_transient()
                        && n < self.settings.attempts
                        && !cancel.is_some_and(|c| c.load(Ordering::Relaxed)) =>
                {
                    let delay = backoff(n);
                    super::warn(format!(
                        "{} {} failed: {}; retrying in {:.1}s (attempt {} of {})",
                        op.verb,
                        self.object_url(op.key),
                        f.describe(),
                        delay.as_secs_f64(),
                        n + 1,
                        self.settings.attempts
                    ));
                    std::thread::sleep(delay);
                }
                Err(f) => return Err(self.error(op, &f, n)),
            }
        }
    }

    /// `s3://bucket/key` of a full object key.
    pub fn object_url(&self, key: Option<&str>) -> String {
        match key {
            Some(k) if !k.is_empty() => format!("s3://{}/{k}", self.location.bucket),
            _ => format!("s3://{}", self.location.bucket),
        }
    }

    /// The error a failure ends in, after `attempts` attempts.
    pub fn error(&self, op: &Op<'_>, f: &Failure, attempts: u32) -> Error {
        let what = self.object_url(op.key);
        let bucket = &self.location.bucket;
        let endpoint = &self.settings.endpoint;
        let creds = &self.settings.credentials;
        let who = format!("access key id {} (from {})", creds.key_id, creds.source);
        match (f.status(), f.code()) {
            (Some(404), "NoSuchBucket") => Error::not_found(format!(
                "bucket {bucket} does not exist at {endpoint} ({} {what})",
                op.verb
            ))
            .hint("create it (aws s3 mb s3://BUCKET) or check the store URL and AWS_ENDPOINT_URL"),
            (Some(404), "NoSuchKey" | "") => Error::not_found(format!("{what} not found")),
            (Some(403), "InvalidAccessKeyId") => Error::failed(format!(
                "{endpoint} does not know {who} (InvalidAccessKeyId; {} {what})",
                op.verb
            ))
            .hint("check AWS_ACCESS_KEY_ID / AWS_PROFILE and AWS_ENDPOINT_URL"),
            (Some(403), "SignatureDoesNotMatch") => Error::failed(format!(
                "bucket {bucket} rejected the signature of {who}: the secret access key does not match (SignatureDoesNotMatch; {} {what})",
                op.verb
            ))
            .hint("check AWS_SECRET_ACCESS_KEY, or aws_secret_access_key in the profile"),
            (Some(403), code) => Error::failed(format!(
                "access denied to {who}: cannot {} {what} (HTTP 403{}{})",
                op.verb,
                if code.is_empty() { "" } else { " " },
                code
            ))
            .hint("check the credentials and the bucket policy or IAM permissions of that key"),
            _ if wrong_region(f).is_some() => {
                let region = wrong_region(f).unwrap_or_default();
                Error::failed(format!(
                    "bucket {bucket} is in region {region}, not {} ({} {what})",
                    self.settings.region, op.verb
                ))
                .hint(format!("set AWS_REGION={region}"))
            }
            _ => {
                let tries = if attempts > 1 {
                    format!(" after {attempts} attempts; last answer")
                } else {
                    String::new()
                };
                let e = Error::failed(format!(
                    "{} {what} failed{tries}: {}",
                    op.verb,
                    f.describe()
                ));
                match f {
                    Failure::Transport(_) => e.hint(format!(
                        "check that {endpoint} (AWS_ENDPOINT_URL) is reachable"
                    )),
                    _ if f.is_transient() => e.hint(
                        "the service is unavailable or throttling; try again later or raise DBSAFE_S3_RETRIES",
                    ),
                    _ => e,
                }
            }
        }
    }
}

fn wrong_region(f: &Failure) -> Option<String> {
    match f {
        Failure::Status {
            status,
            code,
            bucket_region,
            ..
        } if *status == 301
            || code == "PermanentRedirect"
            || code == "AuthorizationHeaderMalformed" =>
        {
            bucket_region.clone()
        }
        _ => None,
    }
}

/// Exponential backoff with equal jitter: half fixed, half random, so
/// concurrent writers spread out while every retry still waits longer.
fn backoff(attempt: u32) -> Duration {
    use rand::Rng;
    let ceiling_ms = (250u64 << (attempt - 1).min(10)).min(20_000);
    let half = ceiling_ms / 2;
    Duration::from_millis(half + rand::thread_rng().gen_range(0..=half))
}

fn status_failure(status: u16, resp: ureq::Response) -> Failure {
    let bucket_region = resp.header("x-amz-bucket-region").map(str::to_string);
    let reason = resp.status_text().to_string();
    let mut body = String::new();
    let _ = resp.into_reader().take(64 << 10).read_to_string(&mut body);
    Failure::Status {
        status,
        code: super::xml::text(&body, "Code").unwrap_or_default(),
        // A HEAD answer has no body: the reason phrase is all there is.
        message: super::xml::text(&body, "Message").unwrap_or(reason),
        bucket_region,
    }
}

/// A 2xx answer whose body is an S3 error (CompleteMultipartUpload does that).
pub(super) fn error_in_body(status: u16, body: &str) -> Option<Failure> {
    body.contains("<Error>").then(|| Failure::Status {
        status,
        code: super::xml::text(body, "Code").unwrap_or_default(),
        message: super::xml::text(body, "Message").unwrap_or_default(),
        bucket_region: None,
    })
}

/// A transport error without its URL (a presigned URL holds the signature and token).
fn transport_message(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s.push_str(": ");
        s.push_str(m);
    }
    if let Some(src) = std::error::Error::source(t) {
        let src = src.to_string();
        if !s.contains(&src) {
            s.push_str(": ");
            s.push_str(&src);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for n in 1..=12 {
            let d = backoff(n).as_millis() as u64;
            let ceiling = (250u64 << (n - 1).min(10)).min(20_000);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {n}: {d}ms");
        }
    }

    #[test]
    fn throttling_and_server_errors_are_transient_client_errors_are_not() {
        let st = |status, code: &str| Failure::Status {
            status,
            code: code.into(),
            message: String::new(),
            bucket_region: None,
        };
        assert!(st(503, "SlowDown").is_transient());
        assert!(st(500, "").is_transient());
        assert!(st(429, "").is_transient());
        assert!(st(400, "RequestTimeout").is_transient());
        assert!(Failure::Transport("Io: reset".into()).is_transient());
        assert!(!st(403, "SignatureDoesNotMatch").is_transient());
        assert!(!st(404, "NoSuchKey").is_transient());
    }
}
