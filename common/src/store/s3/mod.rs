//! A store in an S3-compatible bucket: `s3://bucket/prefix`.
//!
//! Store keys map to `prefix/key`. S3 has no rename, so atomicity comes
//! from S3 itself: an object appears only once its single PUT or its
//! multipart upload completed ([`writer`]), and a reader never sees a
//! partial artifact under a final name. Reads stream ([`reader`]).
//!
//! Configuration is the aws CLI's ([`config`]): `AWS_ENDPOINT_URL`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/
//! `AWS_SESSION_TOKEN` or `AWS_PROFILE` with `~/.aws/credentials`, plus
//! `DBSAFE_S3_PATH_STYLE`, `DBSAFE_S3_PART_SIZE` (default 16M),
//! `DBSAFE_S3_PARTS_IN_FLIGHT` (default 2), `DBSAFE_S3_RETRIES` (attempts
//! per request, default 5) and `DBSAFE_S3_TIMEOUT` (default 60s).
//!
//! Incomplete uploads are the S3 store's temporaries. They are found with
//! ListMultipartUploads and, for servers without it, through a marker
//! object `prefix/.dbsafe-uploads/HEX(UPLOAD-ID)/KEY` that a writer puts
//! next to each multipart upload it starts and deletes once the upload is
//! completed or aborted. Their age is that of their newest part, so a
//! long upload still in progress does not look stale.
//!
//! Requests are tried once by [`http`] and retried by the layer around
//! them, [`retry`]. Locks and the audit log are not the store's business
//! ([`crate::lock`], [`crate::audit`]).
//!
//! The client is rusty-s3 (signing) and ureq (blocking HTTP), not
//! `object_store`: on the same 1 GiB upload to s3s-fs both ran at the
//! server's speed, while `object_store` needs a tokio runtime behind this
//! blocking trait, builds twice the crates and makes a binary 2.7 times
//! larger. What it would bring (the full AWS credential chain, Azure) is
//! not needed yet; conditional writes are one `If-None-Match` header away.

mod config;
mod credentials;
mod http;
mod reader;
mod retry;
mod writer;
mod xml;

use super::{ObjectInfo, ObjectWriter, StaleTemporary, Store};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use http::{gone_is_done, Client, Op};
use retry::call;
use rusty_s3::S3Action;
use std::io::Read;
use std::sync::Arc;

/// Where upload markers live, under the store's prefix.
const UPLOADS: &str = ".dbsafe-uploads";
/// Separates key and upload id in a temporary's id.
const UPLOAD_ID: &str = "?uploadId=";

/// A listed object: key, size, last modification.
type Listed = (String, u64, DateTime<Utc>);
/// An incomplete upload: full key, upload id, initiation.
type Pending = (String, String, DateTime<Utc>);

/// A store in an S3 bucket.
pub struct S3Store {
    inner: Arc<Inner>,
}

/// What writers share with the store.
struct Inner {
    client: Arc<Client>,
}

impl S3Store {
    /// Opens `s3://bucket/prefix` with settings from the environment.
    ///
    /// Without `create`, a prefix with no object is an error (exit 3), as a
    /// missing local directory is: a mistyped store must not look empty.
    pub fn open(location: &str, create: bool) -> Result<S3Store> {
        let loc = config::Location::parse(location)?;
        let settings = config::settings(&|k| std::env::var(k).ok())?;
        let store = S3Store {
            inner: Arc::new(Inner {
                client: Arc::new(Client::new(loc, settings)?),
            }),
        };
        if !create {
            let (objects, _) = store.inner.list_page("", None, 1)?;
            if objects.is_empty() && !store.inner.client.location.prefix.is_empty() {
                return Err(Error::not_found(format!(
                    "store {} does not exist (no object under that prefix)",
                    store.describe()
                ))
                .hint("check the store URL (--store / DBSAFE_STORE)"));
            }
        }
        Ok(store)
    }
}

impl Inner {
    fn loc(&self) -> &config::Location {
        &self.client.location
    }

    /// The full key of the marker of upload `upload_id` of store key `key`.
    fn marker_key(&self, key: &str, upload_id: &str) -> String {
        self.loc()
            .object_key(&format!("{UPLOADS}/{}/{key}", hex::encode(upload_id)))
    }

    /// Deletes a full object key (no error when it is already gone).
    fn delete_object(&self, key: &str) -> Result<()> {
        let c = &self.client;
        call(c, &Op::on("delete", key), || {
            gone_is_done(c.delete_object(key))
        })
    }

    /// The ETag of a full object key, unquoted, if it exists.
    fn etag(&self, key: &str) -> Option<String> {
        self.client
            .head_once(key)
            .and_then(|r| r.header("etag").map(|e| e.trim_matches('"').to_string()))
    }

    fn head(&self, key: &str) -> Result<bool> {
        let c = &self.client;
        call(c, &Op::on("look up", key), || {
            match c.head_object(key) {
                Ok(_) => Ok(true),
                Err(f) if f.status() == Some(404) => Ok(false),
                // HEAD answers carry no error code: ask again with a GET
                // of one byte, whose answer says why (wrong secret, ...).
                Err(f) if f.status() == Some(403) && f.code().is_empty() => {
                    let creds = c.credentials()?;
                    let mut action = c.bucket.get_object(Some(&creds), key);
                    action.headers_mut().insert("range", "bytes=0-0");
                    match c.send("GET", &c.sign(&action), &[("range", "bytes=0-0")], None) {
                        Ok(_) => Ok(true),
                        Err(g) if !g.code().is_empty() => Err(g),
                        Err(_) => Err(f),
                    }
                }
                Err(f) => Err(f),
            }
        })
    }

    /// One page of ListObjectsV2 under the full key prefix `prefix`.
    fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: usize,
    ) -> Result<(Vec<Listed>, Option<String>)> {
        let c = &self.client;
        let full = self.loc().object_key(prefix);
        let full = if full.is_empty() || full.ends_with('/') {
            full
        } else {
            format!("{full}/")
        };
        call(c, &Op::on("list", &full), || {
            let creds = c.credentials()?;
            let mut action = c.bucket.list_objects_v2(Some(&creds));
            // Keys come back as XML text; url-encoding is optional and
            // not every server applies it when asked.
            action.query_mut().remove("encoding-type");
            if !full.is_empty() {
                action.with_prefix(full.as_str());
            }
            action.with_max_keys(max_keys);
            if let Some(t) = token {
                action.with_continuation_token(t);
            }
            let page: xml::ListBucketResult =
                http::read_answer(c.send("GET", &c.sign(&action), &[], None)?)?;
            let objects = page
                .contents
                .into_iter()
                .map(|o| {
                    let modified = xml::time(o.last_modified.as_deref()).unwrap_or_else(Utc::now);
                    (o.key, o.size, modified)
                })
                .collect();
            let next = page
                .next_continuation_token
                .filter(|t| page.is_truncated && !t.is_empty());
            Ok((objects, next))
        })
    }

    /// Every object under the store key prefix `prefix`, as (store key, size, modified).
    fn list_all(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (page, next) = self.list_page(prefix, token.as_deref(), 1000)?;
            out.extend(page.into_iter().filter_map(|(k, size, modified)| {
                self.loc()
                    .store_key(&k)
                    .map(|k| (k.to_string(), size, modified))
            }));
            match next {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// Incomplete uploads under a full key prefix, per ListMultipartUploads:
    /// (full key, upload id, initiated); `None` when the server lacks the call.
    fn list_uploads(&self, prefix: &str) -> Result<Option<Vec<Pending>>> {
        let c = &self.client;
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let page = call(
                c,
                &Op::on("list the incomplete uploads under", prefix),
                || {
                    let mut query = vec![("uploads", ""), ("prefix", prefix)];
                    if !key_marker.is_empty() {
                        query.push(("key-marker", &key_marker));
                        query.push(("upload-id-marker", &id_marker));
                    }
                    match c.send("GET", &c.sign_bucket_get(&query)?, &[], None) {
                        Ok(r) => Ok(Some(http::read_answer::<xml::ListMultipartUploadsResult>(
                            r,
                        )?)),
                        Err(f) if f.status() == Some(501) || f.code() == "NotImplemented" => {
                            Ok(None)
                        }
                        // A key without s3:ListBucketMultipartUploads still
                        // finds the uploads of dbsafe writers by their markers.
                        Err(f) if f.status() == Some(403) && f.code() == "AccessDenied" => {
                            crate::output::warn(format!(
                                "{}: not allowed to list incomplete uploads; only those with a dbsafe marker are found",
                                c.object_url(Some(prefix))
                            ));
                            Ok(None)
                        }
                        Err(f) => Err(f),
                    }
                },
            )?;
            let Some(page) = page else {
                return Ok(None);
            };
            for u in page.uploads {
                let started = xml::time(u.initiated.as_deref()).unwrap_or_else(Utc::now);
                out.push((u.key, u.upload_id, started));
            }
            let next_key = page.next_key_marker.unwrap_or_default();
            if !page.is_truncated || next_key.is_empty() {
                return Ok(Some(out));
            }
            id_marker = page.next_upload_id_marker.unwrap_or_default();
            key_marker = next_key;
        }
    }

    /// Bytes uploaded so far and the time of the newest part, per ListParts
    /// (all its pages: an upload has up to 10,000 parts, a page 1,000).
    fn parts_of(&self, key: &str, upload_id: &str) -> Result<Option<(u64, Option<DateTime<Utc>>)>> {
        let c = &self.client;
        let (mut size, mut newest, mut marker) = (0, None, None::<u16>);
        loop {
            let page = call(c, &Op::on("list the parts of", key), || {
                let creds = c.credentials()?;
                let mut action = c.bucket.list_parts(Some(&creds), key, upload_id);
                if let Some(m) = marker {
                    action.set_part_number_marker(m);
                }
                match c.send("GET", &c.sign(&action), &[], None) {
                    Ok(r) => Ok(Some(http::read_answer::<xml::ListPartsResult>(r)?)),
                    Err(f) if f.status() == Some(404) => Ok(None),
                    // Without s3:ListMultipartUploadParts the age is the initiation time.
                    Err(f) if f.status() == Some(403) && f.code() == "AccessDenied" => Ok(None),
                    Err(f) => Err(f),
                }
            })?;
            let Some(page) = page else {
                return Ok(None);
            };
            size += page.parts.iter().map(|p| p.size).sum::<u64>();
            let page_newest = page
                .parts
                .iter()
                .filter_map(|p| xml::time(p.last_modified.as_deref()))
                .max();
            newest = newest.max(page_newest);
            match page.next_marker() {
                Some(m) if Some(m) != marker => marker = Some(m),
                _ => return Ok(Some((size, newest))),
            }
        }
    }
}

fn invalid_key(key: &str) -> bool {
    super::invalid_key(key) || key.split('/').any(|c| c == UPLOADS)
}

fn check_key(key: &str) -> Result<()> {
    if invalid_key(key) {
        return Err(Error::usage(format!("invalid store key {key:?}")));
    }
    Ok(())
}

impl Store for S3Store {
    fn describe(&self) -> String {
        self.inner.loc().url()
    }

    fn writer(&self, key: &str, new: bool) -> Result<Box<dyn ObjectWriter>> {
        check_key(key)?;
        Ok(Box::new(writer::S3Writer::new(
            Arc::clone(&self.inner),
            key,
            new,
        )))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        check_key(key)?;
        let full = self.inner.loc().object_key(key);
        Ok(Box::new(reader::open(
            Arc::clone(&self.inner.client),
            full,
        )?))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.inner.head(&self.inner.loc().object_key(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        check_key(prefix)?;
        let mut out: Vec<ObjectInfo> = self
            .inner
            .list_all(prefix)?
            .into_iter()
            .map(|(key, size, modified)| ObjectInfo {
                key,
                size,
                modified,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.inner.delete_object(&self.inner.loc().object_key(key))
    }

    fn temporaries(&self, prefix: &str) -> Result<Vec<StaleTemporary>> {
        check_key(prefix)?;
        let s = &self.inner;
        let full_prefix = format!("{}/", s.loc().object_key(prefix));
        // (store key, upload id) -> initiated
        let mut uploads: std::collections::BTreeMap<(String, String), DateTime<Utc>> =
            Default::default();
        for (key, id, started) in s.list_uploads(&full_prefix)?.unwrap_or_default() {
            if let Some(k) = s.loc().store_key(&key) {
                uploads.insert((k.to_string(), id), started);
            }
        }
        for (marker, _, modified) in s.list_all(UPLOADS)? {
            let Some((hex_id, key)) = marker
                .strip_prefix(UPLOADS)
                .and_then(|m| m.strip_prefix('/'))
                .and_then(|m| m.split_once('/'))
            else {
                continue;
            };
            let Some(id) = hex::decode(hex_id)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            if key.starts_with(&format!("{prefix}/")) {
                uploads
                    .entry((key.to_string(), id))
                    .and_modify(|t| *t = (*t).min(modified))
                    .or_insert(modified);
            }
        }
        let mut out = Vec::new();
        for ((key, id), initiated) in uploads {
            let full = s.loc().object_key(&key);
            let (size, newest_part) = s.parts_of(&full, &id)?.unwrap_or((0, None));
            out.push(StaleTemporary {
                id: format!("{key}{UPLOAD_ID}{id}"),
                started: newest_part.map_or(initiated, |p| p.max(initiated)),
                size,
                // Its writer may be on another host: only its age tells.
                writer_alive: false,
            });
        }
        out.sort_by_key(|t| t.started);
        Ok(out)
    }

    /// Aborts the upload and removes its marker.
    fn remove_temporary(&self, id: &str) -> Result<()> {
        let (key, upload_id) = id.rsplit_once(UPLOAD_ID).ok_or_else(|| {
            Error::usage(format!("{id:?} is not an incomplete upload of this store"))
        })?;
        check_key(key)?;
        let s = &self.inner;
        writer::abort_upload(&s.client, &s.loc().object_key(key), upload_id, true)?;
        s.delete_object(&s.marker_key(key, upload_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keys_are_checked() {
        for bad in ["", "/a", "a//b", "a/../b", ".dbsafe-uploads/x", "a/"] {
            assert!(invalid_key(bad), "{bad:?}");
        }
        for good in [
            "backups",
            "backups/x.sqlite.zst",
            "wal/000000010000000000000001",
        ] {
            assert!(!invalid_key(good), "{good:?}");
        }
    }
}
