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
//! there: absolute paths, `..` components, hard links naming such paths, and
//! any entry whose path goes through a symbolic link the archive created
//! (the classic "symlink, then write through it" escape).

use super::{Engine, PayloadCheck, RestoreOptions, SnapshotInfo, SnapshotOptions};
use crate::cleanup::TempGuard;
use crate::error::{Context, Error, Result};
use crate::meta::TableCount;
use crate::name::Payload;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// How many changed files the metadata lists by name.
const MAX_LISTED_CHANGES: usize = 100;

/// A directory tree.
pub struct Dir {
    path: PathBuf,
}

/// The path of a `dir:` URL's remainder (`PATH`, `//rel`, `///abs`).
pub fn path_of(rest: &str) -> PathBuf {
    PathBuf::from(rest.strip_prefix("//").unwrap_or(rest))
}

impl Dir {
    /// The tree at `path`.
    pub fn new(path: PathBuf) -> Dir {
        Dir { path }
    }
}

/// The running tool's name, for warnings printed from inside the engine.
fn tool_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "dbsafe".into())
}

fn warn(msg: impl std::fmt::Display) {
    eprintln!("{}: warning: {msg}", tool_name());
}

/// Entry counts of a tree, the pseudo-tables.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    files: u64,
    directories: u64,
    symlinks: u64,
}

impl Counts {
    fn tables(self) -> Vec<TableCount> {
        if self == Counts::default() {
            return Vec::new();
        }
        let t = |name: &str, rows| TableCount {
            name: name.into(),
            rows,
        };
        vec![
            t("directories", self.directories),
            t("files", self.files),
            t("symlinks", self.symlinks),
        ]
    }
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
}

/// An io error with context; one that carries our own error (an aborted
/// pipeline: --max-size, an interruption) passes through unchanged.
fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    move |e| {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Error::from(e);
        }
        Error::failed(format!("{what}: {e}"))
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

    /// Appends one regular file; returns whether it changed while read.
    fn append_file(
        &self,
        builder: &mut tar::Builder<&mut dyn Write>,
        abs: &Path,
        rel: &Path,
        stats: &mut TreeStats,
    ) -> Result<()> {
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
            warn(format!(
                "{} is no longer a regular file; left out",
                abs.display()
            ));
            return Ok(());
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
            warn(format!(
                "{} changed while it was read; its copy in the snapshot may mix old and new contents",
                abs.display()
            ));
            stats.changed.push(rel.display().to_string());
        }
        stats.counts.files += 1;
        stats.bytes += size;
        stats.manifest.push(manifest_line(
            rel.as_os_str().as_bytes(),
            'f',
            size,
            before.mode(),
            hex::encode(digest).as_bytes(),
        ));
        Ok(())
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
                warn(format!(
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

/// An archive path as a path relative to the target root; `.` is the root.
///
/// Refuses what would leave the target: absolute paths and `..`.
fn safe_relative(raw: &[u8]) -> std::result::Result<PathBuf, String> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    if raw.is_empty() {
        return Err("an entry has an empty path".into());
    }
    let path = Path::new(OsStr::from_bytes(raw));
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "entry {shown:?} has an absolute path and would be written outside the target"
                ))
            }
            Component::ParentDir => {
                return Err(format!(
                    "entry {shown:?} contains `..` and could be written outside the target"
                ))
            }
        }
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    Ok(rel)
}

/// The ancestors of a relative path, shortest first, without the path itself.
fn ancestors(rel: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    for c in parts.iter().take(parts.len().saturating_sub(1)) {
        cur.push(c);
        out.push(cur.clone());
    }
    out
}

/// Checks an archive's entries without writing anything, the way
/// [`unpack`] would take them: escapes are problems.
struct Screen {
    links: HashSet<PathBuf>,
    counts: Counts,
    problems: Vec<String>,
}

impl Screen {
    fn new() -> Screen {
        Screen {
            links: HashSet::new(),
            counts: Counts::default(),
            problems: Vec::new(),
        }
    }

    /// The entry's path, when it is safe to write.
    fn admit(&mut self, raw: &[u8]) -> Option<PathBuf> {
        let rel = match safe_relative(raw) {
            Ok(r) => r,
            Err(why) => {
                self.problems.push(why);
                return None;
            }
        };
        if let Some(link) = ancestors(&rel).into_iter().find(|a| self.links.contains(a)) {
            self.problems.push(format!(
                "entry {:?} goes through the symbolic link {:?} and could be written outside the target",
                rel.display().to_string(),
                link.display().to_string()
            ));
            return None;
        }
        Some(rel)
    }

    fn entry(&mut self, kind: tar::EntryType, raw: &[u8], link: Option<&[u8]>) {
        let Some(rel) = self.admit(raw) else { return };
        let root = rel == Path::new(".");
        match kind {
            // The root is the target itself, not a directory in it.
            tar::EntryType::Directory if root => {}
            tar::EntryType::Directory => self.counts.directories += 1,
            tar::EntryType::Regular | tar::EntryType::Continuous => self.counts.files += 1,
            tar::EntryType::Symlink => {
                self.counts.symlinks += 1;
                self.links.insert(rel);
            }
            tar::EntryType::Link => {
                match link.map(|l| self.admit(l)) {
                    Some(Some(_)) => self.counts.files += 1,
                    Some(None) => {} // the problem is recorded
                    None => self
                        .problems
                        .push(format!("hard link {:?} names no target", rel.display())),
                }
            }
            _ => {}
        }
    }
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
        tables: Some(screen.counts.tables()),
        problems: screen.problems,
    })
}

/// Sets a path's mtime without following a final symbolic link.
fn set_mtime(path: &Path, secs: u64) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains NUL"))?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    // atime: leave as it is.
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        t,
    ];
    // SAFETY: `c` is a valid NUL-terminated path and `times` points to two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes whatever non-directory is at `p`, so a new entry can take its place.
fn clear_spot(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Err(Error::failed(format!(
            "the archive replaces directory {} with a non-directory",
            p.display()
        ))),
        Ok(_) => fs::remove_file(p).with_context(|| format!("cannot replace {}", p.display())),
        Err(_) => Ok(()),
    }
}

/// Unpacks a tar stream into the (fresh, private) directory `dest`.
///
/// Every entry is screened before it is written; a refused entry stops the
/// unpacking with an error, and nothing was written outside `dest`.
fn unpack(input: &mut dyn Read, dest: &Path) -> Result<()> {
    let root = crate::fsutil::running_as_root();
    let mut screen = Screen::new();
    // Directory modes and mtimes are set last: creating entries in a
    // directory changes its mtime, and a read-only mode would stop them.
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(io_err("reading the tar stream"))?;
    for entry in entries {
        let mut e = entry.map_err(io_err("reading the tar stream"))?;
        let kind = e.header().entry_type();
        let raw = e.path_bytes().into_owned();
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let before = screen.problems.len();
        screen.entry(kind, &raw, link.as_deref());
        if let Some(why) = screen.problems.get(before) {
            return Err(Error::failed(format!("refusing the archive: {why}"))
                .hint("nothing was written outside the target; the target is unchanged"));
        }
        let rel = safe_relative(&raw).map_err(Error::failed)?;
        let path = dest.join(&rel);
        // Parents the archive did not list are made private; the walk above
        // guarantees none of them is a link.
        for a in ancestors(&rel) {
            let p = dest.join(&a);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::failed(format!(
                        "entry {} needs {} to be a directory",
                        rel.display(),
                        a.display()
                    )))
                }
                Err(_) => crate::fsutil::create_private_dir(&p)?,
            }
        }
        let header = e.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0);
        let owner = header.uid().ok().zip(header.gid().ok());
        match kind {
            tar::EntryType::Directory => {
                if rel != Path::new(".") {
                    match fs::symlink_metadata(&path) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => {
                            clear_spot(&path)?;
                            crate::fsutil::create_private_dir(&path)?;
                        }
                        Err(_) => crate::fsutil::create_private_dir(&path)?,
                    }
                }
                dirs.push((path.clone(), mode, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear_spot(&path)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                io::copy(&mut e, &mut f).map_err(io_err(format!("unpacking {}", rel.display())))?;
            }
            tar::EntryType::Symlink => {
                let target = link.unwrap_or_default();
                clear_spot(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .with_context(|| format!("cannot create link {}", path.display()))?;
                let _ = set_mtime(&path, mtime);
            }
            tar::EntryType::Link => {
                let target = safe_relative(&link.unwrap_or_default()).map_err(Error::failed)?;
                clear_spot(&path)?;
                fs::hard_link(dest.join(&target), &path)
                    .with_context(|| format!("cannot create hard link {}", path.display()))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                warn(format!("{} is a {other:?} entry; left out", rel.display()));
                continue;
            }
        }
        if let (true, Some((uid, gid))) = (root, owner) {
            std::os::unix::fs::lchown(&path, Some(uid as u32), Some(gid as u32))
                .with_context(|| format!("cannot set the owner of {}", path.display()))?;
        }
        // After the owner: chown clears set-user-ID and set-group-ID bits.
        if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set the mode of {}", path.display()))?;
            set_mtime(&path, mtime).with_context(|| path.display().to_string())?;
        }
    }
    // Deepest first, so setting a parent's mtime comes after its children.
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (p, mode, mtime) in dirs {
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", p.display()))?;
        set_mtime(&p, mtime).with_context(|| p.display().to_string())?;
    }
    Ok(())
}

/// Exchanges two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains NUL"))?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains NUL"))?;
    // SAFETY: both are valid NUL-terminated paths; the call has no other preconditions.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Engine for Dir {
    fn engine(&self) -> &'static str {
        "dir"
    }

    fn payload(&self, _base: bool) -> Payload {
        Payload::Tar
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
            let listed: Vec<serde_json::Value> = stats
                .changed
                .into_iter()
                .take(MAX_LISTED_CHANGES)
                .map(Into::into)
                .collect();
            extra.insert("changed_files".into(), listed.into());
        }
        if !stats.skipped.is_empty() {
            let listed: Vec<serde_json::Value> = stats
                .skipped
                .into_iter()
                .take(MAX_LISTED_CHANGES)
                .map(Into::into)
                .collect();
            extra.insert("skipped".into(), listed.into());
        }
        Ok(SnapshotInfo {
            tables: stats.counts.tables(),
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
            Ok(m) if m.is_dir() => Ok(count_tree(&self.path)?.tables()),
            Ok(_) => Err(Error::failed(format!(
                "{} is not a directory",
                self.path.display()
            ))),
            Err(_) => Ok(Vec::new()),
        }
    }

    fn restore(&self, payload: Payload, input: &mut dyn Read, opts: &RestoreOptions) -> Result<()> {
        if payload != Payload::Tar {
            return Err(Error::usage(format!(
                "cannot restore a {} payload into directory {}",
                payload.ext(),
                self.path.display()
            ))
            .hint("a dir: target takes tar artifacts"));
        }
        if !opts.tables.is_empty() {
            return Err(Error::usage("--table does not apply to directory trees")
                .hint("restore the whole tree into another directory and copy what you need"));
        }
        let parent = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            if !opts.create {
                return Err(Error::failed(format!(
                    "directory {} does not exist",
                    parent.display()
                ))
                .hint("pass --create to create it"));
            }
            crate::fsutil::create_private_dir(parent)?;
        }
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
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&self.path).with_context(|| self.path.display().to_string())
            }
            Ok(_) => fs::remove_file(&self.path).with_context(|| self.path.display().to_string()),
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            let data: &[u8] = if *kind == tar::EntryType::Regular {
                b"pwned"
            } else {
                b""
            };
            h.set_size(data.len() as u64);
            // Written raw: the tar crate's own builder refuses these paths.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    #[test]
    fn paths_that_leave_the_target_are_refused() {
        assert!(safe_relative(b"../x").is_err());
        assert!(safe_relative(b"a/../../x").is_err());
        assert!(safe_relative(b"/etc/passwd").is_err());
        assert_eq!(safe_relative(b"./a/b").expect("fine"), PathBuf::from("a/b"));
        assert_eq!(safe_relative(b"./").expect("root"), PathBuf::from("."));
    }

    #[test]
    fn writes_through_an_archived_symlink_are_refused() {
        let t = tar_of(&[
            ("link", tar::EntryType::Symlink, Some("/tmp")),
            ("link/x", tar::EntryType::Regular, None),
        ]);
        let check = check(&mut t.as_slice()).expect("listing");
        assert_eq!(check.problems.len(), 1, "{:?}", check.problems);
        assert!(check.problems[0].contains("symbolic link"));

        let dir = tempfile::tempdir().expect("tmp");
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).expect("dest");
        let err = unpack(&mut t.as_slice(), &dest).expect_err("refused");
        assert!(err.message.contains("symbolic link"), "{err}");
    }

    #[test]
    fn unpacking_a_traversal_writes_nothing_outside() {
        let dir = tempfile::tempdir().expect("tmp");
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).expect("dest");
        for bad in ["../escaped", "/tmp/dbsafe-escaped-abs"] {
            let t = tar_of(&[
                ("ok", tar::EntryType::Regular, None),
                (bad, tar::EntryType::Regular, None),
            ]);
            let err = unpack(&mut t.as_slice(), &dest).expect_err("refused");
            assert!(err.message.contains("outside the target"), "{err}");
        }
        assert!(!dir.path().join("escaped").exists());
        assert!(!Path::new("/tmp/dbsafe-escaped-abs").exists());
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
