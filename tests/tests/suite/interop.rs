//! Every artifact restores with standard tools alone: age, zstd, gzip, sha256sum, sqlite3.

use dbsafe_tests::{require, snap_raw, snap_to_file_for, snap_to_store_for, sqlite, Cmd, Scene};

fn restored_counts_match(scene: &Scene, pipeline: &str) {
    let out = scene.path("x.db");
    Cmd::sh(&format!("{pipeline} > {}", out.display()))
        .current_dir(scene.dir.path())
        .succeeds();
    require("sqlite3", "the Debian package sqlite3");
    let check = Cmd::new("sqlite3")
        .arg(&out)
        .arg("PRAGMA integrity_check; SELECT count(*) FROM customers; SELECT count(*) FROM orders;")
        .succeeds();
    let lines: Vec<String> = check.stdout().lines().map(str::to_string).collect();
    assert_eq!(
        lines,
        vec!["ok", "300", "300"],
        "sqlite3 read back something else"
    );
    assert_eq!(sqlite::counts(&out), sqlite::counts(&scene.path("app.db")));
}

#[test]
fn age_and_zstd_clis_restore_a_dbsnap_artifact() {
    require("age", "the Debian package age");
    require("zstd", "the Debian package zstd");
    let (s, app) = sqlite::app_db(300);
    let (key, public) = s.age_key("key.txt");
    snap_to_file_for(sqlite::url(&app), s.path("a.sqlite.zst.age"), &public).succeeds();
    restored_counts_match(
        &s,
        &format!("age -d -i {} a.sqlite.zst.age | zstd -d", key.display()),
    );
}

#[test]
fn age_and_gzip_clis_restore_a_gzip_artifact() {
    require("age", "the Debian package age");
    let (s, app) = sqlite::app_db(300);
    let (key, public) = s.age_key("key.txt");
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&app))
        .args(["--compress", "gzip", "-r", &public, "-o"])
        .arg(s.path("a.sqlite.gz.age"))
        .succeeds();
    restored_counts_match(
        &s,
        &format!("age -d -i {} a.sqlite.gz.age | gzip -d", key.display()),
    );
}

/// Runs argv[1:] on a pseudo-terminal, waits for its passphrase prompt,
/// types the passphrase, and exits with its status.
const TYPE_PASSPHRASE: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
seen = b""
while b"passphrase" not in seen.lower():
    seen += os.read(fd, 1024)
os.write(fd, b"tr0ub4dor & three\n")
try:
    while os.read(fd, 1024):
        pass
except OSError:
    pass
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#;

#[test]
fn age_cli_decrypts_a_passphrase_artifact() {
    require("age", "the Debian package age");
    require("python3", "python3");
    let (s, app) = sqlite::app_db(300);
    let pass = s.write("pass.txt", "tr0ub4dor & three\n");
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&app))
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("-o")
        .arg(s.path("a.sqlite.zst.age"))
        .succeeds();
    // age reads passphrases from the terminal only: run it on a
    // pseudo-terminal and type the passphrase once it asks.
    Cmd::new("python3")
        .arg("-c")
        .arg(TYPE_PASSPHRASE)
        .args(["age", "-d", "-o", "a.sqlite.zst", "a.sqlite.zst.age"])
        .current_dir(s.dir.path())
        .succeeds();
    restored_counts_match(&s, "zstd -dc a.sqlite.zst");
}

#[test]
fn sha256sum_accepts_every_sidecar_in_a_store() {
    let (s, _) = sqlite::app_db(50);
    sqlite::sample(&s.path("other.db"), 20);
    let (_, public) = s.age_key("key.txt");
    for (db, extra) in [
        ("app.db", vec![]),
        ("other.db", vec!["--compress", "gzip"]),
        ("app.db", vec!["--compress", "none", "--env", "staging"]),
    ] {
        snap_to_store_for(sqlite::url(&s.path(db)), s.path("store"), &public)
            .args(extra)
            .succeeds();
    }
    let sums: Vec<_> = std::fs::read_dir(s.path("store/backups"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sha256"))
        .collect();
    assert_eq!(sums.len(), 3);
    for e in sums {
        Cmd::new("sha256sum")
            .arg("-c")
            .arg(e.file_name())
            .current_dir(s.path("store/backups"))
            .succeeds();
    }
}

#[test]
fn sqlite3_reads_an_unencrypted_uncompressed_artifact_directly() {
    let (s, app) = sqlite::app_db(300);
    snap_raw(sqlite::url(&app), s.path("a.sqlite")).succeeds();
    restored_counts_match(&s, "cat a.sqlite");
}

#[test]
fn an_auto_level_artifact_of_several_zstd_frames_decodes_with_the_zstd_cli() {
    require("zstd", "the Debian package zstd");
    require("sqlite3", "the Debian package sqlite3");
    let s = Scene::new();
    let db = s.path("big.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 400000)
         INSERT INTO t(s) SELECT printf('row %d of a compressible table, ', i) || hex(zeroblob(40)) FROM n;",
    )
    .unwrap();
    drop(c);
    let meta_of = |name: &str| -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(s.path(&format!("{name}.meta.json"))).unwrap(),
        )
        .unwrap()
    };
    // The source (a file copy) outruns zstd -3: the level goes down, frame by frame.
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&db))
        .args(["--no-encrypt", "-o"])
        .arg(s.path("auto.sqlite.zst"))
        .succeeds();
    let meta = meta_of("auto.sqlite.zst");
    let levels = meta["compression_levels"]
        .as_object()
        .expect("levels recorded");
    assert!(levels.len() >= 2, "the level moved: {levels:?}");
    assert!(levels
        .keys()
        .all(|l| (1..=6).contains(&l.parse::<i32>().unwrap())));
    let total: u64 = levels.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, meta["raw_size_bytes"].as_u64().unwrap());
    Cmd::sh("zstd -dc auto.sqlite.zst > auto.db")
        .current_dir(s.dir.path())
        .succeeds();
    let check = Cmd::new("sqlite3")
        .arg(s.path("auto.db"))
        .arg("PRAGMA integrity_check; SELECT count(*) FROM t;")
        .succeeds()
        .stdout();
    assert_eq!(check.lines().collect::<Vec<_>>(), ["ok", "400000"]);
    // A fixed level is one level, recorded as such.
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&db))
        .args(["--no-encrypt", "--level", "5", "-o"])
        .arg(s.path("five.sqlite.zst"))
        .succeeds();
    let meta = meta_of("five.sqlite.zst");
    assert_eq!(meta["compression_level"], 5);
    assert_eq!(
        meta["compression_levels"],
        serde_json::json!({"5": meta["raw_size_bytes"]})
    );
}
