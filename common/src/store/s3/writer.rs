//! Streaming uploads: one PUT for an object smaller than a part, a
//! multipart upload for the rest, its parts sent by a small pool of threads
//! while the writer fills the next part.
//!
//! Memory is bounded by the part size × (parts in flight + 1): each upload
//! thread holds the part it is sending and the writer holds the part it is
//! filling; the hand-over channel has no buffer, so a writer faster than
//! the network waits instead of queueing parts, and the buffers of sent
//! parts are filled again rather than reallocated. With the defaults (16 MiB
//! parts, 2 in flight) that is 48 MiB for artifacts up to 1,000 parts
//! (16 GiB). S3 allows 10,000 parts, so the part size doubles after each
//! 1,000 parts (up to S3's 5 GiB limit): 10,000 parts hold more than
//! 10 TiB, and the bound grows with the part size only for artifacts that
//! need it (32 MiB parts from 16 GiB on, 64 MiB from 47 GiB on, ...).
//!
//! Every part and every single PUT carries its Content-MD5, which S3
//! verifies before it stores the bytes; the ETag of the answer is checked
//! too, for servers that skip that check. The object appears under its key
//! only when CompleteMultipartUpload (or the single PUT) succeeds; a writer
//! dropped without commit aborts the upload, and so does an interrupted
//! tool (through [`crate::cleanup::ActionGuard`]). A writer killed outright
//! leaves an incomplete upload that `S3Store::temporaries` finds.

use super::http::{self, gone_is_done, Client, Failure, Op};
use super::Inner;
use super::{retry, xml};
use crate::error::{Error, Result};
use base64::Engine;
use md5::{Digest, Md5};
use rusty_s3::S3Action;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// S3's limit on the number of parts of one upload.
const MAX_PARTS: u32 = 10_000;
/// Parts after which the part size doubles.
const PARTS_PER_SIZE: u32 = 1_000;
/// Below this, the buffer grows as needed (small objects stay small).
const GROW_EXACT_ABOVE: usize = 1 << 20;

/// The size of part `number` (1-based) for a base part size.
pub(super) fn part_size(base: u64, number: u32) -> usize {
    let doublings = ((number.max(1) - 1) / PARTS_PER_SIZE).min(20);
    (base << doublings).min(super::config::MAX_PART_SIZE) as usize
}

/// Content-MD5 of bytes: base64 of the raw digest.
pub(super) fn content_md5(data: &[u8]) -> ([u8; 16], String) {
    let digest: [u8; 16] = Md5::digest(data).into();
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
    (digest, b64)
}

/// The ETag of an upload's answer, or a (retryable) `BadDigest` failure when
/// the ETag shows the server stored other bytes than were sent.
///
/// The server checks Content-MD5 itself; this also covers servers that do
/// not (s3s-fs ignores it on UploadPart). An ETag is the MD5 of the bytes
/// except under SSE-KMS or SSE-C, which the answer's headers announce.
fn checked_etag(
    resp: &ureq::Response,
    digest: &[u8; 16],
    what: &str,
) -> std::result::Result<String, Failure> {
    let etag = resp
        .header("etag")
        .map(str::to_string)
        .ok_or_else(|| Failure::Transport("no ETag in the answer".into()))?;
    let not_md5 = resp
        .header("x-amz-server-side-encryption")
        .is_some_and(|v| v.starts_with("aws:kms"))
        || resp
            .header("x-amz-server-side-encryption-customer-algorithm")
            .is_some();
    let stored = etag.trim_matches('"');
    let sent = hex::encode(digest);
    if !not_md5
        && stored.len() == 32
        && stored.chars().all(|c| c.is_ascii_hexdigit())
        && !stored.eq_ignore_ascii_case(&sent)
    {
        return Err(Failure::Status {
            status: 400,
            code: "BadDigest".into(),
            message: format!("the server stored {what} with MD5 {stored}, not {sent}"),
            bucket_region: None,
        });
    }
    Ok(etag)
}

/// Uploads `data` as the whole object `key` with one PUT (retried: the bytes are in memory).
pub(super) fn put_object(client: &Client, key: &str, data: &[u8]) -> Result<()> {
    put(client, key, data, false).map(drop)
}

/// [`put_object`] of a new object: `If-None-Match: *`, so an object another
/// writer created meanwhile is never replaced (412: refused). A retry that
/// finds its own earlier attempt's object (same MD5) is success; a service
/// that does not implement the condition (501) gets a plain PUT.
fn put_new_object(store: &Inner, key: &str, data: &[u8]) -> Result<()> {
    match put(&store.client, key, data, true)? {
        Put::Stored => Ok(()),
        // Only after a retry can the object be an earlier attempt's own:
        // the same bytes another writer stored first are still theirs.
        Put::Taken { retried: true } => {
            let ours = hex::encode(content_md5(data).0);
            match store.etag(key) {
                Some(etag) if etag.eq_ignore_ascii_case(&ours) => Ok(()),
                _ => Err(super::super::taken(&store.client.object_url(Some(key)))),
            }
        }
        Put::Taken { retried: false } => {
            Err(super::super::taken(&store.client.object_url(Some(key))))
        }
    }
}

/// What a PUT came to.
enum Put {
    Stored,
    /// Refused by `If-None-Match: *`: the name exists (`retried`: an
    /// earlier attempt of this PUT may have stored it).
    Taken {
        retried: bool,
    },
}

fn put(client: &Client, key: &str, data: &[u8], new: bool) -> Result<Put> {
    let (digest, md5) = content_md5(data);
    let mut conditional = new;
    // Some services (s3s-fs) keep the bytes of a PUT they answer BadDigest.
    let mut rejected_digest = false;
    let mut attempts = 0;
    retry::call(client, &Op::on("upload", key), || loop {
        attempts += 1;
        let creds = client.credentials()?;
        let mut action = client.bucket.put_object(Some(&creds), key);
        action.headers_mut().insert("content-md5", md5.clone());
        let url = client.sign(&action);
        let mut headers = vec![("content-md5", md5.as_str())];
        if conditional {
            headers.push(("if-none-match", "*"));
        }
        let sent = client
            .send("PUT", &url, &headers, Some(data))
            .and_then(|resp| checked_etag(&resp, &digest, "the object"));
        match sent {
            Ok(_) => return Ok(Put::Stored),
            Err(f) if conditional && f.status() == Some(412) => {
                // Our own rejected bytes, kept by such a service: the
                // object has our size and appeared as it refused them.
                if !(rejected_digest && stored_size(client, key) == Some(data.len() as u64)) {
                    return Ok(Put::Taken {
                        retried: attempts > 1,
                    });
                }
                crate::output::warn(format!(
                    "{}: the service kept the bytes it rejected (BadDigest); replacing them",
                    client.object_url(Some(key))
                ));
                conditional = false;
            }
            // A service without conditional writes: a plain PUT.
            Err(f) if conditional && f.status() == Some(501) => conditional = false,
            Err(f) => {
                rejected_digest |= f.code() == "BadDigest";
                return Err(f);
            }
        }
    })
}

/// The size of the object `key`, when a HEAD finds it.
fn stored_size(client: &Client, key: &str) -> Option<u64> {
    client
        .head_once(key)
        .and_then(|r| r.header("content-length").and_then(|v| v.parse().ok()))
}

/// Aborts a multipart upload; an upload already gone is no error.
pub(super) fn abort_upload(client: &Client, key: &str, upload_id: &str, retry: bool) -> Result<()> {
    let attempt = || {
        let creds = client.credentials()?;
        let action = client
            .bucket
            .abort_multipart_upload(Some(&creds), key, upload_id);
        gone_is_done(
            client
                .send("DELETE", &client.sign(&action), &[], None)
                .map(drop),
        )
    };
    let op = Op::on("abort the multipart upload of", key);
    if retry {
        retry::call(client, &op, attempt)
    } else {
        attempt().map_err(|f| f.into_error(|f| client.error(&op, f, 1)))
    }
}

/// An object being written to S3.
pub(super) struct S3Writer {
    store: Arc<Inner>,
    /// The full object key.
    key: String,
    /// The store key, for the upload's marker.
    store_key: String,
    buf: Vec<u8>,
    upload: Option<Upload>,
    /// Create only: `If-None-Match: *` on the PUT or the completion.
    new: bool,
}

impl S3Writer {
    pub(super) fn new(store: Arc<Inner>, store_key: &str, new: bool) -> S3Writer {
        S3Writer {
            key: store.client.location.object_key(store_key),
            store_key: store_key.to_string(),
            store,
            buf: Vec::new(),
            upload: None,
            new,
        }
    }

    fn next_part_size(&self) -> usize {
        let number = self.upload.as_ref().map_or(1, |u| u.next_part);
        part_size(self.store.client.settings.part_size, number)
    }

    /// Hands the full buffer to the upload threads, starting the upload first if needed.
    fn ship(&mut self) -> Result<()> {
        if self.upload.is_none() {
            self.upload = Some(Upload::start(&self.store, &self.key, &self.store_key)?);
        }
        let up = self.upload.as_mut().expect("started above");
        up.check()?;
        if up.next_part > MAX_PARTS {
            return Err(Error::failed(format!(
                "{}: more than {MAX_PARTS} parts",
                up.client.object_url(Some(&self.key))
            ))
            .hint("raise DBSAFE_S3_PART_SIZE"));
        }
        let part = Part {
            number: up.next_part,
            data: std::mem::take(&mut self.buf),
        };
        up.next_part += 1;
        let sent = up.tx.as_ref().map(|tx| tx.send(part).is_ok());
        if sent != Some(true) {
            return Err(up.failure());
        }
        Ok(())
    }
}

impl Write for S3Writer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let size = self.next_part_size();
        if self.buf.capacity() == 0 {
            if let Some(up) = &self.upload {
                if let Some(b) = up.shared.free.lock().expect("upload state").pop() {
                    self.buf = b;
                }
            }
        }
        let n = (size - self.buf.len()).min(data.len());
        let needed = self.buf.len() + n;
        if needed > self.buf.capacity() && (needed > GROW_EXACT_ABOVE || self.upload.is_some()) {
            // Allocate the part once, not by doubling past it.
            self.buf.reserve_exact(size - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == size {
            self.ship().map_err(io::Error::from)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl super::super::ObjectWriter for S3Writer {
    fn commit(mut self: Box<Self>) -> Result<()> {
        if self.upload.is_none() {
            return match self.new {
                true => put_new_object(&self.store, &self.key, &self.buf),
                false => put_object(&self.store.client, &self.key, &self.buf),
            };
        }
        if !self.buf.is_empty() {
            self.ship()?;
        }
        let new = self.new;
        self.upload.take().expect("checked").finish(new)
    }
}

struct Part {
    number: u32,
    data: Vec<u8>,
}

/// What the upload threads report.
#[derive(Default)]
struct Shared {
    /// Set on failure or abandonment: threads stop retrying and skip parts.
    cancel: AtomicBool,
    /// ETag and MD5 of each uploaded part.
    parts: Mutex<BTreeMap<u32, (String, [u8; 16])>>,
    /// The first failure.
    error: Mutex<Option<Error>>,
    /// Buffers of uploaded parts, for the writer to fill again: the same
    /// parts-in-flight + 1 buffers serve the whole upload.
    free: Mutex<Vec<Vec<u8>>>,
}

/// A multipart upload in progress; aborted on drop unless completed.
struct Upload {
    client: Arc<Client>,
    store: Arc<Inner>,
    key: String,
    id: String,
    marker: String,
    next_part: u32,
    tx: Option<SyncSender<Part>>,
    workers: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    completed: bool,
    _on_signal: crate::cleanup::ActionGuard,
}

impl Upload {
    fn start(store: &Arc<Inner>, key: &str, store_key: &str) -> Result<Upload> {
        let client = Arc::clone(&store.client);
        let id = retry::call(
            &client,
            &Op::on("start the multipart upload of", key),
            || {
                let creds = client.credentials()?;
                let action = client.bucket.create_multipart_upload(Some(&creds), key);
                let url = client.sign(&action);
                let answer: xml::InitiateMultipartUploadResult =
                    http::read_answer(client.send("POST", &url, &[], None)?)?;
                Some(answer.upload_id)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| Failure::Transport("no UploadId in the answer".into()))
            },
        )?;
        // From here on the upload exists: every exit path must abort it.
        let marker = store.marker_key(store_key, &id);
        let on_signal = {
            let (client, key, id) = (Arc::clone(&client), key.to_string(), id.clone());
            let marker = marker.clone();
            crate::cleanup::ActionGuard::new(move || {
                if abort_upload(&client, &key, &id, false).is_ok() {
                    // A single attempt: there is no time to retry.
                    let _ = client.delete_object(&marker);
                }
            })
        };
        if let Err(e) = put_object(&client, &marker, b"") {
            let _ = abort_upload(&client, key, &id, true);
            return Err(e);
        }
        let (tx, rx) = sync_channel::<Part>(0);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared::default());
        let workers = (0..client.settings.parts_in_flight)
            .map(|i| {
                let (client, rx, shared) =
                    (Arc::clone(&client), Arc::clone(&rx), Arc::clone(&shared));
                let (key, id) = (key.to_string(), id.clone());
                std::thread::Builder::new()
                    .name(format!("s3-upload-{i}"))
                    .spawn(move || upload_parts(&client, &key, &id, &rx, &shared))
                    .map_err(|e| Error::failed(format!("cannot start an upload thread: {e}")))
            })
            .collect::<Result<Vec<_>>>();
        let mut up = Upload {
            client,
            store: Arc::clone(store),
            key: key.to_string(),
            id,
            marker,
            next_part: 1,
            tx: Some(tx),
            workers: Vec::new(),
            shared,
            completed: false,
            _on_signal: on_signal,
        };
        up.workers = workers?;
        Ok(up)
    }

    /// The first failure of an upload thread, if there was one.
    fn check(&self) -> Result<()> {
        match self.shared.error.lock().expect("upload state").take() {
            Some(e) => {
                self.shared.cancel.store(true, Ordering::Relaxed);
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn failure(&self) -> Error {
        self.check().err().unwrap_or_else(|| {
            Error::failed(format!(
                "{}: the upload threads stopped",
                self.client.object_url(Some(&self.key))
            ))
        })
    }

    fn join(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }

    /// Waits for the parts in flight, then makes the object appear.
    /// Completes the upload; `new`: with `If-None-Match: *` (see [`put_new_object`]).
    fn finish(mut self, new: bool) -> Result<()> {
        self.join();
        self.check()?;
        let parts = std::mem::take(&mut *self.shared.parts.lock().expect("upload state"));
        let count = self.next_part - 1;
        if parts.len() as u32 != count || parts.keys().copied().ne(1..=count) {
            return Err(Error::failed(format!(
                "{}: {} of {count} parts uploaded",
                self.client.object_url(Some(&self.key)),
                parts.len()
            )));
        }
        let mut all_md5 = Md5::new();
        for (_, md5) in parts.values() {
            all_md5.update(md5);
        }
        let expected_etag = format!("{}-{count}", hex::encode(all_md5.finalize()));
        let client = &self.client;
        let mut attempts = 0;
        let mut conditional = new;
        let mut taken = false;
        retry::call(
            client,
            &Op::on("complete the multipart upload of", &self.key),
            || {
                attempts += 1;
                let creds = client.credentials()?;
                let action = client.bucket.complete_multipart_upload(
                    Some(&creds),
                    &self.key,
                    &self.id,
                    parts.values().map(|(etag, _)| etag.as_str()),
                );
                let url = client.sign(&action);
                let body = action.body();
                let headers: &[(&str, &str)] = if conditional {
                    &[("if-none-match", "*")]
                } else {
                    &[]
                };
                match client.send("POST", &url, headers, Some(body.as_bytes())) {
                    Ok(resp) => completed(resp),
                    // The name exists: this upload's only if an earlier
                    // attempt completed it and its answer was lost.
                    Err(f) if conditional && f.status() == Some(412) => {
                        taken = attempts == 1
                            || self.store.etag(&self.key).as_deref()
                                != Some(expected_etag.as_str());
                        Ok(())
                    }
                    // A service without conditional writes: completed plainly.
                    Err(f) if conditional && f.status() == Some(501) => {
                        conditional = false;
                        let headers: &[(&str, &str)] = &[];
                        completed(client.send("POST", &url, headers, Some(body.as_bytes()))?)
                    }
                    // A retry after an answer lost on the way: the upload is
                    // gone because it completed, if the object is ours.
                    Err(f) if attempts > 1 && f.code() == "NoSuchUpload" => {
                        match self.store.etag(&self.key) {
                            Some(etag) if etag == expected_etag => Ok(()),
                            _ => Err(f),
                        }
                    }
                    Err(f) => Err(f),
                }
            },
        )?;
        if taken {
            // The upload stays incomplete: abort it (Drop), and say why.
            return Err(super::super::taken(&client.object_url(Some(&self.key))));
        }
        self.completed = true;
        let _ = self.store.delete_object(&self.marker);
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.completed {
            return;
        }
        self.shared.cancel.store(true, Ordering::Relaxed);
        // Parts still in flight could land after an abort and linger.
        self.join();
        match abort_upload(&self.client, &self.key, &self.id, true) {
            Ok(()) => {
                let _ = self.store.delete_object(&self.marker);
            }
            Err(e) => crate::output::warn(format!(
                "{}; `dbprune --stale-tmp` removes the incomplete upload later",
                e.message
            )),
        }
    }
}

/// An upload thread: sends parts until the channel closes.
fn upload_parts(
    client: &Client,
    key: &str,
    upload_id: &str,
    rx: &Mutex<Receiver<Part>>,
    shared: &Shared,
) {
    loop {
        let mut part = match rx.lock().map(|r| r.recv()) {
            Ok(Ok(part)) => part,
            _ => return,
        };
        if !shared.cancel.load(Ordering::Relaxed) {
            upload_part(client, key, upload_id, &part, shared);
        }
        part.data.clear();
        shared.free.lock().expect("upload state").push(part.data);
    }
}

/// Sends one part (retried: its bytes are in memory) and records its ETag or the failure.
fn upload_part(client: &Client, key: &str, upload_id: &str, part: &Part, shared: &Shared) {
    let (digest, md5) = content_md5(&part.data);
    let verb = format!("upload part {} of", part.number);
    let result = retry::call_until(client, &Op::on(&verb, key), Some(&shared.cancel), || {
        let creds = client.credentials()?;
        let mut action =
            client
                .bucket
                .upload_part(Some(&creds), key, part.number as u16, upload_id);
        action.headers_mut().insert("content-md5", md5.clone());
        let url = client.sign(&action);
        let resp = client.send("PUT", &url, &[("content-md5", &md5)], Some(&part.data))?;
        checked_etag(&resp, &digest, &format!("part {}", part.number))
    });
    match result {
        Ok(etag) => {
            shared
                .parts
                .lock()
                .expect("upload state")
                .insert(part.number, (etag, digest));
        }
        Err(e) => {
            shared.cancel.store(true, Ordering::Relaxed);
            let mut slot = shared.error.lock().expect("upload state");
            if slot.is_none() {
                *slot = Some(e);
            }
        }
    }
}

/// A 2xx answer to CompleteMultipartUpload: done, unless its body is an
/// error in disguise.
fn completed(resp: ureq::Response) -> std::result::Result<(), Failure> {
    let status = resp.status();
    let text = http::read_text(resp)?;
    http::error_in_body(status, &text).map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_double_every_thousand_and_cover_large_artifacts() {
        let base = 16 << 20;
        assert_eq!(part_size(base, 1), 16 << 20);
        assert_eq!(part_size(base, 1000), 16 << 20);
        assert_eq!(part_size(base, 1001), 32 << 20);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(base, n) as u64).sum();
        assert!(total > 10 << 40, "10,000 parts hold more than 10 TiB");
        assert_eq!(part_size(5 << 30, 5000), 5 << 30);
    }

    #[test]
    fn content_md5_is_base64_of_the_digest() {
        assert_eq!(content_md5(b"").1, "1B2M2Y8AsgTpgAmY7PhCfg==");
    }
}
