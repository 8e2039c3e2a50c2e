//! The directory-tree engine (`dir:PATH`): tar snapshots that keep modes,
//! mtimes, symlinks and empty directories; restores that never write
//! outside the target.

use dbsafe_tests::dir::{describe, diff_r, Trees};
use dbsafe_tests::{
    artifacts, meta_of, prune_store, restore_file, restore_from_store, scenarios,
    snap_fails_leaving_nothing, snap_raw, snap_to_file, snap_to_store, temporaries,
    verify_full_json, Cmd, Scene,
};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn url(p: &Path) -> String {
    format!("dir:{}", p.display())
}

dbsafe_tests::engine_scenarios!(Trees::start());

/// Two names of one file (a hard link) stay one file through a backup and
/// a restore: the same inode, one copy of the bytes, a write through one
/// name seen through the other.
#[test]
fn hard_links_stay_one_file_through_a_backup_and_a_restore() {
    let (s, src) = dbsafe_tests::dir::volume();
    std::fs::hard_link(src.join("sub/nested/blob.bin"), src.join("blob again.bin")).unwrap();
    let art = s.path("volume.tar.zst");
    snap_to_file(url(&src), &art).succeeds();
    verify_full_json(&art).succeeds();
    let back = s.path("back");
    for _ in 0..2 {
        restore_file(&art, url(&back))
            .args(["--create", "--yes", "--no-safety-backup"])
            .succeeds();
        let (a, b) = (
            std::fs::metadata(back.join("sub/nested/blob.bin")).unwrap(),
            std::fs::metadata(back.join("blob again.bin")).unwrap(),
        );
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        diff_r(&src, &back);
    }
}

/// A target that is a mount point (a volume an object store serves) cannot
/// be renamed: it is restored in place, identical, and stays mounted.
#[test]
fn a_mount_point_target_is_restored_in_place_and_stays_mounted() {
    let s = Scene::new();
    let vol = s.path("vol");
    let _disk = dbsafe_tests::Tmpfs::mount(&vol, "size=16m,mode=0755");
    dbsafe_tests::dir::sample_tree(&vol);
    let expected = describe(&vol);
    let store = s.path("store");
    snap_to_store(url(&vol), &store).succeeds();
    let mount_dev = std::fs::metadata(&vol).unwrap().dev();
    for round in 1..=2 {
        std::fs::write(vol.join("written after the backup"), "x").unwrap();
        std::fs::remove_file(vol.join("secret.key")).unwrap();
        restore_from_store(&store, url(&vol))
            .args(["--latest", "--yes", "--no-safety-backup"])
            .succeeds();
        assert_eq!(describe(&vol), expected, "round {round}");
        assert_eq!(
            std::fs::metadata(&vol).unwrap().dev(),
            mount_dev,
            "still the mount"
        );
    }
}

#[test]
fn backup_verifies_at_every_level_restores_identically_and_rotates() {
    let trees = Trees::start();
    let b = scenarios::backup_verifies_at_every_level_and_restores_identically(&trees, "volume", 0);
    let meta = &b.meta;
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
    let (src, out) = (trees.path("volume"), trees.path(&b.restored));
    diff_r(&src, &out);
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
    let s = &b.scene;
    let again = s.path("again.tar");
    snap_raw(url(&out), &again).succeeds();
    assert_eq!(
        meta_of(&again)["extra"]["manifest_sha256"],
        manifest.as_str()
    );

    // Rotation works on tree backups like on any other: of three, the
    // newest and the newest verified (the first) stay.
    let store = s.path("store");
    for i in 0..3 {
        snap_to_store(url(&src), &store).succeeds();
        if i == 0 {
            Cmd::tool("dbverify")
                .arg("--store")
                .arg(&store)
                .arg("--latest")
                .succeeds();
        }
    }
    let all = artifacts(&store);
    assert_eq!(all.len(), 3);
    prune_store(&store).args(["--keep-last", "1"]).succeeds();
    assert_eq!(artifacts(&store), vec![all[0].clone(), all[2].clone()]);
    assert_eq!(temporaries(s.dir.path()), Vec::<PathBuf>::new());
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
    let outside = s.mkdir("outside");
    let jail = s.mkdir("jail");
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
        let r = verify_full_json(&art).fails_with_code(1);
        assert!(
            r.stdout().contains("outside the target"),
            "{name}: {}",
            r.stdout()
        );
        let target = jail.join(name);
        // Verified as it is read into the new target, which goes again.
        restore_file(&art, url(&target)).fails_with(1, "outside the target");
        assert!(!target.exists(), "{name}: the new target was removed");
        Cmd::tool("dbrestore")
            .arg(&art)
            .args(["--skip-verify", "--target"])
            .arg(url(&target))
            .fails_with(1, "outside the target");
        // From stdin too, where nothing is verified first.
        Cmd::tool("dbrestore")
            .arg("-")
            .stdin_file(&art)
            .arg("--target")
            .arg(url(&target))
            .fails_with(1, "outside the target");
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
fn an_empty_directory_is_an_empty_target_needing_no_confirmation_or_safety_backup() {
    let (s, src) = dbsafe_tests::dir::volume();
    let store = s.path("store");
    snap_to_store(url(&src), &store).succeeds();
    let empty = s.mkdir("empty-target");
    restore_from_store(&store, url(&empty))
        .arg("--latest")
        .succeeds();
    assert_eq!(describe(&empty), describe(&src));
    assert_eq!(artifacts(&store).len(), 1, "a safety backup was taken");
}

#[test]
fn a_file_that_changes_while_it_is_read_is_reported() {
    let s = Scene::new();
    let src = s.mkdir("volume");
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
                // A rate limit, not a wait: at most 4 MiB/s, so a slow
                // snapshot on a busy machine does not fill the disk.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            n
        })
    };
    let art = s.path("volume.tar.zst");
    let r = snap_to_file(url(&src), &art).succeeds();
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
    snap_fails_leaving_nothing(&s, url(&s.path("nope")), "x.tar.zst", "cannot be read");
}

#[test]
fn a_link_to_the_tree_is_followed_at_the_root_only() {
    let (s, src) = dbsafe_tests::dir::volume();
    let via = s.path("mounted");
    std::os::unix::fs::symlink(&src, &via).expect("symlink");
    let direct = s.path("direct.tar");
    let linked = s.path("linked.tar");
    for (root, out) in [(&src, &direct), (&via, &linked)] {
        snap_raw(url(root), out).succeeds();
    }
    assert_eq!(
        meta_of(&linked)["extra"]["manifest_sha256"],
        meta_of(&direct)["extra"]["manifest_sha256"]
    );
    // Links inside the tree stay links.
    assert_eq!(meta_of(&linked)["extra"]["symlinks"], 5);
}

#[test]
fn restore_hooks_run_around_the_restore_with_the_target_in_their_environment() {
    let (s, src) = dbsafe_tests::dir::volume();
    let artifact = s.path("volume.tar.zst");
    snap_to_file(url(&src), &artifact).succeeds();
    let target = s.mkdir("live");
    std::fs::write(target.join("old.txt"), "old\n").unwrap();
    let log = s.path("hooks.log");
    // What the before hook sees is still the old tree; the after hook sees the restored one.
    let before = format!(
        "echo \"before $DBSAFE_TARGET $DBSAFE_DATABASE $(ls {t} | tr '\\n' ,)\" >> {l}; echo noise",
        t = target.display(),
        l = log.display()
    );
    let after = format!(
        "echo \"after $DBSAFE_RESULT $(test -e {t}/old.txt && echo kept || echo gone)\" >> {l}",
        t = target.display(),
        l = log.display()
    );
    let run = restore_file(&artifact, url(&target))
        .args(["--yes", "--no-safety-backup", "--json", "--before-cmd"])
        .arg(&before)
        .arg("--after-cmd")
        .arg(&after)
        .succeeds();
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout()).expect("stdout is the JSON report alone");
    assert_eq!(report["result"], "success");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "before {} live old.txt,\nafter success gone\n",
            url(&target)
        )
    );
    diff_r(&src, &target);

    // A before hook that fails: nothing changes, and the after hook still runs.
    std::fs::write(target.join("new.txt"), "new\n").unwrap();
    std::fs::remove_file(&log).unwrap();
    restore_file(&artifact, url(&target))
        .args([
            "--yes",
            "--no-safety-backup",
            "--before-cmd",
            "exit 3",
            "--after-cmd",
        ])
        .arg(&after)
        .fails_with_code(1)
        .stderr_has("--before-cmd failed")
        .stderr_has("nothing was changed");
    assert!(
        target.join("new.txt").exists(),
        "the target was not touched"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "after failure gone\n"
    );

    // An after hook that fails fails the run, though the restore is done.
    restore_file(&artifact, url(&target))
        .args(["--yes", "--no-safety-backup", "--after-cmd", "exit 5"])
        .fails_with_code(1)
        .stderr_has("--after-cmd failed");
    diff_r(&src, &target);
}
