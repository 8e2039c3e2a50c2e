//! Stores in Google Cloud Storage (`gs://bucket/prefix`) and Azure Blob
//! Storage (`az://container/prefix`).
//!
//! Both services are spoken to over their own REST APIs ([`gcs`],
//! [`azure`]), each behind the small [`Service`] trait: whole-object puts,
//! uploads in parts that appear only once completed, ranged reads, listing
//! and deletion, each request tried once. What the [`Store`] trait asks of a
//! remote store is built here once on top of it: the prefix, key checks,
//! pointers as small objects, retries ([`crate::store::retry`]), a writer
//! that buffers one part at a time, and a reader that resumes a broken
//! download where it stopped, pinned to the version it started with.
//!
//! Incomplete uploads are not listed as temporaries: neither service lets
//! a client enumerate them as S3 does (a GCS resumable session is known
//! only to its writer; Azure keeps uncommitted blocks out of listings), and
//! both discard them on their own after a week. A writer that fails or is
//! dropped abandons its upload at once.
//!
//! Credentials follow each service's conventions ([`auth`]): service-account
//! JSON, user credentials and the metadata server (GKE workload identity)
//! for Google; a connection string, an account key, a SAS token or a
//! managed identity for Azure.

mod auth;
mod azure;
mod gcs;

use super::remote::{Failure, Reopen, ResumingReader};
use super::retry::Transient;
use super::{ObjectInfo, ObjectWriter, StaleTemporary, Store};
use crate::error::{Error, Result};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// Bytes per uploaded part: a multiple of 256 KiB, as GCS requires.
const PART_SIZE: usize = 8 << 20;
/// Attempts per request.
const ATTEMPTS: u32 = 5;
/// How long a request may wait for the service.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a create-only write was refused because the name exists.
fn name_taken(f: &Failure) -> bool {
    f.status() == Some(412) || f.code() == "BlobAlreadyExists"
}

/// What a request is about, for messages: a verb phrase and the full key.
pub(super) struct Op<'a> {
    verb: &'a str,
    key: &'a str,
}

/// A part of an upload in parts.
pub(super) struct Chunk<'a> {
    /// What identifies the upload.
    upload: &'a str,
    /// The part's number, from 0.
    number: u32,
    /// Where its bytes start in the object.
    offset: u64,
    /// Its bytes.
    data: &'a [u8],
    /// Sent again after an attempt that failed: the service may hold some
    /// of its bytes already.
    again: bool,
}

/// Where a read starts: a byte offset, and the version a first read
/// returned (a resumed read takes only that version).
pub(super) struct ReadFrom<'a> {
    offset: u64,
    version: Option<&'a str>,
}

/// One bucket or container of a service, each request tried once. Keys are
/// full object names (the store's prefix included).
pub(super) trait Service: Send + Sync {
    /// `gs://bucket/key` of a full key (the bucket alone for an empty one).
    fn url(&self, key: &str) -> String;
    /// Writes a whole object; `new`: refused if the name exists.
    fn put(&self, key: &str, data: &[u8], new: bool) -> std::result::Result<(), Failure>;
    /// Starts an upload in parts; what identifies it to the parts.
    fn start(&self, key: &str, new: bool) -> std::result::Result<String, Failure>;
    /// Uploads a part that is not the last.
    fn put_part(&self, key: &str, part: &Chunk<'_>) -> std::result::Result<(), Failure>;
    /// Completes an upload with its last part (which may be empty); the
    /// object appears under its name.
    fn finish(&self, key: &str, last: &Chunk<'_>, new: bool) -> std::result::Result<(), Failure>;
    /// Abandons an upload, as far as the service lets a client.
    fn abort(&self, key: &str, upload: &str);
    /// The answer header that names an object's version.
    fn version_header(&self) -> &'static str;
    /// Reads `key` from where `from` says.
    fn get(&self, key: &str, from: &ReadFrom<'_>) -> std::result::Result<ureq::Response, Failure>;
    /// Whether `key` exists.
    fn exists(&self, key: &str) -> std::result::Result<bool, Failure>;
    /// One page of the objects under the full prefix `prefix` (full keys),
    /// and the token of the next page.
    fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
    ) -> std::result::Result<(Vec<ObjectInfo>, Option<String>), Failure>;
    /// Deletes `key` (no error when it is already gone).
    fn delete(&self, key: &str) -> std::result::Result<(), Failure>;
    /// The error a failure ends in, after `attempts` attempts, with the
    /// service's hints (which credentials, which endpoint).
    fn error(&self, op: &Op<'_>, f: &Failure, attempts: u32) -> Error;
}

/// Runs one request through the retry layer; its last failure becomes the error.
fn call<T>(
    service: &dyn Service,
    op: &Op<'_>,
    attempt: impl FnMut() -> std::result::Result<T, Failure>,
) -> Result<T> {
    let what = || format!("{} {}", op.verb, service.url(op.key));
    super::remote::retry(ATTEMPTS, None, &what, attempt)
        .map_err(|(f, n)| f.into_error(|f| service.error(op, f, n)))
}

/// [`call`] for a request whose `attempt(again)` must know whether an
/// earlier attempt of it failed (and may have got partly through).
fn call_again<T>(
    service: &dyn Service,
    op: &Op<'_>,
    mut attempt: impl FnMut(bool) -> std::result::Result<T, Failure>,
) -> Result<T> {
    let mut sent = false;
    call(service, op, || attempt(std::mem::replace(&mut sent, true)))
}

/// Whether a request found its object: an answer, or a 404 that `gone`
/// says is about the object (not its bucket).
fn found(
    answer: std::result::Result<ureq::Response, Failure>,
    gone: impl Fn(&Failure) -> bool,
) -> std::result::Result<bool, Failure> {
    match answer {
        Ok(_) => Ok(true),
        Err(f) if f.status() == Some(404) && gone(&f) => Ok(false),
        Err(f) => Err(f),
    }
}

/// The common messages of both services' errors: not found, the retries
/// spent, the endpoint unreachable.
fn plain_error(url: &str, op: &Op<'_>, f: &Failure, attempts: u32, endpoint: &str) -> Error {
    if f.status() == Some(404) {
        return Error::not_found(format!("{url} not found"));
    }
    let tries = if attempts > 1 {
        format!(" after {attempts} attempts; last answer")
    } else {
        String::new()
    };
    let e = Error::failed(format!("{} {url} failed{tries}: {}", op.verb, f.describe()));
    match f {
        Failure::Transport(_) => e.hint(format!("check that {endpoint} is reachable")),
        _ if f.is_transient() => {
            e.hint("the service is unavailable or throttling; try again later")
        }
        _ => e,
    }
}

/// Sends one request: the answer for 2xx and 3xx, the failure otherwise.
/// `error_of` reads the service's error code and message from an error
/// answer's body; a bodiless answer (HEAD) has Azure's code in a header.
fn send(
    req: ureq::Request,
    body: Option<&[u8]>,
    error_of: fn(&str) -> (String, String),
) -> std::result::Result<ureq::Response, Failure> {
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    match result {
        Ok(resp) => Ok(resp),
        Err(ureq::Error::Status(status, resp)) => {
            let reason = resp.status_text().to_string();
            let header_code = resp
                .header("x-ms-error-code")
                .unwrap_or_default()
                .to_string();
            let mut text = String::new();
            let _ = resp.into_reader().take(64 << 10).read_to_string(&mut text);
            let (code, message) = error_of(&text);
            Err(Failure::Status {
                status,
                code: if code.is_empty() { header_code } else { code },
                message: if message.is_empty() { reason } else { message },
                bucket_region: None,
            })
        }
        Err(ureq::Error::Transport(t)) => {
            Err(Failure::Transport(crate::http::transport_message(&t)))
        }
    }
}

/// The agent both services send with: dbsafe's trust roots, no redirects.
fn agent() -> Result<ureq::Agent> {
    Ok(crate::http::agent_builder()?
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(TIMEOUT)
        .timeout_write(TIMEOUT)
        .redirects(0)
        .build())
}

/// A store in a bucket or container of a [`Service`].
pub struct CloudStore {
    service: Arc<dyn Service>,
    /// The store's location as it was given, without secrets.
    location: String,
    /// Object names start with it (`prefix/`), or it is empty.
    prefix: String,
}

impl CloudStore {
    /// Opens `gs://bucket/prefix` or `az://container/prefix` with the
    /// credentials of the environment. Without `create`, a prefix with no
    /// object is an error (exit 3): a mistyped store must not look empty.
    pub fn open(location: &str, create: bool) -> Result<CloudStore> {
        let (scheme, rest) = location
            .split_once("://")
            .ok_or_else(|| Error::usage(format!("store {location:?} is not a URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() || (!prefix.is_empty() && super::invalid_key(prefix)) {
            return Err(Error::usage(format!(
                "store {location:?}: write {scheme}://BUCKET/PREFIX"
            )));
        }
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let service: Arc<dyn Service> = match scheme {
            "gs" => Arc::new(gcs::Gcs::from_env(bucket, &var)?),
            "az" => Arc::new(azure::Azure::from_env(bucket, &var)?),
            _ => return Err(Error::usage(format!("unsupported store {location:?}"))),
        };
        let store = CloudStore {
            service,
            location: format!(
                "{scheme}://{bucket}{}{prefix}",
                if prefix.is_empty() { "" } else { "/" }
            ),
            prefix: prefix.to_string(),
        };
        // A listing tells a bucket that is not there (an error) from an
        // object that is not (a fetch's "not archived"), with a prefix or
        // without one.
        if !create && store.page("")?.0.is_empty() && !store.prefix.is_empty() {
            return Err(Error::not_found(format!(
                "store {} does not exist (no object under that prefix)",
                store.location
            ))
            .hint("check the store URL (--store / DBSAFE_STORE)"));
        }
        Ok(store)
    }

    /// The full object name of a store key.
    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The store key of a full object name under the prefix.
    fn store_key<'a>(&self, full: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(&self.prefix)?.strip_prefix('/')
        }
    }

    /// One request about the object of store key `key`, retried.
    fn on_object<T>(
        &self,
        verb: &str,
        key: &str,
        request: impl Fn(&dyn Service, &str) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        check_key(key)?;
        let full = self.full(key);
        let op = Op { verb, key: &full };
        call(&*self.service, &op, || request(&*self.service, &full))
    }

    /// The first page under the store key prefix `prefix` ("" for all).
    fn page(&self, prefix: &str) -> Result<(Vec<ObjectInfo>, Option<String>)> {
        let full = if prefix.is_empty() {
            self.full("")
        } else {
            format!("{}/", self.full(prefix))
        };
        let op = Op {
            verb: "list",
            key: &full,
        };
        call(&*self.service, &op, || self.service.list_page(&full, None))
    }
}

fn check_key(key: &str) -> Result<()> {
    if super::invalid_key(key) {
        return Err(Error::usage(format!("invalid store key {key:?}")));
    }
    Ok(())
}

impl Store for CloudStore {
    fn describe(&self) -> String {
        self.location.clone()
    }

    fn writer(&self, key: &str, new: bool) -> Result<Box<dyn ObjectWriter>> {
        check_key(key)?;
        Ok(Box::new(CloudWriter::new(self, key, new)))
    }

    /// A download resumed where it broke off, from the same version.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let start = ReadFrom {
            offset: 0,
            version: None,
        };
        let first = self.on_object("download", key, |s, full| s.get(full, &start))?;
        let (service, full) = (Arc::clone(&self.service), self.full(key));
        let url = service.url(&full);
        let header = service.version_header();
        let reopen: Reopen = Box::new(move |pos, version| {
            let op = Op {
                verb: "download",
                key: &full,
            };
            let from = ReadFrom {
                offset: pos,
                version,
            };
            call(&*service, &op, || service.get(&full, &from))
        });
        Ok(Box::new(ResumingReader::new(
            url, ATTEMPTS, first, header, reopen,
        )))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        self.on_object("look up", key, |s, full| s.exists(full))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        check_key(prefix)?;
        let full = format!("{}/", self.full(prefix));
        let op = Op {
            verb: "list",
            key: &full,
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (page, next) = call(&*self.service, &op, || {
                self.service.list_page(&full, token.as_deref())
            })?;
            out.extend(page.into_iter().filter_map(|o| {
                let key = self.store_key(&o.key)?.to_string();
                Some(ObjectInfo { key, ..o })
            }));
            match next {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.on_object("delete", key, |s, full| s.delete(full))
    }

    /// None to list: see the module documentation.
    fn temporaries(&self, prefix: &str) -> Result<Vec<StaleTemporary>> {
        check_key(prefix)?;
        Ok(Vec::new())
    }

    fn remove_temporary(&self, id: &str) -> Result<()> {
        Err(Error::usage(format!(
            "{id:?} is not an incomplete upload of {}",
            self.location
        )))
    }
}

/// An object being written: one part buffered at a time, the upload
/// started only when a second part is needed (a small object is one put).
struct CloudWriter {
    service: Arc<dyn Service>,
    key: String,
    new: bool,
    /// Of a create-only object, the sha256 of what was written: a name found
    /// taken after a retried attempt is this writer's only when the object
    /// there hashes the same.
    written: Option<sha2::Sha256>,
    buf: Vec<u8>,
    /// The upload, once started.
    upload: Option<String>,
    parts: u32,
    offset: u64,
    committed: bool,
}

impl CloudWriter {
    fn new(store: &CloudStore, key: &str, new: bool) -> CloudWriter {
        CloudWriter {
            service: Arc::clone(&store.service),
            key: store.full(key),
            new,
            written: new.then(sha2::Digest::new),
            buf: Vec::new(),
            upload: None,
            parts: 0,
            offset: 0,
            committed: false,
        }
    }

    fn op<'a>(&'a self, verb: &'a str) -> Op<'a> {
        Op {
            verb,
            key: &self.key,
        }
    }

    /// Uploads the buffered part.
    fn ship(&mut self) -> Result<()> {
        let s = &*self.service;
        let upload = match &self.upload {
            Some(u) => u.clone(),
            None => {
                let u = call(s, &self.op("start the upload of"), || {
                    s.start(&self.key, self.new)
                })?;
                self.upload = Some(u.clone());
                u
            }
        };
        let verb = format!("upload part {} of", self.parts + 1);
        call_again(s, &self.op(&verb), |again| {
            s.put_part(&self.key, &self.chunk(&upload, again))
        })?;
        self.parts += 1;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// The buffered bytes as the next part of `upload`, sent `again` or not.
    fn chunk<'a>(&'a self, upload: &'a str, again: bool) -> Chunk<'a> {
        Chunk {
            upload,
            number: self.parts,
            offset: self.offset,
            data: &self.buf,
            again,
        }
    }

    /// Runs the request that makes the object appear (`attempt(again)`); a
    /// create-only one refused on its first attempt means another writer
    /// has the name (on a later attempt, it is our own earlier attempt that
    /// got through).
    fn complete(
        &self,
        verb: &str,
        mut attempt: impl FnMut(bool) -> std::result::Result<(), Failure>,
    ) -> Result<()> {
        let mut taken = None;
        call_again(&*self.service, &self.op(verb), |again| {
            match attempt(again) {
                Err(f) if self.new && name_taken(&f) => {
                    taken = Some(again);
                    Ok(())
                }
                other => other,
            }
        })?;
        match taken {
            None => Ok(()),
            // On a retry, the name may have been taken by our own attempt
            // that got through unanswered, or by another writer meanwhile:
            // the bytes there tell.
            Some(true) if self.holds_what_was_written()? => Ok(()),
            Some(_) => Err(super::taken(&self.service.url(&self.key))),
        }
    }

    /// Whether the object under the key hashes as what this writer wrote.
    fn holds_what_was_written(&self) -> Result<bool> {
        use sha2::Digest;
        let Some(written) = self.written.clone() else {
            return Ok(false);
        };
        let from = ReadFrom {
            offset: 0,
            version: None,
        };
        let s = &*self.service;
        let answer = call(s, &self.op("read back"), || s.get(&self.key, &from))?;
        let mut there = sha2::Sha256::new();
        std::io::copy(&mut answer.into_reader(), &mut there)
            .map_err(|e| Error::io(format!("reading back {}", s.url(&self.key)), e))?;
        Ok(there.finalize() == written.finalize())
    }
}

impl Write for CloudWriter {
    /// A full part is shipped when more bytes come: the last one, whatever
    /// its size, goes with the completion.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() == PART_SIZE {
            self.ship().map_err(io::Error::other)?;
        }
        let n = data.len().min(PART_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if let Some(h) = &mut self.written {
            sha2::Digest::update(h, &data[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for CloudWriter {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let s = Arc::clone(&self.service);
        match self.upload.clone() {
            None => {
                let (key, buf, new) = (&self.key, &self.buf, self.new);
                self.complete("upload", |_| s.put(key, buf, new))?;
            }
            Some(upload) => {
                self.complete("complete the upload of", |again| {
                    s.finish(&self.key, &self.chunk(&upload, again), self.new)
                })?;
            }
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for CloudWriter {
    fn drop(&mut self) {
        if let (false, Some(upload)) = (self.committed, &self.upload) {
            self.service.abort(&self.key, upload);
        }
    }
}

/// `SCHEME://BUCKET/KEY` of a full key (the bucket alone for an empty one).
fn object_url(scheme: &str, bucket: &str, key: &str) -> String {
    match key {
        "" => format!("{scheme}://{bucket}"),
        k => format!("{scheme}://{bucket}/{k}"),
    }
}

/// Percent-encodes a path segment or query value (everything but RFC 3986's
/// unreserved characters).
fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Percent-encodes an object name in a URL path, keeping its slashes.
fn encode_path(s: &str) -> String {
    s.split('/').map(encode).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_which_are_transient_and_which_mean_the_name_is_taken() {
        let status = |status, code: &str| Failure::Status {
            status,
            code: code.into(),
            message: String::new(),
            bucket_region: None,
        };
        assert!(status(503, "ServerBusy").is_transient() && status(429, "").is_transient());
        assert!(!status(403, "forbidden").is_transient() && !status(404, "").is_transient());
        assert!(name_taken(&status(412, "conditionNotMet")));
        assert!(name_taken(&status(409, "BlobAlreadyExists")));
        assert!(!name_taken(&status(409, "ContainerBeingDeleted")));
    }

    /// A service whose first `lost` uploads get no answer and whose next
    /// one finds the name taken, holding `there`.
    struct TakenOnRetry {
        there: &'static str,
        lost: u32,
        puts: std::sync::Mutex<u32>,
    }

    impl Service for TakenOnRetry {
        fn url(&self, key: &str) -> String {
            format!("gs://b/{key}")
        }
        fn put(&self, _: &str, _: &[u8], _: bool) -> std::result::Result<(), Failure> {
            let mut n = self.puts.lock().unwrap();
            *n += 1;
            match *n {
                n if n <= self.lost => Err(Failure::Transport("connection reset".into())),
                _ => Err(Failure::Status {
                    status: 412,
                    code: "conditionNotMet".into(),
                    message: String::new(),
                    bucket_region: None,
                }),
            }
        }
        fn start(&self, _: &str, _: bool) -> std::result::Result<String, Failure> {
            unreachable!("one part")
        }
        fn put_part(&self, _: &str, _: &Chunk<'_>) -> std::result::Result<(), Failure> {
            unreachable!("one part")
        }
        fn finish(&self, _: &str, _: &Chunk<'_>, _: bool) -> std::result::Result<(), Failure> {
            unreachable!("one part")
        }
        fn abort(&self, _: &str, _: &str) {}
        fn version_header(&self) -> &'static str {
            "x-goog-generation"
        }
        fn get(&self, _: &str, _: &ReadFrom<'_>) -> std::result::Result<ureq::Response, Failure> {
            Ok(ureq::Response::new(200, "OK", self.there).expect("a response"))
        }
        fn exists(&self, _: &str) -> std::result::Result<bool, Failure> {
            Ok(true)
        }
        fn list_page(
            &self,
            _: &str,
            _: Option<&str>,
        ) -> std::result::Result<(Vec<ObjectInfo>, Option<String>), Failure> {
            Ok((Vec::new(), None))
        }
        fn delete(&self, _: &str) -> std::result::Result<(), Failure> {
            Ok(())
        }
        fn error(&self, _: &Op<'_>, f: &Failure, _: u32) -> Error {
            Error::failed(format!("{f:?}"))
        }
    }

    #[test]
    fn a_name_taken_after_a_retry_is_ours_only_when_it_holds_our_bytes() {
        // Taken on the first attempt: another writer's, even with our bytes.
        for (lost, there, ours) in [(1, "mine", true), (1, "theirs", false), (0, "mine", false)] {
            let store = CloudStore {
                service: Arc::new(TakenOnRetry {
                    there,
                    lost,
                    puts: std::sync::Mutex::new(0),
                }),
                location: "gs://b".into(),
                prefix: String::new(),
            };
            let mut w = Box::new(CloudWriter::new(&store, "backups/x", true));
            w.write_all(b"mine").unwrap();
            let done = w.commit();
            assert_eq!(done.is_ok(), ours, "{there}: {done:?}");
            if let Err(e) = done {
                assert_eq!(e.code(), crate::ExitCode::Refused, "{e}");
            }
        }
    }

    #[test]
    fn names_are_percent_encoded_but_keep_their_slashes() {
        assert_eq!(encode("a b/c+d"), "a%20b%2Fc%2Bd");
        assert_eq!(encode_path("backups/x y.zst"), "backups/x%20y.zst");
    }
}
