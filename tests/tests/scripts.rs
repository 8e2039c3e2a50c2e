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
    assert_eq!(
        std::fs::read_to_string(s.path("demo/store/audit.log"))
            .unwrap()
            .lines()
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
