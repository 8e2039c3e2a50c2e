//! Safety backups: what dbrestore keeps of a target before it overwrites
//! it is protected as the backup being restored was, never shares a name,
//! and never makes the store look unhealthy.

use dbsafe_tests::{sqlite, store_artifact, Cmd, Scene};
use std::path::{Path, PathBuf};

fn age_header(p: &Path) -> bool {
    std::fs::read(p)
        .unwrap()
        .starts_with(b"age-encryption.org/v1")
}

fn db_url(p: &Path) -> String {
    format!("sqlite:{}", p.display())
}

#[test]
fn a_safety_backup_in_the_store_is_encrypted_to_the_restored_backups_recipients() {
    let s = Scene::new();
    let (key, public) = s.age_key("key.txt");
    let db = s.path("app.db");
    sqlite::sample(&db, 30);
    let store = s.path("store");
    Cmd::tool("dbsnap")
        .arg(db_url(&db))
        .arg("--to")
        .arg(&store)
        .args(["--env", "production", "-r", &public])
        .succeeds();
    sqlite::sample(&s.path("other.db"), 5);
    std::fs::copy(s.path("other.db"), &db).unwrap();
    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(&store)
        .args(["--latest", "--env", "production", "--yes", "-i"])
        .arg(&key)
        .arg("--target")
        .arg(db_url(&db))
        .succeeds();
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
        .arg(db_url(&back))
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

#[test]
fn safety_backups_with_a_passphrase_are_encrypted_with_it_and_never_share_a_name() {
    let s = Scene::new();
    let pass = s.write("pass.txt", "correct horse battery staple\n");
    let db = s.path("app.db");
    sqlite::sample(&db, 30);
    let artifact = s.path("app.sqlite.zst.age");
    Cmd::tool("dbsnap")
        .arg(db_url(&db))
        .arg("-o")
        .arg(&artifact)
        .arg("--passphrase-file")
        .arg(&pass)
        .succeeds();
    let dir = s.path("safety");
    std::fs::create_dir(&dir).unwrap();
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
            .arg(db_url(&db))
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
