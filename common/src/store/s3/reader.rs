//! Streaming downloads that survive a dropped connection.
//!
//! An object is read through one GET, never buffered whole. When the
//! connection breaks or stalls mid-body, the reader asks again for the rest
//! (`Range: bytes=N-`, `If-Match` the ETag it started with, so the bytes
//! cannot come from a different version of the object) and carries on; the
//! caller sees an uninterrupted stream. The number of consecutive failures
//! without progress is bounded by the store's attempts.

use super::http::{Client, Failure, Op};
use crate::error::Result;
use crate::store::remote::{Reopen, ResumingReader};
use rusty_s3::S3Action;
use std::sync::Arc;

/// Starts reading `key` (a full object key); not found is exit 3. A
/// broken-off body is resumed with a range request pinned to the ETag.
pub(super) fn open(client: Arc<Client>, key: String) -> Result<ResumingReader> {
    let resp = get(&client, &key, None)?;
    let url = client.object_url(Some(&key));
    let attempts = client.settings.attempts;
    let reopen: Reopen = Box::new(move |pos, etag| get(&client, &key, Some((pos, etag))));
    Ok(ResumingReader::new(url, attempts, resp, "etag", reopen))
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
