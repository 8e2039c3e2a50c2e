//! The DuckDB engine against the real `duckdb` CLI: backups, the three
//! verification levels, restores with their refusals, the WAL, writers
//! holding the database, standard-tool restores, pruning.

use dbsafe_tests::duckdb::{self as duck, checksums, fixture, wal, DuckDb};
use dbsafe_tests::{
    artifacts, meta_counts, meta_of, prune_store, restore_file, restore_from_store,
    restore_table_over, rows_of, scenarios, snap_fails_leaving_nothing, snap_raw, snap_to_file,
    snap_to_store, temporaries, verify_full_json, wait_until, Cmd, Scene,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

dbsafe_tests::engine_scenarios!(DuckDb::start());

fn url(p: &Path) -> String {
    format!("duckdb:{}", p.display())
}

/// `NAME.duckdb` in the scene, holding the sample with `rows` rows.
fn sample(s: &Scene, name: &str, rows: u64) -> PathBuf {
    let db = s.path(&format!("{name}.duckdb"));
    fixture(&db, rows);
    db
}

/// A sample `NAME.duckdb` and its snapshot `NAME.duckdb.zst`.
fn snapshot(s: &Scene, name: &str, rows: u64) -> (PathBuf, PathBuf) {
    let db = sample(s, name, rows);
    let art = s.path(&format!("{name}.duckdb.zst"));
    snap_to_file(url(&db), &art).succeeds();
    (db, art)
}

/// A `duckdb` process that holds `db` open for writing until dropped: its
/// stdin stays open, so it waits for more SQL with the database attached.
struct Writer {
    child: Child,
    _stdin: std::process::ChildStdin,
}

impl Writer {
    fn start(db: &Path) -> Writer {
        let mut child = duck::session(db);
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"INSERT INTO customers VALUES (100000, 'held', NULL, 'ok');\n")
            .expect("write to duckdb");
        stdin.flush().expect("flush");
        // The write lock comes with opening; the WAL shows the insert is in.
        wait_until("the writer to write", Duration::from_secs(30), || {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("the writer ended early: {s}");
            }
            wal(db).exists()
        });
        Writer {
            child,
            _stdin: stdin,
        }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        dbsafe_tests::kill_and_reap(&mut self.child);
    }
}

#[test]
fn backup_verifies_at_every_level_and_restores_identically() {
    let duck = DuckDb::start();
    // Named like one of its schemas, which DuckDB finds ambiguous unless every name is qualified.
    let b = scenarios::backup_verifies_at_every_level_and_restores_identically(
        &duck,
        "inventory",
        2000,
    );
    let version = b.engine_version();
    assert!(version.starts_with('v'), "{version}");
    assert_eq!(
        meta_counts(&b.meta),
        vec![
            ("inventory.items".to_string(), 20),
            ("main.customers".to_string(), 2000),
            ("main.empty_table".to_string(), 0),
            ("main.orders".to_string(), 2000),
        ]
    );
    let (db, copy) = (duck.path("inventory"), duck.path(&b.restored));
    // More than table contents: the view, the sequence's position, the macro, the enum, the index.
    let probe =
        "SELECT count(*) FROM big_orders;\nSELECT nextval('invoice_no');\nSELECT twice(21);\n\
                 SELECT count(*) FROM duckdb_indexes() WHERE index_name = 'orders_customer';\n\
                 SELECT enum_range(NULL::mood)::VARCHAR;\n";
    // Probing moves each sequence on once, in both databases alike.
    assert_eq!(duck::sql(&copy, probe), duck::sql(&db, probe));
    assert!(!wal(&copy).exists(), "the restored database has a WAL");
}

#[test]
fn writes_still_only_in_the_wal_are_in_the_snapshot() {
    let s = Scene::new();
    let db = sample(&s, "wal", 100);
    // Committed, but left in the WAL: no checkpoint, not even at exit.
    duck::sql(
        &db,
        "PRAGMA disable_checkpoint_on_shutdown;\nSET wal_autocheckpoint = '1GB';\n\
         INSERT INTO customers SELECT i, 'from the wal', NULL, 'ok' FROM range(1000, 1250) r(i);\n\
         DELETE FROM orders WHERE id <= 10;\n",
    );
    let wal_size = std::fs::metadata(wal(&db)).map(|m| m.len()).unwrap_or(0);
    assert!(wal_size > 0, "the writes did not stay in the WAL");
    let db_before = std::fs::read(&db).expect("db");

    let art = s.path("wal.duckdb.zst");
    snap_to_file(url(&db), &art).succeeds();
    // A snapshot reads; it neither checkpoints nor touches the source.
    assert_eq!(std::fs::read(&db).expect("db"), db_before);
    assert_eq!(
        std::fs::metadata(wal(&db)).map(|m| m.len()).unwrap_or(0),
        wal_size
    );

    let meta = meta_of(&art);
    assert_eq!(rows_of(&meta, "main.customers"), 350);
    assert_eq!(rows_of(&meta, "main.orders"), 90);

    // The artifact alone (no WAL beside it) holds those writes.
    let plain = s.path("plain.duckdb");
    Cmd::sh(&format!(
        "zstd -d -c '{}' > '{}'",
        art.display(),
        plain.display()
    ))
    .succeeds();
    assert!(!wal(&plain).exists());
    assert_eq!(
        duck::sql(
            &plain,
            "SELECT count(*) FROM customers WHERE name = 'from the wal';"
        )
        .trim(),
        "250"
    );
    assert_eq!(checksums(&plain), checksums(&db));
}

#[test]
fn a_writer_holding_the_database_fails_dbsnap_clearly_and_dbrestore_refuses() {
    let s = Scene::new();
    let db = sample(&s, "held", 100);
    let (_, art) = snapshot(&s, "other", 10);

    let writer = Writer::start(&db);
    let out = s.path("held.duckdb.zst");
    let r = snap_to_file(url(&db), &out)
        .fails_with(1, "held open for writing")
        .stderr_has(&format!("process {}", writer.pid()))
        .stderr_has("hint:");
    assert!(!out.exists(), "a refused snapshot left {}", out.display());
    assert_eq!(
        temporaries(s.dir.path()),
        Vec::<PathBuf>::new(),
        "{}",
        r.stderr()
    );

    let before = std::fs::read(&db).expect("db");
    restore_file(&art, url(&db))
        .args(["--yes", "--no-safety-backup"])
        .fails_with(4, "held open for writing");
    assert_eq!(std::fs::read(&db).expect("db"), before);
    drop(writer);

    // Once the writer is gone, its committed insert is in the next snapshot.
    snap_to_file(url(&db), &out).succeeds();
    assert_eq!(rows_of(&meta_of(&out), "main.customers"), 101);
}

/// The application's database file keeps its owner and mode through a
/// restore over it (done as root here): the application can open it after.
#[test]
fn a_restore_over_a_database_keeps_its_owner_and_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let s = Scene::new();
    let (_db, art) = snapshot(&s, "app", 20);
    let live = sample(&s, "live", 3);
    std::os::unix::fs::chown(&live, Some(1234), Some(1234)).unwrap();
    std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o640)).unwrap();
    for _ in 0..2 {
        restore_file(&art, url(&live))
            .args(["--yes", "--no-safety-backup"])
            .succeeds();
        let m = std::fs::metadata(&live).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 1234, 0o640));
        assert_eq!(checksums(&live), checksums(&s.path("app.duckdb")));
    }
}

#[test]
fn table_option_restores_only_that_table() {
    let s = Scene::new();
    let (db, art) = snapshot(&s, "shop", 200);
    let target = sample(&s, "target", 20);
    duck::sql(&target, "DELETE FROM inventory.items;\n");
    let before = checksums(&target);

    restore_table_over(&art, url(&target), "inventory.items").succeeds();
    let after = checksums(&target);
    let of = |v: &[(String, String)], t: &str| v.iter().find(|(n, _)| n == t).cloned();
    assert_eq!(
        of(&after, "inventory.items"),
        of(&checksums(&db), "inventory.items")
    );
    for t in ["main.customers", "main.orders", "main.empty_table"] {
        assert_eq!(of(&after, t), of(&before, t), "{t} was touched");
    }

    restore_table_over(&art, url(&target), "nope").fails_with(3, "not in the backup");
}

#[test]
fn snapshots_of_a_store_are_verified_and_pruned() {
    let s = Scene::new();
    let db = sample(&s, "shop", 50);
    let store = s.path("store");
    for _ in 0..3 {
        snap_to_store(url(&db), &store).succeeds();
    }
    assert_eq!(artifacts(&store).len(), 3);
    Cmd::tool("dbverify")
        .arg("--store")
        .arg(&store)
        .args(["--all", "--level", "restore"])
        .succeeds();
    prune_store(&store).args(["--keep-last", "1"]).succeeds();
    let left = artifacts(&store);
    assert_eq!(left.len(), 1, "{left:?}");
    restore_from_store(&store, url(&s.path("latest.duckdb")))
        .arg("--latest")
        .succeeds();
    assert_eq!(checksums(&s.path("latest.duckdb")), checksums(&db));
}

#[test]
fn a_missing_duckdb_cli_is_named_with_its_package() {
    let s = Scene::new();
    let db = sample(&s, "x", 1);
    let empty = s.mkdir("empty-path");
    Cmd::tool("dbsnap")
        .arg("--no-encrypt")
        .env("PATH", &empty)
        .arg(url(&db))
        .arg("-o")
        .arg(s.path("x.duckdb.zst"))
        .fails_with(2, "duckdb is not installed")
        .stderr_has("duckdb-cli");
    assert!(!s.path("x.duckdb.zst").exists());
}

#[test]
fn a_missing_source_fails_and_leaves_nothing() {
    let s = Scene::new();
    snap_fails_leaving_nothing(
        &s,
        url(&s.path("nope.duckdb")),
        "x.duckdb.zst",
        "does not exist",
    );
    assert!(!s.path("nope.duckdb").exists(), "dbsnap created the source");
}

#[test]
fn a_damaged_payload_fails_full_verification() {
    let s = Scene::new();
    let db = sample(&s, "shop", 2000);
    let raw = s.path("raw.duckdb");
    snap_raw(url(&db), &raw).succeeds();
    let mut bytes = std::fs::read(&raw).expect("raw");
    // Past the file headers, one byte in every 16 KiB: every block in use is hit.
    for at in (16384..bytes.len()).step_by(16384) {
        bytes[at] ^= 0x5a;
    }
    let bad = s.path("bad.duckdb");
    std::fs::write(&bad, &bytes).expect("write");
    let r = verify_full_json(&bad).fails_with_code(1);
    assert_eq!(r.json()[0]["result"], "fail", "{}", r.stdout());
}
