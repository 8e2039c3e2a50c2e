//! Safety backups: what dbrestore keeps of a target before it overwrites
//! it is protected as the backup being restored was, never shares a name,
//! and never makes the store look unhealthy.

use dbsafe_tests::{
    edit_meta, prune_store, restore_from_store, snap_to_file_for, snap_to_store, sqlite,
    store_artifact, verify_with, Cmd, Scene,
};
use std::path::{Path, PathBuf};

fn age_header(p: &Path) -> bool {
    std::fs::read(p)
        .unwrap()
        .starts_with(b"age-encryption.org/v1")
}

/// A SQLite database of `rows` rows and its backup, encrypted to a new
/// key, in a store as environment production; returns (key, database, store).
fn encrypted_production_backup(s: &Scene, rows: u64) -> (PathBuf, PathBuf, PathBuf) {
    let (key, public) = s.age_key("key.txt");
    let db = sqlite::sample_in(s, "app.db", rows);
    let store = s.path("store");
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&db))
        .arg("--to")
        .arg(&store)
        .args(["--env", "production", "-r", &public])
        .succeeds();
    (key, db, store)
}

#[test]
fn a_safety_backup_in_the_store_is_encrypted_to_the_restored_backups_recipients() {
    let s = Scene::new();
    let (key, db, store) = encrypted_production_backup(&s, 30);
    sqlite::sample(&s.path("other.db"), 5);
    std::fs::copy(s.path("other.db"), &db).unwrap();
    dbsafe_tests::restore_latest(&store, "production", &key, sqlite::url(&db)).succeeds();
    let safety = store_artifact(&store, "production-safety_");
    assert!(
        safety.to_string_lossy().ends_with(".sqlite.zst.age"),
        "{}",
        safety.display()
    );
    assert!(age_header(&safety), "the safety backup is age-encrypted");
    // It holds what was overwritten, and the restored backup's key opens it.
    let back = s.path("back.db");
    Cmd::tool("dbrestore")
        .arg(&safety)
        .args(["--create", "-i"])
        .arg(&key)
        .arg("--target")
        .arg(sqlite::url(&back))
        .succeeds();
    assert_eq!(sqlite::counts(&back), sqlite::counts(&s.path("other.db")));
    // The store stays healthy: safety backups are reported apart.
    Cmd::tool("dbverify")
        .arg("--store")
        .arg(&store)
        .args(["--latest", "--env", "production", "-i"])
        .arg(&key)
        .succeeds();
    let status = Cmd::tool("dbverify")
        .arg("--status")
        .arg("--store")
        .arg(&store)
        .args(["--json", "--max-age", "1d"])
        .succeeds()
        .json();
    assert_eq!(status["readiness"], "good", "{status}");
    assert_eq!(
        status["safety"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
}

/// Two restores at once of databases of one name (on two hosts' mounts,
/// say) into one --safety-dir: each keeps its own safety backup.
#[test]
fn two_restores_at_once_into_one_safety_dir_keep_both_safety_backups() {
    let s = Scene::new();
    let src = sqlite::sample_in(&s, "app.db", 30);
    let artifact = s.path("app.sqlite.zst");
    snap_to_file_for(sqlite::url(&src), &artifact, &s.age_key("key.txt").1).succeeds();
    let key = s.path("key.txt");
    let dir = s.mkdir("safety");
    for round in 1..=2 {
        let runs: Vec<_> = ["a", "b"]
            .iter()
            .map(|host| {
                let target = s.path(&format!("{host}{round}/app.db"));
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                sqlite::sample(&target, 3);
                Cmd::tool("dbrestore")
                    .arg(&artifact)
                    .arg("-i")
                    .arg(&key)
                    .arg("--target")
                    .arg(sqlite::url(&target))
                    .args(["--yes", "--safety-dir"])
                    .arg(&dir)
                    .spawn()
            })
            .collect();
        for mut r in runs {
            assert!(r.wait().unwrap().success(), "round {round}");
        }
        let kept: Vec<String> = dbsafe_tests::files_under(&dir)
            .into_iter()
            .filter(|f| f.ends_with(".sqlite.zst.age"))
            .collect();
        assert_eq!(kept.len(), 2 * round, "{kept:?}");
        for f in &kept {
            Cmd::tool("dbverify")
                .arg(dir.join(f))
                .arg("-i")
                .arg(&key)
                .succeeds();
        }
    }
}

#[test]
fn safety_backups_with_a_passphrase_are_encrypted_with_it_and_never_share_a_name() {
    let s = Scene::new();
    let pass = s.write("pass.txt", "correct horse battery staple\n");
    let db = sqlite::sample_in(&s, "app.db", 30);
    let artifact = s.path("app.sqlite.zst.age");
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&db))
        .arg("-o")
        .arg(&artifact)
        .arg("--passphrase-file")
        .arg(&pass)
        .succeeds();
    let dir = s.mkdir("safety");
    // Names a safety backup taken in the next seconds would have: already taken.
    let now = chrono::Utc::now();
    let taken: Vec<PathBuf> = (0..3)
        .map(|k| {
            let t = now + chrono::Duration::seconds(k);
            dir.join(format!(
                "default-safety_app_full_{}.sqlite.zst.age",
                t.format("%Y%m%d_%H%M%S")
            ))
        })
        .collect();
    for t in &taken {
        std::fs::write(t, b"an earlier safety backup").unwrap();
    }
    let restore = || {
        Cmd::tool("dbrestore")
            .arg(&artifact)
            .arg("--passphrase-file")
            .arg(&pass)
            .arg("--target")
            .arg(sqlite::url(&db))
            .arg("--yes")
            .arg("--safety-dir")
            .arg(&dir)
            .succeeds()
    };
    restore();
    restore();
    for t in &taken {
        assert_eq!(
            std::fs::read(t).unwrap(),
            b"an earlier safety backup",
            "{} was overwritten",
            t.display()
        );
    }
    let new: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".age") && !taken.contains(p))
        .collect();
    assert_eq!(new.len(), 2, "two restores, two safety backups: {new:?}");
    for p in &new {
        assert!(age_header(p), "{} is not encrypted", p.display());
        Cmd::tool("dbverify")
            .arg(p)
            .args(["--level", "full", "--passphrase-file"])
            .arg(&pass)
            .succeeds();
    }
}

#[test]
fn a_safety_backup_is_encrypted_when_the_artifact_is_whatever_its_name_or_metadata_say() {
    let s = Scene::new();
    let (key, public) = s.age_key("key.txt");
    let src = sqlite::sample_in(&s, "app.db", 20);
    let artifact = s.path("app.sqlite.zst.age");
    snap_to_file_for(sqlite::url(&src), &artifact, &public).succeeds();
    // The same bytes under a name that says plain, beside metadata that lies.
    let renamed = s.path("app.sqlite.zst");
    std::fs::copy(&artifact, &renamed).unwrap();
    std::fs::copy(
        format!("{}.meta.json", artifact.display()),
        format!("{}.meta.json", renamed.display()),
    )
    .unwrap();
    edit_meta(&renamed, |m| m["encryption"] = "none".into());
    let target = s.path("target.db");
    let dir = s.mkdir("safety");
    for (round, from_stdin) in [(1, true), (2, false), (3, true)] {
        let _ = std::fs::remove_file(&target);
        sqlite::sample(&target, 3 + round);
        let restore = Cmd::tool("dbrestore").args(["-i"]).arg(&key);
        let restore = if from_stdin {
            restore.arg("-").stdin_file(&artifact)
        } else {
            restore.arg(&renamed).arg("--skip-verify")
        };
        restore
            .arg("--target")
            .arg(sqlite::url(&target))
            .args(["--yes", "--safety-dir"])
            .arg(&dir)
            .succeeds();
        assert_eq!(
            sqlite::counts(&target),
            sqlite::counts(&src),
            "round {round}"
        );
        let taken = dbsafe_tests::files_under(&dir);
        assert!(
            taken.iter().all(|f| !f.ends_with(".zst")),
            "round {round}: a plain safety backup: {taken:?}"
        );
        for f in taken.iter().filter(|f| f.ends_with(".age")) {
            assert!(age_header(&dir.join(f)), "{f}");
        }
        assert_eq!(
            taken.iter().filter(|f| f.ends_with(".age")).count(),
            round as usize
        );
    }
}

/// A SQLite artifact with its sidecars, encrypted to a new key; returns (artifact, key).
fn encrypted_artifact(s: &Scene) -> (PathBuf, PathBuf) {
    let (key, public) = s.age_key("key.txt");
    let db = sqlite::sample_in(s, "app.db", 10);
    let artifact = s.path("app.sqlite.zst.age");
    snap_to_file_for(sqlite::url(&db), &artifact, &public).succeeds();
    (artifact, key)
}

fn record_of(artifact: &Path) -> serde_json::Value {
    let p = PathBuf::from(format!("{}.verify.json", artifact.display()));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[test]
fn verifying_a_file_with_sidecars_records_the_result_next_to_it() {
    let s = Scene::new();
    let (artifact, key) = encrypted_artifact(&s);
    verify_with(&artifact, &key).succeeds();
    let rec = record_of(&artifact);
    assert_eq!(rec["result"], "pass");
    assert_eq!(rec["level"], "full");
}

#[test]
fn a_wrong_or_missing_key_is_recorded_as_could_not_verify_and_never_replaces_a_pass() {
    let s = Scene::new();
    let (artifact, key) = encrypted_artifact(&s);
    let (other, _) = s.age_key("other.txt");
    // Never verified: the record says it could not be verified, not that it is broken.
    verify_with(&artifact, &other).fails_with(2, "could not verify");
    assert_eq!(record_of(&artifact)["result"], "could-not-verify");
    verify_with(&artifact, &key).succeeds();
    let pass = record_of(&artifact);
    assert_eq!(pass["result"], "pass");
    for wrong in [vec!["-i".to_string(), other.display().to_string()], vec![]] {
        Cmd::tool("dbverify")
            .arg(&artifact)
            .args(&wrong)
            .env_remove("DBSAFE_IDENTITY_FILE")
            .fails_with_code(2);
        assert_eq!(
            record_of(&artifact),
            pass,
            "the earlier pass stays on record ({wrong:?})"
        );
    }
}

#[test]
fn a_metadata_checksum_that_does_not_match_fails_full_verification_without_a_sha256_sidecar() {
    let s = Scene::new();
    let (artifact, key) = encrypted_artifact(&s);
    std::fs::remove_file(format!("{}.sha256", artifact.display())).unwrap();
    verify_with(&artifact, &key).succeeds();
    edit_meta(&artifact, |meta| {
        meta["checksum"] = serde_json::json!("0".repeat(64))
    });
    verify_with(&artifact, &key).fails_with(1, "sha256 mismatch");
}

#[test]
fn a_good_artifact_whose_record_cannot_be_written_still_verifies() {
    let s = Scene::new();
    let (artifact, key) = encrypted_artifact(&s);
    // Something in the way of the record: the verification itself stands.
    std::fs::create_dir(format!("{}.verify.json", artifact.display())).unwrap();
    verify_with(&artifact, &key)
        .succeeds()
        .stderr_has("could not be recorded");
}

/// Writes an artifact named `file` into `store/backups` (its bytes do not
/// matter to selection and retention, which go by names).
fn planted(store: &Path, file: &str) {
    std::fs::create_dir_all(store.join("backups")).unwrap();
    std::fs::write(store.join("backups").join(file), b"named only").unwrap();
}

fn stamp(days_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days_ago))
        .format("%Y%m%d_%H%M%S")
        .to_string()
}

#[test]
fn engines_never_share_a_series_for_latest_or_retention() {
    let (s, db) = sqlite::app_db(10);
    let store = s.path("store");
    snap_to_store(sqlite::url(&db), &store)
        .args(["--env", "production"])
        .succeeds();
    // A PostgreSQL database of the same name, backed up later.
    planted(
        &store,
        &format!("production_app_full_{}.pgdump.zst", stamp(-1)),
    );
    let target = s.path("restored.db");
    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(&store)
        .args([
            "--latest",
            "--env",
            "production",
            "--database",
            "app",
            "--create",
        ])
        .arg("--target")
        .arg(sqlite::url(&target))
        .succeeds();
    assert_eq!(sqlite::counts(&target), sqlite::counts(&db));
    // Retention: each engine's series keeps its own newest.
    planted(
        &store,
        &format!("production_app_full_{}.pgdump.zst", stamp(3)),
    );
    let plan = prune_store(&store)
        .args(["--keep-last", "1", "--dry-run", "--json"])
        .succeeds()
        .json();
    let kept: Vec<&str> = plan["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["keep"] == true)
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept.len(),
        2,
        "the newest sqlite and the newest pgdump: {kept:?}"
    );
    assert!(kept.iter().any(|k| k.ends_with(".sqlite.zst")), "{kept:?}");
}

#[test]
fn safety_backups_are_kept_seven_days_and_at_least_the_newest() {
    let s = Scene::new();
    let store = s.path("store");
    // One clock reading names every backup: a second boundary between two
    // readings would name them apart from what the assertions expect.
    let stamps: std::collections::HashMap<i64, String> = [30, 20, 10, 5, 2]
        .into_iter()
        .map(|d| (d, stamp(d)))
        .collect();
    let stamp = |days: i64| stamps[&days].clone();
    for (env, days) in [
        ("production", 20),
        ("production", 10),
        ("production-safety", 20),
        ("production-safety", 10),
        ("production-safety", 2),
    ] {
        planted(
            &store,
            &format!("{env}_app_full_{}.sqlite.zst", stamp(days)),
        );
    }
    let plan = prune_store(&store)
        .args(["--dry-run", "--json"])
        .succeeds()
        .json();
    let deleted = dbsafe_tests::pruned_ids(&plan);
    assert_eq!(
        deleted,
        vec![
            format!("production-safety_app_full_{}.sqlite.zst", stamp(20)),
            format!("production-safety_app_full_{}.sqlite.zst", stamp(10)),
        ],
        "older than seven days, not the newest; production keeps 30 days"
    );
    // Rule flags are for the run's series: safety backups keep their own
    // rule (two within seven days stay) unless the run names their
    // environment.
    let recent = s.path("recent");
    for (env, days) in [
        ("production", 20),
        ("production", 10),
        ("production-safety", 5),
        ("production-safety", 2),
    ] {
        planted(
            &recent,
            &format!("{env}_app_full_{}.sqlite.zst", stamp(days)),
        );
    }
    let with_flags = |extra: &[&str]| {
        dbsafe_tests::pruned_ids(
            &prune_store(&recent)
                .args(["--keep-last", "1", "--dry-run", "--json"])
                .args(extra)
                .succeeds()
                .json(),
        )
    };
    assert_eq!(
        with_flags(&[]),
        vec![format!("production_app_full_{}.sqlite.zst", stamp(20))]
    );
    assert_eq!(
        with_flags(&["--env", "production-safety"]),
        vec![format!(
            "production-safety_app_full_{}.sqlite.zst",
            stamp(5)
        )]
    );
    // Only old safety backups: the newest stays.
    let lone = s.path("lone");
    planted(
        &lone,
        &format!("production-safety_app_full_{}.sqlite.zst", stamp(30)),
    );
    let plan = prune_store(&lone)
        .args(["--dry-run", "--json"])
        .succeeds()
        .json();
    assert_eq!(plan["deleted"], 0, "{plan}");
}

#[test]
fn a_timestamp_that_is_not_a_backup_stamp_is_a_usage_error() {
    let s = Scene::new();
    let store = s.path("store");
    planted(
        &store,
        &format!("production_app_full_{}.sqlite.zst", stamp(1)),
    );
    restore_from_store(&store, sqlite::url(&s.path("x.db")))
        .args(["--timestamp", "2025-01-18"])
        .fails_with_code(2)
        .stderr_has("YYYYMMDD_HHMMSS");
}

#[test]
fn a_plain_safety_backup_beside_encrypted_backups_is_refused_unless_asked_for() {
    let s = Scene::new();
    let (_key, db, store) = encrypted_production_backup(&s, 10);
    let plain = s.path("plain.sqlite.zst");
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .arg(sqlite::url(&db))
        .arg("-o")
        .arg(&plain)
        .succeeds();
    let restore = || {
        Cmd::tool("dbrestore")
            .arg(&plain)
            .arg("--store")
            .arg(&store)
            .args(["--env", "production", "--yes", "--target"])
            .arg(sqlite::url(&db))
            .env_remove("DBSAFE_RECIPIENTS")
            .env_remove("DBSAFE_RECIPIENTS_FILE")
    };
    restore()
        .fails_with_code(4)
        .stderr_has("would be unencrypted");
    assert!(
        dbsafe_tests::artifacts(&store)
            .iter()
            .all(|p| !p.to_string_lossy().contains("-safety_")),
        "no safety backup was written"
    );
    restore().arg("--no-encrypt").succeeds();
    let safety: Vec<PathBuf> = dbsafe_tests::artifacts(&store)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("-safety_"))
        .collect();
    assert_eq!(safety.len(), 1, "{safety:?}");
    assert!(!age_header(&safety[0]), "asked for: unencrypted");
}
