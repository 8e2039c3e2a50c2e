//! The directory-tree engine (`dir:PATH`): tar snapshots that keep modes,
//! mtimes, symlinks and empty directories; restores that never write
//! outside the target.

use dbsafe_tests::{artifacts, require, temporaries, Cmd, Scene};
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn meta_of(artifact: &Path) -> Value {
    let path = format!("{}.meta.json", artifact.display());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).expect("metadata is JSON")
}

fn url(p: &Path) -> String {
    format!("dir:{}", p.display())
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A tree with what volumes hold: unicode names and spaces, a private
/// file, an executable, nested and empty directories, relative, absolute,
/// dangling and directory symlinks, a path longer than tar's 100 bytes,
/// fixed mtimes.
fn sample_tree(root: &Path) {
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

/// Every entry below `root`: path, kind, mode, mtime, size, link target, content.
fn describe(root: &Path) -> Vec<String> {
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
                let sum = dbsafe_tests::sha256_file(&p);
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

fn diff_r(a: &Path, b: &Path) {
    require("diff", "the Debian package diffutils");
    Cmd::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .succeeds();
}

#[test]
fn backup_verifies_at_every_level_and_restores_identically() {
    let s = Scene::new();
    let src = s.path("volume");
    std::fs::create_dir(&src).expect("mkdir");
    sample_tree(&src);
    let (key, public) = s.age_key("key.txt");
    let store = s.path("store");
    Cmd::tool("dbsnap")
        .arg(url(&src))
        .arg("--to")
        .arg(&store)
        .arg("-r")
        .arg(&public)
        .succeeds();
    let art = artifacts(&store).into_iter().next().expect("an artifact");
    assert!(
        art.to_string_lossy().ends_with(".tar.zst.age"),
        "{}",
        art.display()
    );
    let meta = meta_of(&art);
    assert_eq!(meta["engine"], "dir");
    assert_eq!(meta["payload"], "tar");
    assert_eq!(meta["database"], "volume");
    assert_eq!(meta["extra"]["files"], 6, "{meta}");
    assert_eq!(meta["extra"]["symlinks"], 5, "{meta}");
    assert_eq!(meta["extra"]["directories"], 6, "{meta}");
    assert_eq!(meta["extra"]["changed_while_reading"], false);
    assert!(meta["extra"]["bytes"].as_u64().is_some_and(|b| b > 200_000));
    let manifest = meta["extra"]["manifest_sha256"]
        .as_str()
        .expect("manifest digest")
        .to_string();
    assert_eq!(manifest.len(), 64);
    assert_eq!(
        meta["tables"],
        serde_json::json!([
            {"name": "directories", "rows": 6},
            {"name": "files", "rows": 6},
            {"name": "symlinks", "rows": 5}
        ])
    );

    for level in ["quick", "full"] {
        Cmd::tool("dbverify")
            .arg("--store")
            .arg(&store)
            .args(["--latest", "--level", level, "-i"])
            .arg(&key)
            .succeeds();
    }
    let r = Cmd::tool("dbverify")
        .arg("--store")
        .arg(&store)
        .args(["--latest", "--level", "restore", "--json", "-i"])
        .arg(&key)
        .succeeds();
    let rec = &r.json()[0];
    assert_eq!(rec["result"], "pass", "{rec}");
    assert_eq!(rec["integrity_score"], 1.0, "{rec}");

    let out = s.path("restored");
    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(&store)
        .arg("--latest")
        .arg("-i")
        .arg(&key)
        .arg("--target")
        .arg(url(&out))
        .succeeds();
    diff_r(&src, &out);
    assert_eq!(describe(&out), describe(&src));
    assert_eq!(
        std::fs::metadata(out.join("secret.key"))
            .expect("key")
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_link(out.join("link-abs")).expect("link"),
        PathBuf::from("/etc/hostname")
    );

    // A snapshot of the restored tree has the same manifest.
    let again = s.path("again.tar");
    Cmd::tool("dbsnap")
        .arg(url(&out))
        .args(["--compress", "none", "-o"])
        .arg(&again)
        .succeeds();
    assert_eq!(
        meta_of(&again)["extra"]["manifest_sha256"],
        manifest.as_str()
    );

    // Rotation works on tree backups like on any other: of three, the
    // newest and the newest verified (the first) stay.
    for _ in 0..2 {
        Cmd::tool("dbsnap")
            .arg(url(&src))
            .arg("--to")
            .arg(&store)
            .arg("-r")
            .arg(&public)
            .succeeds();
    }
    let all = artifacts(&store);
    assert_eq!(all.len(), 3);
    Cmd::tool("dbprune")
        .arg("--store")
        .arg(&store)
        .args(["--keep-last", "1"])
        .succeeds();
    assert_eq!(artifacts(&store), vec![all[0].clone(), all[2].clone()]);
    assert_eq!(temporaries(s.dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn artifact_restores_with_age_zstd_and_tar_alone() {
    require("age", "the Debian package age");
    require("zstd", "the Debian package zstd");
    require("tar", "the Debian package tar");
    let s = Scene::new();
    let src = s.path("volume");
    std::fs::create_dir(&src).expect("mkdir");
    sample_tree(&src);
    let (key, public) = s.age_key("key.txt");
    let art = s.path("volume.tar.zst.age");
    Cmd::tool("dbsnap")
        .arg(url(&src))
        .arg("-o")
        .arg(&art)
        .arg("-r")
        .arg(&public)
        .succeeds();
    let plain = s.path("plain");
    std::fs::create_dir(&plain).expect("mkdir");
    Cmd::sh(&format!(
        "age -d -i '{}' '{}' | zstd -d | tar -xpf - -C '{}'",
        key.display(),
        art.display(),
        plain.display()
    ))
    .succeeds();
    diff_r(&src, &plain);
    assert_eq!(describe(&plain), describe(&src));
}

/// One 512-byte tar header (ustar), with `data` after it, as a hostile
/// archiver would write it: no path checks.
fn tar_entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn archives_that_would_write_outside_the_target_are_refused_by_dbverify_and_dbrestore() {
    let s = Scene::new();
    let outside = s.path("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let jail = s.path("jail");
    std::fs::create_dir(&jail).expect("mkdir");
    let abs_target = outside.join("abs.txt");
    let cases = [
        (
            "dotdot",
            tar_of(&[
                tar_entry("ok.txt", b'0', "", b"fine"),
                tar_entry("../outside/escaped.txt", b'0', "", b"pwned"),
            ]),
            outside.join("escaped.txt"),
        ),
        (
            "absolute",
            tar_of(&[tar_entry(&abs_target.to_string_lossy(), b'0', "", b"pwned")]),
            abs_target.clone(),
        ),
        (
            "symlink",
            tar_of(&[
                tar_entry("link", b'2', &outside.to_string_lossy(), b""),
                tar_entry("link/through.txt", b'0', "", b"pwned"),
            ]),
            outside.join("through.txt"),
        ),
        (
            "hardlink",
            tar_of(&[tar_entry("hl", b'1', "../outside/victim", b"")]),
            outside.join("victim-changed"),
        ),
    ];
    std::fs::write(outside.join("victim"), "untouched").expect("write");
    for (name, bytes, escape) in &cases {
        let art = s.path(&format!("{name}.tar"));
        std::fs::write(&art, bytes).expect("write");
        let r = Cmd::tool("dbverify")
            .args(["--level", "full", "--json"])
            .arg(&art)
            .fails_with_code(1);
        assert!(
            r.stdout().contains("outside the target"),
            "{name}: {}",
            r.stdout()
        );
        let target = jail.join(name);
        Cmd::tool("dbrestore")
            .arg(&art)
            .arg("--target")
            .arg(url(&target))
            .fails_with_code(1)
            .stderr_has("failed verification");
        Cmd::tool("dbrestore")
            .arg(&art)
            .args(["--skip-verify", "--target"])
            .arg(url(&target))
            .fails_with_code(1)
            .stderr_has("outside the target");
        // From stdin too, where nothing is verified first.
        Cmd::tool("dbrestore")
            .arg("-")
            .stdin_file(&art)
            .arg("--target")
            .arg(url(&target))
            .fails_with_code(1)
            .stderr_has("outside the target");
        assert!(!escape.exists(), "{name}: {} was written", escape.display());
        assert!(!target.exists(), "{name}: the target was created");
    }
    assert_eq!(
        std::fs::read_to_string(outside.join("victim")).expect("victim"),
        "untouched"
    );
    let left: Vec<_> = std::fs::read_dir(&jail)
        .expect("jail")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
    let outside_now: Vec<_> = std::fs::read_dir(&outside)
        .expect("outside")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(outside_now, vec![std::ffi::OsString::from("victim")]);
}

#[test]
fn restore_over_a_non_empty_directory_confirms_takes_a_safety_backup_and_swaps_whole() {
    let s = Scene::new();
    let src = s.path("volume");
    std::fs::create_dir(&src).expect("mkdir");
    sample_tree(&src);
    let store = s.path("store");
    Cmd::tool("dbsnap")
        .arg(url(&src))
        .arg("--to")
        .arg(&store)
        .succeeds();

    let live = s.path("live");
    std::fs::create_dir_all(live.join("old/dir")).expect("mkdir");
    std::fs::write(live.join("old/dir/data"), "old contents").expect("write");
    std::fs::write(live.join("secret.key"), "old key").expect("write");
    let before = describe(&live);
    let select = |c: Cmd| c.arg("--store").arg(&store).args(["--latest"]);

    select(Cmd::tool("dbrestore"))
        .arg("--target")
        .arg(url(&live))
        .fails_with_code(4)
        .stderr_has("--yes");
    assert_eq!(describe(&live), before);
    assert_eq!(
        artifacts(&store).len(),
        1,
        "a refused restore took a safety backup"
    );

    select(Cmd::tool("dbrestore"))
        .arg("--target")
        .arg(url(&live))
        .arg("--yes")
        .succeeds();
    assert_eq!(describe(&live), describe(&src));
    assert!(
        !live.join("old").exists(),
        "the old tree was merged, not replaced"
    );
    let siblings: Vec<_> = std::fs::read_dir(s.dir.path())
        .expect("scene")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        siblings.is_empty(),
        "staging or old trees left: {siblings:?}"
    );

    let safety: Vec<PathBuf> = artifacts(&store)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("default-safety_live_full_"))
        .collect();
    assert_eq!(safety.len(), 1, "{:?}", artifacts(&store));
    let back = s.path("back");
    Cmd::tool("dbrestore")
        .arg(&safety[0])
        .arg("--target")
        .arg(url(&back))
        .succeeds();
    assert_eq!(describe(&back), before);

    let audit = std::fs::read_to_string(store.join("audit.log")).expect("audit log");
    let entry: Value =
        serde_json::from_str(audit.lines().last().expect("an entry")).expect("json line");
    assert_eq!(entry["action"], "restore");
    assert_eq!(entry["result"], "success");
    assert_eq!(entry["target"], url(&live));

    // An empty directory is an empty target: no confirmation, no safety backup.
    let empty = s.path("empty-target");
    std::fs::create_dir(&empty).expect("mkdir");
    select(Cmd::tool("dbrestore"))
        .arg("--target")
        .arg(url(&empty))
        .succeeds();
    assert_eq!(describe(&empty), describe(&src));
}

#[test]
fn a_file_that_changes_while_it_is_read_is_reported() {
    let s = Scene::new();
    let src = s.path("volume");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("steady.txt"), "steady").expect("write");
    let growing = src.join("growing.log");
    std::fs::write(&growing, vec![b'x'; 64 << 20]).expect("write");
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let stop = stop.clone();
        let growing = growing.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&growing)
                .expect("open");
            let chunk = vec![b'y'; 4096];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(&chunk).expect("append");
                n += 1;
            }
            n
        })
    };
    let art = s.path("volume.tar.zst");
    let r = Cmd::tool("dbsnap")
        .arg(url(&src))
        .arg("-o")
        .arg(&art)
        .succeeds();
    stop.store(true, Ordering::Relaxed);
    let appended = appender.join().expect("appender");
    assert!(appended > 0);
    assert!(
        r.stderr().contains("growing.log changed while it was read"),
        "{}",
        r.stderr()
    );
    assert!(!r.stderr().contains("steady.txt"), "{}", r.stderr());
    let meta = meta_of(&art);
    assert_eq!(meta["extra"]["changed_while_reading"], true, "{meta}");
    assert_eq!(
        meta["extra"]["changed_files"],
        serde_json::json!(["growing.log"])
    );
    // The artifact is still a well-formed tar.
    Cmd::tool("dbverify").arg(&art).succeeds();
}

#[test]
fn a_missing_source_directory_fails_and_leaves_nothing() {
    let s = Scene::new();
    let out = s.path("x.tar.zst");
    Cmd::tool("dbsnap")
        .arg(url(&s.path("nope")))
        .arg("-o")
        .arg(&out)
        .fails_with_code(1)
        .stderr_has("cannot be read");
    assert!(!out.exists());
    assert_eq!(temporaries(s.dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_link_to_the_tree_is_followed_at_the_root_only() {
    let s = Scene::new();
    let src = s.path("volume");
    std::fs::create_dir(&src).expect("mkdir");
    sample_tree(&src);
    let via = s.path("mounted");
    std::os::unix::fs::symlink(&src, &via).expect("symlink");
    let direct = s.path("direct.tar");
    let linked = s.path("linked.tar");
    for (root, out) in [(&src, &direct), (&via, &linked)] {
        Cmd::tool("dbsnap")
            .arg(url(root))
            .args(["--compress", "none", "-o"])
            .arg(out)
            .succeeds();
    }
    assert_eq!(
        meta_of(&linked)["extra"]["manifest_sha256"],
        meta_of(&direct)["extra"]["manifest_sha256"]
    );
    // Links inside the tree stay links.
    assert_eq!(meta_of(&linked)["extra"]["symlinks"], 5);
}
