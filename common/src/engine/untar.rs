//! Tar streams unpacked safely: one unpacker for directory trees and
//! PostgreSQL base backups.
//!
//! Entries that would land outside the destination are refused before
//! anything is written there: absolute paths, `..` components, hard links
//! naming such paths, and any entry whose path goes through a symbolic link
//! the archive created (the classic "symlink, then write through it"
//! escape). [`Screen`] applies the same rules without writing, for
//! structural checks.

use crate::error::{Context, Error, Result};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Entry counts of a tree.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Regular files (and hard links to them).
    pub files: u64,
    /// Directories below the root.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
}

/// An io error with context; one that carries our own error (an aborted
/// pipeline: --max-size, an interruption) passes through unchanged.
pub(crate) fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    move |e| {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Error::from(e);
        }
        Error::io(what, e)
    }
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
pub(crate) struct Screen {
    links: HashSet<PathBuf>,
    /// What was admitted.
    pub counts: Counts,
    /// Why entries were refused.
    pub problems: Vec<String>,
}

impl Screen {
    /// A screen that has seen nothing.
    pub fn new() -> Screen {
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

    /// Screens one entry.
    pub fn entry(&mut self, kind: tar::EntryType, raw: &[u8], link: Option<&[u8]>) {
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
                    // A second name of a symbolic link is one too: nothing
                    // may be written through it either.
                    Some(Some(target)) if self.links.contains(&target) => {
                        self.counts.symlinks += 1;
                        self.links.insert(rel);
                    }
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

/// Sets a path's mtime without following a final symbolic link.
fn set_mtime(path: &Path, secs: u64) -> io::Result<()> {
    use rustix::fs::{Timespec, Timestamps, UTIME_OMIT};
    let times = Timestamps {
        // atime: leave as it is.
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: secs as i64,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
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
pub(crate) fn unpack(input: &mut dyn Read, dest: &Path) -> Result<()> {
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
                // What the target's path goes through, as it stands on disk:
                // directories only, never a link out of the target.
                for a in ancestors(&target) {
                    if !fs::symlink_metadata(dest.join(&a)).is_ok_and(|m| m.is_dir()) {
                        return Err(Error::failed(format!(
                            "refusing the archive: hard link {} names {} through {}, which is not a directory",
                            rel.display(),
                            target.display(),
                            a.display()
                        ))
                        .hint("nothing was written outside the target; the target is unchanged"));
                    }
                }
                clear_spot(&path)?;
                fs::hard_link(dest.join(&target), &path)
                    .with_context(|| format!("cannot create hard link {}", path.display()))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                crate::output::warn(format!("{} is a {other:?} entry; left out", rel.display()));
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar of raw entries (path, kind, link target), escaping ones included.
    pub(crate) fn tar_of(entries: &[(&str, tar::EntryType, Option<&str>)]) -> Vec<u8> {
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
        let dir = tempfile::tempdir().expect("tmp");
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).expect("dest");
        let err = unpack(&mut t.as_slice(), &dest).expect_err("refused");
        assert!(err.message.contains("symbolic link"), "{err}");
    }

    /// A directory `outside` holding `victim`, and an empty `dest` beside it.
    fn victim_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let (outside, dest) = (dir.path().join("outside"), dir.path().join("dest"));
        fs::create_dir(&outside).expect("outside");
        fs::write(outside.join("victim"), b"precious").expect("victim");
        fs::create_dir(&dest).expect("dest");
        (dir, outside, dest)
    }

    /// `outside/victim` has its one name still.
    fn untouched(outside: &Path) {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(outside.join("victim")).expect("victim");
        assert_eq!(m.nlink(), 1);
    }

    /// A hard link to an archived symbolic link is a second name of it: a
    /// hard link through that name would reach outside (and, as root, take
    /// the archive's owner there).
    #[test]
    fn hard_links_through_a_second_name_of_a_symlink_are_refused() {
        let (_dir, outside, dest) = victim_outside();
        let out = outside.display().to_string();
        let t = tar_of(&[
            ("s", tar::EntryType::Symlink, Some(&out)),
            ("h2", tar::EntryType::Link, Some("s")),
            ("h3", tar::EntryType::Link, Some("h2/victim")),
        ]);
        let mut screen = Screen::new();
        for (path, kind, link) in [
            ("s", tar::EntryType::Symlink, Some("x")),
            ("h2", tar::EntryType::Link, Some("s")),
            ("h3", tar::EntryType::Link, Some("h2/victim")),
        ] {
            screen.entry(kind, path.as_bytes(), link.map(str::as_bytes));
        }
        assert_eq!(screen.problems.len(), 1, "{:?}", screen.problems);
        let err = unpack(&mut t.as_slice(), &dest).expect_err("refused");
        assert!(err.message.contains("symbolic link"), "{err}");
        untouched(&outside);
        assert!(!dest.join("h3").exists());
    }

    /// A link already in the directory unpacked into (not in the archive,
    /// so the screen never saw it): a hard link through it is refused too.
    #[test]
    fn hard_links_through_a_link_on_disk_are_refused() {
        let (_dir, outside, dest) = victim_outside();
        std::os::unix::fs::symlink(&outside, dest.join("s")).expect("link");
        let t = tar_of(&[("h", tar::EntryType::Link, Some("s/victim"))]);
        let err = unpack(&mut t.as_slice(), &dest).expect_err("refused");
        assert!(err.message.contains("not a directory"), "{err}");
        untouched(&outside);
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
}
