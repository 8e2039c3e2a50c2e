//! Stores: where artifacts, sidecars, WAL and release manifests live (SPEC §4).
//!
//! A store knows objects, not what is in them. The trait is shaped by the
//! strictest backend: objects appear only once committed whole (S3 has no
//! rename), a "latest" link is a pointer that may be a symlink or a small
//! object, and listing returns final objects only, never temporaries.
//!
//! Policy is not the store's business: locks ([`crate::lock`]) and the
//! audit log ([`crate::audit`]) are layers built around a store, keyed on
//! its location ([`Store::describe`], [`directory_of`]); retries are a layer
//! around the S3 client's requests.

mod cloud;
mod local;
mod remote;
mod retry;
mod s3;

pub use cloud::CloudStore;
pub use local::LocalStore;
pub use s3::S3Store;

use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use std::io::{Read, Write};
use std::path::Path;

/// Prefix of artifacts and their sidecars.
pub const BACKUPS: &str = "backups";
/// Prefix of archived WAL.
pub const WAL: &str = "wal";
/// Prefix of release manifests.
pub const RELEASES: &str = "releases";

/// An object in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store root, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    pub modified: DateTime<Utc>,
}

impl ObjectInfo {
    /// The last path component of the key.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// An object being written; invisible under its key until [`ObjectWriter::commit`].
///
/// Dropping it without committing abandons the object and removes what was
/// written so far.
pub trait ObjectWriter: Write + Send {
    /// Makes what was written durable before [`ObjectWriter::commit`], which
    /// then only has to publish it (a local file's fsync; nothing for
    /// objects a store publishes whole).
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    /// Makes the object durable and visible under its key, atomically.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// A temporary left behind by a writer that died.
#[derive(Debug, Clone)]
pub struct StaleTemporary {
    /// What identifies it for removal.
    pub id: String,
    /// When it was started.
    pub started: DateTime<Utc>,
    /// Bytes written so far.
    pub size: u64,
    /// Whether the process writing it is known to be alive (its name says
    /// who on this host); such a temporary is never stale, whatever its age.
    pub writer_alive: bool,
}

/// A place that holds artifacts.
pub trait Store: Send + Sync {
    /// The store's location, without secrets, as [`open`] takes it: a
    /// directory or `s3://bucket/prefix`. Messages name the store by it, and
    /// the layers around a store (locks, audit log) key their state on it.
    fn describe(&self) -> String;
    /// Starts writing the object `key`; `new`: as [`Store::create_new`].
    fn writer(&self, key: &str, new: bool) -> Result<Box<dyn ObjectWriter>>;
    /// Starts writing the object `key`.
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        self.writer(key, false)
    }
    /// Starts writing `key` as a new object: its commit is refused (exit 4)
    /// rather than replace an object another writer (another host: locks
    /// serialise one host's writers only) created meanwhile. Local stores
    /// commit with link(2); S3 with `If-None-Match: *` where the service
    /// supports it.
    fn create_new(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        self.writer(key, true)
    }
    /// Opens the object `key` for streaming (exit 3 when it does not exist).
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>>;
    /// Whether `key` exists.
    fn exists(&self, key: &str) -> Result<bool>;
    /// Final objects under `prefix` (a directory-like prefix such as `backups`), at any
    /// depth, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Deletes `key` (no error when it is already gone).
    fn delete(&self, key: &str) -> Result<()>;
    /// Points `key` at `target` (a key in the same directory): by default a
    /// small object holding the target's key, for stores without symlinks.
    fn set_pointer(&self, key: &str, target: &str) -> Result<()> {
        write_pointer_object(self, key, target)
    }
    /// Where `key` points, if it is a pointer.
    fn pointer(&self, key: &str) -> Result<Option<String>> {
        read_pointer_object(self, key)
    }
    /// Free bytes where the store writes, when the backend can tell (remote
    /// stores cannot).
    fn free_space(&self) -> Option<u64> {
        None
    }
    /// Temporaries under `prefix` left by writers, oldest first.
    fn temporaries(&self, prefix: &str) -> Result<Vec<StaleTemporary>>;
    /// Removes a temporary found by [`Store::temporaries`].
    fn remove_temporary(&self, id: &str) -> Result<()>;

    /// Reads a small object whole; `None` when it does not exist.
    fn read_small(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.open(key) {
            Ok(mut r) => {
                let mut v = Vec::new();
                r.read_to_end(&mut v)
                    .map_err(|e| Error::failed(format!("reading {key}: {e}")))?;
                Ok(Some(v))
            }
            Err(e) if e.code() == crate::ExitCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a small object whole, atomically.
    fn write_small(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let mut w = self.create(key)?;
        w.write_all(bytes)
            .map_err(|e| Error::failed(format!("writing {key}: {e}")))?;
        w.commit()
    }

    /// Writes a small new object whole, as [`Store::create_new`] does.
    fn write_new(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let mut w = self.create_new(key)?;
        w.write_all(bytes)
            .map_err(|e| Error::failed(format!("writing {key}: {e}")))?;
        w.commit()
    }
}

/// The refusal of a new object whose name another writer took first.
pub fn taken(what: &str) -> Error {
    Error::refused(format!(
        "{what} was created by another writer meanwhile; nothing was overwritten"
    ))
    .hint("another host writes the same names into this store: give each its own store, prefix or --env")
}

/// Opens the store at `location`. With `create`, a missing local directory
/// is created; without, it is an error (a mistyped path must not look empty).
pub fn open(location: &str, create: bool) -> Result<Box<dyn Store>> {
    if location.trim().is_empty() {
        return Err(Error::usage("the store location is empty")
            .hint("name a directory or s3://bucket/prefix"));
    }
    if let Some(rest) = location.strip_prefix("s3:") {
        if !rest.starts_with("//") {
            return Err(Error::usage(format!(
                "store {location:?} is not an S3 URL: write s3://bucket/prefix"
            )));
        }
    }
    if let Some(dir) = directory_of(location) {
        let store = LocalStore::open(dir, create)?;
        crate::fsutil::check_private_dir(dir, SHARED.load(std::sync::atomic::Ordering::Relaxed))?;
        return Ok(Box::new(store));
    }
    if location.starts_with("s3://") {
        return Ok(Box::new(S3Store::open(location, create)?));
    }
    if location.starts_with("gs://") || location.starts_with("az://") {
        return Ok(Box::new(CloudStore::open(location, create)?));
    }
    Err(Error::usage(format!(
        "unsupported store {location:?}: use a directory, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
    )))
}

static SHARED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets local stores be writable by group or others for this run
/// (`--allow-shared-store`); they are refused otherwise.
pub fn allow_shared_stores(yes: bool) {
    SHARED.store(yes, std::sync::atomic::Ordering::Relaxed);
}

/// The directory of a store location that is a local directory; `None`
/// for a URL (`scheme://...`). The one rule that tells local stores from
/// remote ones, for [`open`] and for the layers that keep state beside a
/// local store but on this host for a remote one.
pub fn directory_of(location: &str) -> Option<&Path> {
    (!location.contains("://")).then(|| Path::new(location))
}

/// Whether `key` cannot name an object: empty, absolute, or with an empty,
/// `.` or `..` component.
pub(crate) fn invalid_key(key: &str) -> bool {
    key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
}

/// Points `key` at `target` with a small object holding the target's key,
/// for stores without symlinks.
fn write_pointer_object<S: Store + ?Sized>(store: &S, key: &str, target: &str) -> Result<()> {
    for k in [key, target] {
        if invalid_key(k) {
            return Err(Error::usage(format!("invalid store key {k:?}")));
        }
    }
    store.write_small(key, format!("{target}\n").as_bytes())
}

/// Where a pointer object written by [`write_pointer_object`] points;
/// `None` when it does not exist or holds no key.
fn read_pointer_object<S: Store + ?Sized>(store: &S, key: &str) -> Result<Option<String>> {
    let Some(bytes) = store.read_small(key)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes).unwrap_or_default();
    let target = text.trim_end_matches('\n');
    Ok(
        (!invalid_key(target) && target.len() < 1024 && !target.contains('\n'))
            .then(|| target.to_string()),
    )
}

/// An environment for tests of what reads one: `pairs`, and nothing else.
#[cfg(test)]
pub(crate) fn test_env(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

/// Joins key components with `/`.
pub fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}")
}
