//! A store in a local directory: temporary name, fsync, rename, fsync of the directory.

use super::{ObjectInfo, ObjectWriter, StaleTemporary, Store};
use crate::cleanup::TempGuard;
use crate::error::{Context, Error, Result};
use crate::fsutil;
use chrono::{DateTime, Utc};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A store rooted at a local directory.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (and with `create`, creates) the store at `root`.
    pub fn open(root: &Path, create: bool) -> Result<LocalStore> {
        let root = root.to_path_buf();
        if !root.is_dir() {
            if !create {
                return Err(
                    Error::not_found(format!("store {} does not exist", root.display()))
                        .hint("check the path of --store / DBSAFE_STORE"),
                );
            }
            fsutil::create_private_dir(&root)?;
        }
        Ok(LocalStore { root })
    }

    /// Where `key` is. A directory on the way that is a link (`backups`
    /// planted as a link to elsewhere) is refused (exit 4): nothing is read,
    /// written or deleted through it.
    fn path(&self, key: &str) -> Result<PathBuf> {
        self.resolve(key, false)
    }

    /// Where the directory `prefix` is, itself no link either.
    fn dir_path(&self, prefix: &str) -> Result<PathBuf> {
        self.resolve(prefix, true)
    }

    fn resolve(&self, key: &str, dir: bool) -> Result<PathBuf> {
        if key.split('/').any(|c| c == ".." || c.is_empty()) || key.starts_with('/') {
            return Err(Error::usage(format!("invalid store key {key:?}")));
        }
        let mut p = self.root.clone();
        let mut parts = key.split('/').peekable();
        while let Some(part) = parts.next() {
            p.push(part);
            if dir || parts.peek().is_some() {
                fsutil::refuse_link(&p)?;
            }
        }
        Ok(p)
    }
}

struct LocalWriter {
    out: Option<BufWriter<File>>,
    temp: Option<TempGuard>,
    final_path: PathBuf,
    /// Refuse to replace an existing object (link instead of rename).
    new: bool,
}

impl Write for LocalWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.out.as_mut().expect("open until commit").write(data)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("open until commit").flush()
    }
}

impl ObjectWriter for LocalWriter {
    fn sync(&mut self) -> Result<()> {
        let out = self.out.as_mut().expect("open until commit");
        out.flush()
            .and_then(|()| out.get_ref().sync_all())
            .with_context(|| format!("cannot fsync {}", self.final_path.display()))
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let out = self.out.take().expect("committed once");
        let file = out.into_inner().map_err(|e| {
            Error::failed(format!(
                "writing {}: {}",
                self.final_path.display(),
                e.error()
            ))
        })?;
        file.sync_all()
            .with_context(|| format!("cannot fsync {}", self.final_path.display()))?;
        drop(file);
        let temp = self.temp.take().expect("committed once");
        if self.new {
            // link(2) fails when the name exists: never a replacement.
            match fs::hard_link(temp.path(), &self.final_path) {
                Ok(()) => drop(temp),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(super::taken(&self.final_path.display().to_string()))
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("cannot link into {}", self.final_path.display()),
                        e,
                    ))
                }
            }
        } else {
            fs::rename(temp.path(), &self.final_path)
                .with_context(|| format!("cannot rename into {}", self.final_path.display()))?;
            temp.keep();
        }
        fsutil::fsync_dir(self.final_path.parent().unwrap_or(Path::new(".")))
    }
}

fn modified(meta: &fs::Metadata) -> DateTime<Utc> {
    meta.modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now())
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    /// New objects commit with link(2), which never replaces one.
    fn writer(&self, key: &str, new: bool) -> Result<Box<dyn ObjectWriter>> {
        let final_path = self.path(key)?;
        if let Some(dir) = final_path.parent() {
            fsutil::create_private_dir(dir)?;
        }
        let tmp = fsutil::temp_name_for(&final_path);
        let guard = TempGuard::new(&tmp);
        let file = fsutil::create_private_file(&tmp)?;
        Ok(Box::new(LocalWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            temp: Some(guard),
            final_path,
            new,
        }))
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let p = self.path(key)?;
        match File::open(&p) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::not_found(format!(
                "{} not found in store {}",
                key,
                self.describe()
            ))),
            Err(e) => Err(Error::io(format!("cannot open {}", p.display()), e)),
        }
    }

    /// Absent only when the file system says so: a store it cannot read
    /// (permissions, an I/O error, a stale NFS handle) is an error, never
    /// "not there" (which ends a recovery).
    fn exists(&self, key: &str) -> Result<bool> {
        let p = self.path(key)?;
        match fs::metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("cannot read {}", p.display()), e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        walk(&self.dir_path(prefix)?, prefix, &mut out)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        match fs::remove_file(&p) {
            Ok(()) => fsutil::fsync_dir(p.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::failed(format!("cannot delete {}: {e}", p.display()))),
        }
    }

    fn set_pointer(&self, key: &str, target: &str) -> Result<()> {
        let link = self.path(key)?;
        let target_name = target.rsplit('/').next().unwrap_or(target);
        let tmp = fsutil::temp_name_for(&link);
        std::os::unix::fs::symlink(target_name, &tmp)
            .with_context(|| format!("cannot create symlink {}", tmp.display()))?;
        if let Err(e) = fs::rename(&tmp, &link) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::failed(format!(
                "cannot update {}: {e}",
                link.display()
            )));
        }
        fsutil::fsync_dir(link.parent().unwrap_or(Path::new(".")))
    }

    fn pointer(&self, key: &str) -> Result<Option<String>> {
        let link = self.path(key)?;
        match fs::read_link(&link) {
            Ok(t) => {
                let dir = key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                Ok(Some(format!("{dir}/{}", t.to_string_lossy())))
            }
            Err(_) => Ok(None),
        }
    }

    fn free_space(&self) -> Option<u64> {
        fsutil::free_space(&self.root)
    }

    fn temporaries(&self, prefix: &str) -> Result<Vec<StaleTemporary>> {
        let dir = self.dir_path(prefix)?;
        let mut out = Vec::new();
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(out);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !fsutil::is_temp_name(&name) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            out.push(StaleTemporary {
                id: format!("{prefix}/{name}"),
                started: modified(&meta),
                size: meta.len(),
                writer_alive: crate::cleanup::owner_of(&name)
                    .is_some_and(crate::cleanup::owner_alive),
            });
        }
        out.sort_by_key(|t| t.started);
        Ok(out)
    }

    fn remove_temporary(&self, id: &str) -> Result<()> {
        self.delete(id)
    }
}

impl LocalStore {
    /// A file written atomically at `path`, outside any store (`dbsnap -o FILE`).
    pub fn atomic_file(path: &Path) -> Result<Box<dyn ObjectWriter>> {
        let tmp = fsutil::temp_name_for(path);
        let guard = TempGuard::new(&tmp);
        let file = fsutil::create_private_file(&tmp)?;
        Ok(Box::new(LocalWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            temp: Some(guard),
            final_path: path.to_path_buf(),
            new: false,
        }))
    }
}

/// The objects below `dir` (the store's directory of key `prefix`, no link
/// on its way there): never into a directory through a link planted in it.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<ObjectInfo>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("cannot list {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let key = format!("{prefix}/{name}");
        // file_type() does not follow a link: a real directory only.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&entry.path(), &key, out)?;
            continue;
        }
        // A file, or a link to one (a series' _latest pointer).
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_file() {
            out.push(ObjectInfo {
                key,
                size: meta.len(),
                modified: modified(&meta),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn put(store: &LocalStore, key: &str, bytes: &[u8], new: bool) -> Result<()> {
        let mut w = if new {
            store.create_new(key)?
        } else {
            store.create(key)?
        };
        w.write_all(bytes).unwrap();
        w.commit()
    }

    #[test]
    fn a_new_object_never_replaces_one_another_writer_committed_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), true).unwrap();
        // Both writers start before either commits, as two hosts would.
        let mut first = store.create_new("backups/a").unwrap();
        let mut second = store.create_new("backups/a").unwrap();
        first.write_all(b"first").unwrap();
        second.write_all(b"second").unwrap();
        first.commit().unwrap();
        let e = second.commit().unwrap_err();
        assert_eq!(e.kind, Kind::Refused, "{e}");
        assert_eq!(fs::read(dir.path().join("backups/a")).unwrap(), b"first");
        // Nothing of the refused writer is left behind.
        assert_eq!(fs::read_dir(dir.path().join("backups")).unwrap().count(), 1);
        // A plain create still replaces, as repairs need.
        put(&store, "backups/a", b"repaired", false).unwrap();
        assert_eq!(fs::read(dir.path().join("backups/a")).unwrap(), b"repaired");
        assert_eq!(
            put(&store, "backups/a", b"x", true).unwrap_err().kind,
            Kind::Refused
        );
    }
}
