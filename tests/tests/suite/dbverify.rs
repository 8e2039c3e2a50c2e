//! dbverify: good artifacts pass, every corruption fails with a message that says what is wrong.

use dbsafe_tests::sqlite::{self, SqliteDb};
use dbsafe_tests::{
    edit_meta, next_second, restore_file, scenarios, snap_raw, snap_to_file, snap_to_file_for,
    snap_to_store_for, verify_with, Cmd, Scene,
};
use std::path::PathBuf;

fn tiny_artifact(s: &Scene, extra: &[&str]) -> (PathBuf, PathBuf) {
    let db = s.path("tiny.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), ('three');")
        .unwrap();
    drop(c);
    let (key, public) = s.age_key("key.txt");
    let out = s.path("tiny.sqlite.zst.age");
    snap_to_file_for(sqlite::url(&db), &out, &public)
        .args(extra)
        .succeeds();
    (out, key)
}

#[test]
fn a_good_artifact_passes_every_level_and_restores_identically() {
    scenarios::backup_verifies_at_every_level_and_restores_identically(
        &SqliteDb::start(),
        "app",
        100,
    );
}

#[test]
fn flipping_any_single_byte_fails_full_verification() {
    let s = Scene::new();
    let (art, key) = tiny_artifact(&s, &[]);
    let good = std::fs::read(&art).unwrap();
    assert!(
        good.len() < 2000,
        "the tiny artifact is {} bytes",
        good.len()
    );
    let bad = s.path("bad.sqlite.zst.age");
    std::fs::copy(
        art.with_extension("age.sha256"),
        s.path("bad.sqlite.zst.age.sha256"),
    )
    .ok();
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x5a;
        std::fs::write(&bad, &b).unwrap();
        // Without any sidecar: the layers themselves must catch it. A
        // damaged recipient stanza reads like a key that does not fit:
        // never a pass, and said to be unverifiable rather than broken.
        let r = verify_with("-", &key).stdin(b.clone()).run();
        let code = r.out.status.code();
        assert!(
            code == Some(1) || (code == Some(2) && r.stderr().contains("could not verify")),
            "byte {i} of {} flipped, stdin: {:?} {}",
            good.len(),
            code,
            r.stderr()
        );
        assert!(!r.stderr().contains("PASS"), "byte {i}: {}", r.stderr());
        // With its checksum, every flipped byte is a broken artifact.
        let r = verify_with(&bad, &key).run();
        assert_eq!(
            r.out.status.code(),
            Some(1),
            "byte {i}, with the sidecar: {}",
            r.stderr()
        );
    }
}

#[test]
fn a_flipped_byte_is_reported_as_a_checksum_mismatch_with_the_sidecar() {
    let s = Scene::new();
    let (art, key) = tiny_artifact(&s, &[]);
    let mut b = std::fs::read(&art).unwrap();
    let n = b.len();
    b[n / 2] ^= 1;
    std::fs::write(&art, &b).unwrap();
    verify_with(&art, &key)
        .args(["--level", "quick"])
        .fails_with(1, "sha256 mismatch");
    verify_with(&art, &key).fails_with(1, "sha256 mismatch");
}

#[test]
fn truncation_fails_at_every_layer() {
    let (s, app) = sqlite::app_db(200);
    let (key, public) = s.age_key("key.txt");
    for (compress, enc) in [
        ("zstd", true),
        ("gzip", true),
        ("zstd", false),
        ("gzip", false),
        ("none", false),
    ] {
        let art = s.path(&format!("a-{compress}-{enc}"));
        let mut cmd = Cmd::tool("dbsnap")
            .arg(sqlite::url(&app))
            .args(["--compress", compress, "-o"])
            .arg(&art);
        cmd = if enc {
            cmd.args(["-r", &public])
        } else {
            cmd.arg("--no-encrypt")
        };
        cmd.succeeds();
        let b = std::fs::read(&art).unwrap();
        let cut = b[..b.len() * 2 / 3].to_vec();
        let r = verify_with("-", &key).stdin(cut).fails_with_code(1);
        assert!(
            r.stderr().contains("problem:"),
            "{compress}/{enc}: {}",
            r.stderr()
        );
        // And with the sidecar: a truncated file is a checksum mismatch too.
        std::fs::write(&art, &b[..b.len() - 1]).unwrap();
        verify_with(&art, &key).fails_with(1, "sha256 mismatch");
    }
}

#[test]
fn a_wrong_identity_says_the_keys_do_not_match() {
    let s = Scene::new();
    let (art, _) = tiny_artifact(&s, &[]);
    let (other, _) = s.age_key("other.txt");
    // A key problem says nothing about the artifact: exit 2, not 1.
    verify_with(&art, &other).fails_with(2, "none of the given identities matches");
}

#[test]
fn a_missing_identity_is_a_usage_error_naming_the_flag() {
    let s = Scene::new();
    let (art, _) = tiny_artifact(&s, &[]);
    Cmd::tool("dbverify")
        .arg(&art)
        .fails_with(2, "-i/--identity");
    Cmd::tool("dbverify")
        .arg(&art)
        .args(["-i", "/nonexistent/key.txt"])
        .fails_with(2, "cannot read identity file");
}

#[test]
fn quick_without_a_checksum_is_a_usage_error() {
    let s = Scene::new();
    let (art, key) = tiny_artifact(&s, &[]);
    let b = std::fs::read(&art).unwrap();
    Cmd::tool("dbverify")
        .args(["-", "--level", "quick"])
        .arg("-i")
        .arg(&key)
        .stdin(b.clone())
        .fails_with(2, "--sha256");
    let sum = dbsafe_tests::sha256_file(&art);
    Cmd::tool("dbverify")
        .args(["-", "--level", "quick", "--sha256", &sum])
        .stdin(b)
        .succeeds();
}

#[test]
fn a_missing_artifact_is_not_found() {
    Cmd::tool("dbverify")
        .arg("/nonexistent/x.sqlite.zst")
        .fails_with_code(3);
    let s = Scene::new();
    std::fs::create_dir_all(s.path("store/backups")).unwrap();
    Cmd::tool("dbverify")
        .arg("--store")
        .arg(s.path("store"))
        .arg("--latest")
        .fails_with_code(3);
    Cmd::tool("dbverify")
        .arg("--store")
        .arg(s.path("nostore"))
        .arg("--latest")
        .fails_with(3, "does not exist");
}

#[test]
fn store_verification_records_verify_json_for_each_artifact_past_damaged_ones_and_sidecars() {
    let (s, _) = sqlite::app_db(30);
    sqlite::sample(&s.path("crm.db"), 30);
    let (key, public) = s.age_key("key.txt");
    for db in ["app.db", "app.db", "crm.db"] {
        snap_to_store_for(sqlite::url(&s.path(db)), s.path("store"), &public).succeeds();
        // Artifact names are stamped to the second.
        next_second();
    }
    let verify_store = |which: &str| {
        Cmd::tool("dbverify")
            .arg("--store")
            .arg(s.path("store"))
            .arg(which)
            .arg("-i")
            .arg(&key)
            .arg("--json")
            .succeeds()
            .json()
    };
    let latest = verify_store("--latest");
    assert_eq!(latest.as_array().unwrap().len(), 2, "one per series");
    let all = verify_store("--all");
    assert_eq!(all.as_array().unwrap().len(), 3);
    for art in dbsafe_tests::artifacts(&s.path("store")) {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{}.verify.json", art.display())).unwrap(),
        )
        .unwrap();
        assert_eq!(v["result"], "pass");
    }
    // A corrupted one fails and its record says so; so do one whose .sha256
    // is not a checksum, and one whose checksum went with its sidecars. The
    // run judges each, past the others.
    let arts = dbsafe_tests::artifacts(&s.path("store"));
    let mut b = std::fs::read(&arts[0]).unwrap();
    let n = b.len() - 10;
    b[n] ^= 0xff;
    std::fs::write(&arts[0], b).unwrap();
    let sidecar = |a: &PathBuf, ext: &str| PathBuf::from(format!("{}.{ext}", a.display()));
    std::fs::write(sidecar(&arts[1], "sha256"), "garbage\n").unwrap();
    std::fs::remove_file(sidecar(&arts[2], "sha256")).unwrap();
    std::fs::remove_file(sidecar(&arts[2], "meta.json")).unwrap();
    for _ in 0..2 {
        Cmd::tool("dbverify")
            .arg("--store")
            .arg(s.path("store"))
            .arg("--all")
            .arg("-i")
            .arg(&key)
            .fails_with_code(1);
        for (art, problem) in arts.iter().zip([
            "sha256 mismatch",
            "not a sha256sum line",
            "no recorded checksum",
        ]) {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(sidecar(art, "verify.json")).unwrap())
                    .unwrap();
            assert_eq!(v["result"], "fail", "{}: {v}", art.display());
            assert!(v["problems"].to_string().contains(problem), "{v}");
        }
        Cmd::tool("dbverify")
            .arg("--status")
            .arg("--store")
            .arg(s.path("store"))
            .fails_with_code(1);
    }
}

#[test]
fn restore_level_compares_row_counts_with_the_metadata() {
    let (s, app) = sqlite::app_db(40);
    let art = s.path("a.sqlite.zst");
    snap_to_file(sqlite::url(&app), &art).succeeds();
    // Metadata that disagrees with the payload lowers the integrity score.
    edit_meta(&art, |meta| {
        meta["tables"][0]["rows"] = serde_json::json!(999)
    });
    let r = Cmd::tool("dbverify")
        .arg(&art)
        .args(["--level", "restore", "--json"])
        .fails_with_code(1);
    let rec = &r.json()[0];
    let score = rec["integrity_score"].as_f64().unwrap();
    assert!((score - 2.0 / 3.0).abs() < 1e-9, "score {score}");
    assert!(rec["problems"][0]
        .as_str()
        .unwrap()
        .contains("expected 999"));
}

#[test]
fn dbverify_and_dbrestore_show_progress_on_a_terminal_only() {
    dbsafe_tests::require("script", "the Debian package bsdutils");
    let s = Scene::new();
    let db = sqlite::blobs_in(&s, "big.db", 64);
    let art = s.path("big.sqlite");
    snap_raw(sqlite::url(&db), &art).succeeds();
    let under_pty = |cmdline: String| {
        Cmd::new("script")
            .arg("-qec")
            .arg(cmdline)
            .arg("/dev/null")
            .env("DBSAFE_CONFIG", "/dev/null")
            .succeeds()
            .stdout()
    };
    let drawn = |out: &str| out.contains("MiB") && (out.contains('\r') || out.contains("\x1b["));
    let verify = under_pty(format!(
        "{} {}",
        dbsafe_tests::bin("dbverify").display(),
        art.display()
    ));
    assert!(
        drawn(&verify),
        "no progress from dbverify on a terminal: {verify:?}"
    );
    let restore = under_pty(format!(
        "{} {} --target sqlite:{}",
        dbsafe_tests::bin("dbrestore").display(),
        art.display(),
        s.path("r.db").display()
    ));
    assert!(
        drawn(&restore),
        "no progress from dbrestore on a terminal: {restore:?}"
    );
    // Without a terminal: only the report lines, no drawing.
    let r = Cmd::tool("dbverify").arg(&art).succeeds();
    assert!(
        !r.stderr().contains('\r') && !r.stderr().contains("\x1b["),
        "{:?}",
        r.stderr()
    );
    let r = restore_file(&art, sqlite::url(&s.path("r2.db"))).succeeds();
    assert!(
        !r.stderr().contains('\r') && !r.stderr().contains("\x1b["),
        "{:?}",
        r.stderr()
    );
}

#[test]
fn list_shows_every_backup_its_verification_and_pins_safety_apart_and_wal_per_timeline() {
    let s = Scene::new();
    let store = s.path("store");
    let (key, public) = s.age_key("key.txt");
    let (app, crm) = (s.path("app.db"), s.path("crm.db"));
    sqlite::sample(&app, 20);
    sqlite::sample(&crm, 5);
    let snap = |db: &PathBuf, env: &str| {
        snap_to_store_for(sqlite::url(db), &store, &public)
            .args(["--env", env])
            .succeeds();
    };
    snap(&app, "production");
    next_second();
    snap(&app, "production");
    Cmd::tool("dbsnap")
        .arg(sqlite::url(&crm))
        .arg("--to")
        .arg(&store)
        .args(["--env", "staging", "--no-encrypt"])
        .succeeds();
    let files: Vec<String> = dbsafe_tests::artifacts(&store)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let prod: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with("production_"))
        .collect();
    assert_eq!(prod.len(), 2, "{files:?}");
    // The newest production backup is verified; the oldest is pinned by a manifest.
    verify_with(store.join("backups").join(prod[1]), &key).succeeds();
    std::fs::create_dir_all(store.join("releases/production")).unwrap();
    std::fs::write(
        store.join("releases/production/v1.json"),
        format!(
            "{{\"source_backup\": {{\"name\": \"backups/{}\"}}}}",
            prod[0]
        ),
    )
    .unwrap();
    // A restore over the live database leaves a safety backup.
    dbsafe_tests::restore_latest(&store, "production", &key, sqlite::url(&app)).succeeds();
    // WAL on two timelines: 2 branched from 1 at segment 2.
    let seg = s.write("seg", &"w".repeat(1 << 16));
    let history = s.write("history", "1\t0/2000000\tno recovery target specified\n");
    for (path, name) in [
        (&seg, "000000010000000000000001"),
        (&seg, "000000010000000000000002"),
        (&history, "00000002.history"),
        (&seg, "000000020000000000000002"),
        (&seg, "000000020000000000000003"),
    ] {
        dbsafe_tests::push_wal(path, name, &store).succeeds();
    }

    let list = |args: &[&str]| {
        Cmd::tool("dbverify")
            .arg("--list")
            .arg("--store")
            .arg(&store)
            .arg("--json")
            .args(args)
            .succeeds()
            .json()
    };
    let l = list(&[]);
    let backups = l["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 3, "{l}");
    let by_file = |f: &str| backups.iter().find(|b| b["file"] == f).cloned().unwrap();
    let (old, new) = (by_file(prod[0]), by_file(prod[1]));
    for b in [&old, &new] {
        dbsafe_tests::assert_fields(
            b,
            &[
                ("environment", "production"),
                ("database", "app"),
                ("series", "production_app_full"),
                ("kind", "full"),
                ("engine", "sqlite"),
                ("encryption", "age"),
                ("compression", "zstd"),
            ],
        );
        assert!(b["size_bytes"].as_u64().unwrap() > 0);
        assert!(b["age_seconds"].as_i64().unwrap() >= 0);
    }
    assert_eq!(old["pinned"], true, "{old}");
    assert_eq!(new["pinned"], false, "{new}");
    assert_eq!(old["verified"], serde_json::Value::Null, "{old}");
    assert_eq!(new["verified"], "pass", "{new}");
    assert_eq!(new["verified_level"], "full", "{new}");
    assert!(new["verified_at"].is_string());
    let crm_backup = backups.iter().find(|b| b["database"] == "crm").unwrap();
    assert_eq!(crm_backup["encryption"], "none");
    assert_eq!(crm_backup["environment"], "staging");
    // Safety backups apart.
    let safety = l["safety"].as_array().unwrap();
    assert_eq!(safety.len(), 1, "{l}");
    assert_eq!(safety[0]["environment"], "production-safety");
    assert_eq!(
        safety[0]["encryption"], "age",
        "encrypted like the restored backup"
    );
    // The WAL per timeline: 2 is live, branched from 1.
    let windows = l["recovery_windows"].as_array().unwrap();
    let tl = |n: u64| {
        windows
            .iter()
            .find(|w| w["timeline"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(windows.len(), 2, "{l}");
    assert_eq!(tl(1)["newest_segment"], "000000010000000000000002");
    assert_eq!(tl(2)["newest_segment"], "000000020000000000000003");
    assert_eq!(tl(2)["role"], "live");
    assert_eq!(tl(1)["role"], "ancestor");
    assert!(tl(2)["to"].is_string());
    assert_eq!(tl(2)["from"], serde_json::Value::Null, "no base backup");
    // Narrowed to an environment: its backups and its safety backups only.
    let staging = list(&["--env", "staging"]);
    assert_eq!(staging["backups"].as_array().unwrap().len(), 1);
    assert_eq!(staging["safety"].as_array().unwrap().len(), 0);
    let production = list(&["--env", "production", "--database", "app"]);
    assert_eq!(production["backups"].as_array().unwrap().len(), 2);
    assert_eq!(production["safety"].as_array().unwrap().len(), 1);
    // For people: one line a backup.
    let text = Cmd::tool("dbverify")
        .arg("--list")
        .arg("--store")
        .arg(&store)
        .succeeds()
        .stdout();
    assert!(
        text.contains("pinned") && text.contains("pass (full)"),
        "{text}"
    );
    assert!(
        text.contains("recovery window, timeline 2 (live)"),
        "{text}"
    );
}
