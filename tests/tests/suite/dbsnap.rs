//! dbsnap: consistent snapshots, nothing partial left behind, refusals with the right codes.

use dbsafe_tests::sqlite::{self, SqliteDb};
use dbsafe_tests::{
    artifacts, has_open, next_second, prune_store, require, snap_raw, snap_to_file, snap_to_store,
    temporaries, wait_until, Cmd, LockHolder, Scene,
};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn url(s: &Scene, db: &str) -> String {
    sqlite::url(&s.path(db))
}

/// A new test directory holding `big.db`, a database big enough that a
/// snapshot takes a while (`mb` MiB of incompressible blobs); returns the
/// directory and the database's URL.
fn big(mb: u64) -> (Scene, String) {
    let s = Scene::new();
    let db = sqlite::blobs_in(&s, "big.db", mb);
    (s, sqlite::url(&db))
}

#[test]
fn metadata_and_sidecars_describe_the_snapshot() {
    let (s, app) = sqlite::app_db(120);
    let (_, public) = s.age_key("key.txt");
    let r = Cmd::tool("dbsnap")
        .arg(sqlite::url(&app))
        .arg("--to")
        .arg(s.path("store"))
        .args([
            "-r",
            &public,
            "--env",
            "production",
            "--label",
            "ticket=OPS-1",
            "--json",
        ])
        .succeeds();
    assert!(r.stderr().contains("ratio"), "summary line: {}", r.stderr());
    let report = r.json();
    let m = &report["metadata"];
    let file = dbsafe_tests::only_artifact(&s.path("store"));
    assert!(
        file.starts_with("production_app_full_") && file.ends_with(".sqlite.zst.age"),
        "{file}"
    );
    let art = s.path("store/backups").join(&file);
    let meta = dbsafe_tests::meta_of(&art);
    assert_eq!(&meta, m);
    for (k, v) in [
        ("format", "dbsafe/1"),
        ("backup_type", "full"),
        ("engine", "sqlite"),
        ("payload", "sqlite"),
        ("environment", "production"),
        ("database", "app"),
        ("compression", "zstd"),
        ("encryption", "age"),
        ("checksum_algorithm", "sha256"),
    ] {
        assert_eq!(meta[k], v, "{k}");
    }
    assert_eq!(meta["file"], file.as_str());
    assert_eq!(
        meta["checksum"].as_str().unwrap(),
        dbsafe_tests::sha256_file(&art)
    );
    assert_eq!(
        meta["size_bytes"].as_u64().unwrap(),
        std::fs::metadata(&art).unwrap().len()
    );
    assert!(meta["raw_size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(meta["recipients"][0], public.as_str());
    assert_eq!(meta["labels"]["ticket"], "OPS-1");
    assert_eq!(meta["tool"]["name"], "dbsnap");
    for k in [
        "engine_version",
        "host",
        "source",
        "timestamp",
        "started_at",
        "finished_at",
        "duration_seconds",
    ] {
        assert!(!meta[k].is_null(), "{k} missing");
    }
    let tables: Vec<(String, u64)> = meta["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(tables, sqlite::counts(&app));
    // Files 0600, directories 0700, and the latest link points at the artifact.
    for p in [&art, &s.path("store/backups")] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert!(
            mode == 0o600 || mode == 0o700,
            "{} has mode {mode:o}",
            p.display()
        );
    }
    let link = s.path("store/backups/production_app_full_latest.sqlite.zst.age");
    assert_eq!(dbsafe_tests::link_target(&link), file);
}

dbsafe_tests::scenarios!(SqliteDb::start() =>
    snapshot_under_concurrent_writes_records_the_counts_it_restores,
);

/// A series whose backups change layers (plain, then encrypted, then gzip)
/// has a `_latest` for each; a prune moves one whose backup it deleted to
/// the newest kept backup of its layers, or removes it: none dangles, none
/// moves to other layers (an encrypted series' pointer never to a plain one).
#[test]
fn latest_pointers_never_dangle_after_a_prune_and_keep_their_layers() {
    let (s, app) = sqlite::app_db(10);
    let store = s.path("store");
    let (key, public) = s.age_key("key.txt");
    let runs: [&[&str]; 4] = [
        &["--no-encrypt"],
        &["-r", &public],
        &["-r", &public],
        &["--no-encrypt", "--compress", "gzip"],
    ];
    for (round, args) in runs.iter().enumerate() {
        if round > 0 {
            next_second();
        }
        Cmd::tool("dbsnap")
            .arg(sqlite::url(&app))
            .arg("--to")
            .arg(&store)
            .args(*args)
            .succeeds();
    }
    let names: Vec<String> = artifacts(&store)
        .iter()
        .map(|a| a.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let (enc2, enc3, gz) = (&names[1], &names[2], &names[3]);
    let pointer = |ext: &str| store.join(format!("backups/default_app_full_latest.sqlite.{ext}"));
    assert_eq!(dbsafe_tests::link_target(&pointer("zst.age")), *enc3);
    // The second backup verified: the newest verified is kept with the newest.
    Cmd::tool("dbverify")
        .arg("--store")
        .arg(&store)
        .arg(enc2)
        .arg("-i")
        .arg(&key)
        .succeeds();
    for _ in 0..2 {
        prune_store(&store).args(["--keep-last", "1"]).succeeds();
        let left: Vec<String> = artifacts(&store)
            .iter()
            .map(|a| a.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [enc2.clone(), gz.clone()]);
        assert_eq!(
            dbsafe_tests::link_target(&pointer("zst.age")),
            *enc2,
            "moved, still encrypted"
        );
        assert_eq!(dbsafe_tests::link_target(&pointer("gz")), *gz);
        assert!(
            std::fs::symlink_metadata(pointer("zst")).is_err(),
            "no plain .zst backup is left: its pointer went"
        );
    }
}

fn wait_for_temporary(dir: &std::path::Path) {
    wait_until("dbsnap to start writing", Duration::from_secs(60), || {
        !temporaries(dir).is_empty()
    });
}

#[test]
fn sigkill_mid_stream_leaves_no_artifact_and_does_not_block_the_next_run() {
    let (s, big_db) = big(48);
    let store = s.path("store");
    let mut child = snap_to_store(&big_db, &store)
        .args(["--compress", "none", "--tmpdir"])
        .arg(s.path("tmp"))
        .spawn();
    wait_for_temporary(&store.join("backups"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        artifacts(&store).is_empty(),
        "a final artifact appeared: {:?}",
        artifacts(&store)
    );
    assert!(!std::fs::read_dir(store.join("backups"))
        .unwrap()
        .flatten()
        .any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.ends_with(".sha256") || n.ends_with(".meta.json") || n.contains("_latest")
        }));
    snap_to_store(&big_db, &store)
        .args(["--compress", "none"])
        .succeeds();
    assert_eq!(artifacts(&store).len(), 1);
}

#[test]
fn sigint_exits_130_and_removes_temporaries() {
    let (s, big_db) = big(48);
    let store = s.path("store");
    std::fs::create_dir_all(s.path("tmp")).unwrap();
    let child = snap_to_store(&big_db, &store)
        .args(["--compress", "none", "--tmpdir"])
        .arg(s.path("tmp"))
        .spawn();
    wait_for_temporary(&store.join("backups"));
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        temporaries(&store).is_empty(),
        "left: {:?}",
        temporaries(&store)
    );
    let left: Vec<_> = std::fs::read_dir(s.path("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary snapshot copy left: {left:?}");
    assert!(artifacts(&store).is_empty());
}

#[test]
fn a_held_lock_is_refused_with_exit_4_and_the_holder_pid() {
    let (s, app) = sqlite::app_db(10);
    let store = s.path("store");
    let lock = store.join("locks/default_app_full.lock");
    let snap = || snap_to_store(sqlite::url(&app), &store);
    let holder = LockHolder::take(&lock);
    snap()
        .fails_with(4, "locked by another process")
        .stderr_has(&format!("(pid {};", holder.pid()));
    assert!(artifacts(&store).is_empty(), "a refused snapshot wrote");

    // Waiting with --lock-timeout gets the lock once the holder is done:
    // the waiter is seen holding the lock file open before the holder goes.
    let waiter = snap().args(["--lock-timeout", "60s"]).spawn();
    wait_until(
        "the second dbsnap to wait on the lock",
        Duration::from_secs(30),
        || has_open(waiter.id(), &lock),
    );
    let mut waiter = waiter;
    assert!(
        waiter.try_wait().expect("waiter").is_none(),
        "dbsnap did not wait for the lock"
    );
    // SIGKILL: a killed holder does not wedge the lock.
    holder.kill();
    assert!(
        waiter.wait().expect("waiter").success(),
        "the waiter failed"
    );
    assert_eq!(artifacts(&store).len(), 1);
}

#[test]
fn max_size_aborts_and_cleans_up() {
    let (s, big_db) = big(4);
    let store = s.path("store");
    snap_to_store(&big_db, &store)
        .args(["--max-size", "1M"])
        .fails_with(1, "--max-size");
    assert!(artifacts(&store).is_empty());
    assert!(temporaries(&store).is_empty(), "{:?}", temporaries(&store));
    let out = s.path("x.sqlite.zst");
    snap_to_file(&big_db, &out)
        .args(["--max-size", "1M"])
        .fails_with_code(1);
    assert!(!out.exists());
    assert!(temporaries(s.dir.path()).is_empty());
}

#[test]
fn min_free_refuses_to_start() {
    let (s, app) = sqlite::app_db(10);
    snap_to_store(sqlite::url(&app), s.path("store"))
        .args(["--min-free", "1000000T"])
        .fails_with(4, "--min-free");
    assert!(artifacts(&s.path("store")).is_empty());
}

#[test]
fn binary_output_to_a_terminal_is_refused() {
    require("script", "the Debian package bsdutils");
    let (_s, app) = sqlite::app_db(10);
    let r = Cmd::new("script")
        .args(["-qec"])
        .arg(format!(
            "{} {}; echo rc=$?",
            dbsafe_tests::bin("dbsnap").display(),
            sqlite::url(&app)
        ))
        .arg("/dev/null")
        .succeeds();
    let out = r.stdout();
    assert!(
        out.contains("refusing to write") && out.contains("rc=2"),
        "{out}"
    );
}

/// `-o FILE` over an earlier artifact: the new artifact is on disk (fsync)
/// before its sidecars replace the earlier one's, so a crash while a large
/// file syncs leaves the earlier artifact with its own sidecars. The order
/// of the system calls, as strace sees them, proves it.
#[test]
fn a_new_artifact_is_durable_before_its_sidecars_replace_the_earlier_ones() {
    let strace = require("strace", "the Debian package strace");
    let (s, app) = sqlite::app_db(20);
    let out = s.path("app.sqlite.zst");
    let trace = s.path("trace");
    for _ in 0..2 {
        Cmd::new(&strace)
            .args([
                "-f",
                "-y",
                "-e",
                "trace=fsync,rename,renameat,renameat2",
                "-o",
            ])
            .arg(&trace)
            .arg(dbsafe_tests::bin("dbsnap"))
            .arg(sqlite::url(&app))
            .args(["--no-encrypt", "-o"])
            .arg(&out)
            .succeeds();
        let calls = std::fs::read_to_string(&trace).unwrap();
        let at = |what: &str| {
            calls
                .lines()
                .position(|l| l.contains(what))
                .unwrap_or_else(|| panic!("no {what} in:\n{calls}"))
        };
        assert!(
            at(".app.sqlite.zst.tmp.") < at("/app.sqlite.zst.sha256\")")
                && at(".app.sqlite.zst.tmp.") < at("/app.sqlite.zst.meta.json\")"),
            "the artifact's fsync comes first:\n{calls}"
        );
        assert!(calls
            .lines()
            .nth(at(".app.sqlite.zst.tmp."))
            .unwrap()
            .contains("fsync("));
        Cmd::new("sha256sum")
            .arg("-c")
            .arg("app.sqlite.zst.sha256")
            .current_dir(s.dir.path())
            .succeeds();
    }
}

#[test]
fn stdout_streaming_with_meta_file() {
    let (s, app) = sqlite::app_db(25);
    let art = s.path("out.bin");
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .arg(sqlite::url(&app))
        .arg("--meta")
        .arg(s.path("m.json"))
        .stdout_file(&art)
        .succeeds();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("m.json")).unwrap()).unwrap();
    assert_eq!(
        meta["checksum"].as_str().unwrap(),
        dbsafe_tests::sha256_file(&art)
    );
    let verify_with_meta = |meta: &str| {
        Cmd::tool("dbverify")
            .arg("-")
            .arg("--meta")
            .arg(s.path(meta))
            .args(["--level", "restore"])
            .stdin_file(&art)
    };
    verify_with_meta("m.json").succeeds();
    // A metadata file that is not there (a typo) is no comparison skipped.
    verify_with_meta("m.jsno").fails_with(2, "no such metadata file");
}

#[test]
fn usage_errors_exit_2_with_what_is_wrong() {
    let (s, app) = sqlite::app_db(5);
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .arg("oracle://db/x")
        .fails_with(2, "unsupported database URL");
    for (args, says) in [
        (["-r", "notakey"], "invalid age recipient"),
        (["--compress", "lz4"], "lz4"),
        (["--env", "bad_env"], "invalid environment"),
        (["--max-size", "lots"], "lots"),
    ] {
        Cmd::tool("dbsnap")
            .arg(sqlite::url(&app))
            .arg("-o")
            .arg(s.path("x"))
            .args(args)
            .fails_with(2, says);
    }
    let cfg = s.write(
        "dbsafe.toml",
        "[defaults]\nstore = \"/tmp/x\"\ncompresion = \"zstd\"\n",
    );
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&app))
        .env("DBSAFE_CONFIG", &cfg)
        .fails_with(2, "dbsafe.toml:3")
        .stderr_has("compresion");
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .arg("--definitely-not-a-flag")
        .fails_with(2, "--definitely-not-a-flag");
    snap_to_file(url(&s, "missing.db"), s.path("x")).fails_with(1, "does not exist");
    assert!(!s.path("x").exists());
}

#[test]
fn config_and_environment_supply_the_cron_settings() {
    let (s, app) = sqlite::app_db(5);
    let (key, public) = s.age_key("key.txt");
    let recipients = s.write("recipients.txt", &format!("# ops team\n{public}\n"));
    let cfg = s.write(
        "dbsafe.toml",
        &format!(
            "[defaults]\nstore = \"{}\"\nrecipients_file = \"{}\"\ncompress = \"gzip\"\n",
            s.path("store").display(),
            recipients.display()
        ),
    );
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&app))
        .env("DBSAFE_CONFIG", &cfg)
        .env("DBSAFE_ENV", "staging")
        .succeeds();
    let name = dbsafe_tests::only_artifact(&s.path("store"));
    assert!(
        name.starts_with("staging_app_full_") && name.ends_with(".sqlite.gz.age"),
        "{name}"
    );
    // The environment beats the config file, and flags beat the environment.
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&app))
        .env("DBSAFE_CONFIG", &cfg)
        .env("DBSAFE_COMPRESS", "none")
        .arg("-o")
        .arg(s.path("a.sqlite.age"))
        .succeeds();
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&app))
        .env("DBSAFE_CONFIG", &cfg)
        .env("DBSAFE_COMPRESS", "none")
        .args(["--compress", "zstd", "-o"])
        .arg(s.path("b.sqlite.zst.age"))
        .succeeds();
    let meta = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(s.path(p)).unwrap()).unwrap()
    };
    assert_eq!(meta("a.sqlite.age.meta.json")["compression"], "none");
    assert_eq!(meta("b.sqlite.zst.age.meta.json")["compression"], "zstd");
    Cmd::tool("dbverify")
        .arg(s.path("b.sqlite.zst.age"))
        .env("DBSAFE_IDENTITY_FILE", &key)
        .succeeds();
}

#[test]
fn two_snapshots_in_one_second_get_two_names_never_one_overwritten() {
    let (s, app) = sqlite::app_db(3);
    let store = s.path("store");
    let snap = || snap_to_store(sqlite::url(&app), &store);
    // Both start at the beginning of a second, so their names would be the same.
    next_second();
    let second = chrono::Utc::now().format("%Y%m%d_%H%M%S").to_string();
    let runs = [
        snap().args(["--lock-timeout", "30s"]).spawn(),
        snap().args(["--lock-timeout", "30s"]).spawn(),
    ];
    assert_eq!(
        chrono::Utc::now().format("%Y%m%d_%H%M%S").to_string(),
        second,
        "the two snapshots did not start in one second"
    );
    for run in runs {
        assert!(run.wait_with_output().unwrap().status.success());
    }
    let stamps: Vec<String> = artifacts(&store)
        .iter()
        .map(|p| {
            p.file_name().unwrap().to_string_lossy()["default_app_full_".len()..][..15].to_string()
        })
        .collect();
    // One is named for the second both started in; the other waited for a later one.
    assert_eq!(stamps.len(), 2, "{stamps:?}");
    assert_eq!(stamps[0], second, "{stamps:?}");
    assert!(stamps[1] > second, "{stamps:?}");
    snap().succeeds();
    assert_eq!(artifacts(&store).len(), 3);
    for e in std::fs::read_dir(store.join("backups")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".sha256") {
            Cmd::new("sha256sum")
                .args(["-c", &n])
                .current_dir(store.join("backups"))
                .succeeds();
        }
    }
}

#[test]
fn progress_shows_on_a_terminal_and_never_otherwise() {
    require("script", "the Debian package bsdutils");
    let (s, big_db) = big(64);
    let out = s.path("x.sqlite");
    // Under a pseudo-terminal: a progress line with bytes and a rate.
    let r = Cmd::new("script")
        .arg("-qec")
        .arg(format!(
            "{} {} --compress none --no-encrypt -o {}",
            dbsafe_tests::bin("dbsnap").display(),
            &big_db,
            out.display()
        ))
        .arg("/dev/null")
        .env("DBSAFE_CONFIG", "/dev/null")
        .succeeds();
    let tty = r.stdout();
    assert!(
        tty.contains("MiB") && (tty.contains('\r') || tty.contains("\x1b[")),
        "no progress drawn on the terminal:\n{tty:?}"
    );
    // Through pipes: the summary line and nothing else.
    std::fs::remove_file(&out).ok();
    let r = snap_raw(&big_db, &out).succeeds();
    let err = r.stderr();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("dbsnap: ")
            && !r.stderr().contains('\r')
            && !r.stderr().contains("\x1b[")
    );
    // -q silences even the summary.
    std::fs::remove_file(&out).ok();
    let r = Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .arg(&big_db)
        .args(["-q", "--compress", "none", "-o"])
        .arg(&out)
        .succeeds();
    assert!(r.stderr().is_empty());
}

#[test]
fn the_source_url_can_come_from_the_config_file() {
    let (s, app) = sqlite::app_db(4);
    let cfg = s.write(
        "dbsafe.toml",
        &format!(
            "[env.production]\nurl = \"sqlite:{}\"\nstore = \"{}\"\nencrypt = false\n",
            app.display(),
            s.path("store").display()
        ),
    );
    Cmd::tool("dbsnap")
        .args(["--env", "production"])
        .env("DBSAFE_CONFIG", &cfg)
        .succeeds();
    assert_eq!(artifacts(&s.path("store")).len(), 1);
    Cmd::tool("dbsnap")
        .args(["--env", "staging"])
        .env("DBSAFE_CONFIG", &cfg)
        .fails_with(2, "no url for environment");
}
