//! Directory trees for the `dir:` engine: a sample tree with what volumes
//! hold, and an exact description of a tree for comparisons.

use crate::testdb::Engine;
use crate::{require, Cmd, Scene};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Creates at `root` a tree with what volumes hold: unicode names and spaces, a private
/// file, an executable, nested and empty directories, relative, absolute,
/// dangling and directory symlinks, a path longer than tar's 100 bytes,
/// fixed mtimes.
pub fn sample_tree(root: &Path) {
    std::fs::create_dir_all(root).expect("mkdir");
    let long = "a-rather-long-directory-name-that-goes-on".repeat(2);
    for d in [
        "sub/nested",
        "empty",
        "vide répertoire ✓",
        &format!("{long}/{long}"),
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("secret.key"), "not for others\n").expect("write");
    set_mode(&root.join("secret.key"), 0o600);
    std::fs::write(root.join("run me.sh"), "#!/bin/sh\necho hi\n").expect("write");
    set_mode(&root.join("run me.sh"), 0o755);
    std::fs::write(root.join("Zoë Ångström 日本語.txt"), "unicode ✓\n").expect("write");
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("sub/nested/blob.bin"), &blob).expect("write");
    std::fs::write(root.join(format!("{long}/{long}/deep.txt")), "deep\n").expect("write");
    std::fs::write(root.join("sub/empty-file"), "").expect("write");
    set_mode(&root.join("empty"), 0o750);
    for (link, target) in [
        ("link-rel", "sub/nested/blob.bin"),
        ("link-abs", "/etc/hostname"),
        ("dangling", "no/such/file"),
        ("sub/up", "../secret.key"),
        ("dirlink", "sub"),
    ] {
        std::os::unix::fs::symlink(target, root.join(link)).expect("symlink");
    }
    // Fixed mtimes, links and directories included (deepest first).
    Cmd::sh(&format!(
        "cd '{}' && find . -depth -exec touch -h -d '2021-03-04 05:06:07' {{}} +",
        root.display()
    ))
    .succeeds();
}

/// A new test directory holding `volume`, a [`sample_tree`]; returns the
/// directory and the tree's path.
pub fn volume() -> (Scene, PathBuf) {
    let s = Scene::new();
    let src = s.path("volume");
    sample_tree(&src);
    (s, src)
}

/// Every entry below `root`: path, kind, mode, mtime, size, link target, content.
pub fn describe(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let rel = p.strip_prefix(root).expect("inside").display().to_string();
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                format!(
                    "link -> {}",
                    std::fs::read_link(&p).expect("link").display()
                )
            } else if ft.is_dir() {
                "dir".to_string()
            } else {
                let sum = crate::sha256_file(&p);
                format!("file {} {sum}", m.len())
            };
            let mode = if ft.is_symlink() {
                String::new()
            } else {
                format!("{:o}", m.mode() & 0o7777)
            };
            out.push(format!("{rel} | {what} | {mode} | {}", m.mtime()));
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    let m = std::fs::metadata(root).expect("root");
    out.push(format!(". | {:o}", m.mode() & 0o7777));
    walk(root, root, &mut out);
    out
}

pub fn diff_r(a: &Path, b: &Path) {
    require("diff", "the Debian package diffutils");
    Cmd::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .succeeds();
}

/// Counts of the entries below `root` (not itself), as a snapshot's metadata lists them.
pub fn entry_counts(root: &Path) -> Vec<(String, u64)> {
    let (mut dirs, mut files, mut links) = (0, 0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let ft = e.file_type().expect("file type");
            if ft.is_symlink() {
                links += 1;
            } else if ft.is_dir() {
                dirs += 1;
                stack.push(e.path());
            } else {
                files += 1;
            }
        }
    }
    vec![
        ("directories".to_string(), dirs),
        ("files".to_string(), files),
        ("symlinks".to_string(), links),
    ]
}

crate::file_db! {
    /// Trees, each a directory `NAME` in a directory of their own.
    Trees,
    Engine::files("dir", "tar"),
    "";

    /// The sample tree, whatever `rows`.
    fn fixture(&self, db: &str, _rows: u64) {
        sample_tree(&self.path(db));
    }
    fn alter(&self, db: &str) {
        let root = self.path(db);
        std::fs::create_dir_all(root.join("old/dir")).expect("mkdir");
        std::fs::write(root.join("old/dir/data"), "old contents").expect("write");
        std::fs::write(root.join("secret.key"), "old key").expect("write");
    }
    fn counts(&self, db: &str) -> Vec<(String, u64)> {
        entry_counts(&self.path(db))
    }
    fn contents(&self, db: &str) -> Vec<(String, String)> {
        describe(&self.path(db))
            .into_iter()
            .map(|l| match l.split_once(" | ") {
                Some((p, rest)) => (p.to_string(), rest.to_string()),
                None => (l, String::new()),
            })
            .collect()
    }
    fn plain_restore(&self, db: &str) -> String {
        require("tar", "the Debian package tar");
        let root = self.path(db);
        std::fs::create_dir(&root).expect("mkdir");
        format!("tar -xpf - -C '{}'", root.display())
    }
    /// The tree was swapped whole: no staging or old tree left beside it.
    fn check_replaced(&self, _db: &str) {
        let hidden: Vec<_> = std::fs::read_dir(self.0.path(""))
            .expect("trees")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "staging or old trees left: {hidden:?}");
    }
}
