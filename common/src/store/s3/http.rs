//! Signed requests to one bucket, each tried once, and messages that name
//! the bucket, the key and the last status, never a secret. Retries are a
//! layer around these requests ([`super::retry`]).
//!
//! Requests are presigned (SigV4 query parameters, by `rusty-s3`) and sent
//! with `ureq`'s blocking client. A presigned URL carries the signature and
//! a session token, so URLs never reach a message: transport errors are
//! described by their kind and cause only.

use super::config::{Location, Settings};
use crate::error::{Error, Result};
pub(super) use crate::store::remote::Failure;
use crate::store::retry::Transient;
use rusty_s3::S3Action;
use std::io::Read;
use std::time::Duration;
use url::Url;

/// How long a presigned request stays valid: long enough for a part to
/// crawl through a slow link, short enough not to matter if it leaked.
const PRESIGN_VALIDITY: Duration = Duration::from_secs(3600);

/// What a request is about, for messages: `upload part 3 of`, `s3://b/k`.
pub(super) struct Op<'a> {
    /// The action, as a verb phrase.
    pub verb: &'a str,
    /// The full object key (or key prefix), if the request has one.
    pub key: Option<&'a str>,
}

/// The outcome of a request whose object is already gone (404) as done:
/// what a delete or an abort was for.
pub(super) fn gone_is_done(
    r: std::result::Result<(), Failure>,
) -> std::result::Result<(), Failure> {
    match r {
        Err(f) if f.status() == Some(404) => Ok(()),
        r => r,
    }
}

impl<'a> Op<'a> {
    /// The action `verb` on the full object key (or key prefix) `key`.
    pub fn on(verb: &'a str, key: &'a str) -> Op<'a> {
        Op {
            verb,
            key: Some(key),
        }
    }
}

/// The bucket, who we are to it, and how hard to try.
pub(super) struct Client {
    agent: ureq::Agent,
    /// The bucket, for rusty-s3's actions.
    pub bucket: rusty_s3::Bucket,
    /// The signing credentials, fixed or refreshed before they expire.
    credentials: super::credentials::Refreshing,
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
        let credentials = match &settings.credentials {
            super::config::Source::Fixed(c) => super::credentials::Refreshing::fixed(c.clone()),
            super::config::Source::Fetched(p) => super::credentials::Refreshing::from(p.clone()),
        };
        let agent = crate::http::agent_builder()?
            .timeout_connect(settings.timeout.min(Duration::from_secs(30)))
            .timeout_read(settings.timeout)
            .timeout_write(settings.timeout)
            .redirects(0)
            .max_idle_connections_per_host(settings.parts_in_flight + 2)
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
    pub fn sign_bucket_get(&self, query: &[(&str, &str)]) -> std::result::Result<Url, Failure> {
        // ListObjectsV2 is a bucket-level GET: the same request with our
        // query instead of its own.
        let creds = self.credentials()?;
        let mut action = self.bucket.list_objects_v2(Some(&creds));
        let q = action.query_mut();
        q.remove("list-type");
        q.remove("encoding-type");
        for (k, v) in query {
            q.insert(k.to_string(), v.to_string());
        }
        Ok(self.sign(&action))
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
            // Redirects are not followed: a 3xx (PermanentRedirect, a wrong
            // region) is a failure with its body, never an answer to read.
            Ok(resp) if !(200..300).contains(&resp.status()) => {
                Err(status_failure(resp.status(), resp))
            }
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => Err(status_failure(status, resp)),
            Err(ureq::Error::Transport(t)) => {
                Err(Failure::Transport(crate::http::transport_message(&t)))
            }
        }
    }

    /// One HEAD of a full object key, not retried: its answer, if it came.
    pub(super) fn head_once(&self, key: &str) -> Option<ureq::Response> {
        self.head_object(key).ok()
    }

    /// One HEAD of a full object key.
    pub(super) fn head_object(&self, key: &str) -> std::result::Result<ureq::Response, Failure> {
        let creds = self.credentials()?;
        let action = self.bucket.head_object(Some(&creds), key);
        self.send("HEAD", &self.sign(&action), &[], None)
    }

    /// One DELETE of a full object key.
    pub(super) fn delete_object(&self, key: &str) -> std::result::Result<(), Failure> {
        let creds = self.credentials()?;
        let action = self.bucket.delete_object(Some(&creds), key);
        self.send("DELETE", &self.sign(&action), &[], None)
            .map(drop)
    }

    /// `s3://bucket/key` of a full object key.
    pub fn object_url(&self, key: Option<&str>) -> String {
        match key {
            Some(k) if !k.is_empty() => format!("s3://{}/{k}", self.location.bucket),
            _ => format!("s3://{}", self.location.bucket),
        }
    }

    /// Credentials to sign a request with (fetched again when temporary
    /// ones are about to expire).
    pub fn credentials(&self) -> std::result::Result<rusty_s3::Credentials, Failure> {
        let c = self.credentials.current().map_err(Failure::Credentials)?;
        Ok(match &c.token {
            Some(t) => rusty_s3::Credentials::new_with_token(&c.key_id, &c.secret, t),
            None => rusty_s3::Credentials::new(&c.key_id, &c.secret),
        })
    }

    /// The error a failure ends in, after `attempts` attempts.
    pub fn error(&self, op: &Op<'_>, f: &Failure, attempts: u32) -> Error {
        let what = self.object_url(op.key);
        let bucket = &self.location.bucket;
        let endpoint = &self.settings.endpoint;
        let who = self.credentials.who();
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

fn status_failure(status: u16, resp: ureq::Response) -> Failure {
    let bucket_region = resp.header("x-amz-bucket-region").map(str::to_string);
    let reason = resp.status_text().to_string();
    let mut body = String::new();
    let _ = resp.into_reader().take(64 << 10).read_to_string(&mut body);
    // A HEAD answer has no body: the reason phrase is all there is.
    let error = super::xml::error(&body).unwrap_or_default();
    Failure::Status {
        status,
        code: error.code,
        message: if error.message.is_empty() {
            reason
        } else {
            error.message
        },
        bucket_region,
    }
}

/// The body of a small answer.
pub(super) fn read_text(resp: ureq::Response) -> std::result::Result<String, Failure> {
    resp.into_string()
        .map_err(|e| Failure::Transport(format!("reading the answer: {e}")))
}

/// The XML document of type `T` a successful answer carries.
pub(super) fn read_answer<T: serde::de::DeserializeOwned>(
    resp: ureq::Response,
) -> std::result::Result<T, Failure> {
    super::xml::parse(&read_text(resp)?).map_err(Failure::Transport)
}

/// A 2xx answer whose body is an S3 error (CompleteMultipartUpload does that).
pub(super) fn error_in_body(status: u16, body: &str) -> Option<Failure> {
    super::xml::error(body).map(|e| Failure::Status {
        status,
        code: e.code,
        message: e.message,
        bucket_region: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_become_failures_with_their_code_and_message() {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message><UploadId>x</UploadId></Error>";
        let f = error_in_body(200, body).expect("an error document");
        assert_eq!((f.status(), f.code()), (Some(200), "NoSuchUpload"));
        assert_eq!(
            f.describe(),
            "HTTP 200 NoSuchUpload (The specified upload does not exist.)"
        );
        let done = "<CompleteMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Location>http://b.s3.amazonaws.com/k</Location><Bucket>b</Bucket><Key>k</Key><ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag></CompleteMultipartUploadResult>";
        assert!(error_in_body(200, done).is_none());
    }
}
