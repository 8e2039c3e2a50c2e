//! The shell scripts under scripts/ run end to end against the built binaries.

use dbsafe_tests::{bin_dir, require, Cmd, Scene};

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
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
    Cmd::new("shellcheck").args(&files).succeeds();
}

#[test]
fn backup_sh_snapshots_verifies_and_rotates_under_one_lock() {
    require("flock", "the Debian package util-linux");
    let s = Scene::new();
    dbsafe_tests::sqlite::sample(&s.path("app.db"), 20);
    let (key, public) = s.age_key("key.txt");
    let recipients = s.write("recipients.txt", &format!("{public}\n"));
    let run = || {
        Cmd::new(script("backup.sh"))
            .arg(format!("sqlite:{}", s.path("app.db").display()))
            .env("BIN_DIR", bin_dir())
            .env("DBSAFE_CONFIG", "/dev/null")
            .env("DBSAFE_STORE", s.path("store"))
            .env("DBSAFE_ENV", "production")
            .env("DBSAFE_RECIPIENTS_FILE", &recipients)
            .env("DBSAFE_IDENTITY_FILE", &key)
            .env("PRUNE_ARGS", "--keep-last 2")
    };
    for _ in 0..3 {
        run().succeeds().stderr_has("dbverify: PASS");
        std::thread::sleep(std::time::Duration::from_millis(1100));
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
    let mut holder = Cmd::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "5"])
        .spawn();
    std::thread::sleep(std::time::Duration::from_millis(300));
    run().fails_with_code(4).stderr_has("another backup");
    holder.kill().ok();
    holder.wait().ok();
    // A failing step fails the job: a wrong identity cannot verify.
    let (other, _) = s.age_key("other.txt");
    run().env("DBSAFE_IDENTITY_FILE", &other).fails_with_code(1);
}
