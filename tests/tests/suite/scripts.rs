//! The shell scripts under scripts/ run end to end against the built binaries.

use dbsafe_tests::testdb::TestDb;
use dbsafe_tests::{bin_dir, next_second, require, snap_to_store, sqlite, Cmd, LockHolder, Scene};
use std::ffi::OsStr;
use std::path::Path;

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

/// The script `name` of scripts/ as its unit runs it: on the built
/// binaries, with no config file, on the store `store`.
fn run_script(name: &str, store: impl AsRef<OsStr>) -> Cmd {
    Cmd::new(script(name))
        .env("BIN_DIR", bin_dir())
        .env("DBSAFE_CONFIG", "/dev/null")
        .env("DBSAFE_STORE", store)
}

/// backup.sh of the SQLite database `app` into `store` as environment
/// production, encrypted to `recipients` and verified with `key`.
fn backup_sh(app: &Path, store: impl AsRef<OsStr>, recipients: &Path, key: &Path) -> Cmd {
    run_script("backup.sh", store)
        .arg(sqlite::url(app))
        .env("DBSAFE_ENV", "production")
        .env("DBSAFE_RECIPIENTS_FILE", recipients)
        .env("DBSAFE_IDENTITY_FILE", key)
}

#[test]
fn the_demo_backs_up_verifies_and_restores_a_sample_database() {
    require("python3", "python3");
    let s = Scene::new();
    let r = Cmd::new(script("demo.sh"))
        .env("DBSAFE_BIN_DIR", bin_dir())
        .env("DEMO_DIR", s.path("demo"))
        .succeeds();
    let out = r.stdout();
    assert!(out.contains("orders now: 100"), "{out}");
    assert!(out.contains("orders after restore: 20000"), "{out}");
    assert!(out.contains(": OK"), "sha256sum -c did not pass: {out}");
    let err = r.stderr();
    assert_eq!(err.matches("dbverify: PASS").count(), 3, "{err}");
    assert!(
        err.contains("safety backup: backups/demo-safety_app_full_"),
        "{err}"
    );
    assert!(err.contains("dbprune: deleted demo_app_full_"), "{err}");
    let audit = std::fs::read_to_string(s.path("demo/store/audit.log")).unwrap();
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"action\":\"restore\""))
            .count(),
        1
    );
    assert_eq!(
        audit
            .lines()
            .filter(|l| l.contains("\"action\":\"prune-delete\""))
            .count(),
        1
    );
}

#[test]
fn the_scripts_pass_shellcheck() {
    require("shellcheck", "the Debian package shellcheck");
    let dir = script("");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    Cmd::new("shellcheck").arg("-x").args(&files).succeeds();
}

#[test]
fn backup_sh_snapshots_verifies_and_rotates_under_one_lock() {
    require("flock", "the Debian package util-linux");
    let (s, app) = sqlite::app_db(20);
    let (key, public) = s.age_key("key.txt");
    let recipients = s.write("recipients.txt", &format!("{public}\n"));
    let run =
        || backup_sh(&app, s.path("store"), &recipients, &key).env("PRUNE_ARGS", "--keep-last 2");
    for _ in 0..3 {
        run().succeeds().stderr_has("dbverify: PASS");
        // Artifact names are stamped to the second.
        next_second();
    }
    assert_eq!(
        dbsafe_tests::artifacts(&s.path("store")).len(),
        2,
        "rotated to the newest two"
    );
    // A second job while one holds the lock exits 4.
    let lock_dir = s.path("store/locks");
    let lock = std::fs::read_dir(&lock_dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("backup.sh-"))
        .unwrap()
        .path();
    let holder = LockHolder::take(&lock);
    run().fails_with(4, "another backup");
    holder.kill();
    // A failing step fails the job: a wrong identity cannot verify.
    let (other, _) = s.age_key("other.txt");
    // The job fails with the verification: exit 2, the key cannot judge the backup.
    run().env("DBSAFE_IDENTITY_FILE", &other).fails_with_code(2);
    // Another environment's job in the same store rotates its own backups only.
    let production = dbsafe_tests::artifacts(&s.path("store"));
    for _ in 0..2 {
        next_second();
        run()
            .env("DBSAFE_ENV", "staging")
            .env("PRUNE_ARGS", "--keep-last 1")
            .succeeds();
    }
    let now = dbsafe_tests::artifacts(&s.path("store"));
    assert!(production.iter().all(|p| now.contains(p)), "{now:?}");
    assert_eq!(now.len(), production.len() + 1, "{now:?}");
    // So does another database's job in the same environment.
    let crm = sqlite::sample_in(&s, "crm.db", 5);
    for _ in 0..2 {
        next_second();
        backup_sh(&crm, s.path("store"), &recipients, &key)
            .env("PRUNE_ARGS", "--keep-last 1")
            .succeeds();
    }
    let after = dbsafe_tests::artifacts(&s.path("store"));
    assert!(now.iter().all(|p| after.contains(p)), "{after:?}");
    assert_eq!(after.len(), now.len() + 1, "{after:?}");
}

#[test]
fn backup_sh_runs_from_a_read_only_working_directory_against_an_s3_store() {
    require("flock", "the Debian package util-linux");
    let (s, server) = dbsafe_tests::s3::scene();
    let app = sqlite::sample_in(&s, "app.db", 20);
    let (key, public) = s.age_key("key.txt");
    let recipients = s.write("recipients.txt", &format!("{public}\n"));
    // A read-only working directory, as the unit's (ProtectSystem=strict, cwd /).
    let ro = s.path("ro");
    let _ro = dbsafe_tests::Tmpfs::mount(&ro, "ro,size=1m");
    let runtime = s.mkdir("runtime");
    for _ in 0..2 {
        let backup = backup_sh(&app, server.url("nightly"), &recipients, &key);
        server
            .apply(backup, &server.endpoint())
            .current_dir(&ro)
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("PRUNE_ARGS", "--keep-last 1")
            .succeeds()
            .stderr_has("dbverify: PASS");
        next_second();
    }
    let backups = server.artifact_keys("nightly");
    assert_eq!(backups.len(), 1, "rotated to the newest: {backups:?}");
    // The job's lock is this host's, not a directory named after the URL.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    assert!(
        std::fs::read_dir(runtime.join(format!("dbsafe-locks-{uid}")))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("backup.sh-"))
    );
}

#[test]
fn the_wal_config_script_refuses_plain_archiving_unless_asked_for() {
    let s = Scene::new();
    // Exit 2 before it reaches the server: nothing listens at this URL.
    Cmd::new(script("postgres-wal-config.sh"))
        .arg("postgres://postgres@127.0.0.1:1/postgres")
        .arg(s.path("store"))
        .env("WALSHIP", dbsafe_tests::bin("walship"))
        .env_remove("DBSAFE_RECIPIENTS_FILE")
        .env_remove("DBSAFE_NO_ENCRYPT")
        .fails_with(2, "WAL would be archived unencrypted");
}

/// The archive_command the script writes records the pushes' metrics in
/// the textfile the WAL alerts read.
#[test]
fn the_wal_config_script_writes_an_archive_command_that_records_metrics() {
    let s = Scene::new();
    let pg = dbsafe_tests::pg::Cluster::start();
    let metrics = s.path("dbsafe.prom");
    Cmd::new(script("postgres-wal-config.sh"))
        .arg(pg.url("postgres"))
        .arg(s.path("store"))
        .env("WALSHIP", dbsafe_tests::bin("walship"))
        .env("DBSAFE_NO_ENCRYPT", "1")
        .env("DBSAFE_METRICS_FILE", &metrics)
        .env("DBSAFE_ENV", "production")
        .succeeds();
    let command = pg.scalar(
        "postgres",
        "SELECT setting FROM pg_file_settings WHERE name = 'archive_command';",
    );
    assert!(
        command.contains(&format!("DBSAFE_METRICS_FILE='{}'", metrics.display()))
            && command.contains("DBSAFE_ENV='production'"),
        "{command}"
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let s = Scene::new();
    let scripts = script("");
    let mut units = vec![];
    for e in std::fs::read_dir(script("systemd")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        // Point ExecStart at this checkout's scripts, which verify requires to exist.
        let text = std::fs::read_to_string(e.path()).unwrap().replace(
            "/usr/local/share/dbsafe/",
            &format!("{}/", scripts.display()),
        );
        for hardening in [
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "ProtectSystem=strict",
            "User=dbsafe",
            // A hung job fails, so that OnFailure= reports it.
            "TimeoutStartSec=",
        ] {
            assert!(
                name.ends_with(".timer") || text.contains(hardening),
                "{name} lacks {hardening}"
            );
        }
        std::fs::write(s.path(&name), text).unwrap();
        units.push(name);
    }
    units.sort();
    assert_eq!(units.len(), 5, "{units:?}");
    // A failed job is reported: both jobs name the failure unit.
    for job in ["dbsafe-backup@.service", "dbsafe-verify@.service"] {
        let text = std::fs::read_to_string(s.path(job)).unwrap();
        assert!(
            text.contains("OnFailure=dbsafe-failure@%n.service"),
            "{job} has no OnFailure="
        );
    }
    dbsafe_tests::systemd_verify(&units, s.dir.path());
}

#[test]
fn verify_restore_and_pitr_scripts_run_end_to_end() {
    let (s, app) = sqlite::app_db(20);
    let store = s.path("store");
    snap_to_store(sqlite::url(&app), &store).succeeds();
    run_script("verify.sh", &store)
        .succeeds()
        .stderr_has("PASS");
    // Unhealthy: a stale store fails the check.
    run_script("verify.sh", &store)
        .env("MAX_AGE", "0s")
        .fails_with_code(1);
    let target = s.path("restored.db");
    let r = run_script("restore.sh", &store)
        .arg(sqlite::url(&target))
        .succeeds();
    assert!(r.stderr().contains("dry run"), "{}", r.stderr());
    assert_eq!(sqlite::counts(&target), sqlite::counts(&app));
    // Over a non-empty target without --yes and without a terminal: refused.
    run_script("restore.sh", &store)
        .arg(sqlite::url(&target))
        .fails_with(4, "no terminal to ask on");
    run_script("restore.sh", &store)
        .arg(sqlite::url(&target))
        .arg("--yes")
        .succeeds();
    // pitr.sh hands its arguments to dbrestore: a store without base backups is exit 3.
    run_script("pitr.sh", &store)
        .args(["latest"])
        .arg(s.path("pgdata"))
        .fails_with(3, "no base backup");
}
