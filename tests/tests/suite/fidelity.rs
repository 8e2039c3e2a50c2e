//! Exact restores: the restored database is the database that was backed
//! up, proved the way pg_upgrade's tests prove it (the engine's own dump of
//! source and restore, compared) and then used as the application would.

use dbsafe_tests::pg::Cluster;
use dbsafe_tests::testdb::TestDb;
use dbsafe_tests::{restore_file, snap_to_file, sqlite, Cmd, Scene};

const FIXTURE: &str = include_str!("../../fixtures/pg_rich.sql");

/// `pg_dump` of `db` as text, without the per-run `\restrict` keys.
fn pg_dump(pg: &Cluster, args: &[&str], db: &str) -> String {
    Cmd::new(dbsafe_tests::pg::server_bin("pg_dump"))
        .arg("-h")
        .arg(&pg.sock)
        .arg("-p")
        .arg(pg.port.to_string())
        .args(["-U", "postgres"])
        .args(args)
        .arg(db)
        .succeeds()
        .stdout()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn sorted_data(pg: &Cluster, db: &str) -> Vec<String> {
    let mut lines: Vec<String> = pg_dump(pg, &["--data-only"], db)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn rich_source() -> (Scene, Cluster, std::path::PathBuf) {
    let s = Scene::new();
    let src = Cluster::start();
    src.psql("postgres", FIXTURE);
    let artifact = s.path("shop.pgdump.zst");
    snap_to_file(src.url("shop"), &artifact).succeeds();
    (s, src, artifact)
}

/// A fresh cluster, and the restore (to run) of `artifact` into `shop`,
/// created on it, with `flags`.
fn restore_into_fresh(artifact: &std::path::Path, flags: &[&str]) -> (Cluster, Cmd) {
    let fresh = Cluster::start();
    let restore = restore_file(artifact, fresh.url("shop"))
        .arg("--create")
        .args(flags);
    (fresh, restore)
}

#[test]
fn a_postgres_snapshot_restores_into_a_fresh_cluster_with_its_roles_owners_grants_and_settings() {
    let (_s, src, artifact) = rich_source();
    assert_eq!(
        src.scalar(
            "postgres",
            "SELECT datcollate FROM pg_database WHERE datname = 'shop';"
        ),
        "C.UTF-8",
        "the fixture's collation is not the cluster's default"
    );
    let (fresh, restore) = restore_into_fresh(&artifact, &[]);
    assert!(
        fresh
            .psql(
                "postgres",
                "SELECT rolname FROM pg_roles WHERE rolname LIKE 'app\\_%';"
            )
            .trim()
            .is_empty(),
        "the fresh cluster has none of the roles"
    );
    restore.succeeds();
    // The schema with owners, grants, default privileges, database settings and comment.
    assert_eq!(
        pg_dump(&src, &["--schema-only", "--create"], "shop"),
        pg_dump(&fresh, &["--schema-only", "--create"], "shop")
    );
    assert_eq!(sorted_data(&src, "shop"), sorted_data(&fresh, "shop"));
    // Used as the application would: its own role, its settings, its triggers.
    let app = |sql: &str| {
        Cmd::new(dbsafe_tests::pg::server_bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&fresh.sock)
            .arg("-p")
            .arg(fresh.port.to_string())
            .args(["-U", "app_user", "-d", "shop"])
            .stdin(sql)
            .succeeds()
            .stdout()
    };
    assert_eq!(app("SHOW timezone;").trim(), "Pacific/Auckland");
    assert_eq!(app("SHOW search_path;").trim(), "store, public");
    let audited = || {
        app("SELECT count(*) FROM store.audit;")
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let before = audited();
    app("INSERT INTO store.orders(customer, placed, total) VALUES (1, '2026-06-01', 5);");
    assert_eq!(
        audited(),
        before + 1,
        "the trigger fired for the application's insert"
    );
    assert_eq!(app("SELECT count(*) FROM store.big_spenders;").trim(), "2");
    // A second restore, over the first, with --clean: the same database again.
    fresh.psql(
        "shop",
        "CREATE TABLE store.only_in_target(x int); INSERT INTO store.only_in_target VALUES (42);",
    );
    let safety = _s.path("safety");
    restore_file(&artifact, fresh.url("shop"))
        .args(["--clean", "--yes", "--safety-dir"])
        .arg(&safety)
        .succeeds();
    assert_eq!(
        pg_dump(&src, &["--schema-only", "--create"], "shop"),
        pg_dump(&fresh, &["--schema-only", "--create"], "shop"),
        "--clean leaves exactly the backup: the target-only table is gone"
    );
    assert_eq!(
        fresh.scalar(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'shop%';"
        ),
        "1",
        "no side or replaced database is left behind"
    );
    // What --clean removed is in the safety backup.
    let kept = std::fs::read_dir(&safety)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".pgdump.zst"))
        .expect("a safety backup");
    restore_file(&kept, fresh.url("shop_before"))
        .arg("--create")
        .succeeds();
    assert_eq!(
        fresh.scalar("shop_before", "SELECT x FROM store.only_in_target;"),
        "42"
    );
}

#[test]
fn restore_verification_against_a_fresh_cluster_passes_and_fails_naming_the_role_without_roles() {
    let (_s, _src, artifact) = rich_source();
    let (fresh, restore) = restore_into_fresh(&artifact, &["--no-roles"]);
    restore.fails_with(1, "role \"app_owner\" does not exist");
    assert_eq!(
        fresh.scalar(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'shop';"
        ),
        "0",
        "a failed restore leaves no half-made database"
    );
    // Skipping the roles proves the fresh scratch has none of them.
    Cmd::tool("dbverify")
        .arg(&artifact)
        .args(["--level", "restore", "--no-roles", "--scratch"])
        .arg(fresh.scratch_url())
        .fails_with_code(1)
        .stderr_has("role \"app_owner\" does not exist");
    Cmd::tool("dbverify")
        .arg(&artifact)
        .args(["--level", "restore", "--scratch"])
        .arg(fresh.scratch_url())
        .succeeds();
    assert!(
        !fresh
            .psql(
                "postgres",
                "SELECT rolname FROM pg_roles WHERE rolname = 'app_reader';"
            )
            .trim()
            .is_empty(),
        "the roles the backup needs were created"
    );
}

#[test]
fn no_owner_restores_everything_owned_by_the_connecting_role() {
    let (_s, _src, artifact) = rich_source();
    let (fresh, restore) = restore_into_fresh(&artifact, &["--no-owner"]);
    restore.succeeds();
    assert_eq!(
        fresh.scalar(
            "shop",
            "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = 'store';"
        ),
        "postgres"
    );
}

#[test]
fn sqlite_restores_keep_the_journal_mode_header_and_file_mode() {
    let (s, db) = sqlite::app_db(20);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA user_version=42; PRAGMA application_id=1234;
         CREATE TRIGGER note_order AFTER INSERT ON orders BEGIN INSERT INTO events(at, kind) VALUES ('now', 'order'); END;",
    )
    .unwrap();
    drop(conn);
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let artifact = s.path("app.sqlite.zst");
    snap_to_file(sqlite::url(&db), &artifact).succeeds();
    let restored = s.path("restored.db");
    restore_file(&artifact, sqlite::url(&restored))
        .arg("--create")
        .succeeds();
    let header = |p: &std::path::Path| {
        Cmd::new("sqlite3")
            .arg(p)
            .arg("PRAGMA journal_mode; PRAGMA page_size; PRAGMA user_version; PRAGMA application_id;")
            .succeeds()
            .stdout()
    };
    let dump = |p: &std::path::Path| Cmd::new("sqlite3").arg(p).arg(".dump").succeeds().stdout();
    assert_eq!(header(&db), header(&restored));
    assert!(
        header(&restored).starts_with("wal\n"),
        "{}",
        header(&restored)
    );
    assert_eq!(dump(&db), dump(&restored));
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&restored), 0o644);
}

/// `mariadb-dump` of a database: schema, routines, triggers and events.
fn mariadb_dump(m: &dbsafe_tests::mariadb::Server, db: &str) -> String {
    Cmd::new(dbsafe_tests::mariadb::client_bin("mariadb-dump"))
        .arg("--no-defaults")
        .arg(format!("--socket={}", m.sock.display()))
        .args([
            "-uroot",
            "--routines",
            "--triggers",
            "--events",
            "--skip-dump-date",
            "--databases",
        ])
        .arg(db)
        .succeeds()
        .stdout()
        .replace(db, "DB")
}

#[test]
fn a_mariadb_database_comes_back_with_its_charset_routines_triggers_events_and_views() {
    let m = dbsafe_tests::mariadb::Server::start();
    m.sql(
        "",
        "CREATE DATABASE shop CHARACTER SET latin1 COLLATE latin1_swedish_ci;\n\
         USE shop;\n\
         CREATE TABLE item (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(40), price DECIMAL(8,2), FULLTEXT (name)) ENGINE=InnoDB;\n\
         CREATE TABLE log (at DATETIME, what VARCHAR(80));\n\
         CREATE TRIGGER item_log AFTER INSERT ON item FOR EACH ROW INSERT INTO log VALUES (NOW(), NEW.name);\n\
         CREATE FUNCTION with_tax(p DECIMAL(8,2)) RETURNS DECIMAL(8,2) DETERMINISTIC RETURN p * 1.2;\n\
         CREATE PROCEDURE add_item(n VARCHAR(40)) INSERT INTO item(name, price) VALUES (n, 1);\n\
         CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM log;\n\
         CREATE VIEW dear AS SELECT name, with_tax(price) AS gross FROM item WHERE price > 10;\n\
         INSERT INTO item(name, price) VALUES ('kaffe', 12.5), ('te', 3);\n",
    );
    let s = Scene::new();
    let artifact = s.path("shop.sql.zst");
    snap_to_file(m.url("shop"), &artifact).succeeds();
    restore_file(&artifact, m.url("shop_copy"))
        .arg("--create")
        .succeeds();
    assert_eq!(
        m.scalar(
            "",
            "SELECT CONCAT(DEFAULT_CHARACTER_SET_NAME, ' ', DEFAULT_COLLATION_NAME) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_copy';"
        ),
        "latin1 latin1_swedish_ci"
    );
    assert_eq!(mariadb_dump(&m, "shop"), mariadb_dump(&m, "shop_copy"));
    // Used as the application would: a routine, the trigger, the view.
    let logged = || m.scalar("shop_copy", "SELECT COUNT(*) FROM log;");
    assert_eq!(logged(), "2", "the rows the trigger logged in the source");
    m.sql("shop_copy", "CALL add_item('bröd');");
    assert_eq!(logged(), "3", "the trigger fired for the routine's insert");
    assert_eq!(m.scalar("shop_copy", "SELECT gross FROM dear;"), "15.00");
}

#[test]
fn an_unreachable_scratch_server_is_could_not_verify_not_a_broken_backup() {
    let (_s, _src, artifact) = rich_source();
    Cmd::tool("dbverify").arg(&artifact).succeeds();
    let port = dbsafe_tests::free_port();
    Cmd::tool("dbverify")
        .arg(&artifact)
        .args(["--level", "restore", "--scratch"])
        .arg(format!("postgres://postgres@127.0.0.1:{port}/"))
        .fails_with(2, "could not verify");
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{}.verify.json", artifact.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["result"], "pass", "the earlier pass stays on record");
}

/// An archive cut short anywhere (a killed `pg_dump -Fc | zstd`, read from
/// stdin with no checksum to compare) fails full verification: the check
/// reads every block, not only the table of contents at the start.
#[test]
fn a_pg_dump_archive_cut_short_anywhere_fails_full_verification() {
    let (s, _src, artifact) = rich_source();
    let payload = Cmd::new("zstd")
        .arg("-dc")
        .arg(&artifact)
        .succeeds()
        .out
        .stdout;
    let whole = s.path("whole.pgdump");
    std::fs::write(&whole, &payload).unwrap();
    Cmd::tool("dbverify").arg("-").stdin_file(&whole).succeeds();
    let n = payload.len();
    for cut in [n / 4, n / 2, n * 9 / 10, n - 51, n - 1] {
        let part = s.path(&format!("cut-{cut}.pgdump"));
        std::fs::write(&part, &payload[..cut]).unwrap();
        Cmd::tool("dbverify")
            .arg("-")
            .stdin_file(&part)
            .fails_with_code(1)
            .stderr_has("pg_restore cannot read the archive");
    }
}

#[test]
fn parallel_and_single_restores_produce_the_same_database_and_keep_no_decoded_copy_or_show_it() {
    let (s, src, artifact) = rich_source();
    let tmp = s.mkdir("tmp");
    let modes = s.path("modes.txt");
    // While the restore runs, what it keeps under --tmpdir is its own.
    let look = format!(
        "find {} -mindepth 1 -printf '%m %y\\n' > {}",
        tmp.display(),
        modes.display()
    );
    for (db, jobs) in [("one", "1"), ("three", "3")] {
        let out = restore_file(&artifact, src.url(db))
            .args([
                "--create",
                "--jobs",
                jobs,
                "--before-cmd",
                &look,
                "--tmpdir",
            ])
            .arg(&tmp)
            .succeeds();
        let parallel = out.stderr().contains("restoring with 3 pg_restore workers");
        assert_eq!(parallel, jobs == "3", "{}", out.stderr());
        let seen = std::fs::read_to_string(&modes).unwrap();
        if parallel {
            assert_eq!(seen, "700 d\n600 f\n", "the decoded copy and its directory");
        } else {
            assert_eq!(seen, "", "one worker streams: no copy on disk");
        }
        assert_eq!(
            dbsafe_tests::files_under(&tmp),
            Vec::<String>::new(),
            "the decoded copy is removed"
        );
    }
    let schema = |db| pg_dump(&src, &["--schema-only"], db);
    assert_eq!(schema("shop"), schema("one"));
    assert_eq!(schema("one"), schema("three"));
    assert_eq!(sorted_data(&src, "one"), sorted_data(&src, "three"));
    assert_eq!(sorted_data(&src, "shop"), sorted_data(&src, "three"));
}
