//! Streaming downloads that survive a dropped connection.
//!
//! An object is read through one GET, never buffered whole. When the
//! connection breaks or stalls mid-body, the reader asks again for the rest
//! (`Range: bytes=N-`, `If-Match` the ETag it started with, so the bytes
//! cannot come from a different version of the object) and carries on; the
//! caller sees an uninterrupted stream. The number of consecutive failures
//! without progress is bounded by the store's attempts.

use super::http::{Client, Failure, Op};
use crate::error::{Error, Result};
use rusty_s3::S3Action;
use std::io::{self, Read};
use std::sync::Arc;

/// An object being read from S3.
pub(super) struct S3Reader {
    client: Arc<Client>,
    key: String,
    body: Option<Box<dyn Read + Send + Sync>>,
    pos: u64,
    len: Option<u64>,
    etag: Option<String>,
    failures: u32,
}

impl S3Reader {
    /// Starts reading `key` (a full object key); not found is exit 3.
    pub(super) fn open(client: Arc<Client>, key: String) -> Result<S3Reader> {
        let resp = get(&client, &key, None)?;
        let len = resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok());
        let etag = resp.header("etag").map(str::to_string);
        Ok(S3Reader {
            body: Some(resp.into_reader()),
            client,
            key,
            pos: 0,
            len,
            etag,
            failures: 0,
        })
    }

    fn resume(&mut self, cause: &str) -> io::Result<()> {
        self.failures += 1;
        let url = self.client.object_url(Some(&self.key));
        if self.failures >= self.client.settings.attempts {
            return Err(io::Error::other(Error::failed(format!(
                "download {url} failed at byte {} after {} attempts: {cause}",
                self.pos, self.failures
            ))));
        }
        crate::output::warn(format!(
            "download {url} broke off at byte {}: {cause}; resuming",
            self.pos
        ));
        let resp = get(
            &self.client,
            &self.key,
            Some((self.pos, self.etag.as_deref())),
        )
        .map_err(io::Error::other)?;
        if resp.status() != 206 {
            return Err(io::Error::other(Error::failed(format!(
                "download {url}: the server ignored the range request (HTTP {}) while resuming at byte {}",
                resp.status(),
                self.pos
            ))));
        }
        self.body = Some(resp.into_reader());
        Ok(())
    }
}

impl Read for S3Reader {
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

/// One GET (retried while no byte was handed out), optionally from an offset.
fn get(client: &Client, key: &str, from: Option<(u64, Option<&str>)>) -> Result<ureq::Response> {
    let range = from.map(|(pos, _)| format!("bytes={pos}-"));
    let if_match = from.and_then(|(_, etag)| etag);
    super::retry::call(client, &Op::on("download", key), || {
        let creds = client.credentials()?;
        let mut action = client.bucket.get_object(Some(&creds), key);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(r) = &range {
            action.headers_mut().insert("range", r.as_str());
            headers.push(("range", r));
        }
        if let Some(e) = if_match {
            action.headers_mut().insert("if-match", e);
            headers.push(("if-match", e));
        }
        let url = client.sign(&action);
        client
            .send("GET", &url, &headers, None)
            .map_err(|f| match f {
                Failure::Status { status: 412, .. } => Failure::Status {
                    status: 412,
                    code: "PreconditionFailed".into(),
                    message: "the object changed while it was being read".into(),
                    bucket_region: None,
                },
                f => f,
            })
    })
}
