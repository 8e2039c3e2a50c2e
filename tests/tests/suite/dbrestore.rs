//! dbrestore: verified first, confirmed, with a safety backup and an audit entry.

use dbsafe_tests::sqlite::{self, SqliteDb};
use dbsafe_tests::{
    artifacts, audit_entries, edit_meta, meta_counts, meta_of, next_second, restore_file,
    restore_from_store, restore_with, sha256_file, snap_to_file, snap_to_store, snap_to_store_for,
    store_artifact, Cmd, Scene,
};
use std::path::{Path, PathBuf};

struct Setup {
    s: Scene,
    key: PathBuf,
    store: PathBuf,
}

fn setup() -> Setup {
    let (s, app) = sqlite::app_db(150);
    let (key, public) = s.age_key("key.txt");
    let store = s.path("store");
    snap_to_store_for(sqlite::url(&app), &store, &public).succeeds();
    Setup { s, key, store }
}

impl Setup {
    /// Flips a bit in the middle of the store's one artifact.
    fn corrupt_the_artifact(&self) {
        let art = &artifacts(&self.store)[0];
        let mut b = std::fs::read(art).unwrap();
        let n = b.len() / 2;
        b[n] ^= 0x10;
        std::fs::write(art, b).unwrap();
    }

    /// Asserts that the database at `restored` has the source's contents.
    fn assert_holds_the_source(&self, restored: &Path) {
        assert_eq!(
            sqlite::contents(restored),
            sqlite::contents(&self.s.path("app.db")),
            "{} differs from the source",
            restored.display()
        );
    }

    /// dbrestore of the store's latest backup, with the key, into the SQLite database at `target`.
    fn restore_latest_into(&self, target: &Path) -> Cmd {
        Cmd::tool("dbrestore")
            .arg("--store")
            .arg(&self.store)
            .arg("--latest")
            .arg("-i")
            .arg(&self.key)
            .arg("--target")
            .arg(sqlite::url(target))
    }
}

fn target_with_data(s: &Scene) -> PathBuf {
    let t = s.path("target.db");
    let c = rusqlite::Connection::open(&t).unwrap();
    c.execute_batch("CREATE TABLE precious(x); INSERT INTO precious VALUES ('do not lose me');")
        .unwrap();
    t
}

#[test]
fn restores_the_latest_backup_into_a_new_file_with_identical_contents() {
    let t = setup();
    let target = t.s.path("restored.db");
    let r = t.restore_latest_into(&target).arg("--json").succeeds();
    assert_eq!(r.json()["result"], "success");
    t.assert_holds_the_source(&target);
    let audit = audit_entries(&t.store);
    assert_eq!(audit.len(), 1);
    for k in [
        "time",
        "tool",
        "action",
        "user",
        "host",
        "backup",
        "target",
        "result",
        "duration_seconds",
        "details",
    ] {
        assert!(!audit[0][k].is_null(), "audit lacks {k}");
    }
    assert_eq!(audit[0]["action"], "restore");
    assert_eq!(audit[0]["result"], "success");
    // What the console says ("N tables checked against the metadata's row
    // counts"), the audit says: the tables compared, and no selection.
    let tables = meta_counts(&meta_of(&store_artifact(&t.store, "default_app_full_"))).len();
    assert!(tables >= 2, "the fixture has tables");
    assert_eq!(audit[0]["details"]["tables_checked"], tables);
    assert_eq!(
        audit[0]["details"]["selected_tables"],
        serde_json::json!([])
    );
    r.stderr_has(&format!(
        "{tables} tables checked against the metadata's row counts"
    ));
}

dbsafe_tests::scenarios!(SqliteDb::start() =>
    restore_over_a_non_empty_target_is_refused_then_replaced_with_a_safety_backup_and_audit,
);

#[test]
fn latest_without_env_means_the_backup_series_not_the_safety_one() {
    let t = setup();
    let target = target_with_data(&t.s);
    t.restore_latest_into(&target).arg("--yes").succeeds();
    store_artifact(&t.store, "default-safety_target_full_");
    // Two series in the store now; --latest still picks the backup, not the
    // safety backup (which holds the target's old contents).
    let copy = t.s.path("x.db");
    t.restore_latest_into(&copy).succeeds();
    t.assert_holds_the_source(&copy);
}

/// A corrupt artifact over a non-empty target: without a terminal and
/// without --yes, the confirmation that cannot be asked refuses first (were
/// the artifact verified first, that run would end in "failed
/// verification"); with --yes, the verification refuses it. Neither
/// touches the target or takes a safety backup.
#[test]
fn a_corrupt_artifact_is_refused_before_the_target_is_touched() {
    let t = setup();
    let target = target_with_data(&t.s);
    let before = sha256_file(&target);
    t.corrupt_the_artifact();
    let run = t
        .restore_latest_into(&target)
        .fails_with(4, "no terminal to ask on")
        .stderr_has("--yes");
    assert!(!run.stderr().contains("verification"), "{}", run.stderr());
    t.restore_latest_into(&target)
        .arg("--yes")
        .fails_with(1, "failed verification");
    assert_eq!(sha256_file(&target), before);
    assert_eq!(artifacts(&t.store).len(), 1, "no safety backup");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let t = setup();
    let target = target_with_data(&t.s);
    let before = sha256_file(&target);
    let r = t.restore_latest_into(&target).arg("--dry-run").succeeds();
    let out = r.stdout();
    assert!(
        out.contains("safety backup") && out.contains("verify") && out.contains("confirm"),
        "{out}"
    );
    assert_eq!(sha256_file(&target), before);
    assert_eq!(artifacts(&t.store).len(), 1);
    assert!(audit_entries(&t.store).is_empty());
    // A file restored with its safety backup planned into a store that does
    // not exist yet: the plan says it would be created; nothing is.
    let artifact = artifacts(&t.store).pop().unwrap();
    let new_store = t.s.path("new-store");
    for _ in 0..2 {
        let r = Cmd::tool("dbrestore")
            .arg(&artifact)
            .arg("-i")
            .arg(&t.key)
            .arg("--target")
            .arg(sqlite::url(&target))
            .arg("--store")
            .arg(&new_store)
            .arg("--dry-run")
            .succeeds();
        assert!(r.stdout().contains("(created)"), "{}", r.stdout());
        assert!(!new_store.exists(), "a dry run created the store");
        assert_eq!(sha256_file(&target), before);
    }
}

#[test]
fn table_restores_only_that_table() {
    let t = setup();
    let target = t.s.path("partial.db");
    std::fs::copy(t.s.path("app.db"), &target).unwrap();
    let c = rusqlite::Connection::open(&target).unwrap();
    c.execute_batch("DELETE FROM orders; UPDATE customers SET name = 'changed'; CREATE TABLE extra(y); INSERT INTO extra VALUES (1);").unwrap();
    drop(c);
    t.restore_latest_into(&target)
        .args(["--table", "orders", "--yes"])
        .succeeds();
    let counts: std::collections::BTreeMap<_, _> = sqlite::counts(&target).into_iter().collect();
    assert_eq!(counts["orders"], 150, "orders restored");
    let changed: i64 = rusqlite::Connection::open(&target)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM customers WHERE name = 'changed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(changed, 150, "customers untouched");
    assert_eq!(counts["extra"], 1, "other tables untouched");
    t.restore_latest_into(&target)
        .args(["--table", "nosuch", "--yes", "--no-safety-backup"])
        .fails_with(3, "nosuch");
}

#[test]
fn selection_by_timestamp_before_and_name() {
    let (s, app) = sqlite::app_db(5);
    let store = s.path("store");
    let mut names = vec![];
    for extra_rows in [1, 2] {
        let c = rusqlite::Connection::open(&app).unwrap();
        c.execute(
            "INSERT INTO events(kind) VALUES (?1)",
            [format!("{extra_rows}")],
        )
        .unwrap();
        drop(c);
        snap_to_store(sqlite::url(&app), &store).succeeds();
        names.push(
            artifacts(&store)
                .last()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        // Artifact names are stamped to the second: --timestamp and --before tell them apart.
        next_second();
    }
    let ts = &names[0]["default_app_full_".len().."default_app_full_".len() + 15];
    let events = |p: &Path| {
        sqlite::counts(p)
            .into_iter()
            .find(|t| t.0 == "events")
            .unwrap()
            .1
    };
    let restore_selected = |selection: &[&str], target: &Path| {
        restore_from_store(&store, sqlite::url(target)).args(selection)
    };
    let t1 = s.path("t1.db");
    restore_selected(&["--timestamp", ts], &t1).succeeds();
    assert_eq!(events(&t1), 3);
    let before = format!(
        "{}-{}-{} {}:{}:{}",
        &ts[0..4],
        &ts[4..6],
        &ts[6..8],
        &ts[9..11],
        &ts[11..13],
        &ts[13..15]
    );
    let t2 = s.path("t2.db");
    restore_selected(&["--before", &before], &t2).succeeds();
    assert_eq!(events(&t2), 3);
    let t3 = s.path("t3.db");
    restore_selected(&["--name", &names[1]], &t3).succeeds();
    assert_eq!(events(&t3), 4);
    restore_selected(&["--before", "2001-01-01 00:00:00"], &s.path("t4.db")).fails_with_code(3);
    restore_selected(&["--name", "nope"], &s.path("t4.db")).fails_with_code(3);
}

#[test]
fn latest_over_several_series_is_an_error_listing_them() {
    let (s, _) = sqlite::app_db(5);
    sqlite::sample(&s.path("crm.db"), 5);
    let store = s.path("store");
    for db in ["app.db", "crm.db"] {
        snap_to_store(sqlite::url(&s.path(db)), &store).succeeds();
    }
    restore_from_store(&store, sqlite::url(&s.path("t.db")))
        .arg("--latest")
        .fails_with(2, "default_app_full")
        .stderr_has("default_crm_full");
    Cmd::tool("dbrestore")
        .arg("--store")
        .arg(&store)
        .args(["--latest", "--database", "crm"])
        .arg("--target")
        .arg(sqlite::url(&s.path("t.db")))
        .succeeds();
}

#[test]
fn stdin_restores_need_no_format_flags() {
    let t = setup();
    let art = &artifacts(&t.store)[0];
    let target = t.s.path("from-stdin.db");
    restore_with("-", &t.key, sqlite::url(&target))
        .stdin_file(art)
        .succeeds()
        .stderr_has("row counts after the restore were not compared");
    t.assert_holds_the_source(&target);
}

#[test]
fn row_count_mismatch_after_restore_exits_1_and_is_audited() {
    let t = setup();
    let art = &artifacts(&t.store)[0];
    edit_meta(art, |meta| meta["tables"][0]["rows"] = serde_json::json!(7));
    let target = t.s.path("r.db");
    t.restore_latest_into(&target)
        .arg("--skip-verify")
        .fails_with(1, "expected 7");
    assert_eq!(audit_entries(&t.store)[0]["result"], "failure");
}

#[test]
fn a_target_that_is_not_empty_needs_somewhere_for_its_safety_backup() {
    let (s, app) = sqlite::app_db(5);
    let art = s.path("a.sqlite.zst");
    snap_to_file(sqlite::url(&app), &art).succeeds();
    let target = target_with_data(&s);
    restore_file(&art, sqlite::url(&target))
        .arg("--yes")
        .fails_with(2, "--safety-dir");
    restore_file(&art, sqlite::url(&target))
        .arg("--yes")
        .arg("--safety-dir")
        .arg(s.path("safety"))
        .env("DBSAFE_AUDIT_LOG", s.path("audit.log"))
        .succeeds();
    assert_eq!(
        std::fs::read_dir(s.path("safety")).unwrap().count(),
        3,
        "artifact and two sidecars"
    );
    assert_eq!(
        std::fs::read_to_string(s.path("audit.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

/// A restore that fails once it has begun writing into its target is
/// audited whatever its exit code: a key that does not open the backup is
/// exit 2, like a refusal before anything was touched, which is not.
#[test]
fn a_restore_that_fails_once_begun_is_audited_whatever_its_exit_code() {
    let (s, app) = sqlite::app_db(5);
    let store = s.path("store");
    let (_, public) = s.age_key("backup");
    let (stranger, _) = s.age_key("stranger");
    dbsafe_tests::snap_to_store_for(sqlite::url(&app), &store, &public).succeeds();
    for round in 1..=2 {
        let target = s.path(&format!("new-{round}.db"));
        dbsafe_tests::restore_from_store(&store, sqlite::url(&target))
            .args(["--latest", "-i"])
            .arg(&stranger)
            .fails_with_code(2);
        assert!(!target.exists(), "round {round}: nothing is left behind");
        let entries = audit_entries(&store);
        assert_eq!(entries.len(), round, "{entries:?}");
        let last = &entries[round - 1];
        assert_eq!(
            (last["action"].as_str(), last["result"].as_str()),
            (Some("restore"), Some("failure"))
        );
    }
    // Exit 2 before anything was touched (an identity file that is not
    // there) is not audited.
    let target = s.path("new-3.db");
    dbsafe_tests::restore_from_store(&store, sqlite::url(&target))
        .args(["--latest", "-i"])
        .arg(s.path("no-such-identity"))
        .fails_with_code(2);
    assert_eq!(audit_entries(&store).len(), 2);
}

/// A restore that fails after it took the safety backup names that backup:
/// in its audit entry and on stderr, where the operator looks next.
#[test]
fn a_restore_that_fails_after_its_safety_backup_names_it_in_the_audit_log_and_on_stderr() {
    let t = setup();
    let target = target_with_data(&t.s);
    t.corrupt_the_artifact();
    let run = t
        .restore_latest_into(&target)
        .args(["--yes", "--skip-verify"])
        .fails_with_code(1);
    let entries = audit_entries(&t.store);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["result"], "failure");
    let safety = entries[0]["details"]["safety_backup"]
        .as_str()
        .unwrap_or_else(|| panic!("no safety backup named: {}", entries[0]));
    assert!(
        run.stderr()
            .contains(&format!("in the safety backup {safety}")),
        "{}",
        run.stderr()
    );
    assert_eq!(
        artifacts(&t.store).len(),
        2,
        "the backup and its safety backup"
    );
}
