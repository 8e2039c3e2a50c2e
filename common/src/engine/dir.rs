//! Directory trees (`dir:PATH`): a tar stream out, an unpacked tree in.
//!
//! A snapshot walks the tree in name order and streams a GNU tar (the `tar`
//! crate), one file at a time, never buffering a file or the archive. It
//! keeps what an operator restoring a volume needs: permission bits, mtimes
//! (whole seconds, as tar stores them), numeric owners, symbolic links as
//! links (never followed) and empty directories. The root itself is the
//! entry `./`, so its mode survives too. Sockets, FIFOs and devices are left
//! out with a warning.
//!
//! A tree has no tables, so the row-count comparisons of `dbverify --level
//! restore` and `dbrestore` run on pseudo-tables: `files` (regular files),
//! `directories` (below the root) and `symlinks`, each with its count as the
//! row count. An empty tree has none, which is what makes `dbrestore` treat
//! an empty directory as an empty target.
//!
//! The metadata also records `bytes` (file contents) and `manifest_sha256`:
//! the sha256 of the sorted manifest, one line per entry,
//! `path NUL kind NUL size NUL mode-in-octal NUL (content sha256 | link target) LF`,
//! with kind `f`, `d` or `l` and the root as `.`. Two trees with the same
//! manifest digest have the same paths, sizes, modes, contents and link
//! targets. A file that changes while it is read (its size, mtime or ctime
//! moves, or it is shorter or longer than when it was opened) is reported on
//! stderr and listed under `changed_while_reading`; its copy may mix old and
//! new bytes, as with any copy of a live file.
//!
//! Restores unpack into a hidden staging directory next to the target, then
//! swap it in by rename, so the target is never half-written. Entries that
//! would land outside the target are refused before anything is written
//! there (see `untar.rs`).

use super::untar::{io_err, unpack, Counts, Screen};
use super::{Engine, PayloadCheck, RestoreOptions, SnapshotInfo, SnapshotOptions};
use crate::cleanup::TempGuard;
use crate::error::{Context, Error, Result};
use crate::meta::TableCount;
use crate::name::Payload;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How many changed files the metadata lists by name.
const MAX_LISTED_CHANGES: usize = 100;

/// The first [`MAX_LISTED_CHANGES`] paths, for the metadata.
fn listed(paths: Vec<String>) -> serde_json::Value {
    paths
        .into_iter()
        .take(MAX_LISTED_CHANGES)
        .map(serde_json::Value::from)
        .collect::<Vec<_>>()
        .into()
}

/// A directory tree.
pub struct Dir {
    path: PathBuf,
}

impl Dir {
    /// The tree at `path`.
    pub fn new(path: PathBuf) -> Dir {
        Dir { path }
    }
}

/// The pseudo-tables of a tree's entry counts (none for an empty tree).
fn tables(c: Counts) -> Vec<TableCount> {
    if c == Counts::default() {
        return Vec::new();
    }
    let t = |name: &str, rows| TableCount {
        name: name.into(),
        rows,
    };
    vec![
        t("directories", c.directories),
        t("files", c.files),
        t("symlinks", c.symlinks),
    ]
}

/// One manifest line (see the module doc).
fn manifest_line(path: &[u8], kind: char, size: u64, mode: u32, digest: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(path.len() + digest.len() + 32);
    line.extend_from_slice(path);
    line.extend_from_slice(format!("\0{kind}\0{size}\0{:o}\0", mode & 0o7777).as_bytes());
    line.extend_from_slice(digest);
    line.push(b'\n');
    line
}

fn manifest_digest(mut lines: Vec<Vec<u8>>) -> String {
    lines.sort_unstable_by(|a, b| {
        let key = |l: &[u8]| l.iter().position(|&c| c == 0).map(|i| l[..i].to_vec());
        key(a).cmp(&key(b))
    });
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l);
    }
    hex::encode(h.finalize())
}

/// Reads exactly `size` bytes of a file, hashing them; a file that shrank
/// is padded with zeros (so the tar stays well-formed) and flagged.
struct FileContent<'a> {
    file: &'a mut File,
    remaining: u64,
    short: bool,
    hasher: Sha256,
}

impl Read for FileContent<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining as usize);
        let n = if self.short {
            0
        } else {
            self.file.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.remaining -= n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn stamp(m: &fs::Metadata) -> (u64, i64, i64, i64, i64) {
    (
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

fn header_for(kind: tar::EntryType, m: &fs::Metadata, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    h.set_mtime(m.mtime().max(0) as u64);
    h.set_uid(m.uid() as u64);
    h.set_gid(m.gid() as u64);
    h.set_size(size);
    h
}

/// What a walk of the tree found, for the metadata.
#[derive(Default)]
struct TreeStats {
    counts: Counts,
    bytes: u64,
    manifest: Vec<Vec<u8>>,
    changed: Vec<String>,
    skipped: Vec<String>,
    /// Files of several names (hard links), by device and inode: the first
    /// name archived, and its manifest line's size and digest. Later names
    /// are archived as links to it, as tar does.
    linked: std::collections::HashMap<(u64, u64), (PathBuf, u64, String)>,
}

impl TreeStats {
    /// Counts a file's name and adds its manifest line.
    fn file(&mut self, rel: &Path, size: u64, mode: u32, digest: &str) {
        self.counts.files += 1;
        self.manifest.push(manifest_line(
            rel.as_os_str().as_bytes(),
            'f',
            size,
            mode,
            digest.as_bytes(),
        ));
    }
}

impl Dir {
    fn rel_name(&self, p: &Path) -> PathBuf {
        match p.strip_prefix(&self.path) {
            Ok(r) if r.as_os_str().is_empty() => PathBuf::from("."),
            Ok(r) => r.to_path_buf(),
            Err(_) => p.to_path_buf(),
        }
    }

    /// Appends one regular file: a second name of a file archived already
    /// as a hard link to it, otherwise its contents.
    fn append_file(
        &self,
        builder: &mut tar::Builder<&mut dyn Write>,
        abs: &Path,
        rel: &Path,
        stats: &mut TreeStats,
    ) -> Result<()> {
        let m =
            fs::symlink_metadata(abs).with_context(|| format!("cannot stat {}", abs.display()))?;
        let key = (m.dev(), m.ino());
        if m.nlink() > 1 {
            if let Some((first, size, digest)) = stats.linked.get(&key).cloned() {
                let mut h = header_for(tar::EntryType::Link, &m, 0);
                builder
                    .append_link(&mut h, rel, &first)
                    .map_err(io_err(format!("archiving {}", abs.display())))?;
                stats.file(rel, size, m.mode(), &digest);
                return Ok(());
            }
        }
        // A file left out is no name later links can point to.
        if let Some((size, digest)) = self.append_contents(builder, abs, rel, stats)? {
            if m.nlink() > 1 {
                stats.linked.insert(key, (rel.to_path_buf(), size, digest));
            }
        }
        Ok(())
    }

    /// Appends one regular file's contents; returns its size and digest
    /// (`None`: it was left out, no longer a regular file).
    fn append_contents(
        &self,
        builder: &mut tar::Builder<&mut dyn Write>,
        abs: &Path,
        rel: &Path,
        stats: &mut TreeStats,
    ) -> Result<Option<(u64, String)>> {
        // O_NOFOLLOW: a file swapped for a link since the walk saw it is not followed.
        let mut file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(abs)
            .with_context(|| format!("cannot read {}", abs.display()))?;
        let before = file
            .metadata()
            .with_context(|| format!("cannot stat {}", abs.display()))?;
        if !before.is_file() {
            stats.skipped.push(rel.display().to_string());
            crate::output::warn(format!(
                "{} is no longer a regular file; left out",
                abs.display()
            ));
            return Ok(None);
        }
        let size = before.size();
        let mut header = header_for(tar::EntryType::Regular, &before, size);
        let mut content = FileContent {
            file: &mut file,
            remaining: size,
            short: false,
            hasher: Sha256::new(),
        };
        builder
            .append_data(&mut header, rel, &mut content)
            .map_err(io_err(format!("archiving {}", abs.display())))?;
        let (short, digest) = (content.short, content.hasher.finalize());
        let grew = !short && file.read(&mut [0u8; 1]).map(|n| n > 0).unwrap_or(false);
        let after = file.metadata().ok();
        if short || grew || after.map(|a| stamp(&a)) != Some(stamp(&before)) {
            crate::output::warn(format!(
                "{} changed while it was read; its copy in the snapshot may mix old and new contents",
                abs.display()
            ));
            stats.changed.push(rel.display().to_string());
        }
        stats.bytes += size;
        let digest = hex::encode(digest);
        stats.file(rel, size, before.mode(), &digest);
        Ok(Some((size, digest)))
    }

    fn write_tar(&self, out: &mut dyn Write) -> Result<TreeStats> {
        let mut stats = TreeStats::default();
        let mut builder = tar::Builder::new(out);
        builder.follow_symlinks(false);
        let walk = walkdir::WalkDir::new(&self.path)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walk {
            let entry = entry
                .map_err(|e| Error::failed(format!("cannot read {}: {e}", self.path.display())))?;
            let abs = entry.path();
            let rel = self.rel_name(abs);
            let ft = entry.file_type();
            if ft.is_file() {
                self.append_file(&mut builder, abs, &rel, &mut stats)?;
                continue;
            }
            // The root may be a followed link: its own metadata, not the link's.
            let m = if entry.depth() == 0 {
                fs::metadata(abs).map_err(|e| e.to_string())
            } else {
                entry.metadata().map_err(|e| e.to_string())
            }
            .map_err(|e| Error::failed(format!("cannot stat {}: {e}", abs.display())))?;
            let rel_bytes = rel.as_os_str().as_bytes().to_vec();
            // The root is a directory, even when reached through a link.
            if ft.is_dir() || entry.depth() == 0 {
                let mut h = header_for(tar::EntryType::Directory, &m, 0);
                let name = if entry.depth() == 0 {
                    PathBuf::from("./")
                } else {
                    stats.counts.directories += 1;
                    rel.clone()
                };
                builder
                    .append_data(&mut h, &name, io::empty())
                    .map_err(io_err(format!("archiving {}", abs.display())))?;
                stats
                    .manifest
                    .push(manifest_line(&rel_bytes, 'd', 0, m.mode(), b""));
            } else if ft.is_symlink() {
                let target = fs::read_link(abs)
                    .with_context(|| format!("cannot read link {}", abs.display()))?;
                let mut h = header_for(tar::EntryType::Symlink, &m, 0);
                builder
                    .append_link(&mut h, &rel, &target)
                    .map_err(io_err(format!("archiving {}", abs.display())))?;
                stats.counts.symlinks += 1;
                stats.manifest.push(manifest_line(
                    &rel_bytes,
                    'l',
                    0,
                    m.mode(),
                    target.as_os_str().as_bytes(),
                ));
            } else {
                crate::output::warn(format!(
                    "{} is a socket, FIFO or device; left out",
                    abs.display()
                ));
                stats.skipped.push(rel.display().to_string());
            }
        }
        builder
            .finish()
            .map_err(io_err("finishing the tar stream"))?;
        Ok(stats)
    }
}

/// Counts the entries below `root` on disk (not following links).
fn count_tree(root: &Path) -> Result<Counts> {
    let mut c = Counts::default();
    for entry in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        let entry =
            entry.map_err(|e| Error::failed(format!("cannot read {}: {e}", root.display())))?;
        let ft = entry.file_type();
        if ft.is_dir() {
            c.directories += 1;
        } else if ft.is_symlink() {
            c.symlinks += 1;
        } else if ft.is_file() {
            c.files += 1;
        }
    }
    Ok(c)
}

/// Lists a tar payload: structure, escaping entries, pseudo-table counts.
pub fn check(input: &mut dyn Read) -> Result<PayloadCheck> {
    let mut screen = Screen::new();
    let mut entries_seen = 0u64;
    let mut archive = tar::Archive::new(input);
    let listing = (|| -> io::Result<()> {
        for entry in archive.entries()? {
            let mut e = entry?;
            entries_seen += 1;
            let kind = e.header().entry_type();
            let raw = e.path_bytes().into_owned();
            let link = e.link_name_bytes().map(|l| l.into_owned());
            screen.entry(kind, &raw, link.as_deref());
            io::copy(&mut e, &mut io::sink())?;
        }
        Ok(())
    })();
    if let Err(e) = listing {
        let e = Error::from(e);
        if e.code() == crate::ExitCode::Interrupted {
            return Err(e);
        }
        screen
            .problems
            .push(format!("the tar stream is damaged: {}", e.message));
    }
    if entries_seen == 0 && screen.problems.is_empty() {
        screen.problems.push("the tar stream has no entries".into());
    }
    Ok(PayloadCheck {
        checks: vec![format!(
            "tar listing: {entries_seen} entries ({} files, {} directories, {} symlinks), none escaping the target",
            screen.counts.files, screen.counts.directories, screen.counts.symlinks
        )],
        tables: Some(tables(screen.counts)),
        problems: screen.problems,
    })
}

/// Exchanges two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
}

impl Engine for Dir {
    fn engine(&self) -> &'static str {
        "dir"
    }

    fn database(&self) -> String {
        let stem = self
            .path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .or_else(|| {
                fs::canonicalize(&self.path)
                    .ok()
                    .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
            })
            .unwrap_or_default();
        crate::name::sanitize_database(&stem)
    }

    fn url(&self) -> String {
        format!("dir:{}", self.path.display())
    }

    fn host(&self) -> String {
        crate::fsutil::host_name()
    }

    fn snapshot(&self, opts: &SnapshotOptions, out: &mut dyn Write) -> Result<SnapshotInfo> {
        if opts.base {
            return Err(Error::usage(
                "--base is for PostgreSQL; directory snapshots are always full",
            ));
        }
        if !opts.tables.is_empty() || !opts.exclude_tables.is_empty() {
            return Err(Error::usage(
                "--table and --exclude-table do not apply to directory trees",
            )
            .hint("snapshot the subdirectory you want with dir:PATH/SUBDIR"));
        }
        // A link to a directory as the root is followed (volumes are often
        // mounted through one); links inside the tree never are.
        match fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::failed(format!(
                    "{} is not a directory",
                    self.path.display()
                )))
            }
            Err(e) => {
                return Err(Error::failed(format!(
                    "directory {} cannot be read: {e}",
                    self.path.display()
                )))
            }
        }
        let stats = self.write_tar(out)?;
        let mut extra = serde_json::Map::new();
        extra.insert("files".into(), stats.counts.files.into());
        extra.insert("directories".into(), stats.counts.directories.into());
        extra.insert("symlinks".into(), stats.counts.symlinks.into());
        extra.insert("bytes".into(), stats.bytes.into());
        extra.insert(
            "manifest_sha256".into(),
            manifest_digest(stats.manifest).into(),
        );
        extra.insert(
            "changed_while_reading".into(),
            (!stats.changed.is_empty()).into(),
        );
        if !stats.changed.is_empty() {
            extra.insert("changed_files_count".into(), stats.changed.len().into());
            extra.insert("changed_files".into(), listed(stats.changed));
        }
        if !stats.skipped.is_empty() {
            extra.insert("skipped".into(), listed(stats.skipped));
        }
        Ok(SnapshotInfo {
            tables: tables(stats.counts),
            engine_version: format!("dbsafe dir {}", env!("CARGO_PKG_VERSION")),
            extra,
            ..Default::default()
        })
    }

    fn exists(&self) -> Result<bool> {
        Ok(fs::symlink_metadata(&self.path).is_ok())
    }

    fn tables(&self) -> Result<Vec<TableCount>> {
        match fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => Ok(tables(count_tree(&self.path)?)),
            Ok(_) => Err(Error::failed(format!(
                "{} is not a directory",
                self.path.display()
            ))),
            Err(_) => Ok(Vec::new()),
        }
    }

    fn restore(&self, payload: Payload, input: &mut dyn Read, opts: &RestoreOptions) -> Result<()> {
        super::file::expect_payload(payload, Payload::Tar, "directory", "dir", &self.path)?;
        if !opts.tables.is_empty() {
            return Err(Error::usage("--table does not apply to directory trees")
                .hint("restore the whole tree into another directory and copy what you need"));
        }
        let parent = super::file::restore_dir(&self.path, opts.create)?;
        let existing = match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::failed(format!(
                    "{} is a symbolic link; a restore replaces the directory itself",
                    self.path.display()
                ))
                .hint("restore into the directory the link points to"))
            }
            Ok(m) if !m.is_dir() => {
                return Err(Error::failed(format!(
                    "{} exists and is not a directory",
                    self.path.display()
                )))
            }
            Ok(_) => true,
            Err(_) => false,
        };
        if existing && is_mount_point(&self.path) {
            return self.restore_into_mount_point(input);
        }
        // Staged next to the target, so the swap is a rename on one filesystem.
        let staging = crate::fsutil::temp_name_for(&self.path);
        let guard = TempGuard::new(&staging);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))?;
        unpack(input, &staging)?;
        // Whatever is left of the stream (the end-of-archive blocks) is the
        // caller's to drain; the tree is complete.
        if !existing
            || fs::read_dir(&self.path)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false)
        {
            // rename(2) replaces an empty directory.
            fs::rename(&staging, &self.path).with_context(|| {
                format!("cannot move the restored tree to {}", self.path.display())
            })?;
            guard.keep();
        } else {
            match exchange(&staging, &self.path) {
                Ok(()) => {}
                Err(_) => {
                    // No RENAME_EXCHANGE on this filesystem: two renames.
                    let old = crate::fsutil::temp_name_for(&self.path);
                    fs::rename(&self.path, &old)
                        .with_context(|| format!("cannot move {} aside", self.path.display()))?;
                    if let Err(e) = fs::rename(&staging, &self.path) {
                        let _ = fs::rename(&old, &self.path);
                        return Err(Error::failed(format!(
                            "cannot move the restored tree to {}: {e}",
                            self.path.display()
                        )));
                    }
                    let _ = fs::rename(&old, &staging);
                }
            }
            // The staging name now holds the old tree; the guard removes it.
            drop(guard);
        }
        crate::fsutil::fsync_dir(parent)
    }

    fn drop_target(&self) -> Result<()> {
        if is_mount_point(&self.path) {
            // The mount point stays; what is in it goes.
            return empty_dir(&self.path);
        }
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&self.path).with_context(|| self.path.display().to_string())
            }
            Ok(_) => fs::remove_file(&self.path).with_context(|| self.path.display().to_string()),
            Err(_) => Ok(()),
        }
    }
}

/// Whether `dir` is a mount point: another filesystem than its parent's,
/// which cannot be renamed (a volume an object store serves, say).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        fs::symlink_metadata(dir),
        fs::metadata(crate::fsutil::parent_dir(dir)),
    ) {
        (Ok(d), Ok(p)) => d.is_dir() && d.dev() != p.dev(),
        _ => false,
    }
}

/// Removes everything in `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let p = e.with_context(|| dir.display().to_string())?.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            _ => fs::remove_file(&p),
        }
        .with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}

impl Dir {
    /// A mount point cannot be renamed: the tree is staged inside it (one
    /// filesystem, so each move is a rename), the old entries are moved
    /// aside into it, the new ones up, then the old ones removed. Not one
    /// atomic step as elsewhere: a run that dies in between leaves both
    /// under hidden names in it, and the safety backup holds the old tree.
    fn restore_into_mount_point(&self, input: &mut dyn Read) -> Result<()> {
        let inside = |what: &str| crate::fsutil::temp_name_for(&self.path.join(what));
        let (staging, aside) = (inside("restored"), inside("replaced"));
        let guard = TempGuard::new(&staging);
        for d in [&staging, &aside] {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        unpack(input, &staging)?;
        let move_all = |from: &Path, to: &Path, skip: &[&Path]| -> Result<()> {
            for e in fs::read_dir(from).with_context(|| from.display().to_string())? {
                let p = e.with_context(|| from.display().to_string())?.path();
                if skip.contains(&p.as_path()) {
                    continue;
                }
                let dest = to.join(p.file_name().expect("an entry has a name"));
                fs::rename(&p, &dest).with_context(|| {
                    format!("cannot move {} to {}", p.display(), dest.display())
                })?;
            }
            Ok(())
        };
        move_all(&self.path, &aside, &[&staging, &aside])?;
        move_all(&staging, &self.path, &[])?;
        // The tree's own mode, which the archive gave the staging directory.
        let mode = fs::metadata(&staging).with_context(|| staging.display().to_string())?;
        fs::set_permissions(&self.path, mode.permissions())
            .with_context(|| format!("cannot set the mode of {}", self.path.display()))?;
        drop(guard);
        fs::remove_dir_all(&aside).with_context(|| format!("cannot remove {}", aside.display()))?;
        crate::fsutil::fsync_dir(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::untar::tests::tar_of;

    #[test]
    fn a_check_lists_writes_through_an_archived_symlink_as_a_problem() {
        let t = tar_of(&[
            ("link", tar::EntryType::Symlink, Some("/tmp")),
            ("link/x", tar::EntryType::Regular, None),
        ]);
        let check = check(&mut t.as_slice()).expect("listing");
        assert_eq!(check.problems.len(), 1, "{:?}", check.problems);
        assert!(check.problems[0].contains("symbolic link"));
    }

    #[test]
    fn manifest_is_sorted_by_path_bytes() {
        let a = manifest_line(b"a.txt", 'f', 1, 0o644, b"x");
        let b = manifest_line(b"a/b", 'f', 1, 0o644, b"y");
        assert_eq!(
            manifest_digest(vec![a.clone(), b.clone()]),
            manifest_digest(vec![b, a])
        );
    }
}
