//! Hostile conditions: planted links, shared directories, absurd arguments.
//! Nothing a tool writes follows a link someone planted, and no input makes
//! a tool panic.

use dbsafe_tests::testdb::TestDb;
use dbsafe_tests::{
    files_under, kill_after, prune_store, restore_from_store, snap_to_file, snap_to_store,
    snap_to_store_for, sqlite, Cmd, Delays, Scene, Tmpfs,
};
use std::path::Path;

fn snap_to(s: &Scene, store: &Path) -> Cmd {
    let db = s.path("app.db");
    if !db.exists() {
        sqlite::sample(&db, 5);
    }
    snap_to_store(sqlite::url(&db), store)
}

/// A scene with a store holding one backup of a small SQLite database.
fn scene_with_a_backup() -> (Scene, std::path::PathBuf) {
    let s = Scene::new();
    let store = s.path("store");
    snap_to(&s, &store).succeeds();
    (s, store)
}

#[test]
fn a_link_planted_as_a_lock_file_is_refused_and_its_target_untouched() {
    let (s, store) = scene_with_a_backup();
    let victim = s.write("victim.txt", "precious\n");
    let lock = store.join("locks/default_app_full.lock");
    assert!(lock.exists(), "the series lock lives at {}", lock.display());
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    snap_to(&s, &store)
        .fails_with_code(4)
        .stderr_has("is not a regular file");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn a_link_planted_as_the_audit_log_is_never_written_through() {
    let (s, store) = scene_with_a_backup();
    let victim = s.write("victim.txt", "precious\n");
    // A second backup, so that the prune deletes one and has an entry to write.
    dbsafe_tests::next_second();
    snap_to(&s, &store).succeeds();
    std::os::unix::fs::symlink(&victim, store.join("audit.log")).unwrap();
    assert_eq!(
        dbsafe_tests::artifacts(&store).len(),
        2,
        "two backups before"
    );
    let refused = "audit.log is not a regular file";
    // Deleting needs its audit entry: the prune refuses before deleting anything.
    prune_store(&store)
        .args(["--keep-last", "1"])
        .fails_with(4, refused);
    assert_eq!(dbsafe_tests::artifacts(&store).len(), 2);
    // So does a restore: nothing is overwritten that the log cannot record.
    let target = s.path("target.db");
    sqlite::sample(&target, 3);
    let before = sqlite::contents(&target);
    restore_from_store(&store, sqlite::url(&target))
        .args(["--latest", "--yes"])
        .fails_with(4, refused);
    assert_eq!(sqlite::contents(&target), before, "the target is untouched");
    assert_eq!(
        dbsafe_tests::artifacts(&store).len(),
        2,
        "no safety backup was taken"
    );
    let link = std::fs::symlink_metadata(store.join("audit.log")).unwrap();
    assert!(
        link.file_type().is_symlink(),
        "the planted link is left for its owner to see"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn a_restore_interrupted_after_it_replaced_the_target_is_audited_and_stops_its_hook() {
    let (s, store) = scene_with_a_backup();
    let target = s.path("target.db");
    for round in 1..=2 {
        let _ = std::fs::remove_file(&target);
        sqlite::sample(&target, 3);
        let (started, pid) = (
            s.path(&format!("hook-{round}")),
            s.path(&format!("pid-{round}")),
        );
        // The --after-cmd hook starts what it starts, and is still running
        // when the restore is told to stop.
        let hook = format!(
            "sleep 60 & echo $! > {}; touch {}; wait",
            pid.display(),
            started.display()
        );
        let mut child = restore_from_store(&store, sqlite::url(&target))
            .args(["--latest", "--yes", "--after-cmd", &hook])
            .stderr_file(s.path(&format!("stderr-{round}")))
            .spawn();
        dbsafe_tests::wait_until("the hook", std::time::Duration::from_secs(60), || {
            started.exists()
        });
        Cmd::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .succeeds();
        assert_eq!(child.wait().unwrap().code(), Some(130), "round {round}");
        let (_, result, entry) = dbsafe_tests::last_audit_entry(&store.join("audit.log"));
        assert_eq!(result, "interrupted", "round {round}: {entry}");
        let safety = entry["details"]["safety_backup"].as_str().expect("named");
        assert!(
            safety.starts_with("backups/default-safety_")
                && files_under(&store).contains(&safety.to_string()),
            "{safety}"
        );
        let stderr = std::fs::read_to_string(s.path(&format!("stderr-{round}"))).unwrap();
        assert!(stderr.contains(safety), "{stderr}");
        let sleeper = std::fs::read_to_string(&pid).unwrap();
        dbsafe_tests::wait_until(
            "the hook's child to end",
            std::time::Duration::from_secs(10),
            || !Path::new(&format!("/proc/{}", sleeper.trim())).exists(),
        );
    }
}

#[test]
fn a_fifo_planted_as_the_audit_log_is_refused_at_once_never_waited_on() {
    let (s, store) = scene_with_a_backup();
    dbsafe_tests::next_second();
    snap_to(&s, &store).succeeds();
    Cmd::new("mkfifo").arg(store.join("audit.log")).succeeds();
    let target = s.path("target.db");
    sqlite::sample(&target, 3);
    let before = sqlite::contents(&target);
    for _ in 0..2 {
        for cmd in [
            prune_store(&store).args(["--keep-last", "1"]),
            restore_from_store(&store, sqlite::url(&target)).args(["--latest", "--yes"]),
        ] {
            let said = s.path("stderr");
            let mut child = cmd.stderr_file(&said).spawn();
            let ended = dbsafe_tests::ends_within(
                &mut child,
                std::time::Duration::from_secs(30),
                "a run facing the FIFO",
            );
            assert_eq!(ended.code(), Some(4));
            let said = std::fs::read_to_string(&said).unwrap();
            assert!(said.contains("audit.log is not a regular file"), "{said}");
        }
    }
    assert_eq!(dbsafe_tests::artifacts(&store).len(), 2);
    assert_eq!(sqlite::contents(&target), before);
}

#[test]
fn an_audit_log_swapped_for_a_link_while_a_restore_runs_gets_its_entry_in_the_file_checked_at_the_start(
) {
    let (s, store) = scene_with_a_backup();
    let log = store.join("audit.log");
    let moved = s.path("audit.log.moved");
    let victim = s.write("victim.txt", "precious\n");
    // Once the run has checked its log, its --before-cmd hook moves the
    // log away and plants a link in its place.
    let swap = format!(
        "mv {log} {moved} && ln -s {victim} {log}",
        log = log.display(),
        moved = moved.display(),
        victim = victim.display()
    );
    let target = s.path("target.db");
    for round in 1..=2 {
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(&target);
        let run = restore_from_store(&store, sqlite::url(&target))
            .args(["--latest", "--before-cmd", &swap])
            .succeeds();
        assert!(
            !run.stderr().contains("audit log"),
            "round {round}: {}",
            run.stderr()
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let (action, result, _) = dbsafe_tests::last_audit_entry(&moved);
        assert_eq!(
            (action.as_str(), result.as_str()),
            ("restore", "success"),
            "round {round}"
        );
        assert!(std::fs::symlink_metadata(&log)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

#[test]
fn an_audit_log_rotated_while_a_restore_runs_gets_its_entry_under_its_name() {
    let logrotate = dbsafe_tests::require("logrotate", "the Debian package logrotate");
    let (s, store) = scene_with_a_backup();
    let log = store.join("audit.log");
    // logrotate as cron runs it: the log renamed and compressed (the old
    // file removed), a new one created in its place.
    let conf = s.write(
        "logrotate.conf",
        &format!(
            "{} {{\n  rotate 4\n  compress\n  create\n}}\n",
            log.display()
        ),
    );
    let rotate = format!(
        "{} -f -s {} {}",
        logrotate.display(),
        s.path("logrotate.state").display(),
        conf.display()
    );
    let target = s.path("target.db");
    let entries = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .map(|l| {
                let e: serde_json::Value = serde_json::from_str(l).unwrap();
                (e["action"].to_string(), e["target"].to_string())
            })
            .collect()
    };
    let mut previous = None;
    for round in 1..=2 {
        let _ = std::fs::remove_file(&target);
        restore_from_store(&store, sqlite::url(&target))
            .args(["--latest", "--before-cmd", &rotate])
            .succeeds();
        let now = entries(&std::fs::read_to_string(&log).unwrap());
        assert_eq!(now.len(), 1, "round {round}: {now:?}");
        assert_eq!(now[0].0, r#""restore""#, "round {round}");
        // The last round's entry is in the rotated, compressed log.
        let rotated = Cmd::new("zcat")
            .arg(store.join("audit.log.1.gz"))
            .succeeds();
        assert_eq!(
            entries(&rotated.stdout()),
            previous.unwrap_or_default(),
            "round {round}"
        );
        previous = Some(now);
    }
}

#[test]
fn a_store_directory_planted_as_a_link_is_never_read_written_or_pruned_through() {
    let (s, store) = scene_with_a_backup();
    let outside = s.mkdir("outside");
    let victims: Vec<_> = ["20261101_100000", "20261102_100000"]
        .iter()
        .map(|t| {
            s.write(
                &format!("outside/default_app_full_{t}.sqlite.zst"),
                "precious\n",
            )
        })
        .collect();
    let untouched = || {
        for v in &victims {
            assert_eq!(std::fs::read_to_string(v).unwrap(), "precious\n");
        }
        assert_eq!(dbsafe_tests::files_under(&outside).len(), victims.len());
    };
    // A link inside backups/: not listed, so neither pruned nor restored.
    std::os::unix::fs::symlink(&outside, store.join("backups/archive")).unwrap();
    for _ in 0..2 {
        prune_store(&store).args(["--keep-last", "1"]).succeeds();
        let listed = Cmd::tool("dbverify")
            .arg("--list")
            .arg("--store")
            .arg(&store)
            .succeeds();
        assert!(!listed.stdout().contains("20261101"), "{}", listed.stdout());
        untouched();
    }
    // backups/ or locks/ themselves a link: every tool refuses (exit 4).
    for dir in ["backups", "locks"] {
        let real = store.join(format!("{dir}.real"));
        std::fs::rename(store.join(dir), &real).unwrap();
        std::os::unix::fs::symlink(&outside, store.join(dir)).unwrap();
        snap_to(&s, &store)
            .fails_with_code(4)
            .stderr_has("is a link");
        if dir == "backups" {
            let target = s.path("target.db");
            for cmd in [
                prune_store(&store).args(["--keep-last", "0"]),
                Cmd::tool("dbverify")
                    .arg("--store")
                    .arg(&store)
                    .arg("--latest"),
                restore_from_store(&store, sqlite::url(&target)).args(["--latest", "--yes"]),
            ] {
                cmd.fails_with_code(4).stderr_has("is a link");
            }
            assert!(!target.exists());
        }
        untouched();
        std::fs::remove_file(store.join(dir)).unwrap();
        std::fs::rename(&real, store.join(dir)).unwrap();
    }
}

#[test]
fn links_planted_at_names_a_tool_writes_are_replaced_never_followed() {
    let (s, store) = scene_with_a_backup();
    let artifact = dbsafe_tests::artifacts(&store).pop().unwrap();
    let victim = s.write("victim", "precious\n");
    let plant = |at: &Path| {
        let _ = std::fs::remove_file(at);
        std::os::unix::fs::symlink(&victim, at).unwrap();
    };
    // The verification record beside the artifact, the series' _latest
    // pointer, and the metrics textfile.
    let record = std::path::PathBuf::from(format!("{}.verify.json", artifact.display()));
    let latest = store.join("backups/default_app_full_latest.sqlite.zst");
    let metrics = s.path("dbsafe.prom");
    for at in [&record, &latest, &metrics] {
        plant(at);
    }
    Cmd::tool("dbverify")
        .arg(&artifact)
        .args(["--level", "full", "--metrics-file"])
        .arg(&metrics)
        .succeeds();
    dbsafe_tests::next_second();
    snap_to(&s, &store)
        .arg("--metrics-file")
        .arg(&metrics)
        .succeeds();
    // An artifact written to a file, and its sidecars.
    let out = s.path("out.sqlite.zst");
    let sidecars = [
        out.clone(),
        s.path("out.sqlite.zst.sha256"),
        s.path("out.sqlite.zst.meta.json"),
    ];
    for at in &sidecars {
        plant(at);
    }
    snap_to_file(sqlite::url(&s.path("app.db")), &out).succeeds();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    for at in sidecars.iter().chain([&record, &metrics]) {
        assert!(
            std::fs::symlink_metadata(at).unwrap().file_type().is_file(),
            "{} is a regular file now",
            at.display()
        );
    }
    // The pointer is the store's own link again, to the newest artifact.
    let target = dbsafe_tests::link_target(&latest);
    assert!(target.starts_with("default_app_full_"), "{target}");
}

#[test]
fn a_store_others_can_write_to_is_refused_unless_allowed() {
    let s = Scene::new();
    let store = s.mkdir("shared");
    std::fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    snap_to(&s, &store)
        .fails_with_code(4)
        .stderr_has("writable by everyone");
    std::fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o770)).unwrap();
    snap_to(&s, &store)
        .fails_with_code(4)
        .stderr_has("writable by its group");
    snap_to(&s, &store).arg("--allow-shared-store").succeeds();
}

#[test]
fn absurd_arguments_are_usage_errors_naming_what_is_wrong_never_panics() {
    let (s, store) = scene_with_a_backup();
    let db = format!("sqlite:{}", s.path("app.db").display());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "dbsnap".into(),
                db.clone(),
                "--to".into(),
                "s3:/bucket".into(),
            ],
            "not an S3 URL",
        ),
        (
            vec!["dbsnap".into(), db.clone(), "--to".into(), "".into()],
            "empty",
        ),
        (
            vec![
                "dbsnap".into(),
                db.clone(),
                "-o".into(),
                "x.zst".into(),
                "--no-encrypt".into(),
                "--level".into(),
                "99".into(),
            ],
            "out of range",
        ),
        (
            vec![
                "dbsnap".into(),
                db.clone(),
                "--to".into(),
                store.display().to_string(),
                "--lock-timeout".into(),
                "99999999999999999999w".into(),
            ],
            "invalid duration",
        ),
        (
            vec![
                "dbprune".into(),
                "--store".into(),
                store.display().to_string(),
                "--keep-within".into(),
                "9999999999999w".into(),
            ],
            "100 years",
        ),
        (
            vec![
                "dbprune".into(),
                "--store".into(),
                store.display().to_string(),
                "--keep-last".into(),
                "1".into(),
                "--stale-tmp".into(),
                "9999999999999w".into(),
            ],
            "100 years",
        ),
        (
            vec![
                "dbverify".into(),
                "--status".into(),
                "--store".into(),
                store.display().to_string(),
                "--max-age".into(),
                "9999999999999w".into(),
            ],
            "100 years",
        ),
        (
            vec![
                "walship".into(),
                "status".into(),
                "--from".into(),
                store.display().to_string(),
                "--max-lag".into(),
                "9999999999999w".into(),
            ],
            "100 years",
        ),
        (vec!["dbsnap".into(), "--bogus".into()], "dbsnap: error:"),
    ];
    for (argv, says) in cases {
        let r = Cmd::tool(&argv[0])
            .args(&argv[1..])
            .current_dir(s.dir.path())
            .run();
        assert_eq!(r.out.status.code(), Some(2), "{argv:?}: {}", r.stderr());
        assert!(
            r.stderr().contains(says),
            "{argv:?} should say {says:?}: {}",
            r.stderr()
        );
        assert!(!r.stderr().contains("panicked"), "{argv:?}: {}", r.stderr());
    }
}

#[test]
fn a_password_in_a_url_never_reaches_a_message_whatever_happens() {
    let (s, store) = scene_with_a_backup();
    let artifact = dbsafe_tests::artifacts(&store).pop().unwrap();
    let secret = "Sekr3t-pw";
    let pg = format!("postgres://app:{secret}@127.0.0.1:1/shop");
    let my = format!("mysql://app:{secret}@127.0.0.1:1/shop");
    let runs: Vec<Vec<String>> = vec![
        vec![
            "dbsnap".into(),
            pg.clone(),
            "-o".into(),
            "x".into(),
            "--no-encrypt".into(),
        ],
        vec![
            "dbsnap".into(),
            my.clone(),
            "--to".into(),
            store.display().to_string(),
            "--no-encrypt".into(),
        ],
        vec![
            "dbsnap".into(),
            format!("oracle://app:{secret}@db/x"),
            "--no-encrypt".into(),
        ],
        vec![
            "dbsnap".into(),
            format!("postgres://app:{secret}@[bad/x"),
            "--no-encrypt".into(),
        ],
        vec![
            "dbrestore".into(),
            artifact.display().to_string(),
            "--target".into(),
            pg.clone(),
            "--yes".into(),
        ],
        vec![
            "dbverify".into(),
            artifact.display().to_string(),
            "--level".into(),
            "restore".into(),
            "--scratch".into(),
            pg.clone(),
        ],
        vec![
            "dbpromote".into(),
            "--refresh".into(),
            "--from".into(),
            pg.clone(),
            "--to".into(),
            my.clone(),
            "--yes".into(),
        ],
        vec![
            "walship".into(),
            "restore-point".into(),
            "x".into(),
            pg.clone(),
            "--to".into(),
            store.display().to_string(),
        ],
        // A URL where a number or a name was expected: clap's error and ours.
        vec![
            "dbsnap".into(),
            "--level".into(),
            pg.clone(),
            "sqlite:x.db".into(),
        ],
        vec![
            "dbsnap".into(),
            "sqlite:x.db".into(),
            "--env".into(),
            my.clone(),
            "--no-encrypt".into(),
        ],
    ];
    for argv in runs {
        let r = Cmd::tool(&argv[0])
            .args(&argv[1..])
            .current_dir(s.dir.path())
            .run();
        let all = format!("{}{}", r.stdout(), r.stderr());
        assert!(
            !all.contains(secret),
            "{argv:?} printed the password: {all}"
        );
        assert!(!all.contains("panicked"), "{argv:?}: {all}");
        // A URL given where a name or a number was expected is echoed back,
        // and what is echoed is the URL without its password.
        let misplaced = argv.windows(2).any(|w| {
            ["--env", "--level", "--from"].contains(&w[0].as_str()) && w[1].contains("://")
        });
        if misplaced {
            assert!(all.contains("://app@127.0.0.1:1/shop"), "{argv:?}: {all}");
        }
    }
}

#[test]
fn a_bare_file_name_is_a_file_in_the_current_directory() {
    let (s, _) = sqlite::app_db(5);
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .arg("sqlite:app.db")
        .args(["-o", "backup.sqlite.zst", "--metrics-file", "m.prom"])
        .current_dir(s.dir.path())
        .succeeds();
    for f in [
        "backup.sqlite.zst",
        "backup.sqlite.zst.sha256",
        "backup.sqlite.zst.meta.json",
        "m.prom",
    ] {
        assert!(s.path(f).is_file(), "{f} is missing");
    }
}

#[test]
fn three_concurrent_pushes_of_one_segment_always_leave_a_fetchable_segment() {
    let s = Scene::new();
    let (key, public) = s.age_key("key.txt");
    let seg = s.path("seg");
    let store = s.mkdir("store");
    for round in 0..30 {
        let bytes: Vec<u8> = (0..(1 << 20))
            .map(|i: u32| (i.wrapping_mul(31) ^ round) as u8)
            .collect();
        std::fs::write(&seg, &bytes).unwrap();
        let name = format!("0000000100000000000000{round:02X}");
        let pushes: Vec<_> = (0..3)
            .map(|_| {
                Cmd::tool("walship")
                    .arg("push")
                    .arg(&seg)
                    .arg(&name)
                    .arg("--to")
                    .arg(&store)
                    .args(["-r", &public])
                    .spawn()
            })
            .collect();
        for mut p in pushes {
            assert!(p.wait().unwrap().success(), "round {round}: a push failed");
        }
        let out = s.path("fetched");
        dbsafe_tests::fetch_wal(&name, &out, &store)
            .arg("-i")
            .arg(&key)
            .succeeds();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            bytes,
            "round {round}: fetched bytes differ"
        );
    }
}

#[test]
fn a_damaged_archived_segment_is_never_already_archived_and_is_replaced() {
    let s = Scene::new();
    let seg = s.path("seg");
    let store = s.mkdir("store");
    let bytes = vec![3u8; 1 << 20];
    std::fs::write(&seg, &bytes).unwrap();
    dbsafe_tests::push_wal(&seg, "000000010000000000000001", &store).succeeds();
    let object = store.join("wal/000000010000000000000001.zst");
    let mut damaged = std::fs::read(&object).unwrap();
    let n = damaged.len() / 2;
    damaged[n] ^= 0xff;
    std::fs::write(&object, &damaged).unwrap();
    dbsafe_tests::push_wal(&seg, "000000010000000000000001", &store)
        .succeeds()
        .stderr_has("does not match its checksum");
    let out = s.path("fetched");
    dbsafe_tests::fetch_wal("000000010000000000000001", &out, &store).succeeds();
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
}

#[test]
fn encryption_asked_for_with_no_recipient_is_refused_never_silently_dropped() {
    let (s, app) = sqlite::app_db(5);
    let empty = s.write("recipients.txt", "# to be filled in\n");
    let db = sqlite::url(&app);
    Cmd::tool("dbsnap")
        .arg(&db)
        .args(["-o", "x.sqlite.zst", "-r", ""])
        .current_dir(s.dir.path())
        .fails_with_code(2)
        .stderr_has("no age recipient");
    Cmd::tool("dbsnap")
        .arg(&db)
        .args(["-o", "x.sqlite.zst", "--recipients-file"])
        .arg(&empty)
        .current_dir(s.dir.path())
        .fails_with_code(2)
        .stderr_has("no age recipient");
    assert!(!s.path("x.sqlite.zst").exists(), "nothing was written");
    let seg = s.path("seg");
    std::fs::write(&seg, vec![1u8; 1 << 16]).unwrap();
    Cmd::tool("walship")
        .arg("push")
        .arg(&seg)
        .arg("000000010000000000000001")
        .arg("--to")
        .arg(s.path("store"))
        .arg("--recipients-file")
        .arg(&empty)
        .fails_with_code(2)
        .stderr_has("no age recipient");
}

#[test]
fn a_plain_artifact_goes_to_a_file_or_store_only_when_asked_for() {
    let (s, app) = sqlite::app_db(5);
    let db = sqlite::url(&app);
    let store = s.path("store");
    let seg = s.write("seg", &"w".repeat(1 << 16));
    let keyless = |c: Cmd| {
        c.env_remove("DBSAFE_RECIPIENTS")
            .env_remove("DBSAFE_RECIPIENTS_FILE")
            .env_remove("DBSAFE_PASSPHRASE_FILE")
            .current_dir(s.dir.path())
    };
    // No key: a file, a store and a WAL push are refused, and nothing is written.
    keyless(Cmd::tool("dbsnap").arg(&db).args(["-o", "x.sqlite.zst"]))
        .fails_with(2, "would be written unencrypted to x.sqlite.zst")
        .stderr_has("--no-encrypt");
    assert!(!s.path("x.sqlite.zst").exists());
    keyless(Cmd::tool("dbsnap").arg(&db).arg("--to").arg(&store))
        .fails_with(2, "would be written unencrypted to store");
    keyless(
        Cmd::tool("walship")
            .arg("push")
            .arg(&seg)
            .arg("000000010000000000000001")
            .arg("--to")
            .arg(&store),
    )
    .fails_with(2, "would be written unencrypted to store");
    assert!(dbsafe_tests::artifacts(&store).is_empty());
    assert!(
        !store.join("wal").exists()
            || std::fs::read_dir(store.join("wal"))
                .unwrap()
                .next()
                .is_none()
    );
    // To stdout it goes, with a warning.
    let r = keyless(Cmd::tool("dbsnap").arg(&db)).succeeds();
    assert!(
        r.out.stdout.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        "a plain zstd stream"
    );
    r.stderr_has("not encrypted");
    // --no-encrypt next to a key contradicts it.
    let (_key, public) = s.age_key("key.txt");
    keyless(Cmd::tool("dbsnap").arg(&db).args([
        "-o",
        "y.sqlite.zst",
        "--no-encrypt",
        "-r",
        &public,
    ]))
    .fails_with(2, "contradict");
    // The config can allow plain artifacts, for one environment.
    let cfg = s.write("dbsafe.toml", "[env.lab]\nencrypt = false\n");
    keyless(
        Cmd::tool("dbsnap")
            .arg(&db)
            .args(["--env", "lab", "-o", "lab.sqlite.zst"]),
    )
    .env("DBSAFE_CONFIG", &cfg)
    .succeeds();
    keyless(
        Cmd::tool("dbsnap")
            .arg(&db)
            .args(["--env", "prod", "-o", "prod.sqlite.zst"]),
    )
    .env("DBSAFE_CONFIG", &cfg)
    .fails_with_code(2);
    // An encrypted series' _latest never moves to a plain artifact.
    keyless(snap_to_store_for(&db, &store, &public)).succeeds();
    dbsafe_tests::next_second();
    keyless(snap_to_store(&db, &store)).succeeds();
    let latest =
        dbsafe_tests::link_target(&store.join("backups/default_app_full_latest.sqlite.zst.age"));
    assert!(latest.ends_with(".sqlite.zst.age"), "{latest}");
}

#[test]
fn a_full_disk_or_no_inodes_fails_cleanly_and_keeps_what_was_there() {
    let s = Scene::new();
    sqlite::sample(&s.path("small.db"), 50);
    sqlite::blobs(&s.path("big.db"), 3);
    let seg = s.path("seg");
    std::fs::write(
        &seg,
        (0..(2u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    for (what, size, inodes) in [("space", "1m", 1000), ("inodes", "64m", 12)] {
        let disk = Tmpfs::mount(
            &s.path(what),
            &format!("size={size},nr_inodes={inodes},mode=0700"),
        );
        let store = disk.0.join("store");
        snap_to_store(format!("sqlite:{}", s.path("small.db").display()), &store).succeeds();
        let before = files_under(&store);
        // A snapshot that does not fit, then a WAL segment that does not.
        let mut failed = 0;
        for _ in 0..4 {
            dbsafe_tests::next_second();
            let r = snap_to_store(format!("sqlite:{}", s.path("big.db").display()), &store)
                .args(["--compress", "none"])
                .run();
            if r.out.status.code() == Some(1) {
                failed += 1;
                assert!(!r.stderr().contains("panicked"), "{}", r.stderr());
                break;
            }
            assert_eq!(r.out.status.code(), Some(0), "{what}: {}", r.stderr());
        }
        assert_eq!(failed, 1, "{what}: the disk never filled");
        let r = dbsafe_tests::push_wal(&seg, "000000010000000000000001", &store)
            .args(["--compress", "none"])
            .run();
        if what == "space" {
            assert_eq!(r.out.status.code(), Some(1), "{what}: {}", r.stderr());
        }
        // What failed left nothing behind, and what was there still verifies.
        let after = files_under(&store);
        for f in &before {
            assert!(after.contains(f), "{what}: {f} is gone: {after:?}");
        }
        for f in &after {
            assert!(
                !f.contains(".tmp") && !f.contains("/."),
                "{what}: a temporary is left: {f} in {after:?}"
            );
        }
        Cmd::tool("dbverify")
            .arg("--store")
            .arg(&store)
            .args(["--all", "--level", "full"])
            .succeeds();
        drop(disk);
    }
}

/// `PID-START` of a running process, as temporaries name their writer.
fn owner_tag(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    format!("{pid}-{}", rest.split_whitespace().nth(19).unwrap())
}

#[test]
fn prune_never_removes_a_live_writers_temporary_whatever_stale_tmp_says() {
    let (_s, store) = scene_with_a_backup();
    let mut writer = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let tmp = store.join("backups").join(format!(
        ".default_app_full_20200101_000000.sqlite.zst.tmp.{}.0000abcd",
        owner_tag(writer.id())
    ));
    std::fs::write(&tmp, b"half an artifact").unwrap();
    let prune = || {
        prune_store(&store)
            .args(["--keep-last", "1", "--stale-tmp", "0s"])
            .succeeds()
    };
    prune();
    assert!(tmp.exists(), "a live writer's temporary was removed");
    writer.kill().unwrap();
    writer.wait().unwrap();
    prune();
    assert!(!tmp.exists(), "a dead writer's temporary stayed");
}

#[test]
fn a_dry_run_plan_is_a_report_on_stdout() {
    let (s, store) = scene_with_a_backup();
    dbsafe_tests::next_second();
    snap_to(&s, &store).succeeds();
    let r = prune_store(&store)
        .args(["--keep-last", "1", "--dry-run"])
        .succeeds();
    assert!(
        r.stdout().contains("would delete default_app_full_"),
        "stdout: {}",
        r.stdout()
    );
    assert!(
        !r.stderr().contains("would delete default_app_full_"),
        "stderr: {}",
        r.stderr()
    );
}

#[test]
fn sigkill_at_random_points_never_leaves_a_broken_artifact_or_plaintext_behind() {
    let s = Scene::new();
    let mut delays = Delays::new();
    let seed = delays.0;
    let db = sqlite::blobs_in(&s, "big.db", 40);
    let store = s.path("store");
    let tmp = s.mkdir("tmp");
    let snap = || {
        snap_to_store(sqlite::url(&db), &store)
            .arg("--tmpdir")
            .arg(&tmp)
    };
    for k in 0..20 {
        kill_after(snap().spawn(), delays.next(400));
        // Whatever stands under a final name is whole: it verifies.
        for a in dbsafe_tests::artifacts(&store) {
            let ok = Cmd::tool("dbverify")
                .arg(&a)
                .args(["--level", "quick"])
                .run()
                .out
                .status
                .success();
            assert!(ok, "seed {seed}, kill {k}: {} does not verify", a.display());
        }
    }
    // The next run completes and leaves no plaintext copy of a killed run behind.
    snap().succeeds();
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "seed {seed}: plaintext copies left in the temporary directory: {left:?}"
    );

    // dbrestore killed over a live database: the target is the old one or the new one, never torn.
    let target = sqlite::sample_in(&s, "target.db", 7);
    let before = sqlite::counts(&target);
    let after = sqlite::counts(&db);
    let artifact = dbsafe_tests::artifacts(&store).pop().expect("an artifact");
    for k in 0..20 {
        let child = Cmd::tool("dbrestore")
            .arg(&artifact)
            .arg("--target")
            .arg(format!("sqlite:{}", target.display()))
            .args(["--yes", "--no-safety-backup"])
            .spawn();
        kill_after(child, delays.next(600));
        let now = sqlite::counts(&target);
        assert!(
            now == before || now == after,
            "seed {seed}, kill {k}: the target is torn: {now:?}"
        );
        let check = Cmd::new("sqlite3")
            .arg(&target)
            .arg("PRAGMA integrity_check;")
            .succeeds()
            .stdout();
        assert_eq!(check.trim(), "ok", "seed {seed}, kill {k}");
    }

    // walship push killed anywhere: the next push archives it and fetch gives the bytes back.
    let seg = s.path("seg");
    let bytes: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&seg, &bytes).unwrap();
    let push = || dbsafe_tests::push_wal(&seg, "000000010000000000000007", &store);
    for _ in 0..20 {
        kill_after(push().spawn(), delays.next(200));
    }
    push().succeeds();
    // walship fetch killed anywhere: the file PostgreSQL asked for is
    // absent or whole, never a torn segment it would replay.
    let out = s.path("fetched");
    for k in 0..20 {
        let _ = std::fs::remove_file(&out);
        kill_after(
            dbsafe_tests::fetch_wal("000000010000000000000007", &out, &store).spawn(),
            delays.next(150),
        );
        if out.exists() {
            assert_eq!(std::fs::read(&out).unwrap(), bytes, "seed {seed}, kill {k}");
        }
    }
    dbsafe_tests::fetch_wal("000000010000000000000007", &out, &store).succeeds();
    assert_eq!(std::fs::read(&out).unwrap(), bytes, "seed {seed}");
}

#[test]
fn sigkill_of_dbverify_and_dbprune_at_random_points_leaves_a_consistent_store() {
    let s = Scene::new();
    let mut delays = Delays::new();
    let seed = delays.0;
    let template = s.path("template");
    for round in 0..2 {
        for db in ["a", "b", "c"] {
            let path = s.path(&format!("{db}.db"));
            if round == 0 {
                sqlite::blobs(&path, 4);
            }
            snap_to_store(format!("sqlite:{}", path.display()), &template).succeeds();
        }
        dbsafe_tests::next_second();
    }
    // Every artifact has its checksum, and whatever stands verifies.
    let consistent = |store: &Path, k: usize| {
        let files = files_under(store);
        for a in dbsafe_tests::artifacts(store) {
            let name = a.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                files.contains(&format!("backups/{name}.sha256")),
                "seed {seed}, kill {k}: {name} lost its checksum: {files:?}"
            );
            Cmd::tool("dbverify")
                .arg(&a)
                .args(["--level", "quick"])
                .succeeds();
        }
        for f in files.iter().filter(|f| f.ends_with(".verify.json")) {
            let text = std::fs::read_to_string(store.join(f)).unwrap();
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "seed {seed}, kill {k}: {f} is not whole: {text:?}"
            );
        }
    };

    // dbverify killed while it restores, counts and records.
    let verify_all = || {
        Cmd::tool("dbverify")
            .arg("--store")
            .arg(&template)
            .args(["--all", "--level", "full"])
    };
    for k in 0..20 {
        kill_after(verify_all().spawn(), delays.next(1500));
        consistent(&template, k);
    }
    verify_all().succeeds();

    // dbprune killed while it deletes, each time on a fresh copy of the store.
    for k in 0..20 {
        let store = s.path(&format!("store-{k}"));
        Cmd::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&store)
            .succeeds();
        let prune = || prune_store(&store).args(["--keep-last", "1"]);
        kill_after(prune().spawn(), delays.next(150));
        consistent(&store, k);
        // The next run finishes the rotation and leaves no orphan sidecar
        // (these backups' are seconds old: --stale-tmp says they may go).
        prune().args(["--stale-tmp", "0s"]).succeeds();
        let artifacts = dbsafe_tests::artifacts(&store);
        assert_eq!(artifacts.len(), 3, "seed {seed}, kill {k}: {artifacts:?}");
        let names: Vec<String> = artifacts
            .iter()
            .map(|a| a.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for f in files_under(&store).iter().filter(|f| {
            f.starts_with("backups/") && (f.ends_with(".sha256") || f.ends_with(".meta.json"))
        }) {
            assert!(
                names
                    .iter()
                    .any(|n| f.starts_with(&format!("backups/{n}."))),
                "seed {seed}, kill {k}: orphan sidecar {f}"
            );
        }
    }
}

#[test]
fn a_reader_that_goes_away_never_makes_a_tool_panic() {
    let s = Scene::new();
    let db = sqlite::blobs_in(&s, "big.db", 8);
    let store = s.path("store");
    snap_to_store(sqlite::url(&db), &store).succeeds();
    let artifact = dbsafe_tests::artifacts(&store).pop().unwrap();
    let bin = |t: &str| dbsafe_tests::bin(t).display().to_string();
    let (db, artifact, store) = (db.display(), artifact.display(), store.display());
    let lines = [
        format!("{} sqlite:{db}", bin("dbsnap")),
        format!("{} --json {artifact}", bin("dbverify")),
        format!("{} --status --json --store {store}", bin("dbverify")),
        format!("{} list --from {store}", bin("walship")),
        format!("{} --status --store {store}", bin("dbverify")),
        format!(
            "{} --store {store} --keep-last 1 --dry-run --json",
            bin("dbprune")
        ),
        format!("{} --store {store} --keep-last 1 --dry-run", bin("dbprune")),
        format!("{} --help", bin("dbrestore")),
        format!("{} --help", bin("dbpromote")),
    ];
    // A reader that takes one byte and goes, one that is gone before the
    // tool writes at all, and the same for stderr too.
    for (stderr, reader) in [
        ("2>err.txt", "head -c1 >/dev/null"),
        ("2>err.txt", "true"),
        ("2>&1", "true"),
    ] {
        for line in &lines {
            let _ = std::fs::remove_file(s.path("err.txt"));
            let r = Cmd::sh(&format!(
                "set -o pipefail; {line} {stderr} | {reader}; echo $?"
            ))
            .current_dir(s.dir.path())
            .run();
            let code: i32 = r.stdout().trim().parse().unwrap_or(-1);
            let err = std::fs::read_to_string(s.path("err.txt")).unwrap_or_default();
            // Done (0), or ended quietly as SIGPIPE ends a shell tool (141).
            assert!(
                [0, 141].contains(&code) && !err.contains("error") && !err.contains("panicked"),
                "{line} {stderr} | {reader}: exit {code}: {err}"
            );
        }
    }
}

#[test]
fn a_restore_whose_temporary_directory_is_full_streams_instead_even_with_a_lying_size() {
    let s = Scene::new();
    let pg = dbsafe_tests::pg::Cluster::start();
    pg.psql("postgres", "CREATE DATABASE big;");
    pg.psql(
        "big",
        "CREATE TABLE t AS SELECT i, md5(i::text) AS h FROM generate_series(1, 100000) i;",
    );
    let artifact = s.path("big.pgdump.zst");
    dbsafe_tests::snap_to_file(pg.url("big"), &artifact).succeeds();
    let tmp = s.path("tmp");
    let _disk = Tmpfs::mount(&tmp, "size=1m,mode=0700");
    // The metadata says the payload does not fit: no copy is attempted.
    dbsafe_tests::restore_file(&artifact, pg.url("first"))
        .args(["--create", "--jobs", "2", "--tmpdir"])
        .arg(&tmp)
        .succeeds()
        .stderr_has("restoring from the stream: no decoded copy on disk")
        .stderr_has("the payload needs");
    // A sidecar that understates the size: the copy fills the disk and is abandoned.
    let meta_path = s.path("big.pgdump.zst.meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["raw_size_bytes"] = 1.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    dbsafe_tests::restore_file(&artifact, pg.url("second"))
        .args(["--create", "--jobs", "2", "--tmpdir"])
        .arg(&tmp)
        .succeeds()
        .stderr_has("writing the decoded payload");
    for db in ["first", "second"] {
        assert_eq!(pg.scalar(db, "SELECT count(*) FROM t;"), "100000");
    }
    assert_eq!(files_under(&tmp), Vec::<String>::new());
}
