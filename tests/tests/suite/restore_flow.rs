//! The one restore flow, seen from the tools: every tool reads sidecars by
//! the same rule, proves a restore the same way and names what it writes
//! through the artifact-name module.

use dbsafe_tests::{restore_file, restore_with, snap_to_file_for, sqlite, verify_with, Cmd, Scene};
use std::path::PathBuf;

/// A SQLite database at `path` made by `sql`.
fn sqlite_db(path: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// A SQLite artifact encrypted to a fresh key, with its sidecars; returns it and the key.
fn artifact(s: &Scene) -> (PathBuf, PathBuf) {
    sqlite::sample(&s.path("app.db"), 50);
    let (key, public) = s.age_key("key.txt");
    let art = s.path("a.sqlite.zst.age");
    snap_to_file_for(sqlite::url(&s.path("app.db")), &art, &public).succeeds();
    (art, key)
}

fn sidecar(art: &std::path::Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}.{suffix}", art.display()))
}

#[test]
fn an_invalid_sha256_sidecar_is_an_error_naming_it_in_dbverify_and_dbrestore() {
    let s = Scene::new();
    let (art, key) = artifact(&s);
    std::fs::write(sidecar(&art, "sha256"), "not a checksum\n").unwrap();
    verify_with(&art, &key).fails_with(1, "a.sqlite.zst.age.sha256: not a sha256sum line");
    let target = s.path("restored.db");
    restore_with(&art, &key, sqlite::url(&target))
        .arg("--skip-verify")
        .fails_with(1, "a.sqlite.zst.age.sha256: not a sha256sum line");
    assert!(!target.exists(), "nothing was restored");
}

#[test]
fn a_checksum_mismatch_found_by_a_restore_without_verification_is_a_problem_after_it() {
    let s = Scene::new();
    let (art, key) = artifact(&s);
    std::fs::write(
        sidecar(&art, "sha256"),
        format!("{}  a.sqlite.zst.age\n", "0".repeat(64)),
    )
    .unwrap();
    let target = s.path("restored.db");
    restore_with(&art, &key, sqlite::url(&target))
        .arg("--skip-verify")
        .fails_with(1, "problem after restore: sha256 mismatch");
    assert_eq!(
        sqlite::contents(&target),
        sqlite::contents(&s.path("app.db")),
        "the restore itself completed"
    );
}

#[test]
fn a_new_target_restored_while_verifying_is_removed_when_the_checksum_does_not_match() {
    let s = Scene::new();
    let (art, key) = artifact(&s);
    let target = s.path("restored.db");
    // The plan says the artifact is verified as it is read into the new target.
    let plan = restore_with(&art, &key, sqlite::url(&target))
        .arg("--dry-run")
        .succeeds()
        .stdout();
    assert!(
        plan.contains("verifying the artifact as it is read"),
        "{plan}"
    );
    assert!(!plan.contains("verify the artifact (level full)"), "{plan}");
    restore_with(&art, &key, sqlite::url(&target)).succeeds();
    assert_eq!(
        sqlite::contents(&target),
        sqlite::contents(&s.path("app.db"))
    );
    std::fs::remove_file(&target).unwrap();
    // The same bytes against a checksum they do not have: nothing is left behind.
    std::fs::write(
        sidecar(&art, "sha256"),
        format!("{}  a.sqlite.zst.age\n", "0".repeat(64)),
    )
    .unwrap();
    restore_with(&art, &key, sqlite::url(&target))
        .fails_with(1, "failed verification: sha256 mismatch")
        .stderr_has("nothing was changed");
    assert!(!target.exists(), "the new target was removed again");
}

#[test]
fn a_safety_backup_in_a_safety_dir_is_a_named_artifact_that_verifies() {
    let s = Scene::new();
    let (art, key) = artifact(&s);
    let target = s.path("target.db");
    sqlite_db(
        &target,
        "CREATE TABLE precious(x); INSERT INTO precious VALUES (1);",
    );
    restore_with(&art, &key, sqlite::url(&target))
        .arg("--yes")
        .arg("--safety-dir")
        .arg(s.path("safety"))
        .env("DBSAFE_AUDIT_LOG", s.path("audit.log"))
        .succeeds();
    let names: Vec<String> = std::fs::read_dir(s.path("safety"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".sha256") && !n.ends_with(".json"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let name = &names[0];
    assert!(
        name.starts_with("default-safety_target_full_") && name.ends_with(".sqlite.zst.age"),
        "{name}"
    );
    // Encrypted to the restored artifact's recipient, and whole.
    let r = verify_with(s.path("safety").join(name), &key)
        .args(["--level", "restore", "--json"])
        .succeeds();
    assert_eq!(r.json()[0]["tables"][0]["name"], "precious");
}

#[test]
fn an_identity_only_in_the_config_file_decrypts_for_dbverify_and_dbrestore() {
    let s = Scene::new();
    let (art, key) = artifact(&s);
    let cfg = s.write(
        "dbsafe.toml",
        &format!(
            "[defaults]\nidentity_file = {:?}\n",
            key.display().to_string()
        ),
    );
    Cmd::tool("dbverify")
        .arg(&art)
        .args(["--level", "restore"])
        .env("DBSAFE_CONFIG", &cfg)
        .env_remove("DBSAFE_IDENTITY_FILE")
        .succeeds();
    let target = s.path("restored.db");
    restore_file(&art, sqlite::url(&target))
        .env("DBSAFE_CONFIG", &cfg)
        .env_remove("DBSAFE_IDENTITY_FILE")
        .succeeds();
    assert_eq!(
        sqlite::contents(&target),
        sqlite::contents(&s.path("app.db"))
    );
}

/// A SQLite target in WAL mode whose page size differs from the backup's:
/// the restore replaces it whole (the backup API could not, in WAL mode).
#[test]
fn a_sqlite_target_in_wal_mode_with_another_page_size_is_restored() {
    let s = Scene::new();
    let (art, key) = artifact(&s);
    let target = s.path("target.db");
    for _ in 0..2 {
        let _ = std::fs::remove_file(&target);
        sqlite_db(
            &target,
            "PRAGMA page_size = 8192; PRAGMA journal_mode = WAL; CREATE TABLE old(x); INSERT INTO old VALUES (1);",
        );
        restore_with(&art, &key, sqlite::url(&target))
            .arg("--yes")
            .arg("--no-safety-backup")
            .succeeds();
        assert_eq!(
            sqlite::contents(&target),
            sqlite::contents(&s.path("app.db"))
        );
    }
}
